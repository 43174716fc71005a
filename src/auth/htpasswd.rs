//! Reading Apache htpasswd files into a [`UserTable`].
//!
//! The file is understood once, when it is loaded: every line is checked, the ones that cannot
//! be used are reported with their line numbers and skipped, and the rest become a table that a
//! request only looks into.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fnv::FnvHashMap;
use http::HeaderValue;

use super::hash::{HashError, StoredHash};

/// The users of one htpasswd file, with the dummy hash that unknown users are verified against.
///
/// It exists so that a reload can swap users and dummy together (see `Authenticator`), and so
/// that the dummy matches the table it stands in for: same scheme and cost as the most common
/// entry (the most expensive one on a tie), computed once per load.
#[derive(Clone)]
pub struct UserTable {
    /// Keyed by the file's names: a client's name is only looked up, never inserted, so it
    /// cannot crowd a bucket; FNV costs less than SipHash on every request.
    users: FnvHashMap<String, (StoredHash, User)>,
    dummy: StoredHash,
}

/// Who a request's credentials named, as the gateway passes it on: the name (for the log) and
/// the app's `X-Forwarded-User` value, none when the name holds a control character. Made once
/// per user when the table is built; a request only clones it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    name: Arc<str>,
    header: Option<HeaderValue>,
}

impl User {
    pub fn new(name: &str) -> User {
        User {
            name: name.into(),
            header: HeaderValue::from_str(name).ok(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as the value of the app's `X-Forwarded-User`, if it can be one.
    pub fn header(&self) -> Option<&HeaderValue> {
        self.header.as_ref()
    }
}

impl UserTable {
    /// A table nobody can log in with (unknown users still cost a bcrypt verification).
    pub fn empty() -> UserTable {
        UserTable::from_entries(std::iter::empty())
    }

    /// Builds a table from `(user, hash)` pairs; a later duplicate does not replace an earlier one
    /// (Apache uses the first matching line).
    pub fn from_entries(entries: impl IntoIterator<Item = (String, StoredHash)>) -> UserTable {
        let mut users = FnvHashMap::default();
        for (name, hash) in entries {
            let user = User::new(&name);
            users.entry(name).or_insert((hash, user));
        }
        let dummy = pick_dummy_model(&users)
            .map_or_else(StoredHash::default_dummy, |model| model.dummy_like());
        UserTable { users, dummy }
    }

    /// The stored hash of `user`, if the table has that user.
    pub fn get(&self, user: &str) -> Option<&StoredHash> {
        self.users.get(user).map(|(hash, _)| hash)
    }

    /// The stored hash of the user named `name`, and the user, if the table has them.
    pub fn entry(&self, name: &str) -> Option<(&StoredHash, &User)> {
        self.users.get(name).map(|(hash, user)| (hash, user))
    }

    /// The hash an unknown user is verified against.
    pub fn dummy(&self) -> &StoredHash {
        &self.dummy
    }

    /// How many users the table holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the table holds no user at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user names, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

impl fmt::Debug for UserTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTable")
            .field("users", &self.users.len())
            .field("dummy", &self.dummy)
            .finish()
    }
}

/// The most common (scheme, cost) among the entries; the most expensive wins a tie.
fn pick_dummy_model(users: &FnvHashMap<String, (StoredHash, User)>) -> Option<&StoredHash> {
    let mut counts: HashMap<(super::Scheme, u32), (usize, &StoredHash)> = HashMap::new();
    for (hash, _) in users.values() {
        counts
            .entry((hash.scheme(), hash.cost()))
            .or_insert((0, hash))
            .0 += 1;
    }
    counts
        .into_values()
        .max_by_key(|(count, hash)| (*count, hash.work_estimate()))
        .map(|(_, hash)| hash)
}

/// A line of an htpasswd file that was skipped (or, for a duplicate, ignored), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based line number.
    pub line: usize,
    /// The user named on the line, when there is one.
    pub user: Option<String>,
    pub kind: ProblemKind,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    #[error("no `:` between user and hash")]
    MissingColon,
    #[error("empty user name")]
    EmptyUser,
    #[error("{0}")]
    BadHash(#[from] HashError),
    #[error("duplicate user; the first entry is used")]
    DuplicateUser,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(user) => write!(f, "line {}: user `{}`: {}", self.line, user, self.kind),
            None => write!(f, "line {}: {}", self.line, self.kind),
        }
    }
}

