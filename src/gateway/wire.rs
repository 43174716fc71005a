//! A lean HTTP/1.1 codec for the requests that need nothing more: heads parsed with `httparse`
//! straight into `http` types (an answer no header rule changes keeps its fields where they lie,
//! [`super::verbatim`]), heads written into one buffer, bodies framed by length or chunks.
//!
//! The gateway's hot path is body-less requests (pages, assets, API polls, event streams). hyper
//! serves them correctly but spends more on its general machinery (a task and a channel per
//! upstream connection, a dispatcher per side) than the proxying itself costs. This codec carries
//! exactly those requests ([`super::pool`] toward the upstreams, [`super::express`] toward the
//! clients); every request with a body or an upgrade still goes through hyper.
//!
//! It is strict where a proxy must be: a response's framing follows RFC 9112 §6.3 (a HEAD, 1xx,
//! 204 or 304 has no body; `Transfer-Encoding` beats `Content-Length`; differing lengths are an
//! error), and chunk sizes, line ends and head sizes are checked before anything is handed on.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::headers::has_token;
use super::rewrite::Rewrite;
use super::verbatim::Verbatim;

/// The most header lines a head may have (hyper's limit too).
pub const MAX_HEADERS: usize = 100;

/// The largest head accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// The longest chunk-size line or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// A message that breaks the protocol.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed message head: {0}")]
    Head(&'static str),
    #[error("message head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
    #[error("connection closed before the body ended")]
    Truncated,
}

/// How a body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the connection closes.
    Close,
}

/// An upstream's response head.
pub struct ResponseHead {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    /// The answer's fields, kept where they lie when no header rule changes them; the header
    /// map is then empty.
    pub kept: Option<Box<Verbatim>>,
}

