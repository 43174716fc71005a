//! Health checks on the Kubernetes model: a startup probe that gates RUNNING (with a deadline long
//! enough for Forge's first boot), then a liveness probe that restarts a hung program.
//!
//! No liveness verdict is given before the startup probe has passed, so a slow starter is never
//! killed for being slow. A program without a startup probe counts as started once it has stayed
//! up for `ready_after` (supervisord's `startsecs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::reaper::{ExitStatus, Reaper};
use super::spawn::{run_captured, Launch};
use crate::config::{Probe, ProbeCheck};

/// What the probes of one run tell the program task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe passed (or `ready_after` elapsed): RUNNING.
    Started,
    /// The startup probe did not pass within its deadline.
    StartupFailed(String),
    /// The liveness probe failed `failure_threshold` times in a row.
    LivenessFailed(String),
}

/// The probes of one program and what a command probe needs to run.
#[derive(Clone)]
pub struct Probes {
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub ready_after: Duration,
    pub reaper: Arc<Reaper>,
    /// Command probes run like the program: same environment, directory and account.
    pub launch: Launch,
}

impl Probes {
    /// Watches one run until its startup verdict, then its liveness, sending events. The task
    /// running this is aborted when the run ends.
    pub async fn watch(self, events: mpsc::Sender<ProbeEvent>) {
        match &self.startup {
            None => tokio::time::sleep(self.ready_after).await,
            Some(probe) => {
                let deadline = Instant::now() + probe.deadline;
                loop {
                    let attempt = Instant::now();
                    let error = match self.check(probe).await {
                        Ok(()) => break,
                        Err(e) => e,
                    };
                    let next = attempt + probe.period;
                    if next >= deadline {
                        let _ = events
                            .send(ProbeEvent::StartupFailed(format!(
                                "not ready within {}: {error}",
                                human(probe.deadline)
                            )))
                            .await;
                        return;
                    }
                    tokio::time::sleep_until(next.into()).await;
                }
            }
        }
        if events.send(ProbeEvent::Started).await.is_err() {
            return;
        }
        let Some(probe) = &self.liveness else {
            return;
        };
        let mut failures = 0;
        loop {
            tokio::time::sleep(probe.period).await;
            match self.check(probe).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::debug!(failures, error = %e, "liveness probe failed");
                    if failures >= probe.failure_threshold {
                        let _ = events
                            .send(ProbeEvent::LivenessFailed(format!(
                                "{failures} times in a row: {e}"
                            )))
                            .await;
                        return;
                    }
                }
            }
        }
    }

    async fn check(&self, probe: &Probe) -> Result<(), String> {
        match &probe.check {
            ProbeCheck::Http { authority, path } => {
                within(probe.timeout, http_get(authority.as_str(), path)).await
            }
            ProbeCheck::Tcp { address } => {
                within(probe.timeout, async {
                    TcpStream::connect(address.as_str())
                        .await
                        .map(drop)
                        .map_err(|e| format!("cannot connect to {address}: {e}"))
                })
                .await
            }
            ProbeCheck::Command(argv) => {
                let launch = Launch {
                    argv: argv.clone(),
                    ..self.launch.clone()
                };
                match run_captured(&self.reaper, &launch, probe.timeout).await {
                    Ok(c) if c.status == ExitStatus::Code(0) => Ok(()),
                    Ok(c) => {
                        let first = c
                            .output
                            .lines()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("");
                        Err(format!("{} ended with {:?} {first}", argv[0], c.status)
                            .trim_end()
                            .to_string())
                    }
                    Err(e) => Err(format!("{}: {e}", argv[0])),
                }
            }
        }
    }
}

async fn within(
    limit: Duration,
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(limit, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", human(limit))))
}

/// `GET path` on `authority`: success is a 2xx or 3xx status, as for Kubernetes.
async fn http_get(authority: &str, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: vastgate-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}

/// `30m`, `2s`, `500ms`: durations as the configuration spells them.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        format!("{ms}ms")
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_configured() {
        assert_eq!(human(Duration::from_secs(1800)), "30m");
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::from_secs(7200)), "2h");
    }

    #[tokio::test]
    async fn http_probe_accepts_2xx_3xx_and_refuses_the_rest() {
        use tokio::net::TcpListener;
        for (answer, ok) in [("200 OK", true), ("302 Found", true), ("503 Busy", false)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {answer}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            });
            assert_eq!(http_get(&addr, "/ping").await.is_ok(), ok, "{answer}");
            server.await.unwrap();
        }
        assert!(http_get("127.0.0.1:1", "/").await.is_err());
    }
}
