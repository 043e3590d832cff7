"""MQTT 5.0 negotiation and flow: topic aliases both ways, server keep alive, receive maximum
(both ways), the client's maximum packet size, will delay, request / response, subscription
identifiers and options (no local, retain as published, retain handling) and AUTH.

The broker of this module announces small limits so they are quick to reach: Fleetwire with
`mqtt.max_keep_alive = 60`, `mqtt.receive_maximum = 10` and `mqtt.topic_alias_maximum = 4`;
Mosquitto with the matching `max_keepalive`, `max_inflight_messages` and `max_topic_alias`.
"""

from __future__ import annotations

import time

import pytest

import rawmqtt
from conftest import BROKER_KIND, _start_fleetwire, _start_mosquitto, _stop
from peer import V5
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

# MQTT 5.0 property identifiers used here.
PAYLOAD_FORMAT_INDICATOR = 0x01
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27

# Reason codes.
PROTOCOL_ERROR = 0x82
BAD_AUTHENTICATION_METHOD = 0x8C
RECEIVE_MAXIMUM_EXCEEDED = 0x93
TOPIC_ALIAS_INVALID = 0x94

MAX_KEEP_ALIVE = 60
SERVER_RECEIVE_MAXIMUM = 10
SERVER_TOPIC_ALIAS_MAXIMUM = 4

@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """This module's broker, with the small limits of the module's docstring."""
    tmp = tmp_path_factory.mktemp("mqtt5")
    if BROKER_KIND == "fleetwire":
        started = _start_fleetwire(
            tmp,
            env={
                "FLEETWIRE_MQTT__MAX_KEEP_ALIVE": str(MAX_KEEP_ALIVE),
                "FLEETWIRE_MQTT__RECEIVE_MAXIMUM": str(SERVER_RECEIVE_MAXIMUM),
                "FLEETWIRE_MQTT__TOPIC_ALIAS_MAXIMUM": str(SERVER_TOPIC_ALIAS_MAXIMUM),
            },
        )
    else:
        started = _start_mosquitto(
            tmp,
            extra=(
                f"max_keepalive {MAX_KEEP_ALIVE}\n"
                f"max_inflight_messages {SERVER_RECEIVE_MAXIMUM}\n"
                f"max_topic_alias {SERVER_TOPIC_ALIAS_MAXIMUM}\n"
            ),
        )
    yield started
    _stop(started)


def connect_v5(raw, client_id: str, **kwargs) -> tuple[rawmqtt.RawClient, dict]:
    """A raw 5.0 client, connected; with its CONNACK's properties."""
    client = raw()
    connack = client.connect(client_id, version=rawmqtt.V5, **kwargs)
    assert connack.return_code == 0, f"CONNACK {connack.return_code:#x}"
    return client, connack.connack_properties()


def subscribed_v5(raw, client_id: str, topic: str, qos: int, **kwargs) -> rawmqtt.RawClient:
    """A raw 5.0 client, connected (with `kwargs` in its CONNECT) and subscribed to `topic`."""
    client, _ = connect_v5(raw, client_id, **kwargs)
    client.send(rawmqtt.subscribe(1, [(topic, qos)], version=rawmqtt.V5))
    client.expect(rawmqtt.SUBACK)
    return client


def disconnect_reason(client: rawmqtt.RawClient) -> int | None:
    """Reads until the broker closes; the reason code of its DISCONNECT, if it sent one."""
    for received in client.read_until_closed():
        if received.kind == rawmqtt.DISCONNECT:
            return received.return_code
    return None


def next_publish(client: rawmqtt.RawClient, timeout: float = 5.0) -> rawmqtt.Packet:
    """The next PUBLISH, skipping acknowledgements."""
    deadline = time.monotonic() + timeout
    while True:
        received = client.read_packet(max(0.0, deadline - time.monotonic()))
        if received.kind == rawmqtt.PUBLISH:
            return received
        assert received.kind in (rawmqtt.PUBACK, rawmqtt.PUBREC, rawmqtt.PUBCOMP), received


