"""A subscriber that never reads must not stall other subscribers or grow the broker without bound."""

import threading
import time

import pytest

import rawmqtt

MESSAGES = 60_000
PAYLOAD = b"x" * 1024
BATCH = 100
# The publisher is paced to a rate a healthy client (here paho, in this very Python
# process) comfortably absorbs: the point is that the stuck subscriber must not slow the
# healthy one, not how fast paho can read. An unpaced flood would also starve paho's
# network thread of the GIL, and a broker with bounded queues (Fleetwire's are 100
# messages in this module) then rightly drops what the healthy client is not reading.
RATE = 10_000  # messages per second
MAX_LAG = 10_000  # how far the healthy subscriber may fall behind the publisher
MAX_RSS_GROWTH_KIB = 150 * 1024


@pytest.mark.slow
def test_slow_consumer_does_not_stall_others_or_exhaust_memory(broker, peers, raw, uid):
    topic = f"{uid}/flood"

    stuck = raw()
    assert stuck.connect(f"{uid}-stuck").return_code == 0
    stuck.send(rawmqtt.subscribe(1, [(topic, 0)]))
    stuck.expect(rawmqtt.SUBACK)
    # From here on `stuck` never reads its socket.

    healthy = peers("healthy")
    lock, counter = threading.Lock(), [0]

    def count(client, userdata, message):
        with lock:
            counter[0] += 1

    healthy.client.on_message = count
    healthy.connect()
    healthy.subscribe((topic, 0))

    def received() -> int:
        with lock:
            return counter[0]

    publisher = raw(timeout=10)
    assert publisher.connect(f"{uid}-flooder").return_code == 0
    batch = rawmqtt.publish(topic, PAYLOAD) * BATCH
    rss_before = peak_rss = broker.rss_kib()
    started = time.monotonic()
    for sent in range(BATCH, MESSAGES + 1, BATCH):
        pause = started + sent / RATE - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            publisher.send(batch)
        except TimeoutError:
            pytest.fail(f"publisher blocked after {sent - BATCH} messages: the broker stopped reading it")
        deadline = time.monotonic() + 10
        while received() < sent - MAX_LAG:
            assert time.monotonic() < deadline, (
                f"healthy subscriber stalled at {received()} of {sent} messages "
                f"(healthy client {'disconnected' if healthy.disconnected.is_set() else 'still connected'}): "
                "the slow consumer blocks delivery to others"
            )
            time.sleep(0.01)
        if sent % 10_000 == 0:
            peak_rss = max(peak_rss, broker.rss_kib())

    deadline = time.monotonic() + 20
    while received() < MESSAGES and time.monotonic() < deadline:
        last = received()
        time.sleep(0.5)
        if received() == last:
            break  # no progress: whatever is missing was dropped
    peak_rss = max(peak_rss, broker.rss_kib())
    got = received()
    growth = peak_rss - rss_before
    print(
        f"{broker.kind}: healthy subscriber got {got}/{MESSAGES} in {time.monotonic() - started:.1f} s; "
        f"RSS {rss_before} KiB -> peak {peak_rss} KiB (+{growth / 1024:.0f} MiB)"
    )
    assert got >= MESSAGES * 0.95, f"healthy subscriber got only {got} of {MESSAGES} messages"
    if broker.is_fleetwire:
        assert growth < MAX_RSS_GROWTH_KIB, f"broker RSS grew by {growth / 1024:.0f} MiB with one stuck subscriber"

    stuck.close()
    broker.assert_running()
    probe = peers("probe").connect()
    probe.subscribe((f"{uid}/after", 1))
    probe.publish(f"{uid}/after", b"alive", qos=1)
    assert probe.expect_message(f"{uid}/after").payload == b"alive"
