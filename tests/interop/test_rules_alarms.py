"""Rules and alarms through the real binary: rules are created over the API, paho devices
send telemetry with explicit timestamps (`for` is measured in data time, so no test waits
for a rule), alarms go active → acknowledged → cleared with at most one open per rule and
device, the republish action reaches a paho subscriber, and bad expressions are refused
with the position of the mistake.

Whenever a test asserts that something did *not* happen (no alarm before `for` elapsed,
no clear before the `clear` expression held), it does so through what happened next: the
values an alarm was raised or cleared with, and the number of alarms in the end."""

from __future__ import annotations

import json

import pytest

from fleet import BASE_MS, assert_problem, wait_until
from peer import V5, V311


def rule(uid: str, name: str, device_ids: list[str], condition: str, **extra) -> dict:
    return {"id": f"{name}-{uid}", "name": name, "match": {"devices": device_ids}, "condition": condition, **extra}


def send(peer, device: str, ts: int, **fields) -> None:
    """One telemetry message at data time `ts`, acknowledged (so stored) before returning."""
    mid = peer.publish(f"devices/{device}/telemetry", json.dumps({"ts": ts, **fields}), qos=1)
    assert peer.publish_reasons[mid] == 0


def open_alarm(api, rule_id: str, device: str, status: str = "open") -> dict:
    """Waits for the alarm of (rule, device) to be in `status`; returns it."""
    found = wait_until(
        lambda: api.alarms(rule=rule_id, device=device, status=status),
        f"an alarm of rule {rule_id} for {device} with status {status}",
    )
    assert len(found) == 1, found
    return found[0]


def wait_for_alarm(api, alarm_id: str, status: str) -> dict:
    return wait_until(
        lambda: (lambda alarm: alarm if alarm["status"] == status else None)(
            api.ok("GET", f"/api/v1/alarms/{alarm_id}")
        ),
        f"alarm {alarm_id} {status}",
    )


def test_rule_is_created_shown_listed_replaced_and_deleted(api, uid):
    body = rule(uid, "crud", [f"d-{uid}"], "temperature > 30")
    response = api.post("/api/v1/rules", body)
    assert response.status == 201, response
    created = response.body
    assert response.headers["location"] == f"/api/v1/rules/crud-{uid}"
    # Defaults: medium severity, an alarm as the action, enabled.
    assert created["severity"] == "medium" and created["actions"] == [{"type": "alarm"}] and created["enabled"] is True
    assert created["condition"] == "temperature > 30" and created["match"]["devices"] == [f"d-{uid}"]
    assert api.ok("GET", f"/api/v1/rules/crud-{uid}") == created
    assert created["id"] in [item["id"] for item in api.ok("GET", "/api/v1/rules?limit=1000")["items"]]
    assert_problem(api.post("/api/v1/rules", body), 409)

    replaced = api.ok(
        "PUT",
        f"/api/v1/rules/crud-{uid}",
        {**body, "condition": "temperature > 35", "severity": "critical", "for": "1m"},
    )
    assert (replaced["condition"], replaced["severity"], replaced["for"]) == ("temperature > 35", "critical", "1m")
    assert api.ok("GET", f"/api/v1/rules/crud-{uid}")["condition"] == "temperature > 35"
    assert_problem(api.call("PUT", f"/api/v1/rules/crud-{uid}", {**body, "id": "another"}), 422, "id")

    assert api.call("DELETE", f"/api/v1/rules/crud-{uid}").status == 204
    assert_problem(api.get(f"/api/v1/rules/crud-{uid}"), 404)
    assert_problem(api.call("DELETE", f"/api/v1/rules/crud-{uid}"), 404)


@pytest.mark.parametrize(
    "expressions, expression, position, fragment",
    [
        ({"condition": "temperature > > 3"}, "condition", 14, 'found ">"'),
        ({"condition": "a $ 1"}, "condition", 2, '"$"'),
        ({"condition": "a >= 1 )"}, "condition", 7, '")"'),
        ({"condition": "a > 1 or or b"}, "condition", 9, '"or"'),
        ({"condition": "a > 1 and foo(b)"}, "condition", 10, "foo"),
        ({"condition": "a + 1"}, "condition", 0, "boolean"),
        ({"condition": "temperature >"}, "condition", 13, "end of expression"),
        ({"condition": "(a > 1"}, "condition", 6, '")"'),
        ({"condition": "a > 1", "clear": "a <<"}, "clear", 3, '"<"'),
    ],
)
def test_a_bad_expression_is_a_422_naming_the_expression_and_the_position(
    api, uid, expressions, expression, position, fragment
):
    body = {"id": f"bad-{uid}", "name": "bad", **expressions}
    problem = assert_problem(api.post("/api/v1/rules", body), 422, f"{expression}:", fragment)
    assert problem["position"] == position, problem
    if "end of expression" not in problem["detail"]:
        assert f"column {position + 1}" in problem["detail"], problem
    assert_problem(api.get(f"/api/v1/rules/bad-{uid}"), 404)