def test_connack_announces_the_topic_alias_maximum_and_the_receive_maximum(raw, uid):
    _, properties = connect_v5(raw, f"{uid}-announce")
    assert properties.get(TOPIC_ALIAS_MAXIMUM) == SERVER_TOPIC_ALIAS_MAXIMUM
    assert properties.get(RECEIVE_MAXIMUM) == SERVER_RECEIVE_MAXIMUM


def test_a_topic_alias_set_by_the_client_stands_for_its_topic_on_that_connection(peers, raw, uid):
    topic = f"{uid}/aliased"
    watcher = peers("watcher").connect()
    watcher.subscribe((topic, 1))
    client, _ = connect_v5(raw, f"{uid}-aliasing", session_expiry=60)
    client.send(rawmqtt.publish(topic, b"first", qos=1, packet_id=1, version=rawmqtt.V5, props={TOPIC_ALIAS: 2}))
    client.send(rawmqtt.publish("", b"second", qos=1, packet_id=2, version=rawmqtt.V5, props={TOPIC_ALIAS: 2}))
    assert [client.expect(rawmqtt.PUBACK).packet_id for _ in range(2)] == [1, 2]
    for payload in (b"first", b"second"):
        message = watcher.expect_message(topic)
        assert message.payload == payload
    client.close()

    # Aliases belong to the network connection: the resumed session has none.
    again, _ = connect_v5(raw, f"{uid}-aliasing", clean=False, session_expiry=60)
    again.send(rawmqtt.publish("", b"third", version=rawmqtt.V5, props={TOPIC_ALIAS: 2}))
    assert disconnect_reason(again) == PROTOCOL_ERROR
    assert watcher.drain() == []


def test_a_topic_alias_above_the_maximum_is_refused_with_0x94(broker, raw, uid):
    client, _ = connect_v5(raw, f"{uid}-too-high")
    alias = SERVER_TOPIC_ALIAS_MAXIMUM + 1
    client.send(rawmqtt.publish(f"{uid}/t", b"x", version=rawmqtt.V5, props={TOPIC_ALIAS: alias}))
    reason = disconnect_reason(client)
    if broker.is_fleetwire:  # Mosquitto closes without saying why
        assert reason == TOPIC_ALIAS_INVALID


def test_the_broker_sends_topic_aliases_to_a_client_that_accepts_them(broker, peers, raw, uid):
    topic = f"{uid}/out"
    subscriber = subscribed_v5(raw, f"{uid}-alias-reader", topic, 2, props={TOPIC_ALIAS_MAXIMUM: 1})
    plain = subscribed_v5(raw, f"{uid}-plain-reader", topic, 0)
    publisher = peers("publisher").connect()
    for qos in (0, 1, 2):
        publisher.publish(topic, f"qos {qos}", qos=qos)

    received = []
    for _ in range(3):
        message = next_publish(subscriber)
        name, payload = message.publish_fields(rawmqtt.V5)
        received.append((name, message.publish_properties().get(TOPIC_ALIAS), payload))
        if message.qos == 1:
            subscriber.send(rawmqtt.ack(rawmqtt.PUBACK, message.packet_id))
        elif message.qos == 2:
            subscriber.send(rawmqtt.ack(rawmqtt.PUBREC, message.packet_id))
            subscriber.expect(rawmqtt.PUBREL)
            subscriber.send(rawmqtt.ack(rawmqtt.PUBCOMP, message.packet_id))
    if broker.is_fleetwire:  # Mosquitto 2.0 never assigns aliases, which the client must accept
        assert received == [(topic, 1, b"qos 0"), ("", 1, b"qos 1"), ("", 1, b"qos 2")]
    else:
        assert [payload for _, _, payload in received] == [b"qos 0", b"qos 1", b"qos 2"]

    # A client that did not ask for aliases gets the topic every time.
    for _ in range(3):
        message = next_publish(plain)
        assert message.publish_fields(rawmqtt.V5)[0] == topic
        assert TOPIC_ALIAS not in message.publish_properties()


