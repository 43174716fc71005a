//! SHA-crypt (Ulrich Drepper's `$5$` SHA-256 and `$6$` SHA-512 schemes), written by `htpasswd -2`
//! and `htpasswd -5`.
//!
//! Hand-written over `sha2` (already a dependency) rather than adding a crate: the algorithm is a
//! page of code, fully pinned down by the vectors from glibc below and by the integration tests
//! against the real `htpasswd`.

use sha2::digest::Digest;
use sha2::{Sha256, Sha512};

use super::crypt64::push_24bit;

/// glibc's default and bounds for `rounds=`.
pub(crate) const DEFAULT_ROUNDS: u32 = 5000;
pub(crate) const MIN_ROUNDS: u32 = 1000;
pub(crate) const MAX_ROUNDS: u32 = 999_999_999;
/// Longer salts are truncated by glibc; the digest then names the truncated salt.
pub(crate) const MAX_SALT_LEN: usize = 16;

/// Which of the two SHA-crypt schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShaVariant {
    /// `$5$`: SHA-256, 43-character digest.
    Sha256,
    /// `$6$`: SHA-512, 86-character digest.
    Sha512,
}

impl ShaVariant {
    /// Length of the encoded digest.
    pub(crate) fn digest_len(self) -> usize {
        match self {
            ShaVariant::Sha256 => 43,
            ShaVariant::Sha512 => 86,
        }
    }
}

/// Computes the encoded SHA-crypt digest of `password` with `salt` (truncated to 16 bytes) and
/// `rounds` (clamped to glibc's bounds).
pub(crate) fn sha_crypt(variant: ShaVariant, password: &[u8], salt: &[u8], rounds: u32) -> String {
    let salt = &salt[..salt.len().min(MAX_SALT_LEN)];
    let rounds = rounds.clamp(MIN_ROUNDS, MAX_ROUNDS);
    match variant {
        ShaVariant::Sha256 => {
            let c = digest_rounds::<Sha256>(password, salt, rounds);
            let mut out = encode(&c, SHA256_ORDER);
            push_24bit(&mut out, 0, c[31], c[30], 3);
            out
        }
        ShaVariant::Sha512 => {
            let c = digest_rounds::<Sha512>(password, salt, rounds);
            let mut out = encode(&c, SHA512_ORDER);
            push_24bit(&mut out, 0, 0, c[63], 2);
            out
        }
    }
}

/// Byte triplets of the final encoding, as in the specification.
const SHA256_ORDER: &[(usize, usize, usize)] = &[
    (0, 10, 20),
    (21, 1, 11),
    (12, 22, 2),
    (3, 13, 23),
    (24, 4, 14),
    (15, 25, 5),
    (6, 16, 26),
    (27, 7, 17),
    (18, 28, 8),
    (9, 19, 29),
];

const SHA512_ORDER: &[(usize, usize, usize)] = &[
    (0, 21, 42),
    (22, 43, 1),
    (44, 2, 23),
    (3, 24, 45),
    (25, 46, 4),
    (47, 5, 26),
    (6, 27, 48),
    (28, 49, 7),
    (50, 8, 29),
    (9, 30, 51),
    (31, 52, 10),
    (53, 11, 32),
    (12, 33, 54),
    (34, 55, 13),
    (56, 14, 35),
    (15, 36, 57),
    (37, 58, 16),
    (59, 17, 38),
    (18, 39, 60),
    (40, 61, 19),
    (62, 20, 41),
];

/// Encodes the full triplets; the caller appends the one or two leftover bytes.
fn encode(c: &[u8], order: &[(usize, usize, usize)]) -> String {
    let mut out = String::with_capacity(86);
    for &(a, b, d) in order {
        push_24bit(&mut out, c[a], c[b], c[d], 4);
    }
    out
}

/// Repeats `block` until `len` bytes are produced (the P and S sequences).
fn repeat_to(block: &[u8], len: usize) -> Vec<u8> {
    block.iter().copied().cycle().take(len).collect()
}

fn digest_rounds<D: Digest + Clone>(password: &[u8], salt: &[u8], rounds: u32) -> Vec<u8> {
    let size = <D as Digest>::output_size();

    let mut b = D::new();
    b.update(password);
    b.update(salt);
    b.update(password);
    let b = b.finalize();

    let mut a = D::new();
    a.update(password);
    a.update(salt);
    let mut remaining = password.len();
    while remaining > 0 {
        let n = remaining.min(size);
        a.update(&b[..n]);
        remaining -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            a.update(&b);
        } else {
            a.update(password);
        }
        i >>= 1;
    }
    let a = a.finalize();

    let mut dp = D::new();
    for _ in 0..password.len() {
        dp.update(password);
    }
    let p = repeat_to(&dp.finalize(), password.len());

    let mut ds = D::new();
    for _ in 0..(16 + usize::from(a[0])) {
        ds.update(salt);
    }
    let s = repeat_to(&ds.finalize(), salt.len());

    let mut c = a.to_vec();
    for round in 0..rounds {
        let mut ctx = D::new();
        if round & 1 == 1 {
            ctx.update(&p);
        } else {
            ctx.update(&c);
        }
        if round % 3 != 0 {
            ctx.update(&s);
        }
        if round % 7 != 0 {
            ctx.update(&p);
        }
        if round & 1 == 1 {
            ctx.update(&c);
        } else {
            ctx.update(&p);
        }
        c = ctx.finalize().to_vec();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from Drepper's specification, confirmed with glibc's crypt(3).
    #[test]
    fn sha256_default_rounds_vector() {
        assert_eq!(
            sha_crypt(ShaVariant::Sha256, b"Hello world!", b"saltstring", 5000),
            "5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
        );
    }

    #[test]
    fn sha512_default_rounds_vector() {
        assert_eq!(
            sha_crypt(ShaVariant::Sha512, b"Hello world!", b"saltstring", 5000),
            "svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
    }

    #[test]
    fn explicit_rounds_and_long_salt_vectors() {
        assert_eq!(
            sha_crypt(
                ShaVariant::Sha256,
                b"Hello world!",
                b"saltstringsaltstring",
                10000
            ),
            "3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"
        );
        assert_eq!(
            sha_crypt(
                ShaVariant::Sha512,
                b"Hello world!",
                b"saltstringsaltstring",
                10000
            ),
            "OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
        );
    }

    #[test]
    fn empty_and_long_passwords_match_glibc() {
        assert_eq!(
            sha_crypt(ShaVariant::Sha512, b"", b"x", 1000),
            "JUgHESfT/mKR2X.Qz/PrkEgBINN.wbH/GsJhhFRcgrb0a4MjVYFixxXtKicccBbv9PSG/n1kVdpVqZiR7Brv1."
        );
        assert_eq!(
            sha_crypt(ShaVariant::Sha256, &[b'a'; 100], b"0123456789abcdef", 1000),
            "QD4cBksJ8th6QYzvXkETBhGinyeJBUpugNqJZ8qiwF5"
        );
    }

    #[test]
    fn digest_lengths_match_the_variant() {
        for v in [ShaVariant::Sha256, ShaVariant::Sha512] {
            assert_eq!(sha_crypt(v, b"pw", b"salt", 1000).len(), v.digest_len());
        }
    }
}
