//! TLS and HTTP/2 on the gateway's port, checked with real clients: `curl` (HTTP/2 by ALPN,
//! certificate verification by OpenSSL) and, where the bytes or the certificate matter, a rustls
//! client with hyper's HTTP/2 and HTTP/1.1 clients on top.
//!
//! Covered: the self-signed pair made once and kept (mode 0600, the same certificate after a
//! restart), HTTP/2 for ordinary requests, SSE and a large upload with `:authority` becoming the
//! upstream's Host, HTTP/1.1 and a WebSocket over TLS, plain HTTP redirected to https, silent
//! clients closed after the handshake timeout, certificate files replaced on disk, and
//! `ENABLE_HTTPS=true`.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The name the tests' clients use for the gateway: not the loopback address it listens on, so
/// a Host that comes from anywhere but the client shows.
const BOX: &str = "box.example";

// ---------------------------------------------------------------------------------------------
// A rustls client
// ---------------------------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts whatever certificate the gateway serves (the tests look at which one it was) but
/// still checks the handshake's signatures against it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects to `addr` over TLS as `name`, offering `alpn`. With `trust`, the served certificate
/// must verify against it (as the only root) for `name`; without, any certificate is taken.
async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
    trust: Option<&CertificateDer<'static>>,
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    tls_connect_versions(addr, name, alpn, trust, rustls::DEFAULT_VERSIONS).await
}

/// [`tls_connect`] offering only these protocol versions.
async fn tls_connect_versions(
    addr: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
    trust: Option<&CertificateDer<'static>>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("TLS versions");
    let mut config = match trust {
        Some(root) => {
            let mut roots = RootCertStore::empty();
            roots.add(root.clone()).expect("a usable root certificate");
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let name = ServerName::try_from(name.to_owned()).expect("a server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}

/// [`tls_connect`] that must succeed within [`PATIENCE`].
async fn tls_open(addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    within(
        PATIENCE,
        "TLS handshake",
        tls_connect(addr, BOX, alpn, None),
    )
    .await
    .expect("TLS handshake with the gateway")
}

fn negotiated(tls: &TlsStream<TcpStream>) -> Option<String> {
    tls.get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

fn peer_certificate(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the gateway sent a certificate")
        .clone()
        .into_owned()
}

/// The certificate the gateway serves right now (read off a fresh handshake).
async fn served_certificate(addr: SocketAddr) -> CertificateDer<'static> {
    peer_certificate(&tls_open(addr, &[b"http/1.1"]).await)
}

/// The first certificate of a PEM file.
fn pem_certificate(path: &Path) -> CertificateDer<'static> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let first = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .unwrap_or_else(|| panic!("{}: no certificate in it", path.display()))
        .expect("a PEM certificate");
    first
}

/// `host:port` of the gateway under the name [`BOX`].
fn authority(gw: &Gateway) -> String {
    format!("{BOX}:{}", gw.addr.port())
}

/// One HTTP/2 connection over TLS to the gateway, as `https://box.example:PORT`.
struct H2 {
    sender: hyper::client::conn::http2::SendRequest<TestBody>,
    authority: String,
}

impl H2 {
    /// Connects offering `h2` and `http/1.1` (as browsers do) and checks that `h2` was chosen.
    async fn open(gw: &Gateway) -> H2 {
        let tls = tls_open(gw.addr, &[b"h2", b"http/1.1"]).await;
        assert_eq!(negotiated(&tls).as_deref(), Some("h2"), "ALPN");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 {
            sender,
            authority: authority(gw),
        }
    }

    /// Sends `method https://AUTHORITY{path}` and returns the response with its body streaming.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: TestBody,
    ) -> Response<Incoming> {
        let uri = format!("https://{}{path}", self.authority);
        let req = request(method, &uri, headers, body);
        within(PATIENCE, "HTTP/2 connection ready", self.sender.ready())
            .await
            .expect("the HTTP/2 connection closed");
        within(
            PATIENCE,
            "HTTP/2 response headers",
            self.sender.send_request(req),
        )
        .await
        .expect("HTTP/2 request")
    }
}

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

/// Runs `curl -sS --max-time 120 ARGS...`. `None` (after a loud message) when curl is missing
/// outside CI; in CI (which installs it) a missing curl fails the test.
async fn curl(args: &[&str]) -> Option<Output> {
    let run = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output();
    match within(Duration::from_secs(180), "curl", run).await {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "curl is not installed (apt-get install curl); CI must have it"
            );
            eprintln!("!!!! SKIPPED: `curl` not found; install curl to run this check !!!!");
            None
        }
        Err(e) => panic!("cannot run curl: {e}"),
    }
}

