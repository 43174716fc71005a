//! One JSON line per request, written off the request path.
//!
//! The line is emitted when the response body is finished (or dropped), so the byte count and
//! duration of a long stream are its real ones. Lines go through a bounded channel to a writer
//! thread that writes them in batches: a slow stdout pipe can never stall a request; when the
//! channel is full the line is dropped and counted. The line never holds the Authorization
//! header, cookies or the query string (which may carry a `token`).

use std::io::Write;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;

use crate::config::AccessLog;

const QUEUE: usize = 8192;
/// How often the writer thread writes what has arrived (at most this late, lines reach the log).
const WRITE_TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// Where finished request records go.
pub struct AccessLogger {
    tx: Option<SyncSender<String>>,
    dropped: AtomicU64,
    /// Lines handed to the writer, and lines it has written out (for [`AccessLogger::flush`]).
    sent: AtomicU64,
    written: Arc<AtomicU64>,
}

impl AccessLogger {
    /// Starts the writer thread for `target` (nothing for `off`).
    pub fn start(target: &AccessLog) -> std::io::Result<Arc<AccessLogger>> {
        let sink: Box<dyn Write + Send> = match target {
            AccessLog::Off => {
                return Ok(Arc::new(AccessLogger {
                    tx: None,
                    dropped: AtomicU64::new(0),
                    sent: AtomicU64::new(0),
                    written: Arc::default(),
                }))
            }
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let written_by_writer = written.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                // Woken for every line, the writer would cost a thread switch (and a write) per
                // request; it wakes on a short tick instead and writes what came meanwhile.
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
                loop {
                    let mut open = true;
                    let mut lines = 0;
                    loop {
                        match rx.try_recv() {
                            Ok(line) => {
                                let _ = out.write_all(line.as_bytes());
                                lines += 1;
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    let _ = out.flush();
                    written_by_writer.fetch_add(lines, Ordering::Release);
                    if !open {
                        break;
                    }
                    std::thread::sleep(WRITE_TICK);
                }
            })?;
        Ok(Arc::new(AccessLogger {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            written,
        }))
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn emit(&self, record: &Record) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        match tx.try_send(line) {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits (at most `limit`) until every line sent so far is written out: at shutdown, so the
    /// last requests' lines are not lost with the process.
    pub async fn flush(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.written.load(Ordering::Acquire) < self.sent.load(Ordering::Relaxed)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Lines lost because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The fields of one access-log line.
#[derive(Debug, Serialize)]
pub struct Record {
    pub time: String,
    pub client: IpAddr,
    #[serde(serialize_with = "method_str")]
    pub method: Method,
    /// The canonical path (or the raw one when it was refused), never the query.
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<std::sync::Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub request_id: String,
    #[serde(skip)]
    pub started: Option<Instant>,
}

fn method_str<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

pin_project_lite::pin_project! {
    /// Counts the bytes of a response body and logs the request when the body is done.
    pub struct Logged<B> {
        #[pin]
        inner: B,
        record: Option<Record>,
        logger: Arc<AccessLogger>,
    }

    impl<B> PinnedDrop for Logged<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut record) = this.record.take() {
                if let Some(started) = record.started {
                    record.duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
                }
                this.logger.emit(&record);
            }
        }
    }
}

impl<B> Logged<B> {
    pub fn new(inner: B, record: Record, logger: Arc<AccessLogger>) -> Self {
        Logged {
            inner,
            record: Some(record),
            logger,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let (Some(data), Some(record)) = (frame.data_ref(), this.record.as_mut()) {
                record.bytes += data.len() as u64;
            }
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

/// Formats a time as RFC 3339 in UTC with milliseconds: `2026-11-29T23:47:37.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Request ids: a random per-process prefix and a counter, unique without a syscall per request.
pub struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        RequestIds {
            prefix: rand::random(),
            next: AtomicU64::new(1),
        }
    }

    /// 16 hex digits (more after 2^32 requests): the process's random prefix and a counter. The
    /// value lives in one allocation that its clones (the upstream's request, the answer, the
    /// log) share.
    pub fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(8) as usize;
        let mut id = IdText {
            text: [0; 24],
            len: 8 + digits,
        };
        write_hex(&mut id.text[..8], u64::from(self.prefix));
        write_hex(&mut id.text[8..8 + digits], n);
        HeaderValue::from_maybe_shared(Bytes::from_owner(id))
            .unwrap_or(HeaderValue::from_static("-"))
    }
}

/// One request id's text, held inline.
struct IdText {
    text: [u8; 24],
    len: usize,
}

impl AsRef<[u8]> for IdText {
    fn as_ref(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// Writes the low hex digits of `value` that fill `out` (what `{:0width$x}` writes, without
/// the formatter).
fn write_hex(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn request_ids_are_what_the_formatter_would_write() {
        let ids = RequestIds::new();
        let first = ids.next();
        assert_eq!(first, format!("{:08x}{:08x}", ids.prefix, 1).as_str());
        ids.next.store(0xf_ffff_ffff, Ordering::Relaxed);
        assert_eq!(
            ids.next(),
            format!("{:08x}{:08x}", ids.prefix, 0xf_ffff_ffffu64).as_str()
        );
        assert_eq!(
            ids.next(),
            format!("{:08x}{:08x}", ids.prefix, 0x10_0000_0000u64).as_str()
        );
        ids.next.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(
            ids.next(),
            format!("{:08x}{:016x}", ids.prefix, u64::MAX).as_str()
        );
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_082_457_123);
        assert_eq!(rfc3339(t), "2026-11-30T23:47:37.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }
}