def test_a_keep_alive_above_the_maximum_is_lowered_with_server_keep_alive(raw, uid):
    _, longer = connect_v5(raw, f"{uid}-long", keepalive=120)
    assert longer.get(SERVER_KEEP_ALIVE) == MAX_KEEP_ALIVE
    _, within = connect_v5(raw, f"{uid}-short", keepalive=30)
    assert SERVER_KEEP_ALIVE not in within


def test_no_keep_alive_is_given_the_maximum_and_a_311_client_keeps_its_own(broker, raw, uid):
    _, none = connect_v5(raw, f"{uid}-none", keepalive=0)
    if broker.is_fleetwire:  # Mosquitto 2.0.11 lets a 5.0 client go without keep-alive
        assert none.get(SERVER_KEEP_ALIVE) == MAX_KEEP_ALIVE
    old = raw()
    assert old.connect(f"{uid}-v311", keepalive=120).return_code == 0


def test_more_unreleased_qos2_messages_than_the_receive_maximum_are_refused_with_0x93(broker, raw, uid):
    client, _ = connect_v5(raw, f"{uid}-flood")
    # Never released: each stays in flight. One more than announced is an error.
    burst = b"".join(
        rawmqtt.publish(f"{uid}/t", b"x", qos=2, packet_id=packet_id, version=rawmqtt.V5)
        for packet_id in range(1, SERVER_RECEIVE_MAXIMUM + 2)
    )
    client.send(burst)
    if not broker.is_fleetwire:  # Mosquitto 2.0.11 announces its receive maximum, takes more
        return
    received = client.read_until_closed()
    assert [packet.kind for packet in received[:-1]] == [rawmqtt.PUBREC] * SERVER_RECEIVE_MAXIMUM
    assert received[-1].kind == rawmqtt.DISCONNECT
    assert received[-1].return_code == RECEIVE_MAXIMUM_EXCEEDED


def test_released_qos2_messages_make_room_within_the_receive_maximum(raw, uid):
    client, _ = connect_v5(raw, f"{uid}-steady")
    for packet_id in range(1, 3 * SERVER_RECEIVE_MAXIMUM):
        client.send(rawmqtt.publish(f"{uid}/t", b"x", qos=2, packet_id=packet_id, version=rawmqtt.V5))
        assert client.expect(rawmqtt.PUBREC).packet_id == packet_id
        client.send(rawmqtt.ack(rawmqtt.PUBREL, packet_id))
        assert client.expect(rawmqtt.PUBCOMP).packet_id == packet_id


def test_the_clients_receive_maximum_limits_what_it_is_sent_unacknowledged(peers, raw, uid):
    topic = f"{uid}/window"
    subscriber = subscribed_v5(raw, f"{uid}-window", topic, 1, props={RECEIVE_MAXIMUM: 2})
    publisher = peers("publisher").connect()
    for index in range(3):
        publisher.publish(topic, f"m{index}", qos=1)
    first, second = next_publish(subscriber), next_publish(subscriber)
    with pytest.raises(TimeoutError):
        subscriber.read_packet(0.5)
    subscriber.send(rawmqtt.ack(rawmqtt.PUBACK, first.packet_id))
    third = next_publish(subscriber)
    assert [packet.publish_fields(rawmqtt.V5)[1] for packet in (first, second, third)] == [b"m0", b"m1", b"m2"]


def test_a_message_larger_than_the_clients_maximum_packet_size_is_not_sent(peers, raw, uid):
    topic = f"{uid}/sized"
    subscriber = subscribed_v5(raw, f"{uid}-small", topic, 1, props={MAXIMUM_PACKET_SIZE: 128})
    publisher = peers("publisher").connect()
    publisher.publish(topic, b"x" * 200, qos=1)
    publisher.publish(topic, b"small", qos=1)
    message = next_publish(subscriber)
    assert message.publish_fields(rawmqtt.V5)[1] == b"small"


def with_will(raw, uid: str, name: str, topic: str, *, delay: int, expiry: int) -> rawmqtt.RawClient:
    client, _ = connect_v5(
        raw,
        f"{uid}-{name}",
        will=rawmqtt.Will(topic, b"gone", qos=1),
        will_props={WILL_DELAY_INTERVAL: delay},
        session_expiry=expiry,
    )
    return client


