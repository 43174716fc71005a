//! WebSocket transparency end to end: a frame-level fuzz whose bytes must come out of the
//! gateway's tunnel exactly as they come out of a direct connection to the same peer, both
//! ways; and a real client and server (Python's `websockets`) talking through the gateway.
//!
//! (The Autobahn test suite would be the reference here, but its PyPI release needs Python 2.)

mod common;
#[path = "e2e/support.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// One frame as RFC 6455 §5.2 lays it out; masked (client to server) when `mask` is given.
fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// xorshift: the fuzz is the same on every run, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn text(&mut self, n: usize) -> Vec<u8> {
        // Valid UTF-8 of exactly n bytes: ASCII with a few two-byte letters.
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if n - out.len() >= 2 && self.next() % 8 == 0 {
                out.extend_from_slice("é".as_bytes());
            } else {
                out.push(b'a' + (self.next() % 26) as u8);
            }
        }
        out
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.next() as u32).to_be_bytes()
    }
}

/// Every close code a peer may send (RFC 6455 §7.4: 1004–1006 and 1015 never go on the wire).
fn valid_close_codes() -> Vec<u16> {
    (1000..=1003)
        .chain(1007..=1014)
        .chain(3000..=4999)
        .collect()
}

/// The fuzz, as (frame the client sends, frame the echo sends back).
fn fuzz_frames() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut frames = Vec::new();
    let mut push = |rng: &mut Rng, fin: bool, opcode: u8, payload: Vec<u8>| {
        let sent = frame(fin, opcode, &payload, Some(rng.mask()));
        frames.push((sent, frame(fin, opcode, &payload, None)));
    };
    // Every length-encoding boundary, text and binary, up to 16 MiB.
    for n in [0, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
        let text = rng.text(n);
        push(&mut rng, true, TEXT, text);
        let binary = rng.bytes(n);
        push(&mut rng, true, BINARY, binary);
    }
    let big = rng.bytes(16 << 20);
    push(&mut rng, true, BINARY, big);
    // Fragmented messages with control frames between the fragments.
    let (a, b, c) = (rng.text(10), rng.text(300), rng.text(70_000));
    push(&mut rng, false, TEXT, a);
    push(&mut rng, true, PING, b"between fragments".to_vec());
    push(&mut rng, false, CONTINUATION, b);
    push(&mut rng, true, PONG, Vec::new());
    push(&mut rng, true, CONTINUATION, c);
    for _ in 0..20 {
        let fragments = 1 + rng.next() % 5;
        for i in 0..fragments {
            let opcode = if i == 0 { BINARY } else { CONTINUATION };
            let len = (rng.next() % 3000) as usize;
            let payload = rng.bytes(len);
            push(&mut rng, i + 1 == fragments, opcode, payload);
            if rng.next() % 2 == 0 {
                let len = (rng.next() % 126) as usize;
                let ping = rng.bytes(len);
                push(&mut rng, true, PING, ping);
            }
        }
    }
    // Pings and pongs, empty and full (control payloads stop at 125 bytes).
    for n in [0, 1, 125] {
        let ping = rng.bytes(n);
        push(&mut rng, true, PING, ping);
        let pong = rng.bytes(n);
        push(&mut rng, true, PONG, pong);
    }
    // Every valid close code, with and without a reason.
    for code in valid_close_codes() {
        let mut payload = code.to_be_bytes().to_vec();
        if code % 2 == 0 {
            payload.extend_from_slice(b"reason");
        }
        push(&mut rng, true, CLOSE, payload);
    }
    frames
}

/// A request head, as the gateway or the peer sees it start a WebSocket.
fn upgrade_request(host: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: {}\r\n\r\n",
        authorization()
    )
}

