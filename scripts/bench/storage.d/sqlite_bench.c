/*
 * The SQLite side of scripts/bench/storage: loads the shared CSV into a SQLite database
 * in WAL mode with batched inserts, then times the three queries, all in process through
 * SQLite's C API, so no client language sits between the engine and the timings (the
 * Fleetwire side is in-process Rust).
 *
 * Arguments are key=value pairs (all required except where a default is shown):
 *   db= csv= batch=5000 synchronous=FULL cache_kib=262144 repetitions=200 budget_s=20
 *   latest_device= fields=a,b,c,d
 *   range_device= range_field= range_from= range_to=
 *   aggregate_device= aggregate_field= aggregate_from= aggregate_to= every=
 * Progress goes to stderr, one JSON object to stdout.
 *
 * Build: cc -O2 -o sqlite_bench sqlite_bench.c -lsqlite3
 */
#define _POSIX_C_SOURCE 200809L
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WARM_UP_RUNS 5
#define MIN_RUNS 10
#define MAX_ARGS 32

static const char *keys[MAX_ARGS];
static const char *values[MAX_ARGS];
static int argument_count;

static const char *arg(const char *key, const char *fallback) {
    for (int i = 0; i < argument_count; i++)
        if (strcmp(keys[i], key) == 0) return values[i];
    if (fallback == NULL) {
        fprintf(stderr, "sqlite_bench: missing argument %s=\n", key);
        exit(2);
    }
    return fallback;
}

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static void check(sqlite3 *db, int code, const char *what) {
    if (code != SQLITE_OK && code != SQLITE_DONE && code != SQLITE_ROW) {
        fprintf(stderr, "sqlite_bench: %s: %s\n", what, sqlite3_errmsg(db));
        exit(1);
    }
}

static void exec(sqlite3 *db, const char *sql) {
    char *error = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &error) != SQLITE_OK) {
        fprintf(stderr, "sqlite_bench: %s: %s\n", sql, error);
        exit(1);
    }
}

static long long file_size(const char *path) {
    struct stat info;
    return stat(path, &info) == 0 ? (long long)info.st_size : 0;
}

/* Where a query's rows go: copied out like a caller would keep them. */
struct sink {
    long long *timestamps;
    double *values;
    size_t capacity, rows;
    double sum;
    long long max_ts;
};

static void run(sqlite3 *db, sqlite3_stmt *statement, struct sink *sink) {
    int code;
    sink->rows = 0;
    sink->sum = 0;
    sink->max_ts = 0;
    while ((code = sqlite3_step(statement)) == SQLITE_ROW) {
        if (sink->rows == sink->capacity) {
            sink->capacity = sink->capacity ? sink->capacity * 2 : 1024;
            sink->timestamps = realloc(sink->timestamps, sink->capacity * sizeof *sink->timestamps);
            sink->values = realloc(sink->values, sink->capacity * sizeof *sink->values);
            if (!sink->timestamps || !sink->values) exit(1);
        }
        long long timestamp = sqlite3_column_int64(statement, 0);
        double value = sqlite3_column_double(statement, 1);
        sink->timestamps[sink->rows] = timestamp;
        sink->values[sink->rows] = value;
        sink->rows++;
        sink->sum += value;
        if (timestamp > sink->max_ts) sink->max_ts = timestamp;
    }
    check(db, code, "query");
    sqlite3_reset(statement);
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, int count, double fraction) {
    int rank = (int)(fraction * count + 0.999999999);
    if (rank < 1) rank = 1;
    if (rank > count) rank = count;
    return sorted[rank - 1];
}

