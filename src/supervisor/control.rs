//! The control socket: how `vastgate status|start|stop|restart|logs` talk to a running `up`.
//!
//! A Unix socket (mode 0600: root's, like the programs it controls) with line-delimited JSON: the
//! client sends one [`Request`] line, the supervisor answers with one [`Reply`] line, or for
//! `logs` a header and then one line per output line (until the client hangs up, with `follow`).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;

use super::board::{ProgramView, SupervisorFacts};
use super::gpu::GpuReport;
use super::Controller;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Restart {
        name: String,
    },
    Logs {
        name: String,
        lines: usize,
        follow: bool,
    },
}

/// The result of a start/stop/restart for one program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub name: String,
    pub message: String,
}

/// What the supervisor answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status {
        supervisor: SupervisorFacts,
        programs: Vec<ProgramView>,
        gpu: GpuReport,
    },
    Done {
        results: Vec<ActionResult>,
    },
    /// Precedes the lines of `logs`: where the whole log is.
    LogHeader {
        path: String,
    },
    Line {
        line: String,
    },
    Error {
        message: String,
    },
}

/// Binds the socket with mode 0600, replacing a stale one (the caller holds the instance lock,
/// so a socket file left there belongs to a supervisor that is gone).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves clients until the task is aborted.
pub(crate) async fn serve(listener: UnixListener, controller: Arc<Controller>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let controller = controller.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &controller).await {
                        tracing::debug!(error = %e, "control client ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, controller: &Controller) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = AsyncBufReader::new(read.take(64 * 1024));
    let mut line = String::new();
    let read_line = reader.read_line(&mut line);
    if tokio::time::timeout(Duration::from_secs(10), read_line)
        .await
        .is_err()
    {
        return Ok(());
    }
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            return send(
                &mut write,
                &Reply::Error {
                    message: format!("not a request: {e}"),
                },
            )
            .await
        }
    };
    match request {
        Request::Status => send(&mut write, &controller.status()).await,
        Request::Start { name } => {
            send(&mut write, &controller.act(Action::Start, &name).await).await
        }
        Request::Stop { name } => {
            send(&mut write, &controller.act(Action::Stop, &name).await).await
        }
        Request::Restart { name } => {
            send(&mut write, &controller.act(Action::Restart, &name).await).await
        }
        Request::Logs {
            name,
            lines,
            follow,
        } => {
            let Some((path, output)) = controller.output(&name) else {
                return send(
                    &mut write,
                    &Reply::Error {
                        message: controller.unknown(&name),
                    },
                )
                .await;
            };
            send(
                &mut write,
                &Reply::LogHeader {
                    path: path.display().to_string(),
                },
            )
            .await?;
            let (tail, mut feed) = output.ring.tail_and_follow(lines);
            for line in tail {
                send(
                    &mut write,
                    &Reply::Line {
                        line: line.to_string(),
                    },
                )
                .await?;
            }
            if !follow {
                return Ok(());
            }
            let mut rest = reader.into_inner();
            let mut probe = [0u8; 64];
            loop {
                tokio::select! {
                    next = feed.recv() => match next {
                        Ok(line) => send(&mut write, &Reply::Line { line: line.to_string() }).await?,
                        Err(RecvError::Lagged(n)) => {
                            send(&mut write, &Reply::Line { line: format!("[vastgate] {n} lines skipped (reader too slow)") }).await?
                        }
                        Err(RecvError::Closed) => return Ok(()),
                    },
                    // The client hung up.
                    n = rest.read(&mut probe) => if matches!(n, Ok(0) | Err(_)) { return Ok(()) },
                }
            }
        }
    }
}

async fn send(write: &mut (impl AsyncWriteExt + Unpin), reply: &Reply) -> io::Result<()> {
    let mut text = serde_json::to_string(reply).map_err(io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

/// A control action on a program (or `all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

/// Why a client got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there: no supervisor is running (exit code 4).
    #[error("no supervisor answers on {path}: {source} (is `vastgate up` running with this configuration?)")]
    NoSupervisor { path: String, source: io::Error },
    #[error("the supervisor on {path} broke off: {source}")]
    Broken { path: String, source: io::Error },
}

/// Sends `request` and hands each reply line to `on_reply` until it returns false or the
/// supervisor closes the connection. `timeout` bounds each wait for a line (`None`: forever).
pub fn call(
    socket: &Path,
    request: &Request,
    timeout: Option<Duration>,
    mut on_reply: impl FnMut(Reply) -> bool,
) -> Result<(), ClientError> {
    let path = socket.display().to_string();
    let mut stream =
        StdUnixStream::connect(socket).map_err(|source| ClientError::NoSupervisor {
            path: path.clone(),
            source,
        })?;
    let broken = |source| ClientError::Broken {
        path: path.clone(),
        source,
    };
    stream.set_read_timeout(timeout).map_err(broken)?;
    let mut text = serde_json::to_string(request).map_err(|e| broken(io::Error::other(e)))?;
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(broken)?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(broken)?;
        let reply: Reply = serde_json::from_str(&line)
            .map_err(|e| broken(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        if !on_reply(reply) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object_per_line() {
        let r = Request::Logs {
            name: "forge".into(),
            lines: 5,
            follow: true,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"op":"logs","name":"forge","lines":5,"follow":true}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"status"}"#).unwrap(),
            Request::Status
        );
    }
}
