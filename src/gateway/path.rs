//! Canonical request paths.
//!
//! Routing, authentication and forwarding must all see one and the same path. A gateway that
//! routes `/public/%2e%2e/private` as "something under `/public`" while the upstream decodes it
//! to `/private` has checked access for one path and served another: path confusion (`..`,
//! `%2e`, `%2f`, `%5c`, `//`, `;`, NUL, double encoding) is how gateways get their auth bypassed
//! (DESIGN §7). So every request path goes through [`canonicalize`] exactly once. What can be
//! spelled unambiguously is rewritten to one canonical spelling, which is then routed on,
//! authorized and forwarded as is; what cannot is refused with 400 and the [`PathError`] message.
//!
//! The canonical form starts with `/`; has no empty, `.` or `..` segments (a trailing `/` is
//! kept); has escapes of unreserved characters decoded and every other escape in uppercase hex;
//! and its escaped bytes are valid UTF-8. A canonical path is returned borrowed, so the common
//! request costs one scan and no allocation.

use std::borrow::Cow;

/// Why a request path was refused (the gateway answers 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request target must be a path starting with '/'")]
    NotOriginForm,
    #[error("malformed percent-escape in path: '%' must be followed by two hex digits")]
    InvalidEscape,
    #[error("encoded slash (%2F) in path")]
    EncodedSlash,
    #[error("backslash (raw or %5C) in path")]
    Backslash,
    #[error("NUL byte (raw or %00) in path")]
    Nul,
    #[error("control character 0x{0:02X} (raw or percent-encoded) in path")]
    ControlCharacter(u8),
    #[error("'#' in path: a fragment is never sent to a server")]
    Fragment,
    #[error("character {0:?} is not allowed in a path; percent-encode it")]
    DisallowedCharacter(char),
    #[error("double percent-encoding (%25 followed by two hex digits) in path")]
    DoubleEncoding,
    #[error("percent-encoded bytes in path are not valid UTF-8")]
    InvalidUtf8,
    #[error("'.' or '..' segment spelled with percent-escapes (%2E) in path")]
    EncodedDotSegment,
    #[error("'.' or '..' segment with ';' parameters (like '..;') in path")]
    DotSegmentParameter,
    #[error("'..' in path climbs above the root")]
    AboveRoot,
}

/// Returns the canonical form of the path component of a request target (no query string; the
/// caller passes `uri.path()`), or why it cannot be made unambiguous.
///
/// Empty segments are merged before `..` is resolved (as nginx and servlet containers do), so
/// `/a//../b` is `/b`.
pub fn canonicalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotOriginForm);
    };
    let mut canonical = true;
    let mut depth = 0usize;
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let scanned = scan_segment(segment)?;
        canonical &= !scanned.needs_rewrite;
        match scanned.kind {
            SegmentKind::Name => depth += 1,
            // Only the empty segment after a trailing slash belongs in the canonical form.
            SegmentKind::Empty => canonical &= segments.peek().is_none(),
            SegmentKind::Current => canonical = false,
            SegmentKind::Parent => {
                depth = depth.checked_sub(1).ok_or(PathError::AboveRoot)?;
                canonical = false;
            }
        }
    }
    if canonical {
        Ok(Cow::Borrowed(raw))
    } else {
        rebuild(rest).map(Cow::Owned)
    }
}

/// What a segment means once its escapes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegmentKind {
    Empty,
    Current,
    Parent,
    Name,
}

struct ScannedSegment {
    kind: SegmentKind,
    /// An escape has to be decoded or have its hex uppercased.
    needs_rewrite: bool,
}

