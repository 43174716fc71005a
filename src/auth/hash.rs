//! One stored password hash from an htpasswd file: its scheme, its cost, and how to check a
//! password against it.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, NO_PAD, STANDARD};
use base64::Engine;
use rand::RngCore;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::crypt64;
use super::md5crypt::md5_crypt;
use super::shacrypt::{self, sha_crypt, ShaVariant};

/// bcrypt's own base-64 (the engine the `bcrypt` crate decodes with, so validation agrees).
const BCRYPT_B64: GeneralPurpose = GeneralPurpose::new(&alphabet::BCRYPT, NO_PAD);

/// The hashing schemes vastgate accepts, i.e. everything Apache's `htpasswd` writes except DES.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `$2y$`, `$2a$`, `$2b$` (`htpasswd -B`).
    Bcrypt,
    /// `$apr1$` (`htpasswd -m`, the default) and glibc's `$1$`.
    Md5Crypt,
    /// `{SHA}`: unsalted SHA-1 (`htpasswd -s`).
    Sha1,
    /// `$5$` (`htpasswd -2`).
    Sha256Crypt,
    /// `$6$` (`htpasswd -5`).
    Sha512Crypt,
    /// The password itself (`htpasswd -p`); only accepted when the configuration allows it.
    Plain,
}

/// Why a hash field could not be used. The messages never quote the field itself (it may be a
/// plaintext password), at most a scheme identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("empty password hash")]
    Empty,
    #[error("malformed {scheme} hash: {reason}")]
    Malformed {
        scheme: &'static str,
        reason: &'static str,
    },
    #[error(
        "unknown hash scheme `{0}` (supported: bcrypt `$2y$`, `$apr1$`, `{{SHA}}`, `$5$`, `$6$`); \
         re-create the entry with `htpasswd -B`"
    )]
    UnknownScheme(String),
    #[error(
        "traditional DES crypt (`htpasswd -d`) is not supported: it only uses 8 characters of the \
         password; re-create the entry with `htpasswd -B`"
    )]
    DesCrypt,
    #[error(
        "not a recognised hash; if it is a plaintext password, plaintext is disabled \
         (re-create the entry with `htpasswd -B`)"
    )]
    PlaintextNotAllowed,
}

/// A validated htpasswd hash.
///
/// It exists so that the file is understood once, at load: a request only runs the scheme's
/// computation. The original text is kept because it is part of the success-cache key (a changed
/// line invalidates cached successes by itself). `Debug` never prints the text.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHash {
    text: String,
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Bcrypt {
        cost: u32,
    },
    Md5Crypt {
        magic: &'static str,
        salt: String,
        digest: String,
    },
    Sha1 {
        digest: [u8; 20],
    },
    ShaCrypt {
        variant: ShaVariant,
        rounds: u32,
        salt: String,
        digest: String,
    },
    Plain,
}

impl StoredHash {
    /// Parses the hash field of an htpasswd line. Anything not recognised is plaintext when
    /// `allow_plaintext` is set, except text that names an unknown scheme (`$id$…`, `{ID}…`),
    /// which is always reported.
    pub fn parse(text: &str, allow_plaintext: bool) -> Result<StoredHash, HashError> {
        if text.is_empty() {
            return Err(HashError::Empty);
        }
        let kind = if let Some(rest) = ["$2y$", "$2a$", "$2b$"]
            .iter()
            .find_map(|p| text.strip_prefix(p))
        {
            parse_bcrypt(rest)?
        } else if let Some(rest) = text.strip_prefix("$apr1$") {
            parse_md5crypt("$apr1$", rest)?
        } else if let Some(rest) = text.strip_prefix("$1$") {
            parse_md5crypt("$1$", rest)?
        } else if let Some(rest) = text.strip_prefix("$5$") {
            parse_shacrypt(ShaVariant::Sha256, rest)?
        } else if let Some(rest) = text.strip_prefix("$6$") {
            parse_shacrypt(ShaVariant::Sha512, rest)?
        } else if let Some(rest) = text.strip_prefix("{SHA}") {
            parse_sha1(rest)?
        } else if let Some(id) = scheme_identifier(text) {
            return Err(HashError::UnknownScheme(id));
        } else if allow_plaintext {
            Kind::Plain
        } else if text.len() == 13 && crypt64::is_crypt64(text) {
            return Err(HashError::DesCrypt);
        } else {
            return Err(HashError::PlaintextNotAllowed);
        };
        Ok(StoredHash {
            text: text.to_owned(),
            kind,
        })
    }

