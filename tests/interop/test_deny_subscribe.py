"""Topics no client may subscribe to (`mqtt.deny_subscribe`): a subscription within a
denied filter is refused with 0x80 (3.1.1 and 5.0), a broader one is granted but never
delivers a message (live or retained) on a denied topic. The Paho interoperability suite's
`test_subscribe_failure` relies on such a topic (`test/nosubscribe`).

Fleetwire only: Mosquitto expresses this with an ACL file of its own.
"""

from __future__ import annotations

import pytest

from conftest import BROKER_KIND, _start_fleetwire, _stop

DENIED = ["+/hidden/#", "test/nosubscribe"]
FAILURE = 0x80


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    if BROKER_KIND != "fleetwire":
        pytest.skip("mqtt.deny_subscribe is Fleetwire's")
    tmp = tmp_path_factory.mktemp("deny")
    listed = ", ".join(f'"{entry}"' for entry in DENIED)
    started = _start_fleetwire(tmp, env={"FLEETWIRE_MQTT__DENY_SUBSCRIBE": f"[{listed}]"})
    yield started
    _stop(started)


def test_a_subscription_within_a_denied_filter_is_refused_with_0x80(peers, protocol, uid):
    client = peers("subscriber", protocol=protocol).connect()
    codes = client.subscribe(("test/nosubscribe", 1), (f"{uid}/hidden/a/b", 1), (f"{uid}/open", 1))
    assert codes == [FAILURE, FAILURE, 1]


def test_a_broader_subscription_never_delivers_a_denied_topic(peers, protocol, uid):
    publisher = peers("publisher").connect()
    publisher.publish(f"{uid}/hidden/retained", b"secret", qos=1, retain=True)
    publisher.publish(f"{uid}/open/retained", b"public", qos=1, retain=True)
    subscriber = peers("subscriber", protocol=protocol).connect()
    assert subscriber.subscribe((f"{uid}/#", 1)) == [1]
    assert subscriber.expect_message(f"{uid}/open/retained").payload == b"public"
    publisher.publish(f"{uid}/hidden/x", b"secret", qos=1)
    publisher.publish(f"{uid}/open/x", b"public", qos=1)
    publisher.publish(f"{uid}/end", b"", qos=1)
    received = [message.topic for message in subscriber.messages_until(f"{uid}/end")]
    assert received == [f"{uid}/open/x"]
    for topic in (f"{uid}/hidden/retained", f"{uid}/open/retained"):
        publisher.publish(topic, b"", qos=1, retain=True)
