//! `vastgate up`: the supervisor and the gateway in one process.
//!
//! Order matters here. Signal handlers come first (as PID 1 a SIGTERM without a handler is
//! ignored, and Docker would wait its 10 s for nothing), then the reaper, then the configuration
//! and the instance lock, then the programs and the gateway. On SIGTERM the programs stop in
//! reverse dependency order within `[supervisor] stop_deadline`; a second SIGTERM kills them at
//! once. The supervisor never sees the gateway; this is the only place that knows both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::gateway::{self, ServeError, ServeOptions};
use crate::supervisor::instance::{self, LockError};
use crate::supervisor::{Reaper, Supervisor, SupervisorError};

/// From SIGTERM to exit, inside `docker stop`'s 10 s.
const STOP_BUDGET: Duration = Duration::from_millis(9500);

/// How `up` ended.
#[derive(Debug)]
pub enum UpOutcome {
    /// Stopped by a signal; `killed` when some program had to be SIGKILLed.
    Stopped { killed: bool },
    /// Another supervisor already runs for this socket; nothing was started.
    AlreadyRunning { socket: PathBuf },
}

/// Why `up` could not run.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Lock(LockError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error("the gateway stopped: {0}")]
    Gateway(ServeError),
}

/// Runs the supervisor and the gateway for the configuration at `path` until SIGTERM/SIGINT.
pub async fn up(path: &Path) -> Result<UpOutcome, UpError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(UpError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(UpError::Signals)?;
    let reaper = Reaper::start().map_err(UpError::Signals)?;

    let config = Config::load(path)?;
    let _lock = match instance::acquire(&config.supervisor.socket) {
        Ok(lock) => lock,
        Err(LockError::Held(_)) => {
            return Ok(UpOutcome::AlreadyRunning {
                socket: config.supervisor.socket.clone(),
            })
        }
        Err(e) => return Err(UpError::Lock(e)),
    };
    let supervisor = Supervisor::start(&config, reaper)?;

    // The gateway shows the programs' states ("Forge is starting") and stops last, when told.
    let gateway_stop = CancellationToken::new();
    let gateway_path = path.to_path_buf();
    let options = ServeOptions {
        stop: gateway_stop.clone(),
        board: Some(supervisor.board()),
        stop_on_signals: false,
    };
    let mut gateway =
        tokio::spawn(async move { gateway::serve_with(&gateway_path, options).await });

    let mut failure = None;
    tokio::select! {
        biased;
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        ended = &mut gateway => match ended {
            Ok(Ok(())) => tracing::warn!("the gateway stopped by itself; stopping the programs"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the gateway could not run; stopping the programs");
                failure = Some(e);
            }
            Err(e) => tracing::error!(error = %e, "the gateway task failed; stopping the programs"),
        },
    }

    let stopping_since = Instant::now();
    let summary = supervisor
        .shutdown(next_signal(&mut terminate, &mut interrupt))
        .await;
    // The gateway goes last, in what is left of Docker's 10 s (at least half a second).
    gateway_stop.cancel();
    let left = STOP_BUDGET
        .saturating_sub(stopping_since.elapsed())
        .max(Duration::from_millis(500));
    let _ = tokio::time::timeout(left, gateway).await;
    match failure {
        Some(e) => Err(UpError::Gateway(e)),
        None => Ok(UpOutcome::Stopped {
            killed: summary.killed,
        }),
    }
}

async fn next_signal(terminate: &mut Signal, interrupt: &mut Signal) {
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}