/// Validates one segment (the text between two slashes) and classifies it.
fn scan_segment(segment: &str) -> Result<ScannedSegment, PathError> {
    let bytes = segment.as_bytes();
    let mut needs_rewrite = false;
    // Escaped UTF-8 continuation bytes still to come; `utf8_sequence` has checked them already.
    let mut continuation = 0usize;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte != b'%' {
            check_raw(segment, i, byte)?;
            i += 1;
            continue;
        }
        let value = escape_at(bytes, i).ok_or(PathError::InvalidEscape)?;
        needs_rewrite |= is_unreserved(value) || has_lowercase_hex(bytes, i);
        match value {
            b'/' => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            0x01..=0x1F | 0x7F => return Err(PathError::ControlCharacter(value)),
            b'%' if followed_by_hex_digits(bytes, i + 3) => return Err(PathError::DoubleEncoding),
            0x80..=0xFF if continuation > 0 => continuation -= 1,
            0x80..=0xFF => continuation = utf8_sequence(bytes, i)?,
            _ => {}
        }
        i += 3;
    }
    Ok(ScannedSegment {
        kind: classify(bytes)?,
        needs_rewrite,
    })
}

/// Accepts the raw (unescaped) characters of RFC 3986 `pchar`; names the problem otherwise.
fn check_raw(segment: &str, at: usize, byte: u8) -> Result<(), PathError> {
    match byte {
        b if is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@' => Ok(()),
        b'\\' => Err(PathError::Backslash),
        0 => Err(PathError::Nul),
        0x01..=0x1F | 0x7F => Err(PathError::ControlCharacter(byte)),
        b'#' => Err(PathError::Fragment),
        _ => {
            // Every byte before `at` was ASCII, so `at` is a char boundary.
            let c = segment
                .get(at..)
                .and_then(|s| s.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            Err(PathError::DisallowedCharacter(c))
        }
    }
}

/// Classifies an already validated segment. A dot segment is accepted only when spelled with
/// plain dots and without `;` parameters: anything else means different things to different
/// servers, so it is refused rather than resolved.
fn classify(bytes: &[u8]) -> Result<SegmentKind, PathError> {
    match bytes.first() {
        None => return Ok(SegmentKind::Empty),
        Some(b'.' | b'%') => {}
        Some(_) => return Ok(SegmentKind::Name),
    }
    let (name, has_parameters) = split_parameters(bytes);
    let Some((dots, encoded)) = count_dots(name) else {
        return Ok(SegmentKind::Name);
    };
    if encoded {
        Err(PathError::EncodedDotSegment)
    } else if has_parameters {
        Err(PathError::DotSegmentParameter)
    } else if dots == 1 {
        Ok(SegmentKind::Current)
    } else {
        Ok(SegmentKind::Parent)
    }
}

/// Splits a segment at its first `;` (servlet path parameters). `%3B` counts too: a server that
/// decodes before stripping parameters would see `..%3B` as `..;`.
fn split_parameters(bytes: &[u8]) -> (&[u8], bool) {
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b';' || escape_at(bytes, i) == Some(b';') {
            return (bytes.split_at(i).0, true);
        }
        i += 1;
    }
    (bytes, false)
}

/// If `name` is `.` or `..`, spelled with plain dots or `%2E`, returns how many dots and whether
/// any was escaped.
fn count_dots(name: &[u8]) -> Option<(usize, bool)> {
    let mut dots = 0;
    let mut encoded = false;
    let mut i = 0;
    while let Some(&byte) = name.get(i) {
        if byte == b'.' {
            i += 1;
        } else if escape_at(name, i) == Some(b'.') {
            encoded = true;
            i += 3;
        } else {
            return None;
        }
        dots += 1;
        if dots > 2 {
            return None;
        }
    }
    (dots > 0).then_some((dots, encoded))
}