/// Parses a response head at the start of `buf`, removing it from `buf` when complete.
/// Informational answers (`100 Continue`, `103 Early Hints`) are skipped; a `101` is returned
/// as it is. `Ok(None)`: the head is not complete yet. `keep_fields`: an answer no header rule
/// changes keeps its fields where they lie ([`ResponseHead::kept`]; the header map is left for
/// what the gateway adds).
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    keep_fields: bool,
) -> Result<Option<ResponseHead>, WireError> {
    loop {
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(WireError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(WireError::Head("too many headers"))
            }
            Err(_) => return Err(WireError::Head("not an HTTP/1.x response")),
        };
        let code = resp.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| WireError::Head("invalid status code"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        let version = match resp.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let (mut few, mut many) = ([Span::default(); FEW], Vec::new());
        let spans =
            spans_of(buf, resp.headers, &mut few, &mut many).ok_or(WireError::HeadTooLarge)?;
        let head = buf.split_to(len).freeze();
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        let kept = keep_fields
            .then(|| Verbatim::scan(&head, spans, status, version))
            .flatten();
        if let Some(kept) = kept {
            let framing = match kept.length {
                _ if *method == Method::HEAD => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            };
            let keep_alive = !kept.close && framing != Framing::Close;
            // The map stays empty (unallocated) unless the gateway adds a field, a login's
            // cookie: the request id goes with the kept fields.
            return Ok(Some(ResponseHead {
                parts,
                framing,
                keep_alive,
                kept: Some(kept),
            }));
        }
        // The gateway adds a request id to an answer.
        let headers = header_map(&head, spans.iter().copied(), 1)?;

        let connection = http::header::CONNECTION;
        let mut keep_alive = !has_token(&headers, &connection, "close")
            && (version == Version::HTTP_11 || has_token(&headers, &connection, "keep-alive"));
        let framing = if *method == Method::HEAD
            || status == StatusCode::SWITCHING_PROTOCOLS
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if headers.contains_key(http::header::TRANSFER_ENCODING) {
            if version != Version::HTTP_11 {
                // HTTP/1.0 has no transfer codings: the framing is faulty (RFC 9112 §6.1).
                // Read to the close, the body would reach the client still chunked.
                return Err(WireError::Head("Transfer-Encoding in an HTTP/1.0 response"));
            }
            // A length beside a transfer coding is ignored, but such a message is suspect:
            // the connection is not used again.
            if headers.contains_key(http::header::CONTENT_LENGTH) {
                keep_alive = false;
            }
            if ends_chunked(&headers) {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else if headers.contains_key(http::header::CONTENT_LENGTH) {
            Framing::Length(
                content_length(&headers).ok_or(WireError::Head("invalid Content-Length"))?,
            )
        } else {
            Framing::Close
        };
        if framing == Framing::Close {
            keep_alive = false;
        }
        parts.headers = headers;
        return Ok(Some(ResponseHead {
            parts,
            framing,
            keep_alive,
            kept: None,
        }));
    }
}

/// What the start of a client's buffer holds.
#[allow(clippy::large_enum_variant)] // returned once per request, never stored: no box
pub enum ClientHead {
    /// Not a whole head yet.
    Partial,
    /// A body-less HTTP/1.1 request this codec serves. `close`: the client asked for the
    /// connection to end after it.
    Plain {
        parts: http::request::Parts,
        close: bool,
    },
    /// Anything else (a body, an upgrade, `Expect`, HTTP/1.0 or 2, a malformed or oversized
    /// head): hyper serves it, from the first byte of the buffer.
    Other,
}

/// Parses the request head at the start of `buf`, removing it from `buf` if it is
/// [`ClientHead::Plain`].
pub fn parse_request(buf: &mut BytesMut) -> ClientHead {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return ClientHead::Partial,
        _ => return ClientHead::Other,
    };
    if req.version != Some(1) {
        return ClientHead::Other;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return ClientHead::Other;
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return ClientHead::Other;
    }
    let mut hosts = 0;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // An empty body announced as such is still no body.
            if h.value != b"0" {
                return ClientHead::Other;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return ClientHead::Other;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    if hosts != 1 {
        return ClientHead::Other;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return ClientHead::Other;
    };
    let target_at = target.as_ptr() as usize - buf.as_ptr() as usize;
    let target_len = target.len();
    let (mut few, mut many) = ([Span::default(); FEW], Vec::new());
    let Some(spans) = spans_of(buf, req.headers, &mut few, &mut many) else {
        return ClientHead::Other;
    };
    let head = buf.split_to(len).freeze();
    let uri = http::Uri::from_maybe_shared(head.slice(target_at..target_at + target_len));
    // No room for more: the gateway's own fields are written beside the map (`Rewrite`).
    let (Ok(uri), Ok(headers)) = (uri, header_map(&head, spans.iter().copied(), 0)) else {
        // Put the head back: hyper answers it.
        let mut back = BytesMut::from(&head[..]);
        back.extend_from_slice(buf);
        *buf = back;
        return ClientHead::Other;
    };
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    ClientHead::Plain { parts, close }
}

/// Where a header's name and value lie in the buffer it was parsed from (offsets: heads are
/// far smaller than 4 GiB, [`spans_of`] makes sure).
#[derive(Clone, Copy, Default)]
pub(super) struct Span {
    pub name: (u32, u32),
    pub value: (u32, u32),
}

impl Span {
    /// The field's name in the head it was parsed from.
    pub fn name_in<'a>(&self, head: &'a [u8]) -> &'a [u8] {
        &head[self.name.0 as usize..self.name.1 as usize]
    }

    /// Where the field's value lies in that head (a range, so that a value can share the
    /// head's memory: `Bytes::slice`).
    pub fn value_range(&self) -> std::ops::Range<usize> {
        self.value.0 as usize..self.value.1 as usize
    }
}

/// Headers most messages stay within.
const FEW: usize = 24;

/// The spans of `headers`, parsed from `buf`: in `few` for the usual few headers, else in
/// `many`. Filled where they lie: an array returned would be copied on its way (twice). `None`
/// for a buffer too large for the offsets.
fn spans_of<'s>(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
    few: &'s mut [Span; FEW],
    many: &'s mut Vec<Span>,
) -> Option<&'s [Span]> {
    if buf.len() > u32::MAX as usize {
        return None;
    }
    let base = buf.as_ptr() as usize;
    // Within `buf`, so below u32::MAX.
    let at = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
    let span = |h: &httparse::Header<'_>| {
        let (name, value) = (at(h.name.as_bytes()), at(h.value));
        Span {
            name: (name, name + h.name.len() as u32),
            value: (value, value + h.value.len() as u32),
        }
    };
    if headers.len() > FEW {
        many.extend(headers.iter().map(span));
        return Some(many);
    }
    for (h, slot) in headers.iter().zip(few.iter_mut()) {
        *slot = span(h);
    }
    Some(&few[..headers.len()])
}

