"""Telemetry in and out: paho devices (MQTT 3.1.1 and 5.0) and HTTP clients write, the
query API reads back exactly what was written (values and millisecond timestamps), windowed
aggregates equal a reference computed here, and bad payloads are refused loudly (MQTT 5
PUBACK 0x99, a counter, the device's last ingest error) without losing anything else.

Every timestamp is explicit (`ts` in ms, or `timestamp` in seconds), so every query has an
exact expected answer."""

from __future__ import annotations

import base64
import json
import random
import time

import pytest

import rawmqtt

from fleet import BASE_MS, assert_problem, close_to, reference_aggregate, wait_until
from peer import V5, V311

PAYLOAD_FORMAT_INVALID = 0x99

# Values chosen to catch lossy formatting: fractions without a short binary form, very large
# and very small magnitudes, negative zero's neighbour, integers beyond 2**32.
AWKWARD_VALUES = [21.5, 0.1, -273.15, 1e-7, 123456789.123456, 1.5e300, -2.5e-300, 4294967297.0, 0.0, -1.0]


def mqtt_ids(protocol: int) -> str:
    return {V311: "v311", V5: "v5"}[protocol]


@pytest.mark.parametrize("protocol", [V311, V5], ids=mqtt_ids)
def test_mqtt_object_round_trips_exact_values_and_timestamps(api, devices, uid, protocol):
    device = f"rt-{uid}"
    peer = devices(device, protocol=protocol)
    expected = {}
    for index, value in enumerate(AWKWARD_VALUES):
        ts = BASE_MS + 1000 * index + 7  # not on a second boundary
        mid = peer.publish(f"devices/{device}/telemetry", json.dumps({"value": value, "ts": ts}), qos=1)
        assert peer.publish_reasons[mid] == 0
        expected[ts] = value

    points = api.series(device, fields="value", **{"from": BASE_MS, "to": BASE_MS + 60_000})["value"]
    assert [ts for ts, _ in points] == sorted(expected)
    for ts, value in points:
        assert value == expected[ts], f"at {ts}: wrote {expected[ts]!r}, read {value!r}"
    last_ts = max(expected)
    assert api.latest(device) == {"value": (last_ts, expected[last_ts])}


def test_puback_means_the_points_are_already_readable(api, devices, uid):
    """QoS 1 PUBACK is sent once the points are stored: a query right after it sees them,
    without waiting."""
    device = f"ack-{uid}"
    peer = devices(device, protocol=V5)
    for index in range(20):
        ts = BASE_MS + index
        peer.publish(f"devices/{device}/telemetry", json.dumps({"n": index, "ts": ts}), qos=1)
        assert api.latest(device)["n"] == (ts, float(index))


def test_anonymous_client_registers_its_device_on_first_telemetry(api, devices, uid):
    device = f"new-{uid}"
    assert api.get(f"/api/v1/devices/{device}").status == 404
    devices(device).publish(f"devices/{device}/telemetry", json.dumps({"t": 1, "ts": BASE_MS}), qos=1)
    assert api.device(device)["id"] == device


def test_array_nested_objects_booleans_and_the_flat_form_are_stored_as_series(api, devices, uid):
    device = f"forms-{uid}"
    peer = devices(device, protocol=V5)
    topic = f"devices/{device}/telemetry"
    rows = [
        {"ts": BASE_MS + 1000, "temperature": 21.5, "door_open": True, "gps": {"lat": 48.8566, "lon": 2.3522}},
        {"ts": BASE_MS + 2000, "temperature": 21.75, "door_open": False, "gps": {"lat": 48.857, "fix": {"sats": 7}}},
    ]
    mid = peer.publish(topic, json.dumps(rows), qos=1)
    assert peer.publish_reasons[mid] == 0
    # The common flat form: the device id inside, the time in (fractional) seconds.
    flat = {"device_id": device, "temperature": 22.0, "humidity": 40.0, "timestamp": (BASE_MS + 3250) / 1000}
    mid = peer.publish(topic, json.dumps(flat), qos=1)
    assert peer.publish_reasons[mid] == 0

    stored = api.series(device, **{"from": BASE_MS, "to": BASE_MS + 10_000})
    assert stored == {
        "temperature": [(BASE_MS + 1000, 21.5), (BASE_MS + 2000, 21.75), (BASE_MS + 3250, 22.0)],
        "door_open": [(BASE_MS + 1000, 1.0), (BASE_MS + 2000, 0.0)],
        "gps.lat": [(BASE_MS + 1000, 48.8566), (BASE_MS + 2000, 48.857)],
        "gps.lon": [(BASE_MS + 1000, 2.3522)],
        "gps.fix.sats": [(BASE_MS + 2000, 7.0)],
        "humidity": [(BASE_MS + 3250, 40.0)],
    }
    assert "device_id" not in stored and "timestamp" not in stored and "ts" not in stored


