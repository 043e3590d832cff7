//! The registry against both of its databases: SQLite in a temporary directory and a real
//! PostgreSQL server started by the test process (`support/postgres.rs`). Every behaviour
//! is one async function taking a fresh registry; `on_both_backends!` runs it on each.

// Clippy's allow-unwrap-in-tests does not reach the async test bodies the macro calls.
#![allow(clippy::unwrap_used)]

#[path = "../support/postgres.rs"]
mod postgres;

mod alarms;
mod backend;
mod certificates;
mod commands;
mod credentials;
mod devices;
mod presence;
mod rules;
mod sqlite;
mod tokens;
