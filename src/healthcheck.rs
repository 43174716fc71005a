//! `vastgate healthcheck`: Docker's `HEALTHCHECK` without curl in the image.
//!
//! One `GET /healthz` on the gateway's own port over loopback, with a short timeout. It speaks
//! plain HTTP/1.1 over a std `TcpStream`: the check runs every 30 s in a fresh process, and one
//! request with a status line to read needs neither an async runtime nor a client pool. With TLS
//! on, the port's sniffing listener answers a plain request with `308` to the same URL over
//! https — which only a running gateway does — so that counts as healthy too, and the check needs
//! no TLS client (nor certificate verification to skip).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why the gateway is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("cannot reach the gateway on {address}: {source}")]
    Unreachable {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the gateway on {address} answered {answer:?}")]
    Answer { address: SocketAddr, answer: String },
}

/// Where to knock for a gateway listening on `listen`: the address itself, or loopback of the
/// same family when it listens on every address.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Whether the head of a `/healthz` answer means a healthy gateway: `200`, or the TLS port's
/// `308` to https.
pub fn healthy_answer(head: &str) -> bool {
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    match status {
        "200" => true,
        "308" => lines.any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("location") && value.trim().starts_with("https://")
            })
        }),
        _ => false,
    }
}

/// Asks the gateway listening on `listen` for `/healthz`, within `timeout` per step.
pub fn check(listen: SocketAddr, timeout: Duration) -> Result<(), Unhealthy> {
    let address = target(listen);
    let unreachable = |source| Unhealthy::Unreachable { address, source };
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {address}\r\nUser-Agent: vastgate-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    // The head is all we need; 4 KiB holds it.
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if len == 0 => return Err(unreachable(e)),
            Err(_) => break,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let head = head.split("\r\n\r\n").next().unwrap_or("");
    if healthy_answer(head) {
        Ok(())
    } else {
        Err(Unhealthy::Answer {
            address,
            answer: head.lines().next().unwrap_or("nothing").to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_reached_over_loopback() {
        let t = |s: &str| target(s.parse().unwrap()).to_string();
        assert_eq!(t("0.0.0.0:8000"), "127.0.0.1:8000");
        assert_eq!(t("[::]:8000"), "[::1]:8000");
        assert_eq!(t("127.0.0.2:18000"), "127.0.0.2:18000");
    }

    #[test]
    fn ok_and_the_tls_ports_redirect_are_healthy() {
        assert!(healthy_answer(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json"
        ));
        assert!(healthy_answer(
            "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://127.0.0.1:8000/healthz"
        ));
        assert!(!healthy_answer(
            "HTTP/1.1 308 Permanent Redirect\r\nlocation: http://elsewhere/"
        ));
        assert!(!healthy_answer("HTTP/1.1 503 Service Unavailable"));
        assert!(!healthy_answer("HTTP/1.1 401 Unauthorized"));
        assert!(!healthy_answer(""));
    }
}
