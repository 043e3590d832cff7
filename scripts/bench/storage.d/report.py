#!/usr/bin/env python3
"""Writes the storage section of docs/BENCHMARKS.md from the results of scripts/bench/storage.

Reads `<results>/<engine>.json` (one JSON object each, the last line of the engine's
output), `<results>/<engine>.command` and the machine facts the script exports, builds the
markdown section (machine, dataset, exact commands, a table per metric with ratios to
Fleetwire, the issue's targets with PASS/MISS, then the hand-written notes of
`findings.md`), and puts it between `<!-- storage:start -->` and `<!-- storage:end -->`,
creating the section after "Device API (wrk)" if the markers are missing.

    report.py --results DIR --output docs/BENCHMARKS.md [--print]
"""

import argparse
import datetime
import json
import os
import pathlib
import re
import sys

ENGINES = ["fleetwire", "postgresql", "sqlite", "duckdb"]
TITLES = {"fleetwire": "Fleetwire", "postgresql": "PostgreSQL", "sqlite": "SQLite", "duckdb": "DuckDB"}
START, END = "<!-- storage:start -->", "<!-- storage:end -->"
HEADING = "## Storage side by side (PostgreSQL, SQLite, DuckDB, Fleetwire)"


def load(results, engine):
    path = results / f"{engine}.json"
    try:
        return json.loads(path.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def text(results, name):
    path = results / name
    return path.read_text().strip() if path.exists() else ""


def number(value, digits=0):
    return "—" if value is None else f"{value:,.{digits}f}"


def micros(value):
    """A latency in µs with sensible precision."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def ratio(value, base):
    if value is None or not base:
        return "—"
    quotient = value / base
    if quotient >= 100:
        return f"{quotient:,.0f}x"
    if quotient >= 10:
        return f"{quotient:.1f}x"
    return f"{quotient:.2f}x"


def date(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d")


def same(a, b, tolerance=1e-9):
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def build(results, environment):
    data = {engine: load(results, engine) for engine in ENGINES}
    fleetwire = data["fleetwire"]
    if fleetwire is None:
        sys.exit("report: no Fleetwire result; nothing to compare against")
    engines = [engine for engine in ENGINES if data[engine] is not None]
    missing = [engine for engine in ENGINES if data[engine] is None]
    dataset = fleetwire["dataset"]
    spec = fleetwire["query_parameters"]
    points = dataset["points"]
    is_reduced = dataset["devices"] < 100 or dataset["history_days"] < 30

    lines = []
    add = lines.append
    add(
        f"Run {environment['RUN_DATE']}{' (reduced dataset)' if is_reduced else ''} by "
        "`scripts/bench/storage`. The engines ran one after another, each alone, on the same "
        "machine, the same dataset and the same queries; every figure below comes from this one "
        "run, so compare the ratios rather than absolute times (the machine is shared)."
    )
    add("")
    add("| machine | |")
    add("|---|---|")
    add(f"| cores | {environment['MACHINE_NPROC']} |")
    add(f"| CPU | {environment['MACHINE_CPU']} |")
    add(f"| memory | {environment['MACHINE_MEMORY']} |")
    add(f"| kernel | {environment['MACHINE_KERNEL']} |")
    add(f"| disk | {environment['MACHINE_DISK']} |")
    add(f"| load average before the run | {environment['MACHINE_LOAD']} (the machine is shared) |")
    add(f"| load average after the run | {environment.get('MACHINE_LOAD_AFTER', '?')} |")
    for engine in engines:
        version = data[engine]["version"]
        if engine == "fleetwire":
            version += f" ({environment.get('FLEETWIRE_COMMIT', 'unknown commit')}), rustc {environment.get('RUSTC_VERSION', '?')}"
        add(f"| {TITLES[engine]} | {version} |")
    add(f"| clients | {environment.get('CLIENT_VERSIONS', '?')} |")
    add("")
    if missing:
        add(f"**Not measured in this run:** {', '.join(TITLES[engine] for engine in missing)} (see the script's log).")
        add("")

    history_days = dataset["history_days"]
    add(
        f"**Dataset** (deterministic, `crates/store/benches/support/signals.rs`, the simulator's "
        f"signal model): {dataset['devices']} devices × 4 fields (temperature at 0.01 °C with a daily "
        "cycle, noise and spikes; humidity at 0.1 %; battery draining at 0.01 %; door 0/1) every "
        f"second for one day ({date(dataset['fleet_start_ms'])}), plus `{dataset['history_device']}`'s "
        f"4 fields for the {history_days - 1} days before it: **{points:,} points** in "
        f"{dataset['series']} series. The other engines load it from a CSV (`device,field,ts,value`, "
        f"`ts` in ms since the epoch, {fleetwire['csv']['bytes'] / 2**20:,.0f} MiB) sorted by "
        "(device, field, ts), their best case; Fleetwire is written in arrival order (second by "
        "second, every device), as devices send it."
    )
    add("")
    add("**Queries**, with the same parameters on every engine, measured on warm caches after 5 "
        "warm-up runs, up to "
        f"{environment.get('REPETITIONS', '200')} runs or {environment.get('BUDGET_S', '20')} s per "
        "query (at least 10 runs):")
    add("")
    add(f"- *latest*: newest value of each of the 4 fields of `{spec['latest']['device']}` (4 rows);")
    add(f"- *range*: `{spec['range']['device']}` {spec['range']['field']} over "
        f"{date(spec['range']['from_ms'])}, raw (86,400 rows);")
    add(f"- *aggregate*: hourly average of `{spec['aggregate']['device']}` {spec['aggregate']['field']} "
        f"over {history_days} days ({history_days * 24} rows from {history_days * 86_400:,} points).")
    add("")
    mismatches = []
    for engine in engines[1:]:
        for name in ("latest", "range", "aggregate"):
            mine = data[engine]["queries"][name]["check"]
            base = fleetwire["queries"][name]["check"]
            if mine["rows"] != base["rows"] or not same(mine["sum"], base["sum"]):
                mismatches.append(f"{TITLES[engine]} {name}: {mine} vs Fleetwire {base}")
    if mismatches:
        add("**RESULTS DIFFER between engines:** " + "; ".join(mismatches))
    else:
        add("Every engine returned the same answers (row counts equal, sums of the values equal "
            "to 1e-9 relative).")
    add("")

    add("How each engine stores the data and how it is loaded:")
    add("")
    add("- **Fleetwire**: `Store::open` with the default configuration (`sync` durability: every "
        "`write` returns after its fsync; 1-day partitions), one thread calling `Store::write` with "
        "5,000-point batches, then `flush` and `compact` (included in the ingest time).")
    if "postgresql" in engines:
        pg = data["postgresql"]
        settings = ", ".join(f"{key}={value}" for key, value in pg["settings"].items())
        add(f"- **PostgreSQL**: `{pg['schema']}` with a B-tree on (device, field, ts). A throwaway "
            f"server (initdb in a temporary directory, Unix socket) with {settings}. `COPY` runs in the "
            "transaction that creates the table, so with `wal_level=minimal` it skips the WAL and "
            "fsyncs the table at commit (PostgreSQL's fastest durable bulk load); then `CREATE INDEX` "
            "and `ANALYZE`. Each prepared query runs in its fastest `plan_cache_mode`: latest "
            "`force_generic_plan` (no planning per run), range `auto`, aggregate `force_custom_plan` (the "
            "generic plan cannot see the time range and sorts every point without parallel workers, "
            "about 1.6x slower). Queries timed as prepared statements executed through libpq (psycopg's `pq` "
            "layer) on one connection kept open over the Unix socket, binary results left in libpq's "
            "buffer unconverted: the server's work plus one local round trip. Through a psycopg cursor "
            "(a Python tuple per row) they take longer; see below.")
    if "sqlite" in engines:
        sqlite = data["sqlite"]
        add(f"- **SQLite**: `{sqlite['schema']}` (the clustered B-tree on (device, field, ts) is the "
            f"table: no separate index to keep), {sqlite['settings']}. A small C program "
            "(`scripts/bench/storage.d/sqlite_bench.c`) reads the CSV and inserts with one prepared "
            "statement, 5,000 rows per transaction (each commit fsyncs the WAL, like Fleetwire's "
            "`sync` writes), then checkpoints; it times the queries in process through the C API, so "
            "no Python sits between SQLite and the timings.")
    if "duckdb" in engines:
        duck = data["duckdb"]
        add(f"- **DuckDB**: `{duck['schema']}`, loaded with `COPY ... FROM` the CSV, then `CHECKPOINT`. "
            "No index: DuckDB's ART indexes are meant for point lookups and filters that keep under "
            "0.1 % of the rows (the range keeps 0.2 %, the aggregate 6 %); the rows are in (device, "
            "field, ts) order, so the zone maps DuckDB keeps on every column skip other series' row "
            "groups. Queries from Python in process; "
            "the 86,400-row range is fetched as NumPy arrays (no Python object per row).")
    add("")

    fw_ingest = fleetwire["ingest"]["points_per_sec"]
    add("### At a glance")
    add("")
    add("Medians; in brackets the engine's figure divided by Fleetwire's.")
    add("")
    add("| engine | ingest points/s | bytes per point | latest µs | range µs | aggregate µs |")
    add("|---|---:|---:|---:|---:|---:|")
    for engine in engines:
        result = data[engine]
        cells = [
            f"{number(result['ingest']['points_per_sec'])} ({ratio(result['ingest']['points_per_sec'], fw_ingest)})",
            f"{result['size']['bytes_per_point']:.3f} ({ratio(result['size']['bytes'], fleetwire['size']['bytes'])})",
        ]
        for name in ("latest", "range", "aggregate"):
            median = result["queries"][name]["median_us"]
            cells.append(f"{micros(median)} ({ratio(median, fleetwire['queries'][name]['median_us'])})")
        add(f"| {TITLES[engine]} | " + " | ".join(cells) + " |")
    add("")
    add("### Ingest")
    add("")
    add("Points per second until the data is durable, in its final on-disk form and queryable. "
        "× Fleetwire is the engine's figure divided by Fleetwire's (below 1: slower).")
    add("")
    add("| engine | how | seconds | points/s | × Fleetwire |")
    add("|---|---|---:|---:|---:|")
    for engine in engines:
        ingest = data[engine]["ingest"]
        method = re.sub(r"\b\d{4,}\b", lambda match: f"{int(match.group()):,}", ingest["method"])
        add(f"| {TITLES[engine]} | {method} | {ingest['seconds']:.1f} | "
            f"**{number(ingest['points_per_sec'])}** | {ratio(ingest['points_per_sec'], fw_ingest)} |")
    add("")
    details = []
    ingest = fleetwire["ingest"]
    details.append(
        f"Fleetwire: the writes took {ingest['write_seconds']:.1f} s ({number(ingest['write_points_per_sec'])} "
        f"points/s; per 5,000-point batch median {micros(ingest['batch_latency']['median_us'])} µs, P99 "
        f"{micros(ingest['batch_latency']['p99_us'])} µs), the final flush and compaction "
        f"{ingest['finish_seconds']:.1f} s."
    )
    if "postgresql" in engines:
        ingest = data["postgresql"]["ingest"]
        details.append(
            f"PostgreSQL: COPY alone {ingest['copy_seconds']:.1f} s ({number(ingest['copy_points_per_sec'])} "
            f"points/s, {ratio(ingest['copy_points_per_sec'], fw_ingest)} Fleetwire), index "
            f"{ingest['index_seconds']:.1f} s; ANALYZE (not counted) {ingest['analyze_seconds']:.1f} s."
        )
    if "sqlite" in engines:
        ingest = data["sqlite"]["ingest"]
        details.append(
            f"SQLite: inserts {ingest['insert_seconds']:.1f} s in {ingest['batches']:,} transactions, "
            f"final checkpoint {ingest['checkpoint_seconds']:.1f} s."
        )
    if "duckdb" in engines:
        ingest = data["duckdb"]["ingest"]
        details.append(f"DuckDB: COPY {ingest['copy_seconds']:.1f} s, CHECKPOINT "
                       f"{ingest['seconds'] - ingest['copy_seconds']:.1f} s.")
    add(" ".join(details))
    add("")

    fw_bytes = fleetwire["size"]["bytes"]
    add("### Size on disk")
    add("")
    add("| engine | bytes | bytes per point | × Fleetwire | what is counted |")
    add("|---|---:|---:|---:|---|")
    for engine in engines:
        size = data[engine]["size"]
        counted = size["counted"]
        if engine == "postgresql":
            counted += f"; heap {size['table_bytes'] / 2**20:,.0f} MiB, index {size['index_bytes'] / 2**20:,.0f} MiB"
        add(f"| {TITLES[engine]} | {size['bytes']:,} | **{size['bytes_per_point']:.3f}** | "
            f"{ratio(size['bytes'], fw_bytes)} | {counted} |")
    add("")

    titles = {
        "latest": "Latest values of one device (4 fields)",
        "range": "One day of one field, raw (86,400 points)",
        "aggregate": f"{history_days} days of hourly averages of one field ({history_days * 86_400:,} points)",
    }
    for name in ("latest", "range", "aggregate"):
        base = fleetwire["queries"][name]
        add(f"### Query: {titles[name]}")
        add("")
        add("| engine | median µs | P99 µs | min µs | runs | median × Fleetwire | P99 × Fleetwire |")
        add("|---|---:|---:|---:|---:|---:|---:|")
        for engine in engines:
            query = data[engine]["queries"][name]
            add(f"| {TITLES[engine]} | **{micros(query['median_us'])}** | {micros(query['p99_us'])} | "
                f"{micros(query['min_us'])} | {query['runs']} | {ratio(query['median_us'], base['median_us'])} | "
                f"{ratio(query['p99_us'], base['p99_us'])} |")
        add("")
    if "postgresql" in engines:
        client = data["postgresql"]["client_queries"]
        queries = data["postgresql"]["queries"]
        add("PostgreSQL through a psycopg cursor (prepared, binary rows turned into Python tuples) "
            "instead of bare libpq: what a Python client adds on top of the server.")
        add("")
        add("| query | cursor median µs | cursor P99 µs | libpq median µs | cursor / libpq |")
        add("|---|---:|---:|---:|---:|")
        for name in ("latest", "range", "aggregate"):
            add(f"| {name} | {micros(client[name]['median_us'])} | {micros(client[name]['p99_us'])} | "
                f"{micros(queries[name]['median_us'])} | {ratio(client[name]['median_us'], queries[name]['median_us'])} |")
        add("")

    targets = []

    def target(name, measured, limit, is_met, p99=""):
        targets.append((name, measured, limit, is_met, p99))

    target("bytes per stored point (Fleetwire's directory / points)",
           f"{fleetwire['size']['bytes_per_point']:.3f}", "≤ 2",
           fleetwire["size"]["bytes_per_point"] <= 2.0)
    for name, limit_us, label in (
        ("latest", 50, "latest lookup"),
        ("range", 10_000, "one day of one field at 1 s (86,400 points)"),
        ("aggregate", 20_000, f"{history_days} days of hourly averages of one field"),
    ):
        query = fleetwire["queries"][name]
        limit = f"< {limit_us} µs" if limit_us < 1000 else f"< {limit_us // 1000} ms"
        p99 = f"{micros(query['p99_us'])} µs ({'within' if query['p99_us'] < limit_us else 'over'})"
        target(label, f"{micros(query['median_us'])} µs", limit, query["median_us"] < limit_us, p99)
    compared = [TITLES[engine] for engine in engines[1:]]
    target("same dataset and queries on PostgreSQL 15, SQLite, DuckDB, as ratios",
           ", ".join(compared) or "none", "all three", len(compared) == 3)

    add(f"### Targets of issue 5 (same run{', reduced dataset: the 30-day query covers ' + str(history_days) + ' days' if is_reduced else ''})")
    add("")
    add("Latency targets are judged on the median; the P99 column says whether the tail is within "
        "the target too (on a shared two-core machine the tail is mostly time spent waiting for a core).")
    add("")
    add("| target | measured (median) | P99 | required | verdict |")
    add("|---|---|---|---|---|")
    for name, measured, limit, is_met, p99 in targets:
        add(f"| {name} | {measured} | {p99 or '—'} | {limit} | **{'PASS' if is_met else 'MISS'}** |")
    add("")

    add("### Commands")
    add("")
    add("```sh")
    add(environment.get("INVOCATION", "scripts/bench/storage"))
    add("# which ran, in this order ($WORK is a temporary directory):")
    for engine in ["fleetwire", "postgresql", "sqlite", "duckdb"]:
        command = text(results, f"{engine}.command")
        if command:
            add(command)
    add("```")
    add("")
    add("<details><summary>SQL run on each engine</summary>")
    add("")
    add("```sql")
    for engine in engines[1:]:
        engine_data = data[engine]
        add(f"-- {TITLES[engine]}")
        add(engine_data["schema"] + ";")
        for statement in engine_data.get("load_sql", []):
            add(statement.replace(fleetwire["csv"]["path"], "$WORK/points.csv") + ";")
        for name in ("latest", "range", "aggregate"):
            add(f"-- {name}")
            query = engine_data["queries"][name]
            arguments = f"  -- arguments: {', '.join(query['arguments'])}" if "arguments" in query else ""
            add(query["sql"] + ";" + arguments)
        add("")
    add("```")
    add("")
    add("</details>")

    findings = pathlib.Path(__file__).with_name("findings.md")
    if findings.exists():
        add("")
        add(findings.read_text().rstrip("\n"))

    verdicts = [f"{'PASS' if is_met else 'MISS'}  {name}: {measured}{', P99 ' + p99 if p99 else ''} (required {limit})"
                for name, measured, limit, is_met, p99 in targets]
    return "\n".join(lines) + "\n", verdicts


def write(output, section):
    text = output.read_text() if output.exists() else "# Benchmarks\n"
    if START in text and END in text and text.index(START) < text.index(END):
        text = text[: text.index(START) + len(START)] + "\n" + section + text[text.index(END):]
    else:
        block = f"{HEADING}\n\n{START}\n{section}{END}\n"
        anchor = text.find("\n## Device API (wrk)")
        following = text.find("\n## ", anchor + 1) if anchor >= 0 else -1
        if following >= 0:
            text = text[: following + 1] + block + "\n" + text[following + 1:]
        else:
            text = text.rstrip("\n") + "\n\n" + block
    output.write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, type=pathlib.Path)
    parser.add_argument("--output", required=True, type=pathlib.Path)
    parser.add_argument("--print", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    section, verdicts = build(args.results, os.environ)
    (args.results / "section.md").write_text(section)
    for verdict in verdicts:
        print(verdict)
    if args.print:
        print(section)
    else:
        write(args.output, section)


if __name__ == "__main__":
    main()
