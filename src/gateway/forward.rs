//! Talking to upstreams: the pooled client, the request the upstream sees, and the shaping of
//! its answer (hop-by-hop removal, compression, event streams that end at shutdown).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::compress::{self, Compressed, Encoding};
use super::headers::{self, Hop};
use super::pool::{Connections, Outbound, PoolError, PooledBody};
use super::rewrite::{Rewrite, Slot};
use super::verbatim::{self, Verbatim};
use super::{Body, BoxError};
use crate::config::{GatewayConfig, Route};

/// The pooled HTTP/1.1 client toward every upstream.
#[derive(Clone)]
pub struct UpstreamClient {
    connections: Connections,
}

impl UpstreamClient {
    pub fn new(config: &GatewayConfig) -> UpstreamClient {
        UpstreamClient {
            connections: Connections {
                connect_timeout: config.connect_timeout,
                idle_timeout: config.pool_idle_timeout,
            },
        }
    }

    /// Sends `out` (a request prepared by [`prepare`], [`Outbound::of`]) to `upstream`, waiting
    /// at most `timeout` for the response headers. `keep_fields`: an answer no header rule
    /// changes may keep its fields [`verbatim`].
    pub async fn send(
        &self,
        upstream: &Authority,
        out: Outbound,
        timeout: Duration,
        keep_fields: bool,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        match self
            .connections
            .send(upstream, out, keep_fields, deadline)
            .await
        {
            Err(PoolError::Timeout) => Err(UpstreamError::Timeout),
            Err(PoolError::Connect(e)) => Err(UpstreamError::Unreachable(describe(&e))),
            Err(PoolError::Exchange(e)) if client_body_failed(&*e) => {
                Err(UpstreamError::ClientBody(describe(&*e)))
            }
            Err(PoolError::Exchange(e)) => Err(UpstreamError::Failed(describe(&*e))),
            Ok(resp) => Ok(resp),
        }
    }
}

/// Whether the exchange broke because the client's own request body did (cut off, or framed
/// wrongly): hyper reports a body stream that failed as a "user" error.
fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
        {
            return true;
        }
        cause = err.source();
    }
    false
}

/// The innermost cause is the useful part ("Connection refused (os error 111)").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Why an upstream gave no usable answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// Nothing listens, or the connection could not be opened in time: 502.
    Unreachable(String),
    /// Connected, but the exchange broke: 502.
    Failed(String),
    /// No response headers within the route's `response_timeout`: 504.
    Timeout,
    /// The client's request body broke off or was malformed: 400, not the app's fault.
    ClientBody(String),
}

/// Everything about the incoming request that shapes the upstream request.
pub struct Outgoing<'a> {
    pub route: &'a Route,
    /// The canonical path, prefix already stripped if the route says so.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub hop: Hop<'a>,
    pub request_id: &'a HeaderValue,
    pub websocket: bool,
}

/// Turns the client's request head into the upstream's: origin-form URI and HTTP/1.1 in place,
/// and the header rules into `plan`, the [`Rewrite`] made from these `parts`' headers: Host as
/// the client sent it (the upstream's address if it sent none), forwarding headers, no
/// hop-by-hop headers, one `Content-Length` and one `Cookie` at most. (The gatekeeper's scrub
/// adds its part to the plan: the credentials the gateway consumed go.)
pub fn prepare(
    parts: &mut http::request::Parts,
    out: &Outgoing<'_>,
    plan: &mut Rewrite,
) -> Result<(), StatusCode> {
    // Most requests go on as they came (canonical, no prefix stripped, query untouched): their
    // origin-form URI is kept rather than built and parsed again.
    let unchanged = parts.uri.scheme().is_none()
        && parts.uri.path() == out.path
        && parts.uri.query() == out.query;
    if !unchanged {
        let path_and_query = match out.query {
            Some(q) => PathAndQuery::try_from(format!("{}?{}", out.path, q)),
            None => PathAndQuery::try_from(out.path),
        }
        .map_err(|_| StatusCode::BAD_REQUEST)?;
        parts.uri = Uri::from(path_and_query);
    }
    parts.version = Version::HTTP_11;

    let h = &parts.headers;
    headers::request_length(h, plan);
    headers::join_cookies(h, plan);
    // HTTP/2 has no Host header: rebuild it from `:authority`, or the client library would put
    // the upstream's own address there and Gradio would hand the browser unreachable URLs.
    let host = match out.hop.host {
        Some(host) => host.clone(),
        None => HeaderValue::from_str(out.route.upstream.as_str())
            .map_err(|_| StatusCode::BAD_GATEWAY)?,
    };
    plan.give(Slot::Host, host);
    headers::set_forwarded(h, &out.hop, plan);
    if out.route.strip_prefix {
        let prefix = out.route.prefix.trim_end_matches('/');
        match HeaderValue::from_str(prefix) {
            Ok(v) => plan.give(Slot::ForwardedPrefix, v),
            Err(_) => plan.remove(Slot::ForwardedPrefix),
        }
    } else if !out.hop.trusted {
        plan.remove(Slot::ForwardedPrefix);
    }
    plan.give(Slot::RequestId, out.request_id.clone());
    if out.route.drop_accept_encoding {
        plan.remove(Slot::AcceptEncoding);
    }
    if out.websocket {
        plan.give(Slot::Connection, HeaderValue::from_static("upgrade"));
        plan.give(Slot::Upgrade, HeaderValue::from_static("websocket"));
    }
    Ok(())
}

