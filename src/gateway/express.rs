//! The client side of the hot path: an HTTP/1.1 connection served with the gateway's own codec
//! ([`super::wire`]) for as long as its requests have no body.
//!
//! Each request still goes through [`Gateway::handle`] (the same canonical path, routing,
//! authentication, forwarding and access log as any other); only the reading of heads and the
//! writing of responses skip hyper's server. The first request that is not plain (a body, an
//! upgrade, `Expect`, HTTP/1.0, HTTP/2's preface, a malformed head) hands the connection to
//! hyper with every byte read so far, and hyper serves it from then on: the strict framing and
//! the error answers stay hyper's.
//!
//! Like hyper it closes a connection whose next head does not arrive within `header_timeout`,
//! and at shutdown it finishes the response in progress, then closes.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::Body as HttpBody;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::handler::ConnInfo;
use super::pool::RequestBody;
use super::wire::{self, ClientHead, Outgoing};
use super::{Body, Gateway};

/// Bytes read from a client at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Data up to this size is copied into the write buffer; larger pieces are written from where
/// they are.
const COPY_LIMIT: usize = 16 * 1024;

/// Buffered response bytes are written once they reach this much, even if more is ready.
const FLUSH_AT: usize = 64 * 1024;

/// Serves `io` until it closes, the gateway stops, or a request needs hyper. `watcher` lives as
/// long as the connection: a graceful shutdown waits for it.
pub async fn serve<I>(
    gateway: Arc<Gateway>,
    watcher: Watcher,
    mut io: I,
    conn: ConnInfo,
    header_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stop = gateway.streams_stop.clone();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // Made at the first response: a connection handed to hyper at once never needs it.
    let mut out = Vec::new();
    let deadline = tokio::time::sleep(header_timeout);
    tokio::pin!(deadline);
    loop {
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + header_timeout);
        let (parts, close) = loop {
            match wire::parse_request(&mut buf) {
                ClientHead::Plain { parts, close } => break (parts, close),
                ClientHead::Other => {
                    drop(out);
                    let io = Rewind {
                        pre: buf,
                        inner: io,
                    };
                    // Boxed: kept out of the size of every plain connection's future.
                    let hyper =
                        super::server::serve_hyper(gateway, watcher, io, conn, header_timeout);
                    return Box::pin(hyper).await;
                }
                ClientHead::Partial => {}
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = &mut deadline => {
                    tracing::debug!(peer = %conn.peer, "no request head within the header timeout; closing");
                    return;
                }
                () = stop.cancelled(), if buf.is_empty() => return,
            }
        };
        let method = parts.method.clone();
        let req = Request::from_parts(parts, RequestBody::Empty);
        // Pinned where it is made: the exchange's future is large, and moving it costs.
        let exchange = std::pin::pin!(gateway.clone().handle(conn, req));
        let handled = watching(&mut io, &mut buf, exchange).await;
        let Some(resp) = handled else {
            // The client went away: like hyper, drop the exchange (and its upstream request).
            return;
        };
        let close = close || stop.is_cancelled();
        if out.capacity() == 0 {
            out.reserve(READ_CHUNK);
        }
        let responded = respond(&mut io, &mut buf, &mut out, resp, &method, close).await;
        // A large body may have grown the buffer; an idle connection keeps only the usual size.
        if out.capacity() > 4 * FLUSH_AT {
            out = Vec::with_capacity(READ_CHUNK);
        }
        match responded {
            Ok(true) if !close => {}
            Ok(_) => {
                let _ = io.shutdown().await;
                return;
            }
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "writing a response failed");
                return;
            }
        }
    }
}

/// Writes `resp`; `Ok(true)` if the connection can carry another request.
async fn respond<I>(
    io: &mut I,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    resp: Response<Body>,
    method: &Method,
    close: bool,
) -> std::io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = resp.into_parts();
    out.clear();
    let known = body.size_hint().exact();
    let framing = wire::encode_response(&parts, method, known, close, out);
    let mut left = match framing {
        Outgoing::Bodiless => {
            drop(body);
            write_all(io, out, &[]).await?;
            return Ok(true);
        }
        Outgoing::Length(n) => Some(n),
        Outgoing::Chunked => None,
    };
    loop {
        let next = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            // Nothing more right now: what is buffered goes out before waiting.
            Poll::Pending if !out.is_empty() => Poll::Ready(Next::Idle),
            Poll::Pending => match watch_client(io, buf, cx) {
                Poll::Ready(()) => Poll::Ready(Next::Gone),
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(frame) => Poll::Ready(Next::Frame(frame)),
        })
        .await;
        let frame = match next {
            Next::Idle => {
                write_all(io, out, &[]).await?;
                continue;
            }
            Next::Gone => return Ok(false),
            Next::Frame(None) => break,
            Next::Frame(Some(Ok(frame))) => frame,
            Next::Frame(Some(Err(e))) => {
                // The head is out; the client sees the body end short.
                tracing::debug!(error = %e, "response body failed");
                write_all(io, out, &[]).await?;
                return Ok(false);
            }
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        if let Some(n) = left.as_mut() {
            if data.len() as u64 > *n {
                // More than the head announced: the rest cannot be framed.
                data.truncate(*n as usize);
                write_all(io, out, &data).await?;
                return Ok(false);
            }
            *n -= data.len() as u64;
        } else {
            wire::chunk_header(data.len(), out);
        }
        if data.len() <= COPY_LIMIT {
            out.extend_from_slice(&data);
        } else {
            write_all(io, out, &data).await?;
        }
        if left.is_none() {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= FLUSH_AT {
            write_all(io, out, &[]).await?;
        }
    }
    match left {
        Some(0) => {}
        Some(_) => {
            // Less than announced: the connection cannot go on.
            write_all(io, out, &[]).await?;
            return Ok(false);
        }
        None => out.extend_from_slice(b"0\r\n\r\n"),
    }
    write_all(io, out, &[]).await?;
    Ok(true)
}

enum Next {
    Idle,
    /// The client closed its connection.
    Gone,
    Frame(Option<Result<http_body::Frame<Bytes>, super::BoxError>>),
}

/// Runs `fut` while watching the client: what it sends meanwhile (a pipelined request) is kept
/// in `buf`; `None` if it closes the connection first.
async fn watching<I, F>(io: &mut I, buf: &mut BytesMut, mut fut: Pin<&mut F>) -> Option<F::Output>
where
    I: AsyncRead + Unpin,
    F: std::future::Future,
{
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match watch_client(io, buf, cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Reads what the client sends into `buf`; `Ready` once it has closed the connection (or
/// broken it). Stops reading (and watching) once a whole head's worth is waiting.
fn watch_client<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        if buf.len() > wire::MAX_HEAD {
            return Poll::Pending;
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Writes `out` then `data` (in one system call where the transport allows), and empties `out`.
async fn write_all<I>(io: &mut I, out: &mut Vec<u8>, data: &[u8]) -> std::io::Result<()>
where
    I: AsyncWrite + Unpin,
{
    let mut head = &out[..];
    let mut data = data;
    while !head.is_empty() || !data.is_empty() {
        let n = if head.is_empty() {
            io.write(data).await?
        } else if data.is_empty() {
            io.write(head).await?
        } else {
            io.write_vectored(&[IoSlice::new(head), IoSlice::new(data)])
                .await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        data = &data[n - from_head..];
    }
    io.flush().await?;
    out.clear();
    Ok(())
}

/// A transport with bytes already read from it put back in front.
struct Rewind<I> {
    pre: BytesMut,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            if self.pre.is_empty() {
                // Not kept for the connection's life (a WebSocket tunnel lasts hours).
                self.pre = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
