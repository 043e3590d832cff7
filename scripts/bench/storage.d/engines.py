#!/usr/bin/env python3
"""PostgreSQL and DuckDB sides of scripts/bench/storage.

Each subcommand loads the CSV written by the `storage_compare` example, runs the three
queries whose parameters that example printed (its JSON result is `--params`), and prints
one JSON object in the shape of the Fleetwire result:

    postgresql --host SOCKET_DIR --port PORT --csv CSV --params fleetwire.json
    duckdb --database FILE --csv CSV --params fleetwire.json

Timings follow the example's rules: a warm-up of 5 runs, then up to `--repetitions` runs,
stopping once `--budget-s` seconds have passed (but never before 10 runs).
"""

import argparse
import json
import math
import os
import re
import statistics
import sys
import time

WARM_UP_RUNS = 5
MIN_RUNS = 10


def log(message):
    print(message, file=sys.stderr, flush=True)


def distribution(samples_us):
    """Median, P99 and friends of timings in microseconds (nearest-rank percentiles)."""
    ordered = sorted(samples_us)

    def percentile(fraction):
        rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered) - 1e-9)))
        return ordered[rank - 1]

    return {
        "runs": len(ordered),
        "median_us": percentile(0.5),
        "p99_us": percentile(0.99),
        "min_us": ordered[0],
        "max_us": ordered[-1],
        "mean_us": statistics.fmean(ordered),
    }


def measure(run, repetitions, budget_s):
    for _ in range(WARM_UP_RUNS):
        run()
    samples = []
    started = time.perf_counter()
    while len(samples) < max(1, repetitions) and (
        len(samples) < MIN_RUNS or time.perf_counter() - started < budget_s
    ):
        before = time.perf_counter()
        run()
        samples.append((time.perf_counter() - before) * 1e6)
    return distribution(samples)


def check(rows):
    """What every engine must agree on: row count, sum of the values, newest timestamp."""
    return {
        "rows": len(rows),
        "sum": sum(float(row[1]) for row in rows),
        "max_ts": max((int(row[0]) for row in rows), default=None),
    }


# The three queries with psycopg's named placeholders. Rows are (timestamp, value, ...).
POSTGRESQL_QUERIES = {
    # One top-1 index probe per field: the fields of a device are known to the application
    # (Fleetwire's catalog knows them too).
    "latest": (
        "SELECT p.ts, p.value, f.field FROM unnest(%(fields)s::text[]) AS f(field) "
        "CROSS JOIN LATERAL (SELECT ts, value FROM points WHERE device = %(device)s "
        "AND points.field = f.field ORDER BY ts DESC LIMIT 1) AS p"
    ),
    "range": (
        "SELECT ts, value FROM points WHERE device = %(device)s AND field = %(field)s "
        "AND ts >= %(from_ms)s AND ts < %(to_ms)s ORDER BY ts"
    ),
    "aggregate": (
        "SELECT ts / %(every_ms)s * %(every_ms)s AS hour, avg(value) FROM points "
        "WHERE device = %(device)s AND field = %(field)s AND ts >= %(from_ms)s AND ts < %(to_ms)s "
        "GROUP BY hour ORDER BY hour"
    ),
}

# How PostgreSQL plans each prepared statement, the fastest mode for each query on this
# dataset (measured: latest 31 µs generic vs 52 µs custom; aggregate 486 ms custom vs 776 ms
# generic). The generic plan of the aggregate cannot see the time range, guesses a few
# hundred rows and sorts 2.6 million points without parallel workers; the generic plan of
# `latest` is the same four index probes and saves planning. `auto` switches to the generic
# plan after five executions when it looks no worse.
PLAN_CACHE_MODES = {"latest": "force_generic_plan", "range": "auto", "aggregate": "force_custom_plan"}

DUCKDB_QUERIES = {
    # DuckDB has no B-tree for range scans; the table is in (device, field, ts) order, so
    # zone maps skip the row groups of other series.
    "latest": (
        "SELECT max(ts), arg_max(value, ts), field FROM points WHERE device = $device "
        "GROUP BY field ORDER BY field"
    ),
    "range": (
        "SELECT ts, value FROM points WHERE device = $device AND field = $field "
        "AND ts >= $from_ms AND ts < $to_ms ORDER BY ts"
    ),
    "aggregate": (
        "SELECT ts // $every_ms * $every_ms AS hour, avg(value) FROM points "
        "WHERE device = $device AND field = $field AND ts >= $from_ms AND ts < $to_ms "
        "GROUP BY hour ORDER BY hour"
    ),
}


def query_parameters(params):
    spec = params["query_parameters"]
    return {
        "latest": {"device": spec["latest"]["device"], "fields": spec["latest"]["fields"]},
        "range": {key: spec["range"][key] for key in ("device", "field", "from_ms", "to_ms")},
        "aggregate": {
            key: spec["aggregate"][key]
            for key in ("device", "field", "from_ms", "to_ms", "every_ms")
        },
    }


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


