//! The account a program runs as (`user = "appuser"`): uid, gid, supplementary groups and home.
//!
//! Read from `/etc/passwd` and `/etc/group` rather than through libc's NSS: containers keep their
//! accounts in those files, the lookup happens in the supervisor (never between `fork` and `exec`,
//! where only async-signal-safe calls are allowed), and the parsing is a pure, tested function.

use std::path::{Path, PathBuf};

/// A user resolved to the ids the kernel needs and the variables a login would set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: String,
}

/// Resolves `spec` (a name or a numeric uid) from the system's account files.
pub fn resolve(spec: &str) -> Result<Account, String> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    resolve_in(spec, &passwd, &group)
}

/// Resolves `spec` against the text of `/etc/passwd` and `/etc/group`.
pub fn resolve_in(spec: &str, passwd: &str, group: &str) -> Result<Account, String> {
    let numeric = spec.parse::<u32>().ok();
    let entry = passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .find(|f| f[0] == spec || numeric.is_some_and(|n| f[2].parse::<u32>() == Ok(n)));
    let account = match (entry, numeric) {
        (Some(f), _) => {
            let uid = f[2]
                .parse()
                .map_err(|_| format!("/etc/passwd: user \"{}\" has a bad uid \"{}\"", f[0], f[2]))?;
            let gid = f[3]
                .parse()
                .map_err(|_| format!("/etc/passwd: user \"{}\" has a bad gid \"{}\"", f[0], f[3]))?;
            Account {
                name: f[0].to_string(),
                uid,
                gid,
                groups: vec![gid],
                home: PathBuf::from(f[5]),
                shell: f[6].to_string(),
            }
        }
        (None, Some(uid)) => Account {
            name: uid.to_string(),
            uid,
            gid: uid,
            groups: vec![uid],
            home: Path::new("/").to_path_buf(),
            shell: "/bin/sh".into(),
        },
        (None, None) => {
            return Err(format!(
                "no user \"{spec}\" in /etc/passwd: create it (useradd {spec}) or name an existing user"
            ))
        }
    };
    let mut account = account;
    for line in group.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(gid) = f[2].parse::<u32>() else {
            continue;
        };
        if f[3].split(',').any(|member| member.trim() == account.name)
            && !account.groups.contains(&gid)
        {
            account.groups.push(gid);
        }
    }
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          # comment\n\
                          appuser:x:1000:1000:App:/home/appuser:/bin/bash\n\
                          broken:x:nope:1:B:/:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nvideo:x:44:appuser,other\nappuser:x:1000:\nrender:x:993:appuser\n";

    #[test]
    fn name_resolves_with_supplementary_groups() {
        let a = resolve_in("appuser", PASSWD, GROUP).unwrap();
        assert_eq!((a.uid, a.gid), (1000, 1000));
        assert_eq!(a.groups, vec![1000, 44, 993]);
        assert_eq!(a.home, PathBuf::from("/home/appuser"));
    }

    #[test]
    fn numeric_uid_resolves_through_passwd_or_stands_alone() {
        assert_eq!(resolve_in("1000", PASSWD, GROUP).unwrap().name, "appuser");
        let bare = resolve_in("4242", PASSWD, GROUP).unwrap();
        assert_eq!(
            (bare.uid, bare.gid, bare.groups.clone()),
            (4242, 4242, vec![4242])
        );
    }

    #[test]
    fn unknown_or_broken_users_are_reported() {
        let err = resolve_in("nobody-here", PASSWD, GROUP).unwrap_err();
        assert!(err.contains("no user \"nobody-here\""), "{err}");
        assert!(resolve_in("broken", PASSWD, GROUP)
            .unwrap_err()
            .contains("bad uid"));
    }
}
