//! The connection pool and the schema: SQLite or PostgreSQL behind sqlx's `Any` driver, so
//! every query is written once, in SQL both accept (`$1` parameters, `BIGINT` for integers,
//! `TEXT` for strings and JSON, no `BOOLEAN` because the `Any` driver cannot read SQLite's).
//! Migrations are versioned, applied at open, each in its own transaction: 1 made devices,
//! labels and API tokens, 2 rules, alarms and commands, 3 the last ingest error of each
//! device, 4 the client certificates pinned to devices.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Executor as _, Row as _};

use crate::error::database;
use crate::{Error, Result};

/// Which database the pool talks to; only the connection setup differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// SQLite file, the embedded default.
    Sqlite,
    /// PostgreSQL server, for several nodes.
    Postgres,
}

impl Backend {
    /// The backend a database URL names, from its scheme.
    fn of_url(url: &str) -> Result<Backend> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            // Only the scheme is quoted: the rest of a URL may hold a password.
            other => Err(Error::Invalid(format!(
                "database URL scheme {other:?}: expected sqlite://PATH or postgres://USER@HOST:PORT/DB"
            ))),
        }
    }
}

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a SQLite registry's write-ahead log is copied back into the database file
/// (see [`checkpoint_periodically`]).
pub(crate) const SQLITE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Connects a pool to `url` and prepares every new connection (SQLite: WAL journal,
/// `synchronous = NORMAL`, busy timeout, foreign keys, no automatic checkpoints).
pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<(AnyPool, Backend)> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url)?;
    let url = match backend {
        // "Opens, creating when missing": SQLite's default mode would refuse a new file.
        Backend::Sqlite if !has_query_parameter(url, "mode") => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}mode=rwc")
        }
        _ => url.to_owned(),
    };
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(30))
        // An in-process SQLite connection cannot have hung up: pinging it before every
        // query would only add a round trip to its worker thread. A PostgreSQL server can
        // go away, so its connections keep the check.
        .test_before_acquire(backend == Backend::Postgres)
        .after_connect(move |connection, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // The busy timeout comes first: switching to WAL needs a write lock that
                    // another connection may hold for a moment.
                    let busy = SQLITE_BUSY_TIMEOUT.as_millis();
                    connection
                        .execute(format!("PRAGMA busy_timeout = {busy}").as_str())
                        .await?;
                    connection.execute("PRAGMA journal_mode = WAL").await?;
                    connection.execute("PRAGMA synchronous = NORMAL").await?;
                    // SQLite would otherwise checkpoint inside whichever commit crosses
                    // 1,000 log pages, fsyncs included: an alarm write every second or so
                    // took 5 ms instead of 0.2. `checkpoint_periodically` does it instead.
                    connection.execute("PRAGMA wal_autocheckpoint = 0").await?;
                    connection.execute("PRAGMA foreign_keys = ON").await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(database(match backend {
            Backend::Sqlite => "opening the SQLite database",
            Backend::Postgres => "connecting to PostgreSQL",
        }))?;
    Ok((pool, backend))
}

/// Checkpoints a SQLite database every [`SQLITE_CHECKPOINT_INTERVAL`], off the commit
/// path: a passive checkpoint runs on its own connection while others keep writing to the
/// log. Runs until aborted; a failure is logged and retried at the next tick.
pub(crate) async fn checkpoint_periodically(pool: AnyPool) {
    let mut ticks = tokio::time::interval(SQLITE_CHECKPOINT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_optional(&pool)
            .await
        {
            tracing::warn!(%error, "checkpointing the registry database failed");
        }
    }
}

fn has_query_parameter(url: &str, name: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name))
    })
}