def test_http_write_with_the_operator_token_or_the_device_secret_round_trips(api, uid):
    device = f"http-{uid}"
    api.create_device(device)
    secret = api.credentials(device)
    rows = [{"ts": BASE_MS + 10 * index, "v": value} for index, value in enumerate(AWKWARD_VALUES)]
    assert api.write(device, rows) == {"points": len(rows)}

    basic = "Basic " + base64.b64encode(f"{device}:{secret}".encode()).decode()
    response = api.post(
        f"/api/v1/devices/{device}/telemetry", {"ts": BASE_MS + 500, "v": 42.25, "w": True},
        headers={"Authorization": basic}, token=None,
    )  # fmt: skip
    assert (response.status, response.body) == (200, {"points": 2})

    stored = api.series(device, **{"from": BASE_MS, "to": BASE_MS + 1000})
    assert stored["v"] == [(row["ts"], row["v"]) for row in rows] + [(BASE_MS + 500, 42.25)]
    assert stored["w"] == [(BASE_MS + 500, 1.0)]


def test_http_write_refuses_strangers_and_unknown_devices(api, uid):
    device, other = f"guard-{uid}", f"guard2-{uid}"
    api.create_device(device)
    api.create_device(other)
    secret = api.credentials(device)
    path = f"/api/v1/devices/{device}/telemetry"
    sample = {"ts": BASE_MS, "v": 1}

    def basic(user: str, password: str) -> dict:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    assert_problem(api.post(path, sample, token=None), 401)
    assert_problem(api.post(path, sample, token="fw_not-a-token"), 401)
    assert_problem(api.post(path, sample, headers=basic(device, "wrong"), token=None), 401)
    # A device may write only its own telemetry.
    assert_problem(
        api.post(f"/api/v1/devices/{other}/telemetry", sample, headers=basic(device, secret), token=None), 403
    )
    assert_problem(api.post(f"/api/v1/devices/nobody-{uid}/telemetry", sample), 404, f"nobody-{uid}")
    assert api.latest(device) == {} and api.latest(other) == {}


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"not json", "JSON"),
        (b'{"temperature": "hot"}', "temperature"),
        (b'{"temperature": null}', "temperature"),
        (b'{"temperature": [1, 2]}', "temperature"),
        (b"{}", ""),
        (b'[{"ts": 1, "a": 1}, {"ts": 2, "a": "x"}]', "row 2"),
        (b'{"device_id": "someone-else", "a": 1}', "someone-else"),
    ],
    ids=["not-json", "string", "null", "array-value", "no-fields", "bad-second-row", "wrong-device"],
)
def test_http_bad_payload_is_a_400_problem_and_nothing_is_written(api, uid, payload, fragment):
    device = f"bad-{uid}"
    api.create_device(device)
    response = api.post(
        f"/api/v1/devices/{device}/telemetry", data=payload, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, fragment)
    assert api.latest(device) == {}
    error = api.device(device)["last_ingest_error"]
    assert error["source"] == "http" and error["message"] == response.body["detail"]


