"""Will messages: sent on abnormal disconnect with their QoS and retain flag, not after DISCONNECT."""

import pytest

import rawmqtt

VERSIONS = pytest.mark.parametrize("version", [rawmqtt.V311, rawmqtt.V5], ids=["v311", "v5"])


@VERSIONS
@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_is_sent_with_its_qos_when_connection_drops(peers, raw, uid, version, will_qos):
    will_topic = f"{uid}/will"
    watcher = peers("watcher").connect()
    watcher.subscribe((will_topic, 2))
    device = raw()
    will = rawmqtt.Will(will_topic, b"gone", qos=will_qos)
    assert device.connect(f"{uid}-device", version=version, will=will).return_code == 0
    device.close()  # no DISCONNECT
    message = watcher.expect_message(will_topic)
    assert (message.payload, message.qos, message.retain) == (b"gone", will_qos, False)


@VERSIONS
def test_retained_will_is_retained(peers, raw, uid, version):
    will_topic = f"{uid}/will"
    watcher = peers("watcher").connect()
    watcher.subscribe((will_topic, 1))
    device = raw()
    will = rawmqtt.Will(will_topic, b"offline", qos=1, retain=True)
    assert device.connect(f"{uid}-device", version=version, will=will).return_code == 0
    device.close()
    assert watcher.expect_message(will_topic).payload == b"offline"
    latecomer = peers("latecomer").connect()
    latecomer.subscribe((will_topic, 1))
    message = latecomer.expect_message(will_topic)
    assert (message.payload, message.retain) == (b"offline", True)
    latecomer.publish(will_topic, b"", qos=1, retain=True)  # leave no retained message behind


@VERSIONS
def test_will_is_not_sent_after_clean_disconnect(peers, raw, uid, version):
    will_topic, marker = f"{uid}/will", f"{uid}/marker"
    watcher = peers("watcher").connect()
    watcher.subscribe((will_topic, 1), (marker, 1))
    device = raw()
    will = rawmqtt.Will(will_topic, b"gone", qos=1)
    assert device.connect(f"{uid}-device", version=version, will=will).return_code == 0
    device.send(rawmqtt.disconnect(version=version))
    assert device.read_until_closed() == []  # the broker has handled the DISCONNECT
    peers("publisher").connect().publish(marker, b"end", qos=1)
    assert watcher.messages_until(marker) == [], "will sent after a clean DISCONNECT"


def test_paho_client_will_is_sent_when_its_socket_is_closed(peers, uid, protocol):
    will_topic = f"{uid}/will"
    watcher = peers("watcher", protocol=protocol).connect()
    watcher.subscribe((will_topic, 1))
    device = peers("device", protocol=protocol).connect(will=(will_topic, b"lost", 1, False))
    device.client.socket().close()
    message = watcher.expect_message(will_topic)
    assert (message.payload, message.qos) == (b"lost", 1)
