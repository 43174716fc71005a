//! Keep-alive connections to the upstreams: reused while a client keeps asking, never reused
//! after an abandoned body, closed when idle, and an upstream closing an idle connection never
//! shows as an error. Through the real `vastgate` binary to byte-level upstreams.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Reads one request head, or `None` when the peer closed the connection between requests.
async fn next_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// How the upstream below treats one connection after answering its first request.
#[derive(Clone, Copy)]
enum Mode {
    /// Keep the connection open and answer every request on it.
    KeepAlive,
    /// Answer one request (announcing keep-alive), then close: an app's idle timeout firing.
    CloseAfterOne,
}

/// An upstream that numbers its connections and answers `connection N request M` (a 204 for
/// paths starting `/empty`, no body for HEAD). Reports each connection's end on `closed`.
async fn counting_upstream(
    mode: Mode,
) -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<usize>) {
    let (listener, addr): (TcpListener, SocketAddr) = raw_upstream().await;
    let connections = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut m = 0;
                while let Some(head) = next_head(&mut stream).await {
                    m += 1;
                    let response = if head.starts_with("GET /empty") {
                        "HTTP/1.1 204 No Content\r\n\r\n".to_string()
                    } else {
                        let body = format!("connection {n} request {m}");
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if !head.starts_with("HEAD ") {
                            r.push_str(&body);
                        }
                        r
                    };
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        break;
                    }
                    if matches!(mode, Mode::CloseAfterOne) {
                        break;
                    }
                }
                drop(stream);
                let _ = closed_tx.send(n);
            });
        }
    });
    (addr, connections, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asking_again_and_again_reuses_one_upstream_connection() {
    let (upstream, connections, _closed) = counting_upstream(Mode::KeepAlive).await;
    let gw = Gateway::start("", &[route("/", upstream, "")]).await;
    let mut conn = Conn::open(gw.addr).await;
    for i in 1..=20 {
        // Bodies read to the end, bodies nobody reads (HEAD, 204): all give the connection back.
        let (method, path) = match i % 4 {
            1 => ("HEAD", "/head"),
            2 => ("GET", "/empty"),
            _ => ("GET", "/text"),
        };
        let reply = conn.exchange(request(method, path, &[], empty())).await;
        match (method, path) {
            ("GET", "/text") => {
                assert_eq!(reply.status, StatusCode::OK);
                assert_eq!(reply.text(), format!("connection 1 request {i}"));
            }
            ("GET", _) => assert_eq!(reply.status, StatusCode::NO_CONTENT),
            _ => {
                assert_eq!(reply.status, StatusCode::OK);
                assert!(reply.text().is_empty());
            }
        }
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_idle_connections_never_shows_as_an_error() {
    let (upstream, connections, _closed) = counting_upstream(Mode::CloseAfterOne).await;
    let gw = Gateway::start("", &[route("/", upstream, "")]).await;
    let mut conn = Conn::open(gw.addr).await;
    // Each answer is followed at once by the upstream closing; the next request comes right
    // after, while the gateway may not have seen the close yet.
    for i in 1..=50 {
        let reply = conn.exchange(request("GET", "/text", &[], empty())).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i}: {}",
            reply.text()
        );
        assert_eq!(reply.text(), format!("connection {i} request 1"));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_response_closes_its_upstream_connection() {
    // Announces more body than it sends: the client gives up half way.
    let (listener, upstream) = raw_upstream().await;
    let gw = Gateway::start("", &[route("/", upstream, "")]).await;

    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nhost: box\r\n\r\n")
        .await
        .unwrap();
    let (mut first, _) = within(
        Duration::from_secs(5),
        "the first upstream connection",
        listener.accept(),
    )
    .await
    .unwrap();
    next_head(&mut first).await.expect("the request");
    first
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\npartial")
        .await
        .unwrap();
    let mut seen = [0u8; 64];
    let n = within(
        Duration::from_secs(5),
        "the partial answer",
        client.read(&mut seen),
    )
    .await
    .unwrap();
    assert!(n > 0);
    drop(client);

    // The half-read connection is closed, not handed to the next request.
    let mut rest = Vec::new();
    within(
        Duration::from_secs(5),
        "the abandoned connection to close",
        first.read_to_end(&mut rest),
    )
    .await
    .unwrap();

    let next = tokio::spawn(async move { get(gw.addr, "/next", &[]).await });
    let (mut second, _) = within(
        Duration::from_secs(5),
        "a fresh upstream connection",
        listener.accept(),
    )
    .await
    .unwrap();
    let head = next_head(&mut second).await.expect("the next request");
    assert!(head.starts_with("GET /next "), "{head}");
    second
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh")
        .await
        .unwrap();
    let reply = next.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_close_after_pool_idle_timeout() {
    let (upstream, connections, mut closed) = counting_upstream(Mode::KeepAlive).await;
    let gw = Gateway::start("pool_idle_timeout = \"300ms\"", &[route("/", upstream, "")]).await;
    let reply = get(gw.addr, "/text", &[]).await;
    assert_eq!(reply.text(), "connection 1 request 1");
    // Still pooled a moment later...
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(closed.try_recv().is_err(), "closed before the idle timeout");
    // ...and closed by the gateway soon after the timeout.
    let which = within(
        Duration::from_secs(3),
        "the idle connection to be closed",
        closed.recv(),
    )
    .await
    .unwrap();
    assert_eq!(which, 1);
    // The next request opens a new one.
    let reply = get(gw.addr, "/text", &[]).await;
    assert_eq!(reply.text(), "connection 2 request 1");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}
