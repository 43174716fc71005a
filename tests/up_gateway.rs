//! What the gateway of a real `vastgate up` shows of its supervised programs: the page a route
//! answers while its program is STARTING, in BACKOFF or stopped (and the program itself once it
//! is RUNNING), the portal as headless Chromium renders it, and the programs' metrics.
//!
//! Every test runs its own `vastgate up` on a config in a temp dir (control socket, logs and the
//! programs' scripts there too) with small python3/sh programs on free ports of 127.0.0.1. States
//! are polled through `vastgate status --json` or the gateway itself, never assumed after a sleep.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{basic_auth, free_port, get, metric, Reply};
use http::StatusCode;

/// Waits for things that take a program start or two; generous for a slow, shared machine.
const PATIENCE: Duration = Duration::from_secs(60);

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

/// A small HTTP program: prints `MARKER: listening on PORT`, answers every GET with
/// `hello from MARKER at PATH`, and exits with status 1 after answering `GET /crash`.
const APP_PY: &str = r#"
import http.server, os, sys
port, marker = int(sys.argv[1]), sys.argv[2]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {marker} at {self.path}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path == "/crash":
            os._exit(1)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"{marker}: listening on {port}", flush=True)
server.serve_forever()
"#;

// ---------------------------------------------------------------------------------------------
// A `vastgate up` with its gateway on a known port
// ---------------------------------------------------------------------------------------------

/// A running `vastgate up`; stopped with SIGTERM (then SIGKILL) when dropped.
struct UpGateway {
    dir: tempfile::TempDir,
    config: PathBuf,
    addr: SocketAddr,
    child: Child,
}

