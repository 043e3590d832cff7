"""Persistent sessions: subscriptions and QoS 1/2 messages kept across reconnects, redelivery
with DUP, clean sessions, and the offline queue limit."""

import time

import pytest

import rawmqtt
from peer import V5

SESSION_EXPIRY = 300


def persistent(peers, protocol, *, fresh: bool):
    """A client whose session outlives its connection: 3.1.1 clean_session=0, or 5.0 with
    a session expiry interval (clean_start only when `fresh`)."""
    if protocol == V5:
        return peers("persistent", protocol=V5, clean=fresh).connect(session_expiry=SESSION_EXPIRY)
    return peers("persistent", protocol=protocol, clean=False).connect()


def test_subscriptions_and_offline_qos1_qos2_messages_survive_reconnect(peers, uid, protocol):
    topic = f"{uid}/inbox"
    first = persistent(peers, protocol, fresh=True)
    assert first.session_present is False
    first.subscribe((topic, 2))
    first.disconnect()

    publisher = peers("publisher", protocol=protocol).connect()
    for qos in (0, 1, 2):
        publisher.publish(topic, f"offline qos{qos}", qos=qos)

    second = persistent(peers, protocol, fresh=False)
    assert second.session_present is True
    queued = {}
    while {"offline qos1", "offline qos2"} - set(queued):
        message = second.expect_message(topic)
        queued[message.payload.decode()] = message.qos
    assert queued["offline qos1"] == 1 and queued["offline qos2"] == 2
    # The subscription itself survived: live messages arrive without subscribing again.
    publisher.publish(topic, b"live", qos=1)
    while (message := second.expect_message(topic)).payload != b"live":
        assert message.payload == b"offline qos0", f"unexpected {message.payload!r}"


@pytest.mark.parametrize("version", [rawmqtt.V311, rawmqtt.V5], ids=["v311", "v5"])
def test_unacknowledged_qos1_message_is_redelivered_with_dup_after_reconnect(peers, raw, uid, version):
    topic, client_id = f"{uid}/inbox", f"{uid}-unacking"
    options = dict(version=version, clean=False, session_expiry=SESSION_EXPIRY)
    subscriber = raw()
    assert subscriber.connect(client_id, **options).session_present is False
    subscriber.send(rawmqtt.subscribe(1, [(topic, 1)], version=version))
    subscriber.expect(rawmqtt.SUBACK)
    peers("publisher").connect().publish(topic, b"ack me", qos=1)
    first = subscriber.expect(rawmqtt.PUBLISH)
    assert (first.qos, first.dup) == (1, False)
    assert first.publish_fields(version) == (topic, b"ack me")
    subscriber.close()  # no PUBACK, no DISCONNECT

    again = raw()
    connack = again.connect(client_id, **options)
    assert (connack.return_code, connack.session_present) == (0, True)
    redelivered = again.expect(rawmqtt.PUBLISH)
    assert redelivered.dup is True, "redelivered PUBLISH must have DUP=1"
    assert redelivered.qos == 1
    assert redelivered.publish_fields(version) == (topic, b"ack me")
    again.send(rawmqtt.ack(rawmqtt.PUBACK, redelivered.packet_id))
    again.send(rawmqtt.pingreq())
    assert again.expect(rawmqtt.PINGRESP)  # acknowledged: not sent a third time


def test_clean_session_discards_the_previous_session(peers, uid, protocol):
    topic, marker = f"{uid}/inbox", f"{uid}/marker"
    first = persistent(peers, protocol, fresh=True)
    first.subscribe((topic, 1))
    first.disconnect()
    publisher = peers("publisher", protocol=protocol).connect()
    publisher.publish(topic, b"queued", qos=1)

    clean = peers("persistent", protocol=protocol, clean=True).connect()
    assert clean.session_present is False
    clean.subscribe((marker, 1))
    publisher.publish(marker, b"end", qos=1)
    publisher.publish(topic, b"after", qos=1)  # the old subscription is gone too
    assert clean.messages_until(marker) == [], "messages from the discarded session were delivered"
    assert clean.drain(0.3) == []


def test_v5_session_without_expiry_ends_with_the_connection(peers, uid):
    topic = f"{uid}/inbox"
    first = peers("short-lived", protocol=V5, clean=True).connect()  # session expiry 0
    first.subscribe((topic, 1))
    first.disconnect()
    peers("publisher").connect().publish(topic, b"queued", qos=1)
    second = peers("short-lived", protocol=V5, clean=False).connect()
    assert second.session_present is False


def test_offline_queue_is_limited_and_broker_keeps_working(broker, peers, uid, protocol):
    topic = f"{uid}/flood"
    first = persistent(peers, protocol, fresh=True)
    first.subscribe((topic, 1))
    first.disconnect()

    # Fleetwire's contract names the drop counter $SYS/broker/messages/dropped; Mosquitto's is
    # $SYS/broker/publish/messages/dropped. Both count from start-up, so take a baseline first.
    dropped_topic = "$SYS/broker/messages/dropped" if broker.is_fleetwire else "$SYS/broker/publish/messages/dropped"
    system = peers("system").connect()
    system.subscribe((dropped_topic, 0))
    try:
        baseline = int(system.expect_message(dropped_topic, timeout=2.5).payload)
    except AssertionError:
        baseline = 0  # not published yet: nothing dropped so far

    publisher = peers("publisher", protocol=protocol).connect()
    sent = 3 * broker.max_queued_messages
    publisher.wait_acked([publisher.publish_nowait(topic, f"m{i}", qos=1) for i in range(sent)], timeout=30)

    expected = baseline + sent - broker.max_queued_messages
    deadline, dropped = time.monotonic() + 5, baseline
    while dropped < expected:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{dropped_topic} reached only {dropped}, expected >= {expected}"
        dropped = int(system.expect_message(dropped_topic, timeout=remaining).payload)

    second = persistent(peers, protocol, fresh=False)
    assert second.session_present is True
    received = second.drain(1.0)
    print(f"{len(received)} of {sent} queued messages delivered on reconnect")
    assert 1 <= len(received) <= broker.max_queued_messages, f"received {len(received)} queued messages"
    broker.assert_running()
    publisher.publish(topic, b"still works", qos=1)
    assert second.expect_message(topic).payload == b"still works"
