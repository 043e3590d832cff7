"""The broker's limits, set small through `FLEETWIRE_MQTT__*`: connections in total and per
address (closed at accept, no CONNACK; a WebSocket upgrade gets 503), connection rate per
address, inbound publish rate (5.0: DISCONNECT 0x96; 3.1.1: slowed by not being read,
nothing lost), subscriptions per session (SUBACK 0x97 / 0x80), bytes queued per offline
session (the rest dropped), each counted in /metrics.

Linux routes all of 127.0.0.0/8 to the loopback listener, so each test speaks from its own
addresses (127.0.N.M): one test's connections never count against another's limits."""

from __future__ import annotations

import itertools

import pytest

import rawmqtt
from conftest import close_all
from fleet import wait_until
from peer import TIMEOUT, V311, V5, PROTOCOL_NAMES, Peer
from test_websocket import raw_upgrade

MAX_CONNECTIONS = 40
PER_ADDRESS = 5
RATE_PER_ADDRESS = 10
PUBLISH_RATE = 50
MAX_SUBSCRIPTIONS = 5
MAX_QUEUED_BYTES = 4096

FLEETWIRE_ENV = {
    "FLEETWIRE_MQTT__MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "FLEETWIRE_MQTT__MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
    "FLEETWIRE_MQTT__CONNECTION_RATE_PER_ADDRESS": str(RATE_PER_ADDRESS),
    "FLEETWIRE_MQTT__PUBLISH_RATE": str(PUBLISH_RATE),
    "FLEETWIRE_MQTT__MAX_SUBSCRIPTIONS": str(MAX_SUBSCRIPTIONS),
    "FLEETWIRE_MQTT__MAX_QUEUED_BYTES": str(MAX_QUEUED_BYTES),
}

QUOTA_EXCEEDED = 0x96  # 5.0 DISCONNECT reason: Message rate too high
SUBSCRIPTIONS_REFUSED = {V311: 0x80, V5: 0x97}  # 5.0: Quota exceeded

_addresses = (f"127.0.{third}.{fourth}" for third in itertools.count(10) for fourth in range(1, 255))


def new_address() -> str:
    """A loopback address no other test in this module uses."""
    return next(_addresses)


@pytest.fixture
def clients(fleet, uid):
    """`clients(name, source=address, protocol=...)`: paho clients, not connected."""
    created: list[Peer] = []

    def make(name: str, *, source: str, **kwargs) -> Peer:
        created.append(Peer(fleet, f"{uid}-{name}", bind_address=source, **kwargs))
        return created[-1]

    yield make
    close_all(created)


class RawClients:
    """`raws(source)` opens a raw-socket client from `source`; `raws.close_one(source)`
    sends DISCONNECT on the first one still open from there and closes it."""

    def __init__(self, broker):
        self.broker = broker
        self.created: list[rawmqtt.RawClient] = []

    def __call__(self, source: str) -> rawmqtt.RawClient:
        self.created.append(rawmqtt.RawClient(self.broker.host, self.broker.port, source=source))
        return self.created[-1]

    def close_one(self, source: str) -> None:
        for client in self.created:
            if client.sock.fileno() != -1 and client.sock.getsockname()[0] == source:
                client.send(rawmqtt.disconnect())
                client.close()
                return
        raise AssertionError(f"no open raw client from {source}")

    def close_all(self) -> None:
        for client in self.created:
            client.close()


@pytest.fixture
def raws(fleet):
    """Raw-socket clients (RawClients), all closed after the test."""
    created = RawClients(fleet)
    yield created
    created.close_all()


def try_connect(raws, source: str, client_id: str) -> bool:
    """A raw CONNECT from `source`: True on CONNACK 0, False when the broker closes the
    connection without a CONNACK. Anything else fails the test."""
    try:
        client = raws(source)
        client.send(rawmqtt.connect(client_id))
        packet = client.read_packet(timeout=TIMEOUT)
    except (rawmqtt.ConnectionClosed, ConnectionResetError, BrokenPipeError):
        return False
    assert packet.kind == rawmqtt.CONNACK and packet.return_code == 0, (
        f"expected a CONNACK 0 or a close, got {packet!r}"
    )
    return True


def open_connections(api) -> float:
    return api.metric("fleetwire_mqtt_connections_open")