    /// The hash exactly as written in the file.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The scheme this hash uses.
    pub fn scheme(&self) -> Scheme {
        match &self.kind {
            Kind::Bcrypt { .. } => Scheme::Bcrypt,
            Kind::Md5Crypt { .. } => Scheme::Md5Crypt,
            Kind::Sha1 { .. } => Scheme::Sha1,
            Kind::ShaCrypt {
                variant: ShaVariant::Sha256,
                ..
            } => Scheme::Sha256Crypt,
            Kind::ShaCrypt {
                variant: ShaVariant::Sha512,
                ..
            } => Scheme::Sha512Crypt,
            Kind::Plain => Scheme::Plain,
        }
    }

    /// The scheme's work parameter: bcrypt cost, SHA-crypt rounds, 0 for the others.
    pub fn cost(&self) -> u32 {
        match &self.kind {
            Kind::Bcrypt { cost } => *cost,
            Kind::ShaCrypt { rounds, .. } => *rounds,
            _ => 0,
        }
    }

    /// A rough estimate of one verification's work, used only to rank schemes.
    pub(crate) fn work_estimate(&self) -> u64 {
        match &self.kind {
            // ~90 ms at cost 10 (DESIGN §7); doubles with each step.
            Kind::Bcrypt { cost } => 90_000u64.saturating_mul(1u64 << (*cost).min(40)) >> 10,
            // Roughly a microsecond per round.
            Kind::ShaCrypt { rounds, .. } => u64::from(*rounds),
            Kind::Md5Crypt { .. } => 300,
            Kind::Sha1 { .. } | Kind::Plain => 1,
        }
    }

