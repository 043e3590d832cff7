"""Helpers for the platform tests (telemetry, line protocol, rules, alarms, webhooks,
commands, live stream, durability): a small REST client over urllib, Prometheus counters,
polling for a state the platform reaches asynchronously, a real HTTP server that plays the
webhook receiver, and a WebSocket stream reader.

Everything talks to the real binary over loopback; nothing here knows Fleetwire's insides.
"""

from __future__ import annotations

import gzip
import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websocket  # websocket-client, from PyPI

from peer import TIMEOUT

# Milliseconds since the epoch of a fixed instant on a 1-minute boundary, a few days
# back: tests add offsets to it so every timestamp they send is explicit.
BASE_MS = (int(time.time() * 1000) // 60_000 - 3 * 24 * 60) * 60_000


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: object  # parsed JSON, else the text, else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class Api:
    """The REST API of one Fleetwire process, with the admin token unless told otherwise."""

    def __init__(self, started, token: str):
        self.base = f"http://127.0.0.1:{started.http_port}"
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body=None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = "admin",
        timeout: float = TIMEOUT,
    ) -> Response:
        """One request. `body` is sent as JSON; `data` as is. `token=None` sends no
        Authorization header (unless `headers` has one)."""
        all_headers = {}
        if token == "admin":
            all_headers["Authorization"] = f"Bearer {self.token}"
        elif token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        request = urllib.request.Request(self.base + path, method=method, data=data, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _response(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return _response(error.code, error.headers, error.read())

    def get(self, path: str, **kwargs) -> Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body=None, **kwargs) -> Response:
        return self.call("POST", path, body, **kwargs)

    def ok(self, method: str, path: str, body=None, *, expect: int = 200, **kwargs):
        """A request that must answer `expect`; returns the parsed body."""
        response = self.call(method, path, body, **kwargs)
        assert response.status == expect, f"{method} {path}: expected {expect}, got {response.status}: {response.body}"
        return response.body

    # Devices and telemetry.

    def create_device(self, device: str, **fields) -> dict:
        return self.ok("POST", "/api/v1/devices", {"id": device, **fields}, expect=201)

    def credentials(self, device: str) -> str:
        body = self.ok("POST", f"/api/v1/devices/{device}/credentials", expect=201)
        assert body["username"] == device
        return body["password"]

    def device(self, device: str) -> dict:
        return self.ok("GET", f"/api/v1/devices/{device}")

    def write(self, device: str, payload) -> dict:
        """POST .../telemetry with the admin token; must be accepted."""
        return self.ok("POST", f"/api/v1/devices/{device}/telemetry", payload)

    def series(self, device: str, **query) -> dict[str, list[tuple[int, float]]]:
        """GET .../telemetry as {field: [(ts, value), ...]}, values as floats."""
        text = urllib.parse.urlencode({name: value for name, value in query.items() if value is not None})
        body = self.ok("GET", f"/api/v1/devices/{device}/telemetry?{text}")
        assert set(body) == {"series"}, body
        return {
            series["field"]: [(int(ts), None if value is None else float(value)) for ts, value in series["points"]]
            for series in body["series"]
        }

    def latest(self, device: str) -> dict[str, tuple[int, float]]:
        body = self.ok("GET", f"/api/v1/devices/{device}/telemetry/latest")
        return {name: (int(entry["ts"]), float(entry["value"])) for name, entry in body.items()}

    def write_lines(self, lines: str | bytes, *, precision: str | None = None, gzip_body: bool = False,
                    scheme: str = "Token", token: str | None = None) -> Response:  # fmt: skip
        query = {"bucket": "interop", "org": "interop"}
        if precision:
            query["precision"] = precision
        data = lines.encode() if isinstance(lines, str) else lines
        headers = {"Authorization": f"{scheme} {token or self.token}", "Content-Type": "text/plain; charset=utf-8"}
        if gzip_body:
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        return self.call(
            "POST", "/api/v2/write?" + urllib.parse.urlencode(query), data=data, headers=headers, token=None
        )

    # Rules and alarms.

    def create_rule(self, rule: dict) -> dict:
        return self.ok("POST", "/api/v1/rules", rule, expect=201)

    def alarms(self, **query) -> list[dict]:
        """Every alarm matching the filters, following the pages."""
        items, cursor = [], None
        while True:
            params = {name: value for name, value in query.items() if value is not None}
            if cursor:
                params["cursor"] = cursor
            page = self.ok("GET", "/api/v1/alarms?" + urllib.parse.urlencode(params))
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items

    # Commands.

    def send_command(self, device: str, name: str, params=None, timeout_s: float | None = None) -> dict:
        body = {"name": name, "params": params if params is not None else {}}
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        return self.ok("POST", f"/api/v1/devices/{device}/commands", body, expect=202)

    def command(self, device: str, command_id: str) -> dict:
        return self.ok("GET", f"/api/v1/devices/{device}/commands/{command_id}")

    # Metrics.

    def metric(self, name: str, **labels) -> float:
        """The value of one Prometheus sample of GET /metrics (0 when absent)."""
        response = self.get("/metrics", token=None)
        assert response.status == 200, response
        wanted = name + ("{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}" if labels else "")
        for line in str(response.body).splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            if sample == wanted:
                return float(value)
        return 0.0


def _response(status: int, headers, raw: bytes) -> Response:
    lowered = {key.lower(): value for key, value in headers.items()}
    body: object = None
    if raw:
        text = raw.decode(errors="replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    return Response(status, lowered, body)


def assert_problem(response: Response, status: int, *fragments: str) -> dict:
    """`response` is an application/problem+json error of `status` whose detail contains
    every fragment."""
    assert response.status == status, f"expected {status}, got {response.status}: {response.body}"
    assert response.content_type.startswith("application/problem+json"), (
        f"{status} answered as {response.content_type!r}, not application/problem+json: {response.body!r}"
    )
    problem = response.body
    assert isinstance(problem, dict) and problem["status"] == status, problem
    for key in ("type", "title", "detail"):
        assert isinstance(problem.get(key), str) and problem[key], problem
    for fragment in fragments:
        assert fragment in problem["detail"], f"{fragment!r} not in {problem['detail']!r}"
    return problem


def wait_until(predicate, what: str, timeout: float = TIMEOUT, interval: float = 0.02):
    """Polls `predicate` until it returns something truthy (returned), for states the
    platform reaches asynchronously and announces nowhere the test can wait on."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {value!r})")
        time.sleep(interval)


def close_to(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def reference_aggregate(points, start, end, every, agg):
    """Windows aligned to multiples of `every` since the epoch, stamped with their start;
    only points with start <= ts < end; empty windows left out."""
    windows: dict[int, list[float]] = {}
    for ts, value in sorted(points):
        if start <= ts < end:
            windows.setdefault(ts - ts % every, []).append(value)
    combine = {
        "avg": lambda values: sum(values) / len(values),
        "min": min,
        "max": max,
        "sum": sum,
        "count": lambda values: float(len(values)),
        "first": lambda values: values[0],
        "last": lambda values: values[-1],
    }[agg]
    return [(window, combine(values)) for window, values in sorted(windows.items())]


# The webhook receiver.


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: object
    at: float  # time.monotonic() when it arrived
    status: int  # what the receiver answered (0: it let the request time out)


@dataclass
class _Script:
    """What one path answers: the next entries of `plan` in turn, then `then`.
    An entry is an HTTP status, or ("hang", seconds) to answer 200 only after that long."""

    plan: list = field(default_factory=list)
    then: object = 200


class WebhookReceiver:
    """A real HTTP server on a free loopback port that records every request and answers
    what each path's script says (200 by default). With `tls` (an `ssl.SSLContext` for a
    server) it speaks HTTPS."""

    def __init__(self, tls=None):
        self.deliveries: list[Delivery] = []
        self._scripts: dict[str, _Script] = {}
        self._condition = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                action = receiver._next_action(self.path)
                hang = isinstance(action, tuple)
                status = 200 if hang else int(action)
                delivery = Delivery(
                    self.path, {key.lower(): value for key, value in self.headers.items()}, body,
                    time.monotonic(), 0 if hang else status,
                )  # fmt: skip
                with receiver._condition:
                    receiver.deliveries.append(delivery)
                    receiver._condition.notify_all()
                if hang:
                    time.sleep(action[1])
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up waiting (a timeout the test asked for)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            # Handshakes happen in accept(); one that fails (the client refuses the
            # certificate) is an OSError the server loop drops.
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def script(self, path: str, plan: list, then=200) -> None:
        with self._condition:
            self._scripts[path] = _Script(list(plan), then)

    def _next_action(self, path: str):
        with self._condition:
            script = self._scripts.get(path)
            if script is None:
                return 200
            return script.plan.pop(0) if script.plan else script.then

    def received(self, path: str) -> list[Delivery]:
        with self._condition:
            return [delivery for delivery in self.deliveries if delivery.path == path]

    def wait_for(self, path: str, count: int, timeout: float = TIMEOUT) -> list[Delivery]:
        """Waits until `path` received at least `count` requests; returns them all."""
        with self._condition:
            ok = self._condition.wait_for(
                lambda: sum(delivery.path == path for delivery in self.deliveries) >= count, timeout
            )
            got = [delivery for delivery in self.deliveries if delivery.path == path]
        assert ok, f"webhook receiver: {len(got)} of {count} requests on {path} within {timeout} s"
        return got

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# The live stream.


class Stream:
    """A WebSocket client (websocket-client) on /api/v1/stream."""

    def __init__(self, started, token: str, query: dict[str, str] | None = None, *, header_token: bool = True):
        params = dict(query or {})
        headers = []
        if header_token:
            headers.append(f"Authorization: Bearer {token}")
        else:
            params["token"] = token
        text = urllib.parse.urlencode(params)
        self.url = f"ws://127.0.0.1:{started.http_port}/api/v1/stream" + (f"?{text}" if text else "")
        self.ws = websocket.create_connection(self.url, header=headers, timeout=TIMEOUT)
        self.received: list[dict] = []

    def next(self, timeout: float = TIMEOUT) -> dict:
        self.ws.settimeout(timeout)
        try:
            text = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise AssertionError(f"no stream event within {timeout} s") from None
        event = json.loads(text)
        self.received.append(event)
        return event

    def next_matching(self, predicate, what: str, timeout: float = TIMEOUT) -> dict:
        """The first event for which `predicate` holds, skipping others (kept in `received`)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no stream event {what} within {timeout} s; got {self.received[-20:]}")
            try:
                event = self.next(remaining)
            except AssertionError:
                raise AssertionError(f"no stream event {what} within {timeout} s; got {self.received[-20:]}") from None
            if predicate(event):
                return event

    def close(self) -> None:
        try:
            self.ws.close()
        except (OSError, websocket.WebSocketException):
            pass