impl UpGateway {
    /// A temp dir holding `app.py` and an htpasswd file with [`USER`]/[`PASSWORD`], made by
    /// `vastgate passwd`.
    fn prepare() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("app.py"), APP_PY).expect("write app.py");
        let mut passwd = Command::new(common::vastgate_bin())
            .args(["passwd", USER, "--cost", "4", "--file"])
            .arg(dir.path().join("htpasswd"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vastgate passwd");
        use std::io::Write;
        passwd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .expect("password on stdin");
        let out = passwd.wait_with_output().expect("vastgate passwd");
        assert!(
            out.status.success(),
            "vastgate passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    /// Starts `vastgate up` in `dir` with `auth = "basic"` (the htpasswd of [`prepare`]),
    /// `supervisor` lines under `[supervisor]` and `rest` (routes and programs) after it, and
    /// waits until its `/healthz` answers.
    fn start(dir: tempfile::TempDir, supervisor: &str, rest: &str) -> UpGateway {
        let config = dir.path().join("proxy.toml");
        let nvidia_smi = if supervisor.contains("nvidia_smi") {
            String::new()
        } else {
            // No real nvidia-smi: the GPU line is the same on every machine.
            "nvidia_smi = \"no-such-nvidia-smi\"\n".into()
        };
        let mut last_error = String::new();
        // The port was free when picked; if something takes it before `up` binds it, retry.
        for _ in 0..3 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let text = format!(
                "[gateway]\nlisten = \"{addr}\"\nauth = \"basic\"\nhtpasswd = \"htpasswd\"\n\n\
                 [supervisor]\nsocket = \"vg.sock\"\nlog_dir = \"logs\"\n\
                 environment_file = \"off\"\nstop_deadline = \"5s\"\n{nvidia_smi}{supervisor}\n\n\
                 {rest}\n"
            );
            std::fs::write(&config, &text).expect("write proxy.toml");
            let stdout = std::fs::File::create(dir.path().join("up.stdout")).expect("stdout");
            let stderr = std::fs::File::create(dir.path().join("up.stderr")).expect("stderr");
            let mut child = Command::new(common::vastgate_bin())
                .arg("up")
                .arg("--config")
                .arg(&config)
                .current_dir(dir.path())
                .env("VASTGATE_LOG", "info")
                .env("NO_COLOR", "1")
                .env_remove("VASTGATE_CONFIG")
                .env_remove("USERNAME")
                .env_remove("PASSWORD")
                .env_remove("OPEN_BUTTON_TOKEN")
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("start vastgate up");
            match wait_healthy(&mut child, addr, dir.path()) {
                Ok(()) => {
                    return UpGateway {
                        dir,
                        config,
                        addr,
                        child,
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if !e.contains("cannot listen") {
                        panic!("vastgate up did not start:\n{e}\nconfig:\n{text}");
                    }
                    last_error = e;
                }
            }
        }
        panic!("vastgate up could not bind a port: {last_error}");
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("up.stderr")).unwrap_or_default()
    }

    fn authorization(&self) -> String {
        basic_auth(USER, PASSWORD)
    }

    /// `GET path` through the gateway, logged in, with these extra headers.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let authorization = self.authorization();
        let mut all = vec![("authorization", authorization.as_str())];
        all.extend_from_slice(headers);
        get(self.addr, path, &all).await
    }

    /// The page a browser gets for `path`.
    async fn page(&self, path: &str) -> Reply {
        self.get(
            path,
            &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
        )
        .await
    }

    /// Runs `vastgate ARGS --config CONFIG` to completion.
    async fn cli(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(common::vastgate_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run vastgate")
    }

    /// Program `name` as `vastgate status --json` shows it.
    async fn program(&self, name: &str) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]).await;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "vastgate status --json ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        status["programs"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no program {name} in {status:#}"))
    }

    /// Polls `vastgate status --json` until program `name` is in `state`; returns its view.
    async fn wait_state(&self, name: &str, state: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let program = self.program(name).await;
            if program["state"] == state {
                return program;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{name} is not {state} after {PATIENCE:?}: {program:#}\nstderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `GET path` (as a browser when `html`) until `check` accepts the reply; every reply
    /// before that must pass `meanwhile`. Returns the accepted reply.
    async fn poll(
        &self,
        path: &str,
        html: bool,
        what: &str,
        meanwhile: impl Fn(&Reply),
        check: impl Fn(&Reply) -> bool,
    ) -> Reply {
        let start = Instant::now();
        loop {
            let reply = if html {
                self.page(path).await
            } else {
                self.get(path, &[]).await
            };
            if check(&reply) {
                return reply;
            }
            meanwhile(&reply);
            assert!(
                start.elapsed() < PATIENCE,
                "{what}: not within {PATIENCE:?}; last reply {}:\n{}\nstderr:\n{}",
                reply.status,
                reply.text(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A metric of `/_vastgate/metrics` (the login is cached after the first request).
    async fn metric(&self, name: &str) -> u64 {
        metric(self.addr, name, &self.authorization()).await
    }
}

impl Drop for UpGateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- vastgate up stderr ---\n{}\n--- stdout ---\n{}",
                self.stderr(),
                std::fs::read_to_string(self.path("up.stdout")).unwrap_or_default()
            );
        }
        // SAFETY: kill(2) on our own child, not yet waited for, so its pid is still ours.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `/healthz` on `addr` answers 200; the stderr of `up` when it exits first.
fn wait_healthy(child: &mut Child, addr: SocketAddr, dir: &Path) -> Result<(), String> {
    let stderr = || std::fs::read_to_string(dir.join("up.stderr")).unwrap_or_default();
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}:\n{}", stderr()));
        }
        if healthz_ok(addr) {
            return Ok(());
        }
        if start.elapsed() > PATIENCE {
            return Err(format!("no /healthz within {PATIENCE:?}:\n{}", stderr()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking `GET /healthz` that answers 200 within a few seconds.
fn healthz_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut reply = Vec::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_end(&mut reply).is_ok()
        && reply.starts_with(b"HTTP/1.1 200")
}

/// `[program.NAME]` running `app.py` on `port` (printing `marker`), plus `extra` lines.
fn app_program(name: &str, port: u16, marker: &str, extra: &str) -> String {
    format!(
        "[program.{name}]\ncommand = [\"python3\", \"app.py\", \"{port}\", \"{marker}\"]\n{extra}\n"
    )
}

/// A `[[route]]` for program `name` under `/NAME/`, shown as `title`.
fn program_route(name: &str, title: &str, port: u16) -> String {
    format!(
        "[[route]]\nprefix = \"/{name}/\"\nupstream = \"http://127.0.0.1:{port}\"\n\
         strip_prefix = true\nprogram = \"{name}\"\nname = \"{title}\"\n"
    )
}

/// A startup probe on the program's own HTTP port: RUNNING means it answers.
fn http_probe(port: u16) -> String {
    format!("startup_probe = {{ http = \"http://127.0.0.1:{port}/\", period = \"200ms\" }}")
}

fn assert_refreshing_503(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(
        reply.header("retry-after"),
        Some("5"),
        "{:?}",
        reply.headers
    );
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{:?}",
        reply.headers
    );
    assert!(
        reply.text().contains("<meta http-equiv=\"refresh\""),
        "{}",
        reply.text()
    );
}

// ---------------------------------------------------------------------------------------------
// The page of a program that is not RUNNING
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn starting_page_shows_the_program_until_its_startup_probe_passes() {
    let dir = UpGateway::prepare();
    let port = free_port();
    let ready = dir.path().join("ready");
    let probe = format!(
        "startup_probe = {{ command = [\"test\", \"-e\", \"{}\"], period = \"200ms\" }}",
        ready.display()
    );
    let up = UpGateway::start(
        dir,
        "",
        &format!(
            "{}\n{}",
            program_route("app", "Demo App", port),
            app_program("app", port, "demo-app-7f3a", &probe)
        ),
    );

    // The program serves, but its startup probe has not passed: the gateway holds the route.
    let browser = up
        .poll(
            "/app/",
            true,
            "the starting page shows the program's output",
            assert_refreshing_503,
            |r| r.text().contains("demo-app-7f3a: listening on"),
        )
        .await;
    assert_refreshing_503(&browser);
    let page = browser.text();
    assert!(
        page.contains("<title>Demo App is starting</title>"),
        "{page}"
    );
    assert!(page.contains("<h1>Demo App is starting</h1>"), "{page}");
    assert!(page.contains("STARTING for 0:"), "{page}");
    assert!(page.contains("waiting for the startup probe"), "{page}");
    assert!(page.contains("Its last output:"), "{page}");
    let direct = get(([127, 0, 0, 1], port).into(), "/", &[]).await;
    assert_eq!(
        direct.status,
        StatusCode::OK,
        "the program itself already answers"
    );

    // Not to strangers: the page shows the program's output.
    let stranger = get(up.addr, "/app/", &[("accept", "text/html")]).await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);
    assert!(
        !stranger.text().contains("demo-app-7f3a"),
        "{}",
        stranger.text()
    );

    let api = up.get("/app/sdapi/v1/options", &[]).await;
    assert_eq!(
        api.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        api.text()
    );
    assert_eq!(api.header("retry-after"), Some("5"));
    assert_eq!(api.header("content-type"), Some("application/json"));
    let json = api.json();
    assert_eq!(json["status"], 503, "{json:#}");
    assert_eq!(json["error"], "Demo App is starting", "{json:#}");
    let program = &json["program"];
    assert_eq!(program["name"], "app", "{json:#}");
    assert_eq!(program["state"], "STARTING", "{json:#}");
    assert_eq!(program["restarts"], 0, "{json:#}");
    assert!(program["last_exit"].is_null(), "{json:#}");
    assert!(program["in_state_s"].is_u64(), "{json:#}");
    let log = program["log"].as_array().expect("log lines");
    assert!(
        log.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("demo-app-7f3a: listening"))),
        "{json:#}"
    );

    // Through Cloudflare the same page comes with 200, or Cloudflare would hide it.
    let cloudflare = up
        .get(
            "/app/",
            &[("accept", "text/html"), ("cf-ray", "8c1e2f3a4b5c6d7e-AMS")],
        )
        .await;
    assert_eq!(cloudflare.status, StatusCode::OK, "{}", cloudflare.text());
    assert_eq!(cloudflare.header("retry-after"), Some("5"));
    assert!(
        cloudflare.text().contains("Demo App is starting"),
        "{}",
        cloudflare.text()
    );

    // Ready: the same URL reaches the program.
    std::fs::write(&ready, "").expect("create the ready file");
    let running = up.wait_state("app", "RUNNING").await;
    assert_eq!(running["restarts"], 0, "{running:#}");
    let served = up.page("/app/hello").await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.text());
    assert_eq!(served.text(), "hello from demo-app-7f3a at /hello\n");
    assert_eq!(
        up.metric("vastgate_program_up{program=\"app\"}").await,
        1,
        "RUNNING is up"
    );
}