    /// Whether `password` matches. Runs the full computation; call it off the async threads.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.kind {
            Kind::Bcrypt { .. } => bcrypt::verify(password, &self.text).unwrap_or(false),
            Kind::Md5Crypt {
                magic,
                salt,
                digest,
            } => {
                let computed = md5_crypt(password, salt.as_bytes(), magic.as_bytes());
                computed.as_bytes().ct_eq(digest.as_bytes()).into()
            }
            Kind::Sha1 { digest } => Sha1::digest(password).as_slice().ct_eq(digest).into(),
            Kind::ShaCrypt {
                variant,
                rounds,
                salt,
                digest,
            } => {
                let computed = sha_crypt(*variant, password, salt.as_bytes(), *rounds);
                computed.as_bytes().ct_eq(digest.as_bytes()).into()
            }
            // Comparing digests keeps the length of the stored password secret.
            Kind::Plain => Sha256::digest(password)
                .as_slice()
                .ct_eq(Sha256::digest(self.text.as_bytes()).as_slice())
                .into(),
        }
    }

    /// A random hash of the same scheme and cost that no password matches (with overwhelming
    /// probability). Verifying an unknown user against it costs what a real user costs. Built
    /// from random bytes, so making it costs no hashing.
    pub(crate) fn dummy_like(&self) -> StoredHash {
        let mut rng = rand::thread_rng();
        let (text, kind) = match &self.kind {
            Kind::Bcrypt { cost } => {
                let mut salt = [0u8; 16];
                let mut digest = [0u8; 23];
                rng.fill_bytes(&mut salt);
                rng.fill_bytes(&mut digest);
                let text = format!(
                    "$2y${cost:02}${}{}",
                    BCRYPT_B64.encode(salt),
                    BCRYPT_B64.encode(digest)
                );
                (text, Kind::Bcrypt { cost: *cost })
            }
            Kind::Md5Crypt { magic, .. } => {
                let salt = crypt64::random_string(8);
                let digest = crypt64::random_string(22);
                let text = format!("{magic}{salt}${digest}");
                (
                    text,
                    Kind::Md5Crypt {
                        magic,
                        salt,
                        digest,
                    },
                )
            }
            Kind::Sha1 { .. } => {
                let mut digest = [0u8; 20];
                rng.fill_bytes(&mut digest);
                (
                    format!("{{SHA}}{}", STANDARD.encode(digest)),
                    Kind::Sha1 { digest },
                )
            }
            Kind::ShaCrypt {
                variant, rounds, ..
            } => {
                let salt = crypt64::random_string(16);
                let digest = crypt64::random_string(variant.digest_len());
                let id = match variant {
                    ShaVariant::Sha256 => 5,
                    ShaVariant::Sha512 => 6,
                };
                let text = format!("${id}$rounds={rounds}${salt}${digest}");
                (
                    text,
                    Kind::ShaCrypt {
                        variant: *variant,
                        rounds: *rounds,
                        salt,
                        digest,
                    },
                )
            }
            Kind::Plain => (crypt64::random_string(32), Kind::Plain),
        };
        StoredHash { text, kind }
    }

    /// The dummy for a table without users: bcrypt at the cost vastgate writes.
    pub(crate) fn default_dummy() -> StoredHash {
        StoredHash {
            text: String::new(),
            kind: Kind::Bcrypt {
                cost: super::DEFAULT_BCRYPT_COST,
            },
        }
        .dummy_like()
    }
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredHash")
            .field("scheme", &self.scheme())
            .field("cost", &self.cost())
            .finish_non_exhaustive()
    }
}

/// `$id$` or `{ID}` at the start of `text`, for a scheme we do not know.
fn scheme_identifier(text: &str) -> Option<String> {
    let (open, close, allowed): (char, char, fn(char) -> bool) = match text.chars().next() {
        Some('$') => ('$', '$', |c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        Some('{') => ('{', '}', |c| c.is_ascii_alphanumeric() || c == '-'),
        _ => return None,
    };
    let rest = &text[1..];
    let end = rest.find(close)?;
    let id = &rest[..end];
    if id.is_empty() || id.len() > 16 || !id.chars().all(allowed) {
        return None;
    }
    let named = format!("{open}{id}{close}");
    // Only real schemes are named in messages: an unknown `$...$` may be the start of a
    // plaintext password, which must not reach a log.
    if KNOWN_FOREIGN_SCHEMES.contains(&named.as_str()) {
        Some(named)
    } else {
        Some(format!("{open}…{close}"))
    }
}

/// Hash schemes of other tools that vastgate recognises by name but cannot verify.
const KNOWN_FOREIGN_SCHEMES: &[&str] = &[
    "$2x$",
    "$y$",
    "$gy$",
    "$7$",
    "$3$",
    "$md5$",
    "$sha1$",
    "$argon2i$",
    "$argon2d$",
    "$argon2id$",
    "$scrypt$",
    "$pbkdf2$",
    "$pbkdf2-sha256$",
    "$pbkdf2-sha512$",
    "{SSHA}",
    "{SSHA256}",
    "{SSHA512}",
    "{SHA256}",
    "{SHA512}",
    "{MD5}",
    "{SMD5}",
    "{CRYPT}",
    "{PLAIN}",
];

fn malformed(scheme: &'static str, reason: &'static str) -> HashError {
    HashError::Malformed { scheme, reason }
}

fn parse_bcrypt(rest: &str) -> Result<Kind, HashError> {
    const S: &str = "bcrypt";
    let (cost, body) = rest
        .split_once('$')
        .ok_or_else(|| malformed(S, "missing `$` after the cost"))?;
    if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(S, "the cost must be two digits"));
    }
    let cost: u32 = cost
        .parse()
        .map_err(|_| malformed(S, "the cost must be two digits"))?;
    if !(4..=31).contains(&cost) {
        return Err(malformed(S, "the cost must be between 04 and 31"));
    }
    if body.len() != 53 || !body.is_ascii() {
        return Err(malformed(S, "salt and digest must be 53 characters"));
    }
    let (salt, digest) = body.split_at(22);
    match (BCRYPT_B64.decode(salt), BCRYPT_B64.decode(digest)) {
        (Ok(s), Ok(d)) if s.len() == 16 && d.len() == 23 => Ok(Kind::Bcrypt { cost }),
        _ => Err(malformed(S, "salt or digest is not bcrypt base-64")),
    }
}

