//! The `vastgate` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use vastgate::config::{self, Config};

/// The front door and caretaker of a GPU container: an authenticating reverse proxy for Forge,
/// filebrowser, ttyd, logdy and Jupyter on one port.
#[derive(Parser)]
#[command(name = "vastgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (reverse proxy) in the foreground.
    ///
    /// SIGHUP reloads the configuration (a bad file is refused and the old one keeps serving);
    /// SIGTERM or SIGINT stop it, letting in-flight requests finish for `shutdown_grace`.
    Serve {
        /// The configuration file [default: $VASTGATE_CONFIG, ./proxy.toml, /etc/vastgate/proxy.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and exit: 0 when it is good, 1 with FILE:LINE:COL when not.
    Check {
        /// The configuration file [default: $VASTGATE_CONFIG, ./proxy.toml, /etc/vastgate/proxy.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(config),
        Command::Serve { config } => serve(config),
    }
}

fn check(flag: Option<PathBuf>) -> ExitCode {
    let path = config::resolve_path(flag.as_deref());
    match Config::load(&path) {
        Ok(c) => {
            println!(
                "{}: ok ({} routes, {} programs, auth = \"{}\", listen {})",
                path.display(),
                c.routes.len(),
                c.programs.len(),
                c.gateway.auth,
                c.gateway.listen
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(flag: Option<PathBuf>) -> ExitCode {
    init_tracing();
    let path = config::resolve_path(flag.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vastgate::gateway::serve(&path, CancellationToken::new())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; stdout carries the access log.
fn init_tracing() {
    let filter = EnvFilter::try_from_env("VASTGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