/// What curl got: the body, and the `-w` line appended after it.
struct Fetched {
    body: String,
    status: u16,
    http_version: String,
}

/// `curl ARGS... URL` reporting the status and the HTTP version it spoke; the exchange must
/// succeed at the transport level.
async fn curl_fetch(args: &[&str]) -> Option<Fetched> {
    let mut all = args.to_vec();
    all.extend(["-w", "\n%{http_code} %{http_version}"]);
    let out = curl(&all).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {all:?} failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, tail) = stdout.rsplit_once('\n').expect("curl's -w line");
    let (status, version) = tail.split_once(' ').expect("status and version");
    Some(Fetched {
        body: body.to_owned(),
        status: status.parse().expect("a status code"),
        http_version: version.to_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// Certificates on disk
// ---------------------------------------------------------------------------------------------

/// A directory for the certificate pair and the paths in it (in a subdirectory that does not
/// exist yet, so the gateway has to create it).
fn cert_paths() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("tls/instance.crt");
    let key = dir.path().join("tls/instance.key");
    (dir, cert, key)
}

/// A fresh self-signed pair for `localhost`: (cert PEM, key PEM, cert DER).
fn new_pair() -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("rcgen self-signed pair");
    (
        made.cert.pem(),
        made.key_pair.serialize_pem(),
        made.cert.der().clone(),
    )
}

/// Replaces `path` the way deployment tools do: a new file renamed over the old one.
fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("incoming");
    std::fs::write(&tmp, contents).expect("write the replacement");
    std::fs::rename(&tmp, path).expect("rename the replacement into place");
}

