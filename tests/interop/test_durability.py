"""An acknowledged point is never lost, not even to `kill -9`.

Several paho devices (MQTT 3.1.1 and 5.0, QoS 1) and one HTTP client write an incrementing
`seq` with explicit timestamps as fast as their acknowledgements allow; the server is killed
with SIGKILL in the middle of it, restarted on the same data directory, and every point
whose PUBACK (or HTTP 200) arrived before the kill must be there, exactly."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import ADMIN_TOKEN, BROKER_KIND, _start_fleetwire, _stop
from fleet import BASE_MS, Api, close_to, reference_aggregate, wait_until
from peer import Peer

MQTT_PUBLISHERS = 4
IN_FLIGHT = 16  # QoS 1 messages each publisher keeps unacknowledged
ACKS_BEFORE_KILL = 300  # per writer, or RUN_BEFORE_KILL, whichever comes first
RUN_BEFORE_KILL = 3.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROKER_KIND != "fleetwire", reason="durability of the platform's store"),
]


class MqttWriter:
    """One device on its own paho connection, publishing {"seq": n, "ts": BASE_MS + n} with
    at most IN_FLIGHT messages unacknowledged."""

    def __init__(self, started, device: str, protocol: int):
        self.device = device
        self.refused: list[int] = []
        self.stopped = threading.Event()
        self._published: list[mqtt.MQTTMessageInfo] = []  # index = seq
        self._window = threading.Semaphore(IN_FLIGHT)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=protocol, reconnect_on_failure=False
        )
        self.client.max_inflight_messages_set(IN_FLIGHT)
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = lambda *args: self.stopped.set()
        connected = threading.Event()
        self.client.on_connect = lambda *args: connected.set()
        self.client.connect(started.host, started.port)
        self.client.loop_start()
        assert connected.wait(10), f"{device}: no CONNACK"
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        if reason_code.value >= 0x80:
            self.refused.append(reason_code.value)
        self._window.release()

    def _run(self):
        while not self.stopped.is_set():
            if not self._window.acquire(timeout=0.1):
                continue
            seq = len(self._published)
            payload = json.dumps({"seq": seq, "ts": BASE_MS + seq})
            info = self.client.publish(f"devices/{self.device}/telemetry", payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return
            self._published.append(info)

    @property
    def sent(self) -> int:
        return len(self._published)

    @property
    def acked(self) -> set[int]:
        """The seqs whose PUBACK arrived (paho marks a QoS 1 message published only then)."""
        return {seq for seq, info in enumerate(list(self._published)) if info.is_published()}

    def close(self):
        self.stopped.set()
        self.thread.join(10)
        self.client.loop_stop()


class HttpWriter:
    """One device written through POST /api/v1/devices/{id}/telemetry on a kept-alive
    connection, one point per request."""

    def __init__(self, started, device: str):
        self.device = device
        self.port = started.http_port
        self.acked: set[int] = set()
        self.refused: list[int] = []
        self.sent = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
        seq = 0
        try:
            while not self.stopped.is_set():
                body = json.dumps({"seq": seq, "ts": BASE_MS + seq})
                self.sent = seq + 1
                connection.request("POST", f"/api/v1/devices/{self.device}/telemetry", body, headers)
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.acked.add(seq)
                else:
                    self.refused.append(response.status)
                seq += 1
        except (OSError, http.client.HTTPException):
            pass  # the server was killed
        finally:
            self.stopped.set()
            connection.close()

    def close(self):
        self.stopped.set()
        self.thread.join(10)


def test_every_acknowledged_point_survives_kill_9(tmp_path, uid, record_property):
    first = _start_fleetwire(tmp_path, anonymous=True, env={"FLEETWIRE_ADMIN_TOKEN": ADMIN_TOKEN})
    api = Api(first, ADMIN_TOKEN)
    devices = [f"dur-{uid}-{index}" for index in range(MQTT_PUBLISHERS + 1)]
    for device in devices:
        api.create_device(device)
    writers = [
        MqttWriter(first, device, mqtt.MQTTv5 if index % 2 else mqtt.MQTTv311)
        for index, device in enumerate(devices[:MQTT_PUBLISHERS])
    ]
    writers.append(HttpWriter(first, devices[-1]))
    try:
        for writer in writers:
            writer.thread.start()
        deadline = time.monotonic() + RUN_BEFORE_KILL
        while time.monotonic() < deadline and min(len(w.acked) for w in writers) < ACKS_BEFORE_KILL:
            time.sleep(0.01)
        assert all(not writer.stopped.is_set() for writer in writers), "a writer stopped before the kill"
        os.kill(first.pid, signal.SIGKILL)
        first.process.wait(10)
    finally:
        for writer in writers:
            writer.close()
        if first.process.poll() is None:
            first.process.kill()
            first.process.wait()

    for writer in writers:
        assert not writer.refused, f"{writer.device}: refused {writer.refused}"
        assert writer.acked, f"{writer.device}: nothing acknowledged before the kill"
    acked = sum(len(writer.acked) for writer in writers)
    sent = sum(writer.sent for writer in writers)

    second = _start_fleetwire(tmp_path, anonymous=True, env={"FLEETWIRE_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        api = Api(second, ADMIN_TOKEN)
        stored_total = 0
        for writer in writers:
            stored = api.series(writer.device, fields="seq", **{"from": BASE_MS, "to": BASE_MS + writer.sent + 1})
            points = stored.get("seq", [])
            stored_total += len(points)
            # Exactly what was sent: each point once, its value matching its timestamp.
            timestamps = [ts for ts, _ in points]
            assert timestamps == sorted(set(timestamps)), f"{writer.device}: repeated or unordered points"
            assert all(value == ts - BASE_MS and 0 <= value < writer.sent for ts, value in points), writer.device
            present = {int(value) for _, value in points}
            lost = sorted(writer.acked - present)
            assert not lost, (
                f"{writer.device}: {len(lost)} of {len(writer.acked)} acknowledged points lost after kill -9, "
                f"first {lost[:10]}"
            )
        # The restarted server takes new writes for the same devices.
        api.write(devices[0], {"seq": -1, "ts": BASE_MS - 1})
        per_writer = ", ".join(f"{w.device}: {len(w.acked)}/{w.sent}" for w in writers)
        summary = (
            f"kill -9: {acked} points acknowledged of {sent} sent, {stored_total} stored after restart, "
            f"none lost (acknowledged/sent: {per_writer})"
        )
        print(summary)
        record_property("durability", summary)
    finally:
        _stop(second)


@contextlib.contextmanager
def _serving(tmp_path):
    """`fleetwire serve` on the data directory in `tmp_path` (anonymous, the suite's admin
    token) and an API client of it; stopped cleanly on exit."""
    server = _start_fleetwire(tmp_path, anonymous=True, env={"FLEETWIRE_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        yield server, Api(server, ADMIN_TOKEN)
    finally:
        _stop(server)


def test_data_rules_and_alarms_carry_on_across_a_restart(tmp_path, uid):
    """Stopped cleanly (the store flushes its head to segments) and started again on the
    same data directory: queries merge what was written before (now in segments) with what
    is written after, also inside the same time range; rules still watch, and an alarm
    raised before is cleared by its rule after."""
    device = f"restart-{uid}"
    before = [(BASE_MS + 1000 * index, index * 0.5 - 40) for index in range(300)]
    after = [(BASE_MS + 300_000 + 700 * index, 100 - index * 0.25) for index in range(200)]
    after += [(BASE_MS + 500 + 1000 * index, index * 1.5) for index in range(50)]  # between older points
    with _serving(tmp_path) as (_, api):
        api.create_device(device)
        for chunk in range(0, len(before), 100):
            api.write(device, [{"ts": ts, "x": value} for ts, value in before[chunk : chunk + 100]])
        hot = api.create_rule({
            "id": f"hot-{uid}", "name": "hot", "match": {"devices": [device]},
            "condition": "t > 30", "clear": "t < 20",
        })  # fmt: skip
        api.write(device, {"ts": BASE_MS, "t": 40})
        alarm = wait_until(lambda: api.alarms(rule=hot["id"], status="active"), "alarm raised")[0]

    with _serving(tmp_path) as (_, api):
        api.write(device, [{"ts": ts, "x": value} for ts, value in after])
        everything = sorted(before + after)
        window = {"from": BASE_MS, "to": BASE_MS + 600_000}
        assert api.series(device, fields="x", **window)["x"] == everything
        for agg in ("avg", "min", "max", "sum", "count", "first", "last"):
            got = api.series(device, fields="x", agg=agg, every="1m", **window)["x"]
            expected = reference_aggregate(everything, BASE_MS, BASE_MS + 600_000, 60_000, agg)
            assert [w for w, _ in got] == [w for w, _ in expected], agg
            assert all(close_to(a, b) for (_, a), (_, b) in zip(got, expected, strict=True)), (agg, got, expected)

        assert api.ok("GET", f"/api/v1/rules/{hot['id']}")["condition"] == "t > 30"
        api.write(device, {"ts": BASE_MS + 1000, "t": 25})  # not cleared: hysteresis
        api.write(device, {"ts": BASE_MS + 2000, "t": 15})
        cleared = wait_until(
            lambda: (lambda a: a if a["status"] == "cleared" else None)(api.ok("GET", f"/api/v1/alarms/{alarm['id']}")),
            "the alarm raised before the restart cleared by its rule",
        )
        assert cleared["clear_values"] == {"t": 15.0}
        assert len(api.alarms(rule=hot["id"])) == 1


def test_the_last_ingest_error_survives_a_restart(tmp_path, uid):
    """A device's last rejected payload is kept in the registry, not only in memory: after
    a restart the device still says what was wrong, until a newer rejection replaces it."""
    device = f"garbled-{uid}"
    with _serving(tmp_path) as (_, api):
        api.create_device(device)
        response = api.post(
            f"/api/v1/devices/{device}/telemetry", data=b'{"t": "warm"}', headers={"Content-Type": "application/json"}
        )
        assert response.status == 400
        before = api.device(device)["last_ingest_error"]
        assert before["source"] == "http" and before["message"] == response.body["detail"], before

    with _serving(tmp_path) as (_, api):
        assert api.device(device)["last_ingest_error"] == before
        listed = [item for item in api.ok("GET", "/api/v1/devices?limit=1000")["items"] if item["id"] == device]
        assert listed[0]["last_ingest_error"] == before
        api.post(f"/api/v1/devices/{device}/telemetry", data=b"{}", headers={"Content-Type": "application/json"})
        after = api.device(device)["last_ingest_error"]
        assert after["at"] >= before["at"] and after["message"] != before["message"], after


def test_pending_commands_keep_their_deadlines_across_a_restart(tmp_path, uid):
    """A command to an offline device, sent before a restart, is still delivered when the
    device comes back before its deadline; one due during the restart expires."""
    sleeper = f"sleeper-{uid}"
    with _serving(tmp_path) as (_, api):
        api.create_device(sleeper)
        waiting = api.send_command(sleeper, "update", timeout_s=60)
        due = api.send_command(sleeper, "soon", timeout_s=1)

    with _serving(tmp_path) as (second, api):
        wait_until(lambda: api.command(sleeper, due["id"])["status"] == "expired", "the due command expired", 5)
        assert api.command(sleeper, waiting["id"])["status"] == "pending"
        peer = Peer(second, sleeper)
        try:
            peer.connect()
            peer.subscribe((f"devices/{sleeper}/commands/+", 1))
            # Commands nobody took are published again every second.
            message = peer.expect_message(timeout=3)
            assert message.topic == f"devices/{sleeper}/commands/{waiting['id']}"
            wait_until(lambda: api.command(sleeper, waiting["id"])["status"] == "delivered", "delivered")
        finally:
            peer.close()
