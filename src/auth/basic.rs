//! The HTTP Basic scheme (RFC 7617): reading `Authorization: Basic …` and the challenge that
//! asks for it.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use http::HeaderValue;

/// Longest user name considered; anything longer is malformed.
const MAX_USER_LEN: usize = 256;
/// Longest password hashed. SHA-crypt's work grows with the password length, so an unbounded
/// password would be a cheap way to burn CPU; longer ones are malformed (refused, no hashing).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Standard base-64, padding optional (some clients leave it off).
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The user and password a client sent with HTTP Basic auth.
///
/// It exists to keep the password in one place that never prints it: `Debug` redacts it, so a
/// stray `{:?}` in a log line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// `user:password` in one allocation, the user UTF-8 (checked when made).
    pair: Vec<u8>,
    /// Where the user name ends.
    colon: usize,
}

impl BasicCredentials {
    /// Credentials from code (tests, the start-up user).
    pub fn new(user: impl Into<String>, password: impl Into<Vec<u8>>) -> BasicCredentials {
        let mut pair = user.into().into_bytes();
        let colon = pair.len();
        pair.push(b':');
        pair.extend_from_slice(&password.into());
        BasicCredentials { pair, colon }
    }

    /// Reads an `Authorization` header value. `None` for anything that is not well-formed Basic
    /// credentials: another scheme, bad base-64, no `:`, an empty or non-UTF-8 user name, or
    /// absurd lengths. The password may be any bytes (RFC 7617 asks for UTF-8; we compare bytes).
    pub fn from_header(value: &HeaderValue) -> Option<BasicCredentials> {
        let raw = value.as_bytes();
        let raw = raw.trim_ascii();
        let split = raw.iter().position(|b| *b == b' ' || *b == b'\t')?;
        let (scheme, token) = raw.split_at(split);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return None;
        }
        let token = token.trim_ascii();
        if token.is_empty() || token.len() > 4 * (MAX_USER_LEN + MAX_PASSWORD_LEN + 1) / 3 + 4 {
            return None;
        }
        let pair = LENIENT_B64.decode(token).ok()?;
        let colon = pair.iter().position(|b| *b == b':')?;
        let (user, password) = (&pair[..colon], &pair[colon + 1..]);
        if user.is_empty() || user.len() > MAX_USER_LEN || password.len() > MAX_PASSWORD_LEN {
            return None;
        }
        std::str::from_utf8(user).ok()?;
        Some(BasicCredentials { pair, colon })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        // Checked to be UTF-8 when made.
        std::str::from_utf8(&self.pair[..self.colon]).unwrap_or_default()
    }

    /// The password bytes.
    pub fn password(&self) -> &[u8] {
        &self.pair[self.colon + 1..]
    }
}

impl fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user())
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The `WWW-Authenticate` value of a 401: `Basic realm="vastgate", charset="UTF-8"`.
pub fn challenge_header() -> HeaderValue {
    HeaderValue::from_static(r#"Basic realm="vastgate", charset="UTF-8""#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn basic(plain: &[u8]) -> HeaderValue {
        header(&format!("Basic {}", STANDARD.encode(plain)))
    }

    #[test]
    fn reads_user_and_password() {
        let c = BasicCredentials::from_header(&basic(b"alice:pa:ss word")).unwrap();
        assert_eq!(c.user(), "alice");
        assert_eq!(c.password(), b"pa:ss word");
        assert_eq!(c, BasicCredentials::new("alice", "pa:ss word"));
        let made = BasicCredentials::new("bob", "");
        assert_eq!((made.user(), made.password()), ("bob", &b""[..]));
    }

    #[test]
    fn scheme_is_case_insensitive_and_padding_optional() {
        let c = BasicCredentials::from_header(&header("bAsIc   YTpi")).unwrap();
        assert_eq!((c.user(), c.password()), ("a", &b"b"[..]));
        let c = BasicCredentials::from_header(&header("Basic YTpiYw")).unwrap();
        assert_eq!(c.password(), b"bc");
    }

    #[test]
    fn empty_password_is_allowed_and_utf8_user_is_kept() {
        let c = BasicCredentials::from_header(&basic("jörg:".as_bytes())).unwrap();
        assert_eq!(c.user(), "jörg");
        assert!(c.password().is_empty());
    }

    #[test]
    fn malformed_headers_are_none() {
        for bad in [
            header(""),
            header("Basic"),
            header("Basic "),
            header("Bearer abc"),
            header("Basicabc"),
            header("Basic !!!!"),
            header("Basic YWxpY2U="), // "alice", no colon
            basic(b":password"),
            basic(b"\xff\xfe:pw"),
            basic(format!("{}:pw", "u".repeat(300)).as_bytes()),
            basic(format!("u:{}", "p".repeat(MAX_PASSWORD_LEN + 1)).as_bytes()),
            header(&format!("Basic {}", "A".repeat(10_000))),
            HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap(),
        ] {
            assert_eq!(BasicCredentials::from_header(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = BasicCredentials::new("alice", "hunter2");
        let shown = format!("{c:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn challenge_names_realm_and_charset() {
        assert_eq!(
            challenge_header(),
            r#"Basic realm="vastgate", charset="UTF-8""#
        );
    }
}