def test_bad_rule_fields_are_422(api, uid):
    base = {"name": "x", "condition": "a > 1"}
    assert_problem(api.post("/api/v1/rules", {**base, "severity": "urgent"}), 422, "urgent")
    assert_problem(api.post("/api/v1/rules", {**base, "for": "ten"}), 422, "ten")
    assert api.post("/api/v1/rules", {**base, "actions": [{"type": "email"}]}).status in (400, 422)
    assert api.post("/api/v1/rules", {"name": "x"}).status in (400, 422)


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_alarm_lifecycle_with_for_clear_hysteresis_ack_and_manual_clear(api, devices, uid, protocol):
    device = f"boiler-{uid}"
    peer = devices(device, protocol=protocol)
    overheat = api.create_rule(rule(
        uid, "overheat", [device], "temperature > 30", **{"for": "10s", "clear": "temperature < 28", "severity": "high"}
    ))  # fmt: skip
    t0 = BASE_MS

    # The condition holds from t0; only at t0 + 10 s has it held for 10 s (data time).
    send(peer, device, t0, temperature=31)
    send(peer, device, t0 + 5_000, temperature=32)
    send(peer, device, t0 + 9_999, temperature=32.5)
    send(peer, device, t0 + 10_000, temperature=33)
    alarm = open_alarm(api, overheat["id"], device)
    assert alarm["status"] == "active"
    assert alarm["values"] == {"temperature": 33.0}, "raised before the condition held for 10 s"
    assert (alarm["rule_id"], alarm["rule_name"], alarm["device_id"], alarm["severity"]) == (
        overheat["id"], "overheat", device, "high",
    )  # fmt: skip
    assert alarm["created_at"] and alarm["updated_at"] and alarm["cleared_at"] is None

    acknowledged = api.ok("POST", f"/api/v1/alarms/{alarm['id']}/ack")
    assert acknowledged["status"] == "acknowledged"
    assert acknowledged["acknowledged_at"] and acknowledged["acknowledged_by"]
    assert api.ok("POST", f"/api/v1/alarms/{alarm['id']}/ack")["status"] == "acknowledged"

    # Below the condition but not below `clear`: the alarm stays (hysteresis); back above:
    # still the same alarm, no second one.
    send(peer, device, t0 + 11_000, temperature=29)
    send(peer, device, t0 + 12_000, temperature=35)
    send(peer, device, t0 + 13_000, temperature=27.5)
    cleared = wait_for_alarm(api, alarm["id"], "cleared")
    assert cleared["cleared_by"] == "rule"
    assert cleared["clear_values"] == {"temperature": 27.5}, "cleared before the clear expression held"
    assert cleared["acknowledged_by"] == acknowledged["acknowledged_by"] and cleared["cleared_at"]
    assert len(api.alarms(rule=overheat["id"], device=device)) == 1

    assert_problem(api.post(f"/api/v1/alarms/{alarm['id']}/clear"), 409)
    assert_problem(api.post(f"/api/v1/alarms/{alarm['id']}/ack"), 409)

    # Raised again (a new alarm: the old one stays cleared), then cleared by hand.
    send(peer, device, t0 + 20_000, temperature=40)
    send(peer, device, t0 + 30_000, temperature=41)
    second = open_alarm(api, overheat["id"], device)
    assert second["id"] != alarm["id"] and second["values"] == {"temperature": 41.0}
    by_hand = api.ok("POST", f"/api/v1/alarms/{second['id']}/clear")
    assert by_hand["status"] == "cleared" and by_hand["cleared_by"] not in (None, "rule")
    assert_problem(api.post(f"/api/v1/alarms/{second['id']}/clear"), 409)