/* Times a prepared statement; prints its JSON object. */
static void measure(sqlite3 *db, const char *name, sqlite3_stmt *statement, int repetitions,
                    double budget, const char *sql, int last) {
    struct sink sink = {0};
    for (int i = 0; i < WARM_UP_RUNS; i++) run(db, statement, &sink);
    double *samples = malloc(sizeof(double) * (size_t)(repetitions > 0 ? repetitions : 1));
    int runs = 0;
    double started = seconds();
    while (runs < repetitions && (runs < MIN_RUNS || seconds() - started < budget)) {
        double before = seconds();
        run(db, statement, &sink);
        samples[runs++] = (seconds() - before) * 1e6;
    }
    double total = 0;
    for (int i = 0; i < runs; i++) total += samples[i];
    qsort(samples, (size_t)runs, sizeof(double), compare_doubles);
    printf("\"%s\": {\"runs\": %d, \"median_us\": %.3f, \"p99_us\": %.3f, \"min_us\": %.3f, "
           "\"max_us\": %.3f, \"mean_us\": %.3f, \"check\": {\"rows\": %zu, \"sum\": %.17g, "
           "\"max_ts\": %lld}, \"sql\": \"",
           name, runs, percentile(samples, runs, 0.5), percentile(samples, runs, 0.99),
           samples[0], samples[runs - 1], total / runs, sink.rows, sink.sum, sink.max_ts);
    for (const char *c = sql; *c; c++) {
        if (*c == '"' || *c == '\\') putchar('\\');
        putchar(*c == '\n' ? ' ' : *c);
    }
    printf("\"}%s", last ? "" : ", ");
    fprintf(stderr, "sqlite %s: median %.1f us, p99 %.1f us over %d runs (%zu rows)\n", name,
            percentile(samples, runs, 0.5), percentile(samples, runs, 0.99), runs, sink.rows);
    free(samples);
    free(sink.timestamps);
    free(sink.values);
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql) {
    sqlite3_stmt *statement = NULL;
    check(db, sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &statement, NULL), sql);
    return statement;
}

