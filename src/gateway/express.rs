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
use http::{Method, Request};
use http_body::Body as HttpBody;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::deadline::Deadline;
use super::handler::{Answer, ConnInfo};
use super::pool::RequestBody;
use super::wire::{self, ClientHead, Outgoing};
use super::Gateway;
use crate::auth::GrantMemo;

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
    gateway.metrics.count_own_connection();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // Made at the first response: a connection handed to hyper at once never needs it.
    let mut out = Vec::new();
    let mut deadline = Deadline::new(Instant::now() + header_timeout);
    // Waited on across requests: made once, not with every request's wait.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    // The connection's last grant of Basic credentials: its next request sends the same.
    let mut memo = GrantMemo::default();
    loop {
        deadline.set(Instant::now() + header_timeout);
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
            make_room(&mut buf);
            tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = deadline.passed() => {
                    tracing::debug!(peer = %conn.peer, "no request head within the header timeout; closing");
                    return;
                }
                () = &mut stopped, if buf.is_empty() => return,
            }
        };
        let method = parts.method.clone();
        let req = Request::from_parts(parts, RequestBody::Empty);
        // Pinned where it is made: the exchange's future is large, and moving it costs.
        let own = ConnInfo {
            own_codec: true,
            ..conn
        };
        let exchange = std::pin::pin!(gateway.clone().handle(own, req, Some(&mut memo)));
        let handled = watching(&mut io, &mut buf, exchange).await;
        let Some(answer) = handled else {
            // The client went away: like hyper, drop the exchange (and its upstream request).
            return;
        };
        let close = close || stop.is_cancelled();
        if out.capacity() == 0 {
            out.reserve(READ_CHUNK);
        }
        let responded = respond(&mut io, &mut buf, &mut out, answer, &method, close).await;
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

/// Writes `answer`; `Ok(true)` if the connection can carry another request.
async fn respond<I>(
    io: &mut I,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    answer: Answer,
    method: &Method,
    close: bool,
) -> std::io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = answer.resp.into_parts();
    out.clear();
    let mut outbox = Outbox {
        out,
        large: Vec::new(),
        held: 0,
    };
    let known = body.size_hint().exact();
    let framing = wire::encode_response(
        &parts,
        answer.kept.as_deref(),
        method,
        known,
        close,
        outbox.out,
    );
    let mut left = match framing {
        Outgoing::Bodiless => {
            drop(body);
            outbox.flush(io).await?;
            return Ok(true);
        }
        Outgoing::Length(n) => Some(n),
        Outgoing::Chunked => None,
    };
    loop {
        let holding = !outbox.is_empty();
        let next = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            // Nothing more right now: what is held goes out before waiting.
            Poll::Pending if holding => Poll::Ready(Next::Idle),
            Poll::Pending => match watch_client(io, buf, cx) {
                Poll::Ready(()) => Poll::Ready(Next::Gone),
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(frame) => Poll::Ready(Next::Frame(frame)),
        })
        .await;
        let frame = match next {
            Next::Idle => {
                outbox.flush(io).await?;
                continue;
            }
            Next::Gone => return Ok(false),
            Next::Frame(None) => break,
            Next::Frame(Some(Ok(frame))) => frame,
            Next::Frame(Some(Err(e))) => {
                // The head is out; the client sees the body end short.
                tracing::debug!(error = %e, "response body failed");
                outbox.flush(io).await?;
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
                outbox.push(data);
                outbox.flush(io).await?;
                return Ok(false);
            }
            *n -= data.len() as u64;
            outbox.push(data);
        } else {
            wire::chunk_header(data.len(), outbox.out);
            outbox.push(data);
            outbox.out.extend_from_slice(b"\r\n");
        }
        if outbox.is_full() {
            outbox.flush(io).await?;
        }
    }
    match left {
        Some(0) => {}
        Some(_) => {
            // Less than announced: the connection cannot go on.
            outbox.flush(io).await?;
            return Ok(false);
        }
        None => outbox.out.extend_from_slice(b"0\r\n\r\n"),
    }
    outbox.flush(io).await?;
    Ok(true)
}

