//! WebSocket tunnels through the gateway: echo with a subprotocol and close codes, the origin
//! check against cross-site pages, and upgrades other than WebSocket never being tunnelled.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A ttyd-like WebSocket upstream: negotiates the `tty` subprotocol when offered, echoes every
/// message, closes with CODE when sent the text `close:CODE`, and reports the close frame each
/// client sent.
struct WsUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<Vec<HeaderMap>>>,
    closes: mpsc::UnboundedReceiver<Option<CloseFrame<'static>>>,
    _task: Upstream,
}

async fn ws_upstream() -> WsUpstream {
    let (listener, addr) = raw_upstream().await;
    let connections = Arc::new(AtomicUsize::new(0));
    let handshakes: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let (close_tx, closes) = mpsc::unbounded_channel();
    let (count, seen) = (connections.clone(), handshakes.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            let close_tx = close_tx.clone();
            tokio::spawn(async move {
                let callback = move |req: &WsRequest, mut resp: WsResponse| {
                    seen.lock().unwrap().push(req.headers().clone());
                    let offers_tty = req
                        .headers()
                        .get_all("sec-websocket-protocol")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(|v| v.split(','))
                        .any(|p| p.trim() == "tty");
                    if offers_tty {
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", HeaderValue::from_static("tty"));
                    }
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(msg) = ws.next().await {
                    match msg {
                        Ok(Message::Text(t)) if t.starts_with("close:") => {
                            let code: u16 = t["close:".len()..].parse().unwrap();
                            let _ = ws
                                .send(Message::Close(Some(CloseFrame {
                                    code: CloseCode::from(code),
                                    reason: "shell exited".into(),
                                })))
                                .await;
                        }
                        Ok(Message::Close(frame)) => {
                            let _ = close_tx.send(frame);
                        }
                        Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                            if ws.send(m).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
        }
    });
    WsUpstream {
        addr,
        connections,
        handshakes,
        closes,
        _task: Upstream::from_task(addr, task),
    }
}

/// Opens a WebSocket through the gateway at `path`, offering `protocol` and sending `origin`.
async fn ws_connect(
    gateway: SocketAddr,
    path: &str,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<
    (
        WebSocketStream<TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let mut req = format!("ws://{gateway}{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(o).unwrap());
    }
    let stream = TcpStream::connect(gateway).await.expect("connect");
    within(
        PATIENCE,
        "the WebSocket handshake",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
}

async fn next_message(ws: &mut WebSocketStream<TcpStream>) -> Option<Message> {
    within(PATIENCE, "a WebSocket message", ws.next())
        .await
        .map(|m| m.expect("WebSocket error"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_keeps_the_subprotocol_and_the_close_code() {
    let mut up = ws_upstream().await;
    let gw = Gateway::start("", &[route("/terminal/", up.addr, "")]).await;

    let (mut ws, resp) = ws_connect(gw.addr, "/terminal/ws", Some("tty"), None)
        .await
        .expect("handshake through the gateway");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("tty")
    );

    // ttyd's first message, then input frames: '0' + bytes.
    let hello = r#"{"AuthToken":"","columns":80,"rows":24}"#;
    ws.send(Message::text(hello)).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text(hello)));
    let input = b"0ls -la\r".to_vec();
    ws.send(Message::Binary(input.clone())).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::Binary(input)));
    let big = vec![b'x'; 300_000];
    ws.send(Message::Binary(big.clone())).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::Binary(big)));

    // The shell exits: the upstream closes with 4000, and the client sees exactly that.
    ws.send(Message::text("close:4000")).await.unwrap();
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::from(4000));
            assert_eq!(frame.reason, "shell exited");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(
        next_message(&mut ws).await,
        None,
        "the tunnel ends after the close"
    );
    // The client's reply completed the close handshake at the upstream.
    let reply = within(
        PATIENCE,
        "the upstream seeing the close reply",
        up.closes.recv(),
    )
    .await
    .unwrap()
    .expect("a close reply with a code");
    assert_eq!(reply.code, CloseCode::from(4000));

    let headers = up.handshakes.lock().unwrap()[0].clone();
    assert_eq!(
        headers["upgrade"].to_str().unwrap().to_ascii_lowercase(),
        "websocket"
    );
    assert!(headers["connection"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase()
        .contains("upgrade"));
    assert_eq!(headers["sec-websocket-protocol"], "tty");
    assert_eq!(headers["host"], gw.addr.to_string().as_str());
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");

    // The client closes with 1000 and a reason: the upstream receives both.
    let (mut ws, _) = ws_connect(gw.addr, "/terminal/ws", Some("tty"), None)
        .await
        .expect("second handshake");
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("ping")));
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "tab closed".into(),
    }))
    .await
    .unwrap();
    let frame = within(PATIENCE, "the upstream seeing the close", up.closes.recv())
        .await
        .unwrap()
        .expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Normal);
    assert_eq!(frame.reason, "tab closed");
    // The close handshake completes through the tunnel.
    loop {
        match within(PATIENCE, "the end of the tunnel", ws.next()).await {
            None => break,
            Some(Ok(Message::Close(_))) => {}
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(WsError::ConnectionClosed)) => break,
            Some(Err(e)) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_browser_upgrade_is_refused_and_same_origin_works() {
    let up = ws_upstream().await;
    let gw = Gateway::start(
        "",
        &[
            route("/terminal/", up.addr, ""),
            route(
                "/jupyter/",
                up.addr,
                "allow_origins = [\"https://portal.example\"]",
            ),
        ],
    )
    .await;

    for (path, origin) in [
        ("/terminal/ws", "http://evil.example"),
        ("/terminal/ws", "null"),
        // Same host, other port: another origin.
        ("/terminal/ws", "http://127.0.0.1:1"),
        ("/jupyter/api/kernels/1/channels", "http://evil.example"),
    ] {
        match ws_connect(gw.addr, path, Some("tty"), Some(origin)).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} from {origin}")
            }
            Ok(_) => panic!("{path}: upgrade from {origin} was tunnelled"),
            Err(e) => panic!("{path} from {origin}: unexpected {e}"),
        }
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        0,
        "a refused upgrade must not reach the upstream"
    );

    let same_origin = format!("http://{}", gw.addr);
    let (mut ws, _) = ws_connect(gw.addr, "/terminal/ws", Some("tty"), Some(&same_origin))
        .await
        .expect("same-origin upgrade");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("hello")));

    let (mut ws, _) = ws_connect(
        gw.addr,
        "/jupyter/api/kernels/1/channels",
        None,
        Some("https://portal.example"),
    )
    .await
    .expect("an origin the route allows");
    ws.send(Message::text("kernel")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("kernel")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_never_tunnelled() {
    let (app, seen) = echo_upstream("app").await;
    let gw = Gateway::start("", &[route("/", app.addr, "")]).await;

    let req = format!(
        "GET /api/x HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        gw.addr
    );
    let reply = within(
        PATIENCE,
        "h2c request",
        raw_exchange(gw.addr, req.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "served as plain HTTP/1.1");
    assert!(reply.header("upgrade").is_none());
    let s = seen.last();
    assert_eq!(s.target, "/api/x");
    assert_eq!(s.version, "HTTP/1.1");
    assert!(
        s.all("upgrade").is_empty(),
        "Upgrade reached the upstream: {:?}",
        s.headers
    );
    assert!(s.all("http2-settings").is_empty(), "{:?}", s.headers);

    // An upstream that switches protocols anyway is not followed.
    let (listener, rogue) = raw_upstream().await;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                    )
                    .await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                drop(head);
            });
        }
    });
    let _rogue = Upstream::from_task(rogue, task);
    let gw = Gateway::start("", &[route("/", rogue, "")]).await;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        gw.addr
    );
    let reply = within(
        Duration::from_secs(60),
        "answer to an h2c request whose upstream switches protocols",
        raw_exchange(gw.addr, req.as_bytes()),
    )
    .await
    .unwrap();
    assert_ne!(reply.status, 101);
    assert_eq!(reply.status, 502);
}
