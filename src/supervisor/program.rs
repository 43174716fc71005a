//! One program's task: the only code that starts, watches and stops that program.
//!
//! It owns the program's [`Lifecycle`] and performs what it decides: waiting for dependencies and
//! a GPU, spawning, running the probes, reacting to log triggers and to requests from the control
//! socket, stopping the process group (SIGKILL after `stop_timeout`), and sleeping out backoff
//! delays. After every change it writes the program's slot on the [`Board`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

use super::backoff::Backoff;
use super::board::Board;
use super::environment::{parse_environment_file, program_environment};
use super::output::ProgramOutput;
use super::probe::{human, ProbeEvent, Probes};
use super::reaper::{ExitStatus, Reaper};
use super::spawn::{self, Launch};
use super::state::{ExitReason, Lifecycle, Next, ProgramState};
use super::user::{self, Account};
use crate::config::{GpuNeed, Program, RestartPolicy};

/// What the control socket and the supervisor ask of a program. Each carries where to answer.
pub(crate) enum Request {
    Start(oneshot::Sender<String>),
    Stop(oneshot::Sender<String>),
    Restart(oneshot::Sender<String>),
    /// Stop for good; SIGKILL at `deadline` at the latest. Answers whether it had to kill.
    Shutdown {
        deadline: Instant,
        done: oneshot::Sender<bool>,
    },
}

/// What every program task shares.
pub(crate) struct Shared {
    pub reaper: Arc<Reaper>,
    pub board: Arc<Board>,
    /// The supervisor's own environment, captured at start.
    pub inherited: Vec<(String, String)>,
    /// `/etc/environment` (re-read at every start: launch scripts update it).
    pub environment_file: Option<PathBuf>,
}

pub(crate) struct ProgramTask {
    spec: Arc<Program>,
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    life: Lifecycle,
    output: Arc<ProgramOutput>,
    detail: String,
    pid: Option<u32>,
    /// The dependencies a start is waiting for.
    waiting_for: Vec<String>,
}

/// How a run (or the wait before it) ended, for the main loop.
enum Outcome {
    Next(Next),
    ShutDown,
}

/// Why the wait for dependencies and a GPU ended.
enum Prerequisites {
    Met,
    NoGpu(String),
    Stopped(oneshot::Sender<String>),
    ShutDown(oneshot::Sender<bool>),
}

impl ProgramTask {
    pub fn new(
        spec: Arc<Program>,
        shared: Arc<Shared>,
        requests: mpsc::Receiver<Request>,
        output: Arc<ProgramOutput>,
    ) -> ProgramTask {
        let life = Lifecycle::new(
            spec.restart,
            spec.start_retries,
            Backoff::new(spec.backoff),
            Instant::now(),
        );
        ProgramTask {
            spec,
            shared,
            requests,
            life,
            output,
            detail: String::new(),
            pid: None,
            waiting_for: Vec::new(),
        }
    }

    pub async fn run(mut self) {
        let mut next_start = self.spec.autostart.then(Instant::now);
        if !self.spec.autostart {
            self.detail = "not started (autostart = false)".into();
            self.publish();
        }
        loop {
            let by_person = match next_start {
                Some(at) => tokio::select! {
                    () = sleep_until(at.into()) => false,
                    request = self.requests.recv() => match request {
                        Some(Request::Start(reply) | Request::Restart(reply)) => {
                            let _ = reply.send(format!("{}: starting", self.spec.name));
                            true
                        }
                        Some(Request::Stop(reply)) => {
                            self.life.stopped_idle(ExitReason::StopCommand, Instant::now());
                            self.detail.clear();
                            self.publish();
                            next_start = None;
                            let _ = reply.send(format!("{}: stopped", self.spec.name));
                            continue;
                        }
                        Some(Request::Shutdown { done, .. }) => {
                            self.life.stopped_idle(ExitReason::Shutdown, Instant::now());
                            self.detail.clear();
                            self.publish();
                            let _ = done.send(false);
                            return;
                        }
                        None => return,
                    },
                },
                None => match self.requests.recv().await {
                    Some(Request::Start(reply) | Request::Restart(reply)) => {
                        let _ = reply.send(format!("{}: starting", self.spec.name));
                        true
                    }
                    Some(Request::Stop(reply)) => {
                        let _ = reply.send(format!("{}: not running", self.spec.name));
                        continue;
                    }
                    Some(Request::Shutdown { done, .. }) => {
                        let _ = done.send(false);
                        return;
                    }
                    None => return,
                },
            };
            self.life.start(Instant::now(), by_person);
            self.detail.clear();
            self.publish();
            next_start = match self.attempt().await {
                Outcome::ShutDown => return,
                Outcome::Next(Next::StartNow) => Some(Instant::now()),
                Outcome::Next(Next::StartAfter(delay)) => Some(Instant::now() + delay),
                Outcome::Next(Next::StayDown) => None,
            };
        }
    }

