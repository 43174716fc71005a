//! Vast.ai's token scheme: the `OPEN_BUTTON_TOKEN` that Vast's "Open" button appends as
//! `?token=…`, the session cookie that replaces it, and `Authorization: Bearer <token>`.
//!
//! Vast's own Caddy does the same with non-constant-time comparisons; here every comparison of a
//! secret is constant-time, and the cookie carries a signed expiry instead of the token itself.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::{ACCEPT, COOKIE};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a session cookie lasts: 7 days, as Vast's Caddy does.
pub const SESSION_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Cookie name when there is no container label.
pub const FALLBACK_COOKIE_NAME: &str = "vastgate_auth_token";

/// Names the signing key; changing it invalidates every cookie ever issued.
const KEY_CONTEXT: &[u8] = b"vastgate session cookie v1";
const VALUE_VERSION: &str = "v1";

/// The container's Vast.ai token and what is derived from it.
///
/// It exists to keep the token in one place that compares it in constant time and never prints
/// it (`Debug` redacts it). The cookie signing key is derived from the token alone (HMAC with a
/// fixed context), so cookies stay valid across restarts without stored state, and a new token
/// invalidates all of them.
pub struct VastToken {
    token_digest: [u8; 32],
    signing_key: [u8; 32],
    cookie_name: String,
}

impl VastToken {
    /// `token` is `OPEN_BUTTON_TOKEN`, `container_label` is `VAST_CONTAINERLABEL` (e.g.
    /// `C.38250`). `None` when the token is empty: an empty token must never match anything.
    pub fn new(token: &str, container_label: Option<&str>) -> Option<VastToken> {
        if token.trim().is_empty() {
            return None;
        }
        Some(VastToken {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            signing_key: hmac_sha256(token.as_bytes(), &[KEY_CONTEXT]),
            cookie_name: cookie_name_for(container_label),
        })
    }

