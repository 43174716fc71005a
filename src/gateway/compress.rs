//! Response compression at the gateway.
//!
//! Forge's own GZip middleware holds server-sent events back until a stream ends, so its route
//! drops `Accept-Encoding`; the gateway then compresses for the browser itself, or remote users
//! download Forge's multi-megabyte UI uncompressed. Every upstream chunk is compressed and flushed
//! at once (a streamed response must not wait for an encoder's buffer to fill), and
//! `text/event-stream` is never touched.
//!
//! Only gzip is produced. A stream keeps no encoder between chunks: only the last 32 KiB of its
//! input (the deflate window), the CRC-32 and the length. Each chunk (in pieces of at most
//! 64 KiB) borrows the thread's raw deflate compressor (one per thread, used synchronously inside
//! `poll_frame` and never held across a wait), primes it with the stream's window so matches
//! reach back as in one continuous stream, compresses the piece ending with a sync flush, and
//! gives the compressor back reset.
//! The gzip header goes out before the first segment, the final empty block with the CRC-32 and
//! length after the last. A stalled or idle stream therefore holds at most 32 KiB, however many
//! there are; the compressor's few hundred KiB are paid once per thread.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use flate2::{Compress, CompressError, Compression, Crc, FlushCompress, Status};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::BoxError;

/// Below this many bytes compression is not worth its framing.
const MIN_LENGTH: u64 = 256;
/// The deflate level the gateway compresses at. On Forge's front-end (`benches/compress.sh`
/// measures levels 1-6) level 5 sends 1.015x the bytes of gzip -9 over whole files; 3 and 4
/// (1.055x, 1.034x) would save 10-20% of the CPU but send more than the brotli browsers got
/// before (1.025x); 6 costs 10% more CPU for 0.2% fewer bytes.
pub const GZIP_LEVEL: u32 = 5;
/// The deflate window: the most of its input a stream keeps between chunks.
pub const WINDOW: usize = 32 * 1024;
/// Larger upstream chunks are compressed (and sent) in pieces of this size, so the thread's
/// output buffer stays bounded.
const MAX_PIECE: usize = 64 * 1024;
/// Priming hashes the dictionary (a tenth or so of the cost of compressing as much), so a piece
/// is primed with the last `PRIME_FACTOR` times its size of the window, at least `MIN_PRIME`:
/// pieces of 4 KiB and more get all 32 KiB, and a stream of small chunks does not pay for 32 KiB
/// on every one (1 KiB chunks: some 6% more bytes than with the whole window, for half the CPU).
const PRIME_FACTOR: usize = 8;
const MIN_PRIME: usize = 8 * 1024;
/// A gzip member header: deflate, no flags, no time, no extra flags, OS unknown (RFC 1952).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// A final, empty, fixed-Huffman deflate block, starting on a byte boundary (after a sync flush).
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// The content codings the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
}

impl Encoding {
    fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
        }
    }
}

/// Picks a coding the client accepts (`q=0` refuses): gzip, the one the gateway produces.
pub fn negotiate(accept_encoding: Option<&HeaderValue>) -> Option<Encoding> {
    let value = accept_encoding?.to_str().ok()?;
    let mut gzip = false;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = true;
        }
    }
    gzip.then_some(Encoding::Gzip)
}

/// Whether a response is worth compressing: text-like, not an event stream, not already encoded,
/// not a partial or empty answer, and not asked to stay untransformed.
pub fn compressible(method: &Method, status: StatusCode, headers: &HeaderMap) -> bool {
    let fields = headers
        .iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
    compressible_fields(method, status, fields)
}

