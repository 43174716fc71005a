//! MD5-crypt: Apache's `$apr1$` (the default of `htpasswd -m`) and glibc's `$1$`.
//!
//! Written here rather than pulled in because it is thirty lines over `md-5`, and no maintained
//! crate offers the Apache variant. Only verification needs it: vastgate writes bcrypt.

use md5::{Digest, Md5};

use super::crypt64::push_24bit;

/// Computes the 22-character MD5-crypt digest of `password` with `salt` (at most 8 bytes are
/// used) under `magic` (`"$apr1$"` or `"$1$"`).
pub(crate) fn md5_crypt(password: &[u8], salt: &[u8], magic: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];

    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic);
    ctx.update(salt);
    let mut remaining = password.len();
    while remaining > 0 {
        let n = remaining.min(16);
        ctx.update(&alt[..n]);
        remaining -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();

    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(password);
        } else {
            ctx.update(fin);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round & 1 == 1 {
            ctx.update(fin);
        } else {
            ctx.update(password);
        }
        fin = ctx.finalize();
    }

    let f = fin;
    let mut out = String::with_capacity(22);
    push_24bit(&mut out, f[0], f[6], f[12], 4);
    push_24bit(&mut out, f[1], f[7], f[13], 4);
    push_24bit(&mut out, f[2], f[8], f[14], 4);
    push_24bit(&mut out, f[3], f[9], f[15], 4);
    push_24bit(&mut out, f[4], f[10], f[5], 4);
    push_24bit(&mut out, 0, 0, f[11], 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_apache_apr1_vector() {
        // `htpasswd -nbm u p` printed u:$apr1$OX7deuCZ$70sBkAmCmTwTDN/eageSw.
        assert_eq!(
            md5_crypt(b"p", b"OX7deuCZ", b"$apr1$"),
            "70sBkAmCmTwTDN/eageSw."
        );
    }

    #[test]
    fn matches_openssl_apr1_vector() {
        // `openssl passwd -apr1 -salt saltsalt password`
        assert_eq!(
            md5_crypt(b"password", b"saltsalt", b"$apr1$"),
            "yAAkm4libquA.ZWLHbSBq/"
        );
    }

    #[test]
    fn matches_glibc_md5_vector() {
        // `openssl passwd -1 -salt saltsalt password`
        assert_eq!(
            md5_crypt(b"password", b"saltsalt", b"$1$"),
            "qjXMvbEw8oaL.CzflDtaK/"
        );
    }

    #[test]
    fn empty_and_long_passwords_do_not_panic() {
        assert_eq!(md5_crypt(b"", b"", b"$apr1$").len(), 22);
        assert_eq!(md5_crypt(&[b'x'; 1000], b"abcdefghij", b"$apr1$").len(), 22);
    }
}
