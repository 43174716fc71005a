//! Starting processes: each in its own session and process group, as its account, with exactly
//! the environment it was given, its stdout and stderr on one pipe.
//!
//! Its own process group lets a stop signal reach everything the program started (a shell's
//! children, Forge's workers) and keeps terminal signals of the supervisor away from it. Everything
//! between `fork` and `exec` is a raw system call (`setsid`, `setgroups`, `setgid`, `setuid`);
//! the account was resolved beforehand. The children are reaped by the [`Reaper`] only.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::{Gid, Uid};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::reaper::{ExitStatus, Reaper};
use super::user::Account;

/// Everything needed to start one process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The complete environment (nothing else is inherited).
    pub env: BTreeMap<String, String>,
    pub account: Option<Account>,
}

/// A started process: its pid (also its process group), its exit, and its merged output.
pub struct Started {
    pub pid: u32,
    pub exit: oneshot::Receiver<ExitStatus>,
    pub output: pipe::Receiver,
}

/// Starts `launch` with stdin from `/dev/null` and stdout and stderr into one pipe.
pub fn start(reaper: &Reaper, launch: &Launch) -> io::Result<Started> {
    let Some((program, args)) = launch.argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let write_err = write.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(&launch.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write_err));
    if let Some(dir) = &launch.cwd {
        cmd.current_dir(dir);
    }
    let ids = launch.account.as_ref().map(|a| {
        let groups: Vec<Gid> = a.groups.iter().map(|&g| Gid::from_raw(g)).collect();
        (Uid::from_raw(a.uid), Gid::from_raw(a.gid), groups)
    });
    // SAFETY: the closure runs in the forked child before `exec`; it only makes raw system calls
    // (no allocation, no locks) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            if let Some((uid, gid, groups)) = &ids {
                rustix::thread::set_thread_groups(groups)?;
                rustix::thread::set_thread_gid(*gid)?;
                rustix::thread::set_thread_uid(*uid)?;
            }
            Ok(())
        });
    }
    let spawned = reaper.spawn(&mut cmd)?;
    // Our copies of the pipe's write end live in `cmd`: close them, or the output never ends.
    drop(cmd);
    drop(spawned.child);
    let output = pipe::Receiver::from_owned_fd(read)?;
    Ok(Started {
        pid: spawned.pid,
        exit: spawned.exit,
        output,
    })
}

/// A short command's result.
#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    /// Its output (stdout and stderr), cut at 64 KiB.
    pub output: String,
}

/// Why a short command gave no result.
#[derive(Debug)]
pub enum RunError {
    Spawn(io::Error),
    /// It ran past its time and was killed; the receiver fires once it has been reaped.
    Timeout(oneshot::Receiver<ExitStatus>),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Spawn(e) => write!(f, "cannot run it: {e}"),
            RunError::Timeout(_) => f.write_str("timed out"),
        }
    }
}

/// Runs `launch` to completion within `timeout`, collecting its output. Past the timeout its
/// process group is killed.
pub async fn run_captured(
    reaper: &Reaper,
    launch: &Launch,
    timeout: Duration,
) -> Result<Captured, RunError> {
    const LIMIT: usize = 64 * 1024;
    let Started {
        pid,
        mut exit,
        output,
    } = start(reaper, launch).map_err(RunError::Spawn)?;
    let work = async {
        let mut bytes = Vec::new();
        let mut reader = output;
        let mut chunk = [0u8; 8192];
        // Read to the end (a writer blocked on a full pipe would never exit), keep the start.
        while let Ok(n) = reader.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let room = LIMIT.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..n.min(room)]);
        }
        let status = (&mut exit).await;
        (bytes, status)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok((bytes, Ok(status))) => Ok(Captured {
            status,
            output: String::from_utf8_lossy(&bytes).into_owned(),
        }),
        Ok((_, Err(_))) => Err(RunError::Spawn(io::Error::other(
            "the reaper dropped the exit status",
        ))),
        Err(_) => {
            reaper.signal_group(pid, libc::SIGKILL);
            Err(RunError::Timeout(exit))
        }
    }
}
