"""Reloading the TLS files while the broker runs: a new server certificate (files swapped,
or SIGHUP) is served to new handshakes while established TLS connections carry on; a
garbage file is refused, counted, and the previous certificate stays; a new client CA
changes which device certificates are admitted. The certificate served is compared by its
DER bytes, read with Python's `ssl` verifying against the CA that should have signed it.

The module has its own broker (`secure` fixture): these tests change the files it serves."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import threading
from pathlib import Path

import pytest

from conftest import close_all
from fleet import wait_until
from peer import TIMEOUT, V311, V5, PROTOCOL_NAMES, Peer
from pki import cert_init, client_context, pem_to_der, served_certificate, sha256, tls_connect

RELOAD_WAIT = 15.0  # the files are polled every second and must settle 500 ms: generous


@pytest.fixture
def clients(secure):
    created: list[Peer] = []

    def make(client_id: str, *, ca: Path, cert=None, username=None, password=None, **kwargs) -> Peer:
        peer = Peer(secure, client_id, port=secure.tls_port, tls=client_context(ca, *(cert or (None, None))), **kwargs)
        if username is not None:
            peer.client.username_pw_set(username, password)
        created.append(peer)
        return peer

    yield make
    close_all(created)


@pytest.fixture(scope="module")
def original(secure, tmp_path_factory) -> Path:
    """A copy of the files the broker started with (ca.pem, server.pem, server.key), kept
    aside because tests overwrite the served ones."""
    keep = tmp_path_factory.mktemp("original-tls")
    for name in ("ca.pem", "ca.key", "server.pem", "server.key"):
        shutil.copy2(secure.pki.tls / name, keep / name)
    return keep


def replace(path: Path, source: Path) -> None:
    """Atomically puts `source`'s bytes at `path` (write beside, then rename over)."""
    staging = path.with_name(path.name + ".new")
    shutil.copyfile(source, staging)
    os.replace(staging, path)


def reloads(api) -> float:
    return api.metric("fleetwire_tls_reloads_total")


def wait_for_reload(api, before: float, what: str) -> None:
    wait_until(lambda: reloads(api) > before, f"fleetwire_tls_reloads_total to grow after {what}", timeout=RELOAD_WAIT)


def served_by(secure, ca: Path) -> str:
    """SHA-256 of the certificate new handshakes on the MQTT TLS port get, verified with `ca`."""
    return sha256(served_certificate(secure.tls_port, ca))


class Ping:
    """A background publisher: QoS 1 messages numbered 0, 1, 2, ... every 20 ms until stopped."""

    def __init__(self, publisher: Peer, topic: str):
        self.publisher, self.topic, self.sent = publisher, topic, 0
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.02):
                self.publisher.publish(self.topic, str(self.sent).encode(), qos=1)
                self.sent += 1
        except BaseException as error:  # reported by stop()
            self.error = error

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(TIMEOUT)
        assert self.error is None, f"publishing over the established TLS connection failed: {self.error!r}"
        return self.sent


@pytest.mark.parametrize("version", [V311, V5], ids=PROTOCOL_NAMES.get)
def test_swapped_server_files_are_served_to_new_handshakes_while_established_connections_carry_on(
    secure, secure_api, original, clients, tmp_path, uid, version
):
    device = f"swap-{uid}"
    secure_api.create_device(device)
    password = secure_api.credentials(device)
    assert served_by(secure, original / "ca.pem") == sha256(pem_to_der(original / "server.pem")), (
        "the broker does not serve the certificate it started with"
    )
    topic = f"devices/{device}/commands/ping"
    subscriber = clients(f"{device}-sub", ca=original / "ca.pem", username=device, password=password, protocol=version)
    publisher = clients(f"{device}-pub", ca=original / "ca.pem", username=device, password=password, protocol=version)
    subscriber.connect().subscribe((f"devices/{device}/commands/#", 1))
    publisher.connect()
    ping = Ping(publisher, topic)

    before = reloads(secure_api)
    fresh = cert_init(tmp_path / "next")  # another CA and server certificate
    replace(secure.pki.server_key, fresh.server_key)  # key first, then the certificate
    replace(secure.pki.server, fresh.server)
    try:
        wait_for_reload(secure_api, before, "replacing server.key and server.pem")
        assert served_by(secure, fresh.ca) == sha256(pem_to_der(fresh.server)), (
            "new handshakes still get the old certificate"
        )
        https = sha256(served_certificate(secure.https_port, fresh.ca))
        assert https == sha256(pem_to_der(fresh.server)), "the HTTPS port still serves the old certificate"
        # A client that only trusts the old CA now refuses the server.
        with pytest.raises(ssl.SSLCertVerificationError):
            served_certificate(secure.tls_port, original / "ca.pem")

        sent = ping.stop()
        assert not subscriber.disconnected.is_set() and not publisher.disconnected.is_set(), (
            "an established TLS connection was closed by the reload"
        )
        publisher.publish(f"{topic}/end", b"end", qos=1)
        received = [message.payload.decode() for message in subscriber.messages_until(f"{topic}/end")]
        assert received == [str(number) for number in range(sent)], f"sent {sent}, received {received}"
        assert sent > 0

        # And a new client trusting the new CA logs in with the same password.
        clients(f"{device}-new", ca=fresh.ca, username=device, password=password, protocol=version).connect()
    finally:
        before = reloads(secure_api)
        replace(secure.pki.server_key, original / "server.key")
        replace(secure.pki.server, original / "server.pem")
        wait_for_reload(secure_api, before, "putting the original files back")
    assert served_by(secure, original / "ca.pem") == sha256(pem_to_der(original / "server.pem"))