def test_connections_past_the_per_address_limit_are_closed_while_other_addresses_connect(fleet, api, raws, uid):
    crowded, other = new_address(), new_address()
    refused = api.metric("fleetwire_mqtt_connections_refused_per_address_total")
    held = [try_connect(raws, crowded, f"{uid}-held-{index}") for index in range(PER_ADDRESS)]
    assert held == [True] * PER_ADDRESS
    assert not try_connect(raws, crowded, f"{uid}-one-too-many"), (
        f"a connection past {PER_ADDRESS} from {crowded} got a CONNACK"
    )
    assert try_connect(raws, other, f"{uid}-other"), f"{other} was refused because of {crowded}"
    wait_until(
        lambda: api.metric("fleetwire_mqtt_connections_refused_per_address_total") >= refused + 1,
        "fleetwire_mqtt_connections_refused_per_address_total to count the refusal",
    )

    # MQTT over WebSocket from the same address: 503 instead of the upgrade.
    status, response, sock = raw_upgrade(fleet.http_port, "mqtt", source=crowded)
    sock.close()
    assert status == 503, f"a WebSocket upgrade past the per-address limit got:\n{response.decode(errors='replace')}"
    status, response, sock = raw_upgrade(fleet.http_port, "mqtt", source=other)
    sock.close()
    assert status == 101, response.decode(errors="replace")

    # Once one of them closes, the address may connect again.
    before = open_connections(api)
    raws.close_one(crowded)
    wait_until(lambda: open_connections(api) < before, "the closed connection to be counted as closed")
    assert try_connect(raws, crowded, f"{uid}-after-close")


def test_the_connection_rate_per_address_is_limited(fleet, api, raws, uid):
    hasty, other = new_address(), new_address()
    refused_before = api.metric("fleetwire_mqtt_connections_refused_rate_total")
    per_address_before = api.metric("fleetwire_mqtt_connections_refused_per_address_total")
    baseline = open_connections(api)
    outcomes = []
    for index in range(3 * RATE_PER_ADDRESS):
        accepted = try_connect(raws, hasty, f"{uid}-hasty-{index}")
        outcomes.append(accepted)
        if accepted:
            # Closed before the next one, so the per-address limit never applies.
            raws.close_one(hasty)
            wait_until(lambda: open_connections(api) <= baseline, "the connection to be counted as closed")
    assert api.metric("fleetwire_mqtt_connections_refused_per_address_total") == per_address_before
    assert True in outcomes and False in outcomes, f"{3 * RATE_PER_ADDRESS} connections in a row: {outcomes}"
    assert outcomes[0], "the first connection of an address was refused"
    wait_until(
        lambda: api.metric("fleetwire_mqtt_connections_refused_rate_total") > refused_before,
        "fleetwire_mqtt_connections_refused_rate_total to count the refusals",
    )
    assert try_connect(raws, other, f"{uid}-other"), "another address was refused because of the hasty one"
    # The budget refills: the hasty address gets in again (bounded wait, retrying).
    wait_until(
        lambda: try_connect(raws, hasty, f"{uid}-later"), f"{hasty} to be admitted again", timeout=5, interval=0.3
    )


def test_a_v5_client_publishing_too_fast_is_disconnected_with_0x96_while_one_within_budget_loses_nothing(
    fleet, api, clients, uid
):
    exceeded = api.metric("fleetwire_mqtt_publish_rate_exceeded_total")
    watcher = clients("watcher", source=new_address(), protocol=V5).connect()
    watcher.subscribe((f"{uid}/steady", 1))
    flooder = clients("flooder", source=new_address(), protocol=V5).connect()
    steady = clients("steady", source=new_address(), protocol=V5).connect()

    for number in range(10 * PUBLISH_RATE):
        if flooder.disconnected.is_set():
            break
        flooder.client.publish(f"{uid}/flood", b"x" * 10, qos=0)
    sent = 20  # well within a budget of PUBLISH_RATE a second
    for number in range(sent):
        steady.publish(f"{uid}/steady", str(number).encode(), qos=1)

    assert flooder.disconnected.wait(TIMEOUT), f"{10 * PUBLISH_RATE} publishes at once: still connected"
    assert flooder.disconnect_reason == QUOTA_EXCEEDED, (
        f"expected DISCONNECT {QUOTA_EXCEEDED:#x}, got {flooder.disconnect_reason!r}"
    )
    received = [message.payload.decode() for message in watcher.drain(0.5)]
    assert received == [str(number) for number in range(sent)]
    assert not steady.disconnected.is_set()
    wait_until(
        lambda: api.metric("fleetwire_mqtt_publish_rate_exceeded_total") > exceeded,
        "fleetwire_mqtt_publish_rate_exceeded_total to count the flood",
    )


def test_a_v311_client_publishing_too_fast_is_slowed_down_and_nothing_is_lost(fleet, api, clients, uid):
    exceeded = api.metric("fleetwire_mqtt_publish_rate_exceeded_total")
    watcher = clients("watcher", source=new_address(), protocol=V5).connect()
    watcher.subscribe((f"{uid}/flood/#", 1))
    flooder = clients("flooder", source=new_address(), protocol=V311).connect()
    count = 4 * PUBLISH_RATE  # about three seconds past the burst
    mids = [flooder.publish_nowait(f"{uid}/flood/n", str(number).encode() * 10, qos=0) for number in range(count)]
    flooder.publish(f"{uid}/flood/end", b"", qos=1, timeout=30)
    flooder.wait_acked(mids, timeout=30)
    received = [message.payload.decode() for message in watcher.messages_until(f"{uid}/flood/end", timeout=30)]
    assert received == [str(number) * 10 for number in range(count)], f"received {len(received)} of {count}"
    assert not flooder.disconnected.is_set(), f"the 3.1.1 flooder was disconnected: {flooder.disconnect_reason}"
    assert api.metric("fleetwire_mqtt_publish_rate_exceeded_total") > exceeded


