//! What the header rules make of a request's fields on its way to the app, as one plan.
//!
//! The rules ([`super::forward::prepare`], [`super::headers`], the gatekeeper's scrub) read the
//! client's header map and record their decisions in a [`Rewrite`]: which of the client's fields
//! go, and which fields the gateway gives instead. The plan is then carried out one of two ways,
//! to the same result:
//! - [`Rewrite::write`]: a body-less request's head is written to the upstream's socket straight
//!   from the client's map, skipping the fields that go and adding the gateway's. Nothing is
//!   inserted into or removed from the map: the usual request needs no map rewrite at all.
//! - [`Rewrite::apply`]: the map itself is changed, for requests that hyper's client sends
//!   (bodies, upgrades).
//!
//! Every field the rules decide has a [`Slot`]; a field the gateway gives always replaces the
//! client's fields of that name, and is written after the client's own fields.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::headers::{
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PREFIX, X_FORWARDED_PROTO, X_REAL_IP,
    X_REQUEST_ID,
};
use super::wire::header_line;

pub const X_FORWARDED_USER: HeaderName = HeaderName::from_static("x-forwarded-user");

/// The fields whose value on the way upstream the rules decide. The first nine are hop-by-hop
/// (RFC 9110 §7.6.1, with `Keep-Alive` and the non-standard `Proxy-Connection`) and always go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Connection,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    ProxyAuthorization,
    ProxyAuthenticate,
    KeepAlive,
    ProxyConnection,
    Host,
    ContentLength,
    Cookie,
    Authorization,
    AcceptEncoding,
    ForwardedFor,
    RealIp,
    ForwardedProto,
    ForwardedHost,
    ForwardedPrefix,
    RequestId,
    ForwardedUser,
}

const SLOTS: usize = Slot::ForwardedUser as usize + 1;

/// Fields the gateway gives most requests: Host, four forwarding fields, the request id, the user.
const GIVEN: usize = 8;

/// How many slots are hop-by-hop: the first ones.
const HOPS: usize = Slot::ProxyConnection as usize + 1;

/// The hop-by-hop slots, as bits.
const HOP_BY_HOP: u32 = (1 << HOPS) - 1;

/// Each slot's name, in [`Slot`]'s order.
static NAMES: [HeaderName; SLOTS] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::HOST,
    header::CONTENT_LENGTH,
    header::COOKIE,
    header::AUTHORIZATION,
    header::ACCEPT_ENCODING,
    X_FORWARDED_FOR,
    X_REAL_IP,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PREFIX,
    X_REQUEST_ID,
    X_FORWARDED_USER,
];

/// The hop-by-hop names (RFC 9110 §7.6.1, with `Keep-Alive` and the non-standard
/// `Proxy-Connection`), besides whatever `Connection` names: the first slots, in their order.
/// The response rules remove them too.
pub(super) fn hop_by_hop_names() -> &'static [HeaderName] {
    &NAMES[..HOPS]
}

impl Slot {
    pub fn name(self) -> &'static HeaderName {
        &NAMES[self as usize]
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The slot of a field name.
    fn of(name: &HeaderName) -> Option<Slot> {
        Some(match name.as_str() {
            "connection" => Slot::Connection,
            "te" => Slot::Te,
            "trailer" => Slot::Trailer,
            "transfer-encoding" => Slot::TransferEncoding,
            "upgrade" => Slot::Upgrade,
            "proxy-authorization" => Slot::ProxyAuthorization,
            "proxy-authenticate" => Slot::ProxyAuthenticate,
            "keep-alive" => Slot::KeepAlive,
            "proxy-connection" => Slot::ProxyConnection,
            "host" => Slot::Host,
            "content-length" => Slot::ContentLength,
            "cookie" => Slot::Cookie,
            "authorization" => Slot::Authorization,
            "accept-encoding" => Slot::AcceptEncoding,
            "x-forwarded-for" => Slot::ForwardedFor,
            "x-real-ip" => Slot::RealIp,
            "x-forwarded-proto" => Slot::ForwardedProto,
            "x-forwarded-host" => Slot::ForwardedHost,
            "x-forwarded-prefix" => Slot::ForwardedPrefix,
            "x-request-id" => Slot::RequestId,
            "x-forwarded-user" => Slot::ForwardedUser,
            _ => return None,
        })
    }
}

/// `X-Forwarded-User` spelt with `_` or `.` for a dash (some servers map them all to the same
/// variable): a client must not name itself that way either.
pub fn is_user_lookalike(name: &str) -> bool {
    name.len() == 16
        && name
            .bytes()
            .zip(b"x-forwarded-user".iter())
            .all(|(a, b)| a == *b || (*b == b'-' && (a == b'_' || a == b'.')))
}