    /// One run: prerequisites, spawn, watch, stop. Returns what to do next.
    async fn attempt(&mut self) -> Outcome {
        match self.wait_prerequisites().await {
            Prerequisites::Met => {}
            Prerequisites::NoGpu(error) => {
                return Outcome::Next(self.finish(ExitReason::NoGpu { error }, Duration::ZERO))
            }
            Prerequisites::Stopped(reply) => {
                self.life
                    .stopped_idle(ExitReason::StopCommand, Instant::now());
                self.detail.clear();
                self.publish();
                let _ = reply.send(format!("{}: stopped", self.spec.name));
                return Outcome::Next(Next::StayDown);
            }
            Prerequisites::ShutDown(done) => {
                self.life.stopped_idle(ExitReason::Shutdown, Instant::now());
                self.detail.clear();
                self.publish();
                let _ = done.send(false);
                return Outcome::ShutDown;
            }
        }

        let launch = match self.launch() {
            Ok(l) => l,
            Err(error) => {
                return Outcome::Next(
                    self.finish(ExitReason::SpawnFailed { error }, Duration::ZERO),
                )
            }
        };
        if let Some(file) = &self.spec.restart_file {
            // A leftover from an earlier run must not turn the next clean exit into a restart.
            let _ = std::fs::remove_file(file);
        }
        let started = match spawn::start(&self.shared.reaper, &launch) {
            Ok(s) => s,
            Err(e) => {
                let error = format!("{}: {e}", self.spec.command[0]);
                return Outcome::Next(
                    self.finish(ExitReason::SpawnFailed { error }, Duration::ZERO),
                );
            }
        };
        let spawned_at = Instant::now();
        let pid = started.pid;
        self.pid = Some(pid);
        self.detail = if self.spec.startup_probe.is_some() {
            "waiting for the startup probe".into()
        } else {
            String::new()
        };
        self.output
            .note(&format!("started {} (pid {pid})", self.spec.name));
        self.publish();

        let (triggered_tx, mut triggered) = mpsc::channel(1);
        tokio::spawn(self.output.clone().pump(started.output, triggered_tx));
        let (probe_tx, mut probe_events) = mpsc::channel(4);
        let probes = Probes {
            startup: self.spec.startup_probe.clone(),
            liveness: self.spec.liveness_probe.clone(),
            ready_after: self.spec.ready_after,
            reaper: self.shared.reaper.clone(),
            launch: launch.clone(),
        };
        let probe_task = AbortOnDrop(tokio::spawn(probes.watch(probe_tx)));

        let mut exit = started.exit;
        let mut stopping: Option<ExitReason> = None;
        let mut kill_at: Option<Instant> = None;
        let mut killed = false;
        let mut stop_reply: Option<oneshot::Sender<String>> = None;
        let mut shutdown_done: Option<oneshot::Sender<bool>> = None;
        let status = loop {
            let stop = tokio::select! {
                status = &mut exit => break status.ok(),
                Some(event) = probe_events.recv() => match event {
                    ProbeEvent::Started => {
                        if stopping.is_none() {
                            self.life.ready(Instant::now());
                            self.detail.clear();
                            self.publish();
                        }
                        None
                    }
                    ProbeEvent::StartupFailed(error) => Some((ExitReason::StartupProbe { error }, None)),
                    ProbeEvent::LivenessFailed(error) => Some((ExitReason::LivenessProbe { error }, None)),
                },
                Some(line) = triggered.recv() => Some((ExitReason::LogTrigger { line }, None)),
                request = self.requests.recv() => match request {
                    Some(Request::Start(reply)) => {
                        let _ = reply.send(format!("{}: already started", self.spec.name));
                        None
                    }
                    Some(Request::Stop(reply)) => {
                        stop_reply = Some(reply);
                        Some((ExitReason::StopCommand, None))
                    }
                    Some(Request::Restart(reply)) => {
                        let _ = reply.send(format!("{}: restarting", self.spec.name));
                        Some((ExitReason::RestartCommand, None))
                    }
                    Some(Request::Shutdown { deadline, done }) => {
                        shutdown_done = Some(done);
                        Some((ExitReason::Shutdown, Some(deadline)))
                    }
                    None => Some((ExitReason::Shutdown, None)),
                },
                () = sleep_until(kill_at.unwrap_or_else(Instant::now).into()), if kill_at.is_some() => {
                    kill_at = None;
                    if self.shared.reaper.signal_group(pid, libc::SIGKILL) {
                        killed = true;
                        self.output.note(&format!(
                            "did not stop within {}; sent SIGKILL to its process group",
                            human(self.spec.stop_timeout)
                        ));
                    }
                    None
                }
            };
            if let Some((reason, deadline)) = stop {
                self.begin_stop(pid, &mut stopping, &mut kill_at, reason, deadline);
            }
        };
        drop(probe_task);
        self.pid = None;
        let ran_for = spawned_at.elapsed();
        let reason = match (stopping, status) {
            (Some(reason), _) => reason,
            (None, Some(ExitStatus::Code(0))) if self.restart_requested() => {
                ExitReason::RestartRequested
            }
            (None, Some(ExitStatus::Code(code))) => ExitReason::Exited { code },
            (None, Some(ExitStatus::Signal(signal))) => ExitReason::Killed { signal },
            (None, None) => ExitReason::SpawnFailed {
                error: "lost track of the process".into(),
            },
        };
        let next = self.finish(reason, ran_for);
        if let Some(reply) = stop_reply {
            let _ = reply.send(format!("{}: stopped", self.spec.name));
        }
        match shutdown_done {
            Some(done) => {
                let _ = done.send(killed);
                Outcome::ShutDown
            }
            None => Outcome::Next(next),
        }
    }

