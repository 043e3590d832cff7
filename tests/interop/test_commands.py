"""Commands to real paho devices (MQTT 3.1.1 and 5.0): the platform publishes
`devices/{id}/commands/{command id}` at QoS 1, the device's PUBACK makes the command
`delivered`, its answer on `.../response` makes it `succeeded` or `failed`, and no answer
by the deadline makes it `expired`, also while the device is offline. A device that comes
back before the deadline still gets it."""

from __future__ import annotations

import json

import pytest

from fleet import BASE_MS, assert_problem, wait_until
from peer import V5, V311


def wait_for_status(api, device: str, command_id: str, status: str, timeout: float = 10.0) -> dict:
    return wait_until(
        lambda: (lambda command: command if command["status"] == status else None)(api.command(device, command_id)),
        f"command {command_id} {status}",
        timeout,
    )


def device_with_commands(api, devices, device: str, protocol: int):
    api.create_device(device)
    peer = devices(device, protocol=protocol)
    assert peer.subscribe((f"devices/{device}/commands/+", 1)) == [1]
    return peer


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_command_is_delivered_then_succeeds_with_the_device_result(api, devices, uid, protocol):
    device = f"valve-{uid}"
    peer = device_with_commands(api, devices, device, protocol)
    response = api.post(
        f"/api/v1/devices/{device}/commands", {"name": "open", "params": {"percent": 40}, "timeout_s": 30}
    )
    assert response.status == 202, response
    sent = response.body
    assert sent["status"] == "pending" and sent["name"] == "open" and sent["params"] == {"percent": 40}
    assert sent["device_id"] == device and sent["result"] is None
    assert response.headers["location"] == f"/api/v1/devices/{device}/commands/{sent['id']}"

    message = peer.expect_message(f"devices/{device}/commands/{sent['id']}")
    assert message.qos == 1
    assert json.loads(message.payload) == {"id": sent["id"], "name": "open", "params": {"percent": 40}}
    delivered = wait_for_status(api, device, sent["id"], "delivered")
    assert delivered["delivered_at"] and delivered["completed_at"] is None

    answer = {"status": "ok", "result": {"position": 40, "notes": ["slow"]}}
    mid = peer.publish(f"devices/{device}/commands/{sent['id']}/response", json.dumps(answer), qos=1)
    assert peer.publish_reasons[mid] == 0
    done = wait_for_status(api, device, sent["id"], "succeeded")
    assert done["result"] == answer["result"] and done["completed_at"]
    listed = api.ok("GET", f"/api/v1/devices/{device}/commands")["items"]
    assert [(c["id"], c["status"]) for c in listed] == [(sent["id"], "succeeded")]


def test_command_fails_with_the_device_error_and_a_final_status_stays(api, devices, uid):
    device = f"door-{uid}"
    peer = device_with_commands(api, devices, device, V5)
    sent = api.send_command(device, "lock", timeout_s=30)
    peer.expect_message(f"devices/{device}/commands/{sent['id']}")
    response_topic = f"devices/{device}/commands/{sent['id']}/response"
    peer.publish(response_topic, json.dumps({"status": "error", "result": "bolt jammed"}), qos=1)
    failed = wait_for_status(api, device, sent["id"], "failed")
    assert failed["result"] == "bolt jammed"
    # A second answer changes nothing.
    peer.publish(response_topic, json.dumps({"status": "ok", "result": "fixed"}), qos=1)
    sentinel = api.send_command(device, "sentinel", timeout_s=30)
    peer.expect_message(f"devices/{device}/commands/{sentinel['id']}")
    peer.publish(f"devices/{device}/commands/{sentinel['id']}/response", json.dumps({"status": "ok"}), qos=1)
    wait_for_status(api, device, sentinel["id"], "succeeded")
    assert api.command(device, sent["id"])["status"] == "failed"
    assert api.command(device, sent["id"])["result"] == "bolt jammed"


def test_a_malformed_response_is_refused_with_0x99(api, devices, uid):
    device = f"resp-{uid}"
    peer = device_with_commands(api, devices, device, V5)
    sent = api.send_command(device, "ping", timeout_s=30)
    peer.expect_message(f"devices/{device}/commands/{sent['id']}")
    mid = peer.publish(f"devices/{device}/commands/{sent['id']}/response", json.dumps({"status": "done"}), qos=1)
    assert peer.publish_reasons[mid] == 0x99
    assert api.command(device, sent["id"])["status"] in ("pending", "delivered")


def test_command_without_answer_expires(api, devices, uid):
    device = f"mute-{uid}"
    peer = device_with_commands(api, devices, device, V311)
    sent = api.send_command(device, "reboot", timeout_s=1)
    peer.expect_message(f"devices/{device}/commands/{sent['id']}")
    wait_for_status(api, device, sent["id"], "delivered")
    expired = wait_for_status(api, device, sent["id"], "expired", timeout=5)
    assert expired["completed_at"] and expired["result"] is None
    # Too late: an answer after the deadline does not revive it.
    peer.publish(f"devices/{device}/commands/{sent['id']}/response", json.dumps({"status": "ok"}), qos=1)
    assert api.command(device, sent["id"])["status"] == "expired"


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_offline_device_gets_the_command_when_it_comes_back(api, devices, uid, protocol):
    device = f"sleepy-{uid}"
    api.create_device(device)
    sent = api.send_command(device, "update", {"url": "http://fw/1.2.bin"}, timeout_s=30)
    assert api.command(device, sent["id"])["status"] == "pending"
    peer = devices(device, protocol=protocol)
    peer.subscribe((f"devices/{device}/commands/#", 1))
    message = peer.expect_message(f"devices/{device}/commands/{sent['id']}", timeout=5)
    assert json.loads(message.payload)["params"] == {"url": "http://fw/1.2.bin"}
    wait_for_status(api, device, sent["id"], "delivered")
    peer.publish(f"devices/{device}/commands/{sent['id']}/response", json.dumps({"status": "ok", "result": 1.2}), qos=1)
    assert wait_for_status(api, device, sent["id"], "succeeded")["result"] == 1.2