/// The rules' decisions about one request's fields: see the [module](self).
pub struct Rewrite {
    /// Slots the client sent fields of (bits), but for those its `Connection` names.
    present: u32,
    /// Slots the client sent fields of (bits), whatever `Connection` names.
    sent: u32,
    /// The client sent an `X-Forwarded-User` look-alike.
    lookalikes: bool,
    /// Slots whose client fields go (bits).
    gone: u32,
    /// Slots in `given` (bits).
    giving: u32,
    /// Names the client's `Connection` lists: their fields go too. Usually none.
    listed: Vec<HeaderName>,
    /// What the gateway gives, in the order given; one value per slot.
    given: Vec<(Slot, HeaderValue)>,
}

impl Rewrite {
    /// The plan's start for `headers`: every hop-by-hop field goes, with the fields `Connection`
    /// names, and a `Content-Length` beside a `Transfer-Encoding` (the coding framed the body;
    /// a length beside it is void, RFC 9112 §6.3). So do `X-Forwarded-User` and its
    /// [look-alikes](is_user_lookalike): only the gateway names the user.
    pub fn new(headers: &HeaderMap) -> Rewrite {
        // One pass over the names tells which slots the rules need to look up at all.
        let mut present = 0;
        let mut lookalikes = false;
        for name in headers.keys() {
            match Slot::of(name) {
                Some(slot) => present |= slot.bit(),
                None => lookalikes |= is_user_lookalike(name.as_str()),
            }
        }
        let sent = present;
        let listed = if present & Slot::Connection.bit() != 0 {
            super::headers::connection_listed(headers)
        } else {
            Vec::new()
        };
        for name in &listed {
            if let Some(slot) = Slot::of(name) {
                present &= !slot.bit();
            }
        }
        let mut plan = Rewrite {
            present,
            sent,
            lookalikes,
            gone: HOP_BY_HOP | Slot::ForwardedUser.bit(),
            giving: 0,
            listed,
            given: Vec::new(),
        };
        if plan.has(Slot::TransferEncoding) {
            plan.remove(Slot::ContentLength);
        }
        plan
    }

    /// The client's fields of `slot` as the rules see them: none when `Connection` named them.
    pub fn client<'h>(
        &self,
        headers: &'h HeaderMap,
        slot: Slot,
    ) -> impl DoubleEndedIterator<Item = &'h HeaderValue> {
        self.has(slot)
            .then(|| headers.get_all(slot.name()).iter())
            .into_iter()
            .flatten()
    }

    /// The client's first field of `slot` as the rules see it.
    pub fn first<'h>(&self, headers: &'h HeaderMap, slot: Slot) -> Option<&'h HeaderValue> {
        self.has(slot).then(|| headers.get(slot.name())).flatten()
    }

    /// Whether the client sent a field of `slot` that the rules see.
    pub fn has(&self, slot: Slot) -> bool {
        self.present & slot.bit() != 0
    }

    /// Whether the client sent a field of `slot` at all (even one its `Connection` names): a
    /// field it did not send need not be looked up.
    pub fn sent(&self, slot: Slot) -> bool {
        self.sent & slot.bit() != 0
    }

    /// The client's fields of `slot` go, and nothing is given for it.
    pub fn remove(&mut self, slot: Slot) {
        self.gone |= slot.bit();
        if self.giving & slot.bit() != 0 {
            self.giving &= !slot.bit();
            self.given.retain(|(s, _)| *s != slot);
        }
    }

    /// The client's fields of `slot` go and `value` is sent instead.
    pub fn give(&mut self, slot: Slot, value: HeaderValue) {
        self.gone |= slot.bit();
        if self.giving & slot.bit() != 0 {
            if let Some((_, old)) = self.given.iter_mut().find(|(s, _)| *s == slot) {
                *old = value;
            }
            return;
        }
        if self.given.capacity() == 0 {
            // Room for what a request usually gets: one allocation.
            self.given.reserve_exact(GIVEN);
        }
        self.giving |= slot.bit();
        self.given.push((slot, value));
    }

    /// What the gateway gives for `slot`, if anything.
    pub fn given(&self, slot: Slot) -> Option<&HeaderValue> {
        if self.giving & slot.bit() == 0 {
            return None;
        }
        self.given.iter().find(|(s, _)| *s == slot).map(|(_, v)| v)
    }

    /// The request asks the app to switch protocols (a WebSocket handshake).
    pub fn upgrades(&self) -> bool {
        self.given(Slot::Upgrade).is_some()
    }

    fn is_listed(&self, name: &HeaderName) -> bool {
        !self.listed.is_empty() && self.listed.contains(name)
    }

    /// Whether the client's field named `name` is passed on.
    fn keeps(&self, name: &HeaderName) -> bool {
        let passes = match Slot::of(name) {
            Some(slot) => self.gone & slot.bit() == 0,
            None => !is_user_lookalike(name.as_str()),
        };
        passes && !self.is_listed(name)
    }

    /// Writes the fields the upstream gets, as `name: value` lines: the client's that are kept,
    /// in their order, then the gateway's.
    pub fn write(&self, headers: &HeaderMap, out: &mut Vec<u8>) {
        let mut last: Option<(&HeaderName, bool)> = None;
        for (name, value) in headers {
            // A name's values come one after another; it is judged once.
            let keep = match last {
                Some((seen, keep)) if seen == name => keep,
                _ => {
                    let keep = self.keeps(name);
                    last = Some((name, keep));
                    keep
                }
            };
            if keep {
                header_line(name, value, out);
            }
        }
        for (slot, value) in &self.given {
            header_line(slot.name(), value, out);
        }
    }

    /// Carries the plan out on the map itself: the map it was made from.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.listed {
            headers.remove(name);
        }
        if self.lookalikes {
            let going: Vec<HeaderName> = headers
                .keys()
                .filter(|name| is_user_lookalike(name.as_str()))
                .cloned()
                .collect();
            for name in going {
                headers.remove(name);
            }
        }
        // What the gateway gives replaces the client's fields of its name in place.
        for (slot, value) in &self.given {
            headers.insert(slot.name().clone(), value.clone());
        }
        let going = self.present & self.gone & !self.giving;
        for (i, name) in NAMES.iter().enumerate() {
            if going & (1 << i) != 0 {
                headers.remove(name);
            }
        }
    }
}