/// Waits until the gateway serves `expected`.
async fn until_served(addr: SocketAddr, expected: &CertificateDer<'static>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if served_certificate(addr).await == *expected {
            return;
        }
        assert!(Instant::now() < deadline, "not within 45 s: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pair_is_generated_saved_and_served_again_after_a_restart() {
    let (_dir, cert, key) = cert_paths();
    let tls = tls_table(&cert, &key, "");
    let gw = Gateway::start_tls(&tls, &[], &[]).await;

    assert!(cert.is_file() && key.is_file(), "the pair was not saved");
    assert_eq!(
        format!("{:o}", mode(&key)),
        "600",
        "the private key is readable by others"
    );
    let saved = pem_certificate(&cert);
    assert!(
        gw.stderr
            .wait_for(PATIENCE, |l| l.contains("self-signed")
                && l.contains("saved"))
            .await
            .is_some(),
        "no log line about the generated certificate:\n{}",
        gw.stderr.text()
    );

    // A client that trusts exactly the saved certificate accepts the gateway as `localhost`.
    let verified = within(
        PATIENCE,
        "verified TLS handshake",
        tls_connect(gw.addr, "localhost", &[b"http/1.1"], Some(&saved)),
    )
    .await
    .expect("the served certificate verifies against the saved one for localhost");
    assert_eq!(peer_certificate(&verified), saved);
    drop(verified);
    // And so does OpenSSL, through curl.
    let port = gw.addr.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/healthz");
    let cacert = cert.display().to_string();
    if let Some(got) = curl_fetch(&["--cacert", &cacert, "--resolve", &resolve, &url]).await {
        assert_eq!(got.status, 200, "{}", got.body);
    }

    let cert_pem = std::fs::read(&cert).unwrap();
    let key_pem = std::fs::read(&key).unwrap();
    drop(gw);

    let gw = Gateway::start_tls(&tls, &[], &[]).await;
    assert_eq!(
        served_certificate(gw.addr).await,
        saved,
        "a new certificate after a restart"
    );
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        cert_pem,
        "the saved certificate was rewritten"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_pem,
        "the saved key was rewritten"
    );
    assert!(
        !gw.stderr.text().contains("made a self-signed"),
        "a second pair was generated:\n{}",
        gw.stderr.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_from_curl_reach_the_upstream_with_the_authority_as_host() {
    let (upstream, seen) = echo_upstream("app").await;
    let (_dir, cert, key) = cert_paths();
    let gw = Gateway::start_tls(
        &tls_table(&cert, &key, ""),
        &[
            route("/api/", upstream.addr, ""),
            route("/down/", ([127, 0, 0, 1], free_port()).into(), ""),
        ],
        &[],
    )
    .await;
    let host = authority(&gw);
    let resolve = format!("{host}:127.0.0.1");

    let url = format!("https://{host}/api/items?page=2&sort=new");
    let Some(got) = curl_fetch(&["--http2", "-k", "--resolve", &resolve, &url]).await else {
        return;
    };
    assert_eq!(got.http_version, "2", "curl did not speak HTTP/2");
    assert_eq!(got.status, 200, "{}", got.body);
    let echo: serde_json::Value = serde_json::from_str(&got.body).expect("the upstream's JSON");
    assert_eq!(echo["target"], "/api/items?page=2&sort=new");
    assert_eq!(echo["headers"]["host"], serde_json::json!([host]));
    assert_eq!(
        echo["headers"]["x-forwarded-proto"],
        serde_json::json!(["https"])
    );
    let get = seen.last();
    assert_eq!(get.version, "HTTP/1.1", "upstreams stay HTTP/1.1");

    let url = format!("https://{host}/api/txt2img");
    let got = curl_fetch(&[
        "--http2",
        "-k",
        "--resolve",
        &resolve,
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"prompt": "a cat", "steps": 20}"#,
        &url,
    ])
    .await
    .unwrap();
    assert_eq!(got.http_version, "2");
    assert_eq!(got.status, 200, "{}", got.body);
    let post = seen.last();
    assert_eq!(post.method, "POST");
    assert_eq!(post.target, "/api/txt2img");
    assert_eq!(post.body_len, r#"{"prompt": "a cat", "steps": 20}"#.len());
    assert_eq!(post.header("host"), Some(host.as_str()));
    assert_eq!(post.header("x-forwarded-proto"), Some("https"));
    assert_eq!(post.header("content-type"), Some("application/json"));

    // The gateway's own pages are valid HTTP/2 responses too (an upstream that is down).
    let url = format!("https://{host}/down/");
    let got = curl_fetch(&["--http2", "-k", "--resolve", &resolve, &url])
        .await
        .unwrap();
    assert_eq!(got.http_version, "2");
    assert!(
        got.status >= 500 && !got.body.is_empty(),
        "{} {}",
        got.status,
        got.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_sse_events_arrive_one_by_one() {
    // The upstream hands the test each stream's sender and the Host it was asked for.
    let (stream_tx, mut stream_rx) = mpsc::channel::<(mpsc::Sender<Bytes>, HeaderMap)>(1);
    let upstream = http_upstream(move |req: Request<Incoming>| {
        let stream_tx = stream_tx.clone();
        async move {
            let (events, body) = channel_body(1);
            let _ = stream_tx.send((events, req.headers().clone())).await;
            Response::builder()
                .header("content-type", "text/event-stream; charset=utf-8")
                .header("cache-control", "no-cache")
                .body(body)
                .unwrap()
        }
    })
    .await;
    let (_dir, cert, key) = cert_paths();
    let gw = Gateway::start_tls(
        &tls_table(&cert, &key, ""),
        &[route("/", upstream.addr, "")],
        &[],
    )
    .await;

    let mut h2 = H2::open(&gw).await;
    let resp = h2
        .send(
            "GET",
            "/queue/data?session_hash=abc",
            &[
                ("accept", "text/event-stream"),
                ("accept-encoding", "gzip, deflate, br"),
            ],
            empty(),
        )
        .await;
    let (events, upstream_headers) =
        within(PATIENCE, "the upstream's event stream", stream_rx.recv())
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert!(
        resp.headers().get("content-encoding").is_none(),
        "an event stream must not be compressed: {:?}",
        resp.headers()
    );
    assert_eq!(
        upstream_headers.get("host").and_then(|h| h.to_str().ok()),
        Some(authority(&gw).as_str()),
        "the upstream's Host is not the client's :authority"
    );
    assert_eq!(
        upstream_headers.get("x-forwarded-proto"),
        Some(&HeaderValue::from_static("https"))
    );

    let mut body = resp.into_body();
    let mut received = String::new();
    for n in 0..8 {
        let event = format!("event: progress\ndata: {{\"msg\": \"step\", \"n\": {n}}}\n\n");
        within(
            PATIENCE,
            "the upstream sending an event",
            events.send(event.clone().into()),
        )
        .await
        .expect("the gateway dropped the event stream");
        while !received.ends_with(&event) {
            let frame = within(
                Duration::from_secs(20),
                &format!(
                    "event {n} reaching the client before event {} exists",
                    n + 1
                ),
                body.frame(),
            )
            .await
            .expect("the stream ended early")
            .expect("stream error");
            if let Ok(data) = frame.into_data() {
                received.push_str(std::str::from_utf8(&data).expect("an uncompressed stream"));
            }
        }
    }
    drop(events);
    while let Some(frame) = within(PATIENCE, "the end of the stream", body.frame()).await {
        frame.expect("stream error");
    }
    assert_eq!(received.matches("event: progress").count(), 8);

    // The connection carries more streams after that one.
    let reply = Reply::read(h2.send("GET", "/healthz", &[], empty()).await).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_large_upload_streams_through_intact() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 64;
    let (upstream, mut done_rx) = tally_upstream("content-length").await;
    let (_dir, cert, key) = cert_paths();
    let gw = Gateway::start_tls(
        &tls_table(&cert, &key, ""),
        &[route("/files/", upstream.addr, "")],
        &[],
    )
    .await;

    let total = (CHUNK * CHUNKS) as u64;
    let (body_tx, body) = channel_body(2);
    let mut h2 = H2::open(&gw).await;
    let response = tokio::spawn(async move {
        let resp = h2
            .send(
                "PUT",
                "/files/api/resources/model.safetensors",
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-length", &total.to_string()),
                ],
                body,
            )
            .await;
        Reply::read(resp).await
    });

    let mut sent = Checksum::default();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..CHUNKS {
        let mut chunk = Vec::with_capacity(CHUNK);
        while chunk.len() < CHUNK {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.extend_from_slice(&seed.to_le_bytes());
        }
        sent.update(&chunk);
        within(
            Duration::from_secs(120),
            &format!("upload chunk {i} accepted"),
            body_tx.send(Bytes::from(chunk)),
        )
        .await
        .expect("the upload was cut off");
    }
    drop(body_tx);

    let reply = within(Duration::from_secs(300), "the upload's response", response)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), total.to_string());
    let (received, received_sum, length) = within(PATIENCE, "the upstream's tally", done_rx.recv())
        .await
        .unwrap();
    assert_eq!(received, total);
    assert_eq!(received_sum, sent, "the upload arrived altered");
    assert_eq!(length, Some(total.to_string()), "Content-Length is kept");
    if let Some(peak) = gw.peak_rss_kib() {
        assert!(
            peak < 64 * 1024,
            "the gateway's memory peaked at {peak} KiB while streaming 64 MiB"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_works_when_the_client_offers_only_http1() {
    let (upstream, seen) = echo_upstream("app").await;
    let (_dir, cert, key) = cert_paths();
    let gw = Gateway::start_tls(
        &tls_table(&cert, &key, ""),
        &[route("/", upstream.addr, "")],
        &[],
    )
    .await;
    let host = authority(&gw);

    // A rustls client offering only http/1.1, then hyper's HTTP/1.1 client on it.
    let tls = tls_open(gw.addr, &[b"http/1.1"]).await;
    assert_eq!(negotiated(&tls).as_deref(), Some("http/1.1"), "ALPN");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    for path in ["/one?a=1", "/two"] {
        let req = request("GET", path, &[("host", &host)], empty());
        within(PATIENCE, "connection ready", sender.ready())
            .await
            .expect("the connection closed");
        let resp = within(PATIENCE, "HTTP/1.1 over TLS", sender.send_request(req))
            .await
            .expect("HTTP/1.1 request over TLS");
        assert_eq!(resp.version(), http::Version::HTTP_11);
        let reply = Reply::read(resp).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let last = seen.last();
        assert_eq!(last.target, path);
        assert_eq!(last.header("host"), Some(host.as_str()));
        assert_eq!(last.header("x-forwarded-proto"), Some("https"));
    }

    // TLS 1.3 by default, and TLS 1.2 for a client that offers nothing newer.
    let tls = tls_open(gw.addr, &[b"http/1.1"]).await;
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let tls12 = within(
        PATIENCE,
        "TLS 1.2 handshake",
        tls_connect_versions(gw.addr, BOX, &[b"h2"], None, &[&rustls::version::TLS12]),
    )
    .await
    .expect("a TLS 1.2 handshake");
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(negotiated(&tls12).as_deref(), Some("h2"));
    drop((tls, tls12));

    // curl forced to HTTP/1.1.
    let resolve = format!("{host}:127.0.0.1");
    let url = format!("https://{host}/three");
    if let Some(got) = curl_fetch(&["--http1.1", "-k", "--resolve", &resolve, &url]).await {
        assert_eq!(got.http_version, "1.1");
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(seen.last().header("host"), Some(host.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_echoes() {
    let (listener, addr) = raw_upstream().await;
    let handshakes: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let seen = handshakes.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let callback =
                    move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp| {
                        seen.lock().unwrap().push(req.headers().clone());
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let _upstream = Upstream::from_task(addr, task);
    let (_dir, cert, key) = cert_paths();
    let gw = Gateway::start_tls(
        &tls_table(&cert, &key, ""),
        &[route("/terminal/", addr, "")],
        &[],
    )
    .await;
    let host = authority(&gw);

    let tls = tls_open(gw.addr, &[b"http/1.1"]).await;
    assert_eq!(negotiated(&tls).as_deref(), Some("http/1.1"));
    let mut req = format!("wss://{host}/terminal/ws")
        .into_client_request()
        .unwrap();
    // A browser on the https page sends its own origin.
    req.headers_mut().insert(
        "origin",
        HeaderValue::from_str(&format!("https://{host}")).unwrap(),
    );
    let (mut ws, resp) = within(
        PATIENCE,
        "WebSocket handshake over TLS",
        tokio_tungstenite::client_async(req, tls),
    )
    .await
    .expect("WebSocket handshake over TLS");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);

    for msg in [
        Message::Text("ls -la\r".into()),
        Message::Binary(vec![b'0'; 70_000]),
        Message::Text("exit\r".into()),
    ] {
        within(PATIENCE, "send over the tunnel", ws.send(msg.clone()))
            .await
            .expect("send");
        let echoed = within(PATIENCE, "the echo", ws.next())
            .await
            .expect("the tunnel closed")
            .expect("a message");
        assert_eq!(echoed, msg);
    }
    within(PATIENCE, "close", ws.close(None))
        .await
        .expect("close");

    let upstream_saw = handshakes.lock().unwrap().clone();
    assert_eq!(upstream_saw.len(), 1);
    assert_eq!(
        upstream_saw[0].get("host").and_then(|h| h.to_str().ok()),
        Some(host.as_str())
    );
    assert_eq!(
        upstream_saw[0].get("x-forwarded-proto"),
        Some(&HeaderValue::from_static("https"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_redirected_to_https() {
    let (upstream, seen) = echo_upstream("app").await;
    let (_dir, cert, key) = cert_paths();
    let gw = Gateway::start_tls(
        &tls_table(&cert, &key, ""),
        &[route("/", upstream.addr, "")],
        &[],
    )
    .await;
    let host = authority(&gw);

    let reply = within(
        PATIENCE,
        "plain HTTP on the TLS port",
        raw_exchange(
            gw.addr,
            format!(
                "GET /app/page?x=1&y=two%20words HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\n\r\n"
            )
            .as_bytes(),
        ),
    )
    .await
    .expect("an HTTP answer, not garbled bytes");
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location").map(str::to_owned),
        Some(format!("https://{host}/app/page?x=1&y=two%20words"))
    );

    // POST keeps its method and body through a 308; the redirect says so for any method.
    let reply = within(
        PATIENCE,
        "plain POST on the TLS port",
        raw_exchange(
            gw.addr,
            format!("POST /api/run HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\n\r\nbody")
                .as_bytes(),
        ),
    )
    .await
    .expect("an HTTP answer");
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location").map(str::to_owned),
        Some(format!("https://{host}/api/run"))
    );

    // HTTP/1.0 without a Host: nowhere to send the client.
    let reply = within(
        PATIENCE,
        "plain HTTP/1.0 without Host",
        raw_exchange(gw.addr, b"GET /x HTTP/1.0\r\n\r\n"),
    )
    .await
    .expect("an HTTP answer");
    assert_eq!(reply.status, 400);

    // curl sees the same, and following it lands on the https URL.
    let resolve = format!("{host}:127.0.0.1");
    let url = format!("http://{host}/app/?tab=img2img");
    let mut curl_present = false;
    if let Some(out) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--resolve",
        &resolve,
        &url,
    ])
    .await
    {
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("308 https://{host}/app/?tab=img2img")
        );
        curl_present = true;
        let got = curl_fetch(&["-L", "-k", "--resolve", &resolve, &url])
            .await
            .unwrap();
        assert_eq!(got.status, 200, "{}", got.body);
        let echo: serde_json::Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(echo["target"], "/app/?tab=img2img");
        assert_eq!(
            echo["headers"]["x-forwarded-proto"],
            serde_json::json!(["https"])
        );
    }
    // Only a followed redirect reached the upstream; the redirects are the gateway's own.
    let followed = usize::from(curl_present);
    assert_eq!(seen.len(), followed, "{:?}", seen.all());
}

/// Reads until the gateway closes `stream` (EOF or reset), returning what arrived.
async fn until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    within(Duration::from_secs(40), what, read).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_clients_are_closed_after_the_handshake_timeout() {
    let (upstream, _seen) = echo_upstream("app").await;
    let (_dir, cert, key) = cert_paths();
    let gw = Gateway::start_tls(
        // The header timeout is far longer: only the handshake timeout can close them in time.
        &format!(
            "header_timeout = \"300s\"\n{}",
            tls_table(&cert, &key, "handshake_timeout = \"1s\"")
        ),
        &[route("/", upstream.addr, "")],
        &[],
    )
    .await;

    let opened = Instant::now();
    // Connects and sends nothing.
    let mut silent = TcpStream::connect(gw.addr).await.expect("connect");
    // Starts a TLS record and stalls inside the ClientHello.
    let mut stalled = TcpStream::connect(gw.addr).await.expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write a partial ClientHello");
    // Sends something that is neither HTTP nor a valid handshake after the TLS byte.
    let mut garbage = TcpStream::connect(gw.addr).await.expect("connect");
    garbage
        .write_all(b"\x16this is not a TLS record at all\r\n\r\n")
        .await
        .expect("write garbage");

    // Meanwhile, a real client is served (twice: over HTTP/2 and over HTTP/1.1).
    let mut h2 = H2::open(&gw).await;
    let reply = Reply::read(h2.send("GET", "/hello", &[], empty()).await).await;
    assert_eq!(reply.status, StatusCode::OK);
    let resolve = format!("{}:127.0.0.1", authority(&gw));
    let url = format!("https://{}/again", authority(&gw));
    if let Some(got) = curl_fetch(&["-k", "--resolve", &resolve, &url]).await {
        assert_eq!(got.status, 200, "{}", got.body);
    }

    let from_garbage = until_closed(&mut garbage, "a garbage handshake being dropped").await;
    assert!(
        from_garbage.is_empty() || from_garbage[0] == 0x15,
        "only a TLS alert may answer a bad handshake: {from_garbage:?}"
    );
    let from_silent = until_closed(&mut silent, "a silent client being closed").await;
    assert!(from_silent.is_empty(), "{from_silent:?}");
    let from_stalled = until_closed(&mut stalled, "a stalled handshake being closed").await;
    assert!(
        from_stalled.is_empty() || from_stalled[0] == 0x15,
        "{from_stalled:?}"
    );
    // Timers do not fire early: nobody was cut off before the timeout.
    assert!(opened.elapsed() >= Duration::from_millis(900));

    // The gateway still serves new connections afterwards.
    let reply = Reply::read(h2.send("GET", "/after", &[], empty()).await).await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut fresh = H2::open(&gw).await;
    let reply = Reply::read(fresh.send("GET", "/fresh", &[], empty()).await).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_replaced_on_disk_are_served_without_a_restart() {
    let (_dir, cert, key) = cert_paths();
    let gw = Gateway::start_tls(&tls_table(&cert, &key, ""), &[], &[]).await;
    let first = served_certificate(gw.addr).await;
    assert_eq!(first, pem_certificate(&cert));

    // A new pair, as a renewal tool would write it.
    let (cert_pem, key_pem, second) = new_pair();
    replace_file(&key, key_pem.as_bytes());
    replace_file(&cert, cert_pem.as_bytes());
    until_served(gw.addr, &second, "the replaced certificate being served").await;
    // An established HTTP/2 connection and a new one both work with it.
    let mut h2 = H2::open(&gw).await;
    let reply = Reply::read(h2.send("GET", "/healthz", &[], empty()).await).await;
    assert_eq!(reply.status, StatusCode::OK);

    // A broken replacement is refused and the pair in use stays.
    let refused = |gw: &Gateway| {
        gw.stderr
            .all()
            .iter()
            .filter(|l| l.contains("certificate refused"))
            .count()
    };
    let refusals = refused(&gw);
    replace_file(&cert, b"-----BEGIN CERTIFICATE-----\nnot base64!\n");
    eventually(
        Duration::from_secs(45),
        "the gateway noticing and refusing the broken certificate",
        || async { refused(&gw) > refusals },
    )
    .await;
    assert_eq!(
        served_certificate(gw.addr).await,
        second,
        "a broken replacement changed the certificate in use"
    );
    let reply = Reply::read(h2.send("GET", "/healthz", &[], empty()).await).await;
    assert_eq!(reply.status, StatusCode::OK);

    // Fixing the files is picked up as well: the watcher kept going after the refusal.
    let (cert_pem, key_pem, third) = new_pair();
    replace_file(&key, key_pem.as_bytes());
    replace_file(&cert, cert_pem.as_bytes());
    until_served(gw.addr, &third, "the fixed certificate being served").await;
}

/// Serializes the tests (of any process) that use Vast's default paths in /etc.
struct EtcLock {
    _held: std::fs::File,
}

impl EtcLock {
    async fn take() -> EtcLock {
        tokio::task::spawn_blocking(|| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(std::env::temp_dir().join("vastgate-tests-etc-instance.lock"))
                .expect("open the lock file");
            // SAFETY: flock(2) on a descriptor this function owns.
            let rc =
                unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
            assert_eq!(rc, 0, "flock");
            EtcLock { _held: file }
        })
        .await
        .unwrap()
    }
}

/// Removes the files of Vast's default pair that did not exist before the test, even when it
/// fails.
struct RemoveCreated(Vec<PathBuf>);

impl Drop for RemoveCreated {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_https_turns_tls_on_with_vasts_certificate_paths() {
    let _lock = EtcLock::take().await;
    let vast_cert = Path::new("/etc/instance.crt");
    let vast_key = Path::new("/etc/instance.key");
    let existed = (vast_cert.exists(), vast_key.exists());
    let _cleanup = RemoveCreated(
        [(vast_cert, existed.0), (vast_key, existed.1)]
            .iter()
            .filter(|(_, was)| !was)
            .map(|(p, _)| p.to_path_buf())
            .collect(),
    );

    let (upstream, seen) = echo_upstream("app").await;
    // No [gateway.tls] at all: only the environment turns TLS on (start_tls waits for the
    // plain-HTTP redirect, which a gateway without TLS never sends).
    let gw = Gateway::start_tls(
        "",
        &[route("/", upstream.addr, "")],
        &[("ENABLE_HTTPS", "true")],
    )
    .await;

    let mut h2 = H2::open(&gw).await;
    let reply = Reply::read(h2.send("GET", "/via-env", &[], empty()).await).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(seen.last().header("x-forwarded-proto"), Some("https"));

    if existed == (false, false) && vast_cert.exists() {
        // Nothing was there: the generated pair went to Vast's paths (we are allowed to write
        // /etc), and it is the one served.
        assert!(vast_key.exists());
        assert_eq!(format!("{:o}", mode(vast_key)), "600");
        assert_eq!(
            served_certificate(gw.addr).await,
            pem_certificate(vast_cert)
        );
    } else if existed == (false, false) {
        eprintln!("note: /etc is not writable here; the gateway serves a pair from memory");
    }
}