/* Binds ?1..?4 to the <query>_device, _field, _from and _to arguments. */
static void bind_series_range(sqlite3_stmt *statement, const char *query) {
    const char *suffixes[] = {"device", "field", "from", "to"};
    char key[64];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "%s_%s", query, suffixes[i]);
        if (i < 2)
            sqlite3_bind_text(statement, i + 1, arg(key, NULL), -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_int64(statement, i + 1, atoll(arg(key, NULL)));
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc && argument_count < MAX_ARGS; i++) {
        char *equals = strchr(argv[i], '=');
        if (!equals) {
            fprintf(stderr, "sqlite_bench: expected key=value, got %s\n", argv[i]);
            return 2;
        }
        *equals = '\0';
        keys[argument_count] = argv[i];
        values[argument_count++] = equals + 1;
    }
    const char *path = arg("db", NULL);
    const char *csv = arg("csv", NULL);
    int batch = atoi(arg("batch", "5000"));
    const char *synchronous = arg("synchronous", "FULL");
    int cache_kib = atoi(arg("cache_kib", "262144"));
    int repetitions = atoi(arg("repetitions", "200"));
    double budget = atof(arg("budget_s", "20"));

    char wal[4096], shm[4096], sql[4096];
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    unlink(path);
    unlink(wal);
    unlink(shm);

    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        fprintf(stderr, "sqlite_bench: opening %s: %s\n", path, sqlite3_errmsg(db));
        return 1;
    }
    exec(db, "PRAGMA journal_mode = WAL");
    snprintf(sql, sizeof sql, "PRAGMA synchronous = %s", synchronous);
    exec(db, sql);
    snprintf(sql, sizeof sql, "PRAGMA cache_size = -%d", cache_kib);
    exec(db, sql);
    const char *schema =
        "CREATE TABLE points (device TEXT NOT NULL, field TEXT NOT NULL, ts INTEGER NOT NULL, "
        "value REAL NOT NULL, PRIMARY KEY (device, field, ts)) WITHOUT ROWID";
    exec(db, schema);

    FILE *input = fopen(csv, "r");
    if (!input) {
        perror(csv);
        return 1;
    }
    static char line[1024];
    if (!fgets(line, sizeof line, input)) return 1; /* header */
    sqlite3_stmt *insert = prepare(db, "INSERT INTO points VALUES (?1, ?2, ?3, ?4)");
    long long rows = 0, batches = 0;
    int in_batch = 0;
    double started = seconds();
    exec(db, "BEGIN");
    while (fgets(line, sizeof line, input)) {
        char *device = line;
        char *comma = strchr(device, ',');
        if (!comma) continue;
        char *field = comma + 1;
        char *second = strchr(field, ',');
        if (!second) continue;
        char *end;
        long long timestamp = strtoll(second + 1, &end, 10);
        double value = strtod(end + 1, NULL);
        sqlite3_bind_text(insert, 1, device, (int)(comma - device), SQLITE_STATIC);
        sqlite3_bind_text(insert, 2, field, (int)(second - field), SQLITE_STATIC);
        sqlite3_bind_int64(insert, 3, timestamp);
        sqlite3_bind_double(insert, 4, value);
        check(db, sqlite3_step(insert), "insert");
        sqlite3_reset(insert);
        rows++;
        if (++in_batch == batch) {
            exec(db, "COMMIT");
            batches++;
            exec(db, "BEGIN");
            in_batch = 0;
        }
    }
    exec(db, "COMMIT");
    if (in_batch) batches++;
    fclose(input);
    sqlite3_finalize(insert);
    double inserted = seconds();
    exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    double finished = seconds();
    long long bytes = file_size(path) + file_size(wal);
    fprintf(stderr, "sqlite: %lld rows in %lld transactions in %.1f s, checkpoint %.1f s, %lld bytes\n",
            rows, batches, inserted - started, finished - inserted, bytes);

    printf("{\"engine\": \"sqlite\", \"version\": \"SQLite %s\", ", sqlite3_libversion());
    printf("\"ingest\": {\"method\": \"prepared INSERT from C, %d rows per transaction, WAL, "
           "synchronous=%s, then wal_checkpoint(TRUNCATE)\", \"points\": %lld, \"batches\": %lld, "
           "\"seconds\": %.6f, \"points_per_sec\": %.1f, \"insert_seconds\": %.6f, "
           "\"checkpoint_seconds\": %.6f}, ",
           batch, synchronous, rows, batches, finished - started, rows / (finished - started),
           inserted - started, finished - inserted);
    printf("\"size\": {\"bytes\": %lld, \"bytes_per_point\": %.4f, \"counted\": \"database file and "
           "its -wal file after a TRUNCATE checkpoint\"}, ",
           bytes, rows ? (double)bytes / rows : 0.0);
    printf("\"schema\": \"%s\", \"settings\": \"journal_mode=WAL, synchronous=%s, cache_size=%d KiB\", ",
           schema, synchronous, cache_kib);

    /* Latest: one top-1 index probe per field of the device. */
    char fields[1024];
    snprintf(fields, sizeof fields, "%s", arg("fields", NULL));
    char latest[8192] = "";
    size_t used = 0;
    int field_count = 0;
    for (char *name = strtok(fields, ","); name; name = strtok(NULL, ",")) {
        used += (size_t)snprintf(latest + used, sizeof latest - used,
                                 "%sSELECT * FROM (SELECT ts, value, field FROM points WHERE device = ?1 "
                                 "AND field = '%s' ORDER BY ts DESC LIMIT 1)",
                                 field_count++ ? " UNION ALL " : "", name);
    }
    /* Hourly averages, one index range scan per window: SQLite cannot tell that ts / every is
     * ordered, so GROUP BY on it would sort every point in a temporary B-tree (about twice as
     * slow); the windows come from a recursive CTE instead. Empty windows are skipped, as the
     * other engines do. */
    const char *range_sql =
        "SELECT ts, value FROM points WHERE device = ?1 AND field = ?2 AND ts >= ?3 AND ts < ?4 "
        "ORDER BY ts";
    const char *aggregate_sql =
        "WITH RECURSIVE windows(start) AS (SELECT ?3 / ?5 * ?5 UNION ALL SELECT start + ?5 FROM "
        "windows WHERE start + ?5 < ?4), averages AS MATERIALIZED (SELECT start, (SELECT avg(value) "
        "FROM points WHERE device = ?1 AND field = ?2 AND ts >= max(start, ?3) AND ts < min(start + "
        "?5, ?4)) AS average FROM windows) SELECT start, average FROM averages WHERE average IS NOT "
        "NULL ORDER BY start";

    sqlite3_stmt *statement = prepare(db, latest);
    sqlite3_bind_text(statement, 1, arg("latest_device", NULL), -1, SQLITE_TRANSIENT);
    printf("\"queries\": {");
    measure(db, "latest", statement, repetitions, budget, latest, 0);
    sqlite3_finalize(statement);

    statement = prepare(db, range_sql);
    bind_series_range(statement, "range");
    measure(db, "range", statement, repetitions, budget, range_sql, 0);
    sqlite3_finalize(statement);

    statement = prepare(db, aggregate_sql);
    bind_series_range(statement, "aggregate");
    sqlite3_bind_int64(statement, 5, atoll(arg("every", NULL)));
    measure(db, "aggregate", statement, repetitions, budget, aggregate_sql, 1);
    sqlite3_finalize(statement);
    printf("}}\n");
    sqlite3_close(db);
    return 0;
}
