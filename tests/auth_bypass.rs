//! The bypass corpus: crafted requests that try to reach a protected upstream without
//! credentials (path confusion, absolute-form targets, request smuggling, pipelining, upgrade
//! smuggling, header tricks), against a gateway with a public prefix in front of upstreams that
//! record every byte they receive. Not one byte may reach a protected upstream.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every answer of a protected upstream carries this; no gateway answer may.
const PROTECTED_MARK: &str = "PROTECTED-UPSTREAM-ANSWER";

/// Statuses the gateway (or hyper in front of it) may answer a crafted request with.
const REFUSALS: &[u16] = &[400, 401, 403, 404, 405, 301, 302, 307, 308];

/// A protected upstream at the TCP level: counts connections and keeps every byte received, so
/// that even a request it could not parse would be seen.
struct Recorder {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    bytes: Arc<Mutex<Vec<u8>>>,
    _task: Upstream,
}

impl Recorder {
    async fn start() -> Recorder {
        let (listener, addr) = raw_upstream().await;
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), bytes.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                head.extend_from_slice(&buf[..n]);
                                log.lock().unwrap().extend_from_slice(&buf[..n]);
                            }
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PROTECTED_MARK}",
                        PROTECTED_MARK.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Recorder {
            addr,
            connections,
            bytes,
            _task: Upstream::from_task(addr, task),
        }
    }

    fn assert_untouched(&self, name: &str) {
        let bytes = self.bytes.lock().unwrap();
        assert_eq!(
            self.connections.load(Ordering::SeqCst),
            0,
            "the protected {name} upstream was connected to; it received:\n{}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(bytes.is_empty());
    }
}

/// The public app: records each request's target, answers 200 marked `x-upstream: public`,
/// and performs a WebSocket upgrade when asked (except under `/public/refuse-upgrade`), after
/// which it echoes every byte and keeps a copy.
struct PublicApp {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
    tunnelled: Arc<Mutex<Vec<u8>>>,
    _task: Upstream,
}