/// The header map of a head, its values sharing the head's memory.
/// `room`: headers the gateway will add, so that the map need not grow for them.
pub(super) fn header_map(
    head: &Bytes,
    spans: impl ExactSizeIterator<Item = Span>,
    room: usize,
) -> Result<HeaderMap, WireError> {
    let mut headers = HeaderMap::with_capacity(spans.len() + room);
    for span in spans {
        let name =
            header_name(span.name_in(head)).map_err(|_| WireError::Head("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(span.value_range()))
            .map_err(|_| WireError::Head("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Names that browsers and proxies send often and `http` does not know. `HeaderName::from_bytes`
/// copies such a name into an allocation of its own; taken from here it costs none. Each starts
/// with one of the letters [`may_be_common`] looks for.
static COMMON_NAMES: [(&str, HeaderName); 16] = [
    common("sec-fetch-dest"),
    common("sec-fetch-mode"),
    common("sec-fetch-site"),
    common("sec-fetch-user"),
    common("sec-ch-ua"),
    common("sec-ch-ua-mobile"),
    common("sec-ch-ua-platform"),
    common("priority"),
    common("x-requested-with"),
    common("x-forwarded-for"),
    common("x-forwarded-proto"),
    common("x-forwarded-host"),
    common("x-real-ip"),
    common("x-request-id"),
    common("keep-alive"),
    common("x-accel-buffering"),
];

const fn common(name: &'static str) -> (&'static str, HeaderName) {
    (name, HeaderName::from_static(name))
}

/// Whether a name's first letter is one that names in [`COMMON_NAMES`] start with (most standard
/// names are ruled out here at the cost of one comparison).
fn may_be_common(bytes: &[u8]) -> bool {
    matches!(
        bytes.first().map(u8::to_ascii_lowercase),
        Some(b's' | b'x' | b'p' | b'k')
    )
}

/// A header name as `HeaderName::from_bytes` makes it, without its allocation for the common
/// names it does not know.
fn header_name(bytes: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    if may_be_common(bytes) {
        let common = COMMON_NAMES.iter().find(|(text, _)| {
            text.len() == bytes.len() && text.as_bytes().eq_ignore_ascii_case(bytes)
        });
        if let Some((_, name)) = common {
            return Ok(name.clone());
        }
    }
    HeaderName::from_bytes(bytes)
}

/// Whether the last transfer coding is `chunked`.
fn ends_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The one length all `Content-Length` values agree on; `None` if any is not a number or two
/// differ.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let n = digits(part.trim_ascii())?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

pub(super) fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then_some(())
            .and_then(|()| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
    })
}

/// Appends a request head (origin-form target, HTTP/1.1, the fields as `plan` rewrites them)
/// to `out`.
pub fn encode_request(parts: &http::request::Parts, plan: &Rewrite, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    plan.write(&parts.headers, out);
    out.extend_from_slice(b"\r\n");
}

/// Appends a `name: value` line.
pub(super) fn header_line(name: &HeaderName, value: &HeaderValue, out: &mut Vec<u8>) {
    field_line(name.as_str().as_bytes(), value.as_bytes(), out);
}

/// Appends a `name: value` line from a field's bytes.
#[inline]
pub(super) fn field_line(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a response to a client is framed, decided from its head and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// No body is written (HEAD, 1xx, 204, 304).
    Bodiless,
    /// The head carries this length.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Appends a response head to `out`: the status line, the fields kept verbatim, the headers
/// (framing headers replaced by `framing`'s), a `Date` if there is none, and `Connection: close`
/// when the connection ends after it. A length from the headers wins over `known_length`, as
/// hyper does it.
pub fn encode_response(
    parts: &http::response::Parts,
    kept: Option<&Verbatim>,
    request_method: &Method,
    known_length: Option<u64>,
    close: bool,
    out: &mut Vec<u8>,
) -> Outgoing {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // Kept fields hold no framing but one valid length, and never come without a body by status.
    let stated = match kept {
        Some(kept) => {
            kept.write(out);
            kept.length
        }
        None => content_length(&parts.headers),
    };
    for (name, value) in &parts.headers {
        if name == http::header::TRANSFER_ENCODING
            || (name == http::header::CONTENT_LENGTH && (stated.is_none() || no_body))
            || name == http::header::CONNECTION
        {
            continue;
        }
        header_line(name, value, out);
    }
    let framing = if no_body {
        Outgoing::Bodiless
    } else if let Some(n) = stated {
        Outgoing::Length(n)
    } else if let Some(n) = known_length.filter(|_| *request_method != Method::HEAD) {
        // (A HEAD answer's empty body says nothing about the length of the resource.)
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa(n, &mut [0u8; 20]));
        out.extend_from_slice(b"\r\n");
        Outgoing::Length(n)
    } else if *request_method == Method::HEAD {
        Outgoing::Bodiless
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Outgoing::Chunked
    };
    if !kept.is_some_and(|kept| kept.dated) && !parts.headers.contains_key(http::header::DATE) {
        out.extend_from_slice(b"date: ");
        DATE.with_borrow_mut(|date| out.extend_from_slice(date.now()));
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if *request_method == Method::HEAD {
        Outgoing::Bodiless
    } else {
        framing
    }
}

/// Decimal digits of `n`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Appends a chunk-size line for `len` bytes.
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The `Date` header's text, formatted once a second per thread.
struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    fn now(&mut self) -> &[u8] {
        let now = std::time::SystemTime::now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

thread_local! {
    static DATE: std::cell::RefCell<DateCache> = const {
        std::cell::RefCell::new(DateCache { second: 0, text: String::new() })
    };
}

/// What a body decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no more of the body; read more (or, for [`Framing::Close`], end at EOF).
    More,
    /// The body is complete; what is left in the buffer is not part of it.
    End,
}

/// Takes a body apart as it arrives.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    Close,
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers(usize),
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Decoder { state }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn is_chunked(&self) -> bool {
        matches!(
            self.state,
            State::ChunkSize | State::ChunkData(_) | State::ChunkEnd | State::Trailers(_)
        )
    }

    /// Body bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body from `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Length(_) | State::ChunkData(_) if buf.is_empty() => return Ok(Step::More),
                State::Length(n) => {
                    let take = take_up_to(buf, n);
                    let left = n - take.len() as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(Step::Data(take));
                }
                State::Close if buf.is_empty() => return Ok(Step::More),
                State::Close => return Ok(Step::Data(buf.split().freeze())),
                State::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(n) => {
                    let take = take_up_to(buf, n);
                    let left = n - take.len() as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Ok(Step::Data(take));
                }
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS - seen)? else {
                        return Ok(Step::More);
                    };
                    // Trailer fields are dropped: nothing the gateway forwards uses them.
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(seen + line.len() + 2)
                    };
                }
            }
        }
    }
}

