"""The live stream, GET /api/v1/stream, read by a real WebSocket client (websocket-client):
telemetry, presence, alarm and command events, the `devices` and `kinds` filters, the token
in the header or the query, and the lag notice for a client that stops reading.

Other tests of the module may leave events behind (a device going offline), so tests either
filter by their own devices or skip events of devices that are not theirs."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time

import paho.mqtt.client as mqtt
import pytest
import websocket

from conftest import ADMIN_TOKEN
from fleet import BASE_MS, Stream
from peer import TIMEOUT, V5

EVENT_BUFFER = 4096  # events a client may fall behind by before it is dropped


@pytest.fixture
def streams(fleet):
    opened: list[Stream] = []

    def open_stream(query: dict[str, str] | None = None, **kwargs) -> Stream:
        opened.append(Stream(fleet, ADMIN_TOKEN, query, **kwargs))
        return opened[-1]

    yield open_stream
    for stream in opened:
        stream.close()


def mine(*device_ids: str):
    return lambda event: event.get("device_id") in device_ids


def test_telemetry_events_carry_device_time_and_fields(api, devices, streams, uid):
    device = f"tele-{uid}"
    stream = streams({"devices": device, "kinds": "telemetry"})
    peer = devices(device)
    rows = [
        {"ts": BASE_MS + 1, "temperature": 21.5, "ok": True},
        {"ts": BASE_MS + 2, "temperature": -3.25, "gps": {"lat": 1.5}},
    ]
    peer.publish(f"devices/{device}/telemetry", json.dumps(rows), qos=1)
    api.write(device, {"ts": BASE_MS + 3, "temperature": 1e-3})
    events = [stream.next() for _ in range(3)]
    assert events == [
        {"kind": "telemetry", "device_id": device, "ts": BASE_MS + 1, "fields": {"temperature": 21.5, "ok": 1}},
        {"kind": "telemetry", "device_id": device, "ts": BASE_MS + 2, "fields": {"temperature": -3.25, "gps.lat": 1.5}},
        {"kind": "telemetry", "device_id": device, "ts": BASE_MS + 3, "fields": {"temperature": 0.001}},
    ]


def test_presence_events_when_a_device_connects_and_disconnects(api, devices, streams, uid):
    device = f"pres-{uid}"
    api.create_device(device)
    secret = api.credentials(device)
    stream = streams({"devices": device, "kinds": "presence"})
    before = int(time.time() * 1000)
    peer = devices(device, username=device, password=secret, protocol=V5)
    online = stream.next()
    assert online["kind"] == "presence" and online["device_id"] == device and online["online"] is True
    assert before - 5 <= online["ts"] <= int(time.time() * 1000) + 5
    peer.disconnect()
    offline = stream.next()
    assert (offline["kind"], offline["device_id"], offline["online"]) == ("presence", device, False)
    assert offline["ts"] >= online["ts"]


def test_alarm_events_follow_the_alarm_through_its_lifecycle(api, streams, uid):
    device = f"alarm-{uid}"
    api.create_device(device)
    stream = streams({"devices": device, "kinds": "alarm"})
    api.create_rule(
        {
            "id": f"s-{uid}",
            "name": "stream",
            "match": {"devices": [device]},
            "condition": "v > 1",
            "severity": "critical",
        }
    )
    api.write(device, {"ts": BASE_MS, "v": 2})
    raised = stream.next()
    assert raised["kind"] == "alarm" and raised["device_id"] == device
    alarm = raised["alarm"]
    assert (alarm["rule_id"], alarm["status"], alarm["severity"], alarm["values"]) == (
        f"s-{uid}",
        "active",
        "critical",
        {"v": 2.0},
    )
    assert alarm == api.ok("GET", f"/api/v1/alarms/{alarm['id']}")
    api.ok("POST", f"/api/v1/alarms/{alarm['id']}/ack")
    assert stream.next()["alarm"]["status"] == "acknowledged"
    api.write(device, {"ts": BASE_MS + 1, "v": 0})
    cleared = stream.next()["alarm"]
    assert (cleared["id"], cleared["status"], cleared["cleared_by"]) == (alarm["id"], "cleared", "rule")


def test_command_events_follow_the_command(api, devices, streams, uid):
    device = f"cmd-{uid}"
    api.create_device(device)
    peer = devices(device)
    peer.subscribe((f"devices/{device}/commands/+", 1))
    stream = streams({"devices": device, "kinds": "command"})
    sent = api.send_command(device, "blink", {"times": 3}, timeout_s=30)
    statuses = []
    event = stream.next()
    assert event["kind"] == "command" and event["device_id"] == device
    assert event["command"]["id"] == sent["id"] and event["command"]["params"] == {"times": 3}
    statuses.append(event["command"]["status"])
    peer.expect_message(f"devices/{device}/commands/{sent['id']}")
    statuses.append(stream.next()["command"]["status"])
    peer.publish(
        f"devices/{device}/commands/{sent['id']}/response", json.dumps({"status": "ok", "result": "done"}), qos=1
    )
    last = stream.next()["command"]
    statuses.append(last["status"])
    assert statuses == ["pending", "delivered", "succeeded"]
    assert last["result"] == "done"


def test_filters_by_devices_and_kinds(api, devices, streams, uid):
    first, second, third = f"f1-{uid}", f"f2-{uid}", f"f3-{uid}"
    for device in (first, second, third):
        api.create_device(device)
    api.create_rule({"id": f"f-{uid}", "name": "f", "match": {"devices": [first, second, third]}, "condition": "v > 1"})
    two_devices = streams({"devices": f"{first},{second}"})
    alarms_only = streams({"kinds": "alarm"})
    everything = streams(header_token=False)  # token in the query, as browsers send it

    api.write(third, {"ts": BASE_MS, "v": 5})
    api.write(first, {"ts": BASE_MS, "v": 0})
    api.write(second, {"ts": BASE_MS, "v": 5})

    # Two devices: first's and second's events, nothing of third's.
    got = [(e["kind"], e["device_id"]) for e in (two_devices.next() for _ in range(3))]
    assert sorted(got) == [("alarm", second), ("telemetry", first), ("telemetry", second)]
    assert got.index(("telemetry", second)) < got.index(("alarm", second))
    # Alarms only: third's and second's alarms, no telemetry.
    got = [alarms_only.next_matching(mine(first, second, third), "of this test") for _ in range(2)]
    assert sorted((e["kind"], e["device_id"]) for e in got) == [("alarm", second), ("alarm", third)]
    assert all(e["kind"] == "alarm" for e in alarms_only.received)
    # No filter: all of it.
    got = [everything.next_matching(mine(first, second, third), "of this test") for _ in range(5)]
    assert sorted((e["kind"], e["device_id"]) for e in got) == sorted([
        ("telemetry", third), ("alarm", third), ("telemetry", first), ("telemetry", second), ("alarm", second)
    ])  # fmt: skip
    # Nothing else of these devices arrives (a write to first is the marker).
    api.write(first, {"ts": BASE_MS + 1, "v": 0})
    for stream in (two_devices, everything):
        marker = stream.next_matching(mine(first, second, third), "of this test")
        assert (marker["kind"], marker["device_id"], marker["ts"]) == ("telemetry", first, BASE_MS + 1)


def test_stream_needs_a_valid_token_and_known_filters(fleet):
    url = f"ws://127.0.0.1:{fleet.http_port}/api/v1/stream"
    for target, headers in [
        (url, []),
        (url, ["Authorization: Bearer fw_not-a-token"]),
        (url + "?token=fw_not-a-token", []),
    ]:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(target, header=headers, timeout=TIMEOUT)
        assert refused.value.status_code == 401
    for query in ("kinds=weather", "colour=red"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(
                f"{url}?{query}", header=[f"Authorization: Bearer {ADMIN_TOKEN}"], timeout=TIMEOUT
            )
        assert refused.value.status_code == 400


class RawWebSocket:
    """A WebSocket client at the socket level, with a tiny receive buffer, that can stop
    reading: what a stalled browser tab looks like to the server."""

    def __init__(self, port: int, path: str):
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.socket.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.socket.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode()
        )
        self.buffer = b""
        self.socket.settimeout(TIMEOUT)
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.socket.recv(4096)
            assert chunk, "closed during the handshake"
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def frames(self, timeout: float = TIMEOUT):
        """Reads frames (opcode, payload) until the server's close frame, which is last."""
        self.socket.settimeout(timeout)
        while True:
            frame = self._frame()
            if frame is None:
                chunk = self.socket.recv(1 << 16)
                assert chunk, "connection closed without a close frame"
                self.buffer += chunk
                continue
            yield frame
            if frame[0] == 0x8:
                return

    def _frame(self):
        data = self.buffer
        if len(data) < 2:
            return None
        opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        assert not data[1] & 0x80, "server frames are not masked"
        if length == 126:
            if len(data) < 4:
                return None
            length, offset = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            if len(data) < 10:
                return None
            length, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + length:
            return None
        self.buffer = data[offset + length :]
        return opcode, data[offset : offset + length]

    def close(self) -> None:
        self.socket.close()