/// One schema change. Never edit a released one: add the next version.
struct Migration {
    version: i64,
    description: &'static str,
    statements: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "devices, device labels, API tokens",
        statements: &[
            // Labels are stored twice: as JSON on the device, so a page of devices is one
            // query, and as rows in `device_labels`, so a label filter is an index lookup.
            // `online` is 0 or 1: the `Any` driver cannot decode SQLite booleans.
            "CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            device_type TEXT NOT NULL,
            labels TEXT NOT NULL,
            attributes TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            online BIGINT NOT NULL DEFAULT 0,
            last_seen BIGINT,
            secret_hash TEXT
        )",
            // Listing by type walks this index in id order: keyset pagination without a sort.
            "CREATE INDEX devices_type_id ON devices (device_type, id)",
            "CREATE TABLE device_labels (
            device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (device_id, key)
        )",
            // Listing by label walks this index in device id order, like `devices_type_id`.
            "CREATE INDEX device_labels_key_value_device ON device_labels (key, value, device_id)",
            "CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            is_bootstrap BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT
        )",
        ],
    },
    Migration {
        version: 2,
        description: "rules, alarms, commands",
        statements: &[
            // The device match and the actions are JSON in the registry's own shape (not the
            // API's): they are only ever read whole, with the rule.
            "CREATE TABLE rules (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            matcher TEXT NOT NULL,
            condition_expression TEXT NOT NULL,
            for_ms BIGINT,
            clear_expression TEXT,
            severity TEXT NOT NULL,
            actions TEXT NOT NULL,
            enabled BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
            // No foreign key to `rules`: alarms are history and outlive their rule. Alarms go
            // with their device, like its labels and commands.
            "CREATE TABLE alarms (
            id TEXT PRIMARY KEY,
            rule_id TEXT NOT NULL,
            rule_name TEXT NOT NULL,
            device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
            severity TEXT NOT NULL,
            status TEXT NOT NULL,
            trigger_values TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            acknowledged_at BIGINT,
            acknowledged_by TEXT,
            cleared_at BIGINT,
            cleared_by TEXT,
            clear_values TEXT NOT NULL
        )",
            // At most one open alarm per rule and device, whoever raises it: the database
            // refuses the second, and `raise_alarm` returns the first instead. The queries
            // that want these partial indexes spell `status <> 'cleared'` literally, so both
            // planners can prove the index covers them.
            "CREATE UNIQUE INDEX alarms_open_rule_device ON alarms (rule_id, device_id)
            WHERE status <> 'cleared'",
            // Listing is newest first, keyset on (created_at, id): each filter has an index in
            // that order, walked backwards without a sort. Open alarms are few next to the
            // cleared history, so they get partial indexes of their own.
            "CREATE INDEX alarms_created ON alarms (created_at, id)",
            "CREATE INDEX alarms_device_created ON alarms (device_id, created_at, id)",
            "CREATE INDEX alarms_rule_created ON alarms (rule_id, created_at, id)",
            "CREATE INDEX alarms_open_created ON alarms (created_at, id)
            WHERE status <> 'cleared'",
            "CREATE INDEX alarms_open_device_created ON alarms (device_id, created_at, id)
            WHERE status <> 'cleared'",
            "CREATE INDEX alarms_open_rule_created ON alarms (rule_id, created_at, id)
            WHERE status <> 'cleared'",
            "CREATE TABLE commands (
            id TEXT PRIMARY KEY,
            device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            params TEXT NOT NULL,
            status TEXT NOT NULL,
            result TEXT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            delivered_at BIGINT,
            completed_at BIGINT
        )",
            "CREATE INDEX commands_device_created ON commands (device_id, created_at, id)",
            // The expiry sweep and the next deadline look only at unfinished commands.
            "CREATE INDEX commands_unfinished_expiry ON commands (expires_at)
            WHERE status IN ('pending', 'delivered')",
        ],
    },
    Migration {
        version: 3,
        description: "the last ingest error of each device",
        statements: &[
            // All three set together, or all NULL (never rejected).
            "ALTER TABLE devices ADD COLUMN last_ingest_error_at BIGINT",
            "ALTER TABLE devices ADD COLUMN last_ingest_error_source TEXT",
            "ALTER TABLE devices ADD COLUMN last_ingest_error TEXT",
        ],
    },
    Migration {
        version: 4,
        description: "client certificates pinned to devices",
        statements: &[
            // A device's pins go with it. The primary key is what a login looks up (the
            // device's rows, in fingerprint order), so no other index is needed.
            "CREATE TABLE device_certificates (
            device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
            fingerprint TEXT NOT NULL CHECK (length(fingerprint) = 64),
            common_name TEXT,
            not_after BIGINT,
            added_at BIGINT NOT NULL,
            PRIMARY KEY (device_id, fingerprint)
        )",
        ],
    },
];

/// Applies the migrations the database lacks. Idempotent; safe when several nodes start
/// at once against one PostgreSQL (the loser of a race finds the version applied).
pub(crate) async fn migrate(pool: &AnyPool) -> Result<()> {
    const CREATE: &str = "CREATE TABLE IF NOT EXISTS registry_migrations (
        version BIGINT PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at BIGINT NOT NULL
    )";
    if pool.execute(CREATE).await.is_err() {
        // Two PostgreSQL sessions creating the table at once: one of them fails on the
        // catalog's unique index although the table exists afterwards. Once more settles it.
        pool.execute(CREATE)
            .await
            .map_err(database("creating the migrations table"))?;
    }
    let applied = applied_versions(pool).await?;
    let latest = MIGRATIONS.last().map_or(0, |migration| migration.version);
    if let Some(newer) = applied.iter().find(|version| **version > latest) {
        return Err(Error::Inconsistent(format!(
            "schema version {newer} is newer than this build understands (up to {latest}): \
             expected a database written by this Fleetwire version or an older one"
        )));
    }
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        match apply(pool, migration).await {
            Ok(()) => tracing::info!(
                version = migration.version,
                description = migration.description,
                "registry schema migrated"
            ),
            Err(error) => {
                if !applied_versions(pool).await?.contains(&migration.version) {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

async fn applied_versions(pool: &AnyPool) -> Result<Vec<i64>> {
    let rows = sqlx::query("SELECT version FROM registry_migrations")
        .fetch_all(pool)
        .await
        .map_err(database("reading applied migrations"))?;
    rows.iter()
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(database("reading applied migrations"))
}

async fn apply(pool: &AnyPool, migration: &Migration) -> Result<()> {
    let context = format!(
        "applying migration {} ({})",
        migration.version, migration.description
    );
    let mut transaction = pool.begin().await.map_err(database(&context))?;
    // The version row comes first: a concurrent node then blocks here (PostgreSQL) or on
    // the write lock (SQLite) instead of half-applying the same statements.
    sqlx::query(
        "INSERT INTO registry_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
    )
    .bind(migration.version)
    .bind(migration.description)
    .bind(crate::now_ms())
    .execute(&mut *transaction)
    .await
    .map_err(database(&context))?;
    for statement in migration.statements {
        transaction
            .execute(*statement)
            .await
            .map_err(database(&context))?;
    }
    transaction.commit().await.map_err(database(&context))
}