def test_a_break_in_the_condition_restarts_the_for_duration(api, devices, uid):
    device = f"flaky-{uid}"
    peer = devices(device)
    hot = api.create_rule(rule(uid, "hot", [device], "t > 30", **{"for": "10s"}))
    send(peer, device, BASE_MS, t=31)
    send(peer, device, BASE_MS + 5_000, t=29)  # the run is broken
    send(peer, device, BASE_MS + 6_000, t=32)  # a new run starts here
    send(peer, device, BASE_MS + 15_000, t=33)  # 15 s after the first, 9 s into this run
    send(peer, device, BASE_MS + 16_000, t=34)
    assert open_alarm(api, hot["id"], device)["values"] == {"t": 34.0}


def test_a_disabled_rule_raises_nothing_until_enabled(api, devices, uid):
    device = f"off-{uid}"
    peer = devices(device)
    body = rule(uid, "dormant", [device], "t > 30", enabled=False)
    dormant = api.create_rule(body)
    assert dormant["enabled"] is False
    witness = api.create_rule(rule(uid, "witness", [device], "t > 30"))
    send(peer, device, BASE_MS, t=31)
    open_alarm(api, witness["id"], device)
    api.ok("PUT", f"/api/v1/rules/{dormant['id']}", {**body, "enabled": True})
    send(peer, device, BASE_MS + 1000, t=32)
    assert open_alarm(api, dormant["id"], device)["values"] == {"t": 32.0}
    assert len(api.alarms(rule=dormant["id"])) == 1


def test_a_replaced_rule_keeps_its_open_alarm_and_clears_it_by_the_new_logic(api, devices, uid):
    device = f"swap-{uid}"
    peer = devices(device)
    body = rule(uid, "swap", [device], "t > 30", clear="t < 10")
    swap = api.create_rule(body)
    send(peer, device, BASE_MS, t=40)
    alarm = open_alarm(api, swap["id"], device)
    # Under the old rule 20 would not clear it (clear is t < 10); under the new one it does.
    api.ok("PUT", f"/api/v1/rules/{swap['id']}", {**body, "condition": "t > 25", "clear": "t < 22"})
    send(peer, device, BASE_MS + 1000, t=20)
    cleared = wait_for_alarm(api, alarm["id"], "cleared")
    assert cleared["cleared_by"] == "rule" and cleared["clear_values"] == {"t": 20.0}


def test_a_deleted_rule_leaves_its_open_alarm_to_be_cleared_by_hand(api, devices, uid):
    device = f"del-{uid}"
    peer = devices(device)
    gone = api.create_rule(rule(uid, "gone", [device], "t > 30"))
    witness = api.create_rule(rule(uid, "witness", [device], "t > 30"))
    send(peer, device, BASE_MS, t=40)
    alarm = open_alarm(api, gone["id"], device)
    open_alarm(api, witness["id"], device)
    assert api.call("DELETE", f"/api/v1/rules/{gone['id']}").status == 204
    send(peer, device, BASE_MS + 1000, t=0)  # would have cleared it
    wait_until(lambda: api.alarms(rule=witness["id"], device=device, status="cleared"), "the witness alarm cleared")
    assert api.ok("GET", f"/api/v1/alarms/{alarm['id']}")["status"] == "active"
    assert api.ok("POST", f"/api/v1/alarms/{alarm['id']}/clear")["status"] == "cleared"


def test_a_device_that_stops_matching_has_its_alarm_cleared_and_one_that_starts_is_watched(api, devices, uid):
    leaving, joining = f"leave-{uid}", f"join-{uid}"
    api.create_device(leaving, labels={"site": f"lyon-{uid}"})
    api.create_device(joining, labels={"site": f"paris-{uid}"})
    site = api.create_rule({
        "id": f"site-{uid}", "name": "site", "match": {"labels": {"site": f"lyon-{uid}"}}, "condition": "t > 30",
    })  # fmt: skip
    peers = {device: devices(device) for device in (leaving, joining)}
    send(peers[leaving], leaving, BASE_MS, t=40)
    alarm = open_alarm(api, site["id"], leaving)
    api.ok("PATCH", f"/api/v1/devices/{leaving}", {"labels": {"site": f"paris-{uid}"}})
    api.ok("PATCH", f"/api/v1/devices/{joining}", {"labels": {"site": f"lyon-{uid}"}})
    send(peers[leaving], leaving, BASE_MS + 1000, t=41)
    send(peers[joining], joining, BASE_MS + 1000, t=42)
    assert open_alarm(api, site["id"], joining)["values"] == {"t": 42.0}
    assert wait_for_alarm(api, alarm["id"], "cleared")["cleared_by"] == "rule"


