//! The program state machine: the states users know from supervisord, why a run ended, and what
//! happens next.
//!
//! Everything here is pure: the program task ([`super::program`]) performs the effects (spawning,
//! signalling, sleeping) and reports each event to a [`Lifecycle`], which decides the next state.
//! That keeps the policy (restart or not, how long to wait, when to give up) in one place that
//! tests can drive through every transition without a process or a clock.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::backoff::Backoff;
use crate::config::RestartPolicy;

/// A program's state, named as supervisord names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProgramState {
    /// Not running, and not meant to be until someone starts it.
    Stopped,
    /// Waiting for its dependencies or a GPU, or running but not yet ready (startup probe).
    Starting,
    /// Ready: the startup probe passed (or it stayed up for `ready_after`).
    Running,
    /// Ended; waiting out the restart delay.
    Backoff,
    /// The stop signal was sent; waiting for the process group to end.
    Stopping,
    /// Ended and, by its restart policy, stays down.
    Exited,
    /// Given up on, as the configuration asked (`start_retries`, a GPU that never came).
    Fatal,
}

impl ProgramState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramState::Stopped => "STOPPED",
            ProgramState::Starting => "STARTING",
            ProgramState::Running => "RUNNING",
            ProgramState::Backoff => "BACKOFF",
            ProgramState::Stopping => "STOPPING",
            ProgramState::Exited => "EXITED",
            ProgramState::Fatal => "FATAL",
        }
    }
}

impl fmt::Display for ProgramState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run ended (or never began).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitReason {
    /// The process exited by itself.
    Exited { code: i32 },
    /// The process was ended by a signal nobody here sent.
    Killed { signal: i32 },
    /// The command could not be started at all.
    SpawnFailed { error: String },
    /// The startup probe did not pass before its deadline.
    StartupProbe { error: String },
    /// The liveness probe failed `failure_threshold` times in a row.
    LivenessProbe { error: String },
    /// A line of output matched `restart_on_log`.
    LogTrigger { line: String },
    /// The program exited 0 after leaving its `restart_file` (Forge's restart button).
    RestartRequested,
    /// `vastgate restart` (or the control socket) asked for it.
    RestartCommand,
    /// `vastgate stop` asked for it.
    StopCommand,
    /// The supervisor is shutting down.
    Shutdown,
    /// `gpu = "required"` and no GPU appeared within `gpu_wait`.
    NoGpu { error: String },
}

impl ExitReason {
    /// A failure counts toward `start_retries` and is what `restart = "on-failure"` restarts.
    pub fn is_failure(&self) -> bool {
        match self {
            ExitReason::Exited { code } => *code != 0,
            ExitReason::Killed { .. }
            | ExitReason::SpawnFailed { .. }
            | ExitReason::StartupProbe { .. }
            | ExitReason::LivenessProbe { .. }
            | ExitReason::LogTrigger { .. }
            | ExitReason::NoGpu { .. } => true,
            ExitReason::RestartRequested
            | ExitReason::RestartCommand
            | ExitReason::StopCommand
            | ExitReason::Shutdown => false,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited { code } => write!(f, "exit status {code}"),
            ExitReason::Killed { signal } => write!(f, "killed by {}", signal_name(*signal)),
            ExitReason::SpawnFailed { error } => write!(f, "could not start: {error}"),
            ExitReason::StartupProbe { error } => write!(f, "startup probe failed: {error}"),
            ExitReason::LivenessProbe { error } => write!(f, "liveness probe failed: {error}"),
            ExitReason::LogTrigger { line } => write!(f, "log trigger: {line}"),
            ExitReason::RestartRequested => f.write_str("restart requested by the program"),
            ExitReason::RestartCommand => f.write_str("restarted by command"),
            ExitReason::StopCommand => f.write_str("stopped by command"),
            ExitReason::Shutdown => f.write_str("stopped at shutdown"),
            ExitReason::NoGpu { error } => write!(f, "no GPU: {error}"),
        }
    }
}

/// `SIGKILL` for 9, `signal 42` for what has no common name.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// What the program task does after a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Start again now (a requested restart: no backoff).
    StartNow,
    /// Start again after this delay (state BACKOFF).
    StartAfter(Duration),
    /// Stay down (STOPPED, EXITED or FATAL).
    StayDown,
}

/// One program's state and counters, advanced by the events of its runs.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    policy: RestartPolicy,
    start_retries: Option<u32>,
    state: ProgramState,
    since: Instant,
    restarts: u32,
    failures_in_row: u32,
    last_exit: Option<ExitReason>,
    backoff: Backoff,
    /// The last backoff delay was the cap.
    capped: bool,
}

impl Lifecycle {
    pub fn new(
        policy: RestartPolicy,
        start_retries: Option<u32>,
        backoff: Backoff,
        now: Instant,
    ) -> Lifecycle {
        Lifecycle {
            policy,
            start_retries,
            state: ProgramState::Stopped,
            since: now,
            restarts: 0,
            failures_in_row: 0,
            last_exit: None,
            backoff,
            capped: false,
        }
    }