/// Builds the canonical path from `rest` (the path after its leading `/`), which
/// [`canonicalize`] has already validated.
fn rebuild(rest: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(rest.len() + 1);
    out.push('/');
    // `out` is kept as `/` or `/a/b/`; the slash after the last name goes if the path ends there.
    let mut ends_with_name = false;
    for segment in rest.split('/') {
        let kind = scan_segment(segment)?.kind;
        ends_with_name = kind == SegmentKind::Name;
        match kind {
            SegmentKind::Empty | SegmentKind::Current => {}
            SegmentKind::Parent => {
                out.pop();
                let parent_end = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent_end + 1);
            }
            SegmentKind::Name => {
                push_decoded(&mut out, segment);
                out.push('/');
            }
        }
    }
    if ends_with_name {
        out.pop();
    }
    Ok(out)
}

/// Appends a validated segment with unreserved escapes decoded and other escapes uppercased.
fn push_decoded(out: &mut String, segment: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = segment.as_bytes();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match escape_at(bytes, i) {
            Some(value) if is_unreserved(value) => out.push(char::from(value)),
            Some(value) => {
                out.push('%');
                out.push(char::from(HEX[usize::from(value >> 4)]));
                out.push(char::from(HEX[usize::from(value & 0x0F)]));
            }
            None => {
                out.push(char::from(byte));
                i += 1;
                continue;
            }
        }
        i += 3;
    }
}

/// Checks that the escape at `at` starts a complete UTF-8 sequence of escapes that decodes to a
/// valid scalar value (so no overlong `%C0%AE`, no surrogates); returns how many continuation
/// escapes follow it.
fn utf8_sequence(bytes: &[u8], at: usize) -> Result<usize, PathError> {
    let lead = escape_at(bytes, at).ok_or(PathError::InvalidEscape)?;
    let len = match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return Err(PathError::InvalidUtf8),
    };
    let mut sequence = [0u8; 4];
    for (k, slot) in sequence.iter_mut().take(len).enumerate() {
        let pos = at + 3 * k;
        *slot = match bytes.get(pos) {
            Some(b'%') => escape_at(bytes, pos).ok_or(PathError::InvalidEscape)?,
            _ => return Err(PathError::InvalidUtf8),
        };
    }
    match std::str::from_utf8(&sequence[..len]) {
        Ok(_) => Ok(len - 1),
        Err(_) => Err(PathError::InvalidUtf8),
    }
}

/// Whether the next two characters at `at`, once unreserved escapes are decoded, are hex
/// digits: after `%25` they would make a second decoding see a different byte.
fn followed_by_hex_digits(bytes: &[u8], at: usize) -> bool {
    let unit = |at: usize| match *bytes.get(at)? {
        b'%' => escape_at(bytes, at).map(|value| (value, 3)),
        byte => Some((byte, 1)),
    };
    match unit(at) {
        Some((first, len)) if first.is_ascii_hexdigit() => {
            unit(at + len).is_some_and(|(second, _)| second.is_ascii_hexdigit())
        }
        _ => false,
    }
}

