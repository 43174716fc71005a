//! Response compression at the gateway.
//!
//! Forge's own GZip middleware holds server-sent events back until a stream ends, so its route
//! drops `Accept-Encoding`; the gateway then compresses for the browser itself, or remote users
//! download Forge's multi-megabyte UI uncompressed. Every upstream chunk is flushed through the
//! encoder at once (a streamed response must not wait for the encoder's buffer to fill), and
//! `text/event-stream` is never touched.

use std::io::Write;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::BoxError;

/// Below this many bytes compression is not worth its framing.
const MIN_LENGTH: u64 = 256;
/// Brotli at quality 4 compresses about as well as gzip 6 at a fraction of the CPU; a 128 KiB
/// window keeps each stream's encoder to a few hundred KiB instead of brotli's default MiBs.
const BROTLI_QUALITY: u32 = 4;
const BROTLI_LGWIN: u32 = 17;
const GZIP_LEVEL: u32 = 5;

/// The content codings the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
}

impl Encoding {
    fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// Picks the best coding the client accepts (`q=0` refuses), preferring brotli.
pub fn negotiate(accept_encoding: Option<&HeaderValue>) -> Option<Encoding> {
    let value = accept_encoding?.to_str().ok()?;
    let mut gzip = false;
    let mut brotli = false;
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
        if coding.eq_ignore_ascii_case("br") {
            brotli = true;
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = true;
        }
    }
    if brotli {
        Some(Encoding::Brotli)
    } else if gzip {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

/// Whether a response is worth compressing: text-like, not an event stream, not already encoded,
/// not a partial or empty answer, and not asked to stay untransformed.
pub fn compressible(method: &Method, status: StatusCode, headers: &HeaderMap) -> bool {
    if method == Method::HEAD
        || status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
        || headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    let no_transform = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-transform"));
    let too_small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n < MIN_LENGTH);
    let text_like = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(text_like);
    text_like && !no_transform && !too_small
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

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(encoding: Encoding) -> Encoder {
        match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BROTLI_QUALITY,
                BROTLI_LGWIN,
            ))),
        }
    }

    /// Compresses `data` and flushes, returning everything the encoder produced so far.
    fn push(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Brotli(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    fn finish(self) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => e.finish().map(Bytes::from),
            Encoder::Brotli(e) => Ok(Bytes::from(e.into_inner())),
        }
    }
}

pin_project_lite::pin_project! {
    /// A body compressed chunk by chunk as it streams.
    pub struct Compressed<B> {
        #[pin]
        inner: B,
        encoder: Option<Encoder>,
        trailers: Option<HeaderMap>,
    }
}

impl<B> Compressed<B> {
    pub fn new(inner: B, encoding: Encoding) -> Self {
        Compressed {
            inner,
            encoder: Some(Encoder::new(encoding)),
            trailers: None,
        }
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
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = encoder.push(&data)?;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        *this.trailers = frame.into_trailers().ok();
                        return finish(this.encoder);
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => return finish(this.encoder),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn finish(encoder: &mut Option<Encoder>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match encoder.take().map(Encoder::finish) {
        Some(Ok(tail)) => Poll::Ready(Some(Ok(Frame::data(tail)))),
        Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
        None => Poll::Ready(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::io::Read;

    #[test]
    fn negotiation_prefers_brotli_and_honours_q_zero() {
        let n = |s: &'static str| negotiate(Some(&HeaderValue::from_static(s)));
        assert_eq!(n("gzip, deflate, br, zstd"), Some(Encoding::Brotli));
        assert_eq!(n("gzip"), Some(Encoding::Gzip));
        assert_eq!(n("br;q=0, gzip;q=0.5"), Some(Encoding::Gzip));
        assert_eq!(n("gzip;q=0"), None);
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

    fn chunks(parts: Vec<&'static [u8]>) -> impl Body<Data = Bytes, Error = BoxError> {
        StreamBody::new(futures_util::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p)))),
        ))
    }

    #[tokio::test]
    async fn every_chunk_is_flushed_and_the_whole_decodes() {
        for encoding in [Encoding::Gzip, Encoding::Brotli] {
            let parts: Vec<&'static [u8]> =
                vec![b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"];
            let mut body = Compressed::new(chunks(parts.clone()), encoding);
            let mut all = Vec::new();
            let mut data_frames = 0;
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap();
                assert!(!data.is_empty());
                all.extend_from_slice(&data);
                data_frames += 1;
            }
            // One flushed frame per upstream chunk, plus the encoder's tail.
            assert_eq!(data_frames, parts.len() + 1, "{encoding:?}");
            let mut decoded = Vec::new();
            match encoding {
                Encoding::Gzip => flate2::read::GzDecoder::new(&all[..])
                    .read_to_end(&mut decoded)
                    .unwrap(),
                Encoding::Brotli => brotli::Decompressor::new(&all[..], 4096)
                    .read_to_end(&mut decoded)
                    .unwrap(),
            };
            assert_eq!(decoded, parts.concat());
        }
    }
}