    /// `<label>_auth_token` (Vast's name, so the two agree), or [`FALLBACK_COOKIE_NAME`].
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Whether `candidate` is the token. Constant-time, and the lengths stay secret too (digests
    /// are compared).
    pub fn matches_token(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        digest.ct_eq(&self.token_digest).into()
    }

    /// Whether `Authorization` is `Bearer <token>`.
    pub fn check_bearer(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let raw = value.as_bytes().trim_ascii();
        let Some(split) = raw.iter().position(|b| *b == b' ' || *b == b'\t') else {
            return false;
        };
        let (scheme, credential) = raw.split_at(split);
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        match std::str::from_utf8(credential.trim_ascii()) {
            Ok(token) => self.matches_token(token),
            Err(_) => false,
        }
    }

    /// A fresh session cookie value, valid for [`SESSION_MAX_AGE`] from `now`:
    /// `v1.<expiry unix seconds>.<HMAC>`. Never contains the token.
    pub fn session_cookie_value(&self, now: SystemTime) -> String {
        let expiry = unix_seconds(now).saturating_add(SESSION_MAX_AGE.as_secs());
        let signed = format!("{VALUE_VERSION}.{expiry}");
        let mac = hmac_sha256(&self.signing_key, &[signed.as_bytes()]);
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// Whether a `Cookie` header carries a valid session cookie of ours, now.
    pub fn verify_cookie(&self, cookie_header: Option<&HeaderValue>) -> bool {
        self.verify_cookie_at(cookie_header, SystemTime::now())
    }

    /// [`verify_cookie`](Self::verify_cookie) at a given time.
    pub fn verify_cookie_at(&self, cookie_header: Option<&HeaderValue>, now: SystemTime) -> bool {
        let Some(header) = cookie_header else {
            return false;
        };
        cookie_pairs(header.as_bytes())
            .filter(|(name, _)| *name == self.cookie_name.as_bytes())
            .any(|(_, value)| self.valid_cookie_value(value, now))
    }

    /// Whether any `Cookie` header in `headers` carries a valid session cookie (HTTP/2 clients
    /// may split cookies over several headers).
    pub fn verify_cookies(&self, headers: &HeaderMap) -> bool {
        let now = SystemTime::now();
        headers
            .get_all(COOKIE)
            .iter()
            .any(|h| self.verify_cookie_at(Some(h), now))
    }

    /// A signed, unexpired value of ours; or the raw token itself, which is what Vast's Caddy
    /// stores under the same name (cookies ignore ports, so its cookie reaches us too, and it
    /// proves no less than `?token=` does).
    fn valid_cookie_value(&self, value: &[u8], now: SystemTime) -> bool {
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        let Ok(value) = std::str::from_utf8(value) else {
            return false;
        };
        let signed_ok = self.valid_signed_value(value, now);
        let raw_ok = self.matches_token(value);
        signed_ok | raw_ok
    }

    fn valid_signed_value(&self, value: &str, now: SystemTime) -> bool {
        let Some((signed, mac)) = value.rsplit_once('.') else {
            return false;
        };
        let Some((version, expiry)) = signed.split_once('.') else {
            return false;
        };
        if version != VALUE_VERSION
            || expiry.is_empty()
            || expiry.len() > 20
            || !expiry.bytes().all(|b| b.is_ascii_digit())
        {
            return false;
        }
        let Ok(expiry) = expiry.parse::<u64>() else {
            return false;
        };
        let Ok(mac) = URL_SAFE_NO_PAD.decode(mac) else {
            return false;
        };
        let expected = hmac_sha256(&self.signing_key, &[signed.as_bytes()]);
        let authentic: bool = expected.as_slice().ct_eq(&mac).into();
        authentic && expiry > unix_seconds(now)
    }

    /// `Set-Cookie` for a new session: `HttpOnly; SameSite=Lax; Max-Age=604800; Path=/`, plus
    /// `Secure` when the client connection is TLS.
    pub fn set_cookie_header(&self, secure: bool) -> HeaderValue {
        self.set_cookie_header_at(secure, SystemTime::now())
    }

    /// [`set_cookie_header`](Self::set_cookie_header) at a given time.
    pub fn set_cookie_header_at(&self, secure: bool, now: SystemTime) -> HeaderValue {
        let mut cookie = format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
            self.cookie_name,
            self.session_cookie_value(now),
            SESSION_MAX_AGE.as_secs()
        );
        if secure {
            cookie.push_str("; Secure");
        }
        // Name and value are both restricted to token characters above.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The `Cookie` header without our cookie, for forwarding upstream; `None` when nothing else
    /// is left (drop the header then).
    pub fn strip_cookie(&self, cookie_header: &HeaderValue) -> Option<HeaderValue> {
        let kept: Vec<&[u8]> = cookie_header
            .as_bytes()
            .split(|b| *b == b';')
            .map(<[u8]>::trim_ascii)
            .filter(|pair| !pair.is_empty())
            .filter(|pair| {
                let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
                name.trim_ascii() != self.cookie_name.as_bytes()
            })
            .collect();
        if kept.is_empty() {
            return None;
        }
        HeaderValue::from_bytes(&kept.join(&b"; "[..])).ok()
    }
}

impl fmt::Debug for VastToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VastToken")
            .field("cookie_name", &self.cookie_name)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `(name, value)` pairs of a `Cookie` header, white space trimmed.
fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|b| *b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
    })
}

/// The cookie name for a container label, reduced to RFC 6265 token characters.
fn cookie_name_for(label: Option<&str>) -> String {
    let label = label.map(str::trim).unwrap_or_default();
    if label.is_empty() {
        return FALLBACK_COOKIE_NAME.to_owned();
    }
    let sanitized: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{sanitized}_auth_token")
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length");
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Removes `token` query parameters whose value is the gateway's own token (as judged by
/// `token_matches`), keeping everything else byte for byte. `None` when there was none: the
/// query is then to be forwarded untouched (Jupyter's own `?token=` is such a case). `Some("")`
/// when the token was the only parameter.
pub fn strip_token_query(query: &str, token_matches: impl Fn(&str) -> bool) -> Option<String> {
    let mut found = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let ours = percent_decode(name) == "token"
                && (token_matches(value) || token_matches(&percent_decode(value)));
            found |= ours;
            !ours
        })
        .collect();
    found.then(|| kept.join("&"))
}