def test_a_garbage_certificate_file_is_refused_counted_and_the_previous_certificate_stays(
    secure, secure_api, original, clients, uid
):
    expected = sha256(pem_to_der(original / "server.pem"))
    assert served_by(secure, original / "ca.pem") == expected
    device = f"garbage-{uid}"
    secure_api.create_device(device)
    password = secure_api.credentials(device)
    connected = clients(f"{device}-1", ca=original / "ca.pem", username=device, password=password).connect()

    failures = secure_api.metric("fleetwire_tls_reload_failures_total")
    log_lines = len(secure.log)
    secure.pki.server.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    try:
        wait_until(
            lambda: secure_api.metric("fleetwire_tls_reload_failures_total") > failures,
            "fleetwire_tls_reload_failures_total to count the garbage file",
            timeout=RELOAD_WAIT,
        )
        secure.assert_running()
        new_lines = list(secure.log)[log_lines:]
        assert any(
            ('"WARN"' in line or '"ERROR"' in line) and str(secure.pki.server) in line for line in new_lines
        ), "the refused reload was not logged as a warning naming the file:\n" + "\n".join(new_lines[-20:])
        assert served_by(secure, original / "ca.pem") == expected, "the garbage file changed the certificate served"
        assert not connected.disconnected.is_set()
        clients(f"{device}-2", ca=original / "ca.pem", username=device, password=password).connect()
        # SIGHUP with the garbage file still there: refused again, nothing else changes.
        failures = secure_api.metric("fleetwire_tls_reload_failures_total")
        secure.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: secure_api.metric("fleetwire_tls_reload_failures_total") > failures,
            "SIGHUP with a garbage certificate file to count a reload failure",
            timeout=RELOAD_WAIT,
        )
        assert served_by(secure, original / "ca.pem") == expected
    finally:
        before = reloads(secure_api)
        replace(secure.pki.server, original / "server.pem")
        wait_for_reload(secure_api, before, "putting the original certificate back")
    assert served_by(secure, original / "ca.pem") == expected


def test_sighup_reloads_the_files(secure, secure_api, original, clients, uid):
    before = reloads(secure_api)
    secure.process.send_signal(signal.SIGHUP)
    wait_for_reload(secure_api, before, "SIGHUP")
    secure.assert_running()
    assert served_by(secure, original / "ca.pem") == sha256(pem_to_der(original / "server.pem"))
    device = f"hup-{uid}"
    secure_api.create_device(device)
    clients(device, ca=original / "ca.pem", username=device, password=secure_api.credentials(device)).connect()


def test_sighup_picks_up_a_new_server_certificate_written_in_place(secure, secure_api, original, tmp_path):
    """Plain copies over the served files (not renames), then SIGHUP; whichever of the
    file watch and the signal comes first, new handshakes end with the new certificate."""
    fresh = cert_init(tmp_path / "hup")
    before = reloads(secure_api)
    shutil.copyfile(fresh.server_key, secure.pki.server_key)
    shutil.copyfile(fresh.server, secure.pki.server)
    secure.process.send_signal(signal.SIGHUP)
    expected = sha256(pem_to_der(fresh.server))
    try:
        wait_until(
            lambda: reloads(secure_api) > before and served_by_or_none(secure, fresh.ca) == expected,
            "the new certificate to be served after SIGHUP",
            timeout=RELOAD_WAIT,
        )
    finally:
        before = reloads(secure_api)
        replace(secure.pki.server_key, original / "server.key")
        replace(secure.pki.server, original / "server.pem")
        wait_for_reload(secure_api, before, "putting the original files back")


def served_by_or_none(secure, ca: Path) -> str | None:
    try:
        return served_by(secure, ca)
    except (ssl.SSLError, OSError):
        return None


def test_a_new_client_ca_changes_which_device_certificates_are_admitted(
    secure, secure_api, original, clients, tmp_path, uid
):
    device = f"ca-{uid}"
    secure_api.create_device(device)
    old_cert = secure.pki.device_cert(device, tmp_path / "old")  # signed by the CA the broker started with
    other = cert_init(tmp_path / "other-ca")
    new_cert = other.device_cert(device, tmp_path / "new")
    old_context = client_context(original / "ca.pem", *old_cert)
    new_context = client_context(original / "ca.pem", *new_cert)
    assert tls_connect(secure.tls_port, old_context, device).connack.return_code == 0
    assert tls_connect(secure.tls_port, new_context, device).connack is None

    connected = clients(f"{device}-kept", ca=original / "ca.pem", cert=old_cert, protocol=V5).connect()
    before = reloads(secure_api)
    replace(secure.pki.ca, other.ca)
    try:
        wait_for_reload(secure_api, before, "replacing the client CA file")
        outcome = tls_connect(secure.tls_port, new_context, device)
        assert outcome.connack is not None and outcome.connack.return_code == 0, (
            f"a certificate from the new client CA: {outcome}"
        )
        outcome = tls_connect(secure.tls_port, old_context, device)
        assert outcome.connack is None and outcome.alert, f"a certificate from the replaced client CA: {outcome}"
        # Established connections stay, even those whose certificate the new CA would refuse.
        assert not connected.disconnected.is_set()
        connected.publish(f"devices/{device}/telemetry", b'{"kept": 1}', qos=1)
    finally:
        before = reloads(secure_api)
        replace(secure.pki.ca, original / "ca.pem")
        wait_for_reload(secure_api, before, "putting the original client CA back")
    assert tls_connect(secure.tls_port, old_context, device).connack.return_code == 0
