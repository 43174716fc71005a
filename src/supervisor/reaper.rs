//! The single owner of `waitpid`: reaps every child and orphan and hands exit statuses to whoever
//! spawned the process.
//!
//! As PID 1 (Docker's entrypoint mode) or as a child subreaper (under Vast's launcher), orphans of
//! our programs become our children, and someone must `wait` for them or they stay zombies. A
//! global `waitpid(-1)` loop does that, but it also steals the statuses of the children we started
//! ourselves — so nothing else in this process may wait for a child: programs, probe commands and
//! `nvidia-smi` are all started through [`Reaper::spawn`] and learn their exit from it.
//!
//! Three races are closed by one mutex:
//! - a child that exits before its pid is registered: spawning and registering happen under the
//!   lock, and reaping takes the same lock, so the status waits for the registration;
//! - `std`'s own `waitpid` after a failed `exec` (it waits for the failed child inside `spawn`):
//!   we never reap while a spawn is in progress, so that wait finds its child;
//! - signalling a reused process-group id: a group is signalled only under the lock and only while
//!   its leader is registered and not yet reaped — an unreaped zombie leader pins the id.
//!
//! When a registered leader has exited, what is left of its process group is killed while the
//! zombie still pins the group id, then the leader is reaped: a program's helpers never outlive it.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// A child started through the reaper: its pid, its exit (exactly once), and the `std` handle
/// (only for its stdio pipes — never wait on it).
pub struct Spawned {
    pub pid: u32,
    pub exit: oneshot::Receiver<ExitStatus>,
    pub child: Child,
}

/// The reaping owner. One per process; see the module documentation.
pub struct Reaper {
    registry: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
    orphans_reaped: AtomicU64,
    pid1: bool,
    subreaper: bool,
}

impl Reaper {
    /// Becomes the reaper of this process: a child subreaper unless already PID 1, with a task
    /// that reaps on every SIGCHLD (and once a second, in case signals coalesced badly). Call
    /// inside a Tokio runtime, once.
    pub fn start() -> io::Result<Arc<Reaper>> {
        let mut sigchld = signal(SignalKind::child())?;
        let pid1 = rustix::process::getpid().is_init();
        let subreaper = !pid1
            && match rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot become a child subreaper; orphans of programs will not be reaped here");
                    false
                }
            };
        let reaper = Arc::new(Reaper {
            registry: Mutex::new(HashMap::new()),
            orphans_reaped: AtomicU64::new(0),
            pid1,
            subreaper,
        });
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                r.reap();
            }
        });
        reaper.reap();
        Ok(reaper)
    }

    /// True when this process is PID 1 of its namespace.
    pub fn is_pid1(&self) -> bool {
        self.pid1
    }

    /// True when this process became a child subreaper.
    pub fn is_subreaper(&self) -> bool {
        self.subreaper
    }

    /// Processes reaped that nobody here had started (orphans reparented to us).
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans_reaped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns `command` and registers its pid before any reaping can happen.
    ///
    /// The command should make the child a process-group leader (see [`super::spawn`]) so that
    /// [`Reaper::signal_group`] reaches it and its descendants.
    pub fn spawn(&self, command: &mut Command) -> io::Result<Spawned> {
        let mut registry = self.lock();
        let child = command.spawn()?;
        let pid = child.id();
        let (tx, exit) = oneshot::channel();
        registry.insert(pid as i32, tx);
        Ok(Spawned { pid, exit, child })
    }

    /// Sends `signal` to the process group led by `pid` — only while that leader has not been
    /// reaped. Returns whether the signal was sent.
    pub fn signal_group(&self, pid: u32, signal: i32) -> bool {
        let registry = self.lock();
        if !registry.contains_key(&(pid as i32)) {
            return false;
        }
        send_to_group(pid as i32, signal)
    }

    /// SIGKILL to every process group we started that is still running.
    pub fn kill_all(&self) {
        let registry = self.lock();
        for &pid in registry.keys() {
            send_to_group(pid, libc::SIGKILL);
        }
    }

    /// Reaps every child that has exited, dispatching the statuses of registered ones.
    fn reap(&self) {
        let mut registry = self.lock();
        while let Some(pid) = peek_exited_child() {
            let registered = registry.contains_key(&pid);
            if registered {
                // The zombie leader still pins the group id: leftovers can be killed safely.
                send_to_group(pid, libc::SIGKILL);
            }
            let Some(raw) = Pid::from_raw(pid) else { break };
            let status = match rustix::process::waitpid(Some(raw), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => status,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(pid, error = %e, "waitpid failed");
                    break;
                }
            };
            let status = if let Some(code) = status.exit_status() {
                ExitStatus::Code(code)
            } else if let Some(signal) = status.terminating_signal() {
                ExitStatus::Signal(signal)
            } else {
                continue;
            };
            match registry.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {
                    self.orphans_reaped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pid, ?status, "reaped an orphan");
                }
            }
        }
    }
}

fn send_to_group(pgid: i32, signal: i32) -> bool {
    let (Some(pid), Some(signal)) = (Pid::from_raw(pgid), Signal::from_named_raw(signal)) else {
        return false;
    };
    rustix::process::kill_process_group(pid, signal).is_ok()
}

/// The pid of a child that has exited, left unreaped (`waitid(P_ALL, WEXITED | WNOWAIT)`).
fn peek_exited_child() -> Option<i32> {
    // SAFETY: `siginfo_t` is plain data for which all-zero is a valid value; `waitid` writes it
    // and `si_pid` reads a field that `waitid` always sets for P_ALL/WEXITED (0 when no child
    // has exited under WNOHANG).
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if rc != 0 {
            return None;
        }
        let pid = info.si_pid();
        (pid > 0).then_some(pid)
    }
}