    pub fn state(&self) -> ProgramState {
        self.state
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    pub fn last_exit(&self) -> Option<&ExitReason> {
        self.last_exit.as_ref()
    }

    /// True when the last restart delay was the cap (`restart = "always"` keeps trying there).
    pub fn backoff_at_cap(&self) -> bool {
        self.capped
    }

    fn enter(&mut self, state: ProgramState, now: Instant) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
    }

    /// A start was asked for (autostart, a command, or the end of a backoff delay). A person's
    /// `start` after FATAL or EXITED begins a fresh schedule.
    pub fn start(&mut self, now: Instant, by_person: bool) {
        if by_person && matches!(self.state, ProgramState::Fatal | ProgramState::Exited) {
            self.failures_in_row = 0;
            self.backoff.reset();
        }
        self.enter(ProgramState::Starting, now);
    }

    /// The process passed its startup probe (or stayed up for `ready_after`).
    pub fn ready(&mut self, now: Instant) {
        if self.state == ProgramState::Starting {
            self.enter(ProgramState::Running, now);
        }
    }

    /// The stop signal went to the process group.
    pub fn stopping(&mut self, now: Instant) {
        if matches!(self.state, ProgramState::Starting | ProgramState::Running) {
            self.enter(ProgramState::Stopping, now);
        }
    }

    /// Stopped while no process existed (in BACKOFF, or STARTING but still waiting).
    pub fn stopped_idle(&mut self, reason: ExitReason, now: Instant) {
        self.last_exit = Some(reason);
        self.enter(ProgramState::Stopped, now);
    }

