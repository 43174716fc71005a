//! The supervisor: keeps Forge and the helper apps alive, as PID 1 or under Vast's launcher.
//!
//! Each `[program.NAME]` gets a task of its own ([`program`]) that walks the state machine of
//! [`state`] — STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL — spawning through the
//! one [`reaper`] (the only code that waits for children), watched by its [`probe`]s and log
//! triggers ([`output`]). The tasks publish what they do on a [`Board`], which the control socket
//! ([`control`]) and the gateway read. This module starts all of that and stops it again in reverse
//! dependency order within a total deadline.
//!
//! The supervisor knows nothing of the gateway; `vastgate up` ([`crate::up`]) composes the two.

pub mod backoff;
pub mod board;
pub mod control;
pub mod environment;
pub mod gpu;
pub mod instance;
pub mod logfile;
pub mod output;
pub mod probe;
mod program;
pub mod reaper;
pub mod spawn;
pub mod state;
pub mod status;
pub mod user;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use board::{Board, ProgramView, SupervisorFacts};
pub use gpu::GpuReport;
pub use reaper::Reaper;
pub use state::{ExitReason, ProgramState};

use control::{Action, ActionResult, Reply};
use logfile::LogFile;
use output::ProgramOutput;
use program::{ProgramTask, Request, Shared};

use crate::config::{Config, GpuNeed};

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot open the control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the programs ended at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownSummary {
    /// Some process group had to be SIGKILLed (a stop timeout, the deadline, a second signal).
    pub killed: bool,
}

/// A running supervisor: its programs' tasks, the control socket and the GPU watch.
pub struct Supervisor {
    board: Arc<Board>,
    reaper: Arc<Reaper>,
    controller: Arc<Controller>,
    socket: PathBuf,
    /// Stop order: each inner list stops together, after the lists before it.
    stop_levels: Vec<Vec<String>>,
    stop_deadline: Duration,
    tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Binds the control socket and starts every program's task (autostart programs start at
    /// once, or as soon as their dependencies are RUNNING). The caller holds the instance lock
    /// ([`instance::acquire`]) and has started the [`Reaper`].
    pub fn start(config: &Config, reaper: Arc<Reaper>) -> Result<Supervisor, SupervisorError> {
        let sup = &config.supervisor;
        let listener = control::bind(&sup.socket).map_err(|source| SupervisorError::Socket {
            path: sup.socket.clone(),
            source,
        })?;

        let inherited: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();

        let mut slots = Vec::with_capacity(config.programs.len());
        let mut outputs = Vec::with_capacity(config.programs.len());
        for p in &config.programs {
            let file = match LogFile::open(&p.log, p.log_max_size, p.log_keep) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(program = %p.name, path = %p.log.display(), error = %e, "cannot open the log file; output goes to stdout only");
                    None
                }
            };
            let output = Arc::new(ProgramOutput::new(
                &p.name,
                file,
                sup.echo_output,
                p.restart_on_log.clone(),
            ));
            outputs.push(output.clone());
            slots.push(board::Slot {
                name: p.name.clone(),
                autostart: p.autostart,
                state: ProgramState::Stopped,
                detail: String::new(),
                since: Instant::now(),
                since_wall: SystemTime::now(),
                restarts: 0,
                last_exit: None,
                pid: None,
                output,
                oneshot: p.oneshot,
                waiting_for: Vec::new(),
            });
        }
        let board = Arc::new(Board::new(slots));

        let shared = Arc::new(Shared {
            reaper: reaper.clone(),
            board: board.clone(),
            inherited: inherited.clone(),
            environment_file: sup.environment_file.clone(),
        });
        let mut senders = Vec::with_capacity(config.programs.len());
        let mut tasks = Vec::with_capacity(config.programs.len());
        for (p, output) in config.programs.iter().zip(outputs) {
            let (tx, rx) = mpsc::channel(16);
            let task = ProgramTask::new(Arc::new(p.clone()), shared.clone(), rx, output.clone());
            tasks.push(tokio::spawn(task.run()));
            senders.push(Handle {
                name: p.name.clone(),
                requests: tx,
                log: p.log.clone(),
                output,
            });
        }
        let controller = Arc::new(Controller {
            programs: senders,
            board: board.clone(),
            reaper: reaper.clone(),
        });

        let gpu_env = environment::program_environment(inherited, &[], None, &BTreeMap::new());
        let detector =
            gpu::GpuDetector::new(&sup.nvidia_smi, sup.gpu_timeout, reaper.clone(), gpu_env);
        let waiting_for_gpu = config
            .programs
            .iter()
            .any(|p| matches!(p.gpu, GpuNeed::Required { .. }));
        let gpu_board = board.clone();
        let gpu_task = tokio::spawn(async move {
            loop {
                let report = detector.detect().await;
                let present = report.is_present();
                if gpu_board.gpu() != report {
                    tracing::info!(gpu = %report.summary(), "GPU");
                }
                gpu_board.set_gpu(report);
                let pause = if present || !waiting_for_gpu { 60 } else { 5 };
                tokio::time::sleep(Duration::from_secs(pause)).await;
            }
        });
        let control_task = tokio::spawn(control::serve(listener, controller.clone()));

        tracing::info!(
            programs = config.programs.len(),
            socket = %sup.socket.display(),
            pid1 = reaper.is_pid1(),
            subreaper = reaper.is_subreaper(),
            "supervisor started"
        );
        Ok(Supervisor {
            board,
            reaper,
            controller,
            socket: sup.socket.clone(),
            stop_levels: stop_levels(config),
            stop_deadline: sup.stop_deadline,
            tasks,
            background: vec![gpu_task, control_task],
        })
    }

    /// The shared view of every program, for the gateway's pages.
    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    /// Stops every program — dependents before what they depend on — within `stop_deadline`,
    /// SIGKILLing what is left at the deadline, or at once when `force` completes (a second
    /// SIGTERM). Then closes the control socket.
    pub async fn shutdown(self, force: impl Future<Output = ()>) -> ShutdownSummary {
        let deadline = Instant::now() + self.stop_deadline;
        let controller = self.controller.clone();
        let levels = self.stop_levels.clone();
        let stop_all = async move {
            let mut killed = false;
            for level in levels {
                let mut waits = Vec::new();
                for name in &level {
                    let Some(handle) = controller.handle(name) else {
                        continue;
                    };
                    let (done, finished) = oneshot::channel();
                    if handle
                        .requests
                        .send(Request::Shutdown { deadline, done })
                        .await
                        .is_ok()
                    {
                        waits.push(finished);
                    }
                }
                for finished in waits {
                    killed |= finished.await.unwrap_or(false);
                }
            }
            killed
        };
        let killed = tokio::select! {
            killed = stop_all => killed,
            () = force => {
                tracing::warn!("second signal: killing every program now");
                self.reaper.kill_all();
                true
            }
            () = tokio::time::sleep_until((deadline + Duration::from_secs(2)).into()) => {
                tracing::warn!("programs still running past the stop deadline: killing them");
                self.reaper.kill_all();
                true
            }
        };
        for task in &self.background {
            task.abort();
        }
        for task in self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
        ShutdownSummary { killed }
    }
}

