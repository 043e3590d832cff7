"""$SYS/broker/... statistics topics."""

import re
import time

REQUIRED = {
    "$SYS/broker/clients/connected",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
    "$SYS/broker/uptime",
}
NUMBER = re.compile(r"^\d+$")
UPTIME = re.compile(r"^\d+( seconds)?$")  # Mosquitto says "N seconds"


def test_sys_broker_topics_publish_numeric_statistics(peers, protocol):
    client = peers("stats", protocol=protocol).connect()
    client.subscribe(("$SYS/broker/#", 0))
    seen: dict[str, str] = {}
    connected = "$SYS/broker/clients/connected"
    deadline = time.monotonic() + 5
    # A retained value may predate this client, so wait for one that counts it.
    while REQUIRED - set(seen) or not NUMBER.match(seen[connected]) or int(seen[connected]) < 1:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"missing $SYS topics or values after 5 s: {sorted(REQUIRED - set(seen))}; got {seen}"
        message = client.expect_message(timeout=remaining)
        seen[message.topic] = message.payload.decode(errors="replace")
    for topic in REQUIRED:
        pattern = UPTIME if topic.endswith("/uptime") else NUMBER
        assert pattern.match(seen[topic]), f"{topic} has non-numeric payload {seen[topic]!r}"


def test_sys_message_counters_increase_with_traffic(peers, uid):
    client = peers("stats").connect()
    client.subscribe(("$SYS/broker/messages/received", 0))
    before = int(client.expect_message(timeout=5).payload)
    topic = f"{uid}/traffic"
    client.subscribe((topic, 0))
    for i in range(20):
        client.publish(topic, f"{i}", qos=1)
    deadline = time.monotonic() + 5
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "$SYS/broker/messages/received did not grow by 20 within 5 s"
        message = client.expect_message(timeout=remaining)
        if message.topic == "$SYS/broker/messages/received" and int(message.payload) >= before + 20:
            break