enum Next {
    Idle,
    /// The client closed its connection.
    Gone,
    Frame(Option<Result<http_body::Frame<Bytes>, super::BoxError>>),
}

/// Response bytes waiting to be written: small pieces copied into `out`, larger data frames
/// held by reference at their place in it, all written with one vectored call once the body
/// has nothing more ready or enough is held.
struct Outbox<'a> {
    out: &'a mut Vec<u8>,
    /// Data frames and the offset in `out` they come before.
    large: Vec<(usize, Bytes)>,
    /// Bytes of `large`.
    held: usize,
}

/// The most data frames, and bytes, held for one write (as `gather.rs` holds request bodies).
const MAX_HELD_FRAMES: usize = 16;
const MAX_HELD_BYTES: usize = 256 * 1024;

impl Outbox<'_> {
    fn push(&mut self, data: Bytes) {
        if data.len() <= COPY_LIMIT {
            self.out.extend_from_slice(&data);
        } else {
            self.held += data.len();
            self.large.push((self.out.len(), data));
        }
    }

    fn is_empty(&self) -> bool {
        self.out.is_empty() && self.large.is_empty()
    }

    fn is_full(&self) -> bool {
        self.out.len() >= FLUSH_AT
            || self.out.len() + self.held >= MAX_HELD_BYTES
            || self.large.len() >= MAX_HELD_FRAMES
    }

    /// Writes everything held, in order, and empties the box.
    async fn flush<I: AsyncWrite + Unpin>(&mut self, io: &mut I) -> std::io::Result<()> {
        let total = self.out.len() + self.held;
        let mut done = 0;
        while done < total {
            let mut slices = [IoSlice::new(&[]); 2 * MAX_HELD_FRAMES + 1];
            let mut count = 0;
            let mut pos = 0;
            let mut at = 0;
            let pieces = self
                .large
                .iter()
                .flat_map(|(offset, data)| {
                    let small = &self.out[at..*offset];
                    at = *offset;
                    [small, &data[..]]
                })
                .collect::<Vec<&[u8]>>();
            for piece in pieces.iter().copied().chain([&self.out[at..]]) {
                let start = pos;
                pos += piece.len();
                if pos <= done || piece.is_empty() || count == slices.len() {
                    continue;
                }
                slices[count] = IoSlice::new(&piece[done.saturating_sub(start)..]);
                count += 1;
            }
            let n = io.write_vectored(&slices[..count]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        io.flush().await?;
        self.out.clear();
        self.large.clear();
        self.held = 0;
        Ok(())
    }
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

/// Space for the next read from the client.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
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
        make_room(buf);
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => return Poll::Pending,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport that takes at most `step` bytes per write, vectored or not.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.written.extend_from_slice(&b[..take]);
                n += take;
                left -= take;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn held_frames_are_written_in_order_through_partial_writes() {
        for step in [1, 7, 4096, 1 << 20] {
            let mut out = Vec::new();
            let mut expected = Vec::new();
            let mut outbox = Outbox {
                out: &mut out,
                large: Vec::new(),
                held: 0,
            };
            for i in 0..5u8 {
                let small = vec![b'a' + i; 3];
                outbox.out.extend_from_slice(&small);
                expected.extend_from_slice(&small);
                // Alternately above and below the copy limit.
                let data = Bytes::from(vec![i; if i % 2 == 0 { COPY_LIMIT + 5 } else { 10 }]);
                expected.extend_from_slice(&data);
                outbox.push(data);
            }
            outbox.out.extend_from_slice(b"end");
            expected.extend_from_slice(b"end");
            assert_eq!(outbox.large.len(), 3);
            let mut io = Trickle {
                written: Vec::new(),
                step,
            };
            outbox.flush(&mut io).await.unwrap();
            assert!(outbox.is_empty() && outbox.held == 0);
            assert!(io.written == expected, "step {step}: bytes out of order");
        }
    }
}
