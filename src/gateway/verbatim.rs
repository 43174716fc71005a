//! An upstream answer's fields passed on as they came.
//!
//! Most answers need nothing of the gateway's header rules: no transfer coding, one plain length,
//! at most `Connection: keep-alive` and `Keep-Alive` to drop, no event stream, no request id of
//! the app's own. When the answer goes to the gateway's own HTTP/1.1 codec ([`super::express`]),
//! [`super::wire`] keeps such fields where they lie in the upstream's head ([`Verbatim`], carried
//! beside the response: in the upstream's body until the answer is shaped, then handed to the
//! codec with the answer) instead of building a `HeaderMap` that would only be written out again,
//! and the codec writes them to the client straight from there, with the gateway's request id.
//! An answer that is to be compressed is first [`settle`]d into the header map, to the same
//! result the map would have had. Answers that hyper's server writes (HTTP/2, a connection hyper
//! took over) are never kept.
//!
//! The rules stay in one place: an answer that any of them would change is never kept verbatim
//! ([`Verbatim::scan`] refuses it and the map is built as before). The map keeps whatever else
//! the gateway adds (a login's cookie); those come after the upstream's fields.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use super::headers::{self, X_REQUEST_ID};
use super::wire::{self, digits, Span};

/// The most fields an answer kept verbatim may have; one with more gets a map.
const MOST: usize = 24;

/// The fields of an upstream's answer that go on to the client unchanged, as spans of its head.
/// Hop-by-hop `Connection: keep-alive` / `Keep-Alive` are already left out.
#[derive(Clone)]
pub struct Verbatim {
    head: Bytes,
    fields: [Span; MOST],
    count: usize,
    /// The answer's `Content-Length`, one plain number.
    pub length: Option<u64>,
    /// The upstream asked to close its connection after this answer.
    pub close: bool,
    /// There is a `Date` field among them.
    pub dated: bool,
    /// The gateway's request id for the answer, written after the fields: an answer kept
    /// verbatim needs no header map for it.
    pub request_id: Option<HeaderValue>,
}

/// What a field's name means to the scan.
enum Kind {
    /// Passed on unchanged.
    Plain,
    /// `Connection`: dropped, if it only says keep-alive or close.
    Connection,
    /// `Keep-Alive`: dropped.
    KeepAlive,
    ContentLength,
    ContentType,
    Date,
    /// A field some header rule would change: the answer gets a map.
    Ruled,
}

/// One comparison of lengths rules out most names before any bytes are compared. The other
/// hop-by-hop names are those the header rules remove ([`headers::is_hop_by_hop`]).
fn kind(name: &[u8]) -> Kind {
    let is = |text: &str| name.eq_ignore_ascii_case(text.as_bytes());
    match name.len() {
        4 if is("date") => Kind::Date,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::KeepAlive,
        12 if is("content-type") => Kind::ContentType,
        // The gateway gives every answer its own request id.
        12 if is("x-request-id") => Kind::Ruled,
        14 if is("content-length") => Kind::ContentLength,
        _ if headers::is_hop_by_hop(name) => Kind::Ruled,
        _ => Kind::Plain,
    }
}

impl Verbatim {
    /// The fields of a head (spans parsed from `head`, so names and values are valid), if the
    /// gateway's header rules leave all of them as they are. Boxed from the start: built on the
    /// stack, it would be copied into its box.
    pub(super) fn scan(
        head: &Bytes,
        spans: &[Span],
        status: StatusCode,
        version: Version,
    ) -> Option<Box<Verbatim>> {
        // HTTP/1.0 answers and those without a body by status have rules of their own.
        if version != Version::HTTP_11
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || spans.len() > MOST
        {
            return None;
        }
        let mut kept = Box::new(Verbatim {
            head: head.clone(),
            fields: [Span::default(); MOST],
            count: 0,
            length: None,
            close: false,
            dated: false,
            request_id: None,
        });
        for span in spans {
            let value = &head[span.value_range()];
            match kind(span.name_in(head)) {
                Kind::Plain => {}
                Kind::Connection => {
                    for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                        if token.eq_ignore_ascii_case(b"close") {
                            kept.close = true;
                        } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                            // It names fields that must go too.
                            return None;
                        }
                    }
                    continue;
                }
                Kind::KeepAlive => continue,
                Kind::ContentLength => {
                    // A second length, or a list, is rewritten by the rules.
                    if kept.length.is_some() {
                        return None;
                    }
                    kept.length = Some(digits(value)?);
                }
                // An event stream is passed on as one (and marked for proxies in front).
                Kind::ContentType if super::forward::is_event_stream_type(value) => return None,
                Kind::ContentType => {}
                Kind::Date => kept.dated = true,
                Kind::Ruled => return None,
            }
            kept.fields[kept.count] = *span;
            kept.count += 1;
        }
        Some(kept)
    }

    /// The fields kept, as (name, value).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields[..self.count]
            .iter()
            .map(|f| (f.name_in(&self.head), &self.head[f.value_range()]))
    }

    /// Appends the fields as `name: value` lines, the request id last.
    pub fn write(&self, out: &mut Vec<u8>) {
        for (name, value) in self.fields() {
            wire::field_line(name, value, out);
        }
        if let Some(id) = &self.request_id {
            wire::header_line(&X_REQUEST_ID, id, out);
        }
    }

    /// The fields as a header map, followed by those of `after`.
    fn into_map(self, after: HeaderMap) -> HeaderMap {
        let spans = self.fields[..self.count].iter().copied();
        // Names and values were checked by the parser against the rules `http` has.
        let mut map = match wire::header_map(&self.head, spans, after.len() + 1) {
            Ok(map) => map,
            Err(e) => {
                tracing::warn!(error = %e, "an answer's kept fields do not make a header map; only the gateway's own are left");
                HeaderMap::with_capacity(after.len())
            }
        };
        if let Some(id) = self.request_id {
            map.insert(X_REQUEST_ID, id);
        }
        let mut last: Option<HeaderName> = None;
        for (name, value) in after {
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                map.append(name.clone(), value);
            }
        }
        map
    }
}