def test_bad_actions_are_422(api, uid):
    base = {"name": "x", "condition": "a > 1"}
    cases = [
        ([{"type": "webhook", "url": "ftp://example/hook"}], "ftp://example/hook"),
        ([{"type": "republish", "topic": "alerts/+/x"}], "alerts/+/x"),
    ]
    for actions, fragment in cases:
        assert_problem(api.post("/api/v1/rules", {**base, "actions": actions}), 422, fragment)


def test_without_clear_the_alarm_clears_when_the_condition_stops_holding(api, devices, uid):
    device = f"tank-{uid}"
    peer = devices(device)
    low = api.create_rule(rule(uid, "low-level", [device], "level < 10 and pump == 1", severity="low"))
    send(peer, device, BASE_MS, level=50, pump=1)
    send(peer, device, BASE_MS + 1000, level=5)  # pump is still 1: its latest value counts
    alarm = open_alarm(api, low["id"], device)
    assert alarm["values"] == {"level": 5.0, "pump": 1.0}
    send(peer, device, BASE_MS + 2000, pump=0)
    cleared = wait_for_alarm(api, alarm["id"], "cleared")
    assert cleared["cleared_by"] == "rule" and cleared["clear_values"] == {"level": 5.0, "pump": 0.0}


def test_at_most_one_open_alarm_per_rule_and_device(api, devices, uid):
    first, second = f"a-{uid}", f"b-{uid}"
    peers = {device: devices(device) for device in (first, second)}
    hot = api.create_rule(rule(uid, "hot", [first, second], "t > 30"))
    for index in range(5):
        for device, peer in peers.items():
            send(peer, device, BASE_MS + 1000 * index, t=31 + index)
    # The closing message of each device proves all the above were evaluated.
    for device, peer in peers.items():
        send(peer, device, BASE_MS + 10_000, t=0)
    for device in peers:
        alarm = wait_until(
            lambda device=device: api.alarms(rule=hot["id"], device=device, status="cleared"), f"{device} cleared"
        )
        assert len(alarm) == 1 and alarm[0]["values"] == {"t": 31.0}
        assert api.alarms(rule=hot["id"], device=device) == alarm

    # Cleared by hand while the condition still holds: the next message raises a new one.
    peer = peers[first]
    send(peer, first, BASE_MS + 20_000, t=50)
    raised = open_alarm(api, hot["id"], first)
    api.ok("POST", f"/api/v1/alarms/{raised['id']}/clear")
    send(peer, first, BASE_MS + 21_000, t=51)
    again = open_alarm(api, hot["id"], first)
    assert again["id"] != raised["id"] and again["values"] == {"t": 51.0}


def test_rules_match_devices_by_type_and_labels(api, devices, uid):
    matching, other_type, other_site = f"m-{uid}", f"t-{uid}", f"s-{uid}"
    api.create_device(matching, type="boiler", labels={"site": "lyon", "floor": "2"})
    api.create_device(other_type, type="fridge", labels={"site": "lyon"})
    api.create_device(other_site, type="boiler", labels={"site": "paris"})
    by_kind = api.create_rule({
        "id": f"kind-{uid}", "name": "boilers in lyon", "match": {"type": "boiler", "labels": {"site": "lyon"}},
        "condition": f"pressure_{uid} > 3",
    })  # fmt: skip
    field = f"pressure_{uid}"
    for device in (other_type, other_site, matching):
        send(devices(device), device, BASE_MS, **{field: 4})
    alarm = open_alarm(api, by_kind["id"], matching)
    assert alarm["values"] == {field: 4.0}
    assert [alarm["device_id"] for alarm in api.alarms(rule=by_kind["id"])] == [matching]


def test_rate_and_delta_use_data_time(api, devices, uid):
    device = f"meter-{uid}"
    peer = devices(device)
    fast = api.create_rule(rule(uid, "fast", [device], "rate(energy) > 10"))
    jump = api.create_rule(rule(uid, "jump", [device], "abs(delta(temp)) >= 5"))
    send(peer, device, BASE_MS, energy=0, temp=20)
    send(peer, device, BASE_MS + 10_000, energy=90, temp=24)  # 9 per second; +4
    send(peer, device, BASE_MS + 11_000, energy=101, temp=18)  # 11 per second; -6
    assert open_alarm(api, fast["id"], device)["values"] == {"energy": 101.0}
    assert open_alarm(api, jump["id"], device)["values"] == {"temp": 18.0}


