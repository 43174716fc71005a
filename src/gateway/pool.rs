//! Keep-alive connections to the upstreams, one pool per worker thread.
//!
//! Each worker ([`super::workers`]) keeps its own idle connections, so a request and the
//! connection it borrows live on the same thread and nothing is locked. A connection goes back to
//! the pool when the response body has been read to its end ([`PooledBody`]); one whose body was
//! abandoned is closed, as HTTP/1.1 cannot reuse it.
//!
//! An app closes idle keep-alive connections when it likes (uvicorn after 5 s, gunicorn after
//! 2 s), and a request can be written to one just as it closes. Such a request is sent again on a
//! new connection when that cannot do harm: it was not written at all, or it was written but is
//! idempotent, has no body, and the connection broke before any answer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::gather::Gather;

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

#[derive(Default)]
struct Pool {
    /// By upstream address as written in the config (hashing an `Authority` goes byte by byte).
    idle: HashMap<Box<str>, Vec<Idle>>,
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
    Exchange(hyper::Error),
}

/// Opens and reuses connections to upstreams.
#[derive(Clone, Debug)]
pub struct Connections {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Connections {
    /// Sends `req` (origin-form URI, Host set) to `authority` on a pooled or new connection.
    pub async fn send(
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
                    let body = PooledBody {
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
                    _ => return Err(PoolError::Exchange(e.into_error())),
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
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::Exchange)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
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
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
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
struct Checkin {
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
        let start_sweeper = POOL.with_borrow_mut(|pool| {
            let list = match pool.idle.get_mut(authority.as_str()) {
                Some(list) => list,
                None => pool.idle.entry(authority.as_str().into()).or_default(),
            };
            if list.len() >= MAX_IDLE {
                list.remove(0); // the oldest
            }
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
            !std::mem::replace(&mut pool.sweeping, true)
        });
        if start_sweeper {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(sweep(idle_timeout))),
                Err(_) => POOL.with_borrow_mut(|pool| pool.sweeping = false),
            }
        }
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
            let empty = pool.idle.is_empty();
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
pub struct PooledBody {
    inner: Gather<Incoming>,
    checkin: Option<Checkin>,
}

impl PooledBody {
    /// Gives the connection back if the body is complete.
    fn settle(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(checkin) = self.checkin.take() {
                checkin.release();
            }
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(checkin) = this.checkin.take() {
                    checkin.release();
                }
            }
            Poll::Ready(Some(Ok(_))) => this.settle(),
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body nobody read (HEAD, 204, 304, an empty 200) is complete too.
        self.settle();
    }
}