/// The host the client addressed: its Host header, or HTTP/2's `:authority`.
pub fn client_host(headers: &HeaderMap, uri: &Uri) -> Option<HeaderValue> {
    headers.get(header::HOST).cloned().or_else(|| {
        uri.authority()
            .map(Authority::as_str)
            .and_then(|a| HeaderValue::from_str(a).ok())
    })
}

/// How the answer to one request is to be shaped on its way back.
pub struct Shaping<'a> {
    pub method: &'a Method,
    /// The coding the client accepts, when the route compresses.
    pub encoding: Option<Encoding>,
    pub streams_stop: &'a CancellationToken,
}

/// Turns the upstream's (non-101) response into the client's, with the upstream's fields when
/// they go to the client as they came ([`verbatim`]; the answer's header map then holds only
/// what the gateway adds).
pub fn shape(
    resp: Response<PooledBody>,
    how: &Shaping<'_>,
) -> (Response<Body>, Option<Box<Verbatim>>) {
    let (mut parts, mut body) = resp.into_parts();
    // The client's connection speaks the gateway's HTTP, whatever the app's: an HTTP/1.0 answer
    // must not make hyper write HTTP/1.0 to an HTTP/1.1 client and close its connection.
    parts.version = Version::HTTP_11;
    if let Some(kept) = body.take_kept() {
        // No header rule changes these fields; only compression would.
        let compress = how.encoding.is_some()
            && compress::compressible_fields(how.method, parts.status, kept.fields());
        if !compress {
            let body = body.map_err(Into::into).boxed_unsync();
            return (Response::from_parts(parts, body), Some(kept));
        }
        verbatim::settle(&mut parts.headers, kept);
    }
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::single_length(&mut parts.headers);
    let event_stream = is_event_stream(&parts.headers);
    let encoding = how
        .encoding
        .filter(|_| compress::compressible(how.method, parts.status, &parts.headers));
    let body: Body = match (encoding, event_stream) {
        (Some(enc), _) => {
            compress::mark_encoded(&mut parts.headers, enc);
            Compressed::new(body, enc).boxed_unsync()
        }
        (None, true) => UntilStopped::new(body, how.streams_stop.clone())
            .map_err(Into::into)
            .boxed_unsync(),
        (None, false) => body.map_err(Into::into).boxed_unsync(),
    };
    if event_stream {
        // Tell any buffering proxy in front of us (nginx-style) to pass events on at once.
        parts
            .headers
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    (Response::from_parts(parts, body), None)
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| is_event_stream_type(v.as_bytes()))
}

/// Whether a `Content-Type` value is `text/event-stream` (parameters aside).
pub fn is_event_stream_type(value: &[u8]) -> bool {
    value
        .split(|b| *b == b';')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"))
}

/// The 101 answer to the client, carrying the upstream's handshake headers
/// (`Sec-WebSocket-Accept`, `-Protocol`, `-Extensions`) and the upgrade pair put back.
pub fn switching_protocols<B>(upstream: &Response<B>) -> Response<Body> {
    let mut resp = super::pages::empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers_mut();
    for (name, value) in upstream.headers() {
        h.append(name.clone(), value.clone());
    }
    headers::remove_hop_by_hop(h);
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    resp
}

pin_project_lite::pin_project! {
    /// A body that ends as soon as `stop` is cancelled: event streams never end by themselves,
    /// and a shutdown must not wait for them.
    pub struct UntilStopped<B> {
        #[pin]
        inner: B,
        #[pin]
        stopped: WaitForCancellationFutureOwned,
        done: bool,
    }
}

