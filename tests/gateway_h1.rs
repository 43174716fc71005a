//! HTTP/1.1 on the wire, byte by byte, on both sides of the gateway: how requests are framed
//! (pipelined, split into tiny writes, chunked, with conflicting lengths), when connections stay
//! open and when they close, interim answers, upgrades after a first request, and what odd but
//! legal (or broken) upstream answers become for the client, and generated heads, ordinary and
//! odd, that the gateway's own codec and hyper must treat alike. Clients and upstreams here are raw
//! sockets that write exact bytes and parse what comes back themselves, so that any transport
//! behind the gateway can be checked against the same observable behaviour.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The Host line of every request the tests write.
const HOST: &str = "Host: box.example\r\n";

// ---------------------------------------------------------------------------------------------
// The wire: a socket, the bytes read from it but not yet parsed, and a strict HTTP/1.1 parser
// ---------------------------------------------------------------------------------------------

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body by rule: a request without Content-Length or Transfer-Encoding, a response to
    /// HEAD, a 1xx, 204 or 304.
    None,
    Length(usize),
    Chunked,
    /// A response without a length: the body ends when the connection does.
    Close,
}

/// One HTTP/1.1 message as it crossed the wire.
#[derive(Debug, Clone)]
struct Message {
    /// The request line or the status line.
    start: String,
    /// Header fields in order, names as sent.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
}

