//! The harness of the supervisor's integration tests: the real `vastgate up` on a config written
//! for the test in a temp directory (control socket, logs and the programs' own files there too),
//! small `sh`/`python3` scripts as programs, and the control socket to watch them.
//!
//! Waits are bounded by generous deadlines (a slow, shared two-core machine) and always end in a
//! check of what was waited for.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use vastgate::supervisor::control::{self, Reply, Request};
use vastgate::supervisor::{ProgramView, SupervisorFacts};

/// How long anything that should happen "soon" may take.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn vastgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vastgate")
}

/// A `vastgate up` under test, with its directory.
pub struct Up {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
}

/// The config text: a quiet gateway on a free port, the supervisor's files in the temp dir, no
/// `/etc/environment`, then `supervisor_extra` lines and the programs.
pub fn config_text(supervisor_extra: &str, programs: &str) -> String {
    let deadline = if supervisor_extra.contains("stop_deadline") {
        ""
    } else {
        "stop_deadline = \"5s\"\n"
    };
    let environment = if supervisor_extra.contains("environment_file") {
        ""
    } else {
        "environment_file = \"off\"\n"
    };
    format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\naccess_log = \"off\"\n\n\
         [supervisor]\nsocket = \"vg.sock\"\nlog_dir = \"logs\"\n\
         {environment}{deadline}{supervisor_extra}\n\n{programs}\n"
    )
}

impl Up {
    /// Writes the config and starts `vastgate up` on it.
    pub fn start(programs: &str) -> Up {
        Up::start_with("", programs)
    }

    pub fn start_with(supervisor_extra: &str, programs: &str) -> Up {
        let up = Up::prepare(supervisor_extra, programs);
        up.launch(Command::new(vastgate_bin()))
    }

    /// Writes the config only (to start it another way, e.g. under `unshare`).
    pub fn prepare(supervisor_extra: &str, programs: &str) -> Up {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, config_text(supervisor_extra, programs)).expect("write config");
        let socket = dir.path().join("vg.sock");
        Up {
            dir,
            config,
            socket,
            child: None,
        }
    }

    /// Starts `command` followed by `up --config CONFIG`, output into files in the temp dir.
    pub fn launch(mut self, mut command: Command) -> Up {
        let stdout = File::create(self.path("up.stdout")).expect("stdout file");
        let stderr = File::create(self.path("up.stderr")).expect("stderr file");
        if command.get_program() != vastgate_bin() {
            command.arg(vastgate_bin());
        }
        let child = command
            .arg("up")
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start vastgate up");
        self.child = Some(child);
        self.wait_until("the control socket answers", |_| true);
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// The supervisor's status, or `None` when it does not answer.
    pub fn try_status(&self) -> Option<(SupervisorFacts, Vec<ProgramView>)> {
        let mut out = None;
        let _ = control::call(
            &self.socket,
            &Request::Status,
            Some(Duration::from_secs(10)),
            |reply| {
                if let Reply::Status {
                    supervisor,
                    programs,
                    ..
                } = reply
                {
                    out = Some((supervisor, programs));
                }
                false
            },
        );
        out
    }

    pub fn programs(&self) -> Vec<ProgramView> {
        self.try_status().expect("the supervisor answers").1
    }

    pub fn program(&self, name: &str) -> ProgramView {
        self.programs()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no program {name}"))
    }

    /// Polls the status until `check` holds for it; returns it. Fails the test after PATIENCE,
    /// with the last status and the supervisor's stderr.
    pub fn wait_until(
        &self,
        what: &str,
        check: impl Fn(&(SupervisorFacts, Vec<ProgramView>)) -> bool,
    ) -> (SupervisorFacts, Vec<ProgramView>) {
        self.wait_within(PATIENCE, what, check)
    }

    pub fn wait_within(
        &self,
        limit: Duration,
        what: &str,
        check: impl Fn(&(SupervisorFacts, Vec<ProgramView>)) -> bool,
    ) -> (SupervisorFacts, Vec<ProgramView>) {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < limit {
            if self.child.is_some() && self.try_status().is_none() {
                // A supervisor that already exited will not answer later either.
                let exited = std::fs::read_to_string(self.path("up.stderr"))
                    .is_ok_and(|e| e.contains("error: "));
                assert!(!exited, "vastgate up failed:\n{}", self.stderr());
            }
            if let Some(status) = self.try_status() {
                if check(&status) {
                    return status;
                }
                last = Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {limit:?} waiting until {what}\nlast status: {last:#?}\nstderr:\n{}",
            std::fs::read_to_string(self.path("up.stderr")).unwrap_or_default()
        );
    }

    /// Waits until program `name` satisfies `check`.
    pub fn wait_program(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&ProgramView) -> bool,
    ) -> ProgramView {
        let (_, programs) = self.wait_until(&format!("{name}: {what}"), |(_, ps)| {
            ps.iter().any(|p| p.name == name && check(p))
        });
        programs
            .into_iter()
            .find(|p| p.name == name)
            .expect("just seen")
    }

    /// Runs `vastgate ARGS --config CONFIG`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(vastgate_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .expect("run vastgate")
    }

    /// Sends `signal` to `vastgate up`.
    pub fn signal(&self, signal: i32) {
        let rc = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits for `vastgate up` to exit (at most `limit`); returns its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return (status, start.elapsed());
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!(
                    "vastgate up did not exit within {limit:?}\nstderr:\n{}",
                    std::fs::read_to_string(self.path("up.stderr")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.signal(libc::SIGTERM);
        self.wait_exit(PATIENCE)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("up.stderr")).unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Nanosecond timestamps, one per line (what `date +%s%N >> FILE` writes).
pub fn timestamps(path: &Path) -> Vec<u128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Gaps between consecutive timestamps, in milliseconds.
pub fn gaps_ms(stamps: &[u128]) -> Vec<u64> {
    stamps
        .windows(2)
        .map(|w| ((w[1].saturating_sub(w[0])) / 1_000_000) as u64)
        .collect()
}

/// Waits until `path` has at least `n` lines of timestamps.
pub fn wait_for_stamps(path: &Path, n: usize) -> Vec<u128> {
    let start = Instant::now();
    loop {
        let stamps = timestamps(path);
        if stamps.len() >= n {
            return stamps;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "only {} of {n} timestamps in {} after {PATIENCE:?}",
            stamps.len(),
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Zombie children of `parent`, as (pid, command) pairs.
pub fn zombie_children(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 1 && fields[0] == "Z" && fields[1].parse::<u32>() == Ok(parent) {
            out.push((pid, head.to_string()));
        }
    }
    out
}

/// Waits until `check` holds, polling; fails with `what` after PATIENCE.
pub fn eventually(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
