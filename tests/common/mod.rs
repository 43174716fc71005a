//! The harness of the gateway's integration tests: the real `vastgate` binary on a free port of
//! 127.0.0.1 with a config written for the test, upstreams started by the test, and small clients
//! (hyper for ordinary requests, raw TCP where the bytes on the wire matter).
//!
//! Every test gets its own gateway and its own upstreams on ports the kernel picked, so tests run
//! in parallel. Waits are bounded by generous deadlines (the suite must pass on a slow shared
//! machine) and never used as proof of ordering: a test that waits for something checks it.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of requests the tests send and of responses their upstreams send.
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long anything that should happen "soon" may take on a slow, shared machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Path of the binary under test.
pub fn vastgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vastgate")
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A port nothing listens on right now (bound by the kernel's choice, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// Config text
// ---------------------------------------------------------------------------------------------

/// One `[[route]]` table for `prefix` → `upstream`, plus any extra `key = value` lines.
pub fn route(prefix: &str, upstream: SocketAddr, extra: &str) -> String {
    format!("[[route]]\nprefix = \"{prefix}\"\nupstream = \"http://{upstream}\"\n{extra}\n")
}

/// A whole `proxy.toml`: `[gateway]` on `listen` with `auth = "none"`, `gateway_extra` lines,
/// then the routes.
pub fn config_text(listen: SocketAddr, gateway_extra: &str, routes: &[String]) -> String {
    let mut text =
        format!("[gateway]\nlisten = \"{listen}\"\nauth = \"none\"\n{gateway_extra}\n\n");
    for r in routes {
        text.push_str(r);
        text.push('\n');
    }
    text
}

/// A `[gateway.tls]` table with these files and any extra `key = value` lines. It must come
/// last in `gateway_extra` (the `[gateway]` keys end where it starts).
pub fn tls_table(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "\n[gateway.tls]\ncert = {:?}\nkey = {:?}\n{extra}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

// ---------------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------------

/// Lines a child process wrote, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Collects the lines of `stream` (another child's stdout or stderr) as they are written.
    pub fn follow(stream: impl std::io::Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        lines.collect(stream);
        lines
    }

    fn collect(&self, stream: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                match line {
                    Ok(line) => lines.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        });
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }

    /// Waits until some line satisfies `pred`, returning it.
    pub async fn wait_for(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.all().into_iter().find(|l| pred(l)) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A running `vastgate serve` on a free port of 127.0.0.1; killed when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    child: Child,
    /// The JSON access log.
    pub stdout: Lines,
    /// Tracing output (reload errors, shutdown notes).
    pub stderr: Lines,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway with `auth = "none"`, the given extra `[gateway]` lines and routes, and
    /// waits until its `/healthz` answers.
    pub async fn start(gateway_extra: &str, routes: &[String]) -> Gateway {
        let mut last_error = String::new();
        // The port is free when picked; another process could take it before the gateway binds
        // it, so a bind failure is retried on a fresh port.
        for _ in 0..3 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let text = config_text(addr, gateway_extra, routes);
            match Gateway::spawn(addr, &text).await {
                Ok(gw) => return gw,
                Err(e) if e.contains("cannot listen") => last_error = e,
                Err(e) => panic!("the gateway did not start:\n{e}\nconfig:\n{text}"),
            }
        }
        panic!("the gateway could not bind a port: {last_error}");
    }

    /// Starts a gateway as `setup` describes (nothing forced: `auth` is whatever its lines say,
    /// the default `basic` otherwise), with its files written next to `proxy.toml` and its
    /// environment variables set, and waits until its `/healthz` answers.
    pub async fn start_with(setup: &Setup) -> Gateway {
        match Gateway::try_start_with(setup).await {
            Ok(gw) => gw,
            Err(e) => panic!("the gateway did not start:\n{e}"),
        }
    }

    /// [`start_with`](Self::start_with), returning why the gateway did not start (its stderr)
    /// instead of failing the test.
    pub async fn try_start_with(setup: &Setup) -> Result<Gateway, String> {
        let mut last_error = String::new();
        for _ in 0..3 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let text = setup.config_text(addr);
            let dir = tempfile::tempdir().expect("temp dir");
            for (name, contents) in &setup.files {
                std::fs::write(dir.path().join(name), contents).expect("write a setup file");
            }
            match Gateway::spawn_in(dir, addr, &text, &setup.env).await {
                Ok(gw) => return Ok(gw),
                Err(e) if e.contains("cannot listen") => last_error = e,
                Err(e) => return Err(format!("{e}\nconfig:\n{text}")),
            }
        }
        Err(format!("the gateway could not bind a port: {last_error}"))
    }

    /// Starts a gateway like [`start`](Self::start) whose `gateway_extra` turns TLS on (end it
    /// with a [`tls_table`]), with these environment variables, and waits until a plain-HTTP
    /// `/healthz` is redirected to https.
    pub async fn start_tls(
        gateway_extra: &str,
        routes: &[String],
        env: &[(&str, &str)],
    ) -> Gateway {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut last_error = String::new();
        for _ in 0..3 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let text = config_text(addr, gateway_extra, routes);
            let dir = tempfile::tempdir().expect("temp dir");
            match Gateway::spawn_probed(dir, addr, &text, &env, true).await {
                Ok(gw) => return gw,
                Err(e) if e.contains("cannot listen") => last_error = e,
                Err(e) => panic!("the gateway did not start:\n{e}\nconfig:\n{text}"),
            }
        }
        panic!("the gateway could not bind a port: {last_error}");
    }

    async fn spawn(addr: SocketAddr, config: &str) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        Gateway::spawn_in(dir, addr, config, &[]).await
    }

    async fn spawn_in(
        dir: tempfile::TempDir,
        addr: SocketAddr,
        config: &str,
        env: &[(String, String)],
    ) -> Result<Gateway, String> {
        Gateway::spawn_probed(dir, addr, config, env, false).await
    }

    /// [`spawn_in`](Self::spawn_in); with `tls`, the gateway counts as started once a plain-HTTP
    /// `/healthz` is redirected to https (the TLS port's answer to plain HTTP).
    async fn spawn_probed(
        dir: tempfile::TempDir,
        addr: SocketAddr,
        config: &str,
        env: &[(String, String)],
        tls: bool,
    ) -> Result<Gateway, String> {
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, config).expect("write proxy.toml");
        let mut child = Command::new(vastgate_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("VASTGATE_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("VASTGATE_CONFIG")
            .env_remove("USERNAME")
            .env_remove("PASSWORD")
            .env_remove("OPEN_BUTTON_TOKEN")
            .env_remove("VAST_CONTAINERLABEL")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vastgate serve");
        let stdout = Lines::default();
        let stderr = Lines::default();
        stdout.collect(child.stdout.take().unwrap());
        stderr.collect(child.stderr.take().unwrap());
        let mut gw = Gateway {
            addr,
            config_path,
            child,
            stdout,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = gw.child.try_wait() {
                // Let the reader thread catch the last words.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(format!("exited with {status}: {}", gw.stderr.text()));
            }
            let ready = if tls {
                redirects_to_https(addr).await
            } else {
                healthz_ok(addr).await
            };
            if ready {
                return Ok(gw);
            }
            if Instant::now() >= deadline {
                return Err(format!("/healthz never answered: {}", gw.stderr.text()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the gateway process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, which it cannot have been reused while we hold
        // the unwaited `Child`.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Replaces the config file (same listen address) with these settings and routes.
    pub fn rewrite_config(&self, gateway_extra: &str, routes: &[String]) {
        self.write_config_text(&config_text(self.addr, gateway_extra, routes));
    }

    pub fn write_config_text(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("rewrite proxy.toml");
    }

    /// The access-log lines written so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout
            .all()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for the access-log line of the request with this id.
    pub async fn access_log_entry(&self, request_id: &str) -> serde_json::Value {
        let line = self
            .stdout
            .wait_for(PATIENCE, |l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .is_ok_and(|v| v["request_id"] == request_id)
            })
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no access-log line with request_id {request_id}; stdout:\n{}",
                    self.stdout.text()
                )
            });
        serde_json::from_str(&line).unwrap()
    }

    /// Peak resident memory of the gateway process, in KiB (Linux `VmHWM`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The directory of `proxy.toml` (and of the files a [`Setup`] wrote).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

/// What [`Gateway::start_with`] writes and sets: unlike [`Gateway::start`], no `auth` line is
/// forced, so authentication tests say what they want.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Lines under `[gateway]`, after `listen`.
    pub gateway: String,
    pub routes: Vec<String>,
    /// Environment variables of the gateway process (`USERNAME`, `PASSWORD`,
    /// `OPEN_BUTTON_TOKEN` and `VAST_CONTAINERLABEL` are unset unless given here).
    pub env: Vec<(String, String)>,
    /// Files written next to `proxy.toml` before the start: (file name, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

impl Setup {
    pub fn new(gateway: &str, routes: &[String]) -> Setup {
        Setup {
            gateway: gateway.to_owned(),
            routes: routes.to_vec(),
            ..Setup::default()
        }
    }

    pub fn env(mut self, name: &str, value: &str) -> Setup {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Setup {
        self.files.push((name.to_owned(), contents.into()));
        self
    }

    fn config_text(&self, listen: SocketAddr) -> String {
        let mut text = format!("[gateway]\nlisten = \"{listen}\"\n{}\n\n", self.gateway);
        for r in &self.routes {
            text.push_str(r);
            text.push('\n');
        }
        text
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- gateway stderr ---\n{}\n--- gateway stdout ---\n{}",
                self.stderr.text(),
                self.stdout.text()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-HTTP `GET /healthz` answered with 308 to `https://ADDR/healthz`.
async fn redirects_to_https(addr: SocketAddr) -> bool {
    let attempt = async {
        let reply = raw_exchange(
            addr,
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let location = format!("https://{addr}/healthz");
        Some(reply.status == 308 && reply.header("location") == Some(location.as_str()))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn healthz_ok(addr: SocketAddr) -> bool {
    let attempt = async {
        let reply = raw_exchange(
            addr,
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        Some(reply.status == 200)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Runs `vastgate ARGS...` to completion (for `check`).
pub fn run_vastgate(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(vastgate_bin())
        .args(args)
        .env_remove("VASTGATE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run vastgate")
}

/// Writes `text` as `proxy.toml` in a fresh temp dir.
pub fn write_temp_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).expect("write proxy.toml");
    (dir, path)
}

pub fn path_arg(p: &Path) -> &std::ffi::OsStr {
    p.as_os_str()
}

// ---------------------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------------------

/// A test's upstream server; stopped when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Wraps a server task the test wrote itself, so that it stops with the test.
    pub fn from_task(addr: SocketAddr, task: JoinHandle<()>) -> Upstream {
        Upstream { addr, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an HTTP/1.1 upstream on 127.0.0.1 whose every request is answered by `handler`.
pub async fn http_upstream<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream { addr, task }
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target exactly as received (origin-form expected).
    pub target: String,
    pub version: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// The requests an echo upstream has received, in order.
#[derive(Clone, Default)]
pub struct SeenLog(Arc<Mutex<Vec<Seen>>>);

impl SeenLog {
    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.all().pop().expect("the upstream received no request")
    }
}

/// An upstream that records each request and answers 200 with a JSON description of it:
/// `{"upstream": NAME, "target": ..., "method": ..., "headers": {name: [values]}}`.
pub async fn echo_upstream(name: &'static str) -> (Upstream, SeenLog) {
    let log = SeenLog::default();
    let seen = log.clone();
    let upstream = http_upstream(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let record = Seen {
                method: parts.method.to_string(),
                target: parts.uri.to_string(),
                version: format!("{:?}", parts.version),
                headers: parts.headers.clone(),
                body_len: body.len(),
            };
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in &parts.headers {
                headers
                    .entry(k.to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
            }
            seen.0.lock().unwrap().push(record);
            let json = serde_json::json!({
                "upstream": name,
                "target": parts.uri.to_string(),
                "method": parts.method.as_str(),
                "headers": headers,
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(full(json.to_string()))
                .unwrap()
        }
    })
    .await;
    (upstream, log)
}

/// A listener for upstreams that need byte-level control (raw responses, never answering).
pub async fn raw_upstream() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Reads one request head (up to and including the blank line) from `stream`.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read request head");
        assert!(n > 0, "connection closed inside a request head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub fn empty() -> TestBody {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A body fed through a channel: each `Bytes` sent becomes one data frame, and the body ends
/// when the sender is dropped. The capacity is small, so the producer feels backpressure.
pub fn channel_body(capacity: usize) -> (tokio::sync::mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(capacity);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|data| (Ok::<_, BoxError>(hyper::body::Frame::data(data)), rx))
    });
    (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// One keep-alive HTTP/1.1 connection to the gateway.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
    pub local_addr: SocketAddr,
    addr: SocketAddr,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = within(PATIENCE, "connect to the gateway", TcpStream::connect(addr))
            .await
            .expect("connect to the gateway");
        let _ = stream.set_nodelay(true);
        let local_addr = stream.local_addr().unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Conn {
            sender,
            local_addr,
            addr,
        }
    }

    /// Sends `req` (a Host header is added when missing) and returns the response head with its
    /// body still streaming.
    pub async fn send(&mut self, mut req: Request<TestBody>) -> Response<Incoming> {
        if !req.headers().contains_key(http::header::HOST) {
            let host = HeaderValue::from_str(&self.addr.to_string()).unwrap();
            req.headers_mut().insert(http::header::HOST, host);
        }
        within(PATIENCE, "connection ready", self.sender.ready())
            .await
            .expect("the connection closed");
        within(
            PATIENCE,
            "response headers from the gateway",
            self.sender.send_request(req),
        )
        .await
        .expect("send the request")
    }

    /// Sends `req` and reads the whole response.
    pub async fn exchange(&mut self, req: Request<TestBody>) -> Reply {
        let resp = self.send(req).await;
        Reply::read(resp).await
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(resp: Response<Incoming>) -> Reply {
        let (parts, body) = resp.into_parts();
        let body = within(PATIENCE, "response body", body.collect())
            .await
            .expect("read the response body")
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request builder with the given method, path and headers.
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: TestBody,
) -> Request<TestBody> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(body)
        .expect("build request");
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    req
}

/// `GET path` with headers, on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    Conn::open(addr)
        .await
        .exchange(request("GET", path, headers, empty()))
        .await
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Header lines as sent, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Writes `request` bytes to a fresh connection and reads the response until the server closes
/// (send `Connection: close`). Handles Content-Length and chunked bodies.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawReply> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut data = Vec::new();
    stream.read_to_end(&mut data).await?;
    parse_raw_response(&data).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(&data)),
        )
    })
}

/// `GET target` over a raw socket with the given extra header lines (each ending in `\r\n`).
pub async fn raw_get(addr: SocketAddr, target: &str, extra_headers: &str) -> RawReply {
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    within(PATIENCE, "raw exchange", raw_exchange(addr, req.as_bytes()))
        .await
        .expect("raw exchange")
}

pub fn parse_raw_response(data: &[u8]) -> Option<RawReply> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&data[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &data[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        rest.get(..len.parse::<usize>().ok()?)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(RawReply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// FNV-1a over a stream of chunks: order-sensitive, cheap, and independent of chunk boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// What [`tally_upstream`] saw of one upload: bytes, their checksum, and the value of the header
/// it was asked to report.
pub type Tally = (u64, Checksum, Option<String>);

/// An upstream that reads each request body to its end, answers with the byte count, and reports
/// the bytes, their checksum and the request's `header` on the receiver.
pub async fn tally_upstream(
    header: &'static str,
) -> (Upstream, tokio::sync::mpsc::Receiver<Tally>) {
    let (done_tx, done_rx) = tokio::sync::mpsc::channel::<Tally>(1);
    let upstream = http_upstream(move |req: Request<Incoming>| {
        let done_tx = done_tx.clone();
        async move {
            let value = req
                .headers()
                .get(header)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = req.into_body();
            let (mut total, mut sum) = (0u64, Checksum::default());
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("upload body").into_data() {
                    total += data.len() as u64;
                    sum.update(&data);
                }
            }
            let _ = done_tx.send((total, sum, value)).await;
            Response::new(full(total.to_string()))
        }
    })
    .await;
    (upstream, done_rx)
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Reads the counter or gauge `name` from `/_vastgate/metrics`, sent with `authorization`. Use
/// credentials that are already cached (or a Vast token), or the read itself costs a hash.
pub async fn metric(addr: SocketAddr, name: &str, authorization: &str) -> u64 {
    let reply = get(
        addr,
        "/_vastgate/metrics",
        &[("authorization", authorization)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "metrics: {}", reply.text());
    let text = reply.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// Runs Apache's `htpasswd` with `args`. `None` (after a loud message) when the binary is
/// missing outside CI; in CI (which installs apache2-utils) a missing binary fails the test.
pub fn apache_htpasswd(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("htpasswd").args(args).output() {
        Ok(out) => Some(out),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "htpasswd is not installed (apt-get install apache2-utils); CI must have it"
            );
            eprintln!(
                "!!!! SKIPPED: `htpasswd` not found; install apache2-utils to run this test !!!!"
            );
            None
        }
        Err(err) => panic!("cannot run htpasswd: {err}"),
    }
}

/// One line from `htpasswd -nb FLAGS user password` (e.g. flags `["-B", "-C", "5"]`).
pub fn apache_line(flags: &[&str], user: &str, password: &str) -> Option<String> {
    let mut args = vec!["-nb"];
    args.extend_from_slice(flags);
    args.extend([user, password]);
    let out = apache_htpasswd(&args)?;
    assert!(
        out.status.success(),
        "htpasswd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// Polls `check` (every 100 ms) until it is true; fails the test with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