@pytest.mark.parametrize("protocol", [V311, V5], ids=mqtt_ids)
def test_mqtt_bad_payload_is_refused_counted_and_recorded_on_the_device(api, devices, uid, protocol):
    device = f"badmq-{uid}"
    peer = devices(device, protocol=protocol)
    topic = f"devices/{device}/telemetry"
    peer.publish(topic, json.dumps({"ok": 1, "ts": BASE_MS}), qos=1)
    rejected_before = api.metric("fleetwire_ingest_messages_rejected_total", source="mqtt")

    # The whole array is refused for its second row: its first row is not written either.
    bad_payloads = [b"{not json", json.dumps([{"ok": 2, "ts": BASE_MS + 1}, {"ok": "two", "ts": BASE_MS + 2}])]
    for payload in bad_payloads:
        mid = peer.publish(topic, payload, qos=1)
        # MQTT 5 clients are told (0x99 payload format invalid); 3.1.1 has no way to say it
        # and gets a plain PUBACK.
        expected = PAYLOAD_FORMAT_INVALID if protocol == V5 else 0
        assert peer.publish_reasons[mid] == expected

    assert api.metric("fleetwire_ingest_messages_rejected_total", source="mqtt") == rejected_before + 2
    error = api.device(device)["last_ingest_error"]
    assert error["source"] == "mqtt"
    assert "row 2" in error["message"] and "ok" in error["message"], error
    assert isinstance(error["at"], str) and error["at"].startswith(time.strftime("%Y-", time.gmtime())), error
    # The connection lives on, and nothing of the refused payloads was stored.
    mid = peer.publish(topic, json.dumps({"ok": 3, "ts": BASE_MS + 3}), qos=1)
    assert peer.publish_reasons[mid] == 0
    assert api.series(device, fields="ok", **{"from": BASE_MS, "to": BASE_MS + 10}) == {
        "ok": [(BASE_MS, 1.0), (BASE_MS + 3, 3.0)]
    }


@pytest.mark.parametrize("protocol", [V311, V5], ids=mqtt_ids)
def test_qos_2_telemetry_is_stored_before_pubrec(api, devices, uid, protocol):
    device = f"qos2-{uid}"
    peer = devices(device, protocol=protocol)
    mid = peer.publish(f"devices/{device}/telemetry", json.dumps({"ts": BASE_MS, "v": 2.5}), qos=2)
    assert peer.publish_reasons[mid] == 0
    assert api.latest(device) == {"v": (BASE_MS, 2.5)}


def test_qos_2_bad_payload_gets_0x99_in_pubrec(api, fleet, uid):
    """paho ignores PUBREC reason codes (it sends PUBREL regardless), so this one is read
    at the packet level."""
    device = f"qos2bad-{uid}"
    client = rawmqtt.RawClient(fleet.host, fleet.port)
    try:
        assert client.connect(device, version=rawmqtt.V5).return_code == 0
        client.send(rawmqtt.publish(f"devices/{device}/telemetry", b'{"v": true, "v": false}', qos=2, packet_id=7,
                                    version=rawmqtt.V5))  # fmt: skip
        pubrec = client.expect(rawmqtt.PUBREC)
        assert pubrec.packet_id == 7 and pubrec.body[2] == PAYLOAD_FORMAT_INVALID, pubrec
    finally:
        client.close()
    assert api.latest(device) == {}
    assert "twice" in api.device(device)["last_ingest_error"]["message"]


def test_mqtt_qos_0_telemetry_is_stored_too(api, devices, uid):
    device = f"qos0-{uid}"
    peer = devices(device)
    for index in range(10):
        peer.publish(f"devices/{device}/telemetry", json.dumps({"ts": BASE_MS + index, "v": index}), qos=0)

    def stored():
        # The anonymous device is registered by its first message, which nobody waits
        # for at QoS 0: until then the device is unknown (404).
        if api.get(f"/api/v1/devices/{device}").status == 404:
            return None
        got = api.series(device, **{"from": BASE_MS, "to": BASE_MS + 10})
        return got if len(got.get("v", [])) == 10 else None

    points = wait_until(stored, "10 QoS 0 points stored")
    assert points == {"v": [(BASE_MS + index, float(index)) for index in range(10)]}


