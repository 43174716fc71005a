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
    /// Print an htpasswd line (bcrypt) for USER, reading the password from stdin.
    ///
    /// With --file, the entry is created or replaced in that file instead (atomically, keeping
    /// the other users); a running gateway picks the change up within a second.
    Passwd {
        /// The user name.
        user: String,
        /// bcrypt cost (4-31); each step doubles the work of every login check that misses the cache.
        #[arg(long, default_value_t = vastgate::auth::DEFAULT_BCRYPT_COST)]
        cost: u32,
        /// Update this htpasswd file in place instead of printing the line.
        #[arg(long)]
        file: Option<PathBuf>,
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
        Command::Passwd { user, cost, file } => passwd(&user, cost, file),
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

fn passwd(user: &str, cost: u32, file: Option<PathBuf>) -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("error: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("error: the password read from stdin is empty");
        return ExitCode::FAILURE;
    }
    let result = match &file {
        Some(path) => vastgate::auth::htpasswd_line(user, password, cost)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                vastgate::auth::upsert_user_file(path, user, password, cost)
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .map(|_| eprintln!("{}: entry for {user} written", path.display())),
        None => vastgate::auth::htpasswd_line(user, password, cost)
            .map(|l| println!("{l}"))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