impl PublicApp {
    async fn start() -> PublicApp {
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let tunnelled: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (t, tun) = (targets.clone(), tunnelled.clone());
        let upstream = http_upstream(move |mut req: Request<Incoming>| {
            let target = req.uri().to_string();
            t.lock().unwrap().push(target.clone());
            let upgrade = req.headers().contains_key("upgrade")
                && !req.uri().path().starts_with("/public/refuse-upgrade");
            let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
            let tun = tun.clone();
            async move {
                if let Some(on_upgrade) = on_upgrade {
                    tokio::spawn(async move {
                        let Ok(upgraded) = on_upgrade.await else {
                            return;
                        };
                        let mut io = TokioIo::new(upgraded);
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            tun.lock().unwrap().extend_from_slice(&buf[..n]);
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    return Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("upgrade", "websocket")
                        .header("connection", "upgrade")
                        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                        .body(empty())
                        .unwrap();
                }
                let body = serde_json::json!({"upstream": "public", "target": target});
                Response::builder()
                    .header("x-upstream", "public")
                    .header("content-type", "application/json")
                    .body(full(body.to_string()))
                    .unwrap()
            }
        })
        .await;
        PublicApp {
            addr: upstream.addr,
            targets,
            tunnelled,
            _task: upstream,
        }
    }

    /// Every request it received was for a public path.
    fn assert_only_public_targets(&self) {
        for t in self.targets.lock().unwrap().iter() {
            assert!(
                t.starts_with("/public/"),
                "the public upstream was handed a request for {t:?}"
            );
        }
    }
}

/// The gateway of every test here: `public = ["/healthz", "/public/"]`, the public app under
/// `/public/`, protected recorders under `/private/` and `/`.
struct Setting {
    gw: Gateway,
    public: PublicApp,
    private: Recorder,
    root: Recorder,
}

const PASSWORD: &str = "alice-pw";

impl Setting {
    async fn start() -> Setting {
        let public = PublicApp::start().await;
        let private = Recorder::start().await;
        let root = Recorder::start().await;
        let htpasswd = vastgate::auth::htpasswd_line("alice", PASSWORD, 4).unwrap();
        let gw = Gateway::start_with(
            &Setup::new(
                "auth = \"basic\"\nhtpasswd = \"htpasswd\"\nfailure_limit = 1000\n\
                 public = [\"/healthz\", \"/public/\"]",
                &[
                    route("/public/", public.addr, "name = \"PublicApp\""),
                    route("/private/", private.addr, "name = \"PrivateApp\""),
                    route("/", root.addr, "name = \"RootApp\""),
                ],
            )
            .file("htpasswd", format!("{htpasswd}\n")),
        )
        .await;
        Setting {
            gw,
            public,
            private,
            root,
        }
    }

    /// The protected upstreams received nothing, the public one only public paths; then one
    /// authenticated request proves the recorders were listening all along.
    async fn assert_nothing_leaked(&self) {
        self.private.assert_untouched("/private/");
        self.root.assert_untouched("/");
        self.public.assert_only_public_targets();
        let auth = basic_auth("alice", PASSWORD);
        for (path, recorder) in [
            ("/private/control", &self.private),
            ("/control", &self.root),
        ] {
            let reply = get(self.gw.addr, path, &[("authorization", &auth)]).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert!(reply.text().contains(PROTECTED_MARK));
            assert_eq!(recorder.connections.load(Ordering::SeqCst), 1, "{path}");
        }
    }
}

/// One response parsed off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a byte stream into responses. Stops at a 101 (what follows is the tunnel, returned
/// as the rest) or at anything it cannot parse (returned as the rest).
fn parse_answers(mut data: &[u8]) -> (Vec<Answer>, Vec<u8>) {
    let mut answers = Vec::new();
    loop {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            return (answers, data.to_vec());
        };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let Some(status) = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok())
        else {
            return (answers, data.to_vec());
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut rest = &data[end + 4..];
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if status == 101 {
            answers.push(answer);
            return (answers, rest.to_vec());
        }
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    answers.push(answer);
                    return (answers, rest.to_vec());
                };
                let size = std::str::from_utf8(&rest[..eol])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
                let Some(size) = size else {
                    answers.push(answer);
                    return (answers, rest.to_vec());
                };
                rest = &rest[eol + 2..];
                if size == 0 {
                    // Trailers end with an empty line.
                    let end = rest.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
                    rest = rest.get(end + 2..).unwrap_or_default();
                    break;
                }
                let Some(chunk) = rest.get(..size) else {
                    answer.body.extend_from_slice(rest);
                    answers.push(answer);
                    return (answers, Vec::new());
                };
                answer.body.extend_from_slice(chunk);
                rest = rest.get(size + 2..).unwrap_or_default();
            }
        } else if let Some(len) = answer.header("content-length").and_then(|l| l.parse().ok()) {
            let len: usize = len;
            let take = len.min(rest.len());
            answer.body.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            answer.body.extend_from_slice(rest);
            rest = &[];
        }
        answers.push(answer);
        data = rest;
    }
}

/// Writes `request` on a fresh connection and reads until the gateway closes it, or until a
/// deadline (a crafted request may leave the gateway waiting for more): what came back.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    exchange_timed(addr, request).await.0
}

/// [`exchange`], also telling whether the deadline cut the reading short.
async fn exchange_timed(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = within(PATIENCE, "connect", TcpStream::connect(addr))
        .await
        .expect("connect to the gateway");
    // The gateway may close early (400) while we still write: not an error for the corpus.
    let _ = stream.write_all(request).await;
    let mut data = Vec::new();
    let cut = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut data))
        .await
        .is_err();
    (data, cut)
}

/// The verdict on what came back for one crafted request: a list of problems (empty is good).
fn judge(name: &str, data: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let text = String::from_utf8_lossy(data);
    if text.contains(PROTECTED_MARK) {
        problems.push(format!("{name}: a protected upstream's answer came back"));
    }
    let (answers, _) = parse_answers(data);
    for a in &answers {
        let public = a.header("x-upstream") == Some("public") && a.status == 200;
        // A public request whose body the client botched (bad chunked framing) gets a 400 like
        // any other malformed request (counted in REFUSALS), not a 502 blaming the app.
        if !(public || REFUSALS.contains(&a.status) || a.status == 101) {
            problems.push(format!("{name}: unexpected status {}", a.status));
        }
    }
    problems
}