/// Parses htpasswd text. Blank lines and `#` comments are ignored, CRLF line ends and
/// surrounding white space are tolerated, and a field after the hash (`user:hash:comment`) is
/// ignored as Apache does. Never panics.
pub fn parse(text: &str, allow_plaintext: bool) -> (UserTable, Vec<LineProblem>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries: Vec<(String, StoredHash)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut problems = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let Some((user, rest)) = content.split_once(':') else {
            problems.push(LineProblem {
                line,
                user: None,
                kind: ProblemKind::MissingColon,
            });
            continue;
        };
        if user.is_empty() {
            problems.push(LineProblem {
                line,
                user: None,
                kind: ProblemKind::EmptyUser,
            });
            continue;
        }
        let hash_field = rest.split(':').next().unwrap_or_default();
        let problem = |kind| LineProblem {
            line,
            user: Some(user.to_owned()),
            kind,
        };
        // Apache uses the first line that names a user, even when that line is unusable.
        if !seen.insert(user) {
            problems.push(problem(ProblemKind::DuplicateUser));
            continue;
        }
        match StoredHash::parse(hash_field, allow_plaintext) {
            Ok(hash) => entries.push((user.to_owned(), hash)),
            Err(err) => problems.push(problem(err.into())),
        }
    }
    (UserTable::from_entries(entries), problems)
}

/// A file that could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read htpasswd file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "htpasswd file {} has no usable entry ({problems} bad lines); keeping the users loaded before",
        path.display()
    )]
    NoUsableEntry { path: PathBuf, problems: usize },
}