#[tokio::test]
async fn a_crashing_program_shows_the_restarting_page_with_its_last_exit() {
    let dir = UpGateway::prepare();
    let port = free_port();
    // It crashes at once, then waits 4 s in BACKOFF before each new try.
    let up = UpGateway::start(
        dir,
        "",
        &format!(
            "{}\n[program.crashy]\ncommand = [\"sh\", \"-c\", \"echo crashy-9b2e: giving up; exit 3\"]\n\
             backoff = {{ initial = \"4s\", max = \"4s\", jitter = 0.0 }}\n",
            program_route("crashy", "Crashy", port)
        ),
    );

    let page = up
        .poll(
            "/crashy/",
            true,
            "the restarting page with the last exit",
            assert_refreshing_503,
            |r| {
                let t = r.text();
                t.contains("Crashy is restarting")
                    && t.contains("last exit: exit status 3")
                    && t.contains("crashy-9b2e: giving up")
            },
        )
        .await;
    assert_refreshing_503(&page);
    let text = page.text();
    assert!(text.contains("<h1>Crashy is restarting</h1>"), "{text}");
    assert!(text.contains("BACKOFF for 0:"), "{text}");
    assert!(text.contains("; restarted "), "{text}");

    let api = up
        .poll(
            "/crashy/",
            false,
            "the restarting JSON",
            |r| assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text()),
            |r| r.json()["program"]["state"] == "BACKOFF",
        )
        .await;
    let json = api.json();
    assert_eq!(json["error"], "Crashy is restarting", "{json:#}");
    assert_eq!(api.header("retry-after"), Some("5"));
    let program = &json["program"];
    assert!(program["restarts"].as_u64() >= Some(1), "{json:#}");
    assert_eq!(program["last_exit"], "exit status 3", "{json:#}");
    let status = up.program("crashy").await;
    assert!(status["restarts"].as_u64() >= Some(1), "{status:#}");
}