/// Stop order: programs that others depend on stop after those others.
fn stop_levels(config: &Config) -> Vec<Vec<String>> {
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    // Dependencies have no cycles (config validation), so this settles within n rounds.
    for _ in 0..=config.programs.len() {
        for p in &config.programs {
            let l = p
                .depends_on
                .iter()
                .map(|d| level.get(d.as_str()).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            level.insert(&p.name, l);
        }
    }
    let top = level.values().copied().max().unwrap_or(0);
    (0..=top)
        .rev()
        .map(|l| {
            config
                .programs
                .iter()
                .filter(|p| level.get(p.name.as_str()) == Some(&l))
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
        })
        .filter(|names| !names.is_empty())
        .collect()
}

/// How the control socket reaches one program's task.
struct Handle {
    name: String,
    requests: mpsc::Sender<Request>,
    log: PathBuf,
    output: Arc<ProgramOutput>,
}

/// What the control socket may do: read the board, and send requests to program tasks.
pub(crate) struct Controller {
    programs: Vec<Handle>,
    board: Arc<Board>,
    reaper: Arc<Reaper>,
}

impl Controller {
    fn handle(&self, name: &str) -> Option<&Handle> {
        self.programs.iter().find(|h| h.name == name)
    }

    fn unknown(&self, name: &str) -> String {
        let names: Vec<&str> = self.programs.iter().map(|h| h.name.as_str()).collect();
        format!(
            "no program named \"{name}\" (known: {}, or \"all\")",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )
    }

    fn status(&self) -> Reply {
        Reply::Status {
            supervisor: SupervisorFacts {
                pid: std::process::id(),
                pid1: self.reaper.is_pid1(),
                subreaper: self.reaper.is_subreaper(),
                orphans_reaped: self.reaper.orphans_reaped(),
            },
            programs: self.board.programs(),
            gpu: self.board.gpu(),
        }
    }

    fn output(&self, name: &str) -> Option<(PathBuf, Arc<ProgramOutput>)> {
        self.handle(name).map(|h| (h.log.clone(), h.output.clone()))
    }

    /// Carries out `action` on `target` (a name or `all`) and waits for each answer.
    async fn act(&self, action: Action, target: &str) -> Reply {
        let targets: Vec<&Handle> = if target == "all" {
            self.programs.iter().collect()
        } else {
            match self.handle(target) {
                Some(h) => vec![h],
                None => {
                    return Reply::Error {
                        message: self.unknown(target),
                    }
                }
            }
        };
        let mut pending = Vec::with_capacity(targets.len());
        for h in targets {
            let (reply, answer) = oneshot::channel();
            let request = match action {
                Action::Start => Request::Start(reply),
                Action::Stop => Request::Stop(reply),
                Action::Restart => Request::Restart(reply),
            };
            let sent = h.requests.send(request).await.is_ok();
            pending.push((h.name.clone(), sent.then_some(answer)));
        }
        let mut results = Vec::with_capacity(pending.len());
        for (name, answer) in pending {
            let message = match answer {
                Some(a) => a
                    .await
                    .unwrap_or_else(|_| format!("{name}: no answer (shutting down)")),
                None => format!("{name}: no answer (shutting down)"),
            };
            results.push(ActionResult { name, message });
        }
        Reply::Done { results }
    }
}
