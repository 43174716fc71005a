//! Keep-alive connections to the upstreams, one pool per worker thread.
//!
//! Each worker ([`super::workers`]) keeps its own idle connections, so a request and the
//! connection it borrows live on the same thread and nothing is locked. A connection goes back to
//! the pool when the response body has been read to its end ([`PooledBody`]); one whose body was
//! abandoned is closed, as HTTP/1.1 cannot reuse it.
//!
//! Body-less requests (all but uploads and upgrades) travel on plain sockets with the gateway's
//! own codec ([`super::wire`]); the rest on hyper connections. Each kind has its own idle list.
//!
//! An app closes idle keep-alive connections when it likes (uvicorn after 5 s, gunicorn after
//! 2 s), and a request can be written to one just as it closes. Such a request is sent again on a
//! new connection when that cannot do harm: it was not written at all, or it was written but is
//! idempotent, has no body, and the connection broke before any answer.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fnv::FnvHashMap;
use http::uri::Authority;
use http::{Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::deadline::Deadline;
use super::gather::Gather;
use super::rewrite::Rewrite;
use super::verbatim::Verbatim;
use super::wire::{self, Decoder, Step, WireError};
use super::BoxError;

type Sender = SendRequest<RequestBody>;

/// Idle connections kept per upstream and thread.
const MAX_IDLE: usize = 64;

/// How long a connection that is not yet ready for its next request (its last response has
/// ended, but its task has not caught up) may take before it is given up.
const READY_WAIT: Duration = Duration::from_secs(2);

struct Idle {
    sender: Sender,
    since: Instant,
}

/// A plain socket between two responses.
struct RawIdle {
    conn: RawConn,
    since: Instant,
}

/// A socket to an upstream and what has been read from it but not used yet.
struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
    /// The space the next read gets.
    read_size: usize,
    /// When the answer under way must have its head: one timer for the connection's life.
    deadline: Deadline,
}

/// Bytes read from an upstream at a time: small answers fit the first size; a read that fills
/// its space doubles the next, up to the largest (fewer system calls for big bodies).
const READ_FIRST: usize = 8 * 1024;
const READ_MAX: usize = 256 * 1024;

