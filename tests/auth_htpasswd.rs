//! Interoperability with Apache's own `htpasswd` (Debian's apache2-utils): every format it
//! writes is accepted, and what vastgate writes is accepted by it.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::apache_htpasswd;
use http::HeaderValue;
use vastgate::auth::{
    htpasswd_line, load_file, upsert_user_file, AuthSettings, Authenticator, ProblemKind, Scheme,
    User, Verdict,
};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PASSWORD: &str = "p@ss:wörd 1";

/// One line from `htpasswd -nb… user password`.
fn apache_line(flags: &[&str], user: &str, password: &str) -> Option<String> {
    let mut args = flags.to_vec();
    args.extend([user, password]);
    let out = apache_htpasswd(&args)?;
    assert!(
        out.status.success(),
        "htpasswd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(text.trim().to_owned())
}

fn basic(user: &str, password: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "Basic {}",
        STANDARD.encode(format!("{user}:{password}"))
    ))
    .unwrap()
}

fn granted(user: &str) -> Verdict {
    Verdict::Granted {
        user: User::new(user),
    }
}

/// `htpasswd -vb FILE user password` succeeded.
fn apache_verifies(file: &Path, user: &str, password: &str) -> Option<bool> {
    let out = apache_htpasswd(&["-vb", file.to_str().unwrap(), user, password])?;
    Some(out.status.success())
}

#[tokio::test]
async fn every_format_written_by_apache_htpasswd_is_accepted() {
    let formats: &[(&str, &[&str], Scheme, u32)] = &[
        ("bcrypt5", &["-nbB", "-C", "5"], Scheme::Bcrypt, 5),
        ("bcrypt10", &["-nbB", "-C", "10"], Scheme::Bcrypt, 10),
        ("apr1", &["-nbm"], Scheme::Md5Crypt, 0),
        ("sha1", &["-nbs"], Scheme::Sha1, 0),
        ("sha256", &["-nb", "-2"], Scheme::Sha256Crypt, 5000),
        ("sha512", &["-nb", "-5"], Scheme::Sha512Crypt, 5000),
        (
            "sha512r",
            &["-nb", "-5", "-r", "7000"],
            Scheme::Sha512Crypt,
            7000,
        ),
        (
            "sha256r",
            &["-nb", "-2", "-r", "1000"],
            Scheme::Sha256Crypt,
            1000,
        ),
    ];
    let mut text = String::from("# written by Apache htpasswd\n");
    for (user, flags, _, _) in formats {
        let Some(line) = apache_line(flags, user, PASSWORD) else {
            return;
        };
        text.push_str(&line);
        text.push_str("\r\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, &text).unwrap();

    let (auth, problems) = Authenticator::from_file(AuthSettings::default(), &path).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let table = auth.table();
    for (user, _, scheme, cost) in formats {
        let hash = table.get(user).unwrap();
        assert_eq!((hash.scheme(), hash.cost()), (*scheme, *cost), "{user}");
    }
    for (user, ..) in formats {
        assert_eq!(
            auth.check_basic(Some(&basic(user, PASSWORD)), CLIENT).await,
            granted(user),
            "{user}"
        );
        assert_eq!(
            auth.check_basic(Some(&basic(user, "p@ss:wörd 2")), CLIENT)
                .await,
            Verdict::Denied,
            "{user}"
        );
        assert_eq!(
            auth.check_basic(Some(&basic(user, "")), CLIENT).await,
            Verdict::Denied,
            "{user}"
        );
    }
}

#[test]
fn plaintext_from_htpasswd_p_needs_the_flag() {
    let Some(line) = apache_line(&["-nbp"], "plain", "secret") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let (table, problems) = load_file(&path, false).unwrap();
    assert!(table.is_empty());
    assert_eq!(problems.len(), 1);
    let (table, problems) = load_file(&path, true).unwrap();
    assert!(problems.is_empty());
    assert!(table.get("plain").unwrap().verify(b"secret"));
}

#[test]
fn des_crypt_from_htpasswd_d_is_reported_not_silently_denied() {
    let Some(line) = apache_line(&["-nbd"], "old", "secret") else {
        return;
    };
    let (table, problems) = vastgate::auth::parse(&format!("{line}\n"), false);
    assert!(table.is_empty());
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, 1);
    assert!(problems[0].to_string().contains("DES"), "{}", problems[0]);
}

#[tokio::test]
async fn malformed_lines_are_reported_and_other_users_still_work() {
    let (Some(good1), Some(good2)) = (
        apache_line(&["-nbB", "-C", "4"], "alice", PASSWORD),
        apache_line(&["-nbm"], "bob", PASSWORD),
    ) else {
        return;
    };
    let text = format!(
        "{good1}\nthis line has no colon\n:$apr1$abc$def\ncarol:$apr1$x\ndave:{{SSHA}}abc\n\n# c\n{good2}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, text).unwrap();
    let (auth, problems) = Authenticator::from_file(AuthSettings::default(), &path).unwrap();
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 3, 4, 5]);
    assert_eq!(problems[0].kind, ProblemKind::MissingColon);
    assert_eq!(problems[1].kind, ProblemKind::EmptyUser);
    assert!(
        problems[3]
            .to_string()
            .contains("unknown hash scheme `{SSHA}`"),
        "{}",
        problems[3]
    );
    assert_eq!(
        auth.check_basic(Some(&basic("alice", PASSWORD)), CLIENT)
            .await,
        granted("alice")
    );
    assert_eq!(
        auth.check_basic(Some(&basic("bob", PASSWORD)), CLIENT)
            .await,
        granted("bob")
    );
    assert_eq!(
        auth.check_basic(Some(&basic("carol", PASSWORD)), CLIENT)
            .await,
        Verdict::Denied
    );
}

#[test]
fn htpasswd_line_is_verified_by_apache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    let line = htpasswd_line("alice", PASSWORD, 5).unwrap();
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let Some(ok) = apache_verifies(&path, "alice", PASSWORD) else {
        return;
    };
    assert!(ok, "htpasswd -v refused {line}");
    assert_eq!(apache_verifies(&path, "alice", "wrong"), Some(false));
}

#[test]
fn upserted_file_is_verified_by_apache_and_keeps_other_users() {
    let Some(bob) = apache_line(&["-nb", "-5"], "bob", "bobpw") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(
        &path,
        format!("{bob}\nadmin:{{SHA}}UWuXg/ylF+7L0dBk2i0WUxCxl1k=\n"),
    )
    .unwrap();
    assert!(upsert_user_file(&path, "admin", "new admin pw", 5).unwrap());
    assert_eq!(apache_verifies(&path, "admin", "new admin pw"), Some(true));
    assert_eq!(apache_verifies(&path, "admin", "p"), Some(false));
    assert_eq!(apache_verifies(&path, "bob", "bobpw"), Some(true));
}
