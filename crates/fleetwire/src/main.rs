//! The `fleetwire` binary: parses the command line, runs it (see the library half) and
//! maps failures to exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = fleetwire::Cli::parse();
    match fleetwire::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Logging may not be set up yet (bad configuration), so print directly.
            eprintln!("fleetwire: error: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose message the
/// previous one already includes (errors of the library crates keep their source and
/// often say it too).
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.ends_with(&message) || text.contains(&format!(": {message}")) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}
