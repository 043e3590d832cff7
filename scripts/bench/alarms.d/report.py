"""Writes the markdown section of scripts/bench/alarms from its results directory."""

from __future__ import annotations

import json
import os
import pathlib
import re

results = pathlib.Path(os.environ["RESULTS"])
env = os.environ
TARGET_P99_MS = 10.0
TARGET_RATE = 50_000
TARGET_EVALUATIONS = 1_000_000


def read(name: str) -> str | None:
    path = results / name
    return path.read_text().strip() if path.exists() else None


def load_json(name: str):
    text = read(name)
    return json.loads(text.splitlines()[-1]) if text else None


def metrics(name: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in (read(name) or "").splitlines():
        key, _, value = line.rpartition(" ")
        try:
            values[key] = values.get(key, 0.0) + float(value)
        except ValueError:
            pass
    return values


def counter(values: dict[str, float], prefix: str) -> float:
    return sum(value for key, value in values.items() if key.startswith(prefix))


def window(label: str) -> dict:
    """What happened on the server (and the simulator) during one probe run."""
    started, ended = float(read(f"{label}.started")), float(read(f"{label}.ended"))
    seconds = ended - started
    before, after = metrics(f"{label}.metrics-before"), metrics(f"{label}.metrics-after")
    accepted = counter(after, 'fleetwire_ingest_messages_accepted_total{source="mqtt"') - counter(
        before, 'fleetwire_ingest_messages_accepted_total{source="mqtt"'
    )
    writes = counter(after, "fleetwire_store_writes_total") - counter(before, "fleetwire_store_writes_total")
    write_seconds = counter(after, "fleetwire_store_write_seconds_total") - counter(
        before, "fleetwire_store_write_seconds_total"
    )
    points = counter(after, "fleetwire_store_points_written_total") - counter(
        before, "fleetwire_store_points_written_total"
    )

    def cpu(kind: str):
        first, last = load_json(f"{label}.{kind}-cpu-before"), load_json(f"{label}.{kind}-cpu-after")
        if not first or not last:
            return None, {}, {}
        threads: dict[str, float] = {}
        waits: dict[str, list[float]] = {}
        for name, used in last["threads"].items():
            group = re.sub(r"[-_]?\d*#\d+$", "", name)
            threads[group] = threads.get(group, 0.0) + used - first["threads"].get(name, 0.0)
            if name in first["threads"]:
                waits.setdefault(group, []).append(last["waits"][name] - first["waits"][name])
        return (
            (last["total"] - first["total"]) / seconds,
            {k: v / seconds for k, v in threads.items()},
            {k: sum(v) / len(v) / seconds for k, v in waits.items()},
        )

    def machine():
        # The `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal ...
        # Returns the share of the CPU time the host took (steal) and the cores the whole
        # machine kept busy (every process, interrupts and softirqs), per second.
        first, last = read(f"{label}.stat-before"), read(f"{label}.stat-after")
        if not first or not last:
            return None, None
        ticks = [int(b) - int(a) for a, b in zip(first.split()[1:9], last.split()[1:9])]
        if not sum(ticks):
            return None, None
        busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
        return ticks[7] / sum(ticks), busy / os.sysconf("SC_CLK_TCK") / seconds

    server_cpu, server_threads, server_waits = cpu("server")
    sim_cpu, _, _ = cpu("sim")
    stolen, busy = machine()
    return {
        "seconds": seconds,
        "accepted_per_s": accepted / seconds,
        "points_per_s": points / seconds,
        "writes_per_s": writes / seconds,
        "mean_write_ms": 1000 * write_seconds / writes if writes else None,
        "server_cpu": server_cpu,
        "server_threads": server_threads,
        "server_waits": server_waits,
        "sim_cpu": sim_cpu,
        "stolen": stolen,
        "busy": busy,
        "load_before": read(f"{label}.load-before"),
        "load_after": read(f"{label}.load-after"),
    }


def ms(value) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def pct(value) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def criterion() -> tuple[list[tuple[str, str, str]], str | None]:
    text = read("criterion.out") or ""
    rows, note = [], None
    name = None
    for line in text.splitlines():
        stripped = line.strip()
        if match := re.match(r"^(evaluate/fleet_round_1000_devices): (\d+) rule evaluations per round \(([\d.]+) matching", stripped):
            note = f"{int(match.group(2)):,} rule evaluations per fleet round ({match.group(3)} matching rules per message)"
            continue
        if re.match(r"^[a-z_]+/[a-z0-9_]+$", stripped):
            name = stripped
            continue
        if name and (match := re.match(r"^(?:\S+\s+)?time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", stripped)):
            rows.append([name, match.group(1), ""])
            continue
        if name and rows and rows[-1][0] == name and (match := re.match(r"^thrpt:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", stripped)):
            value, unit = float(match.group(1)), match.group(2)
            scale = {"elem/s": 1, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}.get(unit, 1)
            rows[-1][2] = value * scale
    return rows, note


labels = env["LABEL_LIST"].split()
runs = {label: load_json(f"{label}.json") for label in labels}
windows = {label: window(label) for label in labels if runs[label]}
setup = load_json("setup.json")


def devices_of(label: str) -> int:
    """`loaded-1000-nice19` → 1000."""
    return int(label.split("-")[1])


def priority_of(label: str) -> str:
    """`loaded-1000-nice19` → "simulator at nice 19"; `loaded-1000-idle` → SCHED_IDLE."""
    priority = label.split("-")[2]
    if priority == "idle":
        return "simulator at SCHED_IDLE"
    nice = int(priority.removeprefix("nice"))
    return "simulator at the server's priority" if nice == 0 else f"simulator at nice {nice}"


def background_rate(label: str) -> float:
    result = runs[label]
    probe_rate = result["transitions_sent"] / result["send_seconds"] if result else 0
    return windows[label]["accepted_per_s"] - probe_rate


def title(label: str) -> str:
    if label == "idle":
        return "no background load"
    return f"{devices_of(label):,} devices × {RATE // devices_of(label):,} msgs/s, {priority_of(label)}"


RATE = int(env["RATE"])

lines: list[str] = []
add = lines.append
add(
    f"Run {env['RUN_DATE']}{' (quick mode: reduced counts)' if env.get('QUICK') else ''} by `scripts/bench/alarms`. "
    "One release `fleetwire serve` (default configuration: `sync` durability, SQLite registry) on loopback; "
    "the load generator, the probe and the server share the machine's cores, so their CPU use is listed with every row. "
    "Devices would not take CPU from the server; the simulator standing in for them does, so it mostly runs at nice 19 "
    "(it gets the CPU the server and the probe leave, and the accepted rate shows it still sent the full load), "
    "once at SCHED_IDLE (it runs only when no other thread wants a CPU, and a server thread that wakes takes the CPU "
    "from it at once, where a nice 19 task may keep it for the rest of its slice), "
    "and once at the server's own priority (both compete for the two cores). "
    "The machine is a virtual one: *stolen* is the share of its CPU time the host gave to other guests while this "
    "probe ran (`steal` in `/proc/stat`), time the server was ready to run and could not. "
    "*Rest of the machine* is the CPU the machine kept busy (`/proc/stat`) beyond the server, the simulator and the "
    "probe: other processes, and interrupt and softirq time the kernel counts apart from any process; "
    "a large figure means something else competed for the cores during that row."
)
add("")
add("| machine | |")
add("|---|---|")
add(f"| cores | {env['MACHINE_NPROC']} |")
add(f"| CPU | {env['MACHINE_CPU']} |")
add(f"| memory | {env['MACHINE_MEMORY']} |")
add(f"| kernel | {env['MACHINE_KERNEL']} |")
add(f"| disk | {env['MACHINE_DISK']} (the data directory's file system) |")
add(f"| load average before the run | {env['MACHINE_LOAD_BEFORE']} (the machine is shared) |")
add(f"| load average after the run | {env['MACHINE_LOAD_AFTER']} |")
add(f"| fleetwire | {env['FLEETWIRE_VERSION']}, {env['RUSTC_VERSION']} |")
add(f"| probe | {env['PYTHON_VERSIONS']} |")
add("")
if setup:
    selectors = ", ".join(f"{count} by {name}" for name, count in setup["rules_by_selector"].items())
    add(
        f"**Set-up.** {setup['sim_devices']:,} simulated devices registered through the API with a type "
        f"(sensor, gateway, meter) and labels (`site`: north, south, east, west); {setup['probes']} probe devices "
        f"of type `probe`. {setup['rules']} rules: {selectors}; each simulated message is evaluated against "
        f"{setup['matching_rules_per_sim_message']:.1f} rules on average. The background rules test thresholds the "
        "simulator's signals seldom or never cross (temperature above 200 °C, humidity above 85 % with temperature above 40, "
        "battery under 10 %, a door open for 10 minutes, a temperature jump of 12 °C between two messages, "
        "a battery falling 5 %/s); rules that match every device read only fields probe devices never send. "
        f"The probe rule: `match` type `probe`, `temperature > {500000}`, `clear` `temperature < -{500000}`, action alarm."
    )
    add("")
add(
    f"**Probe.** Python (paho-mqtt without its network thread, so `publish` writes to the socket from the "
    f"calling thread; websocket-client). It publishes QoS 0 probe messages with an explicit, increasing `ts` on `devices/probe-N/telemetry`, "
    f"round robin over the probe devices, open loop at random intervals averaging {env['INTERVAL_MS']} ms, each "
    "value alternately above the condition and below the clear threshold, so every message raises or clears an "
    "alarm. The value (unique per message) comes back in the alarm event's `values` or `clear_values`. Latency is "
    "the time the event was parsed minus the time taken just before the publish call, on the same monotonic clock. "
    "A second stream (`kinds=telemetry&devices=probe-1,...`) times the same messages to their telemetry event, "
    "which splits the path. The first 100 transitions of each run are not counted."
)
add("")
add("```sh")
add(read("commands") or "")
add("```")
add("")
add("### Publish → alarm event on the stream")
add("")
add("| run | background load at the server | transitions measured | P50 ms | P99 ms | P99.9 ms | max ms | missing | server CPU | generator CPU | probe CPU | rest of the machine | stolen | load average (start → end) |")
add("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for label in labels:
    result, win = runs[label], windows.get(label)
    if not result or not win:
        add(f"| {title(label)} | failed | | | | | | | | | | | | |")
        continue
    latency = result["latency"]
    background = "none" if label == "idle" else f"{background_rate(label):,.0f} msgs/s ({win['points_per_s']:,.0f} points/s), QoS {env['QOS']}"
    probe_cpu = result["probe_cpu_s"] / result["send_seconds"] if result["send_seconds"] else None
    rest = None
    if win["busy"] is not None and win["server_cpu"] is not None and probe_cpu is not None:
        rest = max(0.0, win["busy"] - win["server_cpu"] - (win["sim_cpu"] or 0.0) - probe_cpu)
    add(
        f"| {title(label)} | {background} | {latency['count']:,} ({result['raises']:,} raised, {result['clears']:,} cleared) "
        f"| **{ms(latency['p50_ms'])}** | **{ms(latency['p99_ms'])}** | **{ms(latency['p999_ms'])}** | {ms(latency['max_ms'])} "
        f"| {result['missing']} | {pct(win['server_cpu'])} | {pct(win['sim_cpu'])} | {pct(probe_cpu)} | {pct(rest)} | {pct(win['stolen'])} "
        f"| {win['load_before']} → {win['load_after']} |"
    )
for label in labels:
    result = runs[label]
    if result and (result["missing"] or result["reader_errors"]):
        detail = "; ".join(result["reader_errors"])
        add("")
        add(f"{title(label)}: {result['missing']} transitions had no alarm event within {10} s of the last probe message"
            + (f"; stream client errors: {detail}" if detail else "") + ".")
add("")
add("Where the time goes (same runs). The telemetry event leaves the event hub once its write group is in the log "
    "(before its fsync); "
    "the alarm event after the rules thread, the actions thread and the registry's write. The two are read by two "
    "WebSocket clients of the probe, so their difference is only indicative (it can even be negative).")
add("")
add("| part | run | P50 ms | P99 ms | P99.9 ms | max ms |")
add("|---|---|---:|---:|---:|---:|")
for key, part_title in (
    ("telemetry_latency", "publish → telemetry event on the stream (ingest, log append of the write group (the fsync is not waited for), event hub, WebSocket)"),
    ("telemetry_to_alarm", "telemetry event → alarm event (rules, actions, registry write, event hub, WebSocket)"),
    ("probe_publish_call", "probe: the publish call itself (counted in the latency)"),
    ("probe_parse", "probe: socket readable → event parsed (counted in the latency)"),
):
    for label in labels:
        result = runs[label]
        if not result:
            continue
        part = result[key]
        add(f"| {part_title} | {title(label)} | {ms(part['p50_ms'])} | {ms(part['p99_ms'])} | {ms(part['p999_ms'])} | {ms(part['max_ms'])} |")
add("")
for label in labels:
    result, win = runs[label], windows.get(label)
    if label == "idle" or not result or not win:
        continue
    threads = sorted(win["server_threads"].items(), key=lambda item: -item[1])
    shown = ", ".join(f"`{name}` {pct(share)}" for name, share in threads if share >= 0.005)
    waiting = ", ".join(
        f"`{name}` {pct(win['server_waits'].get(name))}" for name, share in threads if share >= 0.005 and name in win["server_waits"]
    )
    add(
        f"{title(label)}, over the {win['seconds']:.0f} s of the probe run: the server accepted "
        f"{win['accepted_per_s']:,.0f} MQTT messages/s (the probe's included) and wrote "
        f"{win['points_per_s']:,.0f} points/s in {win['writes_per_s']:,.0f} store writes/s "
        f"(mean {ms(win['mean_write_ms'])} ms each, fsync included); server CPU by thread: {shown}. "
        f"Share of the time a thread was runnable but waiting for a CPU (per thread, from `schedstat`): {waiting}. "
        f"{result['background_alarm_events']:,} alarm events of background rules reached the stream during the run."
    )
    sim = load_json(f"{label}.sim")
    if sim:
        add(
            f"The simulator over its whole run ({sim['elapsed_s']:.0f} s, ramp-up and warm-up included) published "
            f"{sim['published']:,} messages ({sim['published'] / sim['elapsed_s']:,.0f}/s), {sim['errors']} errors, "
            f"{sim['reconnects']} reconnects."
        )
    add("")

rows, note = criterion()
if rows:
    add("### Rule engine (criterion)")
    add("")
    add("```sh")
    add("cargo bench -p fleetwire-rules --bench rules -- --warm-up-time 1 --measurement-time 3")
    add("```")
    add("")
    add(f"Load average {read('criterion.load-before')} before, {read('criterion.load-after')} after (criterion measures on one thread; the machine was shared as above).")
    add("")
    add("| case | time per iteration | rule evaluations/s |")
    add("|---|---|---:|")
    for name, time_text, rate in rows:
        add(f"| `{name}` | {time_text} | {'' if rate == '' else f'{rate:,.0f}'} |")
    if note:
        add("")
        add(f"`fleet_round_1000_devices`: {note}.")
    add("")

targets = []
for label in labels:
    result = runs[label]
    if label == "idle" or not result:
        continue
    p99 = result["latency"]["p99_ms"]
    rate = background_rate(label)
    reached = rate >= 0.97 * TARGET_RATE
    verdict = "PASS" if p99 is not None and p99 < TARGET_P99_MS and reached and result["missing"] == 0 else "MISS"
    if not reached:
        verdict += f" (background load {rate:,.0f} msgs/s, short of {TARGET_RATE:,})"
    targets.append(
        (f"publish → alarm event P99 at 50,000 msgs/s, {title(label)}", f"{ms(p99)} ms at {rate:,.0f} msgs/s", f"< {TARGET_P99_MS:g} ms", verdict)
    )
for row in rows:
    if row[0].startswith("evaluate/") and row[2] != "":
        targets.append(
            (f"rule evaluations/s, one core (`{row[0]}`)", f"{row[2]:,.0f}", f"≥ {TARGET_EVALUATIONS:,}",
             "PASS" if row[2] >= TARGET_EVALUATIONS else "MISS")
        )
if targets:
    add("### Targets of issue 6 (same run)")
    add("")
    add("| target | measured | required | verdict |")
    add("|---|---|---|---|")
    for name, measured, required, verdict in targets:
        add(f"| {name} | {measured} | {required} | **{verdict}** |")
    add("")

findings = pathlib.Path(env["FINDINGS"])
if findings.exists():
    add(findings.read_text().rstrip("\n"))
    add("")

print("\n".join(lines).rstrip("\n"))
for name, measured, required, verdict in targets:
    print(f"{verdict.split()[0]:4}  {name}: {measured} (required {required})", file=__import__("sys").stderr)
