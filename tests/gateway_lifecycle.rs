//! The gateway as a process: header timeouts against slow clients, graceful shutdown on SIGTERM,
//! and configuration reload on SIGHUP.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Reads from `stream` until the peer closes it (EOF or reset), returning what arrived.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return data,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_client_is_cut_while_a_normal_client_is_served() {
    let (app, seen) = echo_upstream("app").await;
    let gw = Gateway::start("header_timeout = \"1s\"", &[route("/", app.addr, "")]).await;

    // Half a request line, then nothing.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /queue/jo").await.unwrap();
    let started = Instant::now();

    // Meanwhile an ordinary client is served, on a connection opened after the slow one.
    let reply = get(gw.addr, "/ok", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);

    let answer = within(
        Duration::from_secs(20),
        "the gateway cutting the slow client",
        read_until_closed(&mut slow),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "cut after only {took:?}"
    );
    if !answer.is_empty() {
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "unexpected answer: {text}"
        );
    }
    assert_eq!(
        seen.len(),
        1,
        "only the normal request reached the upstream"
    );

    // The gateway keeps serving.
    assert_eq!(get(gw.addr, "/after", &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_cut_by_the_header_timeout() {
    let (app, _seen) = echo_upstream("app").await;
    let gw = Gateway::start("header_timeout = \"1s\"", &[route("/", app.addr, "")]).await;

    // Connects and never sends a byte.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    assert_eq!(get(gw.addr, "/ok", &[]).await.status, StatusCode::OK);
    within(
        Duration::from_secs(20),
        "the gateway cutting a connection that sends nothing",
        read_until_closed(&mut silent),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// An upstream whose requests each wait until the test releases them.
struct HeldUpstream {
    upstream: Upstream,
    arrived: mpsc::Receiver<()>,
    release: Arc<Mutex<Vec<oneshot::Sender<()>>>>,
}

async fn held_upstream(body: Bytes) -> HeldUpstream {
    let (arrived_tx, arrived) = mpsc::channel(8);
    let release: Arc<Mutex<Vec<oneshot::Sender<()>>>> = Arc::default();
    let releases = release.clone();
    let upstream = http_upstream(move |_req: Request<Incoming>| {
        let arrived_tx = arrived_tx.clone();
        let releases = releases.clone();
        let body = body.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            releases.lock().unwrap().push(tx);
            let _ = arrived_tx.send(()).await;
            let _ = rx.await;
            // Streamed in pieces, so the answer takes a few writes to cross the gateway.
            let (chunks, stream) = channel_body(2);
            tokio::spawn(async move {
                for piece in body.chunks(16 * 1024) {
                    if chunks.send(Bytes::copy_from_slice(piece)).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(stream)
                .unwrap()
        }
    })
    .await;
    HeldUpstream {
        upstream,
        arrived,
        release,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_and_exits_0() {
    let body = Bytes::from(
        (0..20_000)
            .map(|i| format!("{{\"image\":{i}}},"))
            .collect::<String>(),
    );
    let mut held = held_upstream(body.clone()).await;
    let mut gw = Gateway::start(
        "shutdown_grace = \"20s\"",
        &[route("/", held.upstream.addr, "")],
    )
    .await;

    let mut conn = Conn::open(gw.addr).await;
    let response = tokio::spawn(async move {
        Reply::read(
            conn.send(request("POST", "/sdapi/v1/txt2img", &[], full("{}")))
                .await,
        )
        .await
    });
    within(
        PATIENCE,
        "the request reaching the upstream",
        held.arrived.recv(),
    )
    .await
    .unwrap();

    gw.signal(libc::SIGTERM);
    let signalled = Instant::now();
    gw.stderr
        .wait_for(PATIENCE, |l| l.contains("shutting down"))
        .await
        .expect("the gateway noticed SIGTERM");
    // It stopped accepting...
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "the listener is still open after SIGTERM"
    );
    // ...while the generation is still running upstream; it finishes a second later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for tx in held.release.lock().unwrap().drain(..) {
        let _ = tx.send(());
    }

    let reply = within(PATIENCE, "the in-flight response", response)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == body, "the response was cut short");
    let status = gw
        .wait_exit(PATIENCE)
        .await
        .expect("the gateway exits after its last request");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(18),
        "the exit waited for the whole grace period: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_event_streams_and_tunnels_at_once() {
    // An event stream that never ends by itself.
    let (events_tx, mut events_rx) = mpsc::channel::<mpsc::Sender<Bytes>>(1);
    let sse = http_upstream(move |_req: Request<Incoming>| {
        let events_tx = events_tx.clone();
        async move {
            let (tx, body) = channel_body(1);
            let _ = events_tx.send(tx).await;
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap()
        }
    })
    .await;
    // A WebSocket upstream that accepts and then holds the tunnel open.
    let (listener, ws_addr) = raw_upstream().await;
    let ws_task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            read_head(&mut stream).await;
            stream
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                      Upgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                )
                .await
                .unwrap();
            held.push(stream);
        }
    });
    let _ws = Upstream::from_task(ws_addr, ws_task);
    let mut gw = Gateway::start(
        "shutdown_grace = \"20s\"",
        &[
            route("/queue/", sse.addr, ""),
            route("/terminal/", ws_addr, ""),
        ],
    )
    .await;

    let mut conn = Conn::open(gw.addr).await;
    let resp = conn
        .send(request(
            "GET",
            "/queue/data",
            &[("accept", "text/event-stream")],
            empty(),
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let events = within(PATIENCE, "the upstream's stream", events_rx.recv())
        .await
        .unwrap();
    events
        .send(Bytes::from_static(b"data: hello\n\n"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = within(PATIENCE, "the first event", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: hello\n\n");

    let mut tunnel = TcpStream::connect(gw.addr).await.unwrap();
    tunnel
        .write_all(
            format!(
                "GET /terminal/ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                gw.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = within(PATIENCE, "the 101", tunnel.read(&mut byte))
            .await
            .unwrap();
        assert!(n > 0, "closed before the 101");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    gw.signal(libc::SIGTERM);
    let signalled = Instant::now();
    // The event stream ends (cleanly or not) without the upstream ending it.
    within(
        Duration::from_secs(10),
        "the event stream closing at SIGTERM",
        async { while let Some(Ok(_)) = body.frame().await {} },
    )
    .await;
    within(
        Duration::from_secs(10),
        "the tunnel closing at SIGTERM",
        read_until_closed(&mut tunnel),
    )
    .await;
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("open streams held the exit");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(15));
    drop(events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_new_routes_and_keeps_open_connections() {
    let (a, _) = echo_upstream("a").await;
    let (b, _) = echo_upstream("b").await;
    let gw = Gateway::start("", &[route("/a/", a.addr, "")]).await;

    let mut conn = Conn::open(gw.addr).await;
    let reply = conn.exchange(request("GET", "/a/1", &[], empty())).await;
    assert_eq!(reply.json()["upstream"], "a");
    let reply = conn.exchange(request("GET", "/b/1", &[], empty())).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    gw.rewrite_config(
        "",
        &[
            route("/a/", a.addr, ""),
            route("/b/", b.addr, "strip_prefix = true"),
        ],
    );
    gw.signal(libc::SIGHUP);
    gw.stderr
        .wait_for(PATIENCE, |l| l.contains("configuration reloaded"))
        .await
        .expect("the gateway reloaded");

    // The same keep-alive connection sees the new routes.
    let reply = conn.exchange(request("GET", "/b/2", &[], empty())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["upstream"], "b");
    assert_eq!(reply.json()["target"], "/2");
    let reply = conn.exchange(request("GET", "/a/2", &[], empty())).await;
    assert_eq!(reply.json()["upstream"], "a");
    assert!(!conn.is_closed());
    // And so does a new one.
    assert_eq!(get(gw.addr, "/b/3", &[]).await.json()["upstream"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_an_invalid_file_keeps_the_old_routes() {
    let (a, _) = echo_upstream("a").await;
    let (b, _) = echo_upstream("b").await;
    let gw = Gateway::start("", &[route("/a/", a.addr, "")]).await;

    // Line 4 has a misspelt key.
    let invalid = format!(
        "[gateway]\nlisten = \"{}\"\nauth = \"none\"\nlisen = \"0.0.0.0:8000\"\n\n{}\n{}",
        gw.addr,
        route("/a/", a.addr, ""),
        route("/b/", b.addr, "")
    );
    gw.write_config_text(&invalid);
    gw.signal(libc::SIGHUP);
    let expected = format!("{}:4:1:", gw.config_path.display());
    let line = gw
        .stderr
        .wait_for(PATIENCE, |l| l.contains("reload refused"))
        .await
        .expect("the refused reload is logged");
    assert!(line.contains(&expected), "{line}");
    assert!(line.contains("lisen"), "{line}");

    assert_eq!(get(gw.addr, "/a/x", &[]).await.json()["upstream"], "a");
    assert_eq!(
        get(gw.addr, "/b/x", &[]).await.status,
        StatusCode::NOT_FOUND
    );

    // A later good file is taken.
    gw.rewrite_config("", &[route("/a/", a.addr, ""), route("/b/", b.addr, "")]);
    gw.signal(libc::SIGHUP);
    gw.stderr
        .wait_for(PATIENCE, |l| l.contains("configuration reloaded"))
        .await
        .expect("the gateway reloaded");
    assert_eq!(get(gw.addr, "/b/x", &[]).await.json()["upstream"], "b");
}