@pytest.mark.parametrize("version", [V311, V5], ids=PROTOCOL_NAMES.get)
def test_subscriptions_past_the_limit_are_refused(fleet, api, clients, uid, version):
    refused = api.metric("fleetwire_mqtt_subscriptions_refused_total")
    client = clients("subscriber", source=new_address(), protocol=version).connect()
    filters = [(f"{uid}/s/{index}", 1) for index in range(MAX_SUBSCRIPTIONS)]
    assert client.subscribe(*filters) == [1] * MAX_SUBSCRIPTIONS
    # Subscribing again to a filter it has replaces that subscription: no new one.
    assert client.subscribe((f"{uid}/s/0", 0)) == [0]
    code = SUBSCRIPTIONS_REFUSED[version]
    assert client.subscribe((f"{uid}/s/extra-1", 1), (f"{uid}/s/extra-2", 0)) == [code, code]
    assert api.metric("fleetwire_mqtt_subscriptions_refused_total") == refused + 2
    # The granted ones work; the refused one does not deliver.
    publisher = clients("publisher", source=new_address()).connect()
    publisher.publish(f"{uid}/s/extra-1", b"not for you", qos=1)
    publisher.publish(f"{uid}/s/4", b"granted", qos=1)
    assert [message.topic for message in client.drain(0.5)] == [f"{uid}/s/4"]
    # Unsubscribing frees a place.
    client.unsubscribe(f"{uid}/s/1")
    assert client.subscribe((f"{uid}/s/extra-1", 1)) == [1]


@pytest.mark.parametrize("version", [V311, V5], ids=PROTOCOL_NAMES.get)
def test_an_offline_session_queues_up_to_max_queued_bytes_and_drops_the_rest(fleet, api, clients, uid, version):
    address = new_address()
    dropped = api.metric("fleetwire_mqtt_queued_bytes_dropped_total")
    offline = clients("offline", source=address, protocol=version, clean=version == V5)
    offline.connect(session_expiry=300)
    offline.subscribe((f"{uid}/q/#", 1))
    offline.disconnect()

    publisher = clients("publisher", source=new_address()).connect()
    size, count = 1000, 10
    for number in range(count):
        publisher.publish(f"{uid}/q/n", str(number).encode().ljust(size, b"."), qos=1)

    back = clients("offline", source=address, protocol=version, clean=False)  # the same client id
    back.connect(session_expiry=300)
    assert back.session_present, "the persistent session was not kept"
    publisher.publish(f"{uid}/q/end", b"", qos=1)
    received = [message.payload.rstrip(b".").decode() for message in back.messages_until(f"{uid}/q/end")]
    kept = len(received)
    assert 1 <= kept <= MAX_QUEUED_BYTES // size, f"{kept} messages of {size} bytes kept under {MAX_QUEUED_BYTES} bytes"
    assert received == [str(number) for number in range(kept)], "not the oldest messages kept, in order"
    wait_until(
        lambda: api.metric("fleetwire_mqtt_queued_bytes_dropped_total") >= dropped + (count - kept),
        f"fleetwire_mqtt_queued_bytes_dropped_total to count {count - kept} dropped messages",
    )
    assert api.metric("fleetwire_mqtt_queued_bytes_dropped_total") == dropped + (count - kept)


def test_connections_past_the_total_limit_are_closed_at_accept(fleet, api, raws, uid):
    refused = api.metric("fleetwire_mqtt_connections_refused_max_total")
    wait_until(lambda: open_connections(api) == 0, "connections of earlier tests to close", timeout=15)
    addresses = [new_address() for _ in range(MAX_CONNECTIONS // PER_ADDRESS)]
    for index in range(MAX_CONNECTIONS):
        assert try_connect(raws, addresses[index // PER_ADDRESS], f"{uid}-{index}"), f"connection {index + 1} refused"
    fresh = new_address()
    assert not try_connect(raws, fresh, f"{uid}-past-max"), f"connection {MAX_CONNECTIONS + 1} got a CONNACK"
    wait_until(
        lambda: api.metric("fleetwire_mqtt_connections_refused_max_total") > refused,
        "fleetwire_mqtt_connections_refused_max_total to count the refusal",
    )
    status, response, sock = raw_upgrade(fleet.http_port, "mqtt", source=new_address())
    sock.close()
    assert status == 503, f"a WebSocket upgrade past the total limit got:\n{response.decode(errors='replace')}"
    raws.close_one(addresses[0])
    wait_until(lambda: open_connections(api) < MAX_CONNECTIONS, "the closed connection to be counted as closed")
    assert try_connect(raws, fresh, f"{uid}-after-close")