def test_alarms_are_listed_with_filters_and_pages(api, devices, uid):
    device = f"list-{uid}"
    peer = devices(device)
    rules = [api.create_rule(rule(uid, f"r{index}", [device], f"x > {index}", severity=severity))
             for index, severity in enumerate(["low", "critical", "critical"])]  # fmt: skip
    send(peer, device, BASE_MS, x=10)
    for each in rules:
        open_alarm(api, each["id"], device)
    first = api.alarms(device=device, rule=rules[0]["id"])[0]
    api.ok("POST", f"/api/v1/alarms/{first['id']}/ack")

    assert {a["rule_id"] for a in api.alarms(device=device)} == {r["id"] for r in rules}
    assert {a["rule_id"] for a in api.alarms(device=device, severity="critical")} == {rules[1]["id"], rules[2]["id"]}
    assert [a["id"] for a in api.alarms(device=device, status="acknowledged")] == [first["id"]]
    assert len(api.alarms(device=device, status="active")) == 2
    assert len(api.alarms(device=device, status="open")) == 3
    assert api.alarms(device=device, status="cleared") == []

    # Pages of one, newest first, without repeats.
    seen, cursor = [], None
    while True:
        query = f"/api/v1/alarms?device={device}&limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = api.ok("GET", query)
        assert len(page["items"]) <= 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(a["id"] for a in api.alarms(device=device)) and len(seen) == 3
    assert_problem(api.get("/api/v1/alarms?status=snoozed"), 400, "snoozed")
    assert_problem(api.get("/api/v1/alarms/alm-does-not-exist"), 404)
    assert_problem(api.post("/api/v1/alarms/alm-does-not-exist/ack"), 404)


def test_viewers_see_alarms_and_rules_but_only_operators_change_them(api, devices, uid):
    device = f"roles-{uid}"
    peer = devices(device)
    watched = api.create_rule(rule(uid, "watched", [device], "x > 1"))
    send(peer, device, BASE_MS, x=2)
    alarm = open_alarm(api, watched["id"], device)
    viewer = api.ok("POST", "/api/v1/tokens", {"name": f"viewer-{uid}", "role": "viewer"}, expect=201)["token"]
    assert api.get(f"/api/v1/alarms/{alarm['id']}", token=viewer).status == 200
    assert api.get(f"/api/v1/rules/{watched['id']}", token=viewer).status == 200
    assert_problem(api.post(f"/api/v1/alarms/{alarm['id']}/ack", token=viewer), 403)
    assert_problem(api.post(f"/api/v1/alarms/{alarm['id']}/clear", token=viewer), 403)
    assert_problem(api.post("/api/v1/rules", rule(uid, "nope", [device], "x > 1"), token=viewer), 403)
    assert_problem(api.get("/api/v1/alarms", token=None), 401)
    assert api.ok("GET", f"/api/v1/alarms/{alarm['id']}")["status"] == "active"


def test_republish_action_reaches_an_mqtt_subscriber(api, devices, uid):
    device = f"pump-{uid}"
    peer = devices(device)
    watcher = devices(f"watcher-{uid}", protocol=V5)
    watcher.subscribe((f"alerts/{uid}/#", 1))
    pressure = api.create_rule(rule(
        uid, "pressure", [device], "pressure > 8",
        clear="pressure < 6", severity="critical",
        actions=[{"type": "alarm"}, {"type": "republish", "topic": f"alerts/{uid}/{{device}}"}],
    ))  # fmt: skip
    send(peer, device, BASE_MS + 500, pressure=9.5)
    message = watcher.expect_message(f"alerts/{uid}/{device}")
    raised = json.loads(message.payload)
    alarm = open_alarm(api, pressure["id"], device)
    assert raised == {
        "event": "raised",
        "rule": {"id": pressure["id"], "name": "pressure"},
        "device_id": device,
        "severity": "critical",
        "values": {"pressure": 9.5},
        "ts": BASE_MS + 500,
        "alarm": {"id": alarm["id"], "status": "active"},
    }
    send(peer, device, BASE_MS + 1500, pressure=5)
    cleared = json.loads(watcher.expect_message(f"alerts/{uid}/{device}").payload)
    assert cleared["event"] == "cleared" and cleared["ts"] == BASE_MS + 1500
    assert cleared["values"] == {"pressure": 5.0}
    assert cleared["alarm"] == {"id": alarm["id"], "status": "cleared"}
