//! End to end with ttyd's wire protocol: a faithful fake of ttyd (`tests/e2e/fake_ttyd.py`, a
//! real shell on a real pty) behind `/terminal/`, driven through the gateway the way ttyd's own
//! page drives it: fetch `/terminal/token`, open `/terminal/ws` with subprotocol `tty`, send the
//! JSON hello, resize, type, pause and resume, exit.

mod common;
#[path = "e2e/support.rs"]
mod support;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message from the terminal that is not a ping or pong.
async fn next_message(ws: &mut Ws) -> Message {
    loop {
        let msg = within(Duration::from_secs(60), "a terminal message", ws.next())
            .await
            .expect("the terminal closed without a close frame")
            .expect("a terminal message");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The shell's prompt, set by the first command: once the output ends with it, the shell waits.
const PROMPT: &str = "ttyd-prompt> ";

/// Reads `0`+output messages until the output so far ends with the shell's [`PROMPT`] after
/// containing `needle`; returns it all.
async fn output_until(ws: &mut Ws, needle: &str) -> String {
    let mut output = String::new();
    while !output
        .find(needle)
        .is_some_and(|at| output[at..].ends_with(PROMPT))
    {
        match next_message(ws).await {
            Message::Binary(data) if data.first() == Some(&b'0') => {
                output.push_str(&String::from_utf8_lossy(&data[1..]));
            }
            other => panic!("expected output, got {other:?} after {output:?}"),
        }
    }
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_typed_into_ttyds_protocol_runs_and_its_output_comes_back() {
    let Some(python) = python(&["websockets"]) else {
        return;
    };
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut ttyd = App::python(
        &python,
        "fake_ttyd.py",
        &[upstream.port().to_string(), "/terminal".into()],
    );
    ttyd.wait_ready("READY").await;
    let gw = gateway(&[route("/terminal/", upstream, "sensitive = true")]).await;

    let token = get(
        gw.addr,
        "/terminal/token",
        &[("authorization", &authorization())],
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.text());
    let auth_token = token.json()["token"].as_str().expect("a token").to_owned();

    let mut req = format!("ws://{}/terminal/ws", gw.addr)
        .into_client_request()
        .unwrap();
    let headers = req.headers_mut();
    headers.insert("authorization", authorization().parse().unwrap());
    headers.insert("origin", gw.url("").parse().unwrap());
    headers.insert("sec-websocket-protocol", "tty".parse().unwrap());
    let (mut ws, resp) = within(
        PATIENCE,
        "the terminal's handshake",
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("the terminal's WebSocket opens through the gateway");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("tty")
    );

    // The hello starts the shell; ttyd then names the window and sends its preferences.
    let hello = serde_json::json!({"AuthToken": auth_token, "columns": 80, "rows": 24});
    ws.send(Message::Binary(hello.to_string().into_bytes()))
        .await
        .unwrap();
    match next_message(&mut ws).await {
        Message::Binary(title) => assert!(title.starts_with(b"1bash"), "{title:?}"),
        other => panic!("expected the window title, got {other:?}"),
    }
    match next_message(&mut ws).await {
        Message::Binary(prefs) if prefs.first() == Some(&b'2') => {
            serde_json::from_slice::<serde_json::Value>(&prefs[1..]).expect("preferences JSON");
        }
        other => panic!("expected the preferences, got {other:?}"),
    }

    let resize = br#"1{"columns":100,"rows":30}"#.to_vec();
    ws.send(Message::Binary(resize)).await.unwrap();
    // `$((6*7))` makes the answer differ from the echoed keystrokes.
    let command = format!("0PS1='{PROMPT}'; stty size; echo vastgate-$((6*7))\r");
    ws.send(Message::Binary(command.into_bytes()))
        .await
        .unwrap();
    let output = output_until(&mut ws, "vastgate-42").await;
    assert!(
        output.contains("30 100"),
        "the resize reached the pty: {output:?}"
    );

    // Paused, the shell's output waits; resumed, it comes. (The shell was idle at its prompt.)
    ws.send(Message::Binary(b"2".to_vec())).await.unwrap();
    ws.send(Message::Binary(b"0echo resumed-$((1+1))\r".to_vec()))
        .await
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Some(Ok(Message::Binary(data))) = ws.next().await {
                return data;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "output while paused: {quiet:?}");
    ws.send(Message::Binary(b"3".to_vec())).await.unwrap();
    output_until(&mut ws, "resumed-2").await;

    // The shell exits: ttyd closes with 1000.
    ws.send(Message::Binary(b"0exit\r".to_vec())).await.unwrap();
    loop {
        match next_message(&mut ws).await {
            Message::Binary(data) if data.first() == Some(&b'0') => continue,
            Message::Close(frame) => {
                let frame = frame.expect("a close code");
                assert_eq!(frame.code, CloseCode::Normal);
                break;
            }
            other => panic!("expected output or the close, got {other:?}"),
        }
    }
    let tunnel = gw
        .access_log()
        .into_iter()
        .find(|l| l["path"] == "/terminal/ws")
        .expect("the tunnel's access-log line");
    assert_eq!(tunnel["status"], 101);
}
