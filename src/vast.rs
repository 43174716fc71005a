//! Vast.ai's conventions: `PORTAL_CONFIG` / `/etc/portal.yaml` and the launch mode.
//!
//! `PORTAL_CONFIG` lists the apps of an instance for Vast's portal and its Caddy:
//! `hostname:external_port:internal_port:open_path:Name` entries joined by `|`. Only the name may
//! hold `:` (an entry splits into at most five fields). Vast's tools persist it as
//! `/etc/portal.yaml` (`applications: {Name: {hostname, external_port, ...}}`), which users may
//! edit; that file wins when it exists and is not empty.

use std::fmt;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

/// Where Vast's tools keep the portal entries.
pub const PORTAL_YAML: &str = "/etc/portal.yaml";

/// One app of the portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalEntry {
    pub hostname: String,
    /// The port Vast exposes (and its Caddy listens on).
    pub external_port: u16,
    /// Where the app itself listens.
    pub internal_port: u16,
    pub open_path: String,
    pub name: String,
}

impl PortalEntry {
    /// Vast's Caddy proxies an entry only when the two ports differ (and the external one is
    /// published as `VAST_TCP_PORT_<external>`).
    pub fn is_proxied(&self) -> bool {
        self.external_port != self.internal_port
    }
}

impl fmt::Display for PortalEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}:{}",
            self.hostname, self.external_port, self.internal_port, self.open_path, self.name
        )
    }
}

/// An entry that could not be read; the others still count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalProblem {
    /// The entry as written (or its YAML key).
    pub entry: String,
    pub why: String,
}

impl fmt::Display for PortalProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "portal entry \"{}\": {}", self.entry, self.why)
    }
}

/// Parses a `PORTAL_CONFIG` value.
pub fn parse_portal_config(value: &str) -> (Vec<PortalEntry>, Vec<PortalProblem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for raw in value.split('|').map(str::trim).filter(|e| !e.is_empty()) {
        let fields: Vec<&str> = raw.splitn(5, ':').collect();
        let problem = |why: String| PortalProblem {
            entry: raw.to_string(),
            why,
        };
        let [hostname, external, internal, open_path, name] = fields[..] else {
            problems.push(problem(format!(
                "has {} fields; expected hostname:external_port:internal_port:open_path:Name",
                fields.len()
            )));
            continue;
        };
        match entry_from(hostname, external, internal, open_path, name) {
            Ok(e) => entries.push(e),
            Err(why) => problems.push(problem(why)),
        }
    }
    (entries, problems)
}

/// Parses `/etc/portal.yaml`'s text. `Err` when it is not YAML or has no `applications` map.
pub fn parse_portal_yaml(text: &str) -> Result<(Vec<PortalEntry>, Vec<PortalProblem>), String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let Some(Yaml::Hash(apps)) = docs.first().map(|d| &d["applications"]) else {
        return Err("no `applications:` map in it".into());
    };
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (key, app) in apps {
        let key = scalar(key).unwrap_or_default();
        let field = |name: &str| scalar(&app[name]);
        let name = field("name").unwrap_or_else(|| key.clone());
        let built = match (field("external_port"), field("internal_port")) {
            (Some(ext), Some(int)) => entry_from(
                &field("hostname").unwrap_or_else(|| "localhost".into()),
                &ext,
                &int,
                &field("open_path").unwrap_or_else(|| "/".into()),
                &name,
            ),
            _ => Err("needs external_port and internal_port".into()),
        };
        match built {
            Ok(e) => entries.push(e),
            Err(why) => problems.push(PortalProblem { entry: key, why }),
        }
    }
    Ok((entries, problems))
}

