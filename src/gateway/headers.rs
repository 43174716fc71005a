//! Header rules of a reverse proxy, as small functions: over an answer's [`HeaderMap`], or
//! reading a request's map and recording what they decide in its [`Rewrite`] plan.

use std::cell::RefCell;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::rewrite::{hop_by_hop_names, Rewrite, Slot};

/// The lengths of the hop-by-hop names, as bits.
const HOP_LENGTHS: u32 = 1 << 2 | 1 << 7 | 1 << 10 | 1 << 16 | 1 << 17 | 1 << 18 | 1 << 19;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether `name` (any case) is one of the hop-by-hop headers removed by name.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_LENGTHS & (1 << name.len().min(31)) != 0
        && hop_by_hop_names()
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

/// Bits of the hop-by-hop names that need more than their own removal.
const CONNECTION_BIT: u16 = 1 << 0;
const TRANSFER_ENCODING_BIT: u16 = 1 << 3;

/// Removes hop-by-hop headers, including every header named in `Connection`, and a
/// `Content-Length` that came beside a `Transfer-Encoding`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, or only `Connection: keep-alive`: one pass over the names notes
    // which are there (bits in their order), and only those are removed. Nothing is
    // allocated for `Connection: keep-alive`.
    let mut present = 0u16;
    for name in headers.keys() {
        // Most names are told apart by their length alone.
        if HOP_LENGTHS & (1 << name.as_str().len().min(31)) == 0 {
            continue;
        }
        if let Some(i) = hop_by_hop_names().iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & TRANSFER_ENCODING_BIT != 0 {
        // The transfer coding framed the body; a length beside it is void (RFC 9112 §6.3) and
        // must not reach the next hop, which frames the body anew: a client that trusted it
        // would cut the body short and read the rest as the next answer.
        headers.remove(header::CONTENT_LENGTH);
    }
    if present & CONNECTION_BIT != 0 {
        // `Connection` is there: the headers it lists go too; the named ones go below anyway.
        for name in connection_listed(headers) {
            headers.remove(name);
        }
    }
    for (i, name) in hop_by_hop_names().iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The names a message's `Connection` lists (other than `keep-alive` and `upgrade`): hop-by-hop
/// fields of this connection alone. Nothing is allocated when there are none.
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut listed = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty()
                || token.eq_ignore_ascii_case(b"keep-alive")
                || token.eq_ignore_ascii_case(b"upgrade")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                listed.push(name);
            }
        }
    }
    listed
}

/// Writes a `Content-Length` given as a list (`5, 5`) or on several lines as the one number
/// they agree on (RFC 9110 §8.6 lets a recipient take it so): HTTP/2 clients refuse the stream
/// otherwise, and strict HTTP/1.1 servers the request. Lengths that disagree go: a message with
/// a body and such lengths was refused by its framing already, so only one without a body by
/// rule (HEAD, 204, 304) gets here with them.
pub fn single_length(headers: &mut HeaderMap) {
    match length_rewrite(headers) {
        None => {}
        Some(Some(n)) => {
            headers.insert(header::CONTENT_LENGTH, n);
        }
        Some(None) => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
}

/// [`single_length`]'s decision: `None` to leave the lengths as they are, else the one length
/// to write instead (`Some(None)`: none).
fn length_rewrite(headers: &HeaderMap) -> Option<Option<HeaderValue>> {
    let list = |v: &HeaderValue| v.as_bytes().contains(&b',');
    // With no name twice (the usual case, told without a lookup) only a list needs rewriting.
    let rewrite = if headers.len() == headers.keys_len() {
        headers.get(header::CONTENT_LENGTH).is_some_and(list)
    } else {
        let mut fields = headers.get_all(header::CONTENT_LENGTH).iter();
        match (fields.next(), fields.next()) {
            (Some(first), None) => list(first),
            (None, _) => false,
            (Some(_), Some(_)) => true,
        }
    };
    rewrite.then(|| super::wire::content_length(headers).map(HeaderValue::from))
}

/// [`single_length`] for a request on its way upstream.
pub fn request_length(headers: &HeaderMap, plan: &mut Rewrite) {
    if plan.has(Slot::TransferEncoding) || !plan.has(Slot::ContentLength) {
        return; // the length goes, or there is none
    }
    match length_rewrite(headers) {
        None => {}
        Some(Some(n)) => plan.give(Slot::ContentLength, n),
        Some(None) => plan.remove(Slot::ContentLength),
    }
}

/// Joins several `Cookie` fields into one, `; ` between them (RFC 9113 §8.2.3): HTTP/2 clients
/// may send each cookie as a field of its own, and an HTTP/1.1 app reads one (Starlette only the
/// first, so Gradio would lose the rest).
pub fn join_cookies(headers: &HeaderMap, plan: &mut Rewrite) {
    // No name twice (the usual case, told without a lookup): nothing to join.
    if headers.len() == headers.keys_len() {
        return;
    }
    let mut fields = plan.client(headers, Slot::Cookie);
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for field in plan.client(headers, Slot::Cookie) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(field.as_bytes());
    }
    // Each part was a valid value; so is their join.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        plan.give(Slot::Cookie, value);
    }
}

