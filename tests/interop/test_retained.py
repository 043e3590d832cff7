"""Retained messages: set, replace, clear, and the retain flag on deliveries."""


def test_new_subscriber_gets_retained_message_with_retain_flag(peers, uid, protocol):
    topic = f"{uid}/status"
    peers("publisher", protocol=protocol).connect().publish(topic, b"online", qos=1, retain=True)
    subscriber = peers("subscriber", protocol=protocol).connect()
    subscriber.subscribe((topic, 1))
    message = subscriber.expect_message(topic)
    assert (message.payload, message.retain, message.qos) == (b"online", True, 1)


def test_retained_message_is_replaced_by_a_newer_one(peers, uid, protocol):
    topic, marker = f"{uid}/status", f"{uid}/marker"
    publisher = peers("publisher", protocol=protocol).connect()
    publisher.publish(topic, b"old", qos=1, retain=True)
    publisher.publish(topic, b"new", qos=1, retain=True)
    subscriber = peers("subscriber", protocol=protocol).connect()
    subscriber.subscribe((topic, 1), (marker, 1))
    publisher.publish(marker, b"end", qos=1)
    retained = [(m.payload, m.retain) for m in subscriber.messages_until(marker)]
    assert retained == [(b"new", True)]


def test_empty_retained_payload_clears_the_retained_message(peers, uid, protocol):
    topic, marker = f"{uid}/status", f"{uid}/marker"
    publisher = peers("publisher", protocol=protocol).connect()
    publisher.publish(topic, b"online", qos=1, retain=True)
    publisher.publish(topic, b"", qos=1, retain=True)
    subscriber = peers("subscriber", protocol=protocol).connect()
    subscriber.subscribe((topic, 1), (marker, 1))
    publisher.publish(marker, b"end", qos=1)
    # A retained message would be sent right after the SUBACK, before the marker.
    assert subscriber.messages_until(marker) == []


def test_live_delivery_to_existing_subscriber_has_retain_flag_cleared(peers, uid, protocol):
    topic = f"{uid}/status"
    subscriber = peers("subscriber", protocol=protocol).connect()
    subscriber.subscribe((topic, 1))
    peers("publisher", protocol=protocol).connect().publish(topic, b"live", qos=1, retain=True)
    message = subscriber.expect_message(topic)
    assert (message.payload, message.retain) == (b"live", False)


def test_retained_message_matches_wildcard_subscriptions(peers, uid, protocol):
    publisher = peers("publisher", protocol=protocol).connect()
    publisher.publish(f"{uid}/room/1/temp", b"21", qos=1, retain=True)
    publisher.publish(f"{uid}/room/2/temp", b"22", qos=1, retain=True)
    publisher.publish(f"{uid}/room/2/hum", b"40", qos=1, retain=True)
    subscriber = peers("subscriber", protocol=protocol).connect()
    subscriber.subscribe((f"{uid}/room/+/temp", 0), (f"{uid}/marker", 0))
    publisher.publish(f"{uid}/marker", b"end", qos=1)
    received = sorted((m.topic, m.payload, m.retain) for m in subscriber.messages_until(f"{uid}/marker"))
    assert received == [(f"{uid}/room/1/temp", b"21", True), (f"{uid}/room/2/temp", b"22", True)]
