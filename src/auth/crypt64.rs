//! The base-64 variant of Unix `crypt(3)` ("./0-9A-Za-z", least significant bits first), shared by
//! MD5-crypt (`$apr1$`, `$1$`) and SHA-crypt (`$5$`, `$6$`).
//!
//! It exists as its own module because the standard base-64 alphabets and bit order differ, and
//! both crypt schemes need the same byte-triplet encoder.

/// The crypt(3) alphabet, index = 6-bit value.
pub(crate) const ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Appends `chars` characters encoding the 24-bit value `b2 b1 b0`, low 6 bits first.
pub(crate) fn push_24bit(out: &mut String, b2: u8, b1: u8, b0: u8, chars: usize) {
    let mut w = (u32::from(b2) << 16) | (u32::from(b1) << 8) | u32::from(b0);
    for _ in 0..chars {
        out.push(char::from(ALPHABET[(w & 0x3f) as usize]));
        w >>= 6;
    }
}

/// Whether every byte of `s` is in the crypt alphabet.
pub(crate) fn is_crypt64(s: &str) -> bool {
    s.bytes().all(|b| ALPHABET.contains(&b))
}

/// `len` random characters from the crypt alphabet (salts and dummy digests).
pub(crate) fn random_string(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..64)]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_low_bits_first() {
        let mut s = String::new();
        push_24bit(&mut s, 0, 0, 0x3f, 4);
        assert_eq!(s, "z...");
        let mut s = String::new();
        push_24bit(&mut s, 0, 0x01, 0x00, 2);
        assert_eq!(s, ".2");
    }

    #[test]
    fn random_strings_use_only_the_alphabet() {
        let s = random_string(200);
        assert_eq!(s.len(), 200);
        assert!(is_crypt64(&s));
        assert!(!is_crypt64("abc$"));
    }
}
