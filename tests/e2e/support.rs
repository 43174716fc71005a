//! What the end-to-end tests (`tests/e2e_*.rs`) share: finding the real programs (the
//! repository's `.venv` with `tests/e2e/requirements.txt`, Debian's Chromium and chromedriver),
//! running the Python apps and clients of `tests/e2e/` as child processes, and a gateway with
//! basic auth in front of them.
//!
//! A missing program is a loud skip on a developer's machine and a failure under `CI=true`
//! (`.ci/run` installs them all): an end-to-end suite never passes by not running.

#![allow(dead_code)] // each e2e test file uses a different part

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The gateway's user in every e2e test.
pub const USER: &str = "e2e";
pub const PASSWORD: &str = "e2e-password";

/// Generous: Python apps import slowly on a loaded 2-core machine.
pub const START_PATIENCE: Duration = Duration::from_secs(120);

/// The `Authorization` value of [`USER`].
pub fn authorization() -> String {
    basic_auth(USER, PASSWORD)
}

/// Starts a gateway with basic auth for [`USER`] (bcrypt, cost 4: the hash is not what these
/// tests are about) in front of `routes`.
pub async fn gateway(routes: &[String]) -> Gateway {
    gateway_with(routes, |setup| setup).await
}

/// [`gateway`], with the [`Setup`] adjusted by `adjust` (extra environment, files).
pub async fn gateway_with(routes: &[String], adjust: impl FnOnce(Setup) -> Setup) -> Gateway {
    let line = vastgate::auth::htpasswd_line(USER, PASSWORD, 4).expect("htpasswd line");
    let setup = Setup::new(
        "auth = \"basic\"\nhtpasswd = \"htpasswd\"\nfailure_limit = 1000",
        routes,
    )
    .file("htpasswd", format!("{line}\n"));
    Gateway::start_with(&adjust(setup)).await
}

/// A file of `tests/e2e/`.
pub fn e2e_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e")
        .join(name)
}

/// Where tests leave what a person may want to look at afterwards (screenshots).
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// Fails under `CI=true`, else says loudly that the test is skipped. Returns `None` so callers
/// can `return` on it.
pub fn missing<T>(what: &str) -> Option<T> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{what}; .ci/run installs it and CI must run this test");
    eprintln!("!!!! SKIPPED: {what} (run .ci/run, or see tests/e2e/requirements.txt) !!!!");
    None
}

/// The Python of the e2e venv (`VASTGATE_PYTHON`, else `.venv/bin/python` of the repository),
/// once it imports every module of `modules`.
pub fn python(modules: &[&str]) -> Option<PathBuf> {
    let exe = std::env::var_os("VASTGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    if !exe.exists() {
        return missing(&format!("no Python at {}", exe.display()));
    }
    let import = format!("import {}", modules.join(", "));
    let out = Command::new(&exe)
        .args(["-c", &import])
        .output()
        .expect("run the venv's python");
    if !out.status.success() {
        return missing(&format!(
            "{} cannot `{import}`: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Some(exe)
}

/// Debian's `chromium` and `chromedriver` (or `VASTGATE_CHROMIUM` / `VASTGATE_CHROMEDRIVER`).
pub fn chromium() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let browser = find("VASTGATE_CHROMIUM", "/usr/bin/chromium");
    let driver = find("VASTGATE_CHROMEDRIVER", "/usr/bin/chromedriver");
    for exe in [&browser, &driver] {
        if !exe.exists() {
            return missing(&format!(
                "{} is not installed (apt-get install chromium chromium-driver)",
                exe.display()
            ));
        }
    }
    Some((browser, driver))
}

/// Whether curl is installed (a skip or failure as [`missing`] says when not).
pub fn curl() -> Option<()> {
    match Command::new("curl").arg("--version").output() {
        Ok(out) if out.status.success() => Some(()),
        _ => missing("curl is not installed"),
    }
}

/// A long-running child (a Python app) in its own process group, which is killed as a whole
/// when this is dropped (Jupyter's kernels and the fake ttyd's shell go with it).
pub struct App {
    pub name: String,
    child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl App {
    /// Starts `program` with `args` and extra environment.
    pub fn spawn(name: &str, program: &Path, args: &[String], env: &[(&str, &str)]) -> App {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({}): {e}", program.display()));
        let stdout = Lines::follow(child.stdout.take().unwrap());
        let stderr = Lines::follow(child.stderr.take().unwrap());
        App {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    /// Starts `tests/e2e/SCRIPT` with the venv's `python`.
    pub fn python(python: &Path, script: &str, args: &[String]) -> App {
        let mut all = vec![e2e_file(script).display().to_string()];
        all.extend_from_slice(args);
        App::spawn(script, python, &all, &[])
    }

    /// Waits until the app prints a line equal to `ready` on stdout; fails the test, with the
    /// app's output, if it exits or takes longer than [`START_PATIENCE`].
    pub async fn wait_ready(&mut self, ready: &str) {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if self.stdout.all().iter().any(|l| l == ready) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "{} exited with {status} before it was ready:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready within {START_PATIENCE:?}:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `GET path` on `addr` (the app's own port, not the gateway) answers at all.
    pub async fn wait_http(&mut self, addr: SocketAddr, path: &str) {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let probe =
                tokio::time::timeout(Duration::from_secs(5), raw_exchange(addr, req.as_bytes()));
            if let Ok(Ok(_)) = probe.await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "{} exited with {status} before it answered:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer within {START_PATIENCE:?}:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the app printed so far.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.stdout.text(),
            self.name,
            self.stderr.text()
        )
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
        // The group's id is the child's pid (process_group(0)); it holds only what we started.
        // SAFETY: kill(2) with a negative pid signals that process group.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// What a client script printed and how it ended.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The last line of stdout, parsed as JSON; fails the test (with everything the script
    /// printed) when the script failed or printed no JSON.
    pub fn json(&self) -> serde_json::Value {
        let last = self.stdout.lines().last().unwrap_or_default();
        match serde_json::from_str(last) {
            Ok(value) if self.ok => value,
            _ => panic!(
                "the client script failed or printed no JSON:\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout, self.stderr
            ),
        }
    }
}

/// Runs `program ARGS` to completion within `limit` (killed after it), without blocking the
/// runtime: the gateway and the test's own servers keep running meanwhile.
pub async fn run_to_end(program: &Path, args: &[String], limit: Duration) -> Ran {
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let what = format!("{} {}", program.display(), args.join(" "));
    let out = within(limit, &what, child.wait_with_output())
        .await
        .expect("wait for the client");
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `tests/e2e/SCRIPT ARGS` with the venv's `python`, as [`run_to_end`].
pub async fn run_python(python: &Path, script: &str, args: &[String], limit: Duration) -> Ran {
    let mut all = vec![e2e_file(script).display().to_string()];
    all.extend_from_slice(args);
    run_to_end(python, &all, limit).await
}

/// The `host:port` of an absolute URL (userinfo dropped), or `None` for other schemes.
pub fn authority(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .or_else(|| url.strip_prefix("ws://"))
        .or_else(|| url.strip_prefix("wss://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    Some(
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host)
            .to_ascii_lowercase(),
    )
}