def positional(template, values):
    """psycopg's `%(name)s` placeholders as PostgreSQL's `$n`, with the text of each argument."""
    order = []

    def number(match):
        if match.group(1) not in order:
            order.append(match.group(1))
        return f"${order.index(match.group(1)) + 1}"

    sql = re.sub(r"%\((\w+)\)s", number, template)
    arguments = []
    for key in order:
        value = values[key]
        arguments.append("{" + ",".join(value) + "}" if isinstance(value, list) else str(value))
    return sql, arguments


def file_bytes(*paths):
    return sum(os.path.getsize(path) for path in paths if os.path.exists(path))


def postgresql(args, params):
    import psycopg

    points = params["dataset"]["points"]
    connection = psycopg.connect(
        host=args.host, port=args.port, user="postgres", dbname="postgres", autocommit=True
    )
    version = connection.execute("SHOW server_version").fetchone()[0]
    settings = {
        name: connection.execute(f"SHOW {name}").fetchone()[0]
        for name in (
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_level",
            "shared_buffers",
            "maintenance_work_mem",
            "work_mem",
            "max_wal_size",
            "max_parallel_workers_per_gather",
            "max_parallel_maintenance_workers",
            "jit",
        )
    }
    schema = (
        "CREATE TABLE points (device text NOT NULL, field text NOT NULL, "
        "ts bigint NOT NULL, value double precision NOT NULL)"
    )
    copy = f"COPY points FROM {sql_literal(os.path.abspath(args.csv))} (FORMAT csv, HEADER true)"
    index = "CREATE INDEX points_device_field_ts ON points (device, field, ts)"
    connection.execute("DROP TABLE IF EXISTS points")
    started = time.perf_counter()
    # Created in the loading transaction, so with wal_level=minimal COPY skips the WAL and
    # the table's files are fsynced at commit instead: PostgreSQL's fastest durable load.
    with connection.transaction():
        connection.execute(schema)
        connection.execute(copy)
    copy_seconds = time.perf_counter() - started
    log(f"postgresql: COPY of {points} rows in {copy_seconds:.1f} s")
    started = time.perf_counter()
    connection.execute(index)
    index_seconds = time.perf_counter() - started
    log(f"postgresql: index built in {index_seconds:.1f} s")
    started = time.perf_counter()
    connection.execute("ANALYZE points")
    analyze_seconds = time.perf_counter() - started
    connection.execute("CHECKPOINT")
    table_bytes, index_bytes, total_bytes = connection.execute(
        "SELECT pg_relation_size('points'), pg_indexes_size('points'), "
        "pg_total_relation_size('points')"
    ).fetchone()
    log(f"postgresql: {total_bytes} bytes ({table_bytes} table, {index_bytes} index)")

    parameters = query_parameters(params)
    queries, plans, client = {}, {}, {}
    for name, template in POSTGRESQL_QUERIES.items():
        values = parameters[name]
        connection.execute(f"SET plan_cache_mode = {PLAN_CACHE_MODES[name]}")
        plan = connection.execute("EXPLAIN (ANALYZE, BUFFERS) " + template, values).fetchall()
        plans[name] = "\n".join(row[0] for row in plan)
        cursor = connection.cursor(binary=True)

        def fetch():
            cursor.execute(template, values, prepare=True)
            return cursor.fetchall()

        result_check = check(fetch())
        # Through psycopg's cursor: Python builds a tuple per row, what a Python client sees.
        timing = measure(fetch, args.repetitions, args.budget_s)
        client[name] = {key: timing[key] for key in ("runs", "median_us", "p99_us")}
        log(
            f"postgresql {name} via a psycopg cursor: median {timing['median_us']:.1f} us, "
            f"p99 {timing['p99_us']:.1f} us over {timing['runs']} runs"
        )
        # Through libpq itself (psycopg's pq layer): a prepared statement executed with binary
        # results that stay in libpq's buffer, unconverted. This is the figure compared: the
        # server's work plus the Unix-socket round trip, with no client language on top.
        sql, arguments = positional(template, values)
        statement = f"storage_{name}".encode()
        prepared = connection.pgconn.prepare(statement, sql.encode())
        if prepared.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise RuntimeError(f"preparing {name}: {prepared.get_error_message()}")
        encoded = [argument.encode() for argument in arguments]

        def execute():
            result = connection.pgconn.exec_prepared(statement, encoded, result_format=1)
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                raise RuntimeError(f"{name}: {result.get_error_message()}")
            return result.ntuples

        rows = execute()
        if rows != result_check["rows"]:
            raise RuntimeError(f"{name}: {rows} rows through libpq, {result_check['rows']} through the cursor")
        timing = measure(execute, args.repetitions, args.budget_s)
        timing["check"] = result_check
        timing["sql"] = sql
        timing["arguments"] = arguments
        timing["plan_cache_mode"] = PLAN_CACHE_MODES[name]
        queries[name] = timing
        log(
            f"postgresql {name} via libpq: median {timing['median_us']:.1f} us, "
            f"p99 {timing['p99_us']:.1f} us over {timing['runs']} runs ({rows} rows)"
        )
    connection.close()
    seconds = copy_seconds + index_seconds
    return {
        "engine": "postgresql",
        "version": f"PostgreSQL {version}",
        "schema": schema,
        "load_sql": [copy, index, "ANALYZE points"],
        "settings": settings,
        "ingest": {
            "method": "COPY from the CSV file (server-side) in the transaction that creates the table, then CREATE INDEX",
            "points": points,
            "seconds": seconds,
            "points_per_sec": points / seconds,
            "copy_seconds": copy_seconds,
            "copy_points_per_sec": points / copy_seconds,
            "index_seconds": index_seconds,
            "analyze_seconds": analyze_seconds,
        },
        "size": {
            "bytes": total_bytes,
            "bytes_per_point": total_bytes / points,
            "table_bytes": table_bytes,
            "index_bytes": index_bytes,
            "counted": "pg_total_relation_size('points'): heap, index, free-space and visibility maps (not the WAL)",
        },
        "queries": queries,
        "client_queries": client,
        "plans": plans,
    }