/// Whether a comma-separated header contains `token` (case-insensitive), e.g.
/// `Connection: keep-alive, Upgrade`.
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What kind of protocol switch a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum UpgradeRequest {
    None,
    WebSocket,
    /// Anything else (`h2c`, ...): never performed; the request is served as plain HTTP/1.1.
    Other,
}

pub fn upgrade_request(headers: &HeaderMap) -> UpgradeRequest {
    if !headers.contains_key(header::UPGRADE) {
        return UpgradeRequest::None;
    }
    let websocket = has_token(headers, &header::CONNECTION, "upgrade")
        && headers.get_all(header::UPGRADE).iter().count() == 1
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    if websocket {
        UpgradeRequest::WebSocket
    } else {
        UpgradeRequest::Other
    }
}

/// Facts about the client connection that the forwarded headers report.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    pub peer: IpAddr,
    /// The peer is in `trusted_proxies`: its X-Forwarded-* are believed.
    pub trusted: bool,
    /// `"http"` or `"https"`: how the client reached us.
    pub proto: &'static str,
    /// The client's Host (or HTTP/2 `:authority`), port included.
    pub host: Option<&'a HeaderValue>,
}

/// The address of the client as far as we can believe it: the socket peer, or, behind a trusted
/// proxy, the last X-Forwarded-For entry (the one that proxy added).
pub fn client_addr(headers: &HeaderMap, peer: IpAddr, trusted: bool) -> IpAddr {
    if !trusted {
        return peer;
    }
    let values = headers.get_all(&X_FORWARDED_FOR).iter();
    last_forwarded_for(values.filter_map(|v| v.to_str().ok())).unwrap_or(peer)
}

/// The last address of X-Forwarded-For fields (as text).
fn last_forwarded_for<'h>(values: impl DoubleEndedIterator<Item = &'h str>) -> Option<IpAddr> {
    values
        .flat_map(|v| v.split(','))
        .next_back()
        // Only the last entry was added by the trusted proxy; an unreadable one is not a reason
        // to believe the entries before it, which the client wrote.
        .and_then(|s| s.trim().parse::<IpAddr>().ok())
}

/// Sets X-Forwarded-For/Proto/Host and X-Real-IP for the upstream. From an untrusted peer every
/// incoming value is replaced; from a trusted one, For is appended to and Proto/Host pass through.
pub fn set_forwarded(headers: &HeaderMap, hop: &Hop<'_>, plan: &mut Rewrite) {
    let peer = peer_value(hop.peer);
    let (mut xff, mut real_ip) = (None, None);
    if hop.trusted {
        let values: Vec<&str> = plan
            .client(headers, Slot::ForwardedFor)
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            real_ip = last_forwarded_for(values.iter().copied())
                .filter(|ip| *ip != hop.peer)
                .map(ip_value);
            xff = HeaderValue::from_str(&format!("{}, {}", values.join(", "), hop.peer)).ok();
        }
    }
    plan.give(Slot::ForwardedFor, xff.unwrap_or_else(|| peer.clone()));
    plan.give(Slot::RealIp, real_ip.unwrap_or(peer));

    if !(hop.trusted && plan.has(Slot::ForwardedProto)) {
        plan.give(Slot::ForwardedProto, HeaderValue::from_static(hop.proto));
    }
    if !(hop.trusted && plan.has(Slot::ForwardedHost)) {
        match hop.host {
            Some(host) => plan.give(Slot::ForwardedHost, host.clone()),
            None => plan.remove(Slot::ForwardedHost),
        }
    }
}

/// A connection's peer address as a header value. Each worker thread keeps the last one it
/// wrote: a peer's requests come one after another (behind a trusted proxy, all of them), and a
/// clone shares the text where writing it anew costs an allocation. Other addresses are written
/// with [`ip_value`], so that they do not take the peer's place.
pub fn peer_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen, value)) if *seen == ip => value.clone(),
        _ => {
            let value = ip_value(ip);
            *last = Some((ip, value.clone()));
            value
        }
    })
}