    /// Sends the stop signal to the process group (once) and arms the SIGKILL timer. A later,
    /// stronger reason (stop, shutdown) replaces a restart reason; a deadline only shortens it.
    fn begin_stop(
        &mut self,
        pid: u32,
        stopping: &mut Option<ExitReason>,
        kill_at: &mut Option<Instant>,
        reason: ExitReason,
        deadline: Option<Instant>,
    ) {
        let now = Instant::now();
        let mut at = now + self.spec.stop_timeout;
        if let Some(d) = deadline {
            at = at.min(d);
        }
        match stopping {
            Some(current) => {
                if matches!(reason, ExitReason::StopCommand | ExitReason::Shutdown) {
                    *current = reason;
                }
                if let Some(k) = kill_at {
                    *k = (*k).min(at);
                }
            }
            None => {
                self.output.note(&format!("stopping: {reason}"));
                *stopping = Some(reason);
                *kill_at = Some(at);
                self.life.stopping(now);
                let signal = self.spec.stop_signal;
                self.shared.reaper.signal_group(pid, signal.number);
                self.detail = format!(
                    "sent SIG{} to the process group; SIGKILL in {}",
                    signal.name,
                    human(at.saturating_duration_since(now))
                );
                self.publish();
            }
        }
    }

    /// Records the end of a run and says what comes next.
    fn finish(&mut self, reason: ExitReason, ran_for: Duration) -> Next {
        let next = self.life.ended(
            reason.clone(),
            ran_for,
            Instant::now(),
            rand::random::<f64>(),
        );
        self.detail = match next {
            Next::StartNow => "restarting now".into(),
            Next::StartAfter(delay) => {
                let mut d = format!("next start in {}", human_short(delay));
                if self.spec.restart == RestartPolicy::Always && self.life.backoff_at_cap() {
                    d.push_str(&format!(
                        " (at the {} cap; restart = \"always\" keeps trying)",
                        human(self.spec.backoff.max)
                    ));
                }
                d
            }
            Next::StayDown => String::new(),
        };
        let what = match (next, self.life.state()) {
            (Next::StayDown, state) => format!("{reason}; now {state}"),
            _ => format!("{reason}; {}", self.detail),
        };
        self.output.note(&what);
        if self.life.state() == ProgramState::Fatal {
            tracing::error!(program = %self.spec.name, %reason, "gave up: FATAL");
        } else {
            tracing::info!(program = %self.spec.name, %what, "program ended");
        }
        self.publish();
        next
    }

    /// True when the program left its restart file (and it is consumed).
    fn restart_requested(&self) -> bool {
        match &self.spec.restart_file {
            Some(file) if file.exists() => {
                let _ = std::fs::remove_file(file);
                true
            }
            _ => false,
        }
    }

