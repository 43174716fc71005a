//! Writing htpasswd entries: the `vastgate passwd` line and the start-up upsert of the
//! `USERNAME`/`PASSWORD` user.
//!
//! vastgate writes bcrypt only, as `$2y$` (the variant Apache's tools write and verify).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::hash::{Scheme, StoredHash};

/// bcrypt reads at most this many bytes of a password; longer ones are refused rather than
/// silently truncated.
pub const BCRYPT_MAX_PASSWORD: usize = 72;

/// Why an htpasswd entry could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("invalid user name: {0}")]
    InvalidUser(&'static str),
    #[error(
        "the password is {0} bytes long; bcrypt only uses the first {BCRYPT_MAX_PASSWORD}, \
         choose a shorter one"
    )]
    PasswordTooLong(usize),
    #[error("bcrypt cost {0} is out of range (4 to 31; 10 is a good default)")]
    Cost(u32),
    #[error("bcrypt failed: {0}")]
    Hash(#[from] bcrypt::BcryptError),
}

impl From<PasswdError> for io::Error {
    fn from(err: PasswdError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, err)
    }
}

/// Checks that `user` can stand on an htpasswd line and be read back as itself.
fn check_user(user: &str) -> Result<(), PasswdError> {
    if user.is_empty() {
        return Err(PasswdError::InvalidUser("it is empty"));
    }
    if user.contains(':') {
        return Err(PasswdError::InvalidUser("it contains `:`"));
    }
    if user.chars().any(char::is_control) {
        return Err(PasswdError::InvalidUser("it contains a control character"));
    }
    if user.trim() != user {
        return Err(PasswdError::InvalidUser(
            "it starts or ends with white space",
        ));
    }
    if user.starts_with('#') {
        return Err(PasswdError::InvalidUser("it starts with `#`"));
    }
    Ok(())
}

/// `user:$2y$cost$…`: an htpasswd line (without line end) for `user` with a fresh bcrypt hash of
/// `password`. Takes one bcrypt computation.
pub fn htpasswd_line(user: &str, password: &str, cost: u32) -> Result<String, PasswdError> {
    check_user(user)?;
    if password.len() > BCRYPT_MAX_PASSWORD {
        return Err(PasswdError::PasswordTooLong(password.len()));
    }
    if !(4..=31).contains(&cost) {
        return Err(PasswdError::Cost(cost));
    }
    let parts = bcrypt::hash_with_result(password, cost)?;
    Ok(format!(
        "{user}:{}",
        parts.format_for_version(bcrypt::Version::TwoY)
    ))
}

/// Creates or updates `user`'s entry in the htpasswd file at `path`, atomically (a temporary
/// file in the same directory, then a rename), keeping every other line. The first line of
/// `user` is replaced in place and later lines of the same user are dropped, so this entry wins.
/// A new file gets mode 0600; an existing one keeps its mode (and owner, where allowed).
///
/// When the entry already is bcrypt at `cost` and matches `password`, the file is left alone (no
/// new mtime, no reload): the result says whether the file was written.
/// Removes `user`'s entries from the htpasswd file at `path`, atomically, keeping every other
/// line. Returns whether the file was written (false: no such user, or no file).
pub fn remove_user_file(path: &Path, user: &str) -> io::Result<bool> {
    let path = resolve_symlink(path)?;
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    if !text.lines().any(|line| line_user(line) == Some(user)) {
        return Ok(false);
    }
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(text.len());
    for line in text.lines().filter(|line| line_user(line) != Some(user)) {
        out.push_str(line);
        out.push_str(newline);
    }
    let metadata = fs::metadata(&path)?;
    write_atomically(&path, out.as_bytes(), Some(&metadata))?;
    Ok(true)
}

pub fn upsert_user_file(path: &Path, user: &str, password: &str, cost: u32) -> io::Result<bool> {
    check_user(user)?;
    let path = resolve_symlink(path)?;
    let existing = match fs::read(&path) {
        Ok(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not UTF-8 text", path.display()),
            )
        })?),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(err),
    };
    let text = existing.as_deref().unwrap_or("");

    let user_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line_user(line) == Some(user))
        .map(|(i, _)| i)
        .collect();
    if let [only] = user_lines.as_slice() {
        let current = text.lines().nth(*only).and_then(line_hash);
        if let Some(hash) = current.and_then(|h| StoredHash::parse(h, false).ok()) {
            if hash.scheme() == Scheme::Bcrypt
                && hash.cost() == cost
                && hash.verify(password.as_bytes())
            {
                return Ok(false);
            }
        }
    }

    let new_line = htpasswd_line(user, password, cost)?;
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(text.len() + new_line.len() + 2);
    let mut placed = false;
    for (i, line) in text.lines().enumerate() {
        if user_lines.contains(&i) {
            if !placed {
                out.push_str(&new_line);
                out.push_str(newline);
                placed = true;
            }
            continue;
        }
        out.push_str(line);
        out.push_str(newline);
    }
    if !placed {
        out.push_str(&new_line);
        out.push_str(newline);
    }

    let metadata = match fs::metadata(&path) {
        Ok(m) => Some(m),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(err),
    };
    write_atomically(&path, out.as_bytes(), metadata.as_ref())?;
    Ok(true)
}

/// The user field of an htpasswd line, as the parser reads it.
fn line_user(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(user, _)| user)
}

