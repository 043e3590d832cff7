"""The development PKI the TLS tests stand on, made by the binary itself (`fleetwire cert
init`, `fleetwire device cert`) and, for certificates the binary will not issue (expired
ones), by `openssl ca` with the same CA key. Plus small `ssl` helpers: client contexts,
the certificate a TLS port serves, and a handshake followed by a raw MQTT CONNECT whose
outcome (CONNACK, TLS alert, close) is reported as it happened.

Everything here runs real tools against the real binary; nothing mocks a peer.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import rawmqtt

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


def binary() -> Path:
    path = Path(os.environ.get("FLEETWIRE_BIN", REPO / "target" / "debug" / "fleetwire"))
    assert path.exists(), f"fleetwire binary not found at {path}: run `cargo build -p fleetwire` or set FLEETWIRE_BIN"
    return path


def _fleetwire(*args: str) -> str:
    """Runs an offline `fleetwire` subcommand; FLEETWIRE_* variables are configuration
    to it, so none reaches it."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLEETWIRE_")}
    command = [str(binary()), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (
        f"{' '.join(command)} exited with {result.returncode}:\n{result.stderr}{result.stdout}"
    )
    return result.stdout + result.stderr


@dataclass(frozen=True)
class Pki:
    """The files `fleetwire cert init --data-dir data_dir` wrote."""

    data_dir: Path

    @property
    def tls(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.tls / "ca.key"

    @property
    def server(self) -> Path:
        return self.tls / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.tls / "server.key"

    def env(self) -> dict[str, str]:
        """The server configuration that serves this PKI, the CA trusted for client
        certificates, on free loopback ports."""
        return {
            "FLEETWIRE_TLS__CERT_FILE": str(self.server),
            "FLEETWIRE_TLS__KEY_FILE": str(self.server_key),
            "FLEETWIRE_TLS__CLIENT_CA_FILE": str(self.ca),
            "FLEETWIRE_MQTT__TLS_ADDR": "127.0.0.1:0",
            "FLEETWIRE_HTTP__TLS_ADDR": "127.0.0.1:0",
        }

    def device_cert(self, device: str, out: Path, *, days: int | None = None) -> tuple[Path, Path]:
        """`fleetwire device cert`: returns (certificate, key)."""
        out.mkdir(parents=True, exist_ok=True)
        args = ["device", "cert", device, "--data-dir", str(self.data_dir), "--out", str(out)]
        if days is not None:
            args += ["--days", str(days)]
        _fleetwire(*args)
        pem, key = out / f"{device}.pem", out / f"{device}.key"
        assert pem.exists() and key.exists(), f"fleetwire device cert wrote no {pem} / {key}"
        return pem, key

    def openssl_cert(self, device: str, out: Path, *, start: str, end: str) -> tuple[Path, Path]:
        """A client certificate for `device` (CN) signed by this CA with `openssl ca`, valid
        from `start` to `end` (YYYYMMDDHHMMSSZ), which may both lie in the past; `openssl
        x509 -days` cannot. Returns (certificate, key)."""
        work = out / f"openssl-ca-{device}-{start}-{end}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "index.txt").write_text("")
        (work / "serial").write_text(os.urandom(8).hex() + "\n")
        config = work / "ca.cnf"
        config.write_text(
            "[ca]\ndefault_ca = dev\n"
            f"[dev]\ndatabase = {work}/index.txt\nnew_certs_dir = {work}\nserial = {work}/serial\n"
            "default_md = sha256\npolicy = any\nunique_subject = no\nx509_extensions = client\n"
            "[any]\ncommonName = supplied\n"
            "[client]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
            "extendedKeyUsage = clientAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
        )
        key, request, pem = work / f"{device}.key", work / f"{device}.csr", work / f"{device}.pem"
        for command in (
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
             "-out", request, "-subj", f"/CN={device}"],
            ["ca", "-batch", "-config", config, "-cert", self.ca, "-keyfile", self.ca_key, "-in", request,
             "-out", pem, "-startdate", start, "-enddate", end, "-notext"],
        ):  # fmt: skip
            result = subprocess.run(["openssl", *map(str, command)], capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, f"openssl {command[0]} failed:\n{result.stderr}"
        return pem, key


def cert_init(data_dir: Path, *sans: str, force: bool = False) -> Pki:
    """`fleetwire cert init --data-dir data_dir [--san ...] [--force]`."""
    args = ["cert", "init", "--data-dir", str(data_dir)]
    for name in sans:
        args += ["--san", name]
    if force:
        args.append("--force")
    _fleetwire(*args)
    pki = Pki(data_dir)
    for path in (pki.ca, pki.ca_key, pki.server, pki.server_key):
        assert path.exists(), f"fleetwire cert init did not write {path}"
    return pki


def pem_to_der(pem: Path) -> bytes:
    """The first certificate of a PEM file, DER-encoded."""
    text = pem.read_text()
    begin = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[begin:end])


def sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def client_context(
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client context that verifies the server against `ca` (host name checked: the dev
    server certificate names 127.0.0.1); `ca=None` verifies nothing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def served_certificate(port: int, ca: Path | None, host: str = "127.0.0.1") -> bytes:
    """The DER certificate a new handshake on `port` gets (verified against `ca` if given)."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as plain:
        with client_context(ca).wrap_socket(plain, server_hostname=host) as secure:
            der = secure.getpeercert(binary_form=True)
    assert der, "the server sent no certificate"
    return der


@dataclass
class Outcome:
    """What became of a TLS handshake plus MQTT CONNECT: `connack` is the CONNACK packet
    if one came; `alert` the TLS error (an alert from the server, or the local verdict)
    if the handshake or the first read failed; `closed` if the server closed without
    either."""

    connack: rawmqtt.Packet | None = None
    alert: str | None = None
    handshake_failed: bool = False
    closed: bool = False

    def __str__(self) -> str:
        if self.connack is not None:
            return f"CONNACK return code {self.connack.return_code:#x}"
        if self.alert is not None:
            return f"TLS failure ({'handshake' if self.handshake_failed else 'after handshake'}): {self.alert}"
        return "closed without CONNACK" if self.closed else "nothing"


def tls_connect(
    port: int,
    context: ssl.SSLContext,
    client_id: str,
    *,
    version: int = rawmqtt.V311,
    username: str | None = None,
    host: str = "127.0.0.1",
) -> Outcome:
    """Handshake, send an MQTT CONNECT (user name without password if given), read the
    answer. With TLS 1.3 a refused client certificate shows up after the client thinks the
    handshake is done, on the first read, as the server's alert."""
    connect = rawmqtt.connect(client_id, version=version)
    if username is not None:
        # Set the user name flag and append the user name (after the client id).
        connect = _with_username(client_id, username, version)
    with socket.create_connection((host, port), timeout=TIMEOUT) as plain:
        try:
            secure = context.wrap_socket(plain, server_hostname=host)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as error:
            return Outcome(alert=_describe(error), handshake_failed=True)
        with secure:
            buffer = bytearray()
            try:
                secure.sendall(connect)
                while True:
                    chunk = secure.recv(4096)
                    if not chunk:
                        return Outcome(closed=True)
                    buffer += chunk
                    if len(buffer) >= 2 and len(buffer) >= 2 + buffer[1]:
                        kind, body = buffer[0] >> 4, bytes(buffer[2 : 2 + buffer[1]])
                        return Outcome(connack=rawmqtt.Packet(kind, buffer[0] & 0x0F, body))
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as error:
                return Outcome(alert=_describe(error))


def _describe(error: Exception) -> str:
    if isinstance(error, ssl.SSLError):
        return f"{error.reason or ''} {error}".strip()
    return repr(error)


def _with_username(client_id: str, username: str, version: int) -> bytes:
    flags = 0x02 | 0x80
    body = rawmqtt.string("MQTT") + bytes([version, flags]) + (60).to_bytes(2, "big")
    if version == rawmqtt.V5:
        body += rawmqtt.properties()
    body += rawmqtt.string(client_id) + rawmqtt.string(username)
    return rawmqtt.packet(rawmqtt.CONNECT << 4, body)
