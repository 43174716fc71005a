//! The supervisor's shared, read-only picture of its programs, for whoever shows them: the
//! control socket (`vastgate status`), the gateway's "Forge is starting" page and its portal.
//!
//! Readers take a snapshot ([`ProgramView`]) under a short read lock and never wait on a program;
//! writers are the program tasks, one slot each. Every change bumps a counter on a `watch` channel
//! so that a reader can wait for "something changed" instead of polling.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::gpu::GpuReport;
use super::output::ProgramOutput;
use super::state::{ExitReason, ProgramState};

/// How many of a program's last output lines a view carries.
pub const RECENT_LINES: usize = 20;

/// A snapshot of one program, as `vastgate status --json` and the gateway see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramView {
    pub name: String,
    pub state: ProgramState,
    /// What it is doing or waiting for: "waiting for forge", "next start in 4s", …
    pub detail: String,
    /// When the current state began, in seconds since the Unix epoch.
    pub since_unix: u64,
    /// How long it has been in the current state, in milliseconds (monotonic clock).
    pub in_state_ms: u64,
    /// Restarts since the supervisor started (automatic and requested).
    pub restarts: u32,
    pub last_exit: Option<ExitReason>,
    /// The process (and process group) id while one exists.
    pub pid: Option<u32>,
    pub autostart: bool,
    /// The last lines of its output, oldest first.
    pub recent_log_lines: Vec<String>,
    /// Runs to completion (`oneshot = true`): a clean exit is its success, not an outage.
    #[serde(default)]
    pub oneshot: bool,
    /// The dependencies it is waiting for before it can start (STARTING without a process).
    #[serde(default)]
    pub waiting_for: Vec<String>,
}

impl ProgramView {
    pub fn in_state(&self) -> Duration {
        Duration::from_millis(self.in_state_ms)
    }
}

/// Facts about the supervisor process itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorFacts {
    pub pid: u32,
    /// PID 1 of its namespace (Docker's entrypoint mode).
    pub pid1: bool,
    /// A child subreaper (started by Vast's launcher or a shell).
    pub subreaper: bool,
    /// Orphans reaped so far.
    pub orphans_reaped: u64,
}

/// What a program task writes about its program.
pub(crate) struct Slot {
    pub name: String,
    pub autostart: bool,
    pub state: ProgramState,
    pub detail: String,
    pub since: Instant,
    pub since_wall: SystemTime,
    pub restarts: u32,
    pub last_exit: Option<ExitReason>,
    pub pid: Option<u32>,
    pub output: Arc<ProgramOutput>,
    pub oneshot: bool,
    pub waiting_for: Vec<String>,
}

/// The shared picture of every program and the GPU. Cheap to read from any thread.
pub struct Board {
    slots: RwLock<Vec<Slot>>,
    gpu: RwLock<GpuReport>,
    changes: watch::Sender<u64>,
}

impl Board {
    pub(crate) fn new(slots: Vec<Slot>) -> Board {
        Board {
            slots: RwLock::new(slots),
            gpu: RwLock::new(GpuReport::Unknown),
            changes: watch::channel(0).0,
        }
    }

    /// Every program, sorted by name (as `supervisorctl status` lists them).
    pub fn programs(&self) -> Vec<ProgramView> {
        let now = Instant::now();
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.iter().map(|s| view(s, now)).collect()
    }

    /// One program by name.
    pub fn program(&self, name: &str) -> Option<ProgramView> {
        let now = Instant::now();
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.iter().find(|s| s.name == name).map(|s| view(s, now))
    }

    /// What `nvidia-smi` said last.
    pub fn gpu(&self) -> GpuReport {
        self.gpu.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A receiver that wakes on every change of any program (or of the GPU report).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn update(&self, name: &str, change: impl FnOnce(&mut Slot)) {
        {
            let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
                change(slot);
            }
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn set_gpu(&self, report: GpuReport) {
        *self.gpu.write().unwrap_or_else(|e| e.into_inner()) = report;
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn state_of(&self, name: &str) -> Option<ProgramState> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.iter().find(|s| s.name == name).map(|s| s.state)
    }

    /// Whether a program that `depends_on` `name` may start: `name` is RUNNING, or it is a
    /// oneshot that has ended for good (EXITED or FATAL, whatever its exit status: a failed
    /// provisioning must not keep Forge down; the failure shows in its state and log).
    pub(crate) fn dependency_met(&self, name: &str) -> bool {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .find(|s| s.name == name)
            .is_some_and(|s| dependency_met(s.oneshot, s.state))
    }

    /// Whether `name` is a oneshot (false when there is no such program).
    pub(crate) fn is_oneshot(&self, name: &str) -> bool {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.iter().any(|s| s.name == name && s.oneshot)
    }
}

/// See [`Board::dependency_met`].
fn dependency_met(oneshot: bool, state: ProgramState) -> bool {
    if oneshot {
        matches!(state, ProgramState::Exited | ProgramState::Fatal)
    } else {
        state == ProgramState::Running
    }
}

fn view(s: &Slot, now: Instant) -> ProgramView {
    ProgramView {
        name: s.name.clone(),
        state: s.state,
        detail: s.detail.clone(),
        since_unix: s
            .since_wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        in_state_ms: now.saturating_duration_since(s.since).as_millis() as u64,
        restarts: s.restarts,
        last_exit: s.last_exit.clone(),
        pid: s.pid,
        autostart: s.autostart,
        recent_log_lines: s
            .output
            .ring
            .tail(RECENT_LINES)
            .iter()
            .map(|l| l.to_string())
            .collect(),
        oneshot: s.oneshot,
        waiting_for: s.waiting_for.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_oneshot_satisfies_dependents_once_it_has_ended_for_good() {
        use ProgramState::*;
        for state in [Stopped, Starting, Running, Backoff, Stopping] {
            assert!(!dependency_met(true, state), "{state}");
        }
        assert!(dependency_met(true, Exited) && dependency_met(true, Fatal));
        assert!(dependency_met(false, Running));
        assert!(!dependency_met(false, Exited) && !dependency_met(false, Fatal));
    }
}