    /// A run ended (or could not begin) for `reason` after `ran_for`; `random` in `[0, 1)` feeds
    /// the jitter. Decides the next state and says what to do.
    pub fn ended(
        &mut self,
        reason: ExitReason,
        ran_for: Duration,
        now: Instant,
        random: f64,
    ) -> Next {
        if self.backoff.observe_run(ran_for) {
            self.failures_in_row = 0;
        }
        let failure = reason.is_failure();
        if failure {
            self.failures_in_row = self.failures_in_row.saturating_add(1);
        }
        let next = match (&reason, self.policy) {
            (ExitReason::StopCommand | ExitReason::Shutdown, _) => {
                self.enter(ProgramState::Stopped, now);
                Next::StayDown
            }
            (ExitReason::NoGpu { .. }, _) => {
                self.enter(ProgramState::Fatal, now);
                Next::StayDown
            }
            (ExitReason::RestartRequested | ExitReason::RestartCommand, _) => {
                self.enter(ProgramState::Starting, now);
                Next::StartNow
            }
            (_, RestartPolicy::Never) => {
                self.enter(ProgramState::Exited, now);
                Next::StayDown
            }
            (_, RestartPolicy::OnFailure) if !failure => {
                self.enter(ProgramState::Exited, now);
                Next::StayDown
            }
            (_, RestartPolicy::OnFailure)
                if self
                    .start_retries
                    .is_some_and(|limit| self.failures_in_row > limit) =>
            {
                self.enter(ProgramState::Fatal, now);
                Next::StayDown
            }
            _ => {
                self.enter(ProgramState::Backoff, now);
                self.capped = self.backoff.at_cap();
                Next::StartAfter(self.backoff.next_delay(random))
            }
        };
        if next != Next::StayDown {
            self.restarts = self.restarts.saturating_add(1);
        }
        self.last_exit = Some(reason);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackoffConfig;

    const SEC: Duration = Duration::from_secs(1);

    fn life(policy: RestartPolicy, retries: Option<u32>) -> (Lifecycle, Instant) {
        let now = Instant::now();
        let backoff = Backoff::new(BackoffConfig {
            initial: SEC,
            max: 8 * SEC,
            reset_after: 60 * SEC,
            jitter: 0.0,
        });
        (Lifecycle::new(policy, retries, backoff, now), now)
    }

    fn crash(code: i32) -> ExitReason {
        ExitReason::Exited { code }
    }

    #[test]
    fn start_ready_stop_walks_the_usual_states() {
        let (mut l, now) = life(RestartPolicy::Always, None);
        assert_eq!(l.state(), ProgramState::Stopped);
        l.start(now, false);
        assert_eq!(l.state(), ProgramState::Starting);
        l.ready(now + SEC);
        assert_eq!(l.state(), ProgramState::Running);
        assert_eq!(l.since(), now + SEC);
        l.stopping(now + 2 * SEC);
        assert_eq!(l.state(), ProgramState::Stopping);
        let next = l.ended(ExitReason::StopCommand, 2 * SEC, now + 3 * SEC, 0.0);
        assert_eq!(next, Next::StayDown);
        assert_eq!(l.state(), ProgramState::Stopped);
        assert_eq!(l.restarts(), 0);
        assert_eq!(l.last_exit(), Some(&ExitReason::StopCommand));
    }

    #[test]
    fn ready_only_counts_while_starting() {
        let (mut l, now) = life(RestartPolicy::Always, None);
        l.ready(now);
        assert_eq!(l.state(), ProgramState::Stopped);
    }

    #[test]
    fn always_backs_off_with_growing_delays_and_never_goes_fatal() {
        let (mut l, now) = life(RestartPolicy::Always, None);
        let mut delays = Vec::new();
        for _ in 0..50 {
            l.start(now, false);
            match l.ended(crash(1), Duration::ZERO, now, 0.0) {
                Next::StartAfter(d) => delays.push(d.as_secs()),
                other => panic!("always must restart, got {other:?}"),
            }
            assert_eq!(l.state(), ProgramState::Backoff);
        }
        assert_eq!(&delays[..6], &[1, 2, 4, 8, 8, 8]);
        assert!(l.backoff_at_cap());
        assert_eq!(l.restarts(), 50);
    }

    #[test]
    fn always_restarts_after_a_clean_exit_too() {
        let (mut l, now) = life(RestartPolicy::Always, None);
        l.start(now, false);
        assert_eq!(l.ended(crash(0), SEC, now, 0.0), Next::StartAfter(SEC));
    }

    #[test]
    fn on_failure_stays_down_after_a_clean_exit() {
        let (mut l, now) = life(RestartPolicy::OnFailure, None);
        l.start(now, false);
        assert_eq!(l.ended(crash(0), SEC, now, 0.0), Next::StayDown);
        assert_eq!(l.state(), ProgramState::Exited);
    }

    #[test]
    fn on_failure_goes_fatal_only_after_its_retries() {
        let (mut l, now) = life(RestartPolicy::OnFailure, Some(2));
        for _ in 0..2 {
            l.start(now, false);
            assert!(matches!(
                l.ended(crash(3), Duration::ZERO, now, 0.0),
                Next::StartAfter(_)
            ));
        }
        l.start(now, false);
        assert_eq!(l.ended(crash(3), Duration::ZERO, now, 0.0), Next::StayDown);
        assert_eq!(l.state(), ProgramState::Fatal);
        // A person's start begins again from the first delay.
        l.start(now, true);
        assert_eq!(l.state(), ProgramState::Starting);
        assert_eq!(
            l.ended(crash(3), Duration::ZERO, now, 0.0),
            Next::StartAfter(SEC)
        );
    }

    #[test]
    fn a_stable_run_forgives_earlier_failures() {
        let (mut l, now) = life(RestartPolicy::OnFailure, Some(1));
        l.start(now, false);
        assert_eq!(
            l.ended(crash(1), Duration::ZERO, now, 0.0),
            Next::StartAfter(SEC)
        );
        l.start(now, false);
        assert_eq!(
            l.ended(crash(1), 61 * SEC, now, 0.0),
            Next::StartAfter(SEC),
            "a long run resets both the delay and the retry count"
        );
    }

    #[test]
    fn never_stays_exited_even_on_failure() {
        let (mut l, now) = life(RestartPolicy::Never, None);
        l.start(now, false);
        assert_eq!(
            l.ended(ExitReason::Killed { signal: 9 }, SEC, now, 0.0),
            Next::StayDown
        );
        assert_eq!(l.state(), ProgramState::Exited);
    }

    #[test]
    fn requested_restarts_skip_the_backoff() {
        for reason in [ExitReason::RestartRequested, ExitReason::RestartCommand] {
            let (mut l, now) = life(RestartPolicy::Never, None);
            l.start(now, false);
            assert_eq!(
                l.ended(reason.clone(), Duration::ZERO, now, 0.0),
                Next::StartNow
            );
            assert_eq!(l.state(), ProgramState::Starting);
            assert_eq!(l.restarts(), 1);
            assert_eq!(l.last_exit(), Some(&reason));
        }
    }

    #[test]
    fn probes_and_triggers_count_as_failures() {
        let (mut l, now) = life(RestartPolicy::OnFailure, None);
        for reason in [
            ExitReason::LivenessProbe { error: "x".into() },
            ExitReason::StartupProbe { error: "x".into() },
            ExitReason::LogTrigger { line: "x".into() },
        ] {
            l.start(now, false);
            assert!(matches!(
                l.ended(reason, Duration::ZERO, now, 0.0),
                Next::StartAfter(_)
            ));
        }
    }

    #[test]
    fn no_gpu_is_fatal_and_stop_while_idle_is_stopped() {
        let (mut l, now) = life(RestartPolicy::Always, None);
        l.start(now, false);
        let next = l.ended(
            ExitReason::NoGpu {
                error: "none".into(),
            },
            Duration::ZERO,
            now,
            0.0,
        );
        assert_eq!(next, Next::StayDown);
        assert_eq!(l.state(), ProgramState::Fatal);
        l.start(now, true);
        l.stopped_idle(ExitReason::StopCommand, now);
        assert_eq!(l.state(), ProgramState::Stopped);
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(crash(2).to_string(), "exit status 2");
        assert_eq!(
            ExitReason::Killed { signal: 9 }.to_string(),
            "killed by SIGKILL"
        );
        assert_eq!(signal_name(64), "signal 64");
    }
}