fn parse_md5crypt(magic: &'static str, rest: &str) -> Result<Kind, HashError> {
    const S: &str = "MD5-crypt";
    let (salt, digest) = rest
        .split_once('$')
        .ok_or_else(|| malformed(S, "missing `$` after the salt"))?;
    if salt.len() > 8 {
        return Err(malformed(S, "the salt is longer than 8 characters"));
    }
    if digest.len() != 22 || !crypt64::is_crypt64(digest) {
        return Err(malformed(
            S,
            "the digest must be 22 crypt base-64 characters",
        ));
    }
    Ok(Kind::Md5Crypt {
        magic,
        salt: salt.to_owned(),
        digest: digest.to_owned(),
    })
}

fn parse_shacrypt(variant: ShaVariant, rest: &str) -> Result<Kind, HashError> {
    const S: &str = "SHA-crypt";
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => {
            let (n, rest) = r
                .split_once('$')
                .ok_or_else(|| malformed(S, "missing `$` after rounds"))?;
            if n.is_empty() || n.len() > 9 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(S, "rounds must be a number"));
            }
            let n: u32 = n
                .parse()
                .map_err(|_| malformed(S, "rounds must be a number"))?;
            if !(shacrypt::MIN_ROUNDS..=shacrypt::MAX_ROUNDS).contains(&n) {
                return Err(malformed(S, "rounds must be between 1000 and 999999999"));
            }
            (n, rest)
        }
        None => (shacrypt::DEFAULT_ROUNDS, rest),
    };
    let (salt, digest) = rest
        .split_once('$')
        .ok_or_else(|| malformed(S, "missing `$` after the salt"))?;
    if salt.len() > shacrypt::MAX_SALT_LEN {
        return Err(malformed(S, "the salt is longer than 16 characters"));
    }
    if digest.len() != variant.digest_len() || !crypt64::is_crypt64(digest) {
        return Err(malformed(
            S,
            "the digest has the wrong length or characters",
        ));
    }
    Ok(Kind::ShaCrypt {
        variant,
        rounds,
        salt: salt.to_owned(),
        digest: digest.to_owned(),
    })
}

