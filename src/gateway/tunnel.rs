//! The byte pipe behind an upgraded (WebSocket) connection.
//!
//! After both sides switched protocols the gateway only copies bytes. It does not parse frames:
//! whatever the two ends say to each other passes unchanged. The tunnel ends when the gateway
//! shuts down, when neither side has sent anything for the idle timeout, or shortly after one side
//! closed (the other gets its half closed and a moment to finish its closing handshake).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// Per direction; two of these are most of a tunnel's memory.
const BUFFER: usize = 8 * 1024;
/// After one side closed, how long the other may take to close too.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Stands in for "no idle timeout".
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Bytes copied each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
}

/// Copies between `client` and `upstream` until the tunnel ends (see the module doc).
///
/// The two directions run independently: a side that is slow to read never stops the other
/// direction from flowing (a single loop that waits on one write while not reading the other side
/// deadlocks when both peers are writing a large message to each other at once).
pub async fn splice<C, U>(
    client: C,
    upstream: U,
    idle: Option<Duration>,
    stop: CancellationToken,
) -> std::io::Result<Copied>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let idle = idle.unwrap_or(FOREVER);
    let started = Instant::now();
    // Milliseconds since `started` of the last byte either way.
    let last_activity = AtomicU64::new(0);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);

    let to_upstream = pump(
        &mut client_read,
        &mut upstream_write,
        started,
        &last_activity,
    );
    let to_client = pump(
        &mut upstream_read,
        &mut client_write,
        started,
        &last_activity,
    );
    tokio::pin!(to_upstream, to_client);

    let mut copied = Copied::default();
    let (mut upstream_bound_done, mut client_bound_done) = (false, false);
    let mut first_close: Option<Instant> = None;
    loop {
        let active_until =
            started + Duration::from_millis(last_activity.load(Ordering::Relaxed)) + idle;
        let deadline = match first_close {
            Some(closed) => active_until.min(closed + CLOSE_GRACE),
            None => active_until,
        };
        tokio::select! {
            n = &mut to_upstream, if !upstream_bound_done => {
                copied.client_to_upstream = n;
                upstream_bound_done = true;
                first_close.get_or_insert_with(Instant::now);
            }
            n = &mut to_client, if !client_bound_done => {
                copied.upstream_to_client = n;
                client_bound_done = true;
                first_close.get_or_insert_with(Instant::now);
            }
            () = sleep_until(deadline) => {
                // Traffic may have moved the idle deadline while we slept: look again.
                let active_until = started
                    + Duration::from_millis(last_activity.load(Ordering::Relaxed))
                    + idle;
                let still_open = first_close.map_or(true, |c| Instant::now() < c + CLOSE_GRACE);
                if Instant::now() >= active_until || !still_open {
                    break;
                }
            }
            () = stop.cancelled() => break,
        }
        if upstream_bound_done && client_bound_done {
            break;
        }
    }
    Ok(copied)
}

/// Copies one direction until end of stream or an error, then closes the writing half so the
/// other end sees the close. Returns the bytes copied.
async fn pump<R, W>(reader: &mut R, writer: &mut W, started: Instant, last: &AtomicU64) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if writer.write_all(&buffer[..n]).await.is_err() {
            break;
        }
        total += n as u64;
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(now, Ordering::Relaxed);
    }
    let _ = writer.shutdown().await;
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn bytes_pass_both_ways_and_close_ends_both() {
        let (client_end, client_gw) = duplex(64);
        let (upstream_gw, upstream_end) = duplex(64);
        let task = tokio::spawn(splice(
            client_gw,
            upstream_gw,
            None,
            CancellationToken::new(),
        ));
        let (mut c, mut u) = (client_end, upstream_end);
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        u.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        u.write_all(b"world!").await.unwrap();
        let mut buf = [0u8; 6];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world!");
        drop(c);
        // The upstream sees EOF, then closes too.
        let mut rest = Vec::new();
        u.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        drop(u);
        let copied = task.await.unwrap().unwrap();
        assert_eq!(
            copied,
            Copied {
                client_to_upstream: 5,
                upstream_to_client: 6
            }
        );
    }

    #[tokio::test]
    async fn a_peer_that_echoes_whole_blocks_does_not_deadlock_the_tunnel() {
        let (client_end, client_gw) = duplex(16 * 1024);
        let (upstream_gw, upstream_end) = duplex(16 * 1024);
        tokio::spawn(splice(
            client_gw,
            upstream_gw,
            None,
            CancellationToken::new(),
        ));
        // Like a WebSocket echo server: read a whole message, then write it all back, and only
        // then read again.
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(upstream_end);
            let mut block = vec![0u8; 256 * 1024];
            while r.read_exact(&mut block).await.is_ok() {
                if w.write_all(&block).await.is_err() {
                    break;
                }
            }
        });
        let (mut r, mut w) = tokio::io::split(client_end);
        let total = 1024 * 1024;
        let writer = tokio::spawn(async move {
            w.write_all(&vec![7u8; total]).await.unwrap();
            w
        });
        let mut echoed = vec![0u8; total];
        tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut echoed))
            .await
            .expect("the tunnel stalled with both directions full")
            .unwrap();
        assert!(echoed.iter().all(|b| *b == 7));
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed() {
        let (_c, client_gw) = duplex(64);
        let (upstream_gw, _u) = duplex(64);
        let started = Instant::now();
        splice(
            client_gw,
            upstream_gw,
            Some(Duration::from_secs(30)),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test]
    async fn stop_token_ends_the_tunnel() {
        let (_c, client_gw) = duplex(64);
        let (upstream_gw, _u) = duplex(64);
        let stop = CancellationToken::new();
        let task = tokio::spawn(splice(client_gw, upstream_gw, None, stop.clone()));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