#[tokio::test]
async fn a_stopped_program_says_it_is_not_running_until_it_is_started_again() {
    let dir = UpGateway::prepare();
    let port = free_port();
    let up = UpGateway::start(
        dir,
        "",
        &format!(
            "{}\n{}",
            program_route("app", "Demo App", port),
            app_program("app", port, "stoppable-41c8", &http_probe(port))
        ),
    );
    up.wait_state("app", "RUNNING").await;
    let served = up.page("/app/").await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.text());

    let stop = up.cli(&["stop", "app"]).await;
    assert!(
        stop.status.success(),
        "vastgate stop: {}{}",
        String::from_utf8_lossy(&stop.stdout),
        String::from_utf8_lossy(&stop.stderr)
    );
    up.wait_state("app", "STOPPED").await;
    let page = up.page("/app/").await;
    assert_refreshing_503(&page);
    let text = page.text();
    assert!(text.contains("<h1>Demo App is not running</h1>"), "{text}");
    assert!(text.contains("STOPPED for 0:"), "{text}");
    assert!(text.contains("last exit: stopped by command"), "{text}");
    let json = up.get("/app/", &[]).await.json();
    assert_eq!(json["program"]["state"], "STOPPED", "{json:#}");
    assert_eq!(
        json["program"]["last_exit"], "stopped by command",
        "{json:#}"
    );
    assert_eq!(up.metric("vastgate_program_up{program=\"app\"}").await, 0);

    let start = up.cli(&["start", "app"]).await;
    assert!(
        start.status.success(),
        "vastgate start: {}{}",
        String::from_utf8_lossy(&start.stdout),
        String::from_utf8_lossy(&start.stderr)
    );
    up.wait_state("app", "RUNNING").await;
    let served = up.page("/app/again").await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.text());
    assert_eq!(served.text(), "hello from stoppable-41c8 at /again\n");
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_say_which_programs_are_up_and_count_their_restarts() {
    let dir = UpGateway::prepare();
    let port = free_port();
    let idle_port = free_port();
    let up = UpGateway::start(
        dir,
        "",
        &format!(
            "{}\n{}\n{}\n{}",
            program_route("web", "Web", port),
            program_route("idle", "Idle", idle_port),
            app_program(
                "web",
                port,
                "metrics-web",
                &format!(
                    "{}\nbackoff = {{ initial = \"500ms\", max = \"1s\" }}",
                    http_probe(port)
                )
            ),
            app_program("idle", idle_port, "metrics-idle", "autostart = false"),
        ),
    );
    up.wait_state("web", "RUNNING").await;

    let refused = get(up.addr, "/_vastgate/metrics", &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "metrics need the login"
    );

    assert_eq!(up.metric("vastgate_program_up{program=\"web\"}").await, 1);
    assert_eq!(up.metric("vastgate_program_up{program=\"idle\"}").await, 0);
    assert_eq!(
        up.metric("vastgate_program_restarts_total{program=\"web\"}")
            .await,
        0
    );
    let text = up.get("/_vastgate/metrics", &[]).await.text();
    assert!(text.contains("# TYPE vastgate_program_up gauge"), "{text}");
    assert!(
        text.contains("# TYPE vastgate_program_restarts_total counter"),
        "{text}"
    );

    // The program exits 1 after answering /crash; the supervisor starts it again.
    let crash = get(([127, 0, 0, 1], port).into(), "/crash", &[]).await;
    assert_eq!(crash.status, StatusCode::OK);
    common::eventually(PATIENCE, "the crash is counted as a restart", || async {
        up.metric("vastgate_program_restarts_total{program=\"web\"}")
            .await
            >= 1
    })
    .await;
    common::eventually(PATIENCE, "web is up again after its restart", || async {
        up.metric("vastgate_program_up{program=\"web\"}").await == 1
    })
    .await;
    let restarts = up
        .metric("vastgate_program_restarts_total{program=\"web\"}")
        .await;
    let status = up.program("web").await;
    assert_eq!(status["restarts"].as_u64(), Some(restarts), "{status:#}");
    assert_eq!(status["last_exit"]["kind"], "exited", "{status:#}");
    assert_eq!(status["last_exit"]["code"], 1, "{status:#}");
    let served = up.page("/web/after").await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.text());
}

