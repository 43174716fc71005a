//! Where a program's output goes: its log file, the supervisor's stdout (prefixed with its name,
//! because Vast shows the container's stdout), an in-memory tail for `vastgate logs` and the
//! gateway's "starting" page, and the log triggers that restart it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use regex::Regex;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc};

use super::logfile::LogFile;

/// Lines longer than this are cut (the log file still gets every byte, in pieces).
const MAX_LINE: usize = 16 * 1024;

/// The last lines of a program's output, and a feed of new ones for followers.
pub struct LogRing {
    lines: Mutex<VecDeque<Arc<str>>>,
    capacity: usize,
    feed: broadcast::Sender<Arc<str>>,
}

impl LogRing {
    pub fn new(capacity: usize) -> LogRing {
        let (feed, _) = broadcast::channel(1024);
        LogRing {
            lines: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            feed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<str>>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, line: Arc<str>) {
        let mut lines = self.lock();
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line.clone());
        let _ = self.feed.send(line);
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<Arc<str>> {
        let lines = self.lock();
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The last `n` lines and a receiver of every line after them (none lost, none repeated).
    pub fn tail_and_follow(&self, n: usize) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let lines = self.lock();
        let rx = self.feed.subscribe();
        let tail = lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect();
        (tail, rx)
    }
}

/// One program's output sinks, shared by all its runs.
pub struct ProgramOutput {
    name: String,
    file: Mutex<Option<LogFile>>,
    pub ring: LogRing,
    echo: bool,
    triggers: Vec<Regex>,
}

impl ProgramOutput {
    /// `file` is `None` when the log file could not be opened (the program still runs).
    pub fn new(
        name: &str,
        file: Option<LogFile>,
        echo: bool,
        triggers: Vec<Regex>,
    ) -> ProgramOutput {
        ProgramOutput {
            name: name.to_string(),
            file: Mutex::new(file),
            ring: LogRing::new(1000),
            echo,
            triggers,
        }
    }

    /// A line from the supervisor about this program (not checked against triggers).
    pub fn note(&self, message: &str) {
        self.emit(format!("[vastgate] {message}").as_bytes());
    }

    fn emit(&self, raw: &[u8]) -> String {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_line(raw) {
                tracing::warn!(program = %self.name, path = %f.path().display(), error = %e, "cannot write the log file; output goes to stdout only");
                *file = None;
            }
        }
        drop(file);
        let text = String::from_utf8_lossy(raw).into_owned();
        if self.echo {
            echo(format!("{} | {}\n", self.name, text));
        }
        self.ring.push(Arc::from(text.as_str()));
        text
    }

    /// Copies the process's output, line by line, until it ends; a line that matches a trigger
    /// is sent on `triggered` (the run that owns the channel restarts).
    pub async fn pump(
        self: Arc<Self>,
        mut reader: pipe::Receiver,
        triggered: mpsc::Sender<String>,
    ) {
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = pending.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line(&line, &triggered);
            }
            while pending.len() >= MAX_LINE {
                let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
                self.line(&piece, &triggered);
            }
        }
        if !pending.is_empty() {
            self.line(&pending, &triggered);
        }
    }

    fn line(&self, raw: &[u8], triggered: &mpsc::Sender<String>) {
        let text = self.emit(raw);
        if self.triggers.iter().any(|t| t.is_match(&text)) {
            let _ = triggered.try_send(text);
        }
    }
}

/// Writes program output to stdout from a thread of its own: a stdout nobody reads must stall
/// neither the programs nor the supervisor, so lines are dropped when the queue is full.
fn echo(line: String) {
    static QUEUE: OnceLock<Option<SyncSender<String>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = sync_channel::<String>(4096);
        std::thread::Builder::new()
            .name("vastgate-echo".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                for line in rx {
                    let mut out = stdout.lock();
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.flush();
                }
            })
            .ok()
            .map(|_| tx)
    });
    if let Some(tx) = queue {
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            // stdout is not keeping up; the log file has the line.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_lines_and_follow_sees_only_new_ones() {
        let ring = LogRing::new(3);
        for i in 0..5 {
            ring.push(Arc::from(format!("l{i}").as_str()));
        }
        let tail: Vec<String> = ring.tail(10).iter().map(|l| l.to_string()).collect();
        assert_eq!(tail, ["l2", "l3", "l4"]);
        let (tail, mut rx) = ring.tail_and_follow(1);
        assert_eq!(tail.len(), 1);
        ring.push(Arc::from("l5"));
        assert_eq!(
            rx.try_recv().map(|l| l.to_string()).ok().as_deref(),
            Some("l5")
        );
    }

    #[test]
    fn matching_lines_trigger_and_notes_do_not() {
        let out = ProgramOutput::new(
            "forge",
            None,
            false,
            vec![Regex::new("illegal memory access").unwrap()],
        );
        let (tx, mut rx) = mpsc::channel(1);
        out.line(b"all good", &tx);
        out.note("illegal memory access (a note)");
        assert!(rx.try_recv().is_err());
        out.line(b"CUDA error: an illegal memory access was encountered", &tx);
        assert!(rx.try_recv().unwrap().contains("illegal memory access"));
        assert_eq!(out.ring.tail(10).len(), 3);
    }
}
