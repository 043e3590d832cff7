//! The `fleetwire` binary's library half: the command line ([`Cli`], [`run`]), the layered
//! configuration ([`Settings`]) and the composition root ([`App::start`] → [`Running`]),
//! which `serve`, `demo` and the tests use to start a node. No domain logic lives here:
//! it parses, wires the library crates together and reports failures.

mod admin;
mod admin_token;
mod app;
mod bench;
mod cert;
mod cli;
mod config;
mod demo;
mod logging;
mod serve;
mod sim;

pub use app::{App, Running};
pub use cli::Cli;
pub use config::Settings;

/// Runs what the command line asks for.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Serve(args) => {
            let settings = config::Settings::load(&args, cli.log_format)?;
            logging::init(&settings.log)?;
            serve::run(settings)
        }
        cli::Command::Demo(args) => {
            let mut settings = config::Settings::load_demo(&args.serve, cli.log_format)?;
            logging::init(&settings.log)?;
            if args.tls && settings.tls.is_none() {
                let files = cert::development_files(settings.data_dir())?;
                settings = settings.with_tls(files);
            }
            serve::run_demo(settings, args.devices)
        }
        cli::Command::Sim(args) => sim::run(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Cert(args) => cert::run(args),
        cli::Command::Device(args) => admin::run_device(args),
        cli::Command::Token(args) => admin::run_token(args),
    }
}