/// [`compressible`] over header fields as they lie in a head (names in any case), so that an
/// answer kept [`super::verbatim`] is judged without building its header map.
pub fn compressible_fields<'a>(
    method: &Method,
    status: StatusCode,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> bool {
    if method == Method::HEAD
        || status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return false;
    }
    let is = |name: &[u8], other: &HeaderName| name.eq_ignore_ascii_case(other.as_str().as_bytes());
    let (mut length, mut content_type) = (None, None);
    for (name, value) in fields {
        if is(name, &header::CONTENT_ENCODING) || is(name, &header::CONTENT_RANGE) {
            return false;
        }
        if is(name, &header::CACHE_CONTROL)
            && text(value).is_some_and(|v| v.to_ascii_lowercase().contains("no-transform"))
        {
            return false;
        }
        // The first of each counts, as a map's `get` gives it.
        if is(name, &header::CONTENT_LENGTH) {
            length.get_or_insert(value);
        } else if is(name, &header::CONTENT_TYPE) {
            content_type.get_or_insert(value);
        }
    }
    let too_small = length
        .and_then(text)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n < MIN_LENGTH);
    let text_like = content_type.and_then(text).is_some_and(text_like);
    text_like && !too_small
}

/// A value as text, where `HeaderValue::to_str` would give it (visible ASCII and tabs).
fn text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

fn text_like(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "text/event-stream" {
        return false;
    }
    essence.starts_with("text/")
        || matches!(
            essence.as_str(),
            "application/javascript"
                | "application/x-javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
        )
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
}

/// Rewrites the response headers for an encoded body.
pub fn mark_encoded(headers: &mut HeaderMap, encoding: Encoding) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    let varies = super::headers::has_token(headers, &header::VARY, "accept-encoding")
        || super::headers::has_token(headers, &header::VARY, "*");
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    // The bytes differ from the upstream's, so a strong validator would be a lie.
    if let Some(etag) = headers.get(header::ETAG) {
        if etag.as_bytes().starts_with(b"\"") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, v);
            }
        }
    }
}

/// The thread's raw deflate compressor and its output buffer, lent to one piece at a time.
struct Deflater {
    level: u32,
    compress: Compress,
    out: Vec<u8>,
}

thread_local! {
    /// The thread's spare compressor: taken for one piece, given back reset.
    static SPARE: RefCell<Option<Deflater>> = const { RefCell::new(None) };
}

/// Runs `f` with the thread's compressor at `level`, fresh or reset (a new one when the spare is
/// missing, in use or at another level), then resets it and puts it back. Nothing stays borrowed
/// while `f` runs, and a panic in `f` only drops the compressor.
fn with_deflater<R>(level: u32, f: impl FnOnce(&mut Deflater) -> R) -> R {
    let spare = SPARE
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.take()))
        .ok()
        .flatten();
    let mut deflater = match spare {
        Some(d) if d.level == level => d,
        _ => Deflater {
            level,
            compress: Compress::new(Compression::new(level), false),
            out: Vec::new(),
        },
    };
    let result = f(&mut deflater);
    deflater.compress.reset();
    deflater.out.clear();
    let _ = SPARE.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            *s = Some(deflater);
        }
    });
    result
}

fn compress_error(e: CompressError) -> std::io::Error {
    std::io::Error::other(e)
}

/// Deflates all of `input` into `out`, ending with a sync flush: the output ends on a byte
/// boundary and decodes completely, and the next piece may start with another compressor.
fn deflate_sync(c: &mut Compress, mut input: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    // Enough for incompressible input (stored blocks, 5 bytes each per 64 KiB) and the flush.
    out.reserve(input.len() + input.len() / 8 + 64);
    loop {
        let (in_before, out_before) = (c.total_in(), c.total_out());
        let status = c
            .compress_vec(input, out, FlushCompress::Sync)
            .map_err(compress_error)?;
        let consumed = (c.total_in() - in_before) as usize;
        input = &input[consumed..];
        // Done once all input went in and the output did not fill up (zlib's rule for a flush).
        if input.is_empty() && (out.len() < out.capacity() || status == Status::BufError) {
            return Ok(());
        }
        if consumed == 0 && c.total_out() == out_before && out.len() < out.capacity() {
            return Err(std::io::Error::other("deflate made no progress"));
        }
        out.reserve(input.len() + 4096);
    }
}