fn host_request(addr: SocketAddr, method: &str, target: &str, version: &str) -> Vec<u8> {
    format!("{method} {target} {version}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The path tricks: targets whose every reading must either be public or be refused.
fn tricky_targets() -> Vec<String> {
    let mut t: Vec<String> = [
        // Plain and dot segments through the public prefix.
        "/private/x",
        "/",
        "/x",
        "/public/../private/x",
        "/public/./../private/x",
        "/public/x/../../private/x",
        "/public/../../private/x",
        "/public/..",
        "/public/../",
        "/public/..//private/x",
        "/public//../private/x",
        "/public/.../private/x",
        "/public/..../private/x",
        "/./private/x",
        "/public/../_vastgate/metrics",
        "/_vastgate/metrics",
        "/_vastgate/",
        "/healthz/../private/x",
        "/healthz/",
        "/healthz/x",
        // Percent-encoded dots and slashes.
        "/public/%2e%2e/private/x",
        "/public/%2E%2E/private/x",
        "/public/.%2e/private/x",
        "/public/%2e./private/x",
        "/public/%2e/../private/x",
        "/public/..%2fprivate/x",
        "/public/..%2Fprivate/x",
        "/public%2f..%2fprivate/x",
        "/public%2F..%2Fprivate/x",
        "/public/%2e%2e%2fprivate%2fx",
        "/public/%2e%2e/%2e%2e/private/x",
        "/healthz%2f..%2fprivate/x",
        "/%70ublic/../private/x",
        "/%70rivate/x",
        "/public/%3f/../../private/x",
        "/public/..%3bprivate/x",
        // Double encoding.
        "/public/%252e%252e/private/x",
        "/public/%252e%252e%252fprivate/x",
        "/public/..%252fprivate/x",
        "/public/..%255cprivate/x",
        "/public/%25%32%65%25%32%65/private/x",
        "/public/%%32%65%%32%65/private/x",
        // Backslashes.
        "/public/..\\private\\x",
        "/public\\..\\private/x",
        "/public/..%5cprivate/x",
        "/public/..%5Cprivate/x",
        "/public/%5c..%5cprivate/x",
        "/public/%2e%2e%5cprivate/x",
        // Semicolons (servlet path parameters).
        "/public/..;/private/x",
        "/public/;/../private/x",
        "/public;/../private/x",
        "/public/x;/../../private/x",
        "/public/..;x=1/private/x",
        "/private;/x",
        "/private;jsessionid=1/x",
        "/healthz;/../private/x",
        "/healthz/..;/private/x",
        // NUL and other control bytes, encoded.
        "/public/%00/../../private/x",
        "/public/..%00/private/x",
        "/private/x%00",
        "/public%00/../private/x",
        "/public/.%00./private/x",
        "/public/%0a/../../private/x",
        "/public/%09../private/x",
        "/public/..%0d%0a/private/x",
        // Case variants.
        "/PUBLIC/../private/x",
        "/Public/x",
        "/PUBLIC/x",
        "/public/../PRIVATE/x",
        "/HEALTHZ",
        // Empty segments.
        "//private/x",
        "///private/x",
        "//public/../private/x",
        "/public/..///private/x",
        // Overlong and look-alike UTF-8.
        "/public/%c0%ae%c0%ae/private/x",
        "/public/%c0%af../private/x",
        "/public/..%c0%afprivate/x",
        "/public/%e0%80%ae%e0%80%ae/private/x",
        "/public/..%c1%9cprivate/x",
        "/public/%c0%2e%c0%2e/private/x",
        "/public/%ef%bc%8e%ef%bc%8e/private/x",
        "/public/..%ef%bc%8fprivate/x",
        "/public/%e2%80%a5/private/x",
        "/public/%u002e%u002e/private/x",
        // Fragments and queries.
        "/public/..%23/private/x",
        "/public/x?/../../private/x",
        "/public/x?..%2f..%2fprivate",
        // Not origin-form.
        "private/x",
        "../private/x",
        "*",
        "%2fprivate/x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    t.push(format!("/public/{}/../../private/x", "a".repeat(4000)));
    t.push(format!("/public/{}private/x", "../".repeat(50)));
    t
}

/// Requests whose bytes matter beyond the path.
fn raw_cases(addr: SocketAddr) -> Vec<(String, Vec<u8>)> {
    let h = addr.to_string();
    let smuggled =
        format!("GET /private/smuggled HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n");
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: String| cases.push((name.to_owned(), bytes.into_bytes()));

    // Absolute-form targets.
    for target in [
        format!("http://{h}/public/../private/x"),
        format!("http://{h}/private/x"),
        format!("https://{h}/private/x"),
        format!("HTTP://{h}/PUBLIC/../private/x"),
        format!("http://{h}/public/%2e%2e/private/x"),
        format!("http://{h}//private/x"),
        "http://evil.example/public/../private/x".into(),
        "http://evil.example/private/x".into(),
        format!("http://alice:{PASSWORD}@{h}/private/x"),
        format!("http://{h}@evil.example/private/x"),
        format!("http://{h}/public/x@/../private/x"),
        "http:/private/x".into(),
        format!("ftp://{h}/private/x"),
    ] {
        add(
            &format!("absolute-form {target}"),
            format!("GET {target} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
        );
    }
    // Authority-form and asterisk-form.
    add(
        "CONNECT",
        format!("CONNECT {h} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
    );
    add(
        "CONNECT to a private path",
        format!("CONNECT /private/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
    );
    add(
        "OPTIONS *",
        format!("OPTIONS * HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
    );
    // Methods and versions.
    for method in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "get", "FOO",
    ] {
        add(
            &format!("{method} through the public prefix"),
            format!(
                "{method} /public/../private/x HTTP/1.1\r\nHost: {h}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
    }
    add(
        "HTTP/1.0 without Host",
        "GET /private/x HTTP/1.0\r\n\r\n".into(),
    );
    add(
        "HTTP/1.0 through the public prefix",
        "GET /public/../private/x HTTP/1.0\r\n\r\n".into(),
    );
    add(
        "HTTP/1.0 keep-alive pipeline",
        "GET /public/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /private/x HTTP/1.0\r\n\r\n"
            .into(),
    );
    for version in [
        "HTTP/0.9",
        "HTTP/1.2",
        "HTTP/2.0",
        "HTTP/9.9",
        "http/1.1",
        "HTTP/1.1 extra",
    ] {
        add(
            &format!("version {version}"),
            format!("GET /private/x {version}\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
        );
    }
    add("no version", "GET /private/x\r\n\r\n".into());
    // Spaces and odd line ends in the request line.
    for line in [
        "GET /public/.. /private/x HTTP/1.1",
        "GET  /private/x HTTP/1.1",
        "GET /public/x /private/x HTTP/1.1",
        "GET\t/private/x\tHTTP/1.1",
        "GET /public/x\t/../../private/x HTTP/1.1",
        " GET /private/x HTTP/1.1",
        "GET /public/x%20/../../private/x HTTP/1.1",
    ] {
        add(
            &format!("request line {line:?}"),
            format!("{line}\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
        );
    }
    add(
        "bare LF line ends",
        format!("GET /public/../private/x HTTP/1.1\nHost: {h}\nConnection: close\n\n"),
    );
    add(
        "bare CR in the target",
        format!("GET /public/\r../private/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
    );
    // Host variations.
    for host in [
        "evil.example".to_owned(),
        format!("{h}/public"),
        format!("{h}/private/x"),
        "".to_owned(),
        format!("alice:{PASSWORD}@{h}"),
        format!("{h}\r\nHost: evil.example"),
        "localhost".to_owned(),
        "[::1]".to_owned(),
        format!("{h}:80"),
    ] {
        add(
            &format!("Host {host:?}"),
            format!("GET /private/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
    }
    // Headers that some servers read as a path or an identity.
    for header in [
        "X-Original-URL: /private/x",
        "X-Rewrite-URL: /private/x",
        "X-Forwarded-Prefix: /public/",
        "X-Forwarded-User: alice",
        "X_Forwarded_User: alice",
        "X-Remote-User: alice",
        "Remote-User: alice",
        "X-Forwarded-For: 127.0.0.1",
        "Forwarded: for=127.0.0.1;by=127.0.0.1",
        "Cookie: C.38250_auth_token=x; vastgate_auth_token=x",
        "Authorization: Bearer secret-token",
        "Proxy-Authorization: Basic YWxpY2U6YWxpY2UtcHc=",
        "X-HTTP-Method-Override: GET",
    ] {
        add(
            &format!("header {header:?}"),
            format!(
                "GET /private/x HTTP/1.1\r\nHost: {h}\r\n{header}\r\nConnection: close\r\n\r\n"
            ),
        );
    }
    // Header folding and malformed header lines.
    add(
        "obs-fold",
        format!("GET /public/x HTTP/1.1\r\nHost: {h}\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n"),
    );
    add(
        "obs-fold of the request line",
        format!(
            "GET /public/x\r\n /../../private/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
        ),
    );
    add(
        "folded Authorization",
        format!("GET /private/x HTTP/1.1\r\nHost: {h}\r\nAuthorization: Basic\r\n YWxpY2U6d3Jvbmc=\r\nConnection: close\r\n\r\n"),
    );
    add(
        "space before colon",
        format!("GET /private/x HTTP/1.1\r\nHost : {h}\r\nConnection: close\r\n\r\n"),
    );
    add(
        "NUL in a header",
        format!("GET /private/x HTTP/1.1\r\nHost: {h}\r\nX-A: a\0b\r\nConnection: close\r\n\r\n"),
    );
    add(
        "raw NUL in the path",
        format!(
            "GET /public/\0/../../private/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
        ),
    );
    // Request smuggling: a second request hidden in the body of a public one.
    let body = format!("0\r\n\r\n{smuggled}");
    for (name, headers) in [
        (
            "CL.TE",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked",
                body.len()
            ),
        ),
        (
            "TE.CL",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}",
                body.len()
            ),
        ),
        (
            "CL.TE short",
            "Content-Length: 4\r\nTransfer-Encoding: chunked".to_owned(),
        ),
        (
            "TE with space before colon",
            "Transfer-Encoding : chunked".to_owned(),
        ),
        ("TE xchunked", "Transfer-Encoding: xchunked".to_owned()),
        (
            "TE chunked, identity",
            "Transfer-Encoding: chunked, identity".to_owned(),
        ),
        (
            "TE identity, chunked",
            "Transfer-Encoding: identity, chunked".to_owned(),
        ),
        (
            "TE twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity".to_owned(),
        ),
        ("TE with tab", "Transfer-Encoding:\tchunked".to_owned()),
        ("TE upper case", "TRANSFER-ENCODING: CHUNKED".to_owned()),
        (
            "TE with vertical tab",
            "Transfer-Encoding: \x0bchunked".to_owned(),
        ),
        ("TE folded", "Transfer-Encoding:\r\n chunked".to_owned()),
    ] {
        add(
            &format!("smuggling {name}"),
            format!("POST /public/s HTTP/1.1\r\nHost: {h}\r\n{headers}\r\n\r\n{body}"),
        );
    }
    let cl_body = smuggled.clone();
    for (name, headers) in [
        (
            "duplicate Content-Length",
            format!("Content-Length: 0\r\nContent-Length: {}", cl_body.len()),
        ),
        (
            "duplicate Content-Length reversed",
            format!("Content-Length: {}\r\nContent-Length: 0", cl_body.len()),
        ),
        (
            "Content-Length list",
            format!("Content-Length: 0, {}", cl_body.len()),
        ),
        (
            "Content-Length with plus",
            format!("Content-Length: +{}", cl_body.len()),
        ),
        (
            "Content-Length in hex",
            format!("Content-Length: 0x{:x}", cl_body.len()),
        ),
        ("negative Content-Length", "Content-Length: -1".to_owned()),
        (
            "huge Content-Length",
            "Content-Length: 99999999999999999999999".to_owned(),
        ),
        (
            "Content-Length with space inside",
            format!("Content-Length: 1 {}", cl_body.len()),
        ),
    ] {
        add(
            &format!("smuggling {name}"),
            format!("POST /public/s HTTP/1.1\r\nHost: {h}\r\n{headers}\r\n\r\n{cl_body}"),
        );
    }
    for (name, chunks) in [
        (
            "chunk size overflow",
            "ffffffffffffffffff1\r\nx\r\n0\r\n\r\n".to_owned(),
        ),
        ("chunk size with junk", "1x\r\nx\r\n0\r\n\r\n".to_owned()),
        ("chunk extension", "1;a=b\r\nx\r\n0\r\n\r\n".to_owned()),
        ("chunk with bare LF", "1\nx\n0\n\n".to_owned()),
        (
            "leading zeros",
            "00000000000000000001\r\nx\r\n0\r\n\r\n".to_owned(),
        ),
        ("chunk longer than said", "1\r\nxyz\r\n0\r\n\r\n".to_owned()),
    ] {
        add(
            &format!("smuggling {name}"),
            format!(
                "POST /public/s HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}{smuggled}"
            ),
        );
    }
    add(
        "GET with a body holding a request",
        format!(
            "GET /public/g HTTP/1.1\r\nHost: {h}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
            smuggled.len()
        ),
    );
    add(
        "Expect: 100-continue to a private path",
        format!("POST /private/x HTTP/1.1\r\nHost: {h}\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
    );
    // Pipelining: a public request and a private one in one write.
    add(
        "pipelined public then private",
        format!("GET /public/a HTTP/1.1\r\nHost: {h}\r\n\r\nGET /private/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
    );
    add(
        "pipelined public, public, private through the prefix",
        format!(
            "GET /public/a HTTP/1.1\r\nHost: {h}\r\n\r\nGET /public/b HTTP/1.1\r\nHost: {h}\r\n\r\n\
             GET /public/../private/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
        ),
    );
    add(
        "pipelined with a body that ends early",
        format!(
            "POST /public/a HTTP/1.1\r\nHost: {h}\r\nContent-Length: 0\r\n\r\nGET /private/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
        ),
    );
    // Upgrades that are never performed.
    add(
        "h2c upgrade then a preface",
        format!(
            "GET /public/h2c HTTP/1.1\r\nHost: {h}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n{smuggled}"
        ),
    );
    add(
        "WebSocket upgrade to a private path",
        format!(
            "GET /private/ws HTTP/1.1\r\nHost: {h}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n{smuggled}"
        ),
    );
    add(
        "WebSocket upgrade through the public prefix",
        format!(
            "GET /public/../private/ws HTTP/1.1\r\nHost: {h}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n{smuggled}"
        ),
    );
    add(
        "HTTP/2 preface to the HTTP/1 parser",
        format!("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n{smuggled}"),
    );
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_requests_never_reach_a_protected_upstream() {
    let s = Setting::start().await;
    let addr = s.gw.addr;
    let mut cases: Vec<(String, Vec<u8>)> = tricky_targets()
        .into_iter()
        .flat_map(|t| {
            [
                (format!("GET {t}"), host_request(addr, "GET", &t, "HTTP/1.1")),
                (
                    format!("GET {t} with Accept: text/html"),
                    format!(
                        "GET {t} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes(),
                ),
            ]
        })
        .collect();
    // Raw bytes above 0x7F in the target (not percent-encoded).
    for target in [
        &b"/public/\xc0\xae\xc0\xae/private/x"[..],
        b"/public/..\xc0\xafprivate/x",
        b"/public/\xef\xbc\x8e\xef\xbc\x8e/private/x",
        b"/public/\xff/../../private/x",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        cases.push((
            format!("raw bytes {}", String::from_utf8_lossy(target)),
            req,
        ));
    }
    cases.extend(raw_cases(addr));
    assert!(cases.len() >= 100, "only {} cases", cases.len());

    let outcomes: Vec<(String, Vec<u8>, bool)> = futures_util::stream::iter(cases)
        .map(|(name, bytes)| async move {
            let (data, cut) = exchange_timed(addr, &bytes).await;
            (name, data, cut)
        })
        .buffer_unordered(8)
        .collect()
        .await;

    let mut problems = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for (name, data, _) in &outcomes {
        problems.extend(judge(name, data));
        for a in parse_answers(data).0 {
            *statuses.entry(a.status).or_default() += 1;
        }
    }
    let unfinished: Vec<&str> = outcomes
        .iter()
        .filter(|(_, _, cut)| *cut)
        .map(|(name, _, _)| name.as_str())
        .collect();
    eprintln!(
        "{} crafted requests; statuses: {statuses:?}; left open by the gateway: {unfinished:?}",
        outcomes.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every case ends its connection (`Connection: close`, or an error the gateway closes on).
    assert!(
        unfinished.is_empty(),
        "the gateway left connections open: {unfinished:?}"
    );
    // The corpus is not all refused at the door: some requests were served as public ones.
    assert!(statuses.get(&200).is_some_and(|n| *n > 0), "{statuses:?}");
    assert!(statuses.get(&401).is_some_and(|n| *n > 10), "{statuses:?}");
    s.assert_nothing_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_request_pipelined_after_a_public_one_is_challenged() {
    let s = Setting::start().await;
    let h = s.gw.addr;
    for (second, what) in [
        ("/private/x", "direct"),
        ("/public/../private/x", "dot segments"),
        ("/public/%2e%2e/private/x", "encoded dots"),
        ("/", "root"),
    ] {
        let req = format!(
            "GET /public/first HTTP/1.1\r\nHost: {h}\r\n\r\nGET {second} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
        );
        let data = exchange(h, req.as_bytes()).await;
        let (answers, _) = parse_answers(&data);
        assert_eq!(
            answers.len(),
            2,
            "{what}: {}",
            String::from_utf8_lossy(&data)
        );
        assert_eq!(answers[0].status, 200, "{what}");
        assert_eq!(answers[0].header("x-upstream"), Some("public"), "{what}");
        assert!(
            answers[1].status == 401 || answers[1].status == 400,
            "{what}: {}",
            answers[1].status
        );
    }
    s.assert_nothing_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_bodies_are_never_a_second_request_to_a_protected_upstream() {
    let s = Setting::start().await;
    let h = s.gw.addr;
    let smuggled =
        format!("GET /private/smuggled HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n");
    let body = format!("0\r\n\r\n{smuggled}");
    for (what, headers) in [
        (
            "CL.TE",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked",
                body.len()
            ),
        ),
        (
            "TE.CL",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}",
                body.len()
            ),
        ),
        (
            "CL.CL",
            format!("Content-Length: 0\r\nContent-Length: {}", body.len()),
        ),
    ] {
        let req = format!("POST /public/s HTTP/1.1\r\nHost: {h}\r\n{headers}\r\n\r\n{body}");
        let data = exchange(h, req.as_bytes()).await;
        let problems = judge(what, &data);
        assert!(problems.is_empty(), "{problems:?}");
        // Whatever the reading, a hidden request that surfaces is a request to the gateway,
        // and it is challenged.
        let (answers, _) = parse_answers(&data);
        for a in answers.iter().skip(1) {
            assert!(a.status == 401 || a.status == 400, "{what}: {}", a.status);
        }
    }
    s.assert_nothing_leaked().await;
}

/// An upgrade request to the public app, with `then` appended in the same write.
fn upgrade_request(h: SocketAddr, path: &str, then: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {h}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n{then}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_public_tunnel_cannot_carry_requests_to_a_protected_upstream() {
    let s = Setting::start().await;
    let h = s.gw.addr;
    let private_req = format!("GET /private/x HTTP/1.1\r\nHost: {h}\r\n\r\n");

    // After the 101: the next bytes belong to the public app's tunnel, not to the gateway.
    let mut stream = TcpStream::connect(h).await.unwrap();
    stream
        .write_all(upgrade_request(h, "/public/ws", "").as_bytes())
        .await
        .unwrap();
    let head = within(PATIENCE, "101", async {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                stream.read(&mut byte).await.unwrap(),
                1,
                "closed before 101"
            );
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    })
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(private_req.as_bytes()).await.unwrap();
    let mut echoed = vec![0u8; private_req.len()];
    within(
        PATIENCE,
        "the echo through the tunnel",
        stream.read_exact(&mut echoed),
    )
    .await
    .unwrap();
    assert_eq!(
        echoed,
        private_req.as_bytes(),
        "the public app echoes raw bytes"
    );
    drop(stream);

    // The request in the same write as the upgrade: the tunnel gets it too.
    let mut stream = TcpStream::connect(h).await.unwrap();
    stream
        .write_all(upgrade_request(h, "/public/ws2", &private_req).as_bytes())
        .await
        .unwrap();
    let mut data = Vec::new();
    within(PATIENCE, "101 and the echo", async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&data).contains("GET /private/x") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&data));
            data.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let (answers, rest) = parse_answers(&data);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, 101);
    assert_eq!(rest, private_req.as_bytes());
    drop(stream);
    let tunnelled = String::from_utf8_lossy(&s.public.tunnelled.lock().unwrap()).into_owned();
    assert_eq!(
        tunnelled.matches("GET /private/x").count(),
        2,
        "{tunnelled}"
    );

    // An upgrade the public app refuses: the connection stays HTTP and the gateway reads the
    // next request itself, so it is challenged.
    let data = exchange(
        h,
        upgrade_request(
            h,
            "/public/refuse-upgrade",
            &format!("GET /private/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
        )
        .as_bytes(),
    )
    .await;
    let (answers, _) = parse_answers(&data);
    assert_eq!(answers.len(), 2, "{}", String::from_utf8_lossy(&data));
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].header("x-upstream"), Some("public"));
    assert_eq!(answers[1].status, 401);

    // An upgrade to a protected path without credentials never opens a tunnel.
    let closing = format!("GET /private/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n");
    let data = exchange(h, upgrade_request(h, "/private/ws", &closing).as_bytes()).await;
    let (answers, _) = parse_answers(&data);
    assert!(!answers.is_empty());
    for a in &answers {
        assert_eq!(a.status, 401, "{}", String::from_utf8_lossy(&data));
    }
    s.assert_nothing_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_clients_over_http1_and_http2_cannot_reach_a_protected_upstream() {
    let s = Setting::start().await;
    let addr = s.gw.addr;
    let paths = [
        "/private/x",
        "/",
        "/public/../private/x",
        "/public/%2e%2e/private/x",
        "/public/..%2fprivate/x",
        "/public/%252e%252e/private/x",
        "/public/..;/private/x",
        "/public/%00/../../private/x",
        "/PUBLIC/../private/x",
        "//private/x",
        "/public/%c0%ae%c0%ae/private/x",
        "/public/..%5cprivate/x",
        "/_vastgate/metrics",
    ];

    // HTTP/1.1, origin-form and absolute-form.
    let mut conn = Conn::open(addr).await;
    for path in paths {
        for uri in [path.to_string(), format!("http://{addr}{path}")] {
            let reply = conn.exchange(request("GET", &uri, &[], empty())).await;
            assert!(
                REFUSALS.contains(&reply.status.as_u16())
                    || reply.headers.get("x-upstream").is_some(),
                "HTTP/1.1 {uri}: {}",
                reply.status
            );
            assert!(!reply.text().contains(PROTECTED_MARK), "HTTP/1.1 {uri}");
            if conn.is_closed() {
                conn = Conn::open(addr).await;
            }
        }
    }

    // HTTP/2 with prior knowledge: the same paths as `:path`, and odd authorities.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    for path in paths {
        for authority in [addr.to_string(), "evil.example".into()] {
            let uri = format!("http://{authority}{path}");
            let req = request("GET", &uri, &[], empty());
            let resp = within(PATIENCE, "HTTP/2 response", sender.send_request(req))
                .await
                .unwrap_or_else(|e| panic!("HTTP/2 {uri}: {e}"));
            let reply = Reply::read(resp).await;
            assert!(
                REFUSALS.contains(&reply.status.as_u16())
                    || reply.headers.get("x-upstream").is_some(),
                "HTTP/2 {uri}: {}",
                reply.status
            );
            assert!(!reply.text().contains(PROTECTED_MARK), "HTTP/2 {uri}");
        }
    }
    s.assert_nothing_leaked().await;
}