def test_an_anonymous_client_publishing_as_a_device_makes_it_present(api, devices, uid):
    """Development mode: a client without credentials that publishes as a device counts as
    that device's connection once its data is taken, so the device shows online while it
    sends and offline once it leaves, as a device that logs in does."""
    device = f"anon-{uid}"
    peer = devices(f"client-of-{uid}")
    # A rejected first message (the device is then not even registered) changes nothing.
    peer.publish(f"devices/{device}/telemetry", b"{not json", qos=1)
    peer.publish(f"devices/{device}/telemetry", json.dumps({"t": 1}), qos=1)
    wait_until(lambda: api.device(device)["online"], "device online")
    # Only the first device a client publishes as counts.
    peer.publish(f"devices/other-{uid}/telemetry", json.dumps({"t": 2}), qos=1)
    peer.disconnect()
    device_body = wait_until(
        lambda: (lambda got: got if not got["online"] else None)(api.device(device)), "device offline"
    )
    assert device_body["last_seen"] is not None
    assert api.device(f"other-{uid}")["last_seen"] is None


def test_mqtt_wrong_device_in_the_flat_form_is_refused(api, devices, uid):
    device = f"flat-{uid}"
    peer = devices(device, protocol=V5)
    mid = peer.publish(f"devices/{device}/telemetry", json.dumps({"device_id": f"other-{uid}", "t": 1}), qos=1)
    assert peer.publish_reasons[mid] == PAYLOAD_FORMAT_INVALID
    assert f"other-{uid}" in api.device(device)["last_ingest_error"]["message"]
    assert api.get(f"/api/v1/devices/other-{uid}").status == 404


def test_times_are_rounded_to_the_nearest_millisecond(api, uid):
    device = f"round-{uid}"
    api.create_device(device)
    seconds = BASE_MS // 1000
    api.write(device, [
        {"ts": BASE_MS + 10.4, "a": 1},
        {"ts": BASE_MS + 20.6, "a": 2},
        {"timestamp": seconds + 0.0304, "b": 3},
        {"timestamp": seconds + 0.0406, "b": 4},
    ])  # fmt: skip
    assert api.series(device, **{"from": BASE_MS, "to": BASE_MS + 100}) == {
        "a": [(BASE_MS + 10, 1.0), (BASE_MS + 21, 2.0)],
        "b": [(seconds * 1000 + 30, 3.0), (seconds * 1000 + 41, 4.0)],
    }


def test_a_row_with_more_than_1000_fields_is_a_400(api, uid):
    device = f"fields-{uid}"
    api.create_device(device)
    too_many = {f"f{index}": index for index in range(1001)}
    assert_problem(api.post(f"/api/v1/devices/{device}/telemetry", too_many), 400, "1000")
    assert api.latest(device) == {}


def test_a_body_over_1_mib_is_a_413_problem(api, uid):
    device = f"huge-{uid}"
    api.create_device(device)
    big = json.dumps([{"ts": BASE_MS + index, "value_with_a_long_name": index} for index in range(40_000)]).encode()
    assert len(big) > 1024 * 1024
    response = api.post(f"/api/v1/devices/{device}/telemetry", data=big, headers={"Content-Type": "application/json"})
    assert_problem(response, 413)
    assert api.latest(device) == {}


def test_attributes_are_merged_into_the_device(api, devices, uid):
    device = f"attr-{uid}"
    peer = devices(device, protocol=V5)
    topic = f"devices/{device}/attributes"
    assert peer.publish_reasons[peer.publish(topic, json.dumps({"firmware": "1.2.0", "site": {"room": 4}}), qos=1)] == 0
    assert peer.publish_reasons[peer.publish(topic, json.dumps({"firmware": "1.3.0", "battery": 87}), qos=1)] == 0
    assert api.device(device)["attributes"] == {"firmware": "1.3.0", "site": {"room": 4}, "battery": 87}
    # Attributes are not telemetry.
    assert api.latest(device) == {}