/// Carries `plan` out both ways, checks that they agree, and gives the upstream's fields.
#[cfg(test)]
pub(super) fn carried_out(headers: &HeaderMap, plan: Rewrite) -> HeaderMap {
    let mut written = Vec::new();
    plan.write(headers, &mut written);
    let mut parsed = HeaderMap::new();
    let text = String::from_utf8(written).expect("fields are text here");
    for line in text.split_terminator("\r\n") {
        let (name, value) = line.split_once(": ").expect("a field line");
        parsed.append(
            HeaderName::from_bytes(name.as_bytes()).expect("a name"),
            HeaderValue::from_str(value).expect("a value"),
        );
    }
    let mut applied = headers.clone();
    plan.apply(&mut applied);
    assert_eq!(parsed, applied, "written and applied fields differ");
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        h
    }

    fn written(h: &HeaderMap, plan: &Rewrite) -> String {
        let mut out = Vec::new();
        plan.write(h, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_slot_is_known_by_its_own_name_and_no_other() {
        for (i, name) in NAMES.iter().enumerate() {
            let slot = Slot::of(name).unwrap();
            assert_eq!(slot as usize, i);
            assert_eq!(slot.name(), name);
        }
        for other in [
            "hosts",
            "x-forwarded-users",
            "cookie2",
            "accept",
            "",
            "tf",
            "hose",
            "trailed",
            "x-forwarded-hxst",
            "x-forwarded-usex",
            "x_forwarded_user",
            "proxy-connectiox",
        ] {
            let name = HeaderName::from_bytes(other.as_bytes());
            assert_eq!(name.ok().and_then(|n| Slot::of(&n)), None, "{other}");
        }
        // The hop-by-hop slots are the header rules' hop-by-hop names.
        for (i, name) in NAMES.iter().enumerate() {
            let hop = HOP_BY_HOP & (1 << i) != 0;
            assert_eq!(
                super::super::headers::is_hop_by_hop(name.as_str().as_bytes()),
                hop,
                "{name}"
            );
        }
    }

    #[test]
    fn user_lookalikes_never_pass() {
        let h = map(&[
            ("x-forwarded-user", "root"),
            ("x_forwarded_user", "root"),
            ("x.forwarded.user", "root"),
            ("x-forwarded_user", "root"),
            ("x-forwarded-users", "kept"),
        ]);
        let out = carried_out(&h, Rewrite::new(&h));
        assert_eq!(out.len(), 1);
        assert_eq!(out["x-forwarded-users"], "kept");

        let mut plan = Rewrite::new(&h);
        plan.give(Slot::ForwardedUser, HeaderValue::from_static("alice"));
        let out = carried_out(&h, plan);
        assert_eq!(out["x-forwarded-user"], "alice");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn kept_fields_keep_their_order_and_the_gateways_follow() {
        let h = map(&[
            ("host", "box:8000"),
            ("connection", "keep-alive, x-hop"),
            ("x-b", "2"),
            ("x-hop", "gone"),
            ("x-a", "1"),
            ("x-b", "3"),
            ("keep-alive", "timeout=5"),
            ("x-request-id", "client's"),
        ]);
        let mut plan = Rewrite::new(&h);
        plan.give(Slot::RequestId, HeaderValue::from_static("ours"));
        assert_eq!(
            written(&h, &plan),
            "host: box:8000\r\nx-b: 2\r\nx-b: 3\r\nx-a: 1\r\nx-request-id: ours\r\n"
        );
        // A field `Connection` names is not seen by the rules either.
        let named = map(&[("connection", "cookie"), ("cookie", "a=1")]);
        let plan = Rewrite::new(&named);
        assert!(!plan.has(Slot::Cookie));
        assert!(carried_out(&named, plan).is_empty());
    }

    #[test]
    fn length_beside_a_transfer_coding_goes() {
        let h = map(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        assert!(carried_out(&h, Rewrite::new(&h)).is_empty());
        let h = map(&[("content-length", "5")]);
        assert_eq!(carried_out(&h, Rewrite::new(&h))["content-length"], "5");
    }

    #[test]
    fn a_field_connection_names_is_sent_but_not_seen_by_the_rules() {
        let h = map(&[
            ("connection", "x-request-id"),
            ("x-request-id", "abc"),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        let plan = Rewrite::new(&h);
        assert!(plan.sent(Slot::RequestId) && !plan.has(Slot::RequestId));
        assert!(plan.sent(Slot::ForwardedFor) && plan.has(Slot::ForwardedFor));
        assert!(!plan.sent(Slot::Upgrade) && !plan.has(Slot::Upgrade));
    }

    /// Generated header sets and plans: writing and applying agree (`carried_out` checks it),
    /// and the result is what the plan says.
    #[test]
    fn both_ways_agree_on_generated_requests() {
        const NAMES_SEEN: [&str; 14] = [
            "host",
            "connection",
            "keep-alive",
            "cookie",
            "authorization",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-request-id",
            "x_forwarded_user",
            "x-forwarded-user",
            "accept",
            "x-a",
            "upgrade",
            "content-length",
        ];
        const CONNECTION: [&str; 4] = ["keep-alive", "x-a", "cookie, accept", "close"];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..3000 {
            let mut h = HeaderMap::new();
            for _ in 0..next(10) {
                let name = NAMES_SEEN[next(NAMES_SEEN.len())];
                let value = match name {
                    "connection" => CONNECTION[next(CONNECTION.len())].to_owned(),
                    "content-length" => "0".to_owned(),
                    _ => format!("v{}", next(100)),
                };
                h.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(&value).unwrap(),
                );
            }
            let mut plan = Rewrite::new(&h);
            let mut expect_given = Vec::new();
            for _ in 0..next(5) {
                let slot = Slot::of(&NAMES[next(SLOTS)]).unwrap();
                if next(2) == 0 {
                    plan.remove(slot);
                    expect_given.retain(|(s, _)| *s != slot);
                } else {
                    let value = HeaderValue::from_str(&format!("g{}", next(100))).unwrap();
                    plan.give(slot, value.clone());
                    expect_given.retain(|(s, _)| *s != slot);
                    expect_given.push((slot, value));
                }
            }
            let gone: Vec<Slot> = NAMES
                .iter()
                .filter_map(Slot::of)
                .filter(|s| plan.gone & s.bit() != 0)
                .collect();
            let listed = plan.listed.clone();
            let out = carried_out(&h, plan);
            for (slot, value) in &expect_given {
                let values: Vec<_> = out.get_all(slot.name()).iter().collect();
                assert_eq!(values, [value], "{h:?}");
            }
            for name in h.keys() {
                let slot = Slot::of(name);
                let given = expect_given.iter().any(|(s, _)| Some(*s) == slot);
                let dropped = slot.is_some_and(|s| gone.contains(&s))
                    || listed.contains(name)
                    || is_user_lookalike(name.as_str());
                if !given && dropped {
                    assert!(!out.contains_key(name), "{name} in {h:?}");
                }
                if !dropped {
                    let before: Vec<_> = h.get_all(name).iter().collect();
                    let after: Vec<_> = out.get_all(name).iter().collect();
                    assert_eq!(before, after, "{name} in {h:?}");
                }
            }
        }
    }
}