// ---------------------------------------------------------------------------------------------
// The portal in a real browser
// ---------------------------------------------------------------------------------------------

/// Headless Chromium, or `None` (after a loud message) when it is not installed outside CI; in
/// CI (`.ci/run` installs it) a missing browser fails the test.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed (apt-get install chromium); CI must have it"
        );
        eprintln!("!!!! SKIPPED: /usr/bin/chromium not found; apt-get install chromium to run this test !!!!");
    }
    found
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=...`) and a fresh
/// profile in `scratch`; returns its stdout. Killed, with its whole process group, after 2
/// minutes.
async fn run_chromium(browser: &Path, scratch: &Path, args: &[String], url: &str) -> String {
    let profile = tempfile::tempdir_in(scratch).expect("profile dir");
    let mut command = tokio::process::Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so that a hung browser goes with all its helpers.
    command.as_std_mut().process_group(0);
    let child = command.spawn().expect("start chromium");
    let pid = child.id().expect("chromium pid") as i32;
    match tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("chromium output");
            assert!(
                out.status.success(),
                "chromium {args:?} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
        Err(_) => {
            // SAFETY: the group of the child we started; it has not been waited for.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("chromium {args:?} did not finish within 2 minutes");
        }
    }
}

/// The `<tr>` of the portal's programs table whose first cell is `name`.
fn row<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr><td>{name}</td>"))
        .unwrap_or_else(|| panic!("no row for {name} in the portal:\n{dom}"));
    let len = dom[start..].find("</tr>").expect("row end");
    &dom[start..start + len]
}

/// A stand-in `nvidia-smi` that answers with the recorded output of an H200.
fn fake_nvidia_smi(dir: &Path) -> PathBuf {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nvidia-smi");
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in --query-gpu=*) cat {fixtures}/query-h200.csv ;; \
         *) cat {fixtures}/banner-h200.txt ;; esac\n"
    );
    let path = dir.join("fake-nvidia-smi");
    std::fs::write(&path, script).expect("write fake nvidia-smi");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[tokio::test]
async fn portal_in_headless_chromium_lists_programs_with_states_and_links() {
    let Some(browser) = chromium() else { return };
    let dir = UpGateway::prepare();
    let smi = fake_nvidia_smi(dir.path());
    let (web, slow, idle) = (free_port(), free_port(), free_port());
    let never = dir.path().join("never-ready");
    let up = UpGateway::start(
        dir,
        &format!("nvidia_smi = \"{}\"", smi.display()),
        &format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            program_route("web", "Web App", web),
            program_route("slow", "Slow App", slow),
            program_route("idle", "Idle App", idle),
            app_program("web", web, "portal-web", &http_probe(web)),
            app_program(
                "slow",
                slow,
                "portal-slow",
                &format!(
                    "startup_probe = {{ command = [\"test\", \"-e\", \"{}\"], period = \"1s\" }}",
                    never.display()
                )
            ),
            app_program("idle", idle, "portal-idle", "autostart = false"),
        ),
    );
    up.wait_state("web", "RUNNING").await;
    up.wait_state("slow", "STARTING").await;
    up.wait_state("idle", "STOPPED").await;
    let gpu_line = "1 × NVIDIA H200 (143771 MiB), driver 550.127.05, CUDA 12.4";
    up.poll(
        "/_vastgate/",
        true,
        "the portal shows the GPU",
        |r| assert_eq!(r.status, StatusCode::OK, "{}", r.text()),
        |r| r.text().contains(gpu_line),
    )
    .await;

    // The portal is behind the login: a browser without it gets the challenge.
    let challenge = get(up.addr, "/_vastgate/", &[("accept", "text/html")]).await;
    assert_eq!(challenge.status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic realm=")),
        "{:?}",
        challenge.headers
    );
    let wrong = get(
        up.addr,
        "/_vastgate/",
        &[("authorization", &basic_auth(USER, "wrong"))],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    // Chromium answers the challenge with the credentials of the URL.
    let password = PASSWORD.replace(' ', "%20");
    let url = format!("http://{USER}:{password}@{}/_vastgate/", up.addr);
    let scratch = up.dir.path().to_path_buf();
    let dom = run_chromium(&browser, &scratch, &["--dump-dom".into()], &url).await;
    assert!(dom.contains("<h1>Apps on this box</h1>"), "{dom}");
    for (prefix, title) in [
        ("/web/", "Web App"),
        ("/slow/", "Slow App"),
        ("/idle/", "Idle App"),
    ] {
        assert!(
            dom.contains(&format!("<a href=\"{prefix}\">{title}</a>")),
            "no link to {prefix} in:\n{dom}"
        );
    }
    let web_row = row(&dom, "web");
    assert!(
        web_row.contains("<td class=\"ok\">RUNNING</td>"),
        "{web_row}"
    );
    assert!(web_row.contains("uptime 0:"), "{web_row}");
    assert!(web_row.contains("pid "), "{web_row}");
    let slow_row = row(&dom, "slow");
    assert!(
        slow_row.contains("<td class=\"bad\">STARTING</td>"),
        "{slow_row}"
    );
    assert!(
        slow_row.contains("waiting for the startup probe"),
        "{slow_row}"
    );
    let idle_row = row(&dom, "idle");
    assert!(
        idle_row.contains("<td class=\"bad\">STOPPED</td>"),
        "{idle_row}"
    );
    for r in [web_row, slow_row, idle_row] {
        assert!(r.ends_with("<td>0</td>"), "restarts: {r}");
    }
    assert!(dom.contains(gpu_line), "{dom}");

    let shot = scratch.join("portal.png");
    run_chromium(
        &browser,
        &scratch,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,900".into(),
            "--hide-scrollbars".into(),
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("create target/test-artifacts");
    std::fs::write(artifacts.join("portal.png"), &png).expect("keep the screenshot");
    let image = Png::decode(&png);
    assert_eq!((image.width, image.height), (1200, 900), "screenshot size");
    let background = image.most_common();
    let ink = image.pixels.iter().filter(|p| **p != background).count();
    assert!(
        ink > 2_000,
        "the screenshot is (nearly) blank: {ink} pixels differ from the background"
    );
    assert!(
        image.distinct() > 16,
        "the screenshot has only {} colours",
        image.distinct()
    );
    // The states are coloured: RUNNING green (#16794a), the others red (#b3261e).
    assert!(image.near([0x16, 0x79, 0x4a], 40) > 20, "no green RUNNING");
    assert!(
        image.near([0xb3, 0x26, 0x1e], 40) > 20,
        "no red STARTING/STOPPED"
    );
}

/// `target/test-artifacts`, which CI keeps.
fn artifacts_dir() -> PathBuf {
    // The binary under test is `target/<profile>/vastgate`.
    Path::new(common::vastgate_bin())
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("test-artifacts")
}

/// An 8-bit RGB or RGBA PNG, decoded just enough to look at its pixels.
struct Png {
    width: u32,
    height: u32,
    pixels: Vec<[u8; 3]>,
}

impl Png {
    fn decode(data: &[u8]) -> Png {
        use std::io::Read;
        assert!(
            data.starts_with(b"\x89PNG\r\n\x1a\n"),
            "not a PNG: {:?}",
            &data[..data.len().min(8)]
        );
        let mut rest = &data[8..];
        let mut header = None;
        let mut compressed = Vec::new();
        while rest.len() >= 12 {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let kind = &rest[4..8];
            let body = rest.get(8..8 + len).expect("truncated PNG chunk");
            match kind {
                b"IHDR" => header = Some(body.to_vec()),
                b"IDAT" => compressed.extend_from_slice(body),
                b"IEND" => break,
                _ => {}
            }
            rest = &rest[8 + len + 4..];
        }
        let header = header.expect("the PNG has no IHDR");
        let width = u32::from_be_bytes(header[0..4].try_into().unwrap());
        let height = u32::from_be_bytes(header[4..8].try_into().unwrap());
        let (depth, colour, interlace) = (header[8], header[9], header[12]);
        assert_eq!(depth, 8, "bit depth");
        assert_eq!(interlace, 0, "interlaced PNG");
        let bpp = match colour {
            2 => 3,
            6 => 4,
            other => panic!("PNG colour type {other}: expected RGB or RGBA"),
        };
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&compressed[..])
            .read_to_end(&mut raw)
            .expect("inflate the PNG");
        let stride = width as usize * bpp;
        assert_eq!(raw.len(), height as usize * (stride + 1), "PNG data size");
        let mut prev = vec![0u8; stride];
        let mut pixels = Vec::with_capacity(width as usize * height as usize);
        for line in raw.chunks(stride + 1) {
            let (filter, src) = (line[0], &line[1..]);
            let mut cur = vec![0u8; stride];
            for i in 0..stride {
                let a = if i >= bpp { cur[i - bpp] } else { 0 };
                let b = prev[i];
                let c = if i >= bpp { prev[i - bpp] } else { 0 };
                let predicted = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                    4 => paeth(a, b, c),
                    other => panic!("PNG filter {other}"),
                };
                cur[i] = src[i].wrapping_add(predicted);
            }
            pixels.extend(cur.chunks(bpp).map(|p| [p[0], p[1], p[2]]));
            prev = cur;
        }
        Png {
            width,
            height,
            pixels,
        }
    }

    fn most_common(&self) -> [u8; 3] {
        let mut counts = std::collections::HashMap::new();
        for p in &self.pixels {
            *counts.entry(*p).or_insert(0usize) += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .expect("pixels")
            .0
    }

    fn distinct(&self) -> usize {
        self.pixels
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// How many pixels are within `tolerance` (per channel) of `colour`.
    fn near(&self, colour: [u8; 3], tolerance: u8) -> usize {
        self.pixels
            .iter()
            .filter(|p| (0..3).all(|i| p[i].abs_diff(colour[i]) <= tolerance))
            .count()
    }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
