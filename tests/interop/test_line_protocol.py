"""InfluxDB v2 line protocol at POST /api/v2/write, as Telegraf's influxdb_v2 output sends
it: the device is the `device` tag, else the measurement; each field key is a series;
timestamps in the request's precision, rounded down to milliseconds; gzip bodies; string
fields skipped and said so; one malformed line refuses the whole request, naming its line."""

from __future__ import annotations

import time

import pytest

from fleet import BASE_MS, assert_problem

# A timestamp with a sub-millisecond part, in every precision.
TS_MS = BASE_MS + 123
IN_PRECISION = {
    "ns": TS_MS * 1_000_000 + 456_789,
    "us": TS_MS * 1_000 + 999,
    "ms": TS_MS,
    "s": TS_MS // 1000,
}


def test_device_tag_or_measurement_names_the_device_and_field_keys_the_series(api, uid):
    gateway, host = f"gw-{uid}", f"host-{uid}"
    lines = "\n".join([
        # What Telegraf sends: several tags, the device among them.
        f"cpu,host=h1,device={gateway},cpu=cpu-total usage_user=12.5,usage_system=3.25,usage_idle=84.25 "
        f"{BASE_MS * 10**6}",
        # No device tag: the measurement is the device. Integers, unsigned and booleans.
        f"{host},region=eu uptime=86400i,errors=3u,healthy=t,degraded=FALSE {(BASE_MS + 1000) * 10**6}",
        # A string field is skipped, the numbers of the same line are kept.
        f'{host} state="ok",load=0.75 {(BASE_MS + 2000) * 10**6}',
    ])  # fmt: skip
    skipped_before = api.metric("fleetwire_ingest_string_fields_skipped_total")
    response = api.write_lines(lines)
    assert response.status == 204, response
    assert response.headers.get("x-fleetwire-skipped-string-fields") == "1"
    assert api.metric("fleetwire_ingest_string_fields_skipped_total") == skipped_before + 1

    window = {"from": BASE_MS, "to": BASE_MS + 10_000}
    assert api.series(gateway, **window) == {
        "usage_idle": [(BASE_MS, 84.25)],
        "usage_system": [(BASE_MS, 3.25)],
        "usage_user": [(BASE_MS, 12.5)],
    }
    assert api.series(host, **window) == {
        "degraded": [(BASE_MS + 1000, 0.0)],
        "errors": [(BASE_MS + 1000, 3.0)],
        "healthy": [(BASE_MS + 1000, 1.0)],
        "load": [(BASE_MS + 2000, 0.75)],
        "uptime": [(BASE_MS + 1000, 86400.0)],
    }
    # Devices from line protocol are registered; other tags are not stored anywhere.
    assert api.device(gateway)["id"] == gateway
    assert api.get("/api/v1/devices/cpu").status == 404


@pytest.mark.parametrize("precision", ["ns", "us", "ms", "s", None])
def test_timestamps_in_each_precision_are_rounded_down_to_milliseconds(api, uid, precision):
    device = f"prec-{uid}"
    raw = IN_PRECISION[precision or "ns"]
    response = api.write_lines(f"m,device={device} v=1.5 {raw}", precision=precision)
    assert response.status == 204, response
    expected_ms = TS_MS if precision != "s" else (TS_MS // 1000) * 1000
    assert api.latest(device) == {"v": (expected_ms, 1.5)}


def test_a_line_without_timestamp_gets_the_time_of_the_request(api, uid):
    device = f"now-{uid}"
    before = int(time.time() * 1000)
    assert api.write_lines(f"m,device={device} v=2").status == 204
    after = int(time.time() * 1000)
    ts, value = api.latest(device)["v"]
    assert value == 2.0 and before - 5 <= ts <= after + 5


def test_gzip_body_escapes_comments_and_the_bearer_scheme(api, uid):
    device = f"gz-{uid}"
    lines = [f"# {1000} points, gzip'd", ""]
    lines += [
        f"m\\ 1,device={device},note=a\\,b temp\\ c={index / 8},n={index}i {(BASE_MS + index) * 10**6}"
        for index in range(1000)
    ]
    response = api.write_lines("\r\n".join(lines) + "\n", gzip_body=True, scheme="Bearer")
    assert response.status == 204, response
    stored = api.series(device, **{"from": BASE_MS, "to": BASE_MS + 1000})
    assert stored == {
        "n": [(BASE_MS + index, float(index)) for index in range(1000)],
        "temp c": [(BASE_MS + index, index / 8) for index in range(1000)],
    }


def test_a_malformed_line_refuses_the_whole_request_naming_the_line(api, uid):
    device = f"mal-{uid}"
    assert api.write_lines(f"m,device={device} v=0 {BASE_MS * 10**6}").status == 204
    accepted_before = api.metric("fleetwire_ingest_messages_accepted_total", source="line_protocol")
    rejected_before = api.metric("fleetwire_ingest_messages_rejected_total", source="line_protocol")
    cases = [
        # (body, line number named)
        (f"m,device={device} v=1 {(BASE_MS + 1) * 10**6}\nm,device={device} v= \nm,device={device} v=3", 2),
        (f"# comment\n\nm,device={device} v=1\nm,device={device},other=x v=2\nm,device={device} temp 1", 5),
        (f"m,device={device} v=1\nm,device={device} v=abc", 2),
        (f"m,device={device} v=1 1700000000000", None),  # fine in ns, but see below
        (f"m,device={device} v=1\nm,device={device} v=1.5i", 2),
        (f"m,device={device} v=1\nm,device={device} v=1 abc", 2),
        (f'm,device={device} v=1\nm,device={device} s="open', 2),
        (f"m,device={device},host v=1", 1),
    ]
    for body, line in cases:
        if line is None:
            # A millisecond timestamp sent with precision=s is out of range: refused too.
            response = api.write_lines(body, precision="s")
            line = 1
        else:
            response = api.write_lines(body)
        assert_problem(response, 400, f"line {line}:")
    assert api.series(device, **{"from": 0, "to": 32503680000000}) == {"v": [(BASE_MS, 0.0)]}
    assert api.metric("fleetwire_ingest_messages_rejected_total", source="line_protocol") == rejected_before + len(
        cases
    )
    assert api.metric("fleetwire_ingest_messages_accepted_total", source="line_protocol") == accepted_before


def test_a_body_over_32_mib_is_a_413_problem_compressed_or_not(api, uid):
    device = f"huge-{uid}"
    line = f"m,device={device} value_with_a_rather_long_field_name=1.25 {BASE_MS * 10**6}\n".encode()
    body = line * (32 * 1024 * 1024 // len(line) + 1)
    assert_problem(api.write_lines(body, gzip_body=True), 413, "decompressed")
    assert_problem(api.write_lines(body), 413)
    assert api.get(f"/api/v1/devices/{device}").status == 404


def test_writing_needs_an_operator_token(api, uid):
    device = f"auth-{uid}"
    line = f"m,device={device} v=1 {BASE_MS * 10**6}"
    assert_problem(api.write_lines(line, token="fw_unknown"), 401)
    response = api.call("POST", "/api/v2/write?bucket=b", data=line.encode(), token=None)
    assert_problem(response, 401)
    viewer = api.ok("POST", "/api/v1/tokens", {"name": f"viewer-{uid}", "role": "viewer"}, expect=201)["token"]
    assert_problem(api.write_lines(line, token=viewer), 403, "operator")
    assert api.get(f"/api/v1/devices/{device}").status == 404