#[derive(Default)]
struct Pool {
    /// By upstream address as written in the config (hashing an `Authority` goes byte by byte).
    /// No client picks these keys: FNV, not SipHash.
    idle: FnvHashMap<Box<str>, Vec<Idle>>,
    raw: FnvHashMap<Box<str>, Vec<RawIdle>>,
    /// A sweeper task runs on this thread.
    sweeping: bool,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Why no response came.
#[derive(Debug)]
pub enum PoolError {
    /// The connection could not be opened.
    Connect(std::io::Error),
    /// The exchange failed after the connection was open.
    Exchange(BoxError),
    /// No response head came by the deadline.
    Timeout,
}

/// Opens and reuses connections to upstreams.
#[derive(Clone, Debug)]
pub struct Connections {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// A request on its way to an upstream.
pub enum Outbound {
    /// A body-less request, already written out as its head: the gateway's own codec sends it.
    Plain { head: Vec<u8>, method: Method },
    /// A request with a body or an upgrade, its fields rewritten: hyper's client sends it.
    /// Boxed: the plain request is the usual one, and what carries it is moved on its way.
    Hyper(Box<Request<RequestBody>>),
}

impl Outbound {
    /// `parts` and `body` (origin-form URI) on their way out, their fields as `plan` rewrites
    /// them. A body-less request is written out here, so that its parts need not travel on to
    /// the connection.
    pub fn of(mut parts: http::request::Parts, body: RequestBody, plan: &Rewrite) -> Outbound {
        if matches!(body, RequestBody::Empty) && !plan.upgrades() {
            let mut head = Vec::with_capacity(512 + 64 * parts.headers.len());
            wire::encode_request(&parts, plan, &mut head);
            return Outbound::Plain {
                head,
                method: parts.method,
            };
        }
        plan.apply(&mut parts.headers);
        Outbound::Hyper(Box::new(Request::from_parts(parts, body)))
    }
}

impl Connections {
    /// Sends `out` to `authority` on a pooled or new connection, if its response head comes by
    /// `deadline`. `keep_fields`: a body-less request's answer may keep its fields verbatim
    /// ([`wire::parse_response`]).
    pub async fn send(
        &self,
        authority: &Authority,
        out: Outbound,
        keep_fields: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Response<PooledBody>, PoolError> {
        let req = match out {
            Outbound::Plain { head, method } => {
                return self
                    .send_plain(authority, &head, &method, keep_fields, deadline)
                    .await;
            }
            Outbound::Hyper(req) => *req,
        };
        // Boxed: its future is large and the hot path above should not carry (and copy) it.
        let sent = Box::pin(self.send_hyper(authority, req));
        match tokio::time::timeout_at(deadline, sent).await {
            Ok(sent) => sent,
            Err(_) => Err(PoolError::Timeout),
        }
    }

    /// Sends `req` on a hyper connection (bodies, upgrades).
    async fn send_hyper(
        &self,
        authority: &Authority,
        mut req: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                self.checkout(authority)
            };
            let (mut sender, reused) = match pooled {
                Some(sender) => (sender, true),
                None => (self.connect(authority).await?, false),
            };
            let replay = (reused && replayable(&req)).then(|| copy_head(&req));
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    // A connection that switched protocols belongs to its tunnel now.
                    let checkin =
                        (parts.status != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Checkin {
                            sender,
                            authority: authority.clone(),
                            idle_timeout: self.idle_timeout,
                        });
                    let body = PooledBody::Hyper {
                        inner: Gather::new(body),
                        checkin,
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match (e.take_message(), replay) {
                    // Not written: the pooled connection had been closed. Another one.
                    (Some(unsent), _) if reused => req = unsent,
                    (None, Some(copy)) if closed_before_answer(e.error()) => {
                        tracing::debug!(error = %e.error(), "pooled connection closed under a request; sending it again");
                        req = copy;
                        fresh_only = true;
                    }
                    _ => return Err(PoolError::Exchange(e.into_error().into())),
                },
            }
        }
    }

    /// An idle connection to `authority` that is still open and not expired, newest first.
    fn checkout(&self, authority: &Authority) -> Option<Sender> {
        POOL.with_borrow_mut(|pool| {
            let list = pool.idle.get_mut(authority.as_str())?;
            while let Some(idle) = list.pop() {
                if idle.sender.is_ready() && idle.since.elapsed() < self.idle_timeout {
                    return Some(idle.sender);
                }
            }
            None
        })
    }

