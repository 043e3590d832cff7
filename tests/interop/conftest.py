"""Fixtures: one broker process per test module, and per-test clients with unique ids and topics.

INTEROP_BROKER selects the broker under test:
- `fleetwire` (default): the binary at FLEETWIRE_BIN (default <repo>/target/debug/fleetwire);
- `mosquitto`: a local Mosquitto, to check that the tests themselves are right.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peer import V311, V5, Peer, PROTOCOL_NAMES
from rawmqtt import RawClient

REPO = Path(__file__).resolve().parents[2]
BROKER_KIND = os.environ.get("INTEROP_BROKER", "fleetwire")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
MAX_QUEUED_MESSAGES = 100

assert BROKER_KIND in ("fleetwire", "mosquitto"), f"INTEROP_BROKER must be fleetwire or mosquitto, not {BROKER_KIND!r}"


@dataclass
class Broker:
    kind: str
    host: str
    port: int
    process: subprocess.Popen = field(repr=False)
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=5000), repr=False)
    max_queued_messages: int = MAX_QUEUED_MESSAGES
    http_port: int | None = None
    tls_port: int | None = None  # MQTT over TLS, when started with a certificate
    https_port: int | None = None
    pki: object = field(default=None, repr=False)  # pki.Pki the TLS listeners serve

    @property
    def is_fleetwire(self) -> bool:
        return self.kind == "fleetwire"

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident set size of the broker process, from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("VmRSS missing from /proc status")

    def log_text(self, lines: int = 300) -> str:
        return "\n".join(list(self.log)[-lines:])

    def assert_running(self) -> None:
        assert self.process.poll() is None, f"broker exited with {self.process.returncode}\n{self.log_text()}"


def _drain(stream, log, on_line=None) -> None:
    """Keep reading a pipe so the broker never blocks on a full one."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        log.append(line)
        if on_line:
            on_line(line)
    stream.close()


