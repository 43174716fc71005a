//! The byte pipe behind an upgraded (WebSocket) connection.
//!
//! After both sides switched protocols the gateway only copies bytes. It does not parse frames:
//! whatever the two ends say to each other passes unchanged. The tunnel ends when the gateway
//! shuts down, when neither side has sent anything for the idle timeout, or shortly after one side
//! closed (the other gets its half closed and a moment to finish its closing handshake).

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
pub async fn splice<C, U>(
    mut client: C,
    mut upstream: U,
    idle: Option<Duration>,
    stop: CancellationToken,
) -> std::io::Result<Copied>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let idle = idle.unwrap_or(FOREVER);
    let mut from_client = vec![0u8; BUFFER];
    let mut from_upstream = vec![0u8; BUFFER];
    let mut copied = Copied::default();
    let (mut client_open, mut upstream_open) = (true, true);
    let mut deadline = Instant::now() + idle;

    loop {
        tokio::select! {
            read = client.read(&mut from_client), if client_open => {
                let n = read?;
                if n == 0 {
                    client_open = false;
                    let _ = upstream.shutdown().await;
                } else {
                    upstream.write_all(&from_client[..n]).await?;
                    copied.client_to_upstream += n as u64;
                }
            }
            read = upstream.read(&mut from_upstream), if upstream_open => {
                let n = read?;
                if n == 0 {
                    upstream_open = false;
                    let _ = client.shutdown().await;
                } else {
                    client.write_all(&from_upstream[..n]).await?;
                    copied.upstream_to_client += n as u64;
                }
            }
            () = sleep_until(deadline) => break,
            () = stop.cancelled() => break,
        }
        if !client_open && !upstream_open {
            break;
        }
        deadline = if client_open && upstream_open {
            Instant::now() + idle
        } else {
            deadline.min(Instant::now() + CLOSE_GRACE)
        };
    }
    Ok(copied)
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