/// An address as a header value; IPv4 written by hand (the formatter costs more than the rest
/// of the header rewrite).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static(""));
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    HeaderValue::from_bytes(&text[..len]).unwrap_or(HeaderValue::from_static(""))
}

/// Whether a browser's WebSocket handshake comes from a page of this same origin (or one the route
/// allows). Browsers send credentials automatically, so a foreign page must not open the terminal.
/// Requests without `Origin` (non-browser clients) are not cross-origin.
pub fn origin_allowed(headers: &HeaderMap, host: Option<&HeaderValue>, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some((scheme, origin_authority)) = origin.split_once("://") else {
        return false; // "null" and other opaque origins
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    match (
        split_host_port(origin_authority, default_port),
        split_host_port(host, default_port),
    ) {
        (Some((oh, op)), Some((hh, hp))) => oh.eq_ignore_ascii_case(hh) && op == hp,
        _ => false,
    }
}

/// `example.com:8000` → (`example.com`, 8000); `[::1]` → (`[::1]`, default). `None` when the
/// port is not a number.
fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    let port_sep = match authority.rfind(']') {
        Some(close) => authority[close..].find(':').map(|i| close + i),
        None => authority.rfind(':'),
    };
    match port_sep {
        Some(i) => Some((&authority[..i], authority[i + 1..].parse().ok()?)),
        None => Some((authority, default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::rewrite::carried_out;

    #[test]
    fn hop_by_hop_names_are_known_in_any_case_and_no_others() {
        for name in hop_by_hop_names() {
            assert!(is_hop_by_hop(name.as_str().as_bytes()), "{name}");
            let upper = name.as_str().to_ascii_uppercase();
            assert!(is_hop_by_hop(upper.as_bytes()), "{upper}");
        }
        for name in [
            "tee",
            "x-te",
            "content-type",
            "keep-alive-x",
            "",
            "connectio",
        ] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Every value of `name`, as text.
    fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("(not text)"))
            .collect()
    }

    #[test]
    fn a_length_given_as_a_list_or_twice_becomes_one_number() {
        for fields in [
            &[("content-length", "5, 5")][..],
            &[("content-length", "5"), ("content-length", "5")][..],
            &[("content-length", "5,5"), ("content-length", " 5")][..],
        ] {
            let mut h = map(fields);
            single_length(&mut h);
            assert_eq!(values(&h, "content-length"), ["5"], "{fields:?}");
        }
        // Disagreeing lengths (on an answer without a body) go.
        let mut h = map(&[("content-length", "5"), ("content-length", "6")]);
        single_length(&mut h);
        assert!(h.get("content-length").is_none());
    }

    #[test]
    fn cookie_fields_are_joined_into_one_and_a_single_one_is_left_alone() {
        let split = map(&[
            ("cookie", "a=1"),
            ("x-between", "x"),
            ("cookie", "b=two"),
            ("cookie", "c=3"),
        ]);
        let joined = |h: &HeaderMap| {
            let mut plan = Rewrite::new(h);
            join_cookies(h, &mut plan);
            carried_out(h, plan)
        };
        let split = joined(&split);
        assert_eq!(values(&split, "cookie"), ["a=1; b=two; c=3"]);
        assert_eq!(split.len(), 2);

        let one = map(&[("cookie", "a=1; b=2")]);
        assert_eq!(values(&joined(&one), "cookie"), ["a=1; b=2"]);
    }

    #[test]
    fn the_bits_name_the_headers_they_stand_for() {
        assert_eq!(
            hop_by_hop_names()[CONNECTION_BIT.trailing_zeros() as usize],
            header::CONNECTION
        );
        assert_eq!(
            hop_by_hop_names()[TRANSFER_ENCODING_BIT.trailing_zeros() as usize],
            header::TRANSFER_ENCODING
        );
    }

    #[test]
    fn a_length_beside_a_transfer_coding_is_removed_and_a_lone_one_kept() {
        let mut both = map(&[
            ("content-length", "3"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut both);
        let names: Vec<&str> = both.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["content-type"]);

        let mut alone = map(&[("content-length", "3"), ("connection", "keep-alive")]);
        remove_hop_by_hop(&mut alone);
        assert_eq!(
            alone.get("content-length").map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
    }

    #[test]
    fn every_hop_by_hop_name_has_its_length_in_the_quick_check() {
        for name in hop_by_hop_names() {
            let len = name.as_str().len();
            assert!(len < 31 && HOP_LENGTHS & (1 << len) != 0, "{name}");
        }
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        // The fast path (no hop-by-hop header at all) must not miss any of them.
        for name in [
            "connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
            "keep-alive",
            "proxy-connection",
        ] {
            let mut h = map(&[("accept", "*/*"), (name, "x"), ("x-kept", "1")]);
            remove_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} kept");
            assert_eq!(h.len(), 2, "{name}: {h:?}");
        }
        let mut h = map(&[("accept", "*/*"), ("x-kept", "1")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn addresses_become_header_values() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "100.9.99.101",
            "::1",
            "2001:db8::7",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(addr), ip);
        }
        // The thread's last peer is reused only for that address.
        let (a, b): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.10".parse().unwrap());
        for (addr, text) in [
            (a, "192.0.2.1"),
            (a, "192.0.2.1"),
            (b, "192.0.2.10"),
            (a, "192.0.2.1"),
        ] {
            assert_eq!(peer_value(addr), text);
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("x-other", "2"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic eA=="),
            ("x-kept", "yes"),
            ("cookie", "a=b"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["cookie", "x-kept"]);
    }

    #[test]
    fn websocket_upgrade_needs_both_headers() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(upgrade_request(&ws), UpgradeRequest::WebSocket);
        let h2c = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert_eq!(upgrade_request(&h2c), UpgradeRequest::Other);
        let no_conn = map(&[("upgrade", "websocket")]);
        assert_eq!(upgrade_request(&no_conn), UpgradeRequest::Other);
        let mixed = map(&[("connection", "upgrade"), ("upgrade", "websocket, h2c")]);
        assert_eq!(upgrade_request(&mixed), UpgradeRequest::Other);
        assert_eq!(upgrade_request(&map(&[])), UpgradeRequest::None);
    }

    fn forwarded(h: &HeaderMap, hop: &Hop<'_>) -> HeaderMap {
        let mut plan = Rewrite::new(h);
        set_forwarded(h, hop, &mut plan);
        carried_out(h, plan)
    }

    #[test]
    fn untrusted_peer_cannot_spoof_forwarded_headers() {
        let host = HeaderValue::from_static("box.example:8000");
        let h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        let hop = Hop {
            peer: "203.0.113.9".parse().unwrap(),
            trusted: false,
            proto: "http",
            host: Some(&host),
        };
        let h = forwarded(&h, &hop);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "box.example:8000");
    }

    #[test]
    fn trusted_peer_is_appended_and_its_proto_kept() {
        let host = HeaderValue::from_static("box.example:8000");
        let h = map(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
        ]);
        let hop = Hop {
            peer: "127.0.0.1".parse().unwrap(),
            trusted: true,
            proto: "http",
            host: Some(&host),
        };
        let h = forwarded(&h, &hop);
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
        assert_eq!(h["x-real-ip"], "198.51.100.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "public.example");
    }

    #[test]
    fn client_addr_believes_only_trusted_peers() {
        let h = map(&[("x-forwarded-for", "10.0.0.1, 198.51.100.7")]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_addr(&h, peer, false), peer);
        assert_eq!(
            client_addr(&h, peer, true),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let garbage = map(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_addr(&garbage, peer, true), peer);
        let spoof_then_garbage = map(&[("x-forwarded-for", "6.6.6.6, unknown")]);
        assert_eq!(client_addr(&spoof_then_garbage, peer, true), peer);
    }

    #[test]
    fn websocket_origin_must_match_host() {
        let host = HeaderValue::from_static("box.example:8000");
        let check = |origin: Option<&str>, allowed: &[String]| {
            let h = match origin {
                Some(o) => map(&[("origin", o)]),
                None => map(&[]),
            };
            origin_allowed(&h, Some(&host), allowed)
        };
        assert!(check(None, &[]));
        assert!(check(Some("http://box.example:8000"), &[]));
        assert!(check(Some("http://BOX.example:8000"), &[]));
        assert!(!check(Some("http://evil.example:8000"), &[]));
        assert!(!check(Some("http://box.example:8001"), &[]));
        assert!(!check(Some("http://box.example"), &[]));
        assert!(!check(Some("null"), &[]));
        assert!(check(
            Some("https://ok.example"),
            &["https://ok.example".into()]
        ));
        let default_port = HeaderValue::from_static("box.example");
        let h = map(&[("origin", "https://box.example")]);
        assert!(origin_allowed(&h, Some(&default_port), &[]));
        let v6 = HeaderValue::from_static("[::1]:8000");
        let h = map(&[("origin", "http://[::1]:8000")]);
        assert!(origin_allowed(&h, Some(&v6), &[]));
        let h = map(&[("origin", "http://box.example")]);
        assert!(origin_allowed(&h, Some(&default_port), &[]));
    }
}