def test_a_client_that_stops_reading_gets_a_lag_notice_and_is_closed(fleet, api, uid):
    """The stalled client watches one device. That device's first events are large, so the
    socket buffers between the server and the client fill up and the server's send blocks;
    then more than 4096 further events of that device go by, and the client has fallen too
    far behind on its own device (other devices' events do not count: it is not sent
    those). When it reads again, it gets what was buffered, the lag notice, and a close
    frame (1008, policy violation)."""
    big_device = f"big-{uid}"
    stalled = RawWebSocket(fleet.http_port, f"/api/v1/stream?devices={big_device}&kinds=telemetry")
    # About 20 KB per event: long field names (the stream repeats them in every event).
    big = {f"{'x' * 1000}_{index:02d}": index for index in range(20)}
    # Several publishers that each wait for the PUBACK of one message before sending the
    # next, so that each message is its own write and its own event.
    publishers = []
    for index in range(20):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lag-{uid}-{index}", protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(1)
        client.connect(fleet.host, fleet.port)
        client.loop_start()
        publishers.append(client)
    try:
        big_messages = 300  # about 6 MB, more than loopback buffers hold
        pending = [
            publishers[index % 10].publish(
                f"devices/{big_device}/telemetry", json.dumps({"ts": BASE_MS + index, **big}), qos=1
            )
            for index in range(big_messages)
        ]
        for info in pending:
            info.wait_for_publish(30)
        small_messages = EVENT_BUFFER + 1000
        pending = [
            publishers[index % 20].publish(
                f"devices/{big_device}/telemetry", json.dumps({"ts": BASE_MS + big_messages + index, "n": index}), qos=1
            )
            for index in range(small_messages)
        ]
        for info in pending:
            info.wait_for_publish(30)
    finally:
        for client in publishers:
            client.disconnect()
            client.loop_stop()

    frames = list(stalled.frames())
    stalled.close()
    texts = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
    received = [event for event in texts if event.get("kind") == "telemetry"]
    assert all(event["device_id"] == big_device for event in received)
    assert 0 < len(received) < big_messages, f"{len(received)} events received: the buffers never filled up"
    assert texts[-1]["kind"] == "lag", texts[-1]
    assert texts[-1]["missed"] > 0, texts[-1]
    opcode, payload = frames[-1]
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1008, frames[-1]
    print(f"lag notice after {len(received)} of {big_messages} big events: {texts[-1]}")

    # The server is fine and the next client gets events again.
    watcher = Stream(fleet, ADMIN_TOKEN, {"devices": big_device})
    try:
        api.write(big_device, {"ts": BASE_MS + 10_000, "after": 1})
        assert watcher.next()["fields"] == {"after": 1}
    finally:
        watcher.close()