    async fn connect(&self, authority: &Authority) -> Result<Sender, PoolError> {
        let stream = self.open(authority).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| PoolError::Exchange(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A new socket to `authority`, within the connect timeout.
    async fn open(&self, authority: &Authority) -> Result<TcpStream, PoolError> {
        // `[::1]` in a URI is `::1` to the resolver.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((host, port)),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(PoolError::Connect(e)),
            Err(_) => {
                return Err(PoolError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection within {} ms",
                        self.connect_timeout.as_millis()
                    ),
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Sends a body-less request's `head` on a plain socket, as one buffer, answered into a
    /// [`PooledBody::Plain`]. A pooled socket the upstream closed meanwhile is replaced as
    /// [`Connections::send`] does it.
    async fn send_plain(
        &self,
        authority: &Authority,
        head: &[u8],
        method: &Method,
        keep_fields: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Response<PooledBody>, PoolError> {
        let idempotent = method.is_idempotent();
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                checkout_plain(authority, self.idle_timeout, !idempotent)
            };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => RawConn {
                    // Boxed: rare, and its future would enlarge (and slow) every request's.
                    stream: Box::pin(tokio::time::timeout_at(deadline, self.open(authority)))
                        .await
                        .map_err(|_| PoolError::Timeout)??,
                    buf: BytesMut::new(),
                    read_size: READ_FIRST,
                    deadline: Deadline::new(deadline),
                },
            };
            conn.deadline.set(deadline);
            match exchange(&mut conn, head, method, keep_fields).await {
                Ok(resp) => {
                    let keep = resp.keep_alive.then(|| PlainCheckin {
                        authority: authority.clone(),
                        idle_timeout: self.idle_timeout,
                    });
                    let body = PlainBody {
                        decoder: Decoder::new(resp.framing),
                        conn: Some(conn),
                        keep,
                        kept: resp.kept,
                    };
                    return Ok(Response::from_parts(resp.parts, PooledBody::Plain(body)));
                }
                // Not written: the pooled socket had been closed. Another one, whatever the
                // method.
                Err(Exchange::Unsent(e)) if reused => {
                    tracing::debug!(error = %e, "pooled connection closed before a request; sending it on another");
                }
                Err(Exchange::Closed(e)) if reused && idempotent => {
                    tracing::debug!(error = %e, "pooled connection closed under a request; sending it again");
                    fresh_only = true;
                }
                Err(Exchange::Unsent(e) | Exchange::Closed(e) | Exchange::Io(e)) => {
                    return Err(PoolError::Exchange(e.into()))
                }
                Err(Exchange::Wire(e)) => return Err(PoolError::Exchange(e.into())),
                Err(Exchange::TimedOut) => return Err(PoolError::Timeout),
            }
        }
    }
}

/// How a plain exchange failed.
enum Exchange {
    /// Closed or reset before the request could be written: the app has not seen it.
    Unsent(std::io::Error),
    /// Closed or reset before any byte of an answer: the request may have been seen.
    Closed(std::io::Error),
    Io(std::io::Error),
    Wire(WireError),
    /// No response head by the connection's deadline.
    TimedOut,
}

/// Writes `head` and reads the response head, by the connection's deadline.
async fn exchange(
    conn: &mut RawConn,
    head: &[u8],
    method: &Method,
    keep_fields: bool,
) -> Result<wire::ResponseHead, Exchange> {
    let mut written = 0;
    while written < head.len() {
        let rest = &head[written..];
        let wrote =
            std::future::poll_fn(|cx| match Pin::new(&mut conn.stream).poll_write(cx, rest) {
                Poll::Ready(wrote) => Poll::Ready(Some(wrote)),
                Poll::Pending => conn.deadline.poll_passed(cx).map(|()| None),
            })
            .await
            .ok_or(Exchange::TimedOut)?;
        match wrote {
            Ok(0) => return Err(Exchange::Io(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if written == 0 && closed(&e) => return Err(Exchange::Unsent(e)),
            Err(e) if closed(&e) => return Err(Exchange::Closed(e)),
            Err(e) => return Err(Exchange::Io(e)),
        }
    }
    loop {
        if !conn.buf.is_empty() {
            if let Some(resp) =
                wire::parse_response(&mut conn.buf, method, keep_fields).map_err(Exchange::Wire)?
            {
                return Ok(resp);
            }
        }
        let answered = !conn.buf.is_empty();
        let read = std::future::poll_fn(|cx| match poll_read_more(conn, cx) {
            Poll::Ready(read) => Poll::Ready(Some(read)),
            Poll::Pending => conn.deadline.poll_passed(cx).map(|()| None),
        })
        .await
        .ok_or(Exchange::TimedOut)?;
        match read {
            Ok(0) if answered => {
                return Err(Exchange::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside the response head",
                )))
            }
            Ok(0) => {
                return Err(Exchange::Closed(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                )))
            }
            Ok(_) => {}
            Err(e) if !answered && closed(&e) => return Err(Exchange::Closed(e)),
            Err(e) => return Err(Exchange::Io(e)),
        }
    }
}

/// The connection was closed or reset under us.
fn closed(e: &std::io::Error) -> bool {
    broken(e) || e.kind() == std::io::ErrorKind::UnexpectedEof
}

/// The peer reset or aborted the connection.
fn broken(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted
    )
}

/// Reads what the socket has into the connection's buffer.
fn poll_read_more(conn: &mut RawConn, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    if conn.buf.capacity() - conn.buf.len() < conn.read_size / 4 {
        conn.buf.reserve(conn.read_size);
    }
    let space = conn.buf.capacity() - conn.buf.len();
    let read = tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf);
    if matches!(read, Poll::Ready(Ok(n)) if n == space) {
        conn.read_size = (conn.read_size * 2).min(READ_MAX);
    }
    read
}