fn take_up_to(buf: &mut BytesMut, n: u64) -> Bytes {
    let take = usize::try_from(n).map_or(buf.len(), |n| n.min(buf.len()));
    buf.split_to(take).freeze()
}

/// One CRLF-terminated line (without its CRLF), if complete.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, WireError> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) => {
            if end == 0 || buf[end - 1] != b'\r' {
                return Err(WireError::Chunk("line not ended by CRLF"));
            }
            if end + 1 > limit {
                return Err(WireError::Chunk("line too long"));
            }
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        None if buf.len() >= limit => Err(WireError::Chunk("line too long")),
        None => Ok(None),
    }
}

/// `chunk-size [ BWS ";" chunk-ext ]`
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let hex_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if hex_len == 0 {
        return Err(WireError::Chunk("no chunk size"));
    }
    if hex_len > 16 {
        return Err(WireError::Chunk("chunk size too large"));
    }
    let rest = &line[hex_len..];
    let ext = rest.trim_ascii_start();
    if !ext.is_empty() && ext[0] != b';' {
        return Err(WireError::Chunk("invalid chunk size"));
    }
    if rest.iter().any(|b| *b == b'\r' || *b == b'\n' || *b == 0) {
        return Err(WireError::Chunk("control character in a chunk line"));
    }
    let mut size = 0u64;
    for &b in &line[..hex_len] {
        let digit = (b as char).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(WireError::Chunk("chunk size too large"))?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::rewrite::Slot;

    #[test]
    fn common_names_are_the_names_from_bytes_makes() {
        for (known, name) in &COMMON_NAMES {
            assert_eq!(name.as_str(), *known);
            assert!(may_be_common(known.as_bytes()), "{known}");
            let upper = known.to_ascii_uppercase();
            for text in [*known, upper.as_str()] {
                let made = header_name(text.as_bytes()).unwrap();
                assert_eq!(made, HeaderName::from_bytes(text.as_bytes()).unwrap());
                assert_eq!(made.as_str(), *known);
            }
        }
        assert_eq!(
            header_name(b"Content-Type").unwrap(),
            http::header::CONTENT_TYPE
        );
        assert_eq!(header_name(b"X-Custom").unwrap().as_str(), "x-custom");
        assert!(header_name(b"bad name").is_err());
        assert!(header_name(b"").is_err());
    }

    fn parse(text: &str, method: Method) -> Result<Option<ResponseHead>, WireError> {
        parse_response(&mut BytesMut::from(text), &method, true)
    }

    fn decode_all(framing: Framing, input: &[&[u8]]) -> Result<(Vec<u8>, bool), WireError> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            loop {
                match decoder.step(&mut buf)? {
                    Step::Data(d) => body.extend_from_slice(&d),
                    Step::More => break,
                    Step::End => return Ok((body, true)),
                }
            }
        }
        Ok((body, decoder.is_done()))
    }

    #[test]
    fn response_framing_follows_the_rules() {
        let head = |t: &str, m: Method| parse(t, m).unwrap().unwrap();
        let r = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            Method::GET,
        );
        assert_eq!((r.framing, r.keep_alive), (Framing::Length(5), true));
        let r = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD);
        assert_eq!(r.framing, Framing::Empty);
        let r = head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            Method::GET,
        );
        assert_eq!(r.framing, Framing::Empty);
        let r = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Method::GET,
        );
        assert_eq!((r.framing, r.keep_alive), (Framing::Chunked, true));
        let r = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            Method::GET,
        );
        assert_eq!((r.framing, r.keep_alive), (Framing::Chunked, false));
        let r = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::GET,
        );
        assert_eq!((r.framing, r.keep_alive), (Framing::Close, false));
        let r = head("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
        assert_eq!((r.framing, r.keep_alive), (Framing::Close, false));
        let r = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        );
        assert_eq!((r.framing, r.keep_alive), (Framing::Length(0), false));
        let r = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::GET);
        assert!(!r.keep_alive);
        let r = head(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
            Method::GET,
        );
        assert!(r.keep_alive);
        let r = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
            Method::GET,
        );
        assert_eq!(r.framing, Framing::Length(7));
    }

    /// Heads of more fields than the spans' array holds take the other way: every field
    /// arrives, in order, with its value.
    #[test]
    fn heads_of_many_fields_keep_every_field() {
        for n in [FEW - 1, FEW, FEW + 1, 60] {
            let fields: String = (0..n).map(|i| format!("X-F{i}: v{i}\r\n")).collect();
            let check = |headers: &HeaderMap| {
                for i in 0..n {
                    assert_eq!(headers[format!("x-f{i}")], format!("v{i}"), "{n} fields");
                }
            };

            let (head, rest) = client(&format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\nNEXT"));
            let ClientHead::Plain { parts, .. } = head else {
                panic!("{n} fields: not plain");
            };
            assert_eq!(parts.headers.len(), n + 1);
            check(&parts.headers);
            assert_eq!(&rest[..], b"NEXT");

            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{fields}\r\n");
            let head = parse(&text, Method::GET).unwrap().unwrap();
            // Kept where they lie up to 24 fields (these and the length), else in the map.
            let fields: HeaderMap = match &head.kept {
                Some(kept) => kept
                    .fields()
                    .map(|(name, value)| {
                        let name = HeaderName::from_bytes(name).unwrap();
                        (name, HeaderValue::from_bytes(value).unwrap())
                    })
                    .collect(),
                None => head.parts.headers.clone(),
            };
            assert_eq!(head.kept.is_some(), n < 24, "{n} fields");
            assert_eq!(fields.len(), n + 1);
            assert_eq!(fields["content-length"], "2");
            check(&fields);
        }
    }

    #[test]
    fn bad_lengths_and_heads_are_errors() {
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            // HTTP/1.0 has no transfer codings.
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(parse(text, Method::GET).is_err(), "{text:?}");
        }
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
            .unwrap()
            .is_none());
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD + 1));
        assert!(matches!(
            parse(&huge, Method::GET),
            Err(WireError::HeadTooLarge)
        ));
    }

    #[test]
    fn informational_answers_are_skipped_and_the_rest_stays_in_the_buffer() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
             HTTP/1.1 200 OK\r\nX-Thing: v\r\nContent-Length: 2\r\n\r\nhi",
        );
        let r = parse_response(&mut buf, &Method::GET, false)
            .unwrap()
            .unwrap();
        assert_eq!(r.parts.status, StatusCode::OK);
        assert_eq!(r.parts.headers["x-thing"], "v");
        assert!(!r.parts.headers.contains_key("link"));
        assert_eq!(&buf[..], b"hi");
        let mut buf = BytesMut::from("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
        let r = parse_response(&mut buf, &Method::GET, true)
            .unwrap()
            .unwrap();
        assert_eq!(r.parts.status, StatusCode::SWITCHING_PROTOCOLS);
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire: &[u8] = b"5;ext=1\r\nhello\r\n6 ; x\r\n world\r\n0\r\nTrailer: t\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let (body, done) =
                decode_all(Framing::Chunked, &[&wire[..split], &wire[split..]]).unwrap();
            assert!(done, "split at {split}");
            assert_eq!(body, b"hello world", "split at {split}");
        }
        // Byte by byte, and what follows the body stays.
        let mut decoder = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for &b in wire {
            buf.extend_from_slice(&[b]);
            while let Step::Data(d) = decoder.step(&mut buf).unwrap() {
                body.extend_from_slice(&d);
            }
        }
        assert!(decoder.is_done());
        assert_eq!(body, b"hello world");
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn broken_chunks_are_errors() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"-5\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n",
        ] {
            assert!(decode_all(Framing::Chunked, &[wire]).is_err(), "{wire:?}");
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_all(Framing::Chunked, &[&long]).is_err());
    }

    #[test]
    fn length_and_close_bodies() {
        let (body, done) = decode_all(Framing::Length(5), &[b"he", b"lloEXTRA"]).unwrap();
        assert_eq!((body.as_slice(), done), (&b"hello"[..], true));
        let (body, done) = decode_all(Framing::Close, &[b"ab", b"cd"]).unwrap();
        assert_eq!((body.as_slice(), done), (&b"abcd"[..], false));
        assert!(Decoder::new(Framing::Empty).is_done());
        assert!(Decoder::new(Framing::Length(0)).is_done());
    }

    fn client(text: &str) -> (ClientHead, BytesMut) {
        let mut buf = BytesMut::from(text);
        (parse_request(&mut buf), buf)
    }

    #[test]
    fn plain_requests_are_taken_and_the_rest_left_for_hyper() {
        let (head, rest) = client(
            "GET /a?b=c HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\nGET /next",
        );
        let ClientHead::Plain { parts, close } = head else {
            panic!("not plain");
        };
        assert_eq!(
            (parts.method, parts.uri.path(), parts.uri.query()),
            (Method::GET, "/a", Some("b=c"))
        );
        assert_eq!(parts.headers["host"], "x");
        assert!(close);
        assert_eq!(&rest[..], b"GET /next");
        let (head, _) = client("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(head, ClientHead::Plain { close: false, .. }));
        assert!(matches!(
            client("GET /a HTTP/1.1\r\nHo").0,
            ClientHead::Partial
        ));
        for text in [
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\nContent-Length: 5\r\n\r\nhello",
            "GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "GET /a HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET /a HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            "\x16\x03\x01\x02\x00",
        ] {
            let (head, rest) = client(text);
            assert!(matches!(head, ClientHead::Other), "{text:?}");
            assert_eq!(&rest[..], text.as_bytes(), "{text:?} must be left whole");
        }
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD + 1));
        assert!(matches!(client(&huge).0, ClientHead::Other));
    }

    fn response(status: u16, headers: &[(&'static str, &'static str)]) -> http::response::Parts {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn head_text(
        parts: &http::response::Parts,
        method: Method,
        known: Option<u64>,
        close: bool,
    ) -> (String, Outgoing) {
        let mut out = Vec::new();
        let framing = encode_response(parts, None, &method, known, close, &mut out);
        (String::from_utf8(out).unwrap(), framing)
    }

    #[test]
    fn response_heads_carry_one_framing_and_a_date() {
        let p = response(
            200,
            &[
                ("content-type", "text/plain"),
                ("transfer-encoding", "chunked"),
                ("connection", "keep-alive"),
            ],
        );
        let (text, framing) = head_text(&p, Method::GET, Some(5), false);
        assert_eq!(framing, Outgoing::Length(5));
        assert!(
            text.starts_with(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ndate: "
            ),
            "{text}"
        );
        assert!(
            !text.contains("transfer-encoding") && !text.contains("connection"),
            "{text}"
        );
        let (text, framing) = head_text(&p, Method::GET, None, true);
        assert_eq!(framing, Outgoing::Chunked);
        assert!(
            text.contains("transfer-encoding: chunked\r\n")
                && text.ends_with("connection: close\r\n\r\n"),
            "{text}"
        );
        let p = response(200, &[("content-length", "7"), ("date", "yesterday")]);
        let (text, framing) = head_text(&p, Method::GET, None, false);
        assert_eq!(framing, Outgoing::Length(7));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: yesterday\r\n\r\n"
        );
        let (text, framing) = head_text(&p, Method::HEAD, Some(0), false);
        assert_eq!(framing, Outgoing::Bodiless);
        assert!(text.contains("content-length: 7\r\n"), "{text}");
        let p = response(200, &[]);
        let (text, framing) = head_text(&p, Method::HEAD, Some(0), false);
        assert_eq!(framing, Outgoing::Bodiless);
        assert!(
            !text.contains("content-length") && !text.contains("chunked"),
            "{text}"
        );
        let p = response(304, &[("content-length", "7"), ("etag", "\"x\"")]);
        let (text, framing) = head_text(&p, Method::GET, Some(0), false);
        assert_eq!(framing, Outgoing::Bodiless);
        assert!(
            !text.contains("content-length") && text.contains("etag: \"x\""),
            "{text}"
        );
        let p = response(599, &[]);
        let (text, _) = head_text(&p, Method::GET, Some(0), false);
        assert!(
            text.starts_with("HTTP/1.1 599 \r\ncontent-length: 0\r\n"),
            "{text}"
        );
    }

    #[test]
    fn numbers_are_written_in_decimal_and_hex() {
        for n in [0u64, 7, 10, 99, 12345, u64::MAX] {
            assert_eq!(itoa(n, &mut [0u8; 20]), n.to_string().as_bytes());
        }
        for n in [1usize, 15, 16, 255, 65536, 0x1234abcd] {
            let mut out = Vec::new();
            chunk_header(n, &mut out);
            assert_eq!(out, format!("{n:x}\r\n").into_bytes());
        }
    }

    #[test]
    fn request_heads_are_written_in_origin_form() {
        let mut req = http::Request::builder()
            .method(Method::GET)
            .uri("/a/b?c=d")
            .header("host", "box:8000")
            .header("x-forwarded-for", "1.2.3.4")
            .body(())
            .unwrap();
        req.headers_mut()
            .append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        req.headers_mut()
            .append("connection", HeaderValue::from_static("keep-alive"));
        let mut out = Vec::new();
        let parts = req.into_parts().0;
        let mut plan = Rewrite::new(&parts.headers);
        plan.give(Slot::RequestId, HeaderValue::from_static("r1"));
        encode_request(&parts, &plan, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nhost: box:8000\r\nx-forwarded-for: 1.2.3.4\r\n\
             x-forwarded-for: 5.6.7.8\r\nx-request-id: r1\r\n\r\n"
        );
    }
}