/// Reads and parses the htpasswd file at `path`. Bytes that are not UTF-8 are replaced (a user
/// name with them can then never match), they do not fail the load.
pub fn load_file(
    path: &Path,
    allow_plaintext: bool,
) -> Result<(UserTable, Vec<LineProblem>), LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse(&String::from_utf8_lossy(&bytes), allow_plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scheme;

    #[test]
    fn a_user_is_forwarded_only_under_a_name_that_can_be_a_header_value() {
        let hash = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=";
        let text = format!("alice:{hash}\nzoë:{hash}\nbell\u{7}:{hash}\n");
        let (table, _) = parse(&text, false);
        let (_, alice) = table.entry("alice").unwrap();
        assert_eq!(alice.name(), "alice");
        assert_eq!(alice.header().unwrap(), "alice");
        // Bytes beyond ASCII pass as they are; a control character cannot.
        let (_, zoe) = table.entry("zoë").unwrap();
        assert_eq!(zoe.header().unwrap().as_bytes(), "zoë".as_bytes());
        let (_, bell) = table.entry("bell\u{7}").unwrap();
        assert_eq!(bell.name(), "bell\u{7}");
        assert!(bell.header().is_none());
        assert!(table.entry("bob").is_none());
    }

    const BCRYPT5: &str = "$2y$05$nZsvWgt44pXpyRcQ3y/JCO4T2Bp/FkzWEOYsvbxCud.4JYXmt3P0m";
    const APR1: &str = "$apr1$OX7deuCZ$70sBkAmCmTwTDN/eageSw.";
    const SHA1: &str = "{SHA}UWuXg/ylF+7L0dBk2i0WUxCxl1k=";

    #[test]
    fn malformed_lines_are_reported_with_line_numbers_and_others_still_work() {
        let text = format!(
            "# users\n\
             alice:{APR1}\n\
             no colon here\n\
             :{SHA1}\n\
             \n\
             bob:{SHA1}\r\n\
             carol:$argon2id$v=19$m=1$abc$def\n\
             dave:$2y$05$short\n\
             erin:plaintext\n\
             alice:{SHA1}\n\
             frank:\n"
        );
        let (table, problems) = parse(&text, false);
        assert_eq!(table.len(), 2);
        assert!(table.get("alice").unwrap().verify(b"p"));
        assert!(table.get("bob").unwrap().verify(b"p"));
        let lines: Vec<(usize, Option<&str>)> = problems
            .iter()
            .map(|p| (p.line, p.user.as_deref()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (3, None),
                (4, None),
                (7, Some("carol")),
                (8, Some("dave")),
                (9, Some("erin")),
                (10, Some("alice")),
                (11, Some("frank")),
            ]
        );
        assert_eq!(problems[0].kind, ProblemKind::MissingColon);
        assert_eq!(problems[1].kind, ProblemKind::EmptyUser);
        assert_eq!(
            problems[2].kind,
            ProblemKind::BadHash(HashError::UnknownScheme("$argon2id$".into()))
        );
        assert!(matches!(
            problems[3].kind,
            ProblemKind::BadHash(HashError::Malformed { .. })
        ));
        assert_eq!(
            problems[4].kind,
            ProblemKind::BadHash(HashError::PlaintextNotAllowed)
        );
        assert_eq!(problems[5].kind, ProblemKind::DuplicateUser);
        assert_eq!(problems[6].kind, ProblemKind::BadHash(HashError::Empty));
        assert_eq!(
            problems[2].to_string(),
            "line 7: user `carol`: unknown hash scheme `$argon2id$` (supported: bcrypt `$2y$`, \
             `$apr1$`, `{SHA}`, `$5$`, `$6$`); re-create the entry with `htpasswd -B`"
        );
    }

    #[test]
    fn crlf_bom_whitespace_and_extra_fields_are_tolerated() {
        let text = format!("\u{feff}alice:{APR1}\r\n  bob:{SHA1}:Bob Smith  \r\n");
        let (table, problems) = parse(&text, false);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(table.get("alice").unwrap().verify(b"p"));
        assert!(table.get("bob").unwrap().verify(b"p"));
    }

    #[test]
    fn plaintext_entries_need_the_flag() {
        let (table, problems) = parse("alice:secret\n", true);
        assert!(problems.is_empty());
        assert!(table.get("alice").unwrap().verify(b"secret"));
        let (table, problems) = parse("alice:secret\n", false);
        assert!(table.is_empty());
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn garbage_never_panics() {
        let samples = [
            "\0\0\0",
            ":",
            "::::",
            "a:$",
            "a:$$",
            "a:{",
            "a:{}",
            "a:$2y$ü€$",
            "a:$5$rounds=99999999999999999999$s$h",
            "\u{feff}",
            "é:$apr1$ñ$ñ",
            "a:$6$rounds=1000$",
            "a\rb:c",
        ];
        for s in samples {
            let _ = parse(s, true);
            let _ = parse(s, false);
        }
        // Every prefix of a valid file, and every byte position replaced.
        let text = format!("alice:{BCRYPT5}\nbob:{APR1}\n");
        for end in 0..=text.len() {
            if text.is_char_boundary(end) {
                let _ = parse(&text[..end], false);
            }
        }
        for i in 0..text.len() {
            for b in [b'$', b':', b'{', b'\n', b'0', b'='] {
                let mut bytes = text.clone().into_bytes();
                bytes[i] = b;
                let _ = parse(&String::from_utf8_lossy(&bytes), false);
            }
        }
    }

    #[test]
    fn dummy_follows_the_most_common_scheme() {
        let text = format!("a:{APR1}\nb:{APR1}\nc:{BCRYPT5}\n");
        let (table, _) = parse(&text, false);
        assert_eq!(table.dummy().scheme(), Scheme::Md5Crypt);

        let text = format!("a:{APR1}\nc:{BCRYPT5}\n");
        let (table, _) = parse(&text, false);
        assert_eq!(table.dummy().scheme(), Scheme::Bcrypt);
        assert_eq!(table.dummy().cost(), 5);

        assert_eq!(UserTable::empty().dummy().scheme(), Scheme::Bcrypt);
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load_file(Path::new("/nonexistent/vastgate/htpasswd"), false).unwrap_err();
        assert!(matches!(err, LoadError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/vastgate/htpasswd"));
    }
}