/// Keeps the last `WINDOW` bytes of the stream's input in `window`, which never holds more.
fn remember(window: &mut Vec<u8>, piece: &[u8]) {
    let piece = &piece[piece.len().saturating_sub(WINDOW)..];
    let excess = (window.len() + piece.len()).saturating_sub(WINDOW);
    window.drain(..excess);
    let need = window.len() + piece.len();
    if need > window.capacity() {
        // Doubling as a Vec does, but never past the window.
        let target = need.max(window.capacity() * 2).min(WINDOW);
        window.reserve_exact(target - window.len());
    }
    window.extend_from_slice(piece);
}

/// What a gzip stream keeps between chunks.
struct GzipStream {
    level: u32,
    header_sent: bool,
    /// CRC-32 and length (mod 2^32) of the input so far.
    crc: Crc,
    /// The last `WINDOW` bytes of the input: the next piece's matches may reach back into them.
    window: Vec<u8>,
}

impl GzipStream {
    fn new(level: u32) -> GzipStream {
        GzipStream {
            level,
            header_sent: false,
            crc: Crc::new(),
            window: Vec::new(),
        }
    }

    /// Compresses one piece, ending with a sync flush; returns the bytes to send.
    fn push(&mut self, piece: &[u8]) -> std::io::Result<Bytes> {
        let header = !self.header_sent;
        let prime = (piece.len() * PRIME_FACTOR).clamp(MIN_PRIME, WINDOW);
        let window = &self.window[self.window.len().saturating_sub(prime)..];
        let out = with_deflater(self.level, |d| {
            if !window.is_empty() {
                d.compress.set_dictionary(window).map_err(compress_error)?;
            }
            if header {
                d.out.extend_from_slice(&GZIP_HEADER);
            }
            deflate_sync(&mut d.compress, piece, &mut d.out)?;
            // Exactly sized: the frame may wait long in a stalled connection's queue.
            Ok::<_, std::io::Error>(Bytes::copy_from_slice(&d.out))
        })?;
        self.header_sent = true;
        self.crc.update(piece);
        remember(&mut self.window, piece);
        Ok(out)
    }

    /// The end of the member: the header if nothing went out yet, the final empty block, the
    /// CRC-32 and the length.
    fn finish(self) -> Bytes {
        let mut tail = Vec::with_capacity(GZIP_HEADER.len() + FINAL_BLOCK.len() + 8);
        if !self.header_sent {
            tail.extend_from_slice(&GZIP_HEADER);
        }
        tail.extend_from_slice(&FINAL_BLOCK);
        tail.extend_from_slice(&self.crc.sum().to_le_bytes());
        tail.extend_from_slice(&self.crc.amount().to_le_bytes());
        Bytes::from(tail)
    }
}

pin_project_lite::pin_project! {
    /// A body compressed chunk by chunk as it streams.
    pub struct Compressed<B> {
        #[pin]
        inner: B,
        // `None` once the gzip trailer went out (or compression failed).
        stream: Option<GzipStream>,
        // What is left of an upstream chunk too large to compress in one piece.
        pending: Bytes,
        trailers: Option<HeaderMap>,
    }
}

impl<B> Compressed<B> {
    pub fn new(inner: B, encoding: Encoding) -> Self {
        match encoding {
            Encoding::Gzip => Self::with_level(inner, GZIP_LEVEL),
        }
    }

    /// gzip at another deflate level (1-9), for measurements; the gateway uses [`GZIP_LEVEL`].
    pub fn with_level(inner: B, level: u32) -> Self {
        Compressed {
            inner,
            stream: Some(GzipStream::new(level.clamp(1, 9))),
            pending: Bytes::new(),
            trailers: None,
        }
    }

    /// The heap the stream keeps between chunks besides the upstream's own chunk: its window,
    /// never more than [`WINDOW`].
    pub fn retained(&self) -> usize {
        self.stream.as_ref().map_or(0, |s| s.window.capacity())
    }
}