/// An idle plain socket to `authority`, newest first. With `probe`, one the upstream has
/// closed is recognised before use (a request that must not be sent twice needs that).
fn checkout_plain(authority: &Authority, idle_timeout: Duration, probe: bool) -> Option<RawConn> {
    POOL.with_borrow_mut(|pool| {
        let list = pool.raw.get_mut(authority.as_str())?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() >= idle_timeout || (probe && !still_open(&idle.conn.stream)) {
                continue;
            }
            return Some(idle.conn);
        }
        None
    })
}

/// An idle socket is open if reading it would block: EOF, an error or stray bytes all mean it
/// cannot carry a request.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A request that may be sent twice: idempotent, without a body.
fn replayable(req: &Request<RequestBody>) -> bool {
    req.method().is_idempotent() && matches!(req.body(), RequestBody::Empty)
}

fn copy_head(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// The connection was closed or reset before any response came.
fn closed_before_answer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return broken(io);
        }
        cause = err.source();
    }
    false
}

/// The body of a request to an upstream: none, or the client's, streamed (in batches).
pub enum RequestBody {
    Empty,
    Client(Gather<Incoming>),
}

impl RequestBody {
    /// `Empty` when the client sent no body: such a request can be sent again.
    pub fn from_client(body: Incoming) -> RequestBody {
        if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Client(Gather::new(body))
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Client(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Client(body) => body.size_hint(),
        }
    }
}

/// What goes back to the pool once a response has been read.
pub struct Checkin {
    sender: Sender,
    authority: Authority,
    idle_timeout: Duration,
}

impl Checkin {
    fn release(mut self) {
        if self.sender.is_closed() {
            return;
        }
        if self.sender.is_ready() {
            return self.park();
        }
        // The response ended before the connection's task turned to the next request. (Outside
        // a runtime there is nothing to wait with: the connection is dropped.)
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let ready = tokio::time::timeout(READY_WAIT, self.sender.ready()).await;
            if matches!(ready, Ok(Ok(()))) {
                self.park();
            }
        });
    }

    fn park(self) {
        let Checkin {
            sender,
            authority,
            idle_timeout,
        } = self;
        let idle = Idle {
            sender,
            since: Instant::now(),
        };
        park_in(|pool| &mut pool.idle, &authority, idle, idle_timeout);
    }
}

/// Puts `idle` last on `authority`'s list in the list map `pick` chooses (the oldest goes when
/// it is full) and starts this thread's sweeper if none runs.
fn park_in<T>(
    pick: impl FnOnce(&mut Pool) -> &mut FnvHashMap<Box<str>, Vec<T>>,
    authority: &Authority,
    idle: T,
    idle_timeout: Duration,
) {
    let start_sweeper = POOL.with_borrow_mut(|pool| {
        let start = !std::mem::replace(&mut pool.sweeping, true);
        let lists = pick(pool);
        let list = match lists.get_mut(authority.as_str()) {
            Some(list) => list,
            None => lists.entry(authority.as_str().into()).or_default(),
        };
        if list.len() >= MAX_IDLE {
            list.remove(0); // the oldest
        }
        list.push(idle);
        start
    });
    if start_sweeper {
        start_sweeping(idle_timeout);
    }
}

fn start_sweeping(idle_timeout: Duration) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(sweep(idle_timeout))),
        Err(_) => POOL.with_borrow_mut(|pool| pool.sweeping = false),
    }
}