/// The portal entries in force: `/etc/portal.yaml` when it exists and is not empty, else
/// `PORTAL_CONFIG`.
pub fn load_portal(
    yaml_path: &Path,
    env_value: Option<&str>,
) -> Result<(Vec<PortalEntry>, Vec<PortalProblem>), String> {
    if let Ok(text) = std::fs::read_to_string(yaml_path) {
        if !text.trim().is_empty() {
            return parse_portal_yaml(&text).map_err(|e| format!("{}: {e}", yaml_path.display()));
        }
    }
    Ok(parse_portal_config(env_value.unwrap_or("")))
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn entry_from(
    hostname: &str,
    external: &str,
    internal: &str,
    open_path: &str,
    name: &str,
) -> Result<PortalEntry, String> {
    let port = |what: &str, v: &str| match v.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("{what} \"{v}\" is not a port (1-65535)")),
    };
    if hostname.trim().is_empty() {
        return Err("the hostname is empty".into());
    }
    if name.trim().is_empty() {
        return Err("the name is empty".into());
    }
    let (external_port, internal_port) = (
        port("external port", external)?,
        port("internal port", internal)?,
    );
    if u32::from(external_port) == u32::from(internal_port) + 10_000 {
        return Err(format!(
            "the ports look swapped: external {external_port}, internal {internal_port}; the \
             convention is internal = external + 10000 (e.g. localhost:{internal_port}:{external_port}:...)"
        ));
    }
    Ok(PortalEntry {
        hostname: hostname.trim().to_string(),
        external_port,
        internal_port,
        open_path: if open_path.is_empty() {
            "/".into()
        } else {
            open_path.to_string()
        },
        name: name.to_string(),
    })
}

/// How Vast started the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchMode {
    /// The image's entrypoint runs as PID 1.
    Entrypoint,
    /// Vast's `/.launch` runs `/root/onstart.sh`; sshd is the way in.
    Ssh,
    /// Like SSH, and Vast runs Jupyter itself on port 8080.
    Jupyter,
}

/// Reads the launch mode from the contents of `/.launch` (absent: entrypoint mode).
pub fn launch_mode(launch_script: Option<&str>) -> LaunchMode {
    match launch_script {
        None => LaunchMode::Entrypoint,
        Some(text) if text.to_ascii_lowercase().contains("jupyter") => LaunchMode::Jupyter,
        Some(_) => LaunchMode::Ssh,
    }
}

/// The entries vastgate serves in place of Vast's Caddy: those Caddy would serve (the ports differ
/// and `VAST_TCP_PORT_<external>` is set), except port 8080 in Jupyter launch mode (Vast's own
/// Jupyter holds it) and `own_port` (the gateway's main listener).
pub fn entries_to_serve<'a>(
    entries: &'a [PortalEntry],
    mode: LaunchMode,
    own_port: u16,
    published: impl Fn(u16) -> bool,
) -> Vec<&'a PortalEntry> {
    entries
        .iter()
        .filter(|e| e.is_proxied() && published(e.external_port))
        .filter(|e| !(mode == LaunchMode::Jupyter && e.external_port == 8080))
        .filter(|e| e.external_port != own_port)
        .collect()
}

/// Whether the listener on `external_port` asks for credentials: `ENABLE_AUTH=false` turns auth
/// off everywhere, `AUTH_EXCLUDE` (comma-separated external ports) for some.
pub fn portal_auth_required(
    external_port: u16,
    enable_auth: Option<&str>,
    auth_exclude: Option<&str>,
) -> bool {
    let disabled = enable_auth.is_some_and(|v| {
        ["false", "0", "no", "off"]
            .iter()
            .any(|f| v.trim().eq_ignore_ascii_case(f))
    });
    let excluded = auth_exclude.is_some_and(|list| {
        list.split(',')
            .any(|p| p.trim().parse::<u16>() == Ok(external_port))
    });
    !disabled && !excluded
}

/// Where Vast's own Jupyter answers in Jupyter launch mode (it holds port 8080; the public port
/// is `VAST_TCP_PORT_8080` on `PUBLIC_IPADDR`), for the portal to link instead of a route.
pub fn vast_jupyter_url(
    mode: LaunchMode,
    public_ip: Option<&str>,
    public_port: Option<&str>,
) -> Option<String> {
    if mode != LaunchMode::Jupyter {
        return None;
    }
    let ip = public_ip.map(str::trim).filter(|s| !s.is_empty())?;
    let port: u16 = public_port?.trim().parse().ok()?;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Some(format!("https://{host}:{port}/"))
}