fn accept_key(key: &str) -> String {
    use base64::Engine;
    use sha1::Digest;
    let digest = sha1::Sha1::digest(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11"));
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Bytes read from a socket, all of them kept, in order.
struct Recorder {
    read: OwnedReadHalf,
    bytes: Vec<u8>,
    pos: usize,
}

impl Recorder {
    /// Reads until `n` unparsed bytes are buffered; false at end of stream.
    async fn need(&mut self, n: usize) -> bool {
        while self.bytes.len() - self.pos < n {
            let mut chunk = vec![0u8; 64 * 1024];
            match self.read.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(got) => self.bytes.extend_from_slice(&chunk[..got]),
            }
        }
        true
    }

    fn take(&mut self, n: usize) -> &[u8] {
        self.pos += n;
        &self.bytes[self.pos - n..self.pos]
    }

    /// The next frame, unmasked, as (first byte, payload); `None` at the end of the stream,
    /// including inside a frame.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if !self.need(2).await {
            return None;
        }
        let head = self.take(2).to_vec();
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7F {
            126 => {
                self.need(2).await.then_some(())?;
                u16::from_be_bytes(self.take(2).try_into().unwrap()) as usize
            }
            127 => {
                self.need(8).await.then_some(())?;
                u64::from_be_bytes(self.take(8).try_into().unwrap()) as usize
            }
            n => n as usize,
        };
        let key = if masked {
            self.need(4).await.then_some(())?;
            Some(<[u8; 4]>::try_from(self.take(4)).unwrap())
        } else {
            None
        };
        self.need(len).await.then_some(())?;
        let payload = self.take(len);
        let payload = match key {
            Some(k) => payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ k[i % 4])
                .collect(),
            None => payload.to_vec(),
        };
        Some((head[0], payload))
    }
}

/// The peer: accepts WebSockets on `/echo` (each frame is sent back unmasked once it has been
/// read whole, by the same task that reads: a simple server, like many) and on `/half` (reads
/// to the end, then sends half a frame and closes). Reports every byte it received after the
/// handshake, one report per connection.
async fn frame_peer() -> (Upstream, mpsc::UnboundedReceiver<Vec<u8>>) {
    let (listener, addr) = raw_upstream().await;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_owned())
                    })
                    .expect("a Sec-WebSocket-Key");
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    accept_key(&key)
                );
                let (read, mut write) = stream.into_split();
                write.write_all(response.as_bytes()).await.unwrap();
                let mut rec = Recorder {
                    read,
                    bytes: Vec::new(),
                    pos: 0,
                };
                if head.starts_with("GET /half") {
                    while rec.need(usize::MAX / 2).await {}
                    let partial = frame(true, BINARY, &[7u8; 1000], None);
                    let _ = write.write_all(&partial[..4 + 300]).await;
                } else {
                    while let Some((first, payload)) = rec.frame().await {
                        let echo = frame(first & 0x80 != 0, first & 0x0F, &payload, None);
                        if write.write_all(&echo).await.is_err() {
                            break;
                        }
                    }
                }
                drop(write);
                let _ = tx.send(rec.bytes);
            });
        }
    });
    (Upstream::from_task(addr, task), rx)
}

/// Opens a WebSocket on `connect` (the peer itself or the gateway), writes `sending` while
/// reading (as real clients do: neither direction waits for the other), half-closes, and returns
/// every byte received after the 101.
async fn exchange(connect: SocketAddr, path: &str, sending: Vec<u8>) -> Vec<u8> {
    let mut stream = TcpStream::connect(connect).await.expect("connect");
    stream
        .write_all(upgrade_request(connect, path).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        for chunk in sending.chunks(256 * 1024) {
            write.write_all(chunk).await.expect("send frames");
        }
        write.shutdown().await.expect("half-close");
        write
    });
    let mut received = Vec::new();
    read.read_to_end(&mut received).await.expect("read frames");
    drop(writer.await.expect("the writer finished"));
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_fuzz_passes_the_tunnel_byte_for_byte_both_ways() {
    let (peer, mut reports) = frame_peer().await;
    let gw = gateway(&[route("/", peer.addr, "")]).await;
    let frames = fuzz_frames();
    let sent: Vec<u8> = frames.iter().flat_map(|(s, _)| s.clone()).collect();
    let echoed: Vec<u8> = frames.iter().flat_map(|(_, e)| e.clone()).collect();

    let limit = Duration::from_secs(180);
    let direct = within(
        limit,
        "the fuzz, direct",
        exchange(peer.addr, "/echo", sent.clone()),
    )
    .await;
    let direct_seen = reports.recv().await.unwrap();
    assert!(direct == echoed, "the peer itself echoes the fuzz");
    assert!(direct_seen == sent);

    let tunnelled = within(
        limit,
        "the fuzz through the gateway",
        exchange(gw.addr, "/echo", sent.clone()),
    )
    .await;
    let tunnel_seen = reports.recv().await.unwrap();
    assert_eq!(tunnel_seen.len(), sent.len(), "bytes that reached the peer");
    assert!(
        tunnel_seen == direct_seen,
        "the peer received other bytes through the tunnel"
    );
    assert_eq!(tunnelled.len(), direct.len(), "bytes that came back");
    assert!(
        tunnelled == direct,
        "the client received other bytes through the tunnel"
    );
}