impl Message {
    fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {:?}", self.start))
    }

    fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or_default()
    }

    fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or_default()
    }

    /// Every value of the header `name` (compared case-insensitively).
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    /// Whether a comma-separated header (Connection, Transfer-Encoding) lists `token`.
    fn lists(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The one Content-Length of a message; every value must be the same plain decimal number.
fn content_length(msg: &Message) -> Option<usize> {
    let values: Vec<&str> = msg
        .all("content-length")
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let first = *values.first()?;
    let valid = values
        .iter()
        .all(|v| *v == first && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
    assert!(valid, "invalid Content-Length in {:?}", msg.headers);
    Some(first.parse().unwrap())
}

/// `None` without Transfer-Encoding; otherwise whether its last coding is chunked.
fn chunked(msg: &Message) -> Option<bool> {
    let codings: Vec<String> = msg
        .all("transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let last = codings.last()?;
    Some(last == "chunked")
}

fn request_framing(msg: &Message) -> Framing {
    match chunked(msg) {
        Some(true) => Framing::Chunked,
        Some(false) => panic!("a request coding other than chunked: {:?}", msg.headers),
        None => content_length(msg).map_or(Framing::None, Framing::Length),
    }
}

fn response_framing(request_method: &str, msg: &Message) -> Framing {
    let status = msg.status();
    if request_method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    match chunked(msg) {
        Some(true) => Framing::Chunked,
        Some(false) => Framing::Close,
        None => content_length(msg).map_or(Framing::Close, Framing::Length),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A TCP connection read through a buffer, so that messages written back to back (pipelined
/// answers, a 101 followed by tunnel bytes) are split exactly where HTTP says they end.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        let _ = stream.set_nodelay(true);
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    async fn connect(addr: SocketAddr) -> Wire {
        let stream = within(PATIENCE, "connecting", TcpStream::connect(addr))
            .await
            .expect("connect");
        Wire::new(stream)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads what has arrived; false once the peer has closed (or reset) the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Exactly `n` bytes; `None` if the connection ends first.
    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// One line, without its CRLF.
    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).take(end).collect();
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Everything until the peer closes the connection.
    async fn until_closed(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// A message head: `None` if the connection closed cleanly before it began. Panics if it
    /// closed in the middle or the head is not HTTP/1.x syntax.
    async fn head(&mut self) -> Option<Message> {
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "the connection closed inside a message head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        };
        let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
        // A head is ASCII but for obs-text in values, kept byte for byte as Latin-1.
        let text: String = raw[..end].iter().map(|&b| char::from(b)).collect();
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .map(|l| {
                let (name, value) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("a header line without a colon: {l:?}"));
                (name.to_string(), value.trim().to_string())
            })
            .collect();
        Some(Message {
            start,
            headers,
            body: Vec::new(),
            framing: Framing::None,
        })
    }

    /// The data of the next chunk of a chunked body, or `Some(None)` after the last chunk and
    /// its trailer section. Chunk extensions are ignored.
    async fn chunk(&mut self) -> Option<Option<Vec<u8>>> {
        let line = self.line().await?;
        let line = String::from_utf8_lossy(&line).into_owned();
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .unwrap_or_else(|_| panic!("not a chunk-size line: {line:?}"));
        if size == 0 {
            // Trailer fields, up to the empty line.
            while !self.line().await?.is_empty() {}
            return Some(None);
        }
        let data = self.take(size).await?;
        let crlf = self.take(2).await?;
        assert_eq!(crlf, b"\r\n", "chunk data not followed by CRLF");
        Some(Some(data))
    }

    /// A whole body delimited as `framing` says.
    async fn body(&mut self, framing: Framing) -> Option<Vec<u8>> {
        match framing {
            Framing::None => Some(Vec::new()),
            Framing::Length(n) => self.take(n).await,
            Framing::Close => Some(self.until_closed().await),
            Framing::Chunked => {
                let mut body = Vec::new();
                while let Some(data) = self.chunk().await? {
                    body.extend_from_slice(&data);
                }
                Some(body)
            }
        }
    }

    /// Whatever part of a body with no announced length has arrived next (a chunk, or bytes of
    /// a close-delimited body); `None` at its end.
    async fn piece(&mut self, framing: Framing) -> Option<Vec<u8>> {
        match framing {
            Framing::Chunked => self.chunk().await.expect("the connection closed mid-body"),
            Framing::Close => {
                if self.buf.is_empty() && !self.fill().await {
                    return None;
                }
                Some(std::mem::take(&mut self.buf))
            }
            other => panic!("an event stream framed as {other:?}"),
        }
    }

    /// The next response to a `method` request (an interim 1xx counts): `None` if the
    /// connection closed cleanly first.
    async fn response(&mut self, method: &str) -> Option<Message> {
        let mut msg = self.head().await?;
        assert!(
            msg.start.starts_with("HTTP/1."),
            "not a status line: {:?}",
            msg.start
        );
        msg.framing = response_framing(method, &msg);
        msg.body = self
            .body(msg.framing)
            .await
            .unwrap_or_else(|| panic!("the connection closed inside the body of {msg:?}"));
        Some(msg)
    }

    /// The next response, which must come within [`PATIENCE`].
    async fn expect(&mut self, method: &str, what: &str) -> Message {
        within(PATIENCE, what, self.response(method))
            .await
            .unwrap_or_else(|| panic!("the connection closed instead of {what}"))
    }

    /// The final response, after any interim (1xx other than 101) ones, which are returned too.
    async fn expect_final(&mut self, method: &str, what: &str) -> (Vec<Message>, Message) {
        let mut interim = Vec::new();
        loop {
            let resp = self.expect(method, what).await;
            match resp.status() {
                101 => return (interim, resp),
                100..=199 => interim.push(resp),
                _ => return (interim, resp),
            }
        }
    }

    /// `GET path` on this connection and its (final) response.
    async fn get(&mut self, path: &str) -> Message {
        self.send(format!("GET {path} HTTP/1.1\r\n{HOST}\r\n").as_bytes())
            .await;
        self.expect_final("GET", &format!("the answer to GET {path}"))
            .await
            .1
    }

    /// Waits for the peer to close; returns what it sent before.
    async fn expect_closed(&mut self, what: &str) -> Vec<u8> {
        within(PATIENCE, what, self.until_closed()).await
    }
}

/// `data` in chunked coding, in chunks of at most `piece` bytes, with the last chunk.
fn chunked_coding(data: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / piece * 8 + 16);
    for chunk in data.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Bytes that differ from their neighbours and repeat only every 251, so that a lost, doubled
/// or misplaced block shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + i / 251) % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Scripted upstreams
// ---------------------------------------------------------------------------------------------

/// What a scripted upstream does after writing an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Reads the next request on the same connection.
    KeepOpen,
    /// Closes the connection.
    Close,
    /// Sends back every byte it receives from now on (a tunnel after a 101).
    Echo,
}

/// The bytes a scripted upstream writes for one request.
struct Answer {
    bytes: Vec<u8>,
    delay: Duration,
    then: Then,
}

impl Answer {
    fn raw(bytes: impl Into<Vec<u8>>) -> Answer {
        Answer {
            bytes: bytes.into(),
            delay: Duration::ZERO,
            then: Then::KeepOpen,
        }
    }

    /// `200 OK` with a plain-text body and its Content-Length.
    fn text(body: &str) -> Answer {
        Answer::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    /// Nothing at all: the connection is closed under the request.
    fn hang_up() -> Answer {
        Answer::raw(Vec::new()).then(Then::Close)
    }

    fn then(mut self, then: Then) -> Answer {
        self.then = then;
        self
    }

    fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// A request a scripted upstream received.
#[derive(Debug, Clone)]
struct Arrived {
    /// Which of the upstream's connections it came on, from 1 in accept order.
    conn: usize,
    /// Which request on that connection it was, from 1.
    nth: usize,
    msg: Message,
}

type Script = dyn Fn(&Arrived) -> Answer + Send + Sync;

/// An upstream on a raw socket that parses each request strictly (Transfer-Encoding before
/// Content-Length, as RFC 9112 says and most servers do), answers `100 Continue` to an
/// expectation, and writes the bytes its script returns.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    arrived: Arc<Mutex<Vec<Arrived>>>,
    /// Connections the gateway closed (the upstream read the end of them between requests).
    closed_by_gateway: Arc<Mutex<Vec<usize>>>,
    _task: Upstream,
}

impl Scripted {
    async fn start(script: impl Fn(&Arrived) -> Answer + Send + Sync + 'static) -> Scripted {
        let (listener, addr) = raw_upstream().await;
        let script: Arc<Script> = Arc::new(script);
        let accepted = Arc::new(AtomicUsize::new(0));
        let arrived: Arc<Mutex<Vec<Arrived>>> = Arc::default();
        let closed_by_gateway: Arc<Mutex<Vec<usize>>> = Arc::default();
        let (count, log, closed) = (accepted.clone(), arrived.clone(), closed_by_gateway.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                let (script, log, closed) = (script.clone(), log.clone(), closed.clone());
                tokio::spawn(async move {
                    let mut wire = Wire::new(stream);
                    if serve_script(&mut wire, conn, &*script, &log).await {
                        closed.lock().unwrap().push(conn);
                    }
                });
            }
        });
        Scripted {
            addr,
            accepted,
            arrived,
            closed_by_gateway,
            _task: Upstream::from_task(addr, task),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn arrived(&self) -> Vec<Arrived> {
        self.arrived.lock().unwrap().clone()
    }

    fn targets(&self) -> Vec<String> {
        self.arrived()
            .iter()
            .map(|a| a.msg.target().to_string())
            .collect()
    }

    /// Waits until the gateway has closed the upstream's connection number `conn`.
    async fn wait_closed_by_gateway(&self, conn: usize) {
        eventually(
            PATIENCE,
            &format!("the gateway closing upstream connection {conn}"),
            || async { self.closed_by_gateway.lock().unwrap().contains(&conn) },
        )
        .await;
    }
}

/// Serves one connection as the script says; true if the gateway closed it between requests.
async fn serve_script(
    wire: &mut Wire,
    conn: usize,
    script: &Script,
    log: &Mutex<Vec<Arrived>>,
) -> bool {
    let mut nth = 0;
    loop {
        let Some(mut msg) = wire.head().await else {
            return true;
        };
        nth += 1;
        if msg.lists("expect", "100-continue")
            && wire
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return false;
        }
        msg.framing = request_framing(&msg);
        let Some(body) = wire.body(msg.framing).await else {
            return false;
        };
        msg.body = body;
        let arrived = Arrived { conn, nth, msg };
        log.lock().unwrap().push(arrived.clone());
        let answer = script(&arrived);
        tokio::time::sleep(answer.delay).await;
        if wire.stream.write_all(&answer.bytes).await.is_err() {
            return false;
        }
        match answer.then {
            Then::KeepOpen => {}
            Then::Close => return false,
            Then::Echo => {
                let mut pending = std::mem::take(&mut wire.buf);
                loop {
                    if !pending.is_empty() && wire.stream.write_all(&pending).await.is_err() {
                        return false;
                    }
                    pending.clear();
                    if !wire.fill().await {
                        return false;
                    }
                    pending = std::mem::take(&mut wire.buf);
                }
            }
        }
    }
}

/// A script that answers every request with `METHOD TARGET` as plain text.
fn echo_line(a: &Arrived) -> Answer {
    Answer::text(&format!("{} {}", a.msg.method(), a.msg.target()))
}

// ---------------------------------------------------------------------------------------------
// The client side: what the gateway accepts and how it frames its answers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_in_one_write_are_answered_in_order() {
    // The first answer is slow: a gateway that let the second overtake it would show.
    let up = Scripted::start(|a| {
        let answer = echo_line(a);
        if a.msg.target() == "/one" {
            answer.after(Duration::from_millis(300))
        } else {
            answer
        }
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    wire.send(format!("GET /one HTTP/1.1\r\n{HOST}\r\nGET /two HTTP/1.1\r\n{HOST}\r\n").as_bytes())
        .await;
    let first = wire.expect("GET", "the answer to /one").await;
    let second = wire.expect("GET", "the answer to /two").await;
    assert_eq!(first.status(), 200, "{first:?}");
    assert_eq!(first.text(), "GET /one");
    assert_eq!(second.status(), 200, "{second:?}");
    assert_eq!(second.text(), "GET /two");
    for resp in [&first, &second] {
        assert_ne!(
            resp.framing,
            Framing::Close,
            "a keep-alive answer without a length"
        );
    }
    assert_eq!(up.targets(), ["/one", "/two"]);

    // The connection is still in step for a third request.
    let third = wire.get("/three").await;
    assert_eq!(third.text(), "GET /three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_written_one_byte_at_a_time_is_served() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    let head = format!(
        "GET /slowly?x=1 HTTP/1.1\r\n{HOST}X-Long: {}\r\nAccept: */*\r\n\r\n",
        "v".repeat(24)
    );
    for byte in head.bytes() {
        wire.send(&[byte]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let resp = wire.expect("GET", "the answer to a trickled head").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.text(), "GET /slowly?x=1");
    let seen = &up.arrived()[0].msg;
    assert_eq!(seen.header("x-long"), Some("v".repeat(24).as_str()));
    assert_eq!(seen.header("accept"), Some("*/*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_gets_then_a_post_with_a_body_then_a_get() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    for path in ["/a", "/b", "/c"] {
        let resp = wire.get(path).await;
        assert_eq!(resp.status(), 200, "{resp:?}");
        assert_eq!(resp.text(), format!("GET {path}"));
    }
    let body = "name=vastgate&size=42&note=a%20b";
    wire.send(
        format!(
            "POST /form HTTP/1.1\r\n{HOST}Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let resp = wire.expect("POST", "the answer to the POST").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.text(), "POST /form");
    let after = wire.get("/d").await;
    assert_eq!(after.text(), "GET /d");

    let arrived = up.arrived();
    let targets: Vec<&str> = arrived.iter().map(|a| a.msg.target()).collect();
    assert_eq!(targets, ["/a", "/b", "/c", "/form", "/d"]);
    let post = &arrived[3].msg;
    assert_eq!(post.method(), "POST");
    assert_eq!(post.body, body.as_bytes());
    assert_eq!(post.framing, Framing::Length(body.len()));
    for get in arrived.iter().filter(|a| a.msg.method() == "GET") {
        assert!(
            get.msg.body.is_empty(),
            "a GET with a body upstream: {get:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_post_after_a_get_reaches_the_upstream_whole() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    assert_eq!(wire.get("/before").await.text(), "GET /before");
    // With a chunk extension and a trailer, and the next request right behind it.
    wire.send(
        format!(
            "POST /upload HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n1;ext=\"x\"\r\n \r\nA\r\nchunked wo\r\n2\r\nrd\r\n0\r\nX-Sum: 1\r\n\r\n\
             GET /after HTTP/1.1\r\n{HOST}\r\n"
        )
        .as_bytes(),
    )
    .await;
    let post = wire.expect("POST", "the answer to the chunked POST").await;
    assert_eq!(post.status(), 200, "{post:?}");
    assert_eq!(post.text(), "POST /upload");
    let after = wire.expect("GET", "the answer to the GET behind it").await;
    assert_eq!(after.text(), "GET /after");

    let arrived = up.arrived();
    assert_eq!(arrived.len(), 3, "{arrived:?}");
    assert_eq!(arrived[1].msg.body, b"hello chunked word");
    assert_eq!(arrived[2].msg.target(), "/after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_never_lets_a_second_request_through() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    // By Content-Length the body runs to the end; by chunked it ends at once and a second
    // request, /smuggled, follows. Both header orders.
    let smuggled = format!("GET /smuggled HTTP/1.1\r\n{HOST}\r\n");
    let body = format!("0\r\n\r\n{smuggled}");
    let orders = [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            body.len()
        ),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
            body.len()
        ),
    ];
    for framing in orders {
        let before = up.arrived().len();
        let mut wire = Wire::connect(gw.addr).await;
        wire.send(format!("POST /first HTTP/1.1\r\n{HOST}{framing}\r\n{body}").as_bytes())
            .await;
        // Refused, or served by Transfer-Encoding and then closed: never a second answer.
        let mut answers = Vec::new();
        while let Some(resp) = within(
            PATIENCE,
            "the gateway ending a Content-Length + chunked connection",
            wire.response("POST"),
        )
        .await
        {
            answers.push(resp);
        }
        assert!(answers.len() <= 1, "{framing:?}: answered {answers:?}");
        if let Some(resp) = answers.first() {
            assert!(
                resp.status() == 400 || resp.status() == 200,
                "{framing:?}: {resp:?}"
            );
        }
        let arrived = &up.arrived()[before..];
        assert!(arrived.len() <= 1, "{framing:?}: upstream saw {arrived:?}");
        for a in arrived {
            assert_eq!(a.msg.target(), "/first", "{framing:?}: {a:?}");
            assert!(
                a.msg.header("content-length").is_none()
                    || a.msg.header("transfer-encoding").is_none(),
                "{framing:?}: forwarded with both framings: {:?}",
                a.msg.headers
            );
            assert!(
                a.msg.body.is_empty(),
                "{framing:?}: body {:?}",
                a.msg.text()
            );
        }
    }
    assert!(
        !up.targets().iter().any(|t| t == "/smuggled"),
        "{:?}",
        up.targets()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_a_4xx_and_other_connections_are_served() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    // A connection opened before the bad ones, used after them.
    let mut bystander = Wire::connect(gw.addr).await;
    assert_eq!(bystander.get("/first").await.status(), 200);

    let bad: [&[u8]; 5] = [
        b"GET /\x01 HTTP/1.1\r\nHost: box.example\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: box.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: box.example\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: box.example\r\nBad Name: x\r\n\r\n",
    ];
    for request in bad {
        let shown = String::from_utf8_lossy(request);
        let mut wire = Wire::connect(gw.addr).await;
        wire.send(request).await;
        let resp = wire.expect("GET", &format!("an answer to {shown:?}")).await;
        assert!(
            (400..500).contains(&resp.status()),
            "{shown:?} got {resp:?}"
        );
        // Nothing after a request that could not be parsed can be trusted: the end.
        let rest = wire
            .expect_closed(&format!("the gateway closing after {shown:?}"))
            .await;
        assert!(rest.is_empty(), "{shown:?}: more bytes {rest:?}");
    }
    assert_eq!(
        up.targets(),
        ["/first"],
        "a malformed request was forwarded"
    );

    assert_eq!(bystander.get("/still").await.text(), "GET /still");
    assert_eq!(
        Wire::connect(gw.addr).await.get("/fresh").await.text(),
        "GET /fresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_gets_an_unchunked_answer_and_then_the_connection_closes() {
    // The upstream answers chunked, which an HTTP/1.0 client cannot read.
    let up = Scripted::start(|_| {
        Answer::raw(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    wire.send(format!("GET /old HTTP/1.0\r\n{HOST}\r\n").as_bytes())
        .await;
    let resp = wire.expect("GET", "the answer to HTTP/1.0").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert!(
        resp.header("transfer-encoding").is_none(),
        "Transfer-Encoding to an HTTP/1.0 client: {resp:?}"
    );
    assert_eq!(resp.text(), "hello world");
    let rest = wire
        .expect_closed("the gateway closing the HTTP/1.0 connection")
        .await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(up.targets(), ["/old"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_ends_the_connection_after_the_answer_and_nothing_behind_it_is_served() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    wire.send(
        format!(
            "GET /bye HTTP/1.1\r\n{HOST}Connection: close\r\n\r\nGET /after-close HTTP/1.1\r\n{HOST}\r\n"
        )
        .as_bytes(),
    )
    .await;
    let resp = wire
        .expect("GET", "the answer to the closing request")
        .await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.text(), "GET /bye");
    // RFC 9112 §9.6: the server SHOULD say it closes.
    assert!(resp.lists("connection", "close"), "{resp:?}");
    let rest = wire
        .expect_closed("the gateway closing after Connection: close")
        .await;
    assert!(
        rest.is_empty(),
        "an answer after the close: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(up.targets(), ["/bye"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answer_keeps_the_upstream_length_without_body_bytes() {
    let up = Scripted::start(|a| {
        if a.msg.method() == "HEAD" {
            Answer::raw(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n",
            )
        } else {
            echo_line(a)
        }
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    // Pipelined: body bytes after the HEAD answer would be read as the GET's status line.
    wire.send(
        format!("HEAD /file HTTP/1.1\r\n{HOST}\r\nGET /file HTTP/1.1\r\n{HOST}\r\n").as_bytes(),
    )
    .await;
    let head = wire.expect("HEAD", "the answer to HEAD").await;
    assert_eq!(head.status(), 200, "{head:?}");
    assert_eq!(head.all("content-length"), ["1234"], "{head:?}");
    let get = wire
        .expect("GET", "the answer to the GET behind HEAD")
        .await;
    assert_eq!(get.status(), 200, "{get:?}");
    assert_eq!(get.text(), "GET /file");
    // And once more, not pipelined.
    wire.send(format!("HEAD /file HTTP/1.1\r\n{HOST}\r\n").as_bytes())
        .await;
    let head = wire.expect("HEAD", "the second answer to HEAD").await;
    assert_eq!(head.all("content-length"), ["1234"], "{head:?}");
    assert_eq!(wire.get("/last").await.text(), "GET /last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_framed_once_and_carries_one_date_and_a_request_id() {
    let up = Scripted::start(|a| match a.msg.target() {
        "/app/chunked" => Answer::raw(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
        "/app/dated" => Answer::raw(
            "HTTP/1.1 200 OK\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
        ),
        "/app/empty" => Answer::raw("HTTP/1.1 204 No Content\r\n\r\n"),
        "/app/until-close" => {
            Answer::raw("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
                .then(Then::Close)
        }
        _ => echo_line(a),
    })
    .await;
    let down: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let gw = Gateway::start(
        "",
        &[route("/app/", up.addr, ""), route("/down/", down, "")],
    )
    .await;

    let mut wire = Wire::connect(gw.addr).await;
    let mut ids = Vec::new();
    for (path, status) in [
        ("/healthz", 200),
        ("/nowhere", 404),
        ("/app/length", 200),
        ("/app/chunked", 200),
        ("/app/dated", 200),
        ("/app/empty", 204),
        ("/app/until-close", 200),
        ("/down/x", 502),
        ("/app", 307),
        ("/app/length", 200),
    ] {
        let resp = wire.get(path).await;
        assert_eq!(resp.status(), status, "{path}: {resp:?}");
        let lengths = resp.all("content-length").len();
        let codings = resp.all("transfer-encoding");
        if status == 204 {
            assert_eq!((lengths, codings.len()), (0, 0), "{path}: {resp:?}");
        } else {
            assert_eq!(lengths + codings.len(), 1, "{path}: framed by {resp:?}");
            if let Some(coding) = codings.first() {
                assert!(coding.eq_ignore_ascii_case("chunked"), "{path}: {resp:?}");
            }
        }
        let dates = resp.all("date");
        assert_eq!(dates.len(), 1, "{path}: {resp:?}");
        assert!(
            httpdate::parse_http_date(dates[0]).is_ok(),
            "{path}: not an HTTP date: {}",
            dates[0]
        );
        let id = resp.all("x-request-id");
        assert_eq!(id.len(), 1, "{path}: {resp:?}");
        assert!(!id[0].is_empty(), "{path}");
        ids.push(id[0].to_string());
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "request ids repeat: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_header_timeout() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("header_timeout = \"1s\"", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    assert_eq!(wire.get("/once").await.status(), 200);
    closed_after_header_timeout(wire, "an idle keep-alive connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_second_request_head_is_closed_after_header_timeout() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("header_timeout = \"1s\"", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    assert_eq!(wire.get("/once").await.status(), 200);
    wire.send(format!("GET /never-finished HTTP/1.1\r\n{HOST}X-Half: ").as_bytes())
        .await;
    closed_after_header_timeout(wire, "a connection with a half-sent head").await;
    assert_eq!(up.targets(), ["/once"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_keep_alive_connection_outlives_its_first_header_deadline() {
    // The deadline for the next head moves with every request; the timer under it is moved
    // only when it fires early. Requests 0.3 s apart for 1.8 s must all be served, and the
    // connection closed 1 s after the last.
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("header_timeout = \"1s\"", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            wire.get(&format!("/{i}")).await.status(),
            200,
            "request {i}"
        );
    }
    closed_after_header_timeout(wire, "a keep-alive connection after its last request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_deadline_moves_with_each_request_on_a_pooled_connection() {
    // One upstream connection carries every request. Its response deadline is set anew for
    // each; a timer left at an earlier request's deadline must not cut a later answer.
    let up = Scripted::start(|a: &Arrived| match a.msg.target() {
        "/in-time" => Answer::text("in time").after(Duration::from_millis(600)),
        "/too-late" => Answer::text("too late").after(Duration::from_secs(5)),
        _ => echo_line(a),
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "response_timeout = \"1s\"")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    for i in 0..6 {
        assert_eq!(
            wire.get(&format!("/{i}")).await.status(),
            200,
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The first request's deadline is long past; this answer's is not.
    let answer = wire.get("/in-time").await;
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_eq!(answer.body, b"in time");
    let started = Instant::now();
    let answer = wire.get("/too-late").await;
    let took = started.elapsed();
    assert_eq!(answer.status(), 504, "{answer:?}");
    assert!(
        took >= Duration::from_millis(900),
        "504 after only {took:?}"
    );
    assert!(took < Duration::from_secs(4), "504 only after {took:?}");
    let conns: Vec<usize> = up.arrived().iter().map(|a| a.conn).collect();
    assert_eq!(
        conns, [1; 8],
        "every request on the one pooled upstream connection"
    );
}

/// Waits for the gateway to close `wire` (whose next head is due) and checks it waited for
/// `header_timeout = "1s"` and said at most 408.
async fn closed_after_header_timeout(mut wire: Wire, what: &str) {
    let started = Instant::now();
    let rest = within(
        Duration::from_secs(10),
        &format!("the gateway closing {what}"),
        wire.until_closed(),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "{what}: closed after only {took:?}"
    );
    if !rest.is_empty() {
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "{what}: unexpected: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_as_a_second_request_tunnels_both_ways() {
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    let up = Scripted::start(|a| {
        if a.msg.header("upgrade").is_some() {
            // The upstream speaks first, in the same write as its 101.
            Answer::raw(format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {ACCEPT}\r\n\r\nhello from upstream"
            ))
            .then(Then::Echo)
        } else {
            echo_line(a)
        }
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    assert_eq!(wire.get("/page").await.text(), "GET /page");
    wire.send(
        format!(
            "GET /ws HTTP/1.1\r\n{HOST}Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let resp = wire.expect("GET", "the answer to the upgrade").await;
    assert_eq!(resp.status(), 101, "{resp:?}");
    assert!(resp.lists("upgrade", "websocket"), "{resp:?}");
    assert!(resp.lists("connection", "upgrade"), "{resp:?}");
    assert_eq!(resp.header("sec-websocket-accept"), Some(ACCEPT));

    let greeting = b"hello from upstream";
    let got = within(
        PATIENCE,
        "the upstream's first bytes",
        wire.take(greeting.len()),
    )
    .await
    .expect("the tunnel closed");
    assert_eq!(got, greeting);
    for message in [&b"ping through the tunnel"[..], &pattern(100_000)] {
        wire.send(message).await;
        let echoed = within(PATIENCE, "the echo", wire.take(message.len()))
            .await
            .expect("the tunnel closed");
        assert!(
            echoed == message,
            "the tunnel altered {} bytes",
            message.len()
        );
    }

    let arrived = up.arrived();
    assert_eq!(arrived.len(), 2, "{arrived:?}");
    let upgrade = &arrived[1].msg;
    assert_eq!(upgrade.target(), "/ws");
    assert!(upgrade.lists("upgrade", "websocket"), "{upgrade:?}");
    assert!(upgrade.lists("connection", "upgrade"), "{upgrade:?}");
    assert_eq!(upgrade.header("sec-websocket-key"), Some(KEY));
    assert_eq!(upgrade.header("sec-websocket-version"), Some("13"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_the_interim_answer_and_the_body_through() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    wire.send(
        format!(
            "POST /upload HTTP/1.1\r\n{HOST}Content-Type: text/plain\r\nContent-Length: 11\r\n\
             Expect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    // The client waits for the go-ahead before it sends the body.
    let interim = wire.expect("POST", "100 Continue").await;
    assert_eq!(interim.status(), 100, "{interim:?}");
    wire.send(b"hello world").await;
    let (_, resp) = wire.expect_final("POST", "the answer to the upload").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.text(), "POST /upload");
    assert_eq!(wire.get("/after").await.text(), "GET /after");

    let arrived = up.arrived();
    assert_eq!(arrived.len(), 2, "{arrived:?}");
    assert_eq!(arrived[0].msg.body, b"hello world");
}

// ---------------------------------------------------------------------------------------------
// The upstream side: how the gateway reads upstream answers and treats their connections
// ---------------------------------------------------------------------------------------------

/// Three GETs on one client connection, each answered with `answer` (a chunked response):
/// their bodies, and how many connections the upstream accepted for them.
async fn three_chunked_answers(answer: &'static str) -> (Vec<String>, usize) {
    let up = Scripted::start(move |_| Answer::raw(answer)).await;
    // One worker: one pool, whichever thread the client's connection lands on.
    let gw = Gateway::start("workers = 1", &[route("/", up.addr, "")]).await;
    let mut wire = Wire::connect(gw.addr).await;
    let mut bodies = Vec::new();
    for n in 1..=3 {
        let resp = wire.get(&format!("/chunked/{n}")).await;
        assert_eq!(resp.status(), 200, "{resp:?}");
        bodies.push(resp.text());
    }
    (bodies, up.accepted())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_with_extensions_arrives_as_its_data_and_keeps_the_connection() {
    let (bodies, connections) = three_chunked_answers(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;foo=bar\r\nhello\r\n6;quoted=\"a;b\"\r\n world\r\n0;last\r\n\r\n",
    )
    .await;
    assert_eq!(bodies, ["hello world"; 3]);
    assert_eq!(connections, 1, "the upstream connection was not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_with_trailers_arrives_as_its_data_and_keeps_the_connection() {
    let (bodies, connections) = three_chunked_answers(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
         Trailer: X-Checksum\r\n\r\n5;foo=bar\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n",
    )
    .await;
    assert_eq!(bodies, ["hello"; 3]);
    assert_eq!(connections, 1, "the upstream connection was not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_answer_arrives_whole_and_the_next_request_opens_a_new_connection() {
    let body = pattern(200_000);
    let answer = {
        let mut bytes =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        bytes.extend_from_slice(&body);
        bytes
    };
    let up = Scripted::start(move |a| {
        if a.msg.target() == "/until-close" {
            Answer::raw(answer.clone()).then(Then::Close)
        } else {
            echo_line(a)
        }
    })
    .await;
    let gw = Gateway::start("workers = 1", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    let resp = wire.get("/until-close").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.body.len(), body.len());
    assert!(resp.body == body, "the body arrived altered");
    if resp.framing == Framing::Close {
        // Passed on close-delimited: then the client's connection has ended too.
        wire = Wire::connect(gw.addr).await;
    }
    let next = wire.get("/next").await;
    assert_eq!(next.text(), "GET /next");
    assert_eq!(up.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informational_answers_from_the_upstream_are_followed_by_the_final_one() {
    let up = Scripted::start(|a| {
        if a.msg.target() == "/hinted" {
            Answer::raw(
                "HTTP/1.1 100 Continue\r\n\r\n\
                 HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n\
                 HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfinal",
            )
        } else {
            echo_line(a)
        }
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    wire.send(format!("GET /hinted HTTP/1.1\r\n{HOST}\r\n").as_bytes())
        .await;
    let (interim, resp) = wire.expect_final("GET", "the final answer").await;
    for i in &interim {
        assert!(matches!(i.status(), 100 | 103), "{i:?}");
    }
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.text(), "final");
    assert_eq!(wire.get("/next").await.text(), "GET /next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_connection_close_is_honoured_and_the_client_keeps_its_connection() {
    // Says it closes, but leaves the socket open: only the gateway can end it.
    let up = Scripted::start(|a| {
        let body = format!("connection {}", a.conn);
        Answer::raw(format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    })
    .await;
    let gw = Gateway::start("workers = 1", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    let first = wire.get("/a").await;
    assert_eq!(first.text(), "connection 1");
    assert!(
        !first.lists("connection", "close"),
        "the upstream's close was passed to the client: {first:?}"
    );
    up.wait_closed_by_gateway(1).await;
    let second = wire.get("/b").await;
    assert_eq!(second.text(), "connection 2");
    assert_eq!(up.accepted(), 2);
    assert!(
        up.arrived().iter().all(|a| a.nth == 1),
        "{:?}",
        up.arrived()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_or_conflicting_upstream_content_length_gives_502() {
    let up = Scripted::start(|a| match a.msg.target() {
        "/letters" => Answer::raw("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello"),
        "/two-lengths" => {
            Answer::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
        }
        "/negative" => Answer::raw("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello"),
        _ => echo_line(a),
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    for path in ["/letters", "/two-lengths", "/negative"] {
        let resp = wire.get(path).await;
        assert_eq!(resp.status(), 502, "{path}: {resp:?}");
    }
    assert_eq!(wire.get("/fine").await.text(), "GET /fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_and_not_modified_have_no_body_and_the_connection_goes_on() {
    let up = Scripted::start(|a| match a.msg.target() {
        "/no-content" => Answer::raw("HTTP/1.1 204 No Content\r\nX-Done: yes\r\n\r\n"),
        "/not-modified" => Answer::raw(
            "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n\r\n",
        ),
        _ => echo_line(a),
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    wire.send(
        format!(
            "GET /no-content HTTP/1.1\r\n{HOST}\r\n\
             GET /not-modified HTTP/1.1\r\n{HOST}If-None-Match: \"v1\"\r\n\r\n\
             GET /after HTTP/1.1\r\n{HOST}\r\n"
        )
        .as_bytes(),
    )
    .await;
    let no_content = wire.expect("GET", "the 204").await;
    assert_eq!(no_content.status(), 204, "{no_content:?}");
    assert_eq!(no_content.header("x-done"), Some("yes"));
    assert!(
        no_content.header("content-length").is_none(),
        "{no_content:?}"
    );
    assert!(
        no_content.header("transfer-encoding").is_none(),
        "{no_content:?}"
    );
    let not_modified = wire.expect("GET", "the 304").await;
    assert_eq!(not_modified.status(), 304, "{not_modified:?}");
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert!(
        not_modified.header("transfer-encoding").is_none(),
        "{not_modified:?}"
    );
    let after = wire.expect("GET", "the answer after them").await;
    assert_eq!(after.text(), "GET /after");
    assert_eq!(wire.get("/again").await.text(), "GET /again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_its_idle_connection_is_invisible_and_a_post_is_sent_once() {
    // Every answer is followed by the upstream closing: each pooled connection dies idle.
    let up = Scripted::start(|a| echo_line(a).then(Then::Close)).await;
    let gw = Gateway::start("workers = 1", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    assert_eq!(wire.get("/first").await.text(), "GET /first");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = wire.get("/second").await;
    assert_eq!(second.status(), 200, "{second:?}");
    assert_eq!(second.text(), "GET /second");
    tokio::time::sleep(Duration::from_millis(200)).await;
    wire.send(format!("POST /act HTTP/1.1\r\n{HOST}Content-Length: 0\r\n\r\n").as_bytes())
        .await;
    let (_, post) = wire.expect_final("POST", "the answer to the POST").await;
    let posts = up
        .arrived()
        .iter()
        .filter(|a| a.msg.method() == "POST")
        .count();
    match post.status() {
        200 => assert_eq!(posts, 1),
        502 => assert!(posts <= 1, "a POST sent {posts} times"),
        other => panic!("POST answered {other}: {post:?}"),
    }
    assert_eq!(wire.get("/last").await.text(), "GET /last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_connection_dropped_under_a_request_retries_a_get_but_never_a_post() {
    // Each connection answers its first request and drops the second unanswered: an app's
    // keep-alive timer firing just as the gateway reuses the connection.
    let up = Scripted::start(|a| {
        if a.nth == 1 {
            echo_line(a)
        } else {
            Answer::hang_up()
        }
    })
    .await;
    let gw = Gateway::start("workers = 1", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    assert_eq!(wire.get("/first").await.text(), "GET /first");
    // Sent again on a new connection, out of sight.
    let again = wire.get("/again").await;
    assert_eq!(again.status(), 200, "{again:?}");
    assert_eq!(again.text(), "GET /again");
    let tries: Vec<(usize, usize)> = up
        .arrived()
        .iter()
        .filter(|a| a.msg.target() == "/again")
        .map(|a| (a.conn, a.nth))
        .collect();
    assert_eq!(
        tries,
        [(1, 2), (2, 1)],
        "reused, dropped, then sent on a new connection"
    );

    wire.send(format!("POST /act HTTP/1.1\r\n{HOST}Content-Length: 0\r\n\r\n").as_bytes())
        .await;
    let (_, post) = wire.expect_final("POST", "the answer to the POST").await;
    let posts: Vec<Arrived> = up
        .arrived()
        .into_iter()
        .filter(|a| a.msg.method() == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "a POST sent more than once: {posts:?}");
    // It went out on the connection the GET was retried on, which then broke under it: the app
    // may have acted on it, so the client is told, not the request repeated.
    assert_eq!(
        posts[0].nth, 2,
        "the POST did not reuse a pooled connection"
    );
    assert_eq!(post.status(), 502, "{post:?}");
    assert_eq!(wire.get("/last").await.text(), "GET /last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_case_headers_pass_intact_and_connection_named_ones_do_not() {
    let up = Scripted::start(|_| {
        Answer::raw(
            "HTTP/1.1 200 OK\r\nX-Custom-Thing: Mixed Case Value, 42\r\nX-UPPER: YES\r\n\
             x-lower: no\r\nConnection: x-secret\r\nX-Secret: hidden\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    let resp = wire.get("/headers").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.text(), "ok");
    assert_eq!(resp.all("x-custom-thing"), ["Mixed Case Value, 42"]);
    assert_eq!(resp.all("X-Upper"), ["YES"]);
    assert_eq!(resp.all("X-LOWER"), ["no"]);
    assert!(resp.header("x-secret").is_none(), "{resp:?}");
    assert!(!resp.lists("connection", "x-secret"), "{resp:?}");
}

/// The answer most apps give (uvicorn, Node, nginx): `Connection: keep-alive` and `Keep-Alive`
/// beside the end-to-end fields. The gateway writes those fields to an HTTP/1.1 client from the
/// upstream's own bytes, in the app's order; an HTTP/2 client gets them from a header map, where
/// only each name's values keep their order (the order of different names carries no meaning,
/// RFC 9110 §5.3). Both must get every end-to-end field once, and neither hop-by-hop one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_answer_reaches_http1_and_http2_clients_with_its_end_to_end_fields_only() {
    let up = Scripted::start(|_| {
        Answer::raw(
            "HTTP/1.1 200 OK\r\nServer: App/1.0\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n\
             Set-Cookie: a=1; Path=/\r\nKeep-Alive: timeout=5\r\nSet-Cookie: b=2\r\n\
             X-Mixed-Case:  spaced value \r\nDate: Mon, 30 Nov 2026 10:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;
    let expected = [
        ("server", "App/1.0"),
        ("content-type", "text/plain"),
        ("set-cookie", "a=1; Path=/"),
        ("set-cookie", "b=2"),
        ("x-mixed-case", "spaced value"),
        ("date", "Mon, 30 Nov 2026 10:00:00 GMT"),
        ("content-length", "2"),
    ];

    let mut wire = Wire::connect(gw.addr).await;
    // The route compresses (the default); a browser always accepts gzip, but two bytes are not
    // worth it: the answer must still go on untouched, the app's spelling of names included.
    let browser = format!("GET /page HTTP/1.1\r\n{HOST}Accept-Encoding: gzip, deflate, br\r\n\r\n");
    for accepts_gzip in [false, true, false] {
        let resp = if accepts_gzip {
            wire.send(browser.as_bytes()).await;
            wire.expect("GET", "the answer to a browser's GET").await
        } else {
            wire.get("/page").await
        };
        assert_eq!(
            (resp.status(), resp.text().as_str()),
            (200, "ok"),
            "{resp:?}"
        );
        assert!(
            resp.headers.iter().any(|(n, _)| n == "X-Mixed-Case")
                && resp.headers.iter().any(|(n, _)| n == "Server"),
            "names' case lost: {resp:?}"
        );
        let fields: Vec<(String, &str)> = resp
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
            .filter(|(n, _)| n != "x-request-id")
            .collect();
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(fields, expected, "{resp:?}");
        assert_eq!(resp.all("x-request-id").len(), 1, "{resp:?}");
    }

    let mut h2 = h2_connection(gw.addr).await;
    let req = request("GET", "http://box.example/page", &[], empty());
    let resp = within(PATIENCE, "an HTTP/2 answer", h2.send_request(req))
        .await
        .expect("HTTP/2 answer");
    let reply = Reply::read(resp).await;
    assert_eq!(reply.status, 200);
    let mut fields: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("(not text)")))
        .filter(|(n, _)| *n != "x-request-id")
        .collect();
    // Stable sorts: each name's values stay in their order.
    fields.sort_by_key(|(n, _)| *n);
    let mut by_name = expected.to_vec();
    by_name.sort_by_key(|(n, _)| *n);
    assert_eq!(fields, by_name, "{:?}", reply.headers);
    assert_eq!(reply.headers.get_all("x-request-id").iter().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_body_arrives_byte_exact_with_a_length_and_chunked() {
    const MIB: usize = 1 << 20;
    let data = pattern(MIB);
    let (with_length, in_chunks) = {
        let mut a = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {MIB}\r\n\r\n")
            .into_bytes();
        a.extend_from_slice(&data);
        let mut b =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        // Odd chunk sizes, so that chunk and read boundaries never line up.
        b.extend_from_slice(&chunked_coding(&data, 7_919));
        (a, b)
    };
    let up = Scripted::start(move |a| match a.msg.target() {
        "/length" => Answer::raw(with_length.clone()),
        _ => Answer::raw(in_chunks.clone()),
    })
    .await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    for path in ["/length", "/chunked", "/length"] {
        let resp = wire.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.body.len(), MIB, "{path}");
        assert!(resp.body == data, "{path}: the body arrived altered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_delivers_its_first_event_before_the_second_exists() {
    const FIRST: &[u8] = b"event: progress\ndata: {\"step\": 1}\n\n";
    const SECOND: &[u8] = b"event: progress\ndata: {\"step\": 2}\n\n";
    let (listener, addr) = raw_upstream().await;
    let (go_on, go) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let mut wire = Wire::new(stream);
        let _ = wire.head().await;
        let mut first = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                          Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        first.extend_from_slice(format!("{:x}\r\n", FIRST.len()).as_bytes());
        first.extend_from_slice(FIRST);
        first.extend_from_slice(b"\r\n");
        wire.send(&first).await;
        // The second event exists only once the client has the first.
        if go.await.is_err() {
            return;
        }
        wire.send(&chunked_coding(SECOND, SECOND.len())).await;
        let _ = wire.until_closed().await;
    });
    let _upstream = Upstream::from_task(addr, task);
    let gw = Gateway::start("", &[route("/", addr, "")]).await;

    let mut wire = Wire::connect(gw.addr).await;
    wire.send(
        format!("GET /events HTTP/1.1\r\n{HOST}Accept: text/event-stream\r\n\r\n").as_bytes(),
    )
    .await;
    let mut head = within(PATIENCE, "the event stream's head", wire.head())
        .await
        .expect("the connection closed");
    assert_eq!(head.status(), 200, "{head:?}");
    assert!(
        head.header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "{head:?}"
    );
    head.framing = response_framing("GET", &head);
    let mut received = Vec::new();
    while !received.ends_with(FIRST) {
        let piece = within(
            Duration::from_secs(10),
            "the first event before the second exists",
            wire.piece(head.framing),
        )
        .await
        .expect("the stream ended before its first event");
        received.extend_from_slice(&piece);
    }
    assert_eq!(received, FIRST);
    go_on.send(()).expect("the upstream is waiting");
    while let Some(piece) =
        within(PATIENCE, "the rest of the stream", wire.piece(head.framing)).await
    {
        received.extend_from_slice(&piece);
    }
    assert_eq!(received, [FIRST, SECOND].concat());
}

// ---------------------------------------------------------------------------------------------
// Which codec served a connection
// ---------------------------------------------------------------------------------------------

/// The `vastgate_connections_total` counters (own codec, hyper) from `/_vastgate/metrics`,
/// asked with `headers` (credentials, where the gateway wants them).
async fn connections_by_codec(addr: SocketAddr, headers: &[(&str, &str)]) -> (u64, u64) {
    let text = get(addr, "/_vastgate/metrics", headers).await.text();
    let count = |codec: &str| {
        let prefix = format!("vastgate_connections_total{{codec=\"{codec}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in the metrics:\n{text}"))
    };
    (count("own"), count("hyper"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_less_requests_stay_on_the_gateways_codec_and_a_body_moves_the_connection_to_hyper() {
    let (up, seen) = echo_upstream("app").await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;
    let (own0, hyper0) = connections_by_codec(gw.addr, &[]).await;

    // Three plain requests on one connection: the gateway's own codec throughout.
    let mut plain = Conn::open(gw.addr).await;
    for i in 0..3 {
        let reply = plain
            .exchange(request("GET", &format!("/plain/{i}"), &[], empty()))
            .await;
        assert_eq!(reply.status, http::StatusCode::OK);
    }
    let (own1, hyper1) = connections_by_codec(gw.addr, &[]).await;
    // The plain connection and the first metrics read's connection, nothing for hyper.
    assert_eq!((own1 - own0, hyper1 - hyper0), (2, 0));

    // A GET then a POST with a body on one connection: handed to hyper at the POST, and the
    // body arrives whole.
    let mut mixed = Conn::open(gw.addr).await;
    let reply = mixed.exchange(request("GET", "/first", &[], empty())).await;
    assert_eq!(reply.status, http::StatusCode::OK);
    let reply = mixed
        .exchange(request(
            "POST",
            "/upload",
            &[],
            full("a body of 21 bytes..."),
        ))
        .await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(seen.last().body_len, "a body of 21 bytes...".len());
    let reply = mixed.exchange(request("GET", "/after", &[], empty())).await;
    assert_eq!(reply.status, http::StatusCode::OK);
    let (own2, hyper2) = connections_by_codec(gw.addr, &[]).await;
    assert_eq!((own2 - own1, hyper2 - hyper1), (2, 1));
    assert_eq!(seen.last().target, "/after");
}

// ---------------------------------------------------------------------------------------------
// Generated traffic: the gateway's codec and hyper must treat every head alike
// ---------------------------------------------------------------------------------------------
//
// The gateway's own codec serves plain requests and hands anything unusual to hyper; toward the
// upstreams it sends body-less requests itself and the rest through hyper's client. Generated
// heads, mostly ordinary and some odd or malformed, are sent both ways, and everything the
// client and the upstream see must be the same. A failing case prints its seed and its bytes;
// `H1_SEED=<n>` runs the cases of another seed.

/// A small deterministic generator (xorshift64*): a case is replayed from its seed.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        // splitmix64 spreads neighbouring seeds apart; the state must not be zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Dice((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The seed of the generated cases: `H1_SEED` or a fixed one.
fn h1_seed() -> u64 {
    std::env::var("H1_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0007)
}

/// Request lines and header lines clients send, ordinary and odd.
const METHODS: [&str; 11] = [
    "GET", "GET", "GET", "HEAD", "DELETE", "OPTIONS", "POST", "PUT", "get", "PATCH", "G@T",
];
const TARGETS: [&str; 18] = [
    "/",
    "/a/b",
    "/a/../b",
    "/%2e%2e/etc/passwd",
    "//double//slash",
    "/q?x=1&y=%20z",
    "/frag#part",
    "/app/x?y",
    "/app",
    "/app/../secret",
    "*",
    "http://box.example/absolute",
    "/a%00b",
    "/caf\u{e9}",
    "/sp ace",
    "/a/./b/",
    "/..",
    "/healthz",
];
const ODD_VERSIONS: [&str; 3] = ["HTTP/1.0", "HTTP/1.2", "HTTP/2.0"];
const HEADER_LINES: [&[u8]; 22] = [
    b"Accept: */*",
    b"User-Agent: generated/1.0",
    b"X-Custom: Mixed-Case Value",
    b"X-Forwarded-For: 203.0.113.9",
    b"X-Forwarded-Proto: https",
    b"X-Forwarded-User: mallory",
    b"X-Forwarded_User: mallory",
    b"Connection: close",
    b"Connection: keep-alive, X-Drop\r\nX-Drop: must not reach the app",
    b"X-Kept: 1",
    b"Keep-Alive: timeout=5",
    b"Proxy-Connection: keep-alive",
    b"TE: trailers",
    b"Content-Length: 0",
    b"Upgrade: h2c",
    b"Cookie: a=1; b=2",
    b"Accept-Encoding: gzip, br",
    b"Sec-Fetch-Mode: navigate",
    b"X-Empty:",
    b"X-Tab:\tpadded\t",
    b"X-Request-Id: chosen-by-the-client",
    b"Authorization: Basic Zm9vOmJhcg==",
];
/// Header lines that are odd or malformed (hyper refuses most of them with a 400).
const ODD_HEADER_LINES: [&[u8]; 10] = [
    b"Content-Length: 00",
    b"Content-Length: 0, 0",
    b"Content-Length: -0",
    b"Transfer-Encoding: identity",
    b"X-Obs-Text: caf\xe9",
    b"X-Fold: one\r\n two",
    b"Bad Name: x",
    b"X-Nul: a\0b",
    b"X-Space : x",
    b"no colon here",
];

/// One to three requests in one write, then a last request that closes the connection; and
/// their methods, which say how the answers are framed.
fn generated_requests(dice: &mut Dice) -> (Vec<u8>, Vec<&'static str>) {
    let mut out = Vec::new();
    let mut methods = Vec::new();
    for _ in 0..1 + dice.below(3) {
        let eol: &[u8] = if dice.chance(5) { b"\n" } else { b"\r\n" };
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for _ in 0..dice.below(5) {
            let line = if dice.chance(85) {
                dice.pick(&HEADER_LINES)
            } else {
                dice.pick(&ODD_HEADER_LINES)
            };
            lines.push(line.to_vec());
        }
        if dice.chance(3) {
            lines.push(format!("X-Long: {}", "v".repeat(9000)).into_bytes());
        }
        let hosts = match dice.below(20) {
            0 => 0,
            1 => 2,
            _ => 1,
        };
        for i in 0..hosts {
            let at = dice.below(lines.len() + 1);
            let host = if i == 0 {
                "Host: box.example"
            } else {
                "Host: other.example"
            };
            lines.insert(at, host.as_bytes().to_vec());
        }
        let body: &[u8] = match dice.below(12) {
            0 => {
                lines.push(b"Content-Length: 5".to_vec());
                b"hello"
            }
            1 => {
                lines.push(b"Transfer-Encoding: chunked".to_vec());
                b"5\r\nhello\r\n0\r\n\r\n"
            }
            2 => {
                lines.push(b"Expect: 100-continue".to_vec());
                lines.push(b"Content-Length: 5".to_vec());
                b"hello"
            }
            _ => b"",
        };
        let method = *dice.pick(&METHODS);
        methods.push(method);
        let version = if dice.chance(90) {
            "HTTP/1.1"
        } else {
            dice.pick(&ODD_VERSIONS)
        };
        let start = format!("{method} {} {version}", dice.pick(&TARGETS));
        out.extend_from_slice(start.as_bytes());
        out.extend_from_slice(eol);
        for line in lines {
            out.extend_from_slice(&line);
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(eol);
        out.extend_from_slice(body);
    }
    out.extend_from_slice(b"GET /last HTTP/1.1\r\nHost: box.example\r\nConnection: close\r\n\r\n");
    methods.push("GET");
    (out, methods)
}

/// What a client saw of one answer: status and body (heads differ in their dates and ids).
fn seen_by_client(resp: &Message) -> (u16, String) {
    (resp.status(), resp.text())
}

/// What the upstream saw of one request: everything but the request id, which is new each time.
fn seen_by_upstream(a: &Arrived) -> String {
    let mut text = format!("{}\n", a.msg.start);
    for (name, value) in &a.msg.headers {
        if !name.eq_ignore_ascii_case("x-request-id") {
            text.push_str(&format!("{}: {value}\n", name.to_ascii_lowercase()));
        }
    }
    text.push_str(&String::from_utf8_lossy(&a.msg.body));
    text
}

/// Sends `bytes` (requests of `methods`) on a new connection, after `before` (whose `skip`
/// answers are left out), and reads every answer until the gateway closes the connection.
async fn answers_to(
    addr: SocketAddr,
    before: &[u8],
    skip: usize,
    bytes: &[u8],
    methods: &[&str],
) -> Vec<(u16, String)> {
    let mut wire = Wire::connect(addr).await;
    wire.send(before).await;
    for _ in 0..skip {
        wire.expect("POST", "the answer that moves the connection to hyper")
            .await;
    }
    wire.send(bytes).await;
    let mut answers = Vec::new();
    let mut final_answers = 0;
    loop {
        // Answers come in the requests' order; an interim one answers no request yet.
        let method = methods.get(final_answers).copied().unwrap_or("GET");
        let next = within(
            PATIENCE,
            "the next answer or the end",
            wire.response(method),
        );
        let Some(resp) = next.await else {
            return answers;
        };
        if resp.status() >= 200 {
            final_answers += 1;
        }
        answers.push(seen_by_client(&resp));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_are_treated_alike_by_the_gateways_codec_and_by_hyper() {
    generated_requests_alike(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_behind_basic_auth_are_treated_alike_by_the_codec_and_by_hyper() {
    let (user, password) = ("generated", "a generated password");
    let Some(line) = apache_line(&["-B", "-C", "4"], user, password) else {
        return;
    };
    generated_requests_alike(Some((line, basic_auth(user, password)))).await;
}

/// Sends generated requests both ways, to a gateway without authentication or, given an
/// htpasswd line and the `Authorization` value that matches it, with Basic auth (half the
/// generated requests then carry those credentials, some others wrong ones).
async fn generated_requests_alike(basic: Option<(String, String)>) {
    let up = Scripted::start(echo_line).await;
    let routes = [
        route("/app/", up.addr, "strip_prefix = true"),
        route("/", up.addr, ""),
    ];
    let (gw, login) = match &basic {
        None => (Gateway::start("", &routes).await, String::new()),
        Some((line, authorization)) => {
            // Wrong passwords are part of the traffic: no lockout may tell the runs apart.
            let lines = "auth = \"basic\"\nhtpasswd = \"htpasswd\"\nfailure_limit = 1000000";
            let setup = Setup::new(lines, &routes).file("htpasswd", format!("{line}\n"));
            let gw = Gateway::start_with(&setup).await;
            (gw, format!("Authorization: {authorization}\r\n"))
        }
    };
    let metrics_login: Vec<(&str, &str)> = match &basic {
        None => Vec::new(),
        Some((_, authorization)) => vec![("authorization", authorization.as_str())],
    };
    // A request with a body hands a connection to hyper for good.
    let to_hyper = format!("POST /to-hyper HTTP/1.1\r\n{HOST}{login}Content-Length: 1\r\n\r\nx");
    let seed = h1_seed();
    let mut dice = Dice::new(seed);
    let (own0, hyper0) = connections_by_codec(gw.addr, &metrics_login).await;
    let cases = 300;
    // How often each status answered, to show the traffic went where it should.
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    for case in 0..cases {
        let (mut bytes, methods) = generated_requests(&mut dice);
        if !login.is_empty() && dice.chance(50) {
            // The credentials go after the first request line, wherever it ends.
            if let Some(at) = find(&bytes, b"\n") {
                bytes.splice(at + 1..at + 1, login.bytes());
            }
        }
        let shown = String::from_utf8_lossy(&bytes);

        let upstream_before = up.arrived().len();
        let by_codec = answers_to(gw.addr, b"", 0, &bytes, &methods).await;
        let upstream_between = up.arrived().len();
        let by_hyper = answers_to(gw.addr, to_hyper.as_bytes(), 1, &bytes, &methods).await;
        let arrived = up.arrived();
        let upstream_codec: Vec<String> = arrived[upstream_before..upstream_between]
            .iter()
            .map(seen_by_upstream)
            .collect();
        let upstream_hyper: Vec<String> = arrived[upstream_between..]
            .iter()
            .filter(|a| a.msg.target() != "/to-hyper")
            .map(seen_by_upstream)
            .collect();

        let context = format!("seed {seed}, case {case}: {shown:?}");
        assert!(!by_codec.is_empty(), "no answer at all; {context}");
        assert_eq!(by_codec, by_hyper, "the client's answers differ; {context}");
        assert_eq!(
            upstream_codec, upstream_hyper,
            "the upstream's requests differ; {context}"
        );
        for (status, _) in &by_codec {
            assert!(*status < 500, "a {status} for a client's bytes; {context}");
            *statuses.entry(*status).or_default() += 1;
        }
        let mut banned = vec![
            "x-drop:",
            "x-forwarded-user: mallory",
            "keep-alive:",
            "proxy-connection:",
            "upgrade:",
            "te:",
        ];
        if basic.is_some() {
            // The gateway's own credentials stay with the gateway.
            banned.push("authorization:");
        }
        for request in &upstream_codec {
            let lower = request.to_ascii_lowercase();
            for banned in &banned {
                assert!(
                    !lower.lines().any(|l| l.starts_with(banned)),
                    "{banned} reached the app: {request}; {context}"
                );
            }
        }
    }
    // Requests were served, refused as malformed and, behind auth, refused for credentials.
    let count = |status: u16| statuses.get(&status).copied().unwrap_or(0);
    assert!(
        count(200) > cases / 10 && count(400) > cases / 10,
        "{statuses:?}"
    );
    if basic.is_some() {
        assert!(count(401) > cases / 10, "{statuses:?}");
    }
    // Both paths were taken: connections the codec served to their end, and connections it
    // handed to hyper on the way.
    let (own1, hyper1) = connections_by_codec(gw.addr, &metrics_login).await;
    let handed_over = (hyper1 - hyper0) - cases;
    assert_eq!(
        own1 - own0,
        2 * cases + 1,
        "every connection starts on the codec"
    );
    assert!(
        handed_over > 0 && handed_over < cases,
        "{handed_over} of {cases} generated connections handed to hyper"
    );
}

/// Status lines upstreams send, ordinary and odd.
const STATUS_LINES: [&str; 15] = [
    "HTTP/1.1 200 OK",
    "HTTP/1.1 200 OK",
    "HTTP/1.1 200 OK",
    "HTTP/1.1 201 Created",
    "HTTP/1.1 404 Not Found",
    "HTTP/1.1 500 Internal Server Error",
    "HTTP/1.0 200 OK",
    "HTTP/1.1 299 Odd",
    "HTTP/1.1 200",
    "HTTP/1.1 999 Unheard Of",
    "HTTP/1.1 20 OK",
    "HTTP/2 200 OK",
    "ICY 200 OK",
    "HTTP/1.1 200 OK",
    "HTTP/1.1 101 Switching Protocols",
];
const ANSWER_LINES: [&[u8]; 18] = [
    b"Content-Type: text/plain",
    b"Set-Cookie: a=1",
    b"Set-Cookie: b=2",
    b"Connection: close",
    b"Connection: X-Hop",
    b"X-Hop: must not reach the client",
    b"Keep-Alive: timeout=5",
    b"Cache-Control: no-store",
    b"X-Empty:",
    b"X-Tab:\tv",
    b"Server: generated",
    b"Trailer: X-T",
    b"Upgrade: h2c",
    b"Bad Name: x",
    b"X-Space : y",
    b"X-Fold: one\r\n two",
    b"Link: </style.css>; rel=preload",
    b"Content-Encoding: identity",
];

/// An upstream's answer: maybe an interim one first, a head, a body framed in one of the ways
/// HTTP allows (and some it does not), and whether the connection stays open.
fn generated_answer(dice: &mut Dice) -> Answer {
    let mut out = Vec::new();
    match dice.below(12) {
        0 => out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"),
        1 => out
            .extend_from_slice(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"),
        _ => {}
    }
    let eol: &[u8] = if dice.chance(5) { b"\n" } else { b"\r\n" };
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for _ in 0..dice.below(4) {
        lines.push(dice.pick(&ANSWER_LINES).to_vec());
    }
    if dice.chance(50) {
        // Text, which a compressing route compresses.
        lines.push(
            dice.pick(&[
                &b"Content-Type: text/html"[..],
                b"Content-Type: application/json",
            ])
            .to_vec(),
        );
    }
    let long = "a body long enough to be worth compressing. ".repeat(40);
    let data = *dice.pick(&[
        "hello",
        "",
        "a longer body of text",
        "0123456789abcdef",
        &long,
    ]);
    let mut then = if dice.chance(15) {
        Then::Close
    } else {
        Then::KeepOpen
    };
    let body: Vec<u8> = match dice.below(13) {
        0..=3 => {
            lines.push(format!("Content-Length: {}", data.len()).into_bytes());
            data.into()
        }
        4 => {
            lines.push(format!("Content-Length: {0}, {0}", data.len()).into_bytes());
            data.into()
        }
        5 => {
            lines.push(format!("Content-Length: {}", data.len()).into_bytes());
            lines.push(format!("Content-Length: {}", data.len() + 1).into_bytes());
            data.into()
        }
        6 => {
            lines.push(b"Transfer-Encoding: chunked".to_vec());
            let mut body = chunked_coding(data.as_bytes(), 4);
            if dice.chance(50) {
                // Extensions, upper-case and zero-padded sizes, a trailer.
                body = format!("{:04X};ext=1\r\n{data}\r\n0\r\nX-T: 1\r\n\r\n", data.len())
                    .into_bytes();
                if data.is_empty() {
                    body = b"0;ext=1\r\nX-T: 1\r\n\r\n".to_vec();
                }
            }
            body
        }
        7 => {
            lines.push(b"Transfer-Encoding: chunked".to_vec());
            lines.push(b"Content-Length: 3".to_vec());
            chunked_coding(data.as_bytes(), 5)
        }
        8 => {
            lines.push(b"Transfer-Encoding: identity".to_vec());
            then = Then::Close;
            data.into()
        }
        9 => {
            // No length at all: the body ends with the connection.
            then = Then::Close;
            data.into()
        }
        10 => {
            lines.push(format!("Content-Length: {}", data.len()).into_bytes());
            // Bytes beyond the announced length on a connection left open.
            format!("{data}GARBAGE").into_bytes()
        }
        11 => {
            // Padded and zero-led lengths are still lengths.
            lines.push(format!("Content-Length:  0{} ", data.len()).into_bytes());
            data.into()
        }
        _ => {
            lines.push(b"Transfer-Encoding: Chunked".to_vec());
            chunked_coding(data.as_bytes(), 3)
        }
    };
    let no_body_by_rule = dice.chance(8);
    let status = if no_body_by_rule {
        *dice.pick(&["HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified"])
    } else {
        dice.pick(&STATUS_LINES)
    };
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(eol);
    for line in lines {
        out.extend_from_slice(&line);
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(eol);
    if !no_body_by_rule {
        out.extend_from_slice(&body);
    }
    Answer::raw(out).then(then)
}

/// What a client saw of an answer beyond status and body: its headers other than framing,
/// connection management, dates and ids, sorted.
fn answer_headers(resp: &Message) -> Vec<String> {
    kept_headers(resp.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
}

/// [`answer_headers`] of an answer read by hyper's client.
fn reply_headers(reply: &Reply) -> Vec<String> {
    let fields = reply.headers.iter();
    kept_headers(fields.map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("(not text)"))))
}

fn kept_headers<'a>(fields: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut kept: Vec<String> = fields
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .filter(|(name, _)| {
            ![
                "date",
                "x-request-id",
                "content-length",
                "transfer-encoding",
                "connection",
                "keep-alive",
            ]
            .contains(&name.as_str())
        })
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    kept.sort();
    kept
}

/// Answers [`generated_answer_through`] found gzipped and decoded.
static GZIPPED: AtomicUsize = AtomicUsize::new(0);

/// One generated answer fetched on a fresh connection, then a plain request on the same one:
/// status, headers and body of each (the body only where the app wrote it). `gzip`: the
/// request accepts gzip, and a gzipped body is shown decoded, without the headers that say so.
async fn generated_answer_through(
    addr: SocketAddr,
    target: &str,
    with_body: bool,
    gzip: bool,
    context: &str,
) -> Vec<(u16, Vec<String>, String)> {
    let mut wire = Wire::connect(addr).await;
    let accept = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    let request = if with_body {
        format!("GET {target} HTTP/1.1\r\n{HOST}{accept}Content-Length: 1\r\n\r\nx")
    } else {
        format!("GET {target} HTTP/1.1\r\n{HOST}{accept}\r\n")
    };
    let after = format!("GET /after HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n");
    let mut seen = Vec::new();
    for request in [request, after] {
        wire.send(request.as_bytes()).await;
        let resp = loop {
            let resp = tokio::time::timeout(PATIENCE, wire.response("GET"))
                .await
                .unwrap_or_else(|_| {
                    panic!("no answer within {PATIENCE:?} after {seen:?} (with a body: {with_body}); {context}")
                })
                .unwrap_or_else(|| {
                    panic!("the connection closed after {seen:?} (with a body: {with_body}); {context}")
                });
            if resp.status() >= 200 {
                break resp;
            }
        };
        let mut headers = answer_headers(&resp);
        let mut body = resp.body.clone();
        if resp.header("content-encoding") == Some("gzip") {
            let mut decoded = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut decoded)
                .unwrap_or_else(|e| panic!("not gzip ({e}): {resp:?}; {context}"));
            body = decoded;
            GZIPPED.fetch_add(1, Ordering::SeqCst);
            headers.retain(|h| h != "content-encoding: gzip" && h != "vary: Accept-Encoding");
        }
        // The gateway's own pages about a failed upstream name the failure in its words.
        if resp.status() == 502 {
            body.clear();
        }
        seen.push((
            resp.status(),
            headers,
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    seen
}

/// An HTTP/2 connection to `addr` (prior knowledge, no TLS), driven by a task of its own.
async fn h2_connection(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let stream = within(PATIENCE, "connecting", TcpStream::connect(addr))
        .await
        .expect("connect");
    let (h2, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    h2
}

/// `GET target` over HTTP/2: status, headers and body as [`generated_answer_through`] gives
/// them.
async fn h2_answer(
    h2: &mut hyper::client::conn::http2::SendRequest<TestBody>,
    target: &str,
    context: &str,
) -> (u16, Vec<String>, String) {
    let req = request("GET", &format!("http://box.example{target}"), &[], empty());
    let resp = within(PATIENCE, "an HTTP/2 answer", h2.send_request(req))
        .await
        .unwrap_or_else(|e| panic!("HTTP/2: {e}; {context}"));
    let reply = Reply::read(resp).await;
    let body = if reply.status == 502 {
        String::new()
    } else {
        reply.text()
    };
    (reply.status.as_u16(), reply_headers(&reply), body)
}

/// An upstream that answers `/case/N` with the `N`th of `answers` (its bytes, and what it does
/// after them), and any other request with its method and target.
async fn answering_cases(answers: Vec<(Vec<u8>, Then)>) -> Scripted {
    Scripted::start(move |a| {
        let case = a.msg.target().strip_prefix("/case/");
        match case.and_then(|n| answers.get(n.parse::<usize>().ok()?)) {
            Some((bytes, then)) => Answer::raw(bytes.clone()).then(*then),
            None => echo_line(a),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_answers_are_treated_alike_by_the_gateways_codec_and_by_hyper() {
    let seed = h1_seed();
    let mut dice = Dice::new(seed ^ 0xa5a5);
    let cases = 300;
    let answers: Vec<Answer> = (0..cases).map(|_| generated_answer(&mut dice)).collect();
    let up = answering_cases(answers.iter().map(|a| (a.bytes.clone(), a.then)).collect()).await;
    // `/z/case/N` reaches the same answer through a route that compresses.
    let gw = Gateway::start(
        "",
        &[
            route("/z/", up.addr, "strip_prefix = true\ncompress = true"),
            route("/", up.addr, ""),
        ],
    )
    .await;
    // And HTTP/2 clients, all on one connection: what HTTP/1.1 ones get.
    let mut h2 = h2_connection(gw.addr).await;
    for (case, answer) in answers.iter().enumerate() {
        let target = format!("/case/{case}");
        // Without a body the gateway's codec asks the upstream; with one, hyper's client.
        let context = format!(
            "seed {seed}, case {case}: {:?} then {:?}",
            String::from_utf8_lossy(&answer.bytes),
            answer.then
        );
        let by_codec = generated_answer_through(gw.addr, &target, false, false, &context).await;
        let by_hyper = generated_answer_through(gw.addr, &target, true, false, &context).await;
        assert_eq!(by_codec, by_hyper, "the client's answers differ; {context}");
        // Compression changes the bytes on the wire, nothing else.
        let zipped = format!("/z{target}");
        for with_body in [false, true] {
            let gzipped =
                generated_answer_through(gw.addr, &zipped, with_body, true, &context).await;
            assert_eq!(
                gzipped, by_codec,
                "compressed (with a body: {with_body}); {context}"
            );
        }
        assert_eq!(
            h2_answer(&mut h2, &target, &context).await,
            by_codec[0],
            "HTTP/2 got another answer; {context}"
        );
        let (status, headers, _) = &by_codec[0];
        let named_by_connection = find(&answer.bytes, b"Connection: X-Hop").is_some();
        assert!(
            !headers
                .iter()
                .any(|h| (named_by_connection && h.starts_with("x-hop:"))
                    || h.starts_with("upgrade:")
                    || h.starts_with("trailer:")),
            "a hop-by-hop header reached the client: {headers:?}; {context}"
        );
        assert!(
            *status >= 200,
            "an interim answer as the final one; {context}"
        );
        let (after_status, _, after_body) = &by_codec[1];
        assert_eq!(
            (*after_status, after_body.as_str()),
            (200, "GET /after"),
            "the request after it was not served; {context}"
        );
    }
    let gzipped = GZIPPED.load(Ordering::SeqCst);
    assert!(gzipped > 10, "only {gzipped} answers came gzipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_generated_cases_found_wrong_are_right_for_every_client() {
    // Each was answered wrongly, or differently by the two ways, before the fix beside it.
    let cases: [(&str, Then, u16, &str); 5] = [
        // A length beside chunked: the body is the chunks' (RFC 9112 §6.3), and the length
        // must not reach the client, which would cut the body short.
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Then::KeepOpen,
            200,
            "hello",
        ),
        // An HTTP/1.0 answer read to its close: the client's HTTP/1.1 connection goes on.
        ("HTTP/1.0 200 OK\r\n\r\nhello", Then::Close, 200, "hello"),
        // HTTP/1.0 has no transfer codings: refused, not passed on still chunked.
        (
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Then::KeepOpen,
            502,
            "",
        ),
        // A length as a list: one number to the client (HTTP/2 refused the stream).
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
            Then::KeepOpen,
            200,
            "hello",
        ),
        // Lengths that disagree on an answer without a body: none to the client.
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            Then::KeepOpen,
            304,
            "",
        ),
    ];
    let answers = cases
        .iter()
        .map(|(bytes, then, _, _)| (bytes.as_bytes().to_vec(), *then))
        .collect();
    let up = answering_cases(answers).await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;
    let mut h2 = h2_connection(gw.addr).await;
    for (n, (bytes, _, status, body)) in cases.iter().enumerate() {
        let (h2_status, _, h2_body) = h2_answer(&mut h2, &format!("/case/{n}"), bytes).await;
        assert_eq!(
            (h2_status, h2_body.as_str()),
            (*status, *body),
            "HTTP/2: {bytes:?}"
        );
        for with_body in [false, true] {
            let context = format!("{bytes:?} (with a body: {with_body})");
            let seen = generated_answer_through(
                gw.addr,
                &format!("/case/{n}"),
                with_body,
                false,
                &context,
            )
            .await;
            assert_eq!(
                (seen[0].0, seen[0].2.as_str()),
                (*status, *body),
                "{context}"
            );
            assert_eq!(
                (seen[1].0, seen[1].2.as_str()),
                (200, "GET /after"),
                "{context}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_announcing_no_body_twice_reaches_the_app_with_one_length() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start("", &[route("/", up.addr, "")]).await;
    let mut wire = Wire::connect(gw.addr).await;
    wire.send(
        format!("DELETE /item HTTP/1.1\r\n{HOST}Content-Length: 0\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let resp = wire.expect("DELETE", "the answer to the DELETE").await;
    assert_eq!(resp.text(), "DELETE /item");
    let seen = &up.arrived()[0].msg;
    assert_eq!(seen.all("content-length"), ["0"], "{:?}", seen.headers);
}

/// Header fields an HTTP/2 client may send (no connection-specific ones), as name and value.
const H2_FIELDS: [(&str, &str); 10] = [
    ("accept", "*/*"),
    ("user-agent", "generated/1.0"),
    ("x-custom", "Mixed-Case Value"),
    ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-user", "mallory"),
    ("te", "trailers"),
    ("accept-encoding", "gzip, br"),
    ("sec-fetch-mode", "navigate"),
    ("x-empty", ""),
    ("x-request-id", "chosen-by-the-client"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_http2_requests_reach_the_app_as_their_http1_equivalents_do() {
    let up = Scripted::start(echo_line).await;
    let gw = Gateway::start(
        "",
        &[
            route("/app/", up.addr, "strip_prefix = true"),
            route("/", up.addr, ""),
        ],
    )
    .await;
    // One HTTP/2 connection for every case.
    let mut h2 = h2_connection(gw.addr).await;

    let seed = h1_seed();
    let mut dice = Dice::new(seed ^ 0x2222);
    for case in 0..150 {
        let method = *dice.pick(&["GET", "GET", "HEAD", "DELETE", "OPTIONS"]);
        let target = *dice.pick(&[
            "/",
            "/a/b",
            "/a/../b",
            "/q?x=1&y=%20z",
            "/app/x?y",
            "/a/./b/",
        ]);
        let mut fields: Vec<(&str, &str)> =
            (0..dice.below(5)).map(|_| *dice.pick(&H2_FIELDS)).collect();
        // Cookies as HTTP/2 clients may send them: each a field of its own (RFC 9113 §8.2.3);
        // over HTTP/1.1 one line.
        let cookies: Vec<&str> = ["a=1", "b=two", "c=3"][..dice.below(4)].to_vec();
        let context =
            format!("seed {seed}, case {case}: {method} {target} {fields:?} cookies {cookies:?}");

        let mut h1 = format!("{method} {target} HTTP/1.1\r\n{HOST}");
        for (name, value) in &fields {
            h1.push_str(&format!("{name}: {value}\r\n"));
        }
        if !cookies.is_empty() {
            h1.push_str(&format!("cookie: {}\r\n", cookies.join("; ")));
        }
        h1.push_str("connection: close\r\n\r\n");
        let before = up.arrived().len();
        let by_h1 = answers_to(gw.addr, b"", 0, h1.as_bytes(), &[method]).await;
        let between = up.arrived().len();

        for cookie in &cookies {
            fields.push(("cookie", cookie));
        }
        let req = request(
            method,
            &format!("http://box.example{target}"),
            &fields,
            empty(),
        );
        let resp = within(PATIENCE, "an HTTP/2 answer", h2.send_request(req))
            .await
            .unwrap_or_else(|e| panic!("HTTP/2: {e}; {context}"));
        let by_h2 = Reply::read(resp).await;

        let arrived = up.arrived();
        // HTTP/2 has no Host field (`:authority` becomes one), so the order of the fields may
        // differ; the fields may not. (hyper's HTTP/2 client announces an empty body of an
        // OPTIONS or DELETE with `content-length: 0`, which the HTTP/1.1 request lacks.)
        let in_any_order = |a: &Arrived| {
            let text = seen_by_upstream(a);
            let mut lines: Vec<&str> = text.lines().filter(|l| *l != "content-length: 0").collect();
            lines[1..].sort_unstable();
            lines.join("\n")
        };
        let seen_h1: Vec<String> = arrived[before..between].iter().map(in_any_order).collect();
        let seen_h2: Vec<String> = arrived[between..].iter().map(in_any_order).collect();
        assert_eq!(
            by_h1,
            [(by_h2.status.as_u16(), by_h2.text())],
            "the answers differ; {context}"
        );
        assert_eq!(seen_h1, seen_h2, "the app's requests differ; {context}");
    }
}