def seconds_until_message(watcher, topic: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    assert watcher.expect_message(topic, timeout=timeout).payload == b"gone"
    return time.monotonic() - started


def test_a_delayed_will_is_sent_once_its_delay_has_passed(peers, raw, uid):
    topic = f"{uid}/will"
    watcher = peers("watcher").connect()
    watcher.subscribe((topic, 1))
    with_will(raw, uid, "delayed", topic, delay=2, expiry=30).close()
    waited = seconds_until_message(watcher, topic)
    assert 1.5 <= waited < 4, f"will after {waited:.2f} s, expected 2 s"


def test_a_delayed_will_is_sent_when_the_session_expires_first(peers, raw, uid):
    topic = f"{uid}/will"
    watcher = peers("watcher").connect()
    watcher.subscribe((topic, 1))
    with_will(raw, uid, "expiring", topic, delay=30, expiry=1).close()
    waited = seconds_until_message(watcher, topic)
    assert waited < 3, f"will after {waited:.2f} s, expected the session's 1 s"


def test_a_delayed_will_is_not_sent_when_the_session_is_resumed_in_time(peers, raw, uid):
    topic, marker = f"{uid}/will", f"{uid}/marker"
    watcher = peers("watcher").connect()
    watcher.subscribe((topic, 1), (marker, 1))
    with_will(raw, uid, "returning", topic, delay=2, expiry=30).close()
    connect_v5(raw, f"{uid}-returning", clean=False, session_expiry=30)
    time.sleep(3)
    peers("publisher").connect().publish(marker, b"end", qos=1)
    assert watcher.messages_until(marker) == [], "will sent although the session was resumed"


def test_request_and_response_properties_pass_through(peers, uid):
    service, reply_to = f"{uid}/service", f"{uid}/replies"
    requester = peers("requester", protocol=V5).connect()
    responder = peers("responder", protocol=V5).connect()
    responder.subscribe((service, 1))
    requester.subscribe((reply_to, 1))
    request = Properties(PacketTypes.PUBLISH)
    request.ResponseTopic = reply_to
    request.CorrelationData = b"\x00req-42"
    request.ContentType = "application/json"
    request.PayloadFormatIndicator = 1
    request.UserProperty = [("trace", "abc"), ("trace", "def")]
    requester.publish(service, b'{"q": 1}', qos=1, properties=request)

    received = responder.expect_message(service)
    got = received.properties
    assert (got.ResponseTopic, got.CorrelationData) == (reply_to, b"\x00req-42")
    assert (got.ContentType, got.PayloadFormatIndicator) == ("application/json", 1)
    assert got.UserProperty == [("trace", "abc"), ("trace", "def")]

    response = Properties(PacketTypes.PUBLISH)
    response.CorrelationData = got.CorrelationData
    responder.publish(got.ResponseTopic, b'{"a": 2}', qos=1, properties=response)
    answer = requester.expect_message(reply_to)
    assert (answer.payload, answer.properties.CorrelationData) == (b'{"a": 2}', b"\x00req-42")


def test_response_information_is_given_to_a_client_that_asks(broker, raw, uid):
    _, asked = connect_v5(raw, f"{uid}-asks", props={REQUEST_RESPONSE_INFORMATION: 1})
    if broker.is_fleetwire:  # Mosquitto 2.0 gives none, which the specification allows
        assert asked.get(RESPONSE_INFORMATION) == f"$response/{uid}-asks/"
    _, silent = connect_v5(raw, f"{uid}-silent")
    assert RESPONSE_INFORMATION not in silent


def test_every_matching_subscription_identifier_is_delivered(peers, uid):
    client = peers("subscriber", protocol=V5).connect()
    for filter_, identifier in ((f"{uid}/+/x", 11), (f"{uid}/#", 22)):
        properties = Properties(PacketTypes.SUBSCRIBE)
        properties.SubscriptionIdentifier = identifier
        client.subscribe((filter_, 1), properties=properties)
    peers("publisher").connect().publish(f"{uid}/a/x", b"m", qos=1)
    # One copy with both identifiers (Fleetwire), or a copy per subscription (Mosquitto).
    copies = [client.expect_message(f"{uid}/a/x"), *client.drain()]
    identifiers = sorted(identifier for copy in copies for identifier in copy.properties.SubscriptionIdentifier)
    assert identifiers == [11, 22]


def test_connect_with_an_authentication_method_is_refused_with_0x8c(raw, uid):
    client = raw()
    connack = client.connect(f"{uid}-scram", version=rawmqtt.V5, props={AUTHENTICATION_METHOD: "SCRAM-SHA-1"})
    assert connack.return_code == BAD_AUTHENTICATION_METHOD


def test_auth_after_a_connect_without_authentication_method_is_a_protocol_error(broker, raw, uid):
    client, _ = connect_v5(raw, f"{uid}-auth-later")
    client.send(rawmqtt.auth(0x18))
    reason = disconnect_reason(client)
    if broker.is_fleetwire:  # Mosquitto closes without saying why
        assert reason == PROTOCOL_ERROR


def test_no_local_keeps_a_clients_own_messages_from_it(peers, uid):
    topic = f"{uid}/chat"
    talker = peers("talker", protocol=V5).connect()
    listener = peers("listener", protocol=V5).connect()
    talker.subscribe((topic, SubscribeOptions(qos=1, noLocal=True)))
    listener.subscribe((topic, SubscribeOptions(qos=1, noLocal=True)))
    talker.publish(topic, b"from talker", qos=1)
    assert listener.expect_message(topic).payload == b"from talker"
    # The listener's message reaches the talker; the talker's own never did.
    listener.publish(topic, b"from listener", qos=1)
    assert talker.expect_message(topic).payload == b"from listener"
    assert talker.drain() == []


def test_retain_as_published_keeps_the_retain_flag_of_live_messages(peers, uid):
    topic = f"{uid}/state"
    keeps = peers("keeps", protocol=V5).connect()
    clears = peers("clears", protocol=V5).connect()
    keeps.subscribe((topic, SubscribeOptions(qos=1, retainAsPublished=True)))
    clears.subscribe((topic, SubscribeOptions(qos=1)))
    publisher = peers("publisher").connect()
    publisher.publish(topic, b"plain", qos=1)
    publisher.publish(topic, b"retained", qos=1, retain=True)
    assert [(m.payload, m.retain) for m in (keeps.expect_message(topic), keeps.expect_message(topic))] == [
        (b"plain", 0),
        (b"retained", 1),
    ]
    assert [(m.payload, m.retain) for m in (clears.expect_message(topic), clears.expect_message(topic))] == [
        (b"plain", 0),
        (b"retained", 0),
    ]
    publisher.publish(topic, b"", qos=1, retain=True)


@pytest.mark.parametrize(
    ("handling", "first", "again"),
    [(0, 2, 2), (1, 2, 0), (2, 0, 0)],
    ids=["send-on-every-subscribe", "send-on-new-subscription", "never-send"],
)
def test_retain_handling_decides_when_retained_messages_are_sent(peers, uid, handling, first, again):
    publisher = peers("publisher").connect()
    for index in range(2):
        publisher.publish(f"{uid}/r/{index}", f"retained {index}".encode(), qos=1, retain=True)
    subscriber = peers("subscriber", protocol=V5).connect()
    options = SubscribeOptions(qos=1, retainHandling=handling)
    marker = f"{uid}/marker"
    subscriber.subscribe((marker, 1))
    for expected in (first, again):
        subscriber.subscribe((f"{uid}/r/+", options))
        publisher.publish(marker, b"", qos=1)
        received = subscriber.messages_until(marker)
        assert len(received) == expected, [m.topic for m in received]
        assert all(message.retain for message in received)
    for index in range(2):
        publisher.publish(f"{uid}/r/{index}", b"", qos=1, retain=True)