impl<B> Body for Compressed<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            if !this.pending.is_empty() {
                // Pieces of equal size, none over MAX_PIECE.
                let pieces = this.pending.len().div_ceil(MAX_PIECE);
                let piece = this.pending.split_to(this.pending.len().div_ceil(pieces));
                return Poll::Ready(Some(match stream.push(&piece) {
                    Ok(out) => Ok(Frame::data(out)),
                    Err(e) => {
                        *this.stream = None;
                        *this.pending = Bytes::new();
                        *this.trailers = None;
                        Err(e.into())
                    }
                }));
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => *this.pending = data,
                    Err(frame) => {
                        *this.trailers = frame.into_trailers().ok();
                        return Poll::Ready(finish(this.stream));
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => return Poll::Ready(finish(this.stream)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn finish(stream: &mut Option<GzipStream>) -> Option<Result<Frame<Bytes>, BoxError>> {
    stream.take().map(|s| Ok(Frame::data(s.finish())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn negotiation_picks_gzip_and_honours_q_zero() {
        let n = |s: &'static str| negotiate(Some(&HeaderValue::from_static(s)));
        assert_eq!(n("gzip, deflate, br, zstd"), Some(Encoding::Gzip));
        assert_eq!(n("gzip"), Some(Encoding::Gzip));
        assert_eq!(n("x-gzip"), Some(Encoding::Gzip));
        assert_eq!(n("br;q=1, GZIP ; q=0.5"), Some(Encoding::Gzip));
        assert_eq!(n("br"), None);
        assert_eq!(n("gzip;q=0"), None);
        assert_eq!(n("br, gzip;q=0.0"), None);
        assert_eq!(n("identity"), None);
        assert_eq!(negotiate(None), None);
    }

    #[test]
    fn only_text_like_complete_unencoded_responses_are_compressed() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        let ok = StatusCode::OK;
        let js = h(&[("content-type", "application/javascript; charset=utf-8")]);
        assert!(compressible(&Method::GET, ok, &js));
        assert!(!compressible(&Method::HEAD, ok, &js));
        assert!(!compressible(&Method::GET, StatusCode::NOT_MODIFIED, &js));
        assert!(!compressible(
            &Method::GET,
            StatusCode::PARTIAL_CONTENT,
            &js
        ));
        assert!(!compressible(
            &Method::GET,
            ok,
            &h(&[("content-type", "text/event-stream")])
        ));
        assert!(!compressible(
            &Method::GET,
            ok,
            &h(&[("content-type", "image/png")])
        ));
        assert!(!compressible(
            &Method::GET,
            ok,
            &h(&[("content-type", "text/html"), ("content-encoding", "gzip")])
        ));
        assert!(!compressible(
            &Method::GET,
            ok,
            &h(&[("content-type", "text/html"), ("content-length", "12")])
        ));
        assert!(!compressible(
            &Method::GET,
            ok,
            &h(&[
                ("content-type", "text/html"),
                ("cache-control", "no-transform")
            ])
        ));
        assert!(compressible(
            &Method::GET,
            ok,
            &h(&[("content-type", "application/ld+json")])
        ));
    }

    #[test]
    fn fields_as_the_app_wrote_them_are_judged_as_their_map_is() {
        let cases: &[&[(&str, &[u8])]] = &[
            &[("Content-Type", b"text/html")],
            &[
                ("CONTENT-TYPE", b"Text/HTML; charset=utf-8"),
                ("Content-Length", b"5000"),
            ],
            &[("Content-Type", b"text/html"), ("Content-Length", b"12")],
            &[("Content-Type", b"text/html"), ("Content-Length", b"x12")],
            &[("Content-Type", b"text/html"), ("content-encoding", b"")],
            &[
                ("Content-Type", b"text/css"),
                ("Content-Range", b"bytes 0-1/2"),
            ],
            &[
                ("Content-Type", b"text/css"),
                ("Cache-Control", b"public, No-Transform"),
            ],
            &[
                ("Content-Type", b"text/css"),
                ("Cache-Control", b"no-\xfftransform"),
            ],
            &[
                ("Content-Type", b"image/png"),
                ("Content-Type", b"text/html"),
            ],
            &[("Content-Type", b"text/html\xff")],
            &[("Content-Type", b"text/event-stream")],
            &[
                ("Vary", b"Accept"),
                ("Content-Type", b"application/json"),
                ("ETag", b"\"a\""),
            ],
            &[],
        ];
        for fields in cases {
            let mut map = HeaderMap::new();
            for (name, value) in fields.iter() {
                map.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            for (method, status) in [
                (Method::GET, StatusCode::OK),
                (Method::HEAD, StatusCode::OK),
                (Method::GET, StatusCode::NOT_FOUND),
                (Method::GET, StatusCode::PARTIAL_CONTENT),
            ] {
                let raw = fields.iter().map(|(n, v)| (n.as_bytes(), *v));
                assert_eq!(
                    compressible_fields(&method, status, raw),
                    compressible(&method, status, &map),
                    "{fields:?} {method} {status}"
                );
            }
        }
        let many = [
            ("Content-Type", &b"text/html"[..]),
            ("Content-Length", b"5000"),
        ];
        let raw = many.iter().map(|(n, v)| (n.as_bytes(), *v));
        assert!(compressible_fields(&Method::GET, StatusCode::OK, raw));
    }

    #[test]
    fn encoded_headers_drop_length_and_weaken_etag() {
        let mut m = HeaderMap::new();
        m.insert("content-length", HeaderValue::from_static("1000"));
        m.insert("etag", HeaderValue::from_static("\"abc\""));
        m.insert("vary", HeaderValue::from_static("Origin"));
        mark_encoded(&mut m, Encoding::Gzip);
        assert!(!m.contains_key("content-length"));
        assert_eq!(m["content-encoding"], "gzip");
        assert_eq!(m["etag"], "W/\"abc\"");
        let vary: Vec<_> = m.get_all("vary").iter().collect();
        assert_eq!(vary, vec!["Origin", "Accept-Encoding"]);
    }

    /// Text shaped like a front-end bundle: words from a small vocabulary, with identifiers.
    fn text(len: usize, seed: u64) -> Vec<u8> {
        const WORDS: [&str; 22] = [
            "function ",
            "return ",
            "const ",
            "let ",
            " => ",
            "{",
            "}\n",
            "(",
            ")",
            ";",
            "this.",
            "props",
            "export default ",
            "import ",
            " from ",
            "\"./assets/",
            ".js\"",
            " = ",
            "gradio",
            "svelte_",
            "\n  ",
            "null",
        ];
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(len + 32);
        while out.len() < len {
            out.extend_from_slice(WORDS[rng.gen_range(0..WORDS.len())].as_bytes());
            if rng.gen_ratio(1, 8) {
                let id: String = (0..rng.gen_range(2..9))
                    .map(|_| rng.gen_range(b'a'..=b'z') as char)
                    .collect();
                out.extend_from_slice(id.as_bytes());
            }
        }
        out.truncate(len);
        out
    }

    /// Incompressible bytes.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0; len];
        StdRng::seed_from_u64(seed).fill_bytes(&mut out);
        out
    }

    /// `data` cut into chunks of the sizes `size` hands out.
    fn cut(data: &[u8], mut size: impl FnMut() -> usize) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let n = size().clamp(1, data.len() - at);
            chunks.push(Bytes::copy_from_slice(&data[at..at + n]));
            at += n;
        }
        chunks
    }

    /// An upstream body of `chunks` (then `trailers`); counts the bytes handed to the encoder.
    fn upstream(
        chunks: Vec<Bytes>,
        trailers: Option<HeaderMap>,
        handed: Arc<AtomicUsize>,
    ) -> impl Body<Data = Bytes, Error = BoxError> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(c)))
            .chain(trailers.map(|t| Ok(Frame::trailers(t))));
        StreamBody::new(futures_util::stream::iter(frames).inspect(move |f| {
            if let Ok(f) = f {
                handed.fetch_add(f.data_ref().map_or(0, |d| d.len()), Ordering::Relaxed);
            }
        }))
    }

    /// Inflates raw deflate `input` as far as it goes; once the final block is in, returns how
    /// many bytes follow it.
    fn inflate(d: &mut Decompress, mut input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        loop {
            out.reserve(64 * 1024);
            let before = d.total_in();
            let status = d
                .decompress_vec(input, out, FlushDecompress::Sync)
                .expect("valid deflate");
            input = &input[(d.total_in() - before) as usize..];
            if status == Status::StreamEnd {
                return Some(input.len());
            }
            if input.is_empty() && out.len() < out.capacity() {
                return None;
            }
        }
    }

    /// Runs `chunks` through `Compressed` and checks, frame by frame, that everything sent so
    /// far inflates to the input so far: each frame is flushed, none holds more than a piece,
    /// and every upstream chunk is out before the next one is asked for. Also that the stream
    /// never keeps more than its window. Returns the whole gzip member and the trailers.
    async fn compress_checked(
        chunks: Vec<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> (Vec<u8>, Option<HeaderMap>) {
        let input: Vec<u8> = chunks.concat();
        let handed = Arc::new(AtomicUsize::new(0));
        let mut body = Compressed::new(upstream(chunks, trailers, handed.clone()), Encoding::Gzip);
        let mut all = Vec::new();
        let mut inflater = Decompress::new(false);
        let mut decoded = Vec::new();
        let mut after_final = None;
        let mut got_trailers = None;
        loop {
            let handed_before = handed.load(Ordering::Relaxed);
            let decoded_before = decoded.len();
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = frame.expect("no error");
            assert!(body.retained() <= WINDOW, "{} retained", body.retained());
            let frame = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    got_trailers = Some(frame.into_trailers().expect("trailers"));
                    continue;
                }
            };
            assert!(!frame.is_empty());
            assert!(after_final.is_none(), "data after the final block");
            let mut segment = &frame[..];
            if all.is_empty() {
                assert_eq!(segment[..GZIP_HEADER.len()], GZIP_HEADER);
                segment = &segment[GZIP_HEADER.len()..];
            }
            all.extend_from_slice(&frame);
            after_final = inflate(&mut inflater, segment, &mut decoded);
            assert_eq!(decoded[..], input[..decoded.len()], "decodes to the input");
            // A new upstream chunk is asked for only once the previous ones are all out.
            if handed.load(Ordering::Relaxed) > handed_before {
                assert_eq!(decoded_before, handed_before, "a chunk was held back");
            }
            assert!(decoded.len() - decoded_before <= MAX_PIECE);
            if after_final.is_none() {
                assert!(decoded.len() > decoded_before, "a frame without data");
            }
        }
        assert!(body.is_end_stream());
        assert_eq!(
            after_final,
            Some(8),
            "the final block, then CRC-32 and length"
        );
        assert_eq!(decoded, input);
        (all, got_trailers)
    }

    /// Decodes a single gzip member strictly: flate2's decoder, nothing left after the member.
    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut decoder = flate2::bufread::GzDecoder::new(gz);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).expect("valid gzip");
        assert!(decoder.into_inner().is_empty(), "bytes after the member");
        out
    }

    /// Decodes with Python's zlib (one gzip member, nothing after it) and gzip modules, when a
    /// `python3` is on PATH.
    fn python_gunzip(gz: &[u8]) -> Option<Vec<u8>> {
        const SCRIPT: &str = "import gzip, sys, zlib\n\
            data = sys.stdin.buffer.read()\n\
            d = zlib.decompressobj(wbits=31)\n\
            out = d.decompress(data) + d.flush()\n\
            assert d.eof and not d.unused_data, 'not exactly one gzip member'\n\
            assert gzip.decompress(data) == out\n\
            sys.stdout.buffer.write(out)\n";
        let mut child = match std::process::Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("no python3 ({e}): skipping Python's gzip check");
                return None;
            }
        };
        let mut stdin = child.stdin.take().expect("stdin");
        let input = gz.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().expect("python3 ran");
        writer.join().expect("writer").expect("wrote to python3");
        assert!(
            output.status.success(),
            "Python cannot decode: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(output.stdout)
    }

    /// Compresses `chunks` with every check, and decodes the result with both decoders.
    async fn round_trip(chunks: Vec<Bytes>) -> Vec<u8> {
        let input = chunks.concat();
        let (gz, _) = compress_checked(chunks, None).await;
        assert_eq!(gunzip(&gz), input);
        if let Some(decoded) = python_gunzip(&gz) {
            assert_eq!(decoded, input);
        }
        gz
    }

    #[tokio::test]
    async fn one_byte_chunks() {
        let data = text(3000, 1);
        round_trip(cut(&data, || 1)).await;
    }

    #[tokio::test]
    async fn large_chunks_go_in_pieces() {
        let mut data = text(1 << 20, 2);
        data.extend(noise(200_000, 3));
        data.extend(text(300_000, 4));
        // One huge chunk, then the piece size exactly, one over, and one over twice it.
        round_trip(vec![Bytes::from(data.clone())]).await;
        let mut sizes = [MAX_PIECE, MAX_PIECE + 1, 2 * MAX_PIECE + 1, 3]
            .into_iter()
            .cycle();
        round_trip(cut(&data, || sizes.next().unwrap_or(1))).await;
    }

    #[tokio::test]
    async fn random_chunkings() {
        for seed in 0..4 {
            let mut rng = StdRng::seed_from_u64(seed);
            let data = if seed == 0 {
                // Many small chunks: unoptimized zlib-rs is slow.
                text(50_000, seed)
            } else if seed == 2 {
                text(600_000, seed)
            } else {
                // Text and noise mixed.
                let mut d = text(200_000, seed);
                d.extend(noise(50_000, seed));
                d.extend(text(200_000, seed + 10));
                d
            };
            let max = [100, 4096, 40_000, 200_000][seed as usize];
            round_trip(cut(&data, || rng.gen_range(1..=max))).await;
        }
    }

    #[tokio::test]
    async fn every_level_round_trips() {
        let mut data = text(150_000, 11);
        data.extend(noise(20_000, 11));
        data.extend(text(50_000, 12));
        for level in 1..=9 {
            let mut rng = StdRng::seed_from_u64(level.into());
            let chunks = cut(&data, || rng.gen_range(1..=40_000));
            let handed = Arc::new(AtomicUsize::new(0));
            let gz = Compressed::with_level(upstream(chunks, None, handed), level)
                .collect()
                .await
                .expect("no error")
                .to_bytes();
            assert_eq!(gunzip(&gz), data, "level {level}");
        }
    }

    #[tokio::test]
    async fn incompressible_data() {
        let data = noise(300_000, 5);
        let mut rng = StdRng::seed_from_u64(5);
        let gz = round_trip(cut(&data, || rng.gen_range(1..100_000))).await;
        // Stored blocks: a few bytes per block, flush and piece over the input.
        assert!(
            gz.len() < data.len() + data.len() / 100 + 64,
            "{}",
            gz.len()
        );
    }

    #[tokio::test]
    async fn empty_bodies() {
        let gz = round_trip(Vec::new()).await;
        assert_eq!(gz.len(), GZIP_HEADER.len() + FINAL_BLOCK.len() + 8);
        // Empty data frames are skipped, not flushed.
        let handed = Arc::new(AtomicUsize::new(0));
        let chunks = vec![Bytes::new(), Bytes::new()];
        let body = Compressed::new(upstream(chunks, None, handed), Encoding::Gzip);
        let out = body.collect().await.expect("no error").to_bytes();
        assert_eq!(out, gz);
    }

    #[tokio::test]
    async fn trailers_follow_the_member() {
        let data = text(100_000, 6);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let (gz, got) = compress_checked(cut(&data, || 30_000), Some(trailers.clone())).await;
        assert_eq!(got, Some(trailers));
        assert_eq!(gunzip(&gz), data);
        // Trailers with no data before them.
        let (gz, got) = compress_checked(Vec::new(), Some(HeaderMap::new())).await;
        assert_eq!(got, Some(HeaderMap::new()));
        assert_eq!(gunzip(&gz), b"");
    }

    #[tokio::test]
    async fn an_upstream_error_is_passed_on() {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from(text(5000, 7)))),
            Err("upstream reset".into()),
        ];
        let mut body = Compressed::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            Encoding::Gzip,
        );
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.is_data());
        let err = body.frame().await.expect("a frame").expect_err("the error");
        assert_eq!(err.to_string(), "upstream reset");
    }

    fn spare_level() -> Option<u32> {
        SPARE.with(|s| s.borrow().as_ref().map(|d| d.level))
    }

    #[tokio::test]
    async fn the_compressor_is_never_held_by_a_stream() {
        let data = text(500_000, 8);
        let handed = Arc::new(AtomicUsize::new(0));
        let mut body = Compressed::new(
            upstream(cut(&data, || 50_000), None, handed.clone()),
            Encoding::Gzip,
        );
        body.frame().await.expect("a frame").expect("data");
        // Mid-stream, the thread's compressor is back in its slot, reset.
        assert_eq!(spare_level(), Some(GZIP_LEVEL));
        // A second stream on the same thread, interleaved with the first.
        let mut other = Compressed::new(
            upstream(cut(&data, || 70_000), None, Arc::new(AtomicUsize::new(0))),
            Encoding::Gzip,
        );
        let mut out = Vec::new();
        out.extend_from_slice(
            &other
                .frame()
                .await
                .expect("a frame")
                .expect("data")
                .into_data()
                .expect("data"),
        );
        body.frame().await.expect("a frame").expect("data");
        // The first stream dropped mid-way: nothing to give back, nothing lost.
        drop(body);
        assert_eq!(spare_level(), Some(GZIP_LEVEL));
        while let Some(frame) = other.frame().await {
            out.extend_from_slice(&frame.expect("data").into_data().expect("data"));
        }
        assert_eq!(gunzip(&out), data);
        assert_eq!(spare_level(), Some(GZIP_LEVEL));
        // Another level replaces the spare; the gateway's level then makes its own again.
        let gz = Compressed::with_level(
            upstream(cut(&data, || 100_000), None, Arc::new(AtomicUsize::new(0))),
            1,
        )
        .collect()
        .await
        .expect("no error")
        .to_bytes();
        assert_eq!(gunzip(&gz), data);
        assert_eq!(spare_level(), Some(1));
    }

    #[tokio::test]
    async fn a_stream_keeps_at_most_its_window() {
        // The W10 target: at most 256 KiB per stream between chunks. What a stream owns is the
        // struct and its window; the upstream's pending chunk is the upstream's.
        let data = text(1 << 20, 9);
        let handed = Arc::new(AtomicUsize::new(0));
        let mut body = Compressed::new(
            upstream(cut(&data, || 64 * 1024), None, handed),
            Encoding::Gzip,
        );
        let mut most = 0;
        while let Some(frame) = body.frame().await {
            frame.expect("no error");
            most = most.max(body.retained());
        }
        assert_eq!(most, WINDOW);
        assert!(std::mem::size_of_val(&body) + most <= 256 * 1024);
        // A small answer keeps no more than it read.
        let handed = Arc::new(AtomicUsize::new(0));
        let mut body = Compressed::new(
            upstream(vec![Bytes::from(text(3000, 9))], None, handed),
            Encoding::Gzip,
        );
        body.frame().await.expect("a frame").expect("data");
        assert!(body.retained() <= 3000, "{}", body.retained());
    }

    #[tokio::test]
    async fn the_window_carries_matches_across_chunks() {
        // Small chunks compress about as well as the whole at once at gzip -9: each chunk is
        // primed with the stream's last 32 KiB.
        let data = text(400_000, 10);
        let (gz, _) = compress_checked(cut(&data, || 8 * 1024), None).await;
        let mut whole = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
        whole.write_all(&data).expect("in memory");
        let whole = whole.finish().expect("in memory");
        let ratio = gz.len() as f64 / whole.len() as f64;
        assert!(
            ratio < 1.1,
            "{} bytes vs {} for gzip -9 ({ratio:.3})",
            gz.len(),
            whole.len()
        );
    }
}