/// The byte encoded by a well-formed `%XX` at `at`, if there is one.
fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    if bytes.get(at) != Some(&b'%') {
        return None;
    }
    let high = hex_value(*bytes.get(at + 1)?)?;
    let low = hex_value(*bytes.get(at + 2)?)?;
    Some((high << 4) | low)
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn has_lowercase_hex(bytes: &[u8], at: usize) -> bool {
    bytes
        .get(at + 1..at + 3)
        .is_some_and(|hex| hex.iter().any(u8::is_ascii_lowercase))
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(byte: u8) -> bool {
    matches!(
        byte,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathError::*;

    /// Input and expected result. An `Ok` equal to the input must come back borrowed, any other
    /// `Ok` owned.
    const CASES: &[(&str, Result<&str, PathError>)] = &[
        // Already canonical.
        ("/", Ok("/")),
        ("/sdapi/v1/txt2img", Ok("/sdapi/v1/txt2img")),
        (
            "/files/api/resources/x.png",
            Ok("/files/api/resources/x.png"),
        ),
        ("/files/", Ok("/files/")),
        ("/FILES/", Ok("/FILES/")),
        ("/a;b/c", Ok("/a;b/c")),
        ("/;/", Ok("/;/")),
        ("/a%20b", Ok("/a%20b")),
        ("/caf%C3%A9", Ok("/caf%C3%A9")),
        ("/%E2%82%AC", Ok("/%E2%82%AC")),
        ("/%F0%9F%98%80", Ok("/%F0%9F%98%80")),
        ("/a:b@c!$&'()*+,;=", Ok("/a:b@c!$&'()*+,;=")),
        ("/-._~", Ok("/-._~")),
        ("/...", Ok("/...")),
        ("/.hidden/a..b", Ok("/.hidden/a..b")),
        ("/100%25", Ok("/100%25")),
        ("/%25zz", Ok("/%25zz")),
        ("/%25/2e", Ok("/%25/2e")),
        ("/%25%3A", Ok("/%25%3A")),
        ("/a%3Fb%23c", Ok("/a%3Fb%23c")),
        // Escapes: unreserved decoded, the rest uppercased.
        ("/%61bc", Ok("/abc")),
        ("/%7E", Ok("/~")),
        ("/%7e", Ok("/~")),
        ("/%41%42%43/", Ok("/ABC/")),
        ("/a%2dz%5F", Ok("/a-z_")),
        ("/a%2E", Ok("/a.")),
        ("/%2ehidden", Ok("/.hidden")),
        ("/%2e%2e%2e", Ok("/...")),
        ("/%c3%a9", Ok("/%C3%A9")),
        ("/%3f", Ok("/%3F")),
        ("/%2B%2b", Ok("/%2B%2B")),
        // Empty segments and plain dot segments.
        ("//a///b", Ok("/a/b")),
        ("//", Ok("/")),
        ("//private", Ok("/private")),
        ("/a//", Ok("/a/")),
        ("/files/.", Ok("/files/")),
        ("/files/..", Ok("/")),
        ("/a/b/..", Ok("/a/")),
        ("/files/./x", Ok("/files/x")),
        ("/./", Ok("/")),
        ("/.", Ok("/")),
        ("/a/./b/./", Ok("/a/b/")),
        ("/a/b/../c", Ok("/a/c")),
        ("/a/b/../../", Ok("/")),
        ("/a//../b", Ok("/b")),
        ("/public/../private", Ok("/private")),
        ("/healthz/../files/", Ok("/files/")),
        ("/public/;/../private", Ok("/public/private")),
        ("/%7Efiles/./%63", Ok("/~files/c")),
        // Not a path.
        ("", Err(NotOriginForm)),
        ("*", Err(NotOriginForm)),
        ("http://example.com/", Err(NotOriginForm)),
        ("files/x", Err(NotOriginForm)),
        ("%2F", Err(NotOriginForm)),
        // Malformed escapes.
        ("/%", Err(InvalidEscape)),
        ("/%2", Err(InvalidEscape)),
        ("/a%2", Err(InvalidEscape)),
        ("/%zz", Err(InvalidEscape)),
        ("/%g0", Err(InvalidEscape)),
        ("/%%41", Err(InvalidEscape)),
        ("/%C3%", Err(InvalidEscape)),
        // Encoded separators, backslashes.
        ("/a%2Fb", Err(EncodedSlash)),
        ("/public%2f..%2fprivate", Err(EncodedSlash)),
        ("/public/..%2fprivate", Err(EncodedSlash)),
        ("/public/..%5cprivate", Err(Backslash)),
        ("/public/..\\private", Err(Backslash)),
        ("/a%5Cb", Err(Backslash)),
        // NUL and control characters.
        ("/files%00.png", Err(Nul)),
        ("/files\0.png", Err(Nul)),
        ("/a%0d%0aSet-Cookie:x", Err(ControlCharacter(0x0D))),
        ("/a\r\nSet-Cookie:x", Err(ControlCharacter(0x0D))),
        ("/a\tb", Err(ControlCharacter(0x09))),
        ("/a%1b", Err(ControlCharacter(0x1B))),
        ("/a%7F", Err(ControlCharacter(0x7F))),
        ("/a\x7f", Err(ControlCharacter(0x7F))),
        // Characters that are not pchar.
        ("/a#b", Err(Fragment)),
        ("/#", Err(Fragment)),
        ("/a b", Err(DisallowedCharacter(' '))),
        ("/a\"b", Err(DisallowedCharacter('"'))),
        ("/<script>", Err(DisallowedCharacter('<'))),
        ("/a>", Err(DisallowedCharacter('>'))),
        ("/a^b", Err(DisallowedCharacter('^'))),
        ("/a`b", Err(DisallowedCharacter('`'))),
        ("/{a}", Err(DisallowedCharacter('{'))),
        ("/a|b", Err(DisallowedCharacter('|'))),
        ("/a}", Err(DisallowedCharacter('}'))),
        ("/[::1]", Err(DisallowedCharacter('['))),
        ("/a?b", Err(DisallowedCharacter('?'))),
        ("/café", Err(DisallowedCharacter('é'))),
        // Double encoding.
        ("/%252e%252e/", Err(DoubleEncoding)),
        ("/%252F", Err(DoubleEncoding)),
        ("/%2541", Err(DoubleEncoding)),
        ("/%25%32%65", Err(DoubleEncoding)),
        // Escaped bytes that are not UTF-8.
        ("/%c0%ae%c0%ae/", Err(InvalidUtf8)),
        ("/%E0%80%AE", Err(InvalidUtf8)),
        ("/%C3", Err(InvalidUtf8)),
        ("/%C3/%A9", Err(InvalidUtf8)),
        ("/%C3a", Err(InvalidUtf8)),
        ("/%C3%41", Err(InvalidUtf8)),
        ("/%A9", Err(InvalidUtf8)),
        ("/%ED%A0%80", Err(InvalidUtf8)),
        ("/%F4%90%80%80", Err(InvalidUtf8)),
        ("/%FF", Err(InvalidUtf8)),
        // Dot segments hidden by escapes or parameters.
        ("/public/%2e%2e/private", Err(EncodedDotSegment)),
        ("/public/%2E%2E/private", Err(EncodedDotSegment)),
        ("/public/.%2e/private", Err(EncodedDotSegment)),
        ("/public/%2e./private", Err(EncodedDotSegment)),
        ("/%2e/", Err(EncodedDotSegment)),
        ("/a/%2E", Err(EncodedDotSegment)),
        ("/%2e%2e;/x", Err(EncodedDotSegment)),
        ("/public/..;/private", Err(DotSegmentParameter)),
        ("/.;x/", Err(DotSegmentParameter)),
        ("/a/..;jsessionid=1", Err(DotSegmentParameter)),
        ("/.;", Err(DotSegmentParameter)),
        ("/a/..%3B/x", Err(DotSegmentParameter)),
        // Climbing above the root.
        ("/..", Err(AboveRoot)),
        ("/../x", Err(AboveRoot)),
        ("/a/b/../../..", Err(AboveRoot)),
        ("/a/../..", Err(AboveRoot)),
        ("//..", Err(AboveRoot)),
        ("/./../", Err(AboveRoot)),
    ];

    #[test]
    fn table_of_paths_canonicalizes_as_expected() {
        assert!(CASES.len() >= 70);
        let mut failures = Vec::new();
        for &(input, ref expected) in CASES {
            let got = canonicalize(input);
            let borrowed_as_expected = match (&got, expected) {
                (Ok(Cow::Borrowed(_)), Ok(out)) => *out == input,
                (Ok(Cow::Owned(_)), Ok(out)) => *out != input,
                _ => true,
            };
            let got = got.as_deref().map_err(Clone::clone);
            if got != *expected || !borrowed_as_expected {
                failures.push(format!(
                    "{input:?}: got {got:?}, expected {expected:?} (borrowed as expected: {borrowed_as_expected})"
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn common_paths_are_borrowed_not_allocated() {
        for path in [
            "/",
            "/sdapi/v1/txt2img",
            "/files/api/resources/x.png",
            "/files/",
            "/queue/join",
            "/assets/index-4f3a2b.js",
            "/file=/tmp/gradio/a%20b.png",
        ] {
            assert!(
                matches!(canonicalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path:?} should come back borrowed"
            );
        }
    }

    #[test]
    fn dot_segments_cannot_escape_public_prefix() {
        for attack in [
            "/public/../private",
            "/public/%2e%2e/private",
            "/public/..%2fprivate",
            "/public/..;/private",
            "/public/%252e%252e/private",
            "/public/%c0%ae%c0%ae/private",
        ] {
            let verdict = canonicalize(attack);
            assert!(
                !matches!(&verdict, Ok(p) if p.starts_with("/public/")),
                "{attack:?} was canonicalized to {verdict:?}"
            );
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(
            ControlCharacter(0x0D).to_string(),
            "control character 0x0D (raw or percent-encoded) in path"
        );
        assert_eq!(
            DisallowedCharacter(' ').to_string(),
            "character ' ' is not allowed in a path; percent-encode it"
        );
    }

    /// Canonicalizing `input` must not panic, and an `Ok` must be canonical: unchanged and
    /// borrowed when canonicalized again, with no empty or dot segments.
    fn assert_canonical_output(input: &str) {
        let Ok(out) = canonicalize(input) else {
            return;
        };
        assert!(out.starts_with('/'), "{input:?} -> {out:?}");
        for bad in ["//", "/./", "/../"] {
            assert!(!out.contains(bad), "{input:?} -> {out:?} contains {bad:?}");
        }
        assert!(
            !out.ends_with("/.") && !out.ends_with("/.."),
            "{input:?} -> {out:?} ends with a dot segment"
        );
        match canonicalize(&out) {
            Ok(Cow::Borrowed(again)) if again == out => {}
            other => panic!("{input:?} -> {out:?}, not idempotent: {other:?}"),
        }
    }

    #[test]
    fn every_single_byte_is_handled() {
        for byte in 0..=u8::MAX {
            let c = char::from(byte);
            for input in [
                c.to_string(),
                format!("/{c}"),
                format!("/{c}/"),
                format!("/a{c}b/.."),
                format!("/.{c}/x"),
                format!("/%{c}0"),
                format!("/%2{c}"),
                format!("/%{byte:02X}"),
                format!("/%{byte:02x}/"),
                format!("/%25%{byte:02X}1"),
                format!("/%C3%{byte:02X}"),
            ] {
                assert_canonical_output(&input);
            }
        }
    }

    #[test]
    fn generated_paths_never_panic_and_come_out_canonical() {
        const TOKENS: &[&str] = &[
            "/",
            "/",
            "/",
            ".",
            "..",
            "a",
            "B",
            "2",
            "e",
            "%",
            "%2",
            "%2e",
            "%2E",
            "%2f",
            "%5c",
            "%25",
            "%32",
            "%41",
            "%61",
            "%7e",
            "%20",
            "%3b",
            "%3B",
            ";",
            "%c3",
            "%a9",
            "%C0",
            "%AE",
            "%E2%82%AC",
            "%zz",
            "%00",
            "%0a",
            "\\",
            "#",
            " ",
            "é",
            "~",
            ":",
            "@",
            "?",
        ];
        // xorshift64: deterministic, no dependency.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut input = String::new();
        for _ in 0..50_000 {
            input.clear();
            if next() % 8 != 0 {
                input.push('/');
            }
            let tokens = 1 + next() % 10;
            for _ in 0..tokens {
                let pick = usize::try_from(next() % TOKENS.len() as u64).unwrap_or(0);
                input.push_str(TOKENS[pick]);
            }
            assert_canonical_output(&input);
        }
    }
}