/// Moves fields kept verbatim into the header map (before what the map holds): for an answer
/// that is to be compressed.
pub fn settle(headers: &mut HeaderMap, kept: Box<Verbatim>) {
    *headers = kept.into_map(std::mem::take(headers));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use http::header::HeaderValue;
    use http::Method;

    /// Parses `text` as an upstream's answer and returns its parts as the client would get
    /// them: settled, and through the header rules.
    fn parsed(text: &str) -> (http::response::Parts, bool) {
        let mut buf = BytesMut::from(text);
        let mut head = crate::gateway::wire::parse_response(&mut buf, &Method::GET, true)
            .expect("valid")
            .expect("complete");
        let kept = head.kept.is_some();
        if let Some(fields) = head.kept {
            settle(&mut head.parts.headers, fields);
        }
        headers::remove_hop_by_hop(&mut head.parts.headers);
        headers::single_length(&mut head.parts.headers);
        (head.parts, kept)
    }

    #[test]
    fn a_plain_answer_is_kept_without_its_hop_by_hop_fields() {
        let (parts, kept) = parsed(
            "HTTP/1.1 200 OK\r\nServer: app\r\nConnection: keep-alive\r\nContent-Type: text/html\r\n\
             Keep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 5\r\n\r\n",
        );
        assert!(kept);
        let names: Vec<_> = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("server", "app"),
                ("content-type", "text/html"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("content-length", "5"),
            ]
        );
    }

    #[test]
    fn answers_a_rule_would_change_get_a_map() {
        for text in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream ; charset=utf-8\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-Request-ID: app\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTrailer: x\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTE: trailers\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        ] {
            let (_, kept) = parsed(text);
            assert!(!kept, "{text:?} was kept verbatim");
        }
        let many: String = (0..=MOST).map(|i| format!("X-{i}: v\r\n")).collect();
        let (parts, kept) = parsed(&format!(
            "HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n"
        ));
        assert!(!kept);
        assert_eq!(parts.headers.len(), MOST + 2);
    }

    #[test]
    fn kept_fields_settle_to_the_map_the_rules_would_have_made() {
        // The same answers, once kept and once with a field that makes them go through the
        // map (a request id of the app's, removed afterwards): the maps must agree.
        for fields in [
            "Server: app\r\nConnection: keep-alive\r\nContent-Length: 5\r\n",
            "Server: app\r\nConnection: Keep-Alive, close\r\nKeep-Alive: timeout=5, max=100\r\n",
            "Date: Mon, 30 Nov 2026 10:00:00 GMT\r\nContent-Type: text/plain\r\nVary: a\r\nvary: b\r\n",
            "Content-Type: text/event-streamer\r\nX-Empty: \r\nConnection: ,\r\nX-Odd: a\tz\r\n",
        ] {
            let (verbatim, kept) = parsed(&format!("HTTP/1.1 200 OK\r\n{fields}\r\n"));
            assert!(kept, "{fields:?} was not kept");
            let (mut map, kept) =
                parsed(&format!("HTTP/1.1 200 OK\r\n{fields}X-Request-Id: a\r\n\r\n"));
            assert!(!kept);
            map.headers.remove("x-request-id");
            assert_eq!(verbatim.headers, map.headers, "{fields:?}");
        }
    }

    #[test]
    fn a_kept_answer_tells_its_length_date_and_close() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 200 OK\r\nDate: x\r\nConnection: close\r\nContent-Length: 12\r\n\r\nbody",
        );
        let mut head = crate::gateway::wire::parse_response(&mut buf, &Method::GET, true)
            .unwrap()
            .unwrap();
        let mut kept = head.kept.take().unwrap();
        assert_eq!(
            (kept.length, kept.dated, kept.close),
            (Some(12), true, true)
        );
        assert!(!head.keep_alive);
        assert_eq!(&buf[..], b"body");
        let mut out = Vec::new();
        kept.write(&mut out);
        assert_eq!(out, b"Date: x\r\nContent-Length: 12\r\n");
        // The gateway's request id is written after the app's fields, and settles with them.
        kept.request_id = Some(HeaderValue::from_static("7"));
        out.clear();
        kept.write(&mut out);
        assert_eq!(out, b"Date: x\r\nContent-Length: 12\r\nx-request-id: 7\r\n");
        settle(&mut head.parts.headers, kept);
        let names: Vec<_> = head.parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["date", "content-length", "x-request-id"]);
        assert_eq!(head.parts.headers["x-request-id"], "7");
    }

    #[test]
    fn settling_puts_the_upstreams_fields_before_the_gateways() {
        let mut buf =
            BytesMut::from("HTTP/1.1 200 OK\r\nSet-Cookie: app=1\r\nContent-Length: 0\r\n\r\n");
        let mut head = crate::gateway::wire::parse_response(&mut buf, &Method::GET, true)
            .unwrap()
            .unwrap();
        head.parts
            .headers
            .append("set-cookie", HeaderValue::from_static("login=2"));
        head.parts
            .headers
            .append("set-cookie", HeaderValue::from_static("login=3"));
        head.parts
            .headers
            .insert("x-request-id", HeaderValue::from_static("7"));
        settle(&mut head.parts.headers, head.kept.unwrap());
        let cookies: Vec<_> = head.parts.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["app=1", "login=2", "login=3"]);
        assert_eq!(head.parts.headers["x-request-id"], "7");
        assert_eq!(head.parts.headers["content-length"], "0");
    }
}
