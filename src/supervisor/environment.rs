//! A program's environment: what the supervisor inherited, `/etc/environment`, the account's
//! login variables and the program's own `env`, minus the secrets it was not given.
//!
//! Vast persists its settings and ours in `/etc/environment`, so every program reads it. But the
//! gateway's password and Vast's tokens live there too, and Forge runs third-party extensions: a
//! secret reaches a program only when its `env` names it, e.g. `JUPYTER_TOKEN = "${OPEN_BUTTON_TOKEN}"`.

use std::collections::BTreeMap;

use super::user::Account;

/// Variables never passed on unless a program's `env` names them (DESIGN §2).
pub const SECRETS: &[&str] = &[
    "PASSWORD",
    "OPEN_BUTTON_TOKEN",
    "WEB_PASSWORD",
    "CONTAINER_API_KEY",
];

/// Parses `/etc/environment`: `KEY=value` lines, optionally `export`ed and quoted; comments and
/// lines that are not assignments are skipped.
pub fn parse_environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return None;
            }
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|&q| value.strip_prefix(q).and_then(|v| v.strip_suffix(q)))
                .unwrap_or(value);
            Some((key.to_string(), unquoted.to_string()))
        })
        .collect()
}

/// Replaces `${NAME}` with `lookup(NAME)` (empty when unknown). Anything else is kept as written.
pub fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.push_str(&lookup(&after[..end]).unwrap_or_default());
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The whole environment of a program, in order of precedence (later wins): `inherited`, the
/// environment file, the account's HOME/USER/LOGNAME/SHELL, then `env` (with `${NAME}`
/// expanded from the first two, secrets included).
pub fn program_environment(
    inherited: impl IntoIterator<Item = (String, String)>,
    file: &[(String, String)],
    account: Option<&Account>,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut known: BTreeMap<String, String> = inherited.into_iter().collect();
    known.extend(file.iter().cloned());
    let mut out: BTreeMap<String, String> = known
        .iter()
        .filter(|(k, _)| !SECRETS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(a) = account {
        out.insert("HOME".into(), a.home.to_string_lossy().into_owned());
        out.insert("USER".into(), a.name.clone());
        out.insert("LOGNAME".into(), a.name.clone());
        out.insert("SHELL".into(), a.shell.clone());
    }
    for (k, v) in env {
        out.insert(k.clone(), expand(v, |name| known.get(name).cloned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_file_lines_parse_leniently() {
        let text = "# Vast\nPATH=\"/usr/bin:/bin\"\nexport DATA_DIRECTORY=/workspace/\n\
                    PUBLIC_IPADDR='1.2.3.4'\n  \nnot an assignment\n1BAD=x\nEMPTY=\n";
        assert_eq!(
            parse_environment_file(text),
            pairs(&[
                ("PATH", "/usr/bin:/bin"),
                ("DATA_DIRECTORY", "/workspace/"),
                ("PUBLIC_IPADDR", "1.2.3.4"),
                ("EMPTY", ""),
            ])
        );
    }

    #[test]
    fn expansion_replaces_known_names_only_inside_braces() {
        let lookup = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("x${A}y${B}z$A", lookup), "x1yz$A");
        assert_eq!(expand("open ${A", lookup), "open ${A");
    }

    #[test]
    fn secrets_are_dropped_unless_env_names_them() {
        let inherited = pairs(&[("PASSWORD", "hunter2"), ("LANG", "C.UTF-8")]);
        let file = pairs(&[("OPEN_BUTTON_TOKEN", "tok"), ("LANG", "en_US.UTF-8")]);
        let plain = program_environment(inherited.clone(), &file, None, &BTreeMap::new());
        assert_eq!(plain.get("LANG").map(String::as_str), Some("en_US.UTF-8"));
        assert!(!plain.contains_key("PASSWORD") && !plain.contains_key("OPEN_BUTTON_TOKEN"));

        let env = BTreeMap::from([
            (
                "JUPYTER_TOKEN".to_string(),
                "${OPEN_BUTTON_TOKEN}".to_string(),
            ),
            ("PASSWORD".to_string(), "${PASSWORD}".to_string()),
        ]);
        let named = program_environment(inherited, &file, None, &env);
        assert_eq!(named.get("JUPYTER_TOKEN").map(String::as_str), Some("tok"));
        assert_eq!(named.get("PASSWORD").map(String::as_str), Some("hunter2"));
    }

    #[test]
    fn account_sets_login_variables_and_env_overrides_them() {
        let account = Account {
            name: "appuser".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: "/home/appuser".into(),
            shell: "/bin/bash".into(),
        };
        let env = BTreeMap::from([("HOME".to_string(), "/workspace".to_string())]);
        let out = program_environment(pairs(&[("HOME", "/root")]), &[], Some(&account), &env);
        assert_eq!(out.get("USER").map(String::as_str), Some("appuser"));
        assert_eq!(out.get("HOME").map(String::as_str), Some("/workspace"));
    }
}