    /// Waits (in STARTING, without a process) until every dependency is RUNNING and, when
    /// required, a GPU is present.
    async fn wait_prerequisites(&mut self) -> Prerequisites {
        let board = self.shared.board.clone();
        let mut changes = board.subscribe();
        let gpu_deadline = match self.spec.gpu {
            GpuNeed::Required { wait } => Some(Instant::now() + wait),
            GpuNeed::NotNeeded => None,
        };
        loop {
            let missing: Vec<String> = self
                .spec
                .depends_on
                .iter()
                .filter(|d| !board.dependency_met(d))
                .cloned()
                .collect();
            let gpu = board.gpu();
            let gpu_missing = gpu_deadline.is_some() && !gpu.is_present();
            if missing != self.waiting_for {
                self.waiting_for = missing.clone();
                self.publish();
            }
            if missing.is_empty() && !gpu_missing {
                return Prerequisites::Met;
            }
            let detail = if !missing.is_empty() {
                waiting_detail(&missing, |d| board.is_oneshot(d))
            } else {
                format!("waiting for a GPU ({})", gpu.summary())
            };
            if let (true, Some(deadline)) = (gpu_missing, gpu_deadline) {
                if Instant::now() >= deadline {
                    return Prerequisites::NoGpu(format!(
                        "none appeared within {}: {}",
                        human(deadline.saturating_duration_since(self.life.since())),
                        gpu.summary()
                    ));
                }
            }
            if detail != self.detail {
                self.detail = detail;
                self.publish();
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = sleep_until(gpu_deadline.unwrap_or_else(Instant::now).into()), if gpu_deadline.is_some() => {}
                request = self.requests.recv() => match request {
                    Some(Request::Start(reply) | Request::Restart(reply)) => {
                        let _ = reply.send(format!("{}: starting ({})", self.spec.name, self.detail));
                    }
                    Some(Request::Stop(reply)) => {
                        self.waiting_for.clear();
                        return Prerequisites::Stopped(reply);
                    }
                    Some(Request::Shutdown { done, .. }) => {
                        self.waiting_for.clear();
                        return Prerequisites::ShutDown(done);
                    }
                    None => return Prerequisites::ShutDown(oneshot::channel().0),
                },
            }
        }
    }

    /// The process to start: argv, directory, account and environment as of now.
    fn launch(&self) -> Result<Launch, String> {
        let account: Option<Account> = match &self.spec.user {
            Some(spec) => Some(user::resolve(spec)?),
            None => None,
        };
        let file = match &self.shared.environment_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => parse_environment_file(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the environment file");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let env = program_environment(
            self.shared.inherited.iter().cloned(),
            &file,
            account.as_ref(),
            &self.spec.env,
        );
        Ok(Launch {
            argv: self.spec.command.clone(),
            cwd: self.spec.cwd.clone(),
            env,
            account,
        })
    }

    fn publish(&self) {
        let now = Instant::now();
        let since = self.life.since();
        let since_wall = SystemTime::now()
            .checked_sub(now.saturating_duration_since(since))
            .unwrap_or_else(SystemTime::now);
        let state = self.life.state();
        let restarts = self.life.restarts();
        let last_exit = self.life.last_exit().cloned();
        let pid = self.pid;
        let detail = self.detail.clone();
        let waiting_for = self.waiting_for.clone();
        self.shared.board.update(&self.spec.name, |slot| {
            slot.state = state;
            slot.since = since;
            slot.since_wall = since_wall;
            slot.restarts = restarts;
            slot.last_exit = last_exit;
            slot.pid = pid;
            slot.detail = detail;
            slot.waiting_for = waiting_for;
        });
    }
}

/// "waiting for a, b to be RUNNING and provisioning to finish".
fn waiting_detail(missing: &[String], is_oneshot: impl Fn(&str) -> bool) -> String {
    let (finish, run): (Vec<&str>, Vec<&str>) = missing
        .iter()
        .map(String::as_str)
        .partition(|d| is_oneshot(d));
    let mut parts = Vec::new();
    if !run.is_empty() {
        parts.push(format!("{} to be RUNNING", run.join(", ")));
    }
    if !finish.is_empty() {
        parts.push(format!("{} to finish", finish.join(", ")));
    }
    format!("waiting for {}", parts.join(" and "))
}

/// `1.5s`, `250ms`, `60s`: a delay as people read it.
fn human_short(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        let ms = d.as_millis();
        if ms < 1000 {
            format!("{ms}ms")
        } else {
            format!("{:.1}s", d.as_secs_f64())
        }
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_detail_names_what_must_run_and_what_must_finish() {
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let oneshot = |d: &str| d == "provisioning";
        assert_eq!(
            waiting_detail(&names(&["provisioning"]), oneshot),
            "waiting for provisioning to finish"
        );
        assert_eq!(
            waiting_detail(&names(&["a", "provisioning", "b"]), oneshot),
            "waiting for a, b to be RUNNING and provisioning to finish"
        );
    }
}

/// Aborts the task when dropped: probes end with their run.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
