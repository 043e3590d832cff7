"""Persistent sessions and retained messages survive `kill -9` of the real binary.

Persistent MQTT 3.1.1 and 5.0 subscribers go offline; publishers send thousands of QoS 1
and QoS 2 messages, each acknowledged only once it is durable; retained messages are
set, replaced and cleared; the server is killed with SIGKILL while a publisher is still
sending, restarted on the same data directory, and: every acknowledged message reaches
every subscriber (QoS 2 exactly once, each publisher's order kept), the retained
messages are exactly as left. Then a torn write at the end of the log is repaired, and a
damaged log file stops the start with an error naming it."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import BROKER_KIND, _start_fleetwire, _stop, close_all
from peer import V311, V5, Peer

MESSAGES = 2000  # per publisher, all acknowledged before the kill
QUEUE_LIMIT = 100_000
ENV = {"FLEETWIRE_MQTT__MAX_QUEUED_MESSAGES": str(QUEUE_LIMIT)}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROKER_KIND != "fleetwire", reason="durability of fleetwire's broker state"),
]


def kill(started) -> None:
    started.process.send_signal(signal.SIGKILL)
    started.process.wait(10)


def connect_subscriber(started, client_id: str, protocol: int) -> Peer:
    peer = Peer(started, client_id, protocol=protocol, clean=False)
    return peer.connect(session_expiry=3600 if protocol == V5 else None)


def receive_all(peer: Peer, expected: int, timeout: float = 60.0) -> list:
    """Messages until `expected` arrived and then none for a while."""
    received, deadline = [], time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        try:
            received.append(peer.messages.get(timeout=1.0))
        except Exception:  # queue.Empty: keep waiting until the deadline
            continue
    return received + peer.drain(quiet=1.0)


def wait_loaded(started, timeout: float = 30.0) -> str:
    """The log once the broker state is loaded (the listeners are bound before)."""
    deadline = time.monotonic() + timeout
    while "broker state loaded" not in started.log_text(1000):
        assert time.monotonic() < deadline, f"broker state not loaded\n{started.log_text()}"
        started.assert_running()
        time.sleep(0.05)
    return started.log_text(1000)


def log_files(data: Path) -> list[Path]:
    return sorted((data / "broker").glob("*.log"))


class Flood:
    """A publisher that keeps sending QoS 1 messages (not waiting for each) until killed,
    recording which were acknowledged."""

    def __init__(self, started, client_id: str, topic: str):
        self.peer = Peer(started, client_id).connect()
        self.topic = topic
        self.mids: dict[int, int] = {}  # mid -> seq
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set() and not self.peer.disconnected.is_set():
            info = self.peer.client.publish(self.topic, str(seq), qos=1)
            if info.rc != 0:
                break
            self.mids[info.mid] = seq
            seq += 1
            time.sleep(0.0005)

    def acknowledged(self) -> set[int]:
        with self.peer._condition:
            acked = set(self.peer._acked)
        return {seq for mid, seq in list(self.mids.items()) if mid in acked}


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path):
    started = _start_fleetwire(tmp_path, env=ENV)
    peers: list[Peer] = []
    try:
        subscribers = {"p311": V311, "p5": V5}
        for client_id, protocol in subscribers.items():
            peer = connect_subscriber(started, client_id, protocol)
            assert peer.subscribe(("persist/#", 2)) == [2]
            peer.disconnect()

        one = Peer(started, "publisher-q1").connect()
        two = Peer(started, "publisher-q2", protocol=V5).connect()
        peers += [one, two]
        mids = [one.publish_nowait("persist/q1", str(n), qos=1) for n in range(MESSAGES)]
        mids2 = [two.publish_nowait("persist/q2", str(n), qos=2) for n in range(MESSAGES)]
        one.wait_acked(mids, timeout=60)
        two.wait_acked(mids2, timeout=60)
        for topic, payload in [("keep/a", "first"), ("keep/a", "second"), ("keep/b", "soon gone"), ("keep/b", "")]:
            one.publish(topic, payload, qos=1, retain=True)
        one.publish("keep/c", "at most once", qos=0, retain=True)
        time.sleep(0.3)  # the QoS 0 retained message is written, not waited for

        # A third publisher is still sending when the server dies.
        flood = Flood(started, "publisher-flood", "persist/flood")
        peers.append(flood.peer)
        time.sleep(1.0)
        kill(started)
        flood.stop.set()
        flood_acked = flood.acknowledged()
        assert len(flood_acked) > 0, "the flood was acknowledged before the kill"
        close_all(peers)

        started = _start_fleetwire(tmp_path, env=ENV)
        for client_id, protocol in subscribers.items():
            peer = connect_subscriber(started, client_id, protocol)
            peers.append(peer)
            assert peer.session_present, f"{client_id}'s session survived"
            received = receive_all(peer, 2 * MESSAGES + len(flood_acked))
            by_topic: dict[str, list[int]] = {}
            for message in received:
                by_topic.setdefault(message.topic, []).append(int(message.payload))
            q1 = by_topic.get("persist/q1", [])
            q2 = by_topic.get("persist/q2", [])
            flooded = by_topic.get("persist/flood", [])
            # QoS 1: each at least once, and in order of first arrival.
            firsts = list(dict.fromkeys(q1))
            assert firsts == list(range(MESSAGES)), f"{client_id}: QoS 1 messages lost or out of order"
            # QoS 2: exactly once, in order.
            assert q2 == list(range(MESSAGES)), f"{client_id}: QoS 2 not exactly once in order"
            missing = flood_acked - set(flooded)
            assert not missing, f"{client_id}: {len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
            assert list(dict.fromkeys(flooded)) == sorted(set(flooded)), f"{client_id}: flood out of order"

        reader = Peer(started, "retained-reader").connect()
        peers.append(reader)
        reader.subscribe(("keep/#", 1))
        retained = {message.topic: message.payload.decode() for message in reader.drain(quiet=1.0)}
        assert retained == {"keep/a": "second", "keep/c": "at most once"}
    finally:
        close_all(peers)
        if started.process.poll() is None:
            _stop(started)


def records_end(data: bytes) -> int:
    """Where the records of a log file end: `length:u32le crc:u32le payload` each, then
    zeros up to the end of the file (none with a length and checksum of zero)."""
    offset = 0
    while offset + 8 <= len(data) and data[offset : offset + 8] != bytes(8):
        offset += 8 + int.from_bytes(data[offset : offset + 4], "little")
    assert offset <= len(data), "the records run past the end of the file"
    return offset


def test_a_torn_write_is_cut_and_a_damaged_log_is_named(tmp_path: Path):
    started = _start_fleetwire(tmp_path, env=ENV)
    peers: list[Peer] = []
    try:
        subscriber = connect_subscriber(started, "torn", V311)
        subscriber.subscribe(("torn/#", 1))
        subscriber.disconnect()
        publisher = Peer(started, "torn-publisher").connect()
        peers.append(publisher)
        for n in range(20):
            publisher.publish("torn/x", str(n), qos=1)
        close_all(peers)
        kill(started)

        # A crash in the middle of a write: a record header announcing more than follows,
        # where the records end (before the zeros the log writes ahead of them).
        newest = log_files(tmp_path / "data")[-1]
        data = newest.read_bytes()
        end = records_end(data)
        assert data[end:].count(0) == len(data) - end, "only zeros after the records"
        with newest.open("r+b") as log:
            log.seek(end)
            log.write((64).to_bytes(4, "little") + b"\x01\x02\x03\x04partial")
        started = _start_fleetwire(tmp_path, env=ENV)
        text = wait_loaded(started)
        assert "torn record" in text, text
        subscriber = connect_subscriber(started, "torn", V311)
        peers.append(subscriber)
        received = [int(message.payload) for message in receive_all(subscriber, 20)]
        assert received == list(range(20))
        close_all(peers)
        _stop(started)

        # Damage with good records after it is corruption: the start stops and says where.
        damaged = log_files(tmp_path / "data")[0]
        data = bytearray(damaged.read_bytes())
        assert len(data) > 64
        data[12] ^= 0xFF
        damaged.write_bytes(bytes(data))
        with pytest.raises(RuntimeError) as refused:
            _start_fleetwire(tmp_path, env=ENV)
        text = str(refused.value)
        assert "cannot load the broker state" in text, text
        assert str(damaged) in text and "corrupt" in text, text
    finally:
        close_all(peers)
        if started.process.poll() is None:
            _stop(started)