/// Closes this thread's idle connections once they expire; ends when none is left.
async fn sweep(idle_timeout: Duration) {
    loop {
        tokio::time::sleep(idle_timeout / 2 + Duration::from_millis(10)).await;
        let empty = POOL.with_borrow_mut(|pool| {
            pool.idle.retain(|_, list| {
                list.retain(|idle| !idle.sender.is_closed() && idle.since.elapsed() < idle_timeout);
                !list.is_empty()
            });
            pool.raw.retain(|_, list| {
                list.retain(|idle| {
                    idle.since.elapsed() < idle_timeout && still_open(&idle.conn.stream)
                });
                !list.is_empty()
            });
            let empty = pool.idle.is_empty() && pool.raw.is_empty();
            if empty {
                pool.sweeping = false;
            }
            empty
        });
        if empty {
            return;
        }
    }
}

/// An upstream's response body; its connection returns to the pool when it has been read to the
/// end (or is closed if the body is dropped before).
pub enum PooledBody {
    Hyper {
        inner: Gather<Incoming>,
        checkin: Option<Checkin>,
    },
    Plain(PlainBody),
}

impl PooledBody {
    /// The answer's fields kept verbatim ([`wire::ResponseHead::kept`]), taken out: they go on
    /// beside the answer, not in it.
    pub fn take_kept(&mut self) -> Option<Box<Verbatim>> {
        match self {
            PooledBody::Plain(body) => body.kept.take(),
            PooledBody::Hyper { .. } => None,
        }
    }

    /// Gives the connection back if the body is complete.
    fn settle(&mut self) {
        match self {
            PooledBody::Hyper { inner, checkin } => {
                if inner.is_end_stream() {
                    if let Some(checkin) = checkin.take() {
                        checkin.release();
                    }
                }
            }
            PooledBody::Plain(body) => body.settle(),
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (inner, checkin) = match &mut *self {
            PooledBody::Plain(body) => return body.poll_frame(cx),
            PooledBody::Hyper { inner, checkin } => (inner, checkin),
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(checkin) = checkin.take() {
                    checkin.release();
                }
            }
            Poll::Ready(Some(Ok(_))) => self.settle(),
            Poll::Ready(Some(Err(_))) => *checkin = None,
            Poll::Pending => {}
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Hyper { inner, .. } => inner.is_end_stream(),
            PooledBody::Plain(body) => body.decoder.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PooledBody::Hyper { inner, .. } => inner.size_hint(),
            PooledBody::Plain(body) => match body.decoder.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body nobody read (HEAD, 204, 304, an empty 200) is complete too.
        self.settle();
    }
}

/// A response body read from a plain socket; the socket goes back to the idle list at the
/// body's end when the response allows it.
pub struct PlainBody {
    decoder: Decoder,
    conn: Option<RawConn>,
    keep: Option<PlainCheckin>,
    /// The answer's fields, when they are kept where they lie in its head.
    kept: Option<Box<Verbatim>>,
}

/// Where a plain socket goes back to.
struct PlainCheckin {
    authority: Authority,
    idle_timeout: Duration,
}

impl PlainBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.step(&mut conn.buf) {
                Ok(Step::Data(data)) => {
                    if self.decoder.is_done() {
                        self.settle();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    self.settle();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            match poll_read_more(conn, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.conn = None;
                    // A close-delimited body ends here; any other was cut short.
                    if self.decoder.remaining().is_none() && !self.decoder.is_chunked() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(WireError::Truncated.into())));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// Parks the socket if the body is complete and nothing follows it; closes it if the
    /// response said so.
    fn settle(&mut self) {
        if !self.decoder.is_done() {
            return;
        }
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Some(keep) = self.keep.take() {
            if conn.buf.is_empty() {
                park_plain(conn, keep);
            }
        }
    }
}

fn park_plain(mut conn: RawConn, keep: PlainCheckin) {
    // Shrink a buffer a large body grew, rather than keep it while idle.
    if conn.buf.capacity() > READ_FIRST {
        conn.buf = BytesMut::new();
        conn.read_size = READ_FIRST;
    }
    let idle = RawIdle {
        conn,
        since: Instant::now(),
    };
    park_in(
        |pool| &mut pool.raw,
        &keep.authority,
        idle,
        keep.idle_timeout,
    );
}