fn parse_sha1(rest: &str) -> Result<Kind, HashError> {
    let bytes = STANDARD
        .decode(rest)
        .map_err(|_| malformed("{SHA}", "the digest is not base-64"))?;
    let digest: [u8; 20] = bytes
        .try_into()
        .map_err(|_| malformed("{SHA}", "the digest is not 20 bytes"))?;
    Ok(Kind::Sha1 { digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines printed by Apache's `htpasswd` (2.4, Debian 12) for user `u`, password `p`.
    const BCRYPT5: &str = "$2y$05$nZsvWgt44pXpyRcQ3y/JCO4T2Bp/FkzWEOYsvbxCud.4JYXmt3P0m";
    const APR1: &str = "$apr1$OX7deuCZ$70sBkAmCmTwTDN/eageSw.";
    const SHA1: &str = "{SHA}UWuXg/ylF+7L0dBk2i0WUxCxl1k=";
    const SHA256: &str = "$5$vrUg8gULFdXaggTF$hm7rSkaTMeVn3w/Nc4dxf8EiT1201UFw.ZY5ZzvUJXB";
    const SHA512: &str = "$6$1c8xdP5kp2dCB8CB$dy8TWrUjPyBgsKwmAv/nDt5geiMTFONEraJTqN4OvKsMNyv/2DeSP9Wd8GhEM390SebS049Pd0U5kno0NKvvR1";
    const SHA512_ROUNDS: &str = "$6$rounds=6000$VRCp8Li9ltSa.NNG$2GlXBlAoTWVTzY97dpNgwm09kbk1UC7LvpVLQjeFhLJSp3UF/cZ8CWUDar77q1phiAgkESVZvwexOXIfSbsFr/";

    #[test]
    fn every_apache_format_verifies_the_right_password_only() {
        for (text, scheme) in [
            (BCRYPT5, Scheme::Bcrypt),
            (APR1, Scheme::Md5Crypt),
            (SHA1, Scheme::Sha1),
            (SHA256, Scheme::Sha256Crypt),
            (SHA512, Scheme::Sha512Crypt),
            (SHA512_ROUNDS, Scheme::Sha512Crypt),
        ] {
            let h = StoredHash::parse(text, false).unwrap();
            assert_eq!(h.scheme(), scheme, "{text}");
            assert!(h.verify(b"p"), "{text}");
            assert!(!h.verify(b"P"), "{text}");
            assert!(!h.verify(b""), "{text}");
        }
    }

    #[test]
    fn costs_are_read() {
        assert_eq!(StoredHash::parse(BCRYPT5, false).unwrap().cost(), 5);
        assert_eq!(StoredHash::parse(SHA512, false).unwrap().cost(), 5000);
        assert_eq!(
            StoredHash::parse(SHA512_ROUNDS, false).unwrap().cost(),
            6000
        );
    }

    #[test]
    fn bcrypt_variants_2a_and_2b_are_accepted() {
        for prefix in ["$2a$", "$2b$"] {
            let text = BCRYPT5.replacen("$2y$", prefix, 1);
            assert!(StoredHash::parse(&text, false).unwrap().verify(b"p"));
        }
    }

    #[test]
    fn plaintext_only_when_allowed() {
        assert_eq!(
            StoredHash::parse("secret", false),
            Err(HashError::PlaintextNotAllowed)
        );
        let h = StoredHash::parse("secret", true).unwrap();
        assert_eq!(h.scheme(), Scheme::Plain);
        assert!(h.verify(b"secret"));
        assert!(!h.verify(b"secret2"));
        assert!(!h.verify(b"secre"));
    }

    #[test]
    fn unknown_schemes_are_named_even_with_plaintext_allowed() {
        for (text, id) in [
            ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "$argon2id$"),
            ("$y$j9T$salt$hash", "$y$"),
            ("{SSHA}abcdef", "{SSHA}"),
            ("$hunter2$not-a-hash", "$…$"),
            (
                "$2x$05$nZsvWgt44pXpyRcQ3y/JCO4T2Bp/FkzWEOYsvbxCud.4JYXmt3P0m",
                "$2x$",
            ),
        ] {
            for plain in [false, true] {
                assert_eq!(
                    StoredHash::parse(text, plain),
                    Err(HashError::UnknownScheme(id.into()))
                );
            }
        }
    }

    #[test]
    fn des_crypt_is_reported() {
        assert_eq!(
            StoredHash::parse("QbhpIFeww7ocA", false),
            Err(HashError::DesCrypt)
        );
    }

    #[test]
    fn malformed_hashes_are_rejected() {
        for text in [
            "$2y$5$nZsvWgt44pXpyRcQ3y/JCO4T2Bp/FkzWEOYsvbxCud.4JYXmt3P0m",
            "$2y$03$nZsvWgt44pXpyRcQ3y/JCO4T2Bp/FkzWEOYsvbxCud.4JYXmt3P0m",
            "$2y$32$nZsvWgt44pXpyRcQ3y/JCO4T2Bp/FkzWEOYsvbxCud.4JYXmt3P0m",
            "$2y$05$nZsvWgt44pXpyRcQ3y/JCO4T2Bp/FkzWEOYsvbxCud.4JYXmt3P0",
            "$2y$05$nZsvWgt44pXpyRcQ3y/JCO4T2Bp/FkzWEOYsvbxCud.4JYXmt3P0!",
            "$2y$05$",
            "$2y$",
            "$apr1$OX7deuCZ",
            "$apr1$OX7deuCZ$70sBkAmCmTwTDN/eageSw",
            "$apr1$OX7deuCZxx$70sBkAmCmTwTDN/eageSw.",
            "{SHA}not base64!",
            "{SHA}UWuXg/ylF+7L0dBk2i0W",
            "$5$rounds=999$salt$hm7rSkaTMeVn3w/Nc4dxf8EiT1201UFw.ZY5ZzvUJXB",
            "$5$rounds=$salt$hm7rSkaTMeVn3w/Nc4dxf8EiT1201UFw.ZY5ZzvUJXB",
            "$5$rounds=5000",
            "$5$salt",
            "$5$salt$short",
            "$6$vrUg8gULFdXaggTF$hm7rSkaTMeVn3w/Nc4dxf8EiT1201UFw.ZY5ZzvUJXB",
            "$5$01234567890123456$hm7rSkaTMeVn3w/Nc4dxf8EiT1201UFw.ZY5ZzvUJXB",
        ] {
            assert!(
                matches!(
                    StoredHash::parse(text, true),
                    Err(HashError::Malformed { .. })
                ),
                "{text}"
            );
        }
        assert_eq!(StoredHash::parse("", true), Err(HashError::Empty));
    }

    #[test]
    fn errors_never_quote_the_field() {
        let err = StoredHash::parse("hunter2", false).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = StoredHash::parse("$2y$05$hunter2", false)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn dummies_keep_scheme_and_cost_and_match_nothing() {
        for text in [BCRYPT5, APR1, SHA1, SHA256, SHA512_ROUNDS] {
            let real = StoredHash::parse(text, false).unwrap();
            let dummy = real.dummy_like();
            assert_eq!(dummy.scheme(), real.scheme());
            assert_eq!(dummy.cost(), real.cost());
            assert_ne!(dummy.as_str(), real.as_str());
            // The dummy's text parses back to the same thing: it is a well-formed hash.
            assert_eq!(StoredHash::parse(dummy.as_str(), false).unwrap(), dummy);
            assert!(!dummy.verify(b"p"));
        }
    }

    #[test]
    fn default_dummy_is_bcrypt_at_the_written_cost() {
        let d = StoredHash::default_dummy();
        assert_eq!(d.scheme(), Scheme::Bcrypt);
        assert_eq!(d.cost(), crate::auth::DEFAULT_BCRYPT_COST);
        assert!(StoredHash::parse(d.as_str(), false).is_ok());
    }

    #[test]
    fn debug_does_not_print_the_hash() {
        let h = StoredHash::parse("topsecret", true).unwrap();
        assert!(!format!("{h:?}").contains("topsecret"));
    }

    #[test]
    fn work_estimate_ranks_bcrypt_cost() {
        let b5 = StoredHash::parse(BCRYPT5, false).unwrap();
        let b10 = b5.dummy_like();
        let b10 = StoredHash::parse(&b10.as_str().replacen("$05$", "$10$", 1), false).unwrap();
        let sha = StoredHash::parse(SHA512, false).unwrap();
        assert!(b10.work_estimate() > sha.work_estimate());
        assert!(b10.work_estimate() > b5.work_estimate());
    }
}