def test_query_range_is_from_inclusive_to_exclusive_and_defaults_to_the_last_hour(api, uid):
    device = f"range-{uid}"
    api.create_device(device)
    now = int(time.time() * 1000)
    api.write(device, [
        {"ts": BASE_MS, "a": 1, "b": 10},
        {"ts": BASE_MS + 1000, "a": 2, "b": 20},
        {"ts": BASE_MS + 2000, "a": 3},
        {"ts": now - 2 * 3600_000, "a": 4},
        {"ts": now - 30 * 60_000, "a": 5},
    ])  # fmt: skip
    assert api.series(device, fields="a", **{"from": BASE_MS, "to": BASE_MS + 2000}) == {
        "a": [(BASE_MS, 1.0), (BASE_MS + 1000, 2.0)]
    }
    assert api.series(device, fields="a", **{"from": BASE_MS + 1, "to": BASE_MS + 2001}) == {
        "a": [(BASE_MS + 1000, 2.0), (BASE_MS + 2000, 3.0)]
    }
    # Several fields, and RFC 3339 bounds.
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE_MS / 1000))
    assert api.series(device, fields="b,a", **{"from": start, "to": BASE_MS + 1500}) == {
        "b": [(BASE_MS, 10.0), (BASE_MS + 1000, 20.0)],
        "a": [(BASE_MS, 1.0), (BASE_MS + 1000, 2.0)],
    }
    # No range: the last hour.
    assert api.series(device, fields="a") == {"a": [(now - 30 * 60_000, 5.0)]}


def test_windowed_aggregates_equal_a_reference(api, uid):
    device = f"agg-{uid}"
    api.create_device(device)
    generator = random.Random(uid)
    # About 400 points over 5 minutes at irregular times, with a gap (empty windows) and
    # points exactly on window boundaries.
    points, ts = [], BASE_MS - 3000
    while ts < BASE_MS + 300_000:
        points.append((ts, round(generator.uniform(-50, 150), generator.randint(0, 6))))
        ts += generator.choice([1, 250, 777, 1000, 1234, 10_000 - ts % 10_000])
        if BASE_MS + 100_000 <= ts < BASE_MS + 140_000:
            ts = BASE_MS + 140_000
    for chunk in range(0, len(points), 100):
        api.write(device, [{"ts": t, "x": value} for t, value in points[chunk : chunk + 100]])

    # The range starts and ends mid-window.
    start, end = BASE_MS + 4321, BASE_MS + 287_654
    for every, every_ms in [("10s", 10_000), ("1m", 60_000), ("1500ms", 1500)]:
        for agg in ["avg", "min", "max", "sum", "count", "first", "last"]:
            got = api.series(device, fields="x", agg=agg, every=every, **{"from": start, "to": end})["x"]
            expected = reference_aggregate(points, start, end, every_ms, agg)
            assert len(expected) >= 4
            assert [window for window, _ in got] == [window for window, _ in expected], (agg, every)
            for (window, value), (_, reference) in zip(got, expected, strict=True):
                assert close_to(value, reference), f"{agg} every {every} at {window}: got {value}, expected {reference}"


def test_bad_queries_are_400_problems(api, uid):
    device = f"q-{uid}"
    api.create_device(device)
    path = f"/api/v1/devices/{device}/telemetry"
    assert_problem(api.get(f"{path}?agg=avg"), 400, "every")
    assert_problem(api.get(f"{path}?every=10s"), 400, "agg")
    assert_problem(api.get(f"{path}?agg=median&every=10s"), 400, "median")
    assert_problem(api.get(f"{path}?from=yesterday"), 400, "from")
    assert_problem(api.get(f"{path}?from=2000&to=1000"), 400)
    assert_problem(api.get(f"/api/v1/devices/nobody-{uid}/telemetry/latest"), 404)
