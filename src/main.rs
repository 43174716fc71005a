//! The `vastgate` command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use vastgate::config::{self, Config};
use vastgate::supervisor::control::{self, ClientError, Reply, Request};
use vastgate::supervisor::status;
use vastgate::up::UpOutcome;

/// The static musl binary of the image allocates with mimalloc (Cargo.toml says why).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Commit mimalloc's memory as it is used, not a whole arena at once: eager commit (its default
/// where the OS overcommits) adds ~7 MiB to the idle RSS. It applies to the arenas reserved
/// after it; run first in `main` of the static binary, that is all of them (idle RSS 7.1 MiB
/// with it, 14.5 MiB without).
#[cfg(target_env = "musl")]
fn tune_allocator() {
    /// `mi_option_arena_eager_commit` in mimalloc.h (v2 and v3).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: sets one integer option; callable at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
}

#[cfg(not(target_env = "musl"))]
fn tune_allocator() {}

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
    /// Print this gateway's PORTAL_CONFIG entry (`localhost:8000:18000:/:NAME`).
    ///
    /// For a Vast.ai template that puts the gateway behind Vast's own Caddy: the gateway listens
    /// on the internal port, by convention the external one plus 10000.
    PortalConfig {
        /// The name the Vast portal shows.
        #[arg(long, default_value = "vastgate")]
        name: String,
        /// The configuration file (its `listen` port is the internal port)
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and exit: 0 when it is good, 1 with FILE:LINE:COL when not.
    Check {
        /// The configuration file [default: $VASTGATE_CONFIG, ./proxy.toml, /etc/vastgate/proxy.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Exit 0 when the gateway answers `GET /healthz` on its listen port, 1 when not.
    ///
    /// For Docker's HEALTHCHECK (no curl needed). With TLS on, the port answers this plain
    /// request with a 308 to https, which counts as healthy too.
    Healthcheck {
        /// The configuration file (its `listen` port is checked)
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Seconds to wait for each step (connect, send, answer).
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Run the supervisor (every [program.NAME]) and the gateway, in the foreground.
    ///
    /// Works as the container's PID 1 (reaps every orphan) and under a launcher such as Vast's
    /// (becomes a child subreaper). When a supervisor already runs for the same socket, says so
    /// and exits 0, so launch scripts may call it on every start. SIGTERM stops the programs in
    /// reverse dependency order within [supervisor] stop_deadline; a second SIGTERM kills them.
    Up {
        /// The configuration file [default: $VASTGATE_CONFIG, ./proxy.toml, /etc/vastgate/proxy.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show every program's state, supervisorctl style.
    ///
    /// Exit status: 0 when every autostart program is RUNNING, 3 when one is not, 4 when no
    /// supervisor answers.
    Status {
        /// Print the supervisor's full answer as JSON instead.
        #[arg(long)]
        json: bool,
        /// The configuration file (to find the control socket)
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Start a program (or `all`).
    Start {
        /// A program name, or `all`
        name: String,
        /// The configuration file (to find the control socket)
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Stop a program (or `all`): its stop signal to the process group, SIGKILL after stop_timeout.
    Stop {
        /// A program name, or `all`
        name: String,
        /// The configuration file (to find the control socket)
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Restart a program (or `all`) at once, without backoff.
    Restart {
        /// A program name, or `all`
        name: String,
        /// The configuration file (to find the control socket)
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a program's recent output (the whole log is in its log file).
    Logs {
        /// A program name
        name: String,
        /// Keep printing new output until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// How many recent lines to print first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        /// The configuration file (to find the control socket)
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(config),
        Command::Serve { config } => serve(config),
        Command::Passwd { user, cost, file } => passwd(&user, cost, file),
        Command::PortalConfig { name, config } => portal_config(config, &name),
        Command::Up { config } => up(config),
        Command::Healthcheck { config, timeout } => healthcheck(config, timeout),
        Command::Status { json, config } => status(config, json),
        Command::Start { name, config } => act(config, Request::Start { name }),
        Command::Stop { name, config } => act(config, Request::Stop { name }),
        Command::Restart { name, config } => act(config, Request::Restart { name }),
        Command::Logs {
            name,
            follow,
            lines,
            config,
        } => logs(config, name, lines, follow),
    }
}

fn up(flag: Option<PathBuf>) -> ExitCode {
    init_tracing();
    let path = config::resolve_path(flag.as_deref());
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(vastgate::up::up(&path));
    // Log pumps of orphaned output may still hold the runtime; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match outcome {
        Ok(UpOutcome::Stopped { killed }) => {
            if killed {
                eprintln!("vastgate: stopped (some programs had to be killed)");
            }
            ExitCode::SUCCESS
        }
        Ok(UpOutcome::AlreadyRunning { socket }) => {
            eprintln!(
                "vastgate: a supervisor is already running for {} (see `vastgate status`); nothing to do",
                socket.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The control socket named by the configuration; exit code 4 when it cannot be known.
fn socket_of(flag: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    let path = config::resolve_path(flag.as_deref());
    match Config::load(&path) {
        Ok(c) => Ok(c.supervisor.socket),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(status::EXIT_NO_SUPERVISOR))
        }
    }
}

fn no_supervisor(e: ClientError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        ClientError::NoSupervisor { .. } => ExitCode::from(status::EXIT_NO_SUPERVISOR),
        ClientError::Broken { .. } => ExitCode::FAILURE,
    }
}

fn status(flag: Option<PathBuf>, json: bool) -> ExitCode {
    let socket = match socket_of(flag) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut answer = None;
    let called = control::call(
        &socket,
        &Request::Status,
        Some(Duration::from_secs(10)),
        |r| {
            answer = Some(r);
            false
        },
    );
    if let Err(e) = called {
        return no_supervisor(e);
    }
    match &answer {
        Some(reply @ Reply::Status { programs, .. }) => {
            if json {
                match serde_json::to_string_pretty(reply) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("error: {e}"),
                }
            } else {
                print!("{}", status::format_status(programs));
            }
            ExitCode::from(status::exit_code(programs))
        }
        Some(Reply::Error { message }) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("error: the supervisor gave no status");
            ExitCode::FAILURE
        }
    }
}

fn act(flag: Option<PathBuf>, request: Request) -> ExitCode {
    let socket = match socket_of(flag) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut code = ExitCode::SUCCESS;
    let called = control::call(&socket, &request, Some(Duration::from_secs(300)), |reply| {
        match reply {
            Reply::Done { results } => {
                for r in results {
                    println!("{}", r.message);
                }
            }
            Reply::Error { message } => {
                eprintln!("error: {message}");
                code = ExitCode::FAILURE;
            }
            _ => {}
        }
        false
    });
    match called {
        Ok(()) => code,
        Err(e) => no_supervisor(e),
    }
}

fn logs(flag: Option<PathBuf>, name: String, lines: usize, follow: bool) -> ExitCode {
    let socket = match socket_of(flag) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut code = ExitCode::SUCCESS;
    let request = Request::Logs {
        name,
        lines,
        follow,
    };
    let timeout = (!follow).then_some(Duration::from_secs(10));
    let called = control::call(&socket, &request, timeout, |reply| match reply {
        Reply::Line { line } => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
        }
        Reply::LogHeader { path } => {
            if !follow {
                eprintln!("(the last {lines} lines; the whole log is {path})");
            }
            true
        }
        Reply::Error { message } => {
            eprintln!("error: {message}");
            code = ExitCode::FAILURE;
            false
        }
        _ => true,
    });
    match called {
        Ok(()) => code,
        Err(e) => no_supervisor(e),
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

fn healthcheck(flag: Option<PathBuf>, timeout: u64) -> ExitCode {
    let path = config::resolve_path(flag.as_deref());
    let listen = match Config::load(&path) {
        Ok(c) => c.gateway.listen,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match vastgate::healthcheck::check(listen, Duration::from_secs(timeout.max(1))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn portal_config(flag: Option<PathBuf>, name: &str) -> ExitCode {
    let path = config::resolve_path(flag.as_deref());
    match Config::load(&path) {
        Ok(c) => {
            println!(
                "{}",
                vastgate::vast::own_entry(c.gateway.listen.port(), name)
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

/// The async runtime of the long-running commands: the supervisor, the accept loop, signals and
/// reloads. Requests are served on the gateway's own worker threads, so two threads are plenty
/// here whatever the number of CPUs.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn serve(flag: Option<PathBuf>) -> ExitCode {
    init_tracing();
    let path = config::resolve_path(flag.as_deref());
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
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
