"""Devices from the registry over MQTT: login with the secret the API issued, topic ACLs,
presence, and revocation by reissuing credentials or deleting the device. Real paho
clients against the real binary, started without anonymous access."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from conftest import ADMIN_TOKEN
from peer import TIMEOUT, V311, V5, Peer

NOT_AUTHORIZED_V5 = 0x87
BAD_CREDENTIALS_V5 = 0x86
ADMINISTRATIVE_ACTION = 0x98


def api(platform, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{platform.http_port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, json.loads(text) if text else None


def register(platform, device_id: str) -> str:
    """Creates a device and returns its secret."""
    status, body = api(platform, "POST", "/api/v1/devices", {"id": device_id, "type": "sensor"})
    assert status == 201, body
    status, body = api(platform, "POST", f"/api/v1/devices/{device_id}/credentials")
    assert status == 201, body
    assert body["username"] == device_id
    return body["password"]


def device_peer(platform, client_id: str, username: str | None, password: str | None, protocol: int) -> Peer:
    peer = Peer(platform, client_id, protocol=protocol)
    if username is not None:
        peer.client.username_pw_set(username, password)
    return peer


def connack(peer: Peer) -> int:
    """Connects and returns the CONNACK's reason code (0: accepted)."""
    peer.client.connect(peer.broker.host, peer.broker.port, keepalive=60)
    peer.client.loop_start()
    assert peer.connected.wait(TIMEOUT), "no CONNACK"
    return peer.connack_reason.value


def wait_until(predicate, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s")


@pytest.fixture
def peers():
    created: list[Peer] = []
    yield created
    for peer in created:
        peer.close()


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_device_logs_in_with_its_secret_and_presence_is_recorded(platform, uid, protocol, peers):
    device = f"dev-{uid}"
    secret = register(platform, device)
    peer = device_peer(platform, device, device, secret, protocol)
    peers.append(peer)
    assert connack(peer) == 0
    wait_until(lambda: api(platform, "GET", f"/api/v1/devices/{device}")[1]["online"], "device online")
    peer.disconnect()
    _, body = wait_until(
        lambda: (lambda got: got if not got[1]["online"] else None)(api(platform, "GET", f"/api/v1/devices/{device}")),
        "device offline",
    )
    assert body["last_seen"] is not None


def test_wrong_secrets_unknown_devices_and_anonymous_clients_are_refused(platform, uid, peers):
    device = f"dev-{uid}"
    secret = register(platform, device)
    cases = [
        (V5, device, "not-the-secret", BAD_CREDENTIALS_V5),
        (V5, f"unknown-{uid}", secret, BAD_CREDENTIALS_V5),
        (V5, None, None, NOT_AUTHORIZED_V5),
        # paho reports 3.1.1 return codes 4 and 5 as the matching 5.0 reason codes.
        (V311, device, "not-the-secret", BAD_CREDENTIALS_V5),
        (V311, None, None, NOT_AUTHORIZED_V5),
    ]
    for index, (protocol, username, password, expected) in enumerate(cases):
        peer = device_peer(platform, f"{uid}-{index}", username, password, protocol)
        peers.append(peer)
        assert connack(peer) == expected, (protocol, username)
    # Failed logins are logged with the address and user name, never the password.
    assert "not-the-secret" not in platform.log_text(2000)
    assert "login failed" in platform.log_text(2000)


def test_device_publishes_only_to_its_own_topics(platform, uid, peers):
    me, other = f"me-{uid}", f"other-{uid}"
    other_peer = device_peer(platform, other, other, register(platform, other), V5)
    me_peer = device_peer(platform, me, me, register(platform, me), V5)
    peers += [other_peer, me_peer]
    assert connack(other_peer) == 0 and connack(me_peer) == 0
    assert other_peer.subscribe((f"devices/{other}/commands/#", 1)) == [1]

    refused = me_peer.publish(f"devices/{other}/commands/reboot", b"{}", qos=1)
    assert me_peer.publish_reasons[refused] == NOT_AUTHORIZED_V5
    for topic in ("$SYS/broker/x", "elsewhere/telemetry", f"devices/{me}"):
        mid = me_peer.publish(topic, b"{}", qos=1)
        assert me_peer.publish_reasons[mid] == NOT_AUTHORIZED_V5, topic
    accepted = me_peer.publish(f"devices/{me}/telemetry", b'{"t": 1}', qos=1)
    assert me_peer.publish_reasons[accepted] < 0x80
    assert other_peer.drain(0.3) == []


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_device_subscribes_only_to_its_own_commands(platform, uid, protocol, peers):
    device = f"dev-{uid}"
    peer = device_peer(platform, device, device, register(platform, device), protocol)
    peers.append(peer)
    assert connack(peer) == 0
    refused = NOT_AUTHORIZED_V5 if protocol == V5 else 0x80
    codes = peer.subscribe(
        (f"devices/{device}/commands/#", 1), (f"devices/{device}/#", 1), ("devices/+/commands/#", 1), ("#", 0)
    )
    assert codes == [1, refused, refused, refused]


def test_reissuing_credentials_disconnects_the_device_and_revokes_the_old_secret(platform, uid, peers):
    device = f"dev-{uid}"
    old = register(platform, device)
    peer = device_peer(platform, device, device, old, V5)
    peers.append(peer)
    assert connack(peer) == 0

    status, body = api(platform, "POST", f"/api/v1/devices/{device}/credentials")
    assert status == 201
    new = body["password"]
    assert new != old
    assert peer.disconnected.wait(TIMEOUT), "the device stayed connected after its credentials were reissued"
    assert peer.disconnect_reason.value == ADMINISTRATIVE_ACTION

    stale = device_peer(platform, f"{device}-old", device, old, V5)
    fresh = device_peer(platform, f"{device}-new", device, new, V5)
    peers += [stale, fresh]
    assert connack(stale) == BAD_CREDENTIALS_V5
    assert connack(fresh) == 0


def test_deleting_a_device_disconnects_it_for_good(platform, uid, peers):
    device = f"dev-{uid}"
    secret = register(platform, device)
    peer = device_peer(platform, device, device, secret, V311)
    peers.append(peer)
    assert connack(peer) == 0
    status, _ = api(platform, "DELETE", f"/api/v1/devices/{device}")
    assert status == 204
    assert peer.disconnected.wait(TIMEOUT), "the device stayed connected after it was deleted"
    again = device_peer(platform, f"{device}-again", device, secret, V311)
    peers.append(again)
    assert connack(again) == BAD_CREDENTIALS_V5  # 3.1.1 return code 4