/// Two 16 MiB messages back to back: the peer echoes the first while the second is still
/// arriving, so both directions are full at once. A direct connection copes (the client reads
/// while it writes); a tunnel that stops reading one side while it waits to write the other
/// deadlocks: the peer waits for the gateway to read its echo, the gateway waits for the peer to
/// read the rest of the second message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_full_both_ways_at_once_keeps_flowing() {
    let (peer, mut reports) = frame_peer().await;
    let gw = gateway(&[route("/", peer.addr, "")]).await;
    let mut rng = Rng(0x0b07_4ca7_5eed_0001);
    let (mut sent, mut echoed) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let payload = rng.bytes(16 << 20);
        sent.extend(frame(true, BINARY, &payload, Some(rng.mask())));
        echoed.extend(frame(true, BINARY, &payload, None));
    }

    let limit = Duration::from_secs(60);
    let direct = within(
        limit,
        "32 MiB echoed, direct",
        exchange(peer.addr, "/echo", sent.clone()),
    )
    .await;
    assert!(direct == echoed, "the peer itself echoes both messages");
    assert!(reports.recv().await.unwrap() == sent);

    let tunnelled = within(
        limit,
        "32 MiB echoed through the gateway (both directions full at once)",
        exchange(gw.addr, "/echo", sent.clone()),
    )
    .await;
    assert!(
        tunnelled == echoed,
        "the client received other bytes through the tunnel"
    );
    assert!(
        reports.recv().await.unwrap() == sent,
        "the peer received other bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_closes_mid_frame_is_seen_the_same_through_the_tunnel() {
    let (peer, mut reports) = frame_peer().await;
    let gw = gateway(&[route("/", peer.addr, "")]).await;
    let whole = frame(true, BINARY, &[9u8; 1000], Some([1, 2, 3, 4]));
    let half = whole[..2 + 2 + 4 + 500].to_vec();

    let direct = within(
        PATIENCE,
        "direct",
        exchange(peer.addr, "/half", half.clone()),
    )
    .await;
    let direct_seen = reports.recv().await.unwrap();
    let tunnelled = within(PATIENCE, "tunnel", exchange(gw.addr, "/half", half.clone())).await;
    let tunnel_seen = reports.recv().await.unwrap();

    assert_eq!(direct_seen, half, "the peer got the client's half frame");
    assert_eq!(
        tunnel_seen, half,
        "and through the tunnel, then the end of the stream"
    );
    assert_eq!(direct.len(), 304);
    assert_eq!(
        tunnelled, direct,
        "the client got the peer's half frame, then the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_and_server_talk_through_the_gateway() {
    let Some(python) = python(&["websockets"]) else {
        return;
    };
    let upstream: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut server = App::python(
        &python,
        "ws_pair.py",
        &["server".into(), upstream.port().to_string()],
    );
    server.wait_ready("READY").await;
    let gw = gateway(&[route("/ws/", upstream, "")]).await;

    let ran = run_python(
        &python,
        "ws_pair.py",
        &[
            "client".into(),
            format!("ws://{}/ws/echo", gw.addr),
            authorization(),
        ],
        Duration::from_secs(240),
    )
    .await;
    let out = ran.json();
    assert_eq!(out["subprotocol"], "tty", "{out}");
    let echoed = out["echoed"].as_array().expect("echoed");
    assert!(echoed.len() >= 10, "{out}");
    for case in echoed {
        assert_eq!(case["ok"], true, "echo of {case}");
    }
    assert_eq!(out["pong"], true, "a ping was answered with its pong");
    for (code, seen) in out["closes"].as_object().expect("closes") {
        assert_eq!(
            seen["client_saw"].to_string(),
            *code,
            "the server's close code reached the client"
        );
        assert_eq!(
            seen["server_saw"].to_string(),
            *code,
            "the client's close code reached the server"
        );
    }
}