/// Form-style decoding (`+` is a space, `%XX` a byte); malformed escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the request is a browser navigating to a page (it then gets a redirect to the URL
/// without the token, rather than the page itself): `Accept` mentions `text/html`, or
/// `Sec-Fetch-Dest: document`.
pub fn is_browser_navigation(headers: &HeaderMap) -> bool {
    let accepts_html = headers.get_all(ACCEPT).iter().any(|v| {
        v.as_bytes()
            .windows(b"text/html".len())
            .any(|w| w.eq_ignore_ascii_case(b"text/html"))
    });
    let document = headers
        .get_all("sec-fetch-dest")
        .iter()
        .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"document"));
    accepts_html || document
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn vast() -> VastToken {
        VastToken::new(TOKEN, Some("C.38250")).unwrap()
    }

    fn cookie(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn empty_token_is_refused() {
        assert!(VastToken::new("", Some("C.1")).is_none());
        assert!(VastToken::new("  ", None).is_none());
    }

    #[test]
    fn cookie_name_follows_the_label() {
        assert_eq!(vast().cookie_name(), "C.38250_auth_token");
        let t = |label| {
            VastToken::new(TOKEN, label)
                .unwrap()
                .cookie_name()
                .to_owned()
        };
        assert_eq!(t(None), "vastgate_auth_token");
        assert_eq!(t(Some("")), "vastgate_auth_token");
        assert_eq!(t(Some(" C.1 ")), "C.1_auth_token");
        assert_eq!(t(Some("a b;c=d\"é")), "a_b_c_d___auth_token");
    }

    #[test]
    fn token_matches_only_itself() {
        let v = vast();
        assert!(v.matches_token(TOKEN));
        assert!(!v.matches_token(&TOKEN[1..]));
        assert!(!v.matches_token(&format!("{TOKEN}x")));
        assert!(!v.matches_token(""));
    }

    #[test]
    fn bearer_header() {
        let v = vast();
        assert!(v.check_bearer(Some(&cookie(&format!("Bearer {TOKEN}")))));
        assert!(v.check_bearer(Some(&cookie(&format!("bearer   {TOKEN} ")))));
        assert!(!v.check_bearer(Some(&cookie("Bearer wrong"))));
        assert!(!v.check_bearer(Some(&cookie(&format!("Basic {TOKEN}")))));
        assert!(!v.check_bearer(Some(&cookie(&format!("Bearer{TOKEN}")))));
        assert!(!v.check_bearer(Some(&cookie("Bearer"))));
        assert!(!v.check_bearer(None));
    }

    #[test]
    fn cookie_round_trip() {
        let v = vast();
        let now = SystemTime::now();
        let value = v.session_cookie_value(now);
        assert!(!value.contains(TOKEN));
        let header = cookie(&format!("other=1; C.38250_auth_token={value}; x=y"));
        assert!(v.verify_cookie_at(Some(&header), now));
        assert!(v.verify_cookie_at(
            Some(&header),
            now + SESSION_MAX_AGE - Duration::from_secs(1)
        ));
        assert!(!v.verify_cookie_at(None, now));
        // Survives a restart: a new VastToken from the same token accepts it.
        assert!(VastToken::new(TOKEN, Some("C.38250"))
            .unwrap()
            .verify_cookie_at(Some(&header), now));
        // A different token does not.
        assert!(!VastToken::new("another-token", Some("C.38250"))
            .unwrap()
            .verify_cookie_at(Some(&header), now));
    }

    #[test]
    fn expired_cookie_is_refused() {
        let v = vast();
        let then = SystemTime::now() - SESSION_MAX_AGE - Duration::from_secs(1);
        let header = cookie(&format!(
            "C.38250_auth_token={}",
            v.session_cookie_value(then)
        ));
        assert!(!v.verify_cookie(Some(&header)));
    }

    #[test]
    fn tampered_cookies_are_refused() {
        let v = vast();
        let now = SystemTime::now();
        let value = v.session_cookie_value(now);
        let (signed, mac) = value.rsplit_once('.').unwrap();
        let (_, expiry) = signed.split_once('.').unwrap();
        let later: u64 = expiry.parse::<u64>().unwrap() + 1_000_000;
        let mut flipped = mac.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            format!("v1.{later}.{mac}"),
            format!("{signed}.{flipped}"),
            format!("v2.{expiry}.{mac}"),
            format!("{signed}."),
            signed.to_owned(),
            format!("v1..{mac}"),
            format!("v1.-5.{mac}"),
            "garbage".to_owned(),
            String::new(),
        ] {
            let header = cookie(&format!("C.38250_auth_token={bad}"));
            assert!(!v.verify_cookie_at(Some(&header), now), "{bad}");
        }
        // The right value under another name does not count.
        let header = cookie(&format!("C.1_auth_token={value}"));
        assert!(!v.verify_cookie_at(Some(&header), now));
    }

    #[test]
    fn raw_token_cookie_from_vast_caddy_is_accepted() {
        let v = vast();
        let header = cookie(&format!("C.38250_auth_token={TOKEN}"));
        assert!(v.verify_cookie(Some(&header)));
        let header = cookie(&format!("C.38250_auth_token=\"{TOKEN}\""));
        assert!(v.verify_cookie(Some(&header)));
    }

    #[test]
    fn cookies_split_over_several_headers_are_found() {
        let v = vast();
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, cookie("a=1"));
        headers.append(
            COOKIE,
            cookie(&format!(
                "C.38250_auth_token={}",
                v.session_cookie_value(SystemTime::now())
            )),
        );
        assert!(v.verify_cookies(&headers));
        headers.remove(COOKIE);
        assert!(!v.verify_cookies(&headers));
    }

    #[test]
    fn set_cookie_attributes() {
        let v = vast();
        let plain = v.set_cookie_header(false);
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("C.38250_auth_token=v1."));
        for attr in ["Path=/", "Max-Age=604800", "HttpOnly", "SameSite=Lax"] {
            assert!(plain.contains(attr), "{plain}");
        }
        assert!(!plain.contains("Secure"));
        assert!(v
            .set_cookie_header(true)
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        // What we set is what we accept.
        let value = plain.split(';').next().unwrap();
        assert!(v.verify_cookie(Some(&cookie(value))));
    }

    #[test]
    fn strip_cookie_removes_only_ours() {
        let v = vast();
        let h = cookie("a=1; C.38250_auth_token=xyz;b=2 ; C.38250_auth_token=again");
        assert_eq!(v.strip_cookie(&h).unwrap(), "a=1; b=2");
        assert_eq!(v.strip_cookie(&cookie("C.38250_auth_token=xyz")), None);
        assert_eq!(
            v.strip_cookie(&cookie("C.1_auth_token=x")).unwrap(),
            "C.1_auth_token=x"
        );
    }

    #[test]
    fn debug_redacts_the_token() {
        assert!(!format!("{:?}", vast()).contains(TOKEN));
    }

    #[test]
    fn token_query_is_stripped_only_for_our_token() {
        let v = vast();
        let ours = |t: &str| v.matches_token(t);
        assert_eq!(
            strip_token_query(&format!("token={TOKEN}"), ours),
            Some(String::new())
        );
        assert_eq!(
            strip_token_query(&format!("a=1&token={TOKEN}&b=2"), ours),
            Some("a=1&b=2".into())
        );
        // Jupyter's token passes untouched.
        assert_eq!(strip_token_query("token=jupyter-secret&a=1", ours), None);
        // Both present: only ours goes.
        assert_eq!(
            strip_token_query(&format!("token=jupyter&token={TOKEN}"), ours),
            Some("token=jupyter".into())
        );
        // Encoded name or value still count as ours.
        assert_eq!(
            strip_token_query(&format!("%74oken={}", TOKEN.replace('a', "%61")), ours),
            Some(String::new())
        );
        // Other shapes are left alone.
        for q in [
            "",
            "tokens=x",
            &format!("xtoken={TOKEN}"),
            "token",
            "token=",
            "%zz=1&&",
        ] {
            assert_eq!(strip_token_query(q, ours), None, "{q}");
        }
        assert_eq!(
            strip_token_query(&format!("a=%zz&&token={TOKEN}"), ours),
            Some("a=%zz&".into())
        );
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a+b%20c%2"), "a b c%2");
        assert_eq!(percent_decode("%e2%82%ac%"), "€%");
        assert_eq!(percent_decode("%%41"), "%A");
    }

    #[test]
    fn browser_navigation_detection() {
        let mut h = HeaderMap::new();
        assert!(!is_browser_navigation(&h));
        h.insert(ACCEPT, cookie("application/json"));
        assert!(!is_browser_navigation(&h));
        h.insert(ACCEPT, cookie("Text/HTML,application/xhtml+xml;q=0.9"));
        assert!(is_browser_navigation(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-dest", cookie("document"));
        assert!(is_browser_navigation(&h));
        h.insert("sec-fetch-dest", cookie("image"));
        assert!(!is_browser_navigation(&h));
    }
}
