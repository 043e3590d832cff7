"""MQTT over TLS and HTTPS with the development PKI of `fleetwire cert init`: mosquitto
clients and paho over TLS with device passwords, device login by client certificate (CN =
device id), certificates refused at the handshake (another CA, expired) or at CONNECT
(unregistered device, user name other than the CN, not the pinned certificate),
pinning/unpinning and deletion disconnecting a device, TLS versions with `openssl
s_client`, a plain client or a silent one on the TLS port, and the HTTPS API.

The module's broker (`secure` fixture) refuses anonymous clients, trusts the dev CA for
client certificates and closes a connection whose TLS handshake is not done within 2 s."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time
import types
import urllib.request

import pytest

import rawmqtt
from conftest import ADMIN_TOKEN, close_all
from fleet import wait_until
from peer import TIMEOUT, V311, V5, PROTOCOL_NAMES, Peer
from pki import cert_init, client_context, tls_connect
from test_cli_clients import Sub, cli, mosquitto_pub

CONNECT_TIMEOUT_SECS = 2
FLEETWIRE_ENV = {"FLEETWIRE_MQTT__CONNECT_TIMEOUT_SECS": str(CONNECT_TIMEOUT_SECS)}

NOT_AUTHORIZED = {V311: 0x05, V5: 0x87}  # 3.1.1 CONNACK return code 5, 5.0 reason code 0x87
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=PROTOCOL_NAMES.get)
CLI_VERSIONS = pytest.mark.parametrize("cli_version", ["mqttv311", "mqttv5"])


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Where this module's device certificates go."""
    return tmp_path_factory.mktemp("device-certs")


@pytest.fixture
def clients(secure):
    """Factory for paho clients of `secure`'s MQTT TLS port (`clients(id, cert=(pem, key),
    username=..., password=..., protocol=...)`), not yet connected; all closed after the test."""
    created: list[Peer] = []

    def make(client_id: str, *, cert=None, username=None, password=None, **kwargs) -> Peer:
        context = client_context(secure.pki.ca, *(cert or (None, None)))
        peer = Peer(secure, client_id, port=secure.tls_port, tls=context, **kwargs)
        if username is not None:
            peer.client.username_pw_set(username, password)
        created.append(peer)
        return peer

    yield make
    close_all(created)


def tls_endpoint(secure):
    """What test_cli_clients' mosquitto helpers need (host, port), on the TLS port."""
    return types.SimpleNamespace(host="127.0.0.1", port=secure.tls_port)


def register(api, device: str, *, password: bool = False) -> str | None:
    api.create_device(device)
    return api.credentials(device) if password else None


# Passwords over TLS.


@CLI_VERSIONS
def test_mosquitto_sub_receives_what_mosquitto_pub_sends_over_tls_with_a_device_password(
    secure, secure_api, uid, cli_version
):
    device = f"pw-{uid}"
    password = register(secure_api, device, password=True)
    endpoint, ca = tls_endpoint(secure), str(secure.pki.ca)
    topic = f"devices/{device}/commands/hello"
    login = ["--cafile", ca, "-u", device, "-P", password, "-V", cli_version]
    sub = Sub(endpoint, *login, "-i", f"{device}-sub", "-q", "1", "-t", f"devices/{device}/commands/#", "-C", "1", "-v")
    mosquitto_pub(endpoint, *login, "-i", f"{device}-pub", "-q", "1", "-t", topic, "-m", f"over tls {uid}")
    lines = sub.output()
    assert f"{topic} over tls {uid}" in lines, lines
    assert any("received PUBLISH (d0, q1" in line for line in lines), f"not delivered at QoS 1: {lines}"