fn line_hash(line: &str) -> Option<&str> {
    line.trim()
        .split_once(':')
        .and_then(|(_, rest)| rest.split(':').next())
}

/// Writes through a symlink to its target, so that renaming does not replace the link.
fn resolve_symlink(path: &Path) -> io::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path),
        _ => Ok(path.to_owned()),
    }
}

fn write_atomically(
    path: &Path,
    contents: &[u8],
    previous: Option<&fs::Metadata>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "htpasswd".to_owned());
    let tmp = dir.join(format!(
        ".{name}.vastgate-{}-{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mode = previous.map_or(0o600, |m| m.permissions().mode() & 0o7777);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(m) = previous {
            // Best effort: only root may give a file away, and then it should keep its owner.
            let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
        }
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn remove_user_keeps_every_other_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        fs::write(&path, "# users\nalice:{SHA}x\nbob:{SHA}y\nalice:{SHA}z\n").unwrap();
        assert!(remove_user_file(&path, "alice").unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "# users\nbob:{SHA}y\n");
        assert!(!remove_user_file(&path, "alice").unwrap());
        assert!(!remove_user_file(&dir.path().join("absent"), "bob").unwrap());
    }

    use super::*;
    use crate::auth::htpasswd;

    #[test]
    fn line_is_2y_bcrypt_that_verifies() {
        let line = htpasswd_line("alice", "s3cret", 4).unwrap();
        let (user, hash) = line.split_once(':').unwrap();
        assert_eq!(user, "alice");
        assert!(hash.starts_with("$2y$04$"), "{hash}");
        let parsed = StoredHash::parse(hash, false).unwrap();
        assert!(parsed.verify(b"s3cret"));
        assert!(!parsed.verify(b"s3cre"));
    }

    #[test]
    fn bad_users_passwords_and_costs_are_refused() {
        for user in ["", "a:b", "a\nb", " a", "a ", "#a", "a\tb"] {
            assert!(
                matches!(
                    htpasswd_line(user, "p", 4),
                    Err(PasswdError::InvalidUser(_))
                ),
                "{user:?}"
            );
        }
        assert!(matches!(
            htpasswd_line("a", &"x".repeat(73), 4),
            Err(PasswdError::PasswordTooLong(73))
        ));
        assert!(htpasswd_line("a", &"x".repeat(72), 4).is_ok());
        assert!(matches!(
            htpasswd_line("a", "p", 3),
            Err(PasswdError::Cost(3))
        ));
        assert!(matches!(
            htpasswd_line("a", "p", 32),
            Err(PasswdError::Cost(32))
        ));
    }

    #[test]
    fn upsert_creates_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        assert!(upsert_user_file(&path, "admin", "pw", 4).unwrap());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (table, problems) = htpasswd::load_file(&path, false).unwrap();
        assert!(problems.is_empty());
        assert!(table.get("admin").unwrap().verify(b"pw"));
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn upsert_replaces_the_user_and_keeps_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let original = "# team\r\n\
                        bob:{SHA}UWuXg/ylF+7L0dBk2i0WUxCxl1k=\r\n\
                        admin:{SHA}UWuXg/ylF+7L0dBk2i0WUxCxl1k=\r\n\
                        carol:$apr1$OX7deuCZ$70sBkAmCmTwTDN/eageSw.\r\n\
                        admin:plain\r\n";
        fs::write(&path, original).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();

        assert!(upsert_user_file(&path, "admin", "new", 4).unwrap());
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len(), 5, "{text:?}");
        assert_eq!(lines[0], "# team");
        assert_eq!(lines[1], "bob:{SHA}UWuXg/ylF+7L0dBk2i0WUxCxl1k=");
        assert!(lines[2].starts_with("admin:$2y$04$"));
        assert_eq!(lines[3], "carol:$apr1$OX7deuCZ$70sBkAmCmTwTDN/eageSw.");
        assert_eq!(lines[4], "");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);

        let (table, problems) = htpasswd::load_file(&path, false).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(table.get("admin").unwrap().verify(b"new"));
        assert!(table.get("bob").unwrap().verify(b"p"));
        assert!(table.get("carol").unwrap().verify(b"p"));
    }

    #[test]
    fn upsert_leaves_a_current_entry_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        assert!(upsert_user_file(&path, "admin", "pw", 4).unwrap());
        let before = fs::read_to_string(&path).unwrap();
        assert!(!upsert_user_file(&path, "admin", "pw", 4).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), before);
        // A different cost or password rewrites it.
        assert!(upsert_user_file(&path, "admin", "pw", 5).unwrap());
        assert!(upsert_user_file(&path, "admin", "pw2", 5).unwrap());
        assert_ne!(fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn upsert_appends_to_a_file_without_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        fs::write(&path, "bob:{SHA}UWuXg/ylF+7L0dBk2i0WUxCxl1k=").unwrap();
        upsert_user_file(&path, "admin", "pw", 4).unwrap();
        let (table, problems) = htpasswd::load_file(&path, false).unwrap();
        assert!(problems.is_empty());
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn upsert_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        let link = dir.path().join("link");
        fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        upsert_user_file(&link, "admin", "pw", 4).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(fs::read_to_string(&target)
            .unwrap()
            .starts_with("admin:$2y$"));
    }

    #[test]
    fn upsert_reports_an_invalid_user_as_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let err = upsert_user_file(&dir.path().join("h"), "a:b", "pw", 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