def duckdb_engine(args, params):
    import duckdb

    points = params["dataset"]["points"]
    for path in (args.database, args.database + ".wal"):
        if os.path.exists(path):
            os.remove(path)
    connection = duckdb.connect(args.database)
    version, threads = connection.execute("SELECT version(), current_setting('threads')").fetchone()
    schema = (
        "CREATE TABLE points (device VARCHAR NOT NULL, field VARCHAR NOT NULL, "
        "ts BIGINT NOT NULL, value DOUBLE NOT NULL)"
    )
    copy = f"COPY points FROM {sql_literal(os.path.abspath(args.csv))} (FORMAT csv, HEADER true)"
    started = time.perf_counter()
    connection.execute(schema)
    connection.execute(copy)
    copy_seconds = time.perf_counter() - started
    connection.execute("CHECKPOINT")
    seconds = time.perf_counter() - started
    total_bytes = file_bytes(args.database, args.database + ".wal")
    log(f"duckdb: loaded {points} rows in {copy_seconds:.1f} s (+ checkpoint: {seconds:.1f} s), {total_bytes} bytes")

    parameters = query_parameters(params)
    queries = {}
    for name, sql in DUCKDB_QUERIES.items():
        values = dict(parameters[name])
        values.pop("fields", None)
        if name == "range":
            # 86,400 rows: fetched as NumPy arrays, so no Python object is made per row.
            def run():
                return connection.execute(sql, values).fetchnumpy()

            arrays = run()
            rows = list(zip(arrays["ts"].tolist(), arrays["value"].tolist()))
        else:

            def run():
                return connection.execute(sql, values).fetchall()

            rows = run()
        timing = measure(run, args.repetitions, args.budget_s)
        timing["check"] = check(rows)
        timing["sql"] = sql
        queries[name] = timing
        log(
            f"duckdb {name}: median {timing['median_us']:.1f} us, p99 {timing['p99_us']:.1f} us "
            f"over {timing['runs']} runs ({len(rows)} rows)"
        )
    connection.close()
    return {
        "engine": "duckdb",
        "version": f"DuckDB {version} (Python package {duckdb.__version__}), {threads} threads",
        "schema": schema,
        "load_sql": [copy, "CHECKPOINT"],
        "ingest": {
            "method": "COPY from the CSV file, then CHECKPOINT",
            "points": points,
            "seconds": seconds,
            "points_per_sec": points / seconds,
            "copy_seconds": copy_seconds,
        },
        "size": {
            "bytes": total_bytes,
            "bytes_per_point": total_bytes / points,
            "counted": "database file (and its .wal, empty after CHECKPOINT)",
        },
        "queries": queries,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("postgresql", "duckdb"):
        command = commands.add_parser(name)
        command.add_argument("--csv", required=True)
        command.add_argument("--params", required=True, help="the storage_compare JSON result")
        command.add_argument("--repetitions", type=int, default=200)
        command.add_argument("--budget-s", type=float, default=20.0)
        if name == "postgresql":
            command.add_argument("--host", required=True, help="the server's socket directory")
            command.add_argument("--port", type=int, required=True)
        else:
            command.add_argument("--database", required=True)
    args = parser.parse_args()
    with open(args.params) as file:
        params = json.loads(file.read().strip().splitlines()[-1])
    result = postgresql(args, params) if args.command == "postgresql" else duckdb_engine(args, params)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