def test_offline_device_command_expires_and_is_not_sent_later(api, devices, uid):
    device = f"gone-{uid}"
    api.create_device(device)
    stale = api.send_command(device, "stale", timeout_s=1)
    wait_for_status(api, device, stale["id"], "expired", timeout=5)
    peer = devices(device)
    peer.subscribe((f"devices/{device}/commands/#", 1))
    fresh = api.send_command(device, "fresh", timeout_s=30)
    # The first (and only) command it gets is the fresh one.
    message = peer.expect_message(timeout=5)
    assert message.topic == f"devices/{device}/commands/{fresh['id']}"
    assert peer.drain(1.2) == []  # more than the 1 s republish interval


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_persistent_session_gets_a_pending_command_on_reconnect(api, devices, uid, protocol):
    device = f"persist-{uid}"
    api.create_device(device)
    session = devices(device, protocol=protocol, clean=False, connect=False).connect(session_expiry=300)
    session.subscribe((f"devices/{device}/commands/+", 1))
    session.disconnect()
    sent = api.send_command(device, "calibrate", timeout_s=30)
    back = devices(device, protocol=protocol, clean=False, connect=False).connect(session_expiry=300)
    assert back.session_present
    message = back.expect_message(f"devices/{device}/commands/{sent['id']}")
    assert json.loads(message.payload)["name"] == "calibrate"
    wait_for_status(api, device, sent["id"], "delivered")


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_persistent_session_does_not_get_a_command_that_expired_while_offline(api, devices, uid, protocol):
    """The platform reported the command expired: the device must not run it later. Its
    offline session queued the PUBLISH; the command's deadline has to reach that queue
    (MQTT 5 Message Expiry Interval), or the device executes a command reported as
    expired."""
    device = f"stale-{uid}"
    api.create_device(device)
    session = devices(device, protocol=protocol, clean=False, connect=False).connect(session_expiry=300)
    session.subscribe((f"devices/{device}/commands/+", 1))
    session.disconnect()
    stale = api.send_command(device, "reboot", timeout_s=1)
    wait_for_status(api, device, stale["id"], "expired", timeout=5)
    back = devices(device, protocol=protocol, clean=False, connect=False).connect(session_expiry=300)
    assert back.session_present
    fresh = api.send_command(device, "fresh", timeout_s=30)
    message = back.expect_message()
    assert message.topic == f"devices/{device}/commands/{fresh['id']}", (
        f"the device got {message.topic} {message.payload!r}: the command expired "
        f"{stale['expires_at']} while it was offline"
    )
    assert api.command(device, stale["id"])["status"] == "expired"


def test_a_rule_sends_a_command_to_the_device(api, devices, uid):
    device = f"fan-{uid}"
    peer = device_with_commands(api, devices, device, V5)
    api.create_rule({
        "id": f"cool-{uid}", "name": "cool down", "match": {"devices": [device]}, "condition": "temperature > 40",
        "actions": [{"type": "command", "name": "fan_on", "params": {"speed": 3}}],
    })  # fmt: skip
    mid = peer.publish(f"devices/{device}/telemetry", json.dumps({"ts": BASE_MS, "temperature": 45}), qos=1)
    assert peer.publish_reasons[mid] == 0
    message = peer.expect_message()
    command = json.loads(message.payload)
    assert message.topic == f"devices/{device}/commands/{command['id']}"
    assert (command["name"], command["params"]) == ("fan_on", {"speed": 3})
    wait_for_status(api, device, command["id"], "delivered")


def test_a_device_cannot_answer_or_see_another_devices_command(api, devices, uid):
    owner, intruder = f"owner-{uid}", f"intruder-{uid}"
    peer = device_with_commands(api, devices, owner, V5)
    api.create_device(intruder)
    sent = api.send_command(owner, "open", timeout_s=30)
    peer.expect_message(f"devices/{owner}/commands/{sent['id']}")
    wait_for_status(api, owner, sent["id"], "delivered")
    assert_problem(api.get(f"/api/v1/devices/{intruder}/commands/{sent['id']}"), 404)
    other = devices(intruder, protocol=V5)
    mid = other.publish(f"devices/{intruder}/commands/{sent['id']}/response", json.dumps({"status": "ok"}), qos=1)
    assert other.publish_reasons[mid] >= 0x80
    peer.publish(f"devices/{owner}/commands/{sent['id']}/response", json.dumps({"status": "error", "result": 7}), qos=1)
    assert wait_for_status(api, owner, sent["id"], "failed")["result"] == 7


def test_bad_command_requests(api, uid):
    device = f"badcmd-{uid}"
    api.create_device(device)
    path = f"/api/v1/devices/{device}/commands"
    assert_problem(api.post(f"/api/v1/devices/nobody-{uid}/commands", {"name": "x"}), 404)
    assert_problem(api.post(path, {"name": "x", "timeout_s": 0}), 422, "timeout_s")
    assert_problem(api.post(path, {"name": "x", "params": [1, 2]}), 422, "params")
    assert api.post(path, {"name": "has space"}).status in (400, 422)
    assert_problem(api.get(f"{path}/cmd-unknown"), 404)
