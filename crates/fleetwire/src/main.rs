//! The `fleetwire` binary: parses flags and configuration, wires the library crates
//! together and maps failures to exit codes. No domain logic lives here.

mod admin;
mod admin_token;
mod bench;
mod cli;
mod config;
mod demo;
mod device_auth;
mod logging;
mod serve;
mod sim;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Logging may not be set up yet (bad configuration), so print directly.
            eprintln!("fleetwire: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Serve(args) => {
            let settings = config::Settings::load(&args, cli.log_format)?;
            logging::init(&settings.log)?;
            serve::run(settings)
        }
        cli::Command::Demo(args) => {
            let settings = config::Settings::load_demo(&args.serve, cli.log_format)?;
            logging::init(&settings.log)?;
            serve::run_demo(settings, args.devices)
        }
        cli::Command::Sim(args) => sim::run(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Device(args) => admin::run_device(args),
        cli::Command::Token(args) => admin::run_token(args),
    }
}