impl<B> UntilStopped<B> {
    pub fn new(inner: B, stop: CancellationToken) -> Self {
        UntilStopped {
            inner,
            stopped: stop.cancelled_owned(),
            done: false,
        }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for UntilStopped<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if *this.done || this.stopped.poll(cx).is_ready() {
            *this.done = true;
            return Poll::Ready(None);
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Unused-type guard so `BoxError` stays the error of every shaped body.
#[allow(dead_code)]
fn _assert_body(b: Body) -> impl HttpBody<Data = Bytes, Error = BoxError> {
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::rewrite::carried_out;
    use http::Request;
    use std::net::IpAddr;

    fn route(strip: bool, drop_ae: bool) -> Route {
        Route {
            prefix: "/logs/".into(),
            name: "logdy".into(),
            upstream: "127.0.0.1:8082".parse().unwrap(),
            strip_prefix: strip,
            program: None,
            drop_accept_encoding: drop_ae,
            compress: true,
            allow_origins: vec![],
            response_timeout: Duration::from_secs(1),
            sensitive: false,
            keep_authorization: false,
        }
    }

    fn parts(pairs: &[(&'static str, &'static str)], version: Version) -> http::request::Parts {
        let mut req = Request::builder()
            .uri("/logs/api/x?a=1")
            .version(version)
            .body(())
            .unwrap();
        for (k, v) in pairs {
            req.headers_mut().append(*k, HeaderValue::from_static(v));
        }
        req.into_parts().0
    }

    #[test]
    fn upstream_request_keeps_host_and_strips_prefix() {
        let mut p = parts(
            &[
                ("host", "box.example:8000"),
                ("accept-encoding", "gzip"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
                ("x-forwarded-prefix", "/spoofed"),
            ],
            Version::HTTP_11,
        );
        let host = client_host(&p.headers, &p.uri);
        let r = route(true, true);
        let out = Outgoing {
            route: &r,
            path: "/api/x",
            query: Some("a=1"),
            hop: Hop {
                peer: "203.0.113.5".parse::<IpAddr>().unwrap(),
                trusted: false,
                proto: "http",
                host: host.as_ref(),
            },
            request_id: &HeaderValue::from_static("abc"),
            websocket: false,
        };
        let mut plan = Rewrite::new(&p.headers);
        prepare(&mut p, &out, &mut plan).unwrap();
        p.headers = carried_out(&p.headers, plan);
        assert_eq!(p.uri, "/api/x?a=1");
        assert_eq!(p.headers["host"], "box.example:8000");
        assert_eq!(p.headers["x-forwarded-host"], "box.example:8000");
        assert_eq!(p.headers["x-forwarded-prefix"], "/logs");
        assert_eq!(p.headers["x-request-id"], "abc");
        assert!(!p.headers.contains_key("accept-encoding"));
        assert!(!p.headers.contains_key("x-hop"));
        assert!(!p.headers.contains_key("connection"));
    }

    #[test]
    fn the_upstream_always_gets_an_origin_form_target() {
        let r = route(false, false);
        for (incoming, path, query, expected) in [
            (
                "/logs/api/x?a=1",
                "/logs/api/x",
                Some("a=1"),
                "/logs/api/x?a=1",
            ),
            (
                "http://box/logs/api/x?a=1",
                "/logs/api/x",
                Some("a=1"),
                "/logs/api/x?a=1",
            ),
            (
                "/logs/./api//x?a=1",
                "/logs/api/x",
                Some("a=1"),
                "/logs/api/x?a=1",
            ),
            (
                "/logs/api/x?a=1&token=t",
                "/logs/api/x",
                Some("a=1"),
                "/logs/api/x?a=1",
            ),
            ("/logs/api/x?a=1", "/logs/api/x", None, "/logs/api/x"),
        ] {
            let mut p = Request::builder()
                .uri(incoming)
                .body(())
                .unwrap()
                .into_parts()
                .0;
            let out = Outgoing {
                route: &r,
                path,
                query,
                hop: Hop {
                    peer: "127.0.0.1".parse::<IpAddr>().unwrap(),
                    trusted: false,
                    proto: "http",
                    host: None,
                },
                request_id: &HeaderValue::from_static("id"),
                websocket: false,
            };
            let mut plan = Rewrite::new(&p.headers);
            prepare(&mut p, &out, &mut plan).unwrap();
            assert_eq!(p.uri, expected, "{incoming}");
            assert!(
                p.uri.scheme().is_none() && p.uri.authority().is_none(),
                "{incoming}"
            );
        }
    }

    #[test]
    fn http2_authority_becomes_the_upstream_host() {
        let mut req = Request::builder()
            .uri("https://box.example:8443/logs/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let host = client_host(&req.headers, &req.uri);
        assert_eq!(host.as_ref().unwrap(), "box.example:8443");
        let r = route(false, false);
        let out = Outgoing {
            route: &r,
            path: "/logs/x",
            query: None,
            hop: Hop {
                peer: "127.0.0.1".parse::<IpAddr>().unwrap(),
                trusted: false,
                proto: "https",
                host: host.as_ref(),
            },
            request_id: &HeaderValue::from_static("id"),
            websocket: true,
        };
        let mut plan = Rewrite::new(&req.headers);
        prepare(&mut req, &out, &mut plan).unwrap();
        req.headers = carried_out(&req.headers, plan);
        assert_eq!(req.version, Version::HTTP_11);
        assert_eq!(req.headers["host"], "box.example:8443");
        assert_eq!(req.headers["connection"], "upgrade");
        assert_eq!(req.headers["upgrade"], "websocket");
        assert!(!req.headers.contains_key("x-forwarded-prefix"));
    }
}