def _start_fleetwire(tmp: Path, *, anonymous: bool = True, env: dict[str, str] | None = None) -> Broker:
    """Starts the real binary on free loopback ports; `anonymous` adds --allow-anonymous."""
    binary = Path(os.environ.get("FLEETWIRE_BIN", REPO / "target" / "debug" / "fleetwire"))
    assert binary.exists(), (
        f"fleetwire binary not found at {binary}: run `cargo build -p fleetwire` or set FLEETWIRE_BIN"
    )
    command = [
        str(binary), "--log-format", "json", "serve",
        "--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", str(tmp / "data"),
    ]  # fmt: skip
    if anonymous:
        command.append("--allow-anonymous")
    # Fleetwire treats every FLEETWIRE_* variable as configuration and refuses unknown
    # keys, so the suite's own FLEETWIRE_BIN must not reach it.
    inherited = {name: value for name, value in os.environ.items() if name != "FLEETWIRE_BIN"}
    env = {
        **inherited,
        "FLEETWIRE_MQTT__SYS_INTERVAL_SECS": "1",
        "FLEETWIRE_MQTT__MAX_QUEUED_MESSAGES": str(MAX_QUEUED_MESSAGES),
        "RUST_LOG": "info",
        **(env or {}),
    }
    # With a certificate the binary also listens for MQTT over TLS and HTTPS.
    wanted = {"mqtt", "http", "mqtts", "https"} if env.get("FLEETWIRE_TLS__CERT_FILE") else {"mqtt", "http"}
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    log: collections.deque = collections.deque(maxlen=5000)
    found: dict[str, str] = {}
    ready = threading.Event()

    def on_line(line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        fields = record.get("fields", {}) if isinstance(record, dict) else {}
        if fields.get("message") == "listening" and fields.get("protocol") in wanted:
            found[fields["protocol"]] = str(fields.get("addr"))
            if set(found) == wanted:
                ready.set()

    threading.Thread(target=_drain, args=(process.stderr, log, on_line), daemon=True).start()
    threading.Thread(target=_drain, args=(process.stdout, log), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            reason = (
                f"exited with {process.returncode}"
                if process.poll() is not None
                else f"timed out after {START_TIMEOUT} s"
            )
            process.kill()
            process.wait()
            captured = "\n".join(log)
            raise RuntimeError(
                f"fleetwire did not log JSON lines with fields.message == 'listening' and "
                f"fields.protocol {' and '.join(sorted(wanted))} ({reason}).\n"
                f"command: {' '.join(command)}\ncaptured output:\n{captured}"
            )
    host, _, port = found["mqtt"].rpartition(":")
    http_port = int(found["http"].rpartition(":")[2])
    started = Broker("fleetwire", host.strip("[]"), int(port), process, log, http_port=http_port)
    if "mqtts" in found:
        started.tls_port = int(found["mqtts"].rpartition(":")[2])
        started.https_port = int(found["https"].rpartition(":")[2])
    return started


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_mosquitto(tmp: Path, extra: str = "") -> Broker:
    """Starts a local Mosquitto on a free loopback port; `extra` is appended to its config."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    for _attempt in range(5):
        port = _free_port()
        config = tmp / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "sys_interval 1\n"
            f"max_queued_messages {MAX_QUEUED_MESSAGES}\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            + extra
        )
        process = subprocess.Popen(
            [binary, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        log: collections.deque = collections.deque(maxlen=5000)
        threading.Thread(target=_drain, args=(process.stderr, log), daemon=True).start()
        threading.Thread(target=_drain, args=(process.stdout, log), daemon=True).start()
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return Broker("mosquitto", "127.0.0.1", port, process, log)
            except OSError:
                time.sleep(0.05)
        process.kill()
        process.wait()
    raise RuntimeError("mosquitto did not start:\n" + "\n".join(log))


def _stop(started: Broker) -> None:
    """SIGTERM, then checks the broker exited in time (fleetwire: with status 0)."""
    process = started.process
    assert process.poll() is None, f"broker died during the module (exit {process.returncode})\n{started.log_text()}"
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"broker did not exit within {STOP_TIMEOUT} s of SIGTERM\n{started.log_text()}") from None
    if started.is_fleetwire:
        assert code == 0, f"fleetwire exited with {code} after SIGTERM\n{started.log_text()}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("broker")
    started = _start_fleetwire(tmp) if BROKER_KIND == "fleetwire" else _start_mosquitto(tmp)
    yield started
    _stop(started)


ADMIN_TOKEN = "interop-admin-token-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """Fleetwire with its registry and without anonymous access (fleetwire only)."""
    if BROKER_KIND != "fleetwire":
        pytest.skip("device registry tests need fleetwire")
    tmp = tmp_path_factory.mktemp("platform")
    started = _start_fleetwire(
        tmp, anonymous=False, env={"FLEETWIRE_ADMIN_TOKEN": ADMIN_TOKEN, "FLEETWIRE_MQTT__AUTH_FAILURE_BURST": "1000"}
    )
    yield started
    _stop(started)


@pytest.fixture(scope="module")
def fleet(request, tmp_path_factory):
    """Fleetwire as a whole platform, for the telemetry, rules, alarms, commands and stream
    tests: anonymous MQTT clients allowed (their devices are registered on first use), the
    known ADMIN_TOKEN for the API. A module may set `FLEETWIRE_ENV = {...}` for more
    configuration (fast webhook retries, for one)."""
    if BROKER_KIND != "fleetwire":
        pytest.skip("platform tests need fleetwire")
    tmp = tmp_path_factory.mktemp("fleet")
    env = {"FLEETWIRE_ADMIN_TOKEN": ADMIN_TOKEN, **getattr(request.module, "FLEETWIRE_ENV", {})}
    started = _start_fleetwire(tmp, anonymous=True, env=env)
    yield started
    _stop(started)


@pytest.fixture(scope="module")
def secure(request, tmp_path_factory):
    """Fleetwire with TLS (fleetwire only): `fleetwire cert init` makes a development PKI
    in its data dir, which it serves on MQTT over TLS (`tls_port`) and HTTPS (`https_port`)
    beside the plain listeners, trusting the dev CA for client certificates (`pki`). The
    known ADMIN_TOKEN; anonymous MQTT clients only if the module sets `ALLOW_ANONYMOUS = True`;
    more configuration from the module's `FLEETWIRE_ENV`."""
    if BROKER_KIND != "fleetwire":
        pytest.skip("TLS tests need fleetwire")
    from pki import cert_init

    tmp = tmp_path_factory.mktemp("secure")
    pki = cert_init(tmp / "data")
    env = {
        "FLEETWIRE_ADMIN_TOKEN": ADMIN_TOKEN,
        "FLEETWIRE_MQTT__AUTH_FAILURE_BURST": "1000",
        **pki.env(),
        **getattr(request.module, "FLEETWIRE_ENV", {}),
    }
    started = _start_fleetwire(tmp, anonymous=getattr(request.module, "ALLOW_ANONYMOUS", False), env=env)
    started.pki = pki
    yield started
    _stop(started)


@pytest.fixture(scope="module")
def secure_api(secure):
    """The REST API of `secure` (plain HTTP), with the admin token."""
    from fleet import Api

    return Api(secure, ADMIN_TOKEN)


@pytest.fixture(scope="module")
def api(fleet):
    """The REST API of `fleet`, with the admin token."""
    from fleet import Api

    return Api(fleet, ADMIN_TOKEN)


@pytest.fixture
def devices(fleet):
    """Factory for paho clients of `fleet` (`devices("name", protocol=..., username=..., password=...)`),
    connected, all closed after the test."""
    created: list[Peer] = []

    def make(
        client_id: str, *, username: str | None = None, password: str | None = None, connect: bool = True, **kwargs
    ) -> Peer:
        peer = Peer(fleet, client_id, **kwargs)
        if username is not None:
            peer.client.username_pw_set(username, password)
        created.append(peer)
        return peer.connect() if connect else peer

    yield make
    close_all(created)


def close_all(peers: list[Peer]) -> None:
    """Closes paho clients and frees them now. A paho client and its callbacks form a
    reference cycle that holds a socket pair open until the cyclic collector runs, and
    paho waits in select(), which fails for descriptors above 1023: a test opening
    hundreds of clients right after another one did would get descriptors past that
    limit, and its clients would never see their CONNACK."""
    for peer in peers:
        peer.close()
    peers.clear()
    gc.collect()


@pytest.fixture
def uid() -> str:
    """A short unique prefix for this test's client ids and topics."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(params=[V311, V5], ids=[PROTOCOL_NAMES[V311], PROTOCOL_NAMES[V5]])
def protocol(request) -> int:
    return request.param


@pytest.fixture
def peers(broker, uid):
    """Factory for paho clients (`peers("name", protocol=..., clean=...)`), all closed after the test."""
    created: list[Peer] = []

    def make(name: str, **kwargs) -> Peer:
        client_id = kwargs.pop("client_id", f"{uid}-{name}")
        created.append(Peer(broker, client_id, **kwargs))
        return created[-1]

    yield make
    close_all(created)


@pytest.fixture
def raw(broker):
    """Factory for raw-socket clients, all closed after the test."""
    created: list[RawClient] = []

    def make(timeout: float = 5.0) -> RawClient:
        created.append(RawClient(broker.host, broker.port, timeout))
        return created[-1]

    yield make
    for client in created:
        client.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the broker's recent log to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    started = funcargs.get("broker") or funcargs.get("platform") or funcargs.get("fleet") or funcargs.get("secure")
    if report.failed and isinstance(started, Broker):
        report.sections.append((f"{started.kind} log (last 300 lines)", started.log_text()))
    # The cluster tests' nodes (test_cluster.py): each node's warnings and errors.
    for number, node in enumerate(funcargs.get("nodes") or []):
        if report.failed and isinstance(node, Broker):
            lines = [line for line in node.log_text(2000).splitlines() if '"level":"INFO"' not in line]
            report.sections.append((f"cluster node {number} warnings and errors", "\n".join(lines[-100:])))
