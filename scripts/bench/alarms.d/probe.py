"""The alarm-latency probe of scripts/bench/alarms, and the set-up it needs.

`setup` registers the simulated fleet (types and labels, so rules select by them), the
probe devices, and about a hundred rules that mostly do not fire on the simulator's
signals, plus one probe rule that every probe message trips.

`measure` sends probe messages over MQTT (QoS 0, written straight to the socket from the
sending thread: paho without its network thread) at randomized intervals, open loop,
alternating a value that raises the probe rule's alarm and one that clears it, so every
message causes a transition. A WebSocket client on `/api/v1/stream?kinds=alarm` takes
each alarm event's receive time; the probe value (unique per message) in the alarm's
`values` or `clear_values` names the message it answers. Latency = receive time minus
the time taken just before the publish call, on the same monotonic clock. A second
WebSocket client on `kinds=telemetry&devices=<probes>` times the same messages to the
telemetry event, which splits the path in two (ingest and write; rules, actions and the
registry). What the probe itself adds is measured too: the publish call, and the time
from the socket turning readable to the event being parsed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import resource
import select
import sys
import threading
import time
import urllib.parse

import paho.mqtt.client as mqtt
import websocket

SITES = ["north", "south", "east", "west"]
TYPES = ["sensor", "gateway", "meter"]
PROBE_TYPE = "probe"
PROBE_RULE = "probe-alarm"
# A raise value is RAISE_BASE + n, a clear value -(RAISE_BASE + n): unique per message.
RAISE_BASE = 1_000_000
# Sent once per probe device before measuring, to close an alarm left open.
RESET_VALUE = -(RAISE_BASE - 1)


class Api:
    """A keep-alive HTTP connection to the Fleetwire API with the admin token."""

    def __init__(self, base: str, token: str):
        parsed = urllib.parse.urlsplit(base)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        self.connection.request(method, path, body=data, headers=self.headers)
        response = self.connection.getresponse()
        text = response.read()
        return response.status, (json.loads(text) if text else None)


def sim_device(prefix: str, index: int) -> dict:
    """The simulator names its devices {prefix}0001, {prefix}0002, ... (1-based)."""
    return {
        "id": f"{prefix}{index + 1:04}",
        "type": TYPES[index % len(TYPES)],
        "labels": {"site": SITES[index % len(SITES)], "fleet": "sim"},
    }


def background_rules(count: int, sim_ids: list[str]) -> list[dict]:
    """`count` rules selecting by nothing, type, site, type and site, or a list of ten
    devices, with conditions that the simulator's signals (20-24 °C plus heater spikes
    that pile up at high message rates, humidity 35-75 %, battery 60-100 %, a door open
    for about two minutes every two hours) seldom or never meet. Rules matching every
    device read only fields the probe devices never send, so they never fire on them."""
    rules = []
    for index in range(count):
        kind = index % 5
        if kind == 0:
            selector = {}
        elif kind == 1:
            selector = {"type": TYPES[index // 5 % 3]}
        elif kind == 2:
            selector = {"labels": {"site": SITES[index // 5 % 4]}}
        elif kind == 3:
            selector = {"type": TYPES[index // 5 % 3], "labels": {"site": SITES[index // 7 % 4]}}
        else:
            selector = {"devices": [sim_ids[(index * 37 + k * 101) % len(sim_ids)] for k in range(10)]}
        shape = index % 6
        if kind == 0 and shape in (0, 1, 4):
            shape = 2 + index % 2 * 3  # battery or rate(battery): fields probes never send
        rule = {"id": f"bg-{index:03}", "name": f"background {index}", "match": selector, "severity": "medium"}
        if shape == 0:
            rule["condition"] = f"temperature > {200 + index}"
        elif shape == 1:
            rule["condition"] = f"humidity > {85 + index % 10} and temperature > 40"
        elif shape == 2:
            rule["condition"] = f"battery < {10 + index % 5}"
            rule["clear"] = f"battery > {15 + index % 5}"
        elif shape == 3:
            rule["condition"] = "door_open == true"
            rule["for"] = "10m"
        elif shape == 4:
            rule["condition"] = "abs(delta(temperature)) > 11.99"
        else:
            rule["condition"] = f"rate(battery) < -{5 + index % 3}"
        rule["actions"] = [{"type": "alarm"}]
        rules.append(rule)
    return rules


def setup(args) -> None:
    api = Api(args.api, args.token)
    sim_ids = []
    for index in range(args.sim_devices):
        device = sim_device(args.sim_prefix, index)
        status, body = api.call("POST", "/api/v1/devices", device)
        if status != 201:
            sys.exit(f"creating device {device['id']}: HTTP {status}: {body}")
        sim_ids.append(device["id"])
    for index in range(args.probes):
        device = {"id": f"{args.probe_prefix}{index + 1}", "type": PROBE_TYPE, "labels": {"site": "lab"}}
        status, body = api.call("POST", "/api/v1/devices", device)
        if status != 201:
            sys.exit(f"creating device {device['id']}: HTTP {status}: {body}")
    rules = background_rules(args.rules - 1, sim_ids)
    rules.append(
        {
            "id": PROBE_RULE,
            "name": "probe",
            "match": {"type": PROBE_TYPE},
            "condition": f"temperature > {RAISE_BASE // 2}",
            "clear": f"temperature < -{RAISE_BASE // 2}",
            "severity": "high",
            "actions": [{"type": "alarm"}],
        }
    )
    for rule in rules:
        status, body = api.call("POST", "/api/v1/rules", rule)
        if status != 201:
            sys.exit(f"creating rule {rule['id']}: HTTP {status}: {body}")
    # How many rules each simulated device matches (what the engine evaluates per message).
    matching = []
    for index in range(args.sim_devices):
        device = sim_device(args.sim_prefix, index)
        count = 0
        for rule in rules:
            match = rule["match"]
            if "devices" in match and device["id"] not in match["devices"]:
                continue
            if "type" in match and match["type"] != device["type"]:
                continue
            if any(device["labels"].get(k) != v for k, v in match.get("labels", {}).items()):
                continue
            count += 1
        matching.append(count)
    summary = {
        "sim_devices": args.sim_devices,
        "probes": args.probes,
        "rules": len(rules),
        "matching_rules_per_sim_message": sum(matching) / max(1, len(matching)),
        "rules_by_selector": {
            "every device": sum(1 for r in rules if not r["match"]),
            "type": sum(1 for r in rules if set(r["match"]) == {"type"}),
            "label": sum(1 for r in rules if set(r["match"]) == {"labels"}),
            "type and label": sum(1 for r in rules if set(r["match"]) == {"type", "labels"}),
            "device list": sum(1 for r in rules if "devices" in r["match"]),
        },
        "examples": [rules[i] for i in (0, 1, 2, 3, 4, 9, 10, 15)] + [rules[-1]],
    }
    print(json.dumps(summary))


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(values_ns: list[int]) -> dict:
    values = [v / 1e6 for v in values_ns]
    return {
        "count": len(values),
        "p50_ms": percentile(values, 0.50),
        "p90_ms": percentile(values, 0.90),
        "p99_ms": percentile(values, 0.99),
        "p999_ms": percentile(values, 0.999),
        "max_ms": max(values) if values else None,
        "mean_ms": sum(values) / len(values) if values else None,
    }


class StreamReader(threading.Thread):
    """Reads one WebSocket stream; for every text frame, notes when its socket turned
    readable and when the frame was parsed, and hands the event to `on_event`."""

    def __init__(self, url: str, on_event):
        super().__init__(daemon=True)
        self.ws = websocket.create_connection(url, timeout=10, enable_multithread=False)
        self.ws.sock.settimeout(None)
        self.on_event = on_event
        self.stopping = False
        self.error = None

    def run(self):
        sock = self.ws.sock
        try:
            while not self.stopping:
                readable, _, _ = select.select([sock], [], [], 0.2)
                if not readable:
                    continue
                ready = time.perf_counter_ns()
                opcode, frame = self.ws.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_PING:
                    self.ws.pong(frame.data)
                    continue
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.error = f"the server closed the stream: {frame.data!r}"
                    return
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                event = json.loads(frame.data)
                done = time.perf_counter_ns()
                self.on_event(event, ready, done)
        except Exception as error:  # noqa: BLE001 - reported in the result
            if not self.stopping:
                self.error = repr(error)


def measure(args) -> None:
    sys.setswitchinterval(0.0005)
    rng = random.Random(args.seed)
    host, port = args.mqtt.rsplit(":", 1)
    probes = [f"{args.probe_prefix}{index + 1}" for index in range(args.probes)]
    total = args.warmup + args.transitions

    sent_ns = [0] * total
    publish_ns = [0] * total
    alarm_ready = [0] * total
    alarm_done = [0] * total
    telemetry_ready = [0] * total
    kinds = [""] * total
    background_alarms = [0]
    unexpected = []
    lock = threading.Lock()

    def sequence_of(value) -> int | None:
        if value is None:
            return None
        index = int(round(abs(value))) - RAISE_BASE
        return index if 0 <= index < total else None

    def on_alarm(event, ready, done):
        alarm = event.get("alarm") or {}
        if alarm.get("rule_id") != PROBE_RULE:
            background_alarms[0] += 1
            return
        if alarm.get("clear_values", {}).get("temperature") == RESET_VALUE:
            return
        if alarm.get("status") == "active":
            index = sequence_of(alarm.get("values", {}).get("temperature"))
            kind = "raise"
        else:
            index = sequence_of(alarm.get("clear_values", {}).get("temperature"))
            kind = "clear"
        with lock:
            if index is None or alarm_ready[index]:
                unexpected.append(event)
                return
            alarm_ready[index], alarm_done[index], kinds[index] = ready, done, kind

    def on_telemetry(event, ready, done):
        index = sequence_of((event.get("fields") or {}).get("temperature"))
        if index is not None and not telemetry_ready[index]:
            telemetry_ready[index] = ready

    base = args.api.replace("http://", "ws://", 1).rstrip("/")
    token = urllib.parse.quote(args.token)
    alarms = StreamReader(f"{base}/api/v1/stream?kinds=alarm&token={token}", on_alarm)
    readers = [alarms]
    if args.breakdown:
        devices = ",".join(probes)
        readers.append(
            StreamReader(f"{base}/api/v1/stream?kinds=telemetry&devices={devices}&token={token}", on_telemetry)
        )
    for reader in readers:
        reader.start()

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"alarm-probe-{os.getpid()}",
        protocol=mqtt.MQTTv311,
    )
    client.connect(host, int(port), keepalive=60)
    deadline = time.monotonic() + 10
    while not client.is_connected():
        client.loop(timeout=0.1)
        if time.monotonic() > deadline:
            sys.exit("the probe's MQTT connection was not accepted")

    # Each probe device alternates raise, clear, raise, ... A clear value first (not
    # counted) closes an alarm left open by an earlier run; with none open it does nothing.
    for device in probes:
        client.publish(f"devices/{device}/telemetry", f'{{"temperature":{RESET_VALUE}}}'.encode(), qos=0)
    time.sleep(1.0)
    phase = {device: 0 for device in probes}
    last_ts = {device: 0 for device in probes}
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    lateness = []
    started = time.perf_counter_ns()
    next_at = time.perf_counter()
    interval = args.interval_ms / 1000
    for index in range(total):
        next_at += interval * (0.5 + rng.random())
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        lateness.append(time.perf_counter() - next_at)
        device = probes[index % len(probes)]
        value = RAISE_BASE + index
        if phase[device] % 2:
            value = -value
        phase[device] += 1
        # An explicit, strictly increasing data time per device: messages without `ts`
        # that arrive in one read share the server's timestamp, and the later one would
        # replace the earlier as the same sample (no transition).
        stamp = max(time.time_ns() // 1_000_000, last_ts[device] + 1)
        last_ts[device] = stamp
        payload = f'{{"ts":{stamp},"temperature":{value}}}'.encode()
        before = time.perf_counter_ns()
        result = client.publish(f"devices/{device}/telemetry", payload, qos=0)
        after = time.perf_counter_ns()
        if result.rc != mqtt.MQTT_ERR_SUCCESS:
            sys.exit(f"publishing a probe message failed: rc {result.rc}")
        sent_ns[index], publish_ns[index] = before, after - before
        if index % 50 == 49:
            client.loop(timeout=0)  # keep-alive, and drains paho's wake-up socket pair
    sending_ns = time.perf_counter_ns() - started

    wait_until = time.monotonic() + args.settle_s
    while time.monotonic() < wait_until:
        with lock:
            if all(alarm_ready[args.warmup :]):
                break
        client.loop(timeout=0.05)  # sends whatever paho still holds, answers pings
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for reader in readers:
        reader.stopping = True
    client.disconnect()

    window = range(args.warmup, total)
    alarm_latency = [alarm_done[i] - sent_ns[i] for i in window if alarm_done[i]]
    alarm_ready_latency = [alarm_ready[i] - sent_ns[i] for i in window if alarm_ready[i]]
    parse = [alarm_done[i] - alarm_ready[i] for i in window if alarm_done[i]]
    telemetry_latency = [telemetry_ready[i] - sent_ns[i] for i in window if telemetry_ready[i]]
    telemetry_to_alarm = [alarm_ready[i] - telemetry_ready[i] for i in window if alarm_ready[i] and telemetry_ready[i]]
    result = {
        "label": args.label,
        "probes": probes,
        "transitions_sent": len(window),
        "warmup_discarded": args.warmup,
        "alarm_events": len(alarm_latency),
        "missing": sum(1 for i in window if not alarm_done[i]),
        "raises": sum(1 for i in window if kinds[i] == "raise"),
        "clears": sum(1 for i in window if kinds[i] == "clear"),
        "unexpected_events": len(unexpected),
        "background_alarm_events": background_alarms[0],
        "send_rate_per_s": total / (sending_ns / 1e9),
        "send_seconds": sending_ns / 1e9,
        "interval_ms": args.interval_ms,
        "latency": summarize(alarm_latency),
        "latency_to_readable": summarize(alarm_ready_latency),
        "telemetry_latency": summarize(telemetry_latency),
        "telemetry_to_alarm": summarize(telemetry_to_alarm),
        "probe_publish_call": summarize(publish_ns[args.warmup :]),
        "probe_parse": summarize(parse),
        "probe_send_lateness": summarize([int(x * 1e9) for x in lateness]),
        "probe_cpu_s": (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime),
        "reader_errors": [reader.error for reader in readers if reader.error],
        "missing_detail": [
            {"index": i, "device": probes[i % len(probes)], "expected": "raise" if (i // len(probes)) % 2 == 0 else "clear",
             "telemetry_seen": bool(telemetry_ready[i])}
            for i in window if not alarm_done[i]
        ][:20],
        "unexpected_detail": unexpected[:5],
        "worst": sorted(
            ({"index": i, "kind": kinds[i], "ms": (alarm_done[i] - sent_ns[i]) / 1e6,
              "telemetry_ms": (telemetry_ready[i] - sent_ns[i]) / 1e6 if telemetry_ready[i] else None}
             for i in window if alarm_done[i]),
            key=lambda row: -row["ms"],
        )[:10],
    }
    if args.raw:
        with open(args.raw, "w") as out:
            for i in window:
                out.write(f"{i} {kinds[i] or '-'} {sent_ns[i]} {publish_ns[i]} {telemetry_ready[i]} {alarm_ready[i]} {alarm_done[i]}\n")
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("setup", "measure"):
        sub = commands.add_parser(name)
        sub.add_argument("--api", required=True, help="base URL of the HTTP API")
        sub.add_argument("--token", required=True)
        sub.add_argument("--probes", type=int, default=4)
        sub.add_argument("--probe-prefix", default="probe-")
    setup_parser = commands.choices["setup"]
    setup_parser.add_argument("--sim-devices", type=int, default=1000)
    setup_parser.add_argument("--sim-prefix", default="sim-")
    setup_parser.add_argument("--rules", type=int, default=100, help="rules in all, the probe rule included")
    measure_parser = commands.choices["measure"]
    measure_parser.add_argument("--mqtt", required=True, help="HOST:PORT of the MQTT listener")
    measure_parser.add_argument("--transitions", type=int, default=5000)
    measure_parser.add_argument("--warmup", type=int, default=100, help="first transitions not counted")
    measure_parser.add_argument("--interval-ms", type=float, default=10.0, help="mean time between probe messages")
    measure_parser.add_argument("--settle-s", type=float, default=10.0)
    measure_parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True)
    measure_parser.add_argument("--label", default="")
    measure_parser.add_argument("--seed", type=int, default=6)
    measure_parser.add_argument("--raw", help="write one line per transition here")
    args = parser.parse_args()
    {"setup": setup, "measure": measure}[args.command](args)


if __name__ == "__main__":
    main()