def test_mosquitto_pub_over_tls_with_a_wrong_password_is_refused(secure, secure_api, uid):
    device = f"pw-{uid}"
    register(secure_api, device, password=True)
    command = [
        cli("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(secure.tls_port), "--cafile", str(secure.pki.ca),
        "-u", device, "-P", "not-the-secret", "-t", f"devices/{device}/telemetry", "-m", "{}", "-q", "1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert result.returncode != 0, f"mosquitto_pub succeeded with a wrong password: {result.stdout}"


def test_mosquitto_pub_refuses_a_server_it_was_not_told_to_trust(secure, tmp_path):
    """The client side of the handshake: the server certificate is only as good as the CA
    the client trusts (another dev CA here)."""
    other = cert_init(tmp_path / "other")
    results = {}
    for name, ca in (("dev CA", secure.pki.ca), ("other CA", other.ca)):
        command = [
            cli("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(secure.tls_port), "--cafile", str(ca),
            "-u", "nobody", "-P", "x", "-t", "t", "-m", "m",
        ]  # fmt: skip
        results[name] = subprocess.run(command, capture_output=True, text=True, timeout=20)
    # Both fail (no such user), but only the one with the wrong CA fails in TLS.
    trusted, untrusted = results["dev CA"], results["other CA"]
    assert trusted.returncode != 0 and "TLS" not in trusted.stderr, trusted
    assert untrusted.returncode != 0 and "TLS error" in untrusted.stderr, untrusted


# Client certificates.


def test_a_registered_device_logs_in_with_its_certificate_and_no_password_and_its_telemetry_is_stored(
    secure, secure_api, certs, uid
):
    device = f"cert-{uid}"
    register(secure_api, device)
    pem, key = secure.pki.device_cert(device, certs)
    mosquitto_pub(
        tls_endpoint(secure), "--cafile", str(secure.pki.ca), "--cert", str(pem), "--key", str(key),
        "-i", device, "-q", "1", "-t", f"devices/{device}/telemetry", "-m", '{"temperature": 21.5}',
    )  # fmt: skip
    # A PUBACK means the point is stored (test_telemetry.py): no waiting.
    latest = secure_api.latest(device)
    assert latest["temperature"][1] == 21.5, latest
    # The same with the CN as user name, and with 5.0.
    mosquitto_pub(
        tls_endpoint(secure), "--cafile", str(secure.pki.ca), "--cert", str(pem), "--key", str(key),
        "-u", device, "-V", "mqttv5", "-i", device, "-q", "1", "-t", f"devices/{device}/telemetry",
        "-m", '{"temperature": 22.5}',
    )  # fmt: skip
    assert secure_api.latest(device)["temperature"][1] == 22.5


@VERSIONS
def test_a_user_name_other_than_the_certificate_cn_is_not_authorized(secure, secure_api, certs, uid, version):
    device, other = f"cn-{uid}", f"other-{uid}"
    register(secure_api, device)
    register(secure_api, other, password=True)
    pem, key = secure.pki.device_cert(device, certs)
    context = client_context(secure.pki.ca, pem, key)
    outcome = tls_connect(secure.tls_port, context, f"{device}-as-other", version=version, username=other)
    assert outcome.connack is not None, f"expected a CONNACK refusing the login, got {outcome}"
    assert outcome.connack.return_code == NOT_AUTHORIZED[version], outcome
    # Control: the CN as user name is accepted on the same connection path.
    outcome = tls_connect(secure.tls_port, context, device, version=version, username=device)
    assert outcome.connack is not None and outcome.connack.return_code == 0, outcome


@VERSIONS
def test_the_certificate_of_an_unregistered_device_is_not_authorized(secure, certs, uid, version):
    device = f"ghost-{uid}"
    pem, key = secure.pki.device_cert(device, certs)  # signed by the trusted CA, but no such device
    outcome = tls_connect(secure.tls_port, client_context(secure.pki.ca, pem, key), device, version=version)
    assert outcome.connack is not None, f"expected a CONNACK refusing the login, got {outcome}"
    assert outcome.connack.return_code == NOT_AUTHORIZED[version], outcome


def test_no_certificate_and_no_password_is_not_authorized(secure, uid):
    outcome = tls_connect(secure.tls_port, client_context(secure.pki.ca), f"anon-{uid}")
    assert outcome.connack is not None and outcome.connack.return_code == NOT_AUTHORIZED[V311], outcome


def assert_refused_by_the_server_at_the_handshake(outcome, secure_api, failures_before: float) -> None:
    """No CONNACK, and the failure is an alert the server sent (ssl reports a received alert
    as `..._ALERT_...`; a local verdict would read CERTIFICATE_VERIFY_FAILED or similar)."""
    assert outcome.connack is None, f"a refused certificate got {outcome}"
    assert outcome.alert is not None and "ALERT" in outcome.alert, (
        f"expected a TLS alert from the server, got {outcome}"
    )
    wait_until(
        lambda: secure_api.metric("fleetwire_tls_handshake_failures_total") > failures_before,
        "fleetwire_tls_handshake_failures_total to count the refused handshake",
    )


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1_2", "tls1_3"])
def test_a_certificate_from_another_ca_is_refused_at_the_handshake(secure, secure_api, tmp_path, uid, maximum):
    device = f"foreign-{uid}"
    register(secure_api, device)
    other = cert_init(tmp_path / "other-ca")
    pem, key = other.device_cert(device, tmp_path / "certs")
    failures = secure_api.metric("fleetwire_tls_handshake_failures_total")
    context = client_context(secure.pki.ca, pem, key, maximum=maximum)
    assert_refused_by_the_server_at_the_handshake(tls_connect(secure.tls_port, context, device), secure_api, failures)


def test_an_expired_certificate_is_refused_at_the_handshake(secure, secure_api, tmp_path, uid):
    device = f"expired-{uid}"
    register(secure_api, device)
    # Control: `openssl ca` with the dev CA and current dates makes a certificate that works,
    # so the refusal below is about the dates.
    pem, key = secure.pki.openssl_cert(device, tmp_path, start="20200101000000Z", end="20991231235959Z")
    outcome = tls_connect(secure.tls_port, client_context(secure.pki.ca, pem, key), device)
    assert outcome.connack is not None and outcome.connack.return_code == 0, outcome

    pem, key = secure.pki.openssl_cert(device, tmp_path, start="20200101000000Z", end="20210101000000Z")
    failures = secure_api.metric("fleetwire_tls_handshake_failures_total")
    outcome = tls_connect(secure.tls_port, client_context(secure.pki.ca, pem, key), device)
    assert_refused_by_the_server_at_the_handshake(outcome, secure_api, failures)
    assert "EXPIRED" in outcome.alert, f"expected a certificate_expired alert, got {outcome}"


def test_a_certificate_not_yet_valid_is_refused_at_the_handshake(secure, secure_api, tmp_path, uid):
    device = f"future-{uid}"
    register(secure_api, device)
    pem, key = secure.pki.openssl_cert(device, tmp_path, start="20900101000000Z", end="20910101000000Z")
    failures = secure_api.metric("fleetwire_tls_handshake_failures_total")
    outcome = tls_connect(secure.tls_port, client_context(secure.pki.ca, pem, key), device)
    assert_refused_by_the_server_at_the_handshake(outcome, secure_api, failures)


# Pinning.


def pin(api, device: str, pem, expect: int = 201) -> dict:
    return api.ok("POST", f"/api/v1/devices/{device}/certificates", {"pem": pem.read_text()}, expect=expect)


def pinned(api, device: str) -> list[dict]:
    body = api.ok("GET", f"/api/v1/devices/{device}/certificates")
    assert set(body) >= {"items", "next_cursor"}, body
    return body["items"]


def test_a_device_with_a_pinned_certificate_is_admitted_only_with_that_certificate(secure, secure_api, tmp_path, uid):
    device = f"pinned-{uid}"
    register(secure_api, device)
    pinned_pem, pinned_key = secure.pki.device_cert(device, tmp_path / "a")
    other_pem, other_key = secure.pki.device_cert(device, tmp_path / "b")
    assert pinned_pem.read_text() != other_pem.read_text()

    first = pin(secure_api, device, pinned_pem, expect=201)
    fingerprint = first["fingerprint"]
    again = pin(secure_api, device, pinned_pem, expect=200)
    assert again["fingerprint"] == fingerprint
    assert [item["fingerprint"] for item in pinned(secure_api, device)] == [fingerprint]

    other_context = client_context(secure.pki.ca, other_pem, other_key)
    pinned_context = client_context(secure.pki.ca, pinned_pem, pinned_key)
    for version in (V311, V5):
        refused = tls_connect(secure.tls_port, other_context, device, version=version)
        assert refused.connack is not None and refused.connack.return_code == NOT_AUTHORIZED[version], (
            f"another valid certificate of a pinned device: {refused}"
        )
        admitted = tls_connect(secure.tls_port, pinned_context, device, version=version)
        assert admitted.connack is not None and admitted.connack.return_code == 0, admitted


@VERSIONS
def test_pinning_another_certificate_and_unpinning_disconnect_a_connected_device(
    secure, secure_api, clients, tmp_path, uid, version
):
    device = f"unpin-{uid}"
    register(secure_api, device)
    first = secure.pki.device_cert(device, tmp_path / "a")
    second = secure.pki.device_cert(device, tmp_path / "b")

    # No pins: any certificate of the device logs in; pinning another one disconnects it.
    unpinned = clients(f"{device}-1", cert=first, protocol=version).connect()
    fingerprint = pin(secure_api, device, second[0])["fingerprint"]
    assert unpinned.disconnected.wait(TIMEOUT), "a connection with a certificate that is not pinned stayed up"

    holder = clients(f"{device}-2", cert=second, protocol=version).connect()
    secure_api.ok("DELETE", f"/api/v1/devices/{device}/certificates/{fingerprint}", expect=204)
    assert holder.disconnected.wait(TIMEOUT), "unpinning did not disconnect the device"
    assert pinned(secure_api, device) == []
    # Unpinned, both certificates log in again.
    clients(f"{device}-3", cert=first, protocol=version).connect()


def test_deleting_a_device_disconnects_its_certificate_login_for_good(secure, secure_api, clients, certs, uid):
    device = f"deleted-{uid}"
    register(secure_api, device)
    cert = secure.pki.device_cert(device, certs)
    pin(secure_api, device, cert[0])
    peer = clients(device, cert=cert, protocol=V5).connect()
    secure_api.ok("DELETE", f"/api/v1/devices/{device}", expect=204)
    assert peer.disconnected.wait(TIMEOUT), "the device stayed connected after it was deleted"
    outcome = tls_connect(secure.tls_port, client_context(secure.pki.ca, *cert), device, version=rawmqtt.V5)
    assert outcome.connack is not None and outcome.connack.return_code == NOT_AUTHORIZED[V5], outcome


# paho over TLS.


@VERSIONS
def test_paho_over_tls_round_trips_qos_0_1_2_keeps_alive_and_gets_the_will(
    secure, secure_api, clients, certs, uid, version
):
    device = f"paho-{uid}"
    password = register(secure_api, device, password=True)
    cert = secure.pki.device_cert(device, certs)
    commands = f"devices/{device}/commands"

    subscriber = clients(f"{device}-sub", cert=cert, protocol=version, keepalive=1).connect()
    assert subscriber.subscribe((f"{commands}/#", 2)) == [2]
    publisher = clients(f"{device}-pub", username=device, password=password, protocol=version).connect()
    for qos in (0, 1, 2):
        publisher.publish(f"{commands}/q{qos}", f"qos {qos}".encode(), qos=qos)
        message = subscriber.expect_message(f"{commands}/q{qos}")
        assert (message.payload, message.qos) == (f"qos {qos}".encode(), qos)

    # Keep-alive 1 s: paho's PINGREQs over TLS keep the subscriber connected past 1.5 keep-alives.
    time.sleep(3)
    assert not subscriber.disconnected.is_set(), f"keep-alive over TLS failed: {subscriber.disconnect_reason}"
    publisher.publish(f"{commands}/after-idle", b"still there", qos=1)
    assert subscriber.expect_message(f"{commands}/after-idle").payload == b"still there"

    # A will, sent when the TLS connection drops without DISCONNECT (or close_notify).
    doomed = clients(f"{device}-will", cert=cert, protocol=version)
    doomed.connect(will=(f"{commands}/will", b"lost over tls", 1, False))
    doomed.client.socket().close()
    will = subscriber.expect_message(f"{commands}/will")
    assert (will.payload, will.qos) == (b"lost over tls", 1)


# TLS versions and non-TLS clients.


def s_client(secure, *args: str) -> subprocess.CompletedProcess:
    command = [
        "openssl", "s_client", "-connect", f"127.0.0.1:{secure.tls_port}", "-CAfile", str(secure.pki.ca),
        "-verify_return_error", *args,
    ]  # fmt: skip
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused_by_the_server(secure, flag):
    # Debian's OpenSSL will not even offer TLS 1.0/1.1 at its default security level
    # ("no protocols available", nothing written): lower it so the ClientHello goes out
    # and the refusal is the server's.
    result = s_client(secure, flag, "-cipher", "DEFAULT:@SECLEVEL=0")
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"openssl s_client {flag} succeeded:\n{output}"
    assert "no protocols available" not in output, f"the client refused locally; the server was not tested:\n{output}"
    written = re.search(r"handshake has read (\d+) bytes and written (\d+) bytes", output)
    assert written and int(written.group(2)) > 0, f"no ClientHello went out:\n{output}"
    alert = re.search(r"alert (?:number )?(\d+)|SSL alert number (\d+)", output)
    assert alert, f"expected the server's alert (protocol version / handshake failure):\n{output}"
    assert "Cipher is (NONE)" in output, f"a session was established with {flag}:\n{output}"


@pytest.mark.parametrize("flag, protocol", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_1_2_and_1_3_are_accepted(secure, flag, protocol):
    result = s_client(secure, flag)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"openssl s_client {flag} failed:\n{output}"
    # s_client names the protocol in its handshake summary ("New, TLSv1.3, Cipher is ...")
    # and, once a session ticket arrived before it quit, in the session block too.
    version = re.escape(protocol)
    assert re.search(rf"New, {version}, Cipher is|Protocol\s*:\s*{version}", output), output
    assert "Verify return code: 0 (ok)" in output, output


def test_a_plain_mqtt_connect_on_the_tls_port_gets_no_connack(secure, secure_api, uid):
    failures = secure_api.metric("fleetwire_tls_handshake_failures_total")
    with socket.create_connection(("127.0.0.1", secure.tls_port), timeout=TIMEOUT) as plain:
        plain.sendall(rawmqtt.connect(f"plain-{uid}"))
        received = bytearray()
        while True:
            try:
                chunk = plain.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    # Whatever came back (nothing, or a TLS alert record: content type 0x15), it is not a CONNACK (0x20).
    assert not received.startswith(b"\x20"), f"a plain MQTT client got a CONNACK on the TLS port: {bytes(received)!r}"
    assert not received or received[0] == 0x15, f"expected nothing or a TLS alert record, got {bytes(received[:16])!r}"
    wait_until(
        lambda: secure_api.metric("fleetwire_tls_handshake_failures_total") > failures,
        "fleetwire_tls_handshake_failures_total to count the plain client",
    )


def test_a_client_that_never_starts_its_handshake_is_closed_after_the_connect_timeout(secure, secure_api):
    timeouts = secure_api.metric("fleetwire_tls_handshake_timeouts_total")
    with socket.create_connection(("127.0.0.1", secure.tls_port), timeout=CONNECT_TIMEOUT_SECS * 5) as silent:
        try:
            data = silent.recv(4096)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            pytest.fail(f"a silent client was still connected {CONNECT_TIMEOUT_SECS * 5} s later")
    assert data == b"", f"the server sent {data!r} to a client that said nothing"
    wait_until(
        lambda: secure_api.metric("fleetwire_tls_handshake_timeouts_total") > timeouts,
        "fleetwire_tls_handshake_timeouts_total to count the silent client",
    )


def test_a_client_that_stops_in_the_middle_of_its_handshake_is_closed_after_the_connect_timeout(secure, secure_api):
    """Half a ClientHello record: the server is waiting for the rest, which never comes."""
    timeouts = secure_api.metric("fleetwire_tls_handshake_timeouts_total")
    hello = bytearray()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(None).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        hello += outgoing.read()
    assert len(hello) > 10
    with socket.create_connection(("127.0.0.1", secure.tls_port), timeout=CONNECT_TIMEOUT_SECS * 5) as stalled:
        stalled.sendall(hello[: len(hello) // 2])
        try:
            data = stalled.recv(4096)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            pytest.fail(f"a stalled handshake was still open {CONNECT_TIMEOUT_SECS * 5} s later")
    assert data == b"" or data[0] == 0x15, f"unexpected answer to half a ClientHello: {data[:16]!r}"
    wait_until(
        lambda: secure_api.metric("fleetwire_tls_handshake_timeouts_total") > timeouts,
        "fleetwire_tls_handshake_timeouts_total to count the stalled handshake",
    )


# HTTPS.


def test_the_https_api_answers_with_the_dev_ca(secure, secure_api, uid):
    device = f"https-{uid}"
    register(secure_api, device)
    url = f"https://127.0.0.1:{secure.https_port}/api/v1/devices/{device}"
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--cacert", str(secure.pki.ca),
         "-H", f"Authorization: Bearer {ADMIN_TOKEN}", "-w", "\n%{http_code} %{ssl_verify_result}", url],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200 0", result.stdout
    assert json.loads(body)["id"] == device

    # curl without the dev CA refuses the server (exit 60: certificate problem).
    untrusted = subprocess.run(["curl", "--silent", url], capture_output=True, timeout=20)
    assert untrusted.returncode == 60, untrusted

    # Python's ssl with the dev CA, host name checked; a write over HTTPS lands.
    context = client_context(secure.pki.ca)
    request = urllib.request.Request(
        f"https://localhost:{secure.https_port}/api/v1/devices/{device}/telemetry",
        method="POST",
        data=json.dumps({"temperature": 19.25}).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
        assert response.status in (200, 202, 204), response.status
    assert secure_api.latest(device)["temperature"][1] == 19.25
    metrics = f"https://127.0.0.1:{secure.https_port}/metrics"
    with urllib.request.urlopen(metrics, timeout=TIMEOUT, context=context) as response:
        assert "fleetwire_tls_handshakes_total" in response.read().decode()


def test_a_plain_http_request_on_the_https_port_gets_no_http_answer(secure):
    with socket.create_connection(("127.0.0.1", secure.https_port), timeout=TIMEOUT) as plain:
        plain.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = bytearray()
        while True:
            try:
                chunk = plain.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    assert not received.startswith(b"HTTP/"), f"the HTTPS port answered plain HTTP: {bytes(received[:80])!r}"