/// The launch mode of this container, from `/.launch`.
pub fn current_launch_mode() -> LaunchMode {
    launch_mode(std::fs::read_to_string("/.launch").ok().as_deref())
}

/// This gateway's `PORTAL_CONFIG` entry: behind Vast's Caddy the gateway listens on the internal
/// port, by convention the external one plus 10000 (`localhost:8000:18000:/:Forge`).
pub fn own_entry(listen_port: u16, name: &str) -> PortalEntry {
    let external = if listen_port > 10_000 {
        listen_port - 10_000
    } else {
        listen_port
    };
    PortalEntry {
        hostname: "localhost".into(),
        external_port: external,
        internal_port: listen_port,
        open_path: "/".into(),
        name: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_config_entries_split_on_bars_and_five_colons() {
        let (entries, problems) = parse_portal_config(
            "localhost:1111:11111:/:Instance Portal|localhost:8000:18000:/:Forge: WebUI|localhost:8080:8080:/:Jupyter",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].name, "Forge: WebUI");
        assert_eq!(entries[1].external_port, 8000);
        assert_eq!(entries[1].internal_port, 18000);
        assert!(entries[1].is_proxied());
        assert!(!entries[2].is_proxied());
        assert_eq!(
            entries[1].to_string(),
            "localhost:8000:18000:/:Forge: WebUI"
        );
    }

    #[test]
    fn vasts_default_portal_config_parses() {
        let default = "localhost:1111:11111:/:Instance Portal|localhost:8080:18080:/:Jupyter|\
                       localhost:8080:8080:/terminals/1:Jupyter Terminal|localhost:8384:18384:/:Syncthing|\
                       localhost:6006:16006:/:Tensorboard";
        let (entries, problems) = parse_portal_config(default);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Instance Portal",
                "Jupyter",
                "Jupyter Terminal",
                "Syncthing",
                "Tensorboard"
            ]
        );
        assert_eq!(entries[2].open_path, "/terminals/1");
        assert!(
            !entries[2].is_proxied(),
            "a link to Jupyter's own port, not proxied"
        );
        let proxied: Vec<u16> = entries
            .iter()
            .filter(|e| e.is_proxied())
            .map(|e| e.external_port)
            .collect();
        assert_eq!(proxied, [1111, 8080, 8384, 6006]);
    }

    #[test]
    fn swapped_port_columns_are_refused_with_the_fix() {
        let (entries, problems) =
            parse_portal_config("localhost:17860:7860:/:My App|localhost:7860:17860:/:Right");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, "Right");
        assert!(problems[0].why.contains("look swapped"), "{}", problems[0]);
        assert!(
            problems[0].why.contains("localhost:7860:17860:"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn malformed_entries_are_named_and_the_others_kept() {
        let (entries, problems) = parse_portal_config(
            "localhost:1111:11111:/:Portal|localhost:abc:18000:/:Bad|too:few|localhost:0:1:/:Zero||",
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(problems.len(), 3);
        assert_eq!(problems[0].entry, "localhost:abc:18000:/:Bad");
        assert!(
            problems[0].why.contains("\"abc\" is not a port"),
            "{}",
            problems[0]
        );
        assert!(problems[1].why.contains("has 2 fields"), "{}", problems[1]);
        assert!(problems[2]
            .to_string()
            .starts_with("portal entry \"localhost:0:1:/:Zero\""));
    }

    #[test]
    fn portal_yaml_as_vast_writes_it() {
        let text = "applications:\n  Instance Portal:\n    hostname: localhost\n    external_port: 1111\n    \
                    internal_port: 11111\n    open_path: /\n    name: Instance Portal\n  'Forge: UI':\n    \
                    hostname: localhost\n    external_port: 8000\n    internal_port: 18000\n    open_path: /?x=1\n    \
                    name: 'Forge: UI'\n  Broken:\n    hostname: localhost\n";
        let (entries, problems) = parse_portal_yaml(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].name, "Forge: UI");
        assert_eq!(entries[1].open_path, "/?x=1");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].entry, "Broken");
        assert!(parse_portal_yaml("applications: [1, 2]").is_err());
        assert!(parse_portal_yaml(": : :\n  - [").is_err());
    }

    #[test]
    fn yaml_file_wins_when_present_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("portal.yaml");
        let env = Some("localhost:1111:11111:/:From env");
        let (e, _) = load_portal(&yaml, env).unwrap();
        assert_eq!(e[0].name, "From env");
        std::fs::write(&yaml, "  \n").unwrap();
        assert_eq!(load_portal(&yaml, env).unwrap().0[0].name, "From env");
        std::fs::write(
            &yaml,
            "applications:\n  A:\n    external_port: 1\n    internal_port: 2\n",
        )
        .unwrap();
        let (e, _) = load_portal(&yaml, env).unwrap();
        assert_eq!(e[0].name, "A");
        assert_eq!(e[0].hostname, "localhost");
        assert_eq!(e[0].open_path, "/");
    }

    #[test]
    fn launch_mode_follows_the_launch_script() {
        assert_eq!(launch_mode(None), LaunchMode::Entrypoint);
        assert_eq!(launch_mode(Some("#!/bin/bash\nsshd -D\n")), LaunchMode::Ssh);
        assert_eq!(
            launch_mode(Some("#!/bin/bash\nJupyter lab --port 8080\n")),
            LaunchMode::Jupyter
        );
    }

    #[test]
    fn vast_jupyter_is_linked_only_in_jupyter_mode_with_its_public_port() {
        let j = LaunchMode::Jupyter;
        assert_eq!(
            vast_jupyter_url(j, Some("203.0.113.7"), Some("41234")).as_deref(),
            Some("https://203.0.113.7:41234/")
        );
        assert_eq!(
            vast_jupyter_url(j, Some("2001:db8::1"), Some("41234")).as_deref(),
            Some("https://[2001:db8::1]:41234/")
        );
        assert_eq!(
            vast_jupyter_url(LaunchMode::Ssh, Some("203.0.113.7"), Some("1")),
            None
        );
        assert_eq!(vast_jupyter_url(j, None, Some("41234")), None);
        assert_eq!(vast_jupyter_url(j, Some("203.0.113.7"), Some("x")), None);
    }

    #[test]
    fn served_entries_are_those_caddy_would_serve() {
        let (entries, _) = parse_portal_config(
            "localhost:1111:11111:/:Portal|localhost:8080:18080:/:Jupyter|localhost:7860:7860:/:Direct|\
             localhost:8000:18000:/:Self|localhost:9000:19000:/:Unpublished",
        );
        let published = |p: u16| p != 9000;
        let names = |mode| -> Vec<String> {
            entries_to_serve(&entries, mode, 8000, published)
                .iter()
                .map(|e| e.name.clone())
                .collect()
        };
        assert_eq!(names(LaunchMode::Entrypoint), ["Portal", "Jupyter"]);
        assert_eq!(names(LaunchMode::Jupyter), ["Portal"]);
    }

    #[test]
    fn portal_auth_follows_enable_auth_and_auth_exclude() {
        assert!(portal_auth_required(1111, None, None));
        assert!(!portal_auth_required(1111, Some("false"), None));
        assert!(portal_auth_required(1111, Some("true"), Some("7860, 8188")));
        assert!(!portal_auth_required(8188, None, Some("7860, 8188")));
    }

    #[test]
    fn own_entry_follows_the_plus_10000_convention() {
        assert_eq!(
            own_entry(18000, "Forge").to_string(),
            "localhost:8000:18000:/:Forge"
        );
        assert_eq!(
            own_entry(8000, "Forge").to_string(),
            "localhost:8000:8000:/:Forge"
        );
    }
}
