//! `proxy.toml`: the schema, its defaults, and validation that points at the offending spot.
//!
//! Users edit this file by hand on a rented box, often over a web terminal. A mistake must be
//! reported as `file:line:col: what is wrong, what is expected`, so every value that gets checked
//! after parsing is kept as a [`toml::Spanned`] and every error carries its byte range.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use serde::Deserialize;
use toml::Spanned;

/// Where `--config` is looked for when it is not given.
pub const DEFAULT_SEARCH: &[&str] = &["./proxy.toml", "/etc/vastgate/proxy.toml"];

/// Resolves the config path: the flag, then `VASTGATE_CONFIG`, then [`DEFAULT_SEARCH`].
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("VASTGATE_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    DEFAULT_SEARCH
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SEARCH[0]))
}

/// A configuration problem, located in the file that has it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the configuration: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    At {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// How the gateway decides who may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// htpasswd basic auth (plus Vast's token scheme when `OPEN_BUTTON_TOKEN` is set).
    Basic,
    /// Nobody is asked for credentials. Must be written out; it is never a fallback.
    None,
    /// A trusted proxy in front (Vast's Caddy) has already checked credentials.
    Upstream,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    Off,
    File(PathBuf),
}

/// An IPv4 or IPv6 network in CIDR notation, for `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address (a single host).
    pub fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.addr.is_ipv4() => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            other => other,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The gateway's own settings (`[gateway]`).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub auth: AuthMode,
    /// Resolved against the config file's directory.
    pub htpasswd: Option<PathBuf>,
    /// Paths that pass without credentials; a trailing `/` makes a prefix.
    pub public: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub access_log: AccessLog,
    /// Cuts clients that take longer than this to send a request's headers.
    pub header_timeout: Duration,
    /// How long a connection to an upstream may take to open.
    pub connect_timeout: Duration,
    /// Idle pooled upstream connections are closed after this; keep it below the upstreams' own
    /// keep-alive (uvicorn: 5 s) or a request can land on a connection they just closed.
    pub pool_idle_timeout: Duration,
    /// A WebSocket tunnel with no traffic either way for this long is closed (`None`: never).
    pub tunnel_idle_timeout: Option<Duration>,
    /// On SIGTERM, how long ordinary in-flight requests may take to finish.
    pub shutdown_grace: Duration,
    /// Accept plaintext passwords in the htpasswd file.
    pub allow_plaintext: bool,
    /// Create or update the htpasswd entry of `USERNAME`/`PASSWORD` (default admin/admin) at start.
    pub env_credentials: bool,
    /// Open `sensitive` routes even while the default password is in use.
    pub allow_default_password: bool,
    /// Wrong passwords from one client address before it is answered 429.
    pub failure_limit: u32,
    /// The window in which `failure_limit` failures are counted.
    pub failure_window: Duration,
    /// TLS (and HTTP/2) on the same port, when `[gateway.tls]` is present or `ENABLE_HTTPS=true`.
    pub tls: Option<TlsConfig>,
    /// Threads serving connections; 0: one per CPU the process may use, at most 8.
    pub workers: usize,
}

/// `[gateway.tls]`: where the certificate lives. Vast's own names are the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client must finish the TLS handshake (or send its first plain-HTTP byte) within this.
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            cert: PathBuf::from("/etc/instance.crt"),
            key: PathBuf::from("/etc/instance.key"),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// One `[[route]]`: a path prefix and the upstream behind it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Always starts with `/`; ends with `/` unless it names a single path.
    pub prefix: std::sync::Arc<str>,
    /// Shown on the gateway's pages ("Forge is not answering").
    pub name: String,
    pub upstream: Authority,
    pub strip_prefix: bool,
    pub program: Option<String>,
    /// Remove `Accept-Encoding` toward the upstream (Forge's GZip middleware holds SSE events).
    pub drop_accept_encoding: bool,
    /// Compress responses the upstream left uncompressed, when the client accepts it.
    pub compress: bool,
    /// Extra origins (`https://example.com`) whose pages may open WebSockets on this route.
    pub allow_origins: Vec<String>,
    /// How long the upstream may take to answer with headers before the client gets a 504.
    pub response_timeout: Duration,
    /// A root shell or file manager: closed while the default password is in use.
    pub sensitive: bool,
    /// Forward the client's `Authorization` header (for upstreams with their own login).
    pub keep_authorization: bool,
}

/// `[program.NAME]`: a process the supervisor keeps alive.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    /// The argument vector, executed directly (no shell unless the command names one).
    pub command: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// Set on top of the inherited environment and `/etc/environment`; `${NAME}` in a value
    /// expands from those (the only way a program gets one of the secrets).
    pub env: BTreeMap<String, String>,
    /// Run as this user (a name or a numeric uid); resolved when the program starts.
    pub user: Option<String>,
    pub autostart: bool,
    pub restart: RestartPolicy,
    /// `on-failure` only: give up (FATAL) after this many failed runs in a row.
    pub start_retries: Option<u32>,
    /// Started only once these programs are RUNNING; stopped before them.
    pub depends_on: Vec<String>,
    pub stop_signal: StopSignal,
    /// How long the process group has after the stop signal before SIGKILL.
    pub stop_timeout: Duration,
    /// The program's output file; rotated at `log_max_size`, keeping `log_keep` old files.
    pub log: PathBuf,
    pub log_max_size: u64,
    pub log_keep: u32,
    /// Without a startup probe: RUNNING once the process has stayed up this long.
    pub ready_after: Duration,
    pub startup_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    /// A line of output matching any of these restarts the program.
    pub restart_on_log: Vec<regex::Regex>,
    /// When the program exits 0 and this file exists, it asked to be restarted (Forge's restart
    /// button): it is removed and the program restarts at once, without backoff.
    pub restart_file: Option<PathBuf>,
    pub gpu: GpuNeed,
    pub backoff: BackoffConfig,
    /// Runs to completion instead of staying up (provisioning, a migration): once it has ended
    /// for good (EXITED or FATAL) the programs that `depends_on` it start, and a clean exit
    /// counts as healthy in `vastgate status`. Its `restart` defaults to `"never"`.
    pub oneshot: bool,
}

/// The signal a program is stopped with (`stop_signal`), by name and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal {
    pub name: &'static str,
    pub number: i32,
}

impl StopSignal {
    pub const TERM: StopSignal = StopSignal {
        name: "TERM",
        number: libc::SIGTERM,
    };

    /// Accepts `TERM` or `SIGTERM` (any case) for the signals that make sense to stop with.
    pub fn parse(s: &str) -> Option<StopSignal> {
        const KNOWN: &[(&str, i32)] = &[
            ("TERM", libc::SIGTERM),
            ("INT", libc::SIGINT),
            ("QUIT", libc::SIGQUIT),
            ("HUP", libc::SIGHUP),
            ("KILL", libc::SIGKILL),
            ("USR1", libc::SIGUSR1),
            ("USR2", libc::SIGUSR2),
        ];
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        KNOWN
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|&(name, number)| StopSignal { name, number })
    }
}

/// A health check on the Kubernetes model: what to try, how often, and when to give up.
#[derive(Debug, Clone)]
pub struct Probe {
    pub check: ProbeCheck,
    pub period: Duration,
    /// One attempt fails when it takes longer than this.
    pub timeout: Duration,
    /// Liveness: this many failures in a row restart the program.
    pub failure_threshold: u32,
    /// Startup: the program is restarted when the probe has not passed within this time.
    pub deadline: Duration,
}

/// What a probe tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCheck {
    /// `GET path` on `authority` answers 2xx or 3xx.
    Http { authority: Authority, path: String },
    /// A TCP connection to `HOST:PORT` opens.
    Tcp { address: String },
    /// The command exits 0.
    Command(Vec<String>),
}

/// Whether a program needs a GPU before it is started (`gpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuNeed {
    NotNeeded,
    /// Wait (visibly) until `nvidia-smi` reports a GPU; FATAL after `wait`.
    Required {
        wait: Duration,
    },
}

/// Restart delays: `initial`, doubling up to `max`, back to `initial` after a run of `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
    /// Each delay is shortened by a random fraction of up to this much (0 to 1).
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// `[supervisor]`.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub socket: PathBuf,
    /// Where `<name>.log` goes for programs without a `log` key.
    pub log_dir: PathBuf,
    /// Read into every program's environment (Vast persists its settings there); `None`: off.
    pub environment_file: Option<PathBuf>,
    /// On SIGTERM, all programs must be stopped within this (Docker waits 10 s).
    pub stop_deadline: Duration,
    /// Copy program output, prefixed with the program's name, to the supervisor's stdout.
    pub echo_output: bool,
    /// The `nvidia-smi` to run, and how long it may take before it is killed.
    pub nvidia_smi: String,
    pub gpu_timeout: Duration,
    /// Defaults for programs' `log_max_size` and `log_keep`.
    pub log_max_size: u64,
    pub log_keep: u32,
}

/// A validated `proxy.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub gateway: GatewayConfig,
    pub routes: Vec<Route>,
    pub supervisor: SupervisorConfig,
    pub programs: Vec<Program>,
    pub vast: VastConfig,
}

/// `[vast]`: taking the place of Vast's own Caddy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VastConfig {
    /// Serve every `PORTAL_CONFIG` entry the way Vast's Caddy does (`VASTGATE_PORTAL=true` too).
    pub portal: bool,
    /// The address the portal listeners bind (their ports come from the entries).
    pub portal_bind: IpAddr,
}

impl Config {
    /// Reads, validates and applies the environment's overrides (`ENABLE_HTTPS=true` turns TLS
    /// on with Vast's certificate paths).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(path, &text)?;
        let enable_https = std::env::var("ENABLE_HTTPS").ok();
        if is_true(enable_https.as_deref()) && config.gateway.tls.is_none() {
            config.gateway.tls = Some(TlsConfig::default());
        }
        if is_true(std::env::var("VASTGATE_PORTAL").ok().as_deref()) {
            config.vast.portal = true;
        }
        Ok(config)
    }

    /// Parses and validates `text` as if read from `path` (relative paths resolve against its
    /// directory).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let locate = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_col(text, span.map_or(0, |s| s.start));
            ConfigError::At {
                file: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawFile =
            toml::from_str(text).map_err(|e| locate(e.span(), e.message().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = raw
            .validate(base)
            .map_err(|Invalid { span, message }| locate(Some(span), message))?;
        config.path = path.to_path_buf();
        Ok(config)
    }
}

/// `true`, `1`, `yes` or `on`, in any case.
fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|v| {
        ["true", "1", "yes", "on"]
            .iter()
            .any(|t| v.trim().eq_ignore_ascii_case(t))
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// A semantic error before it is given a file position.
struct Invalid {
    span: Range<usize>,
    message: String,
}

fn invalid<T>(at: &Spanned<T>, message: impl Into<String>) -> Invalid {
    Invalid {
        span: at.span(),
        message: message.into(),
    }
}

type Sp<T> = Spanned<T>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
    #[serde(default)]
    supervisor: RawSupervisor,
    #[serde(default, rename = "program")]
    programs: BTreeMap<String, RawProgram>,
    #[serde(default)]
    vast: RawVast,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVast {
    #[serde(default)]
    portal: bool,
    portal_bind: Option<Sp<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<Sp<String>>,
    auth: Option<AuthMode>,
    htpasswd: Option<String>,
    public: Option<Vec<Sp<String>>>,
    trusted_proxies: Option<Vec<Sp<String>>>,
    access_log: Option<String>,
    header_timeout: Option<Sp<String>>,
    connect_timeout: Option<Sp<String>>,
    pool_idle_timeout: Option<Sp<String>>,
    tunnel_idle_timeout: Option<Sp<String>>,
    shutdown_grace: Option<Sp<String>>,
    #[serde(default)]
    allow_plaintext: bool,
    #[serde(default)]
    env_credentials: bool,
    #[serde(default)]
    allow_default_password: bool,
    failure_limit: Option<Sp<u32>>,
    failure_window: Option<Sp<String>>,
    tls: Option<RawTls>,
    workers: Option<Sp<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    handshake_timeout: Option<Sp<String>>,
}

impl RawTls {
    fn validate(self, base: &Path) -> Result<TlsConfig, Invalid> {
        let default = TlsConfig::default();
        Ok(TlsConfig {
            cert: self.cert.map_or(default.cert, |p| base.join(p)),
            key: self.key.map_or(default.key, |p| base.join(p)),
            handshake_timeout: duration_or(&self.handshake_timeout, default.handshake_timeout)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Sp<String>,
    upstream: Sp<String>,
    name: Option<String>,
    #[serde(default)]
    strip_prefix: bool,
    program: Option<Sp<String>>,
    #[serde(default)]
    drop_accept_encoding: bool,
    compress: Option<bool>,
    #[serde(default)]
    allow_origins: Vec<Sp<String>>,
    response_timeout: Option<Sp<String>>,
    #[serde(default)]
    sensitive: bool,
    #[serde(default)]
    keep_authorization: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    socket: Option<String>,
    log_dir: Option<String>,
    log_max_size: Option<Sp<String>>,
    log_keep: Option<u32>,
    environment_file: Option<String>,
    stop_deadline: Option<Sp<String>>,
    echo_output: Option<bool>,
    nvidia_smi: Option<String>,
    gpu_timeout: Option<Sp<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    command: Sp<Vec<String>>,
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    user: Option<Sp<String>>,
    #[serde(default = "yes")]
    autostart: bool,
    restart: Option<Sp<RestartPolicy>>,
    start_retries: Option<Sp<u32>>,
    #[serde(default)]
    depends_on: Vec<Sp<String>>,
    stop_signal: Option<Sp<String>>,
    stop_timeout: Option<Sp<String>>,
    log: Option<String>,
    log_max_size: Option<Sp<String>>,
    log_keep: Option<u32>,
    ready_after: Option<Sp<String>>,
    startup_probe: Option<Sp<RawProbe>>,
    liveness_probe: Option<Sp<RawProbe>>,
    #[serde(default)]
    restart_on_log: Vec<Sp<String>>,
    restart_file: Option<String>,
    gpu: Option<Sp<String>>,
    gpu_wait: Option<Sp<String>>,
    backoff: Option<RawBackoff>,
    #[serde(default)]
    oneshot: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    http: Option<Sp<String>>,
    tcp: Option<Sp<String>>,
    command: Option<Sp<Vec<String>>>,
    period: Option<Sp<String>>,
    timeout: Option<Sp<String>>,
    failure_threshold: Option<Sp<u32>>,
    deadline: Option<Sp<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Option<Sp<String>>,
    max: Option<Sp<String>>,
    reset_after: Option<Sp<String>>,
    jitter: Option<Sp<f64>>,
}

fn yes() -> bool {
    true
}

impl RawFile {
    fn validate(self, base: &Path) -> Result<Config, Invalid> {
        let g = self.gateway;
        let listen = match &g.listen {
            None => SocketAddr::from(([0, 0, 0, 0], 8000)),
            Some(s) => s.get_ref().parse().map_err(|_| {
                invalid(s, format!(
                    "`listen = \"{}\"` is not an address: expected IP:PORT such as \"0.0.0.0:8000\" or \"[::]:8000\"",
                    s.get_ref()
                ))
            })?,
        };
        let public = match g.public {
            None => vec![
                "/healthz".into(),
                "/manifest.json".into(),
                "/.well-known/".into(),
            ],
            Some(list) => list
                .into_iter()
                .map(|p| {
                    if p.get_ref().starts_with('/') {
                        Ok(p.into_inner())
                    } else {
                        Err(invalid(
                            &p,
                            format!("public path \"{}\" must start with \"/\"", p.get_ref()),
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let trusted_proxies = match g.trusted_proxies {
            None => IpNet::parse("127.0.0.1/32").into_iter().collect(),
            Some(list) => list
                .iter()
                .map(|s| {
                    IpNet::parse(s.get_ref()).ok_or_else(|| {
                        invalid(s, format!(
                            "trusted proxy \"{}\" is not an address or network: expected e.g. \"127.0.0.1/32\" or \"10.0.0.0/8\"",
                            s.get_ref()
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let access_log = match g.access_log.as_deref() {
            None | Some("stdout") => AccessLog::Stdout,
            Some("off") => AccessLog::Off,
            Some(path) => AccessLog::File(base.join(path)),
        };
        let gateway =
            GatewayConfig {
                listen,
                auth: g.auth.unwrap_or(AuthMode::Basic),
                htpasswd: g.htpasswd.map(|p| base.join(p)),
                public,
                trusted_proxies,
                access_log,
                header_timeout: duration_or(&g.header_timeout, Duration::from_secs(30))?,
                connect_timeout: duration_or(&g.connect_timeout, Duration::from_secs(5))?,
                pool_idle_timeout: duration_or(&g.pool_idle_timeout, Duration::from_secs(4))?,
                tunnel_idle_timeout: optional_duration_or(
                    &g.tunnel_idle_timeout,
                    Some(Duration::from_secs(3600)),
                )?,
                shutdown_grace: duration_or(&g.shutdown_grace, Duration::from_secs(3))?,
                allow_plaintext: g.allow_plaintext,
                env_credentials: g.env_credentials,
                allow_default_password: g.allow_default_password,
                failure_limit: match &g.failure_limit {
                    None => 10,
                    Some(n) if *n.get_ref() > 0 => *n.get_ref(),
                    Some(n) => return Err(invalid(
                        n,
                        "failure_limit must be at least 1 (failures per client address before 429)",
                    )),
                },
                failure_window: duration_or(&g.failure_window, Duration::from_secs(60))?,
                tls: g.tls.map(|t| t.validate(base)).transpose()?,
                workers: match &g.workers {
                    None => 0,
                    Some(n) if *n.get_ref() <= 1024 => *n.get_ref(),
                    Some(n) => {
                        return Err(invalid(
                            n,
                            "workers must be at most 1024 (0, the default, means one per CPU)",
                        ))
                    }
                },
            };

        let supervisor = self.supervisor.validate(base)?;
        let mut dependencies = Vec::with_capacity(self.programs.len());
        let programs: Vec<Program> = self
            .programs
            .into_iter()
            .map(|(name, p)| {
                dependencies.push(p.depends_on.clone());
                p.validate(name, base, &supervisor)
            })
            .collect::<Result<_, _>>()?;
        check_dependencies(&programs, &dependencies)?;

        let mut routes: Vec<Route> = Vec::with_capacity(self.routes.len());
        for r in self.routes {
            if routes
                .iter()
                .any(|seen| *seen.prefix == **r.prefix.get_ref())
            {
                return Err(invalid(
                    &r.prefix,
                    format!(
                        "duplicate route prefix \"{}\": each prefix may appear once",
                        r.prefix.get_ref()
                    ),
                ));
            }
            routes.push(r.validate(&programs)?);
        }

        let portal_bind = match &self.vast.portal_bind {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(s) => s.get_ref().parse().map_err(|_| {
                invalid(
                    s,
                    format!(
                        "portal_bind \"{}\" is not an IP address: expected e.g. \"0.0.0.0\" or \"::\"",
                        s.get_ref()
                    ),
                )
            })?,
        };
        Ok(Config {
            path: PathBuf::new(), // set by `Config::parse`
            gateway,
            routes,
            supervisor,
            programs,
            vast: VastConfig {
                portal: self.vast.portal,
                portal_bind,
            },
        })
    }
}

impl RawSupervisor {
    fn validate(self, base: &Path) -> Result<SupervisorConfig, Invalid> {
        Ok(SupervisorConfig {
            socket: self
                .socket
                .map_or_else(|| PathBuf::from("/run/vastgate.sock"), |s| base.join(s)),
            log_dir: self
                .log_dir
                .map_or_else(|| PathBuf::from("/var/log/vastgate"), |d| base.join(d)),
            environment_file: match self.environment_file.as_deref() {
                None => Some(PathBuf::from("/etc/environment")),
                Some("off") => None,
                Some(f) => Some(base.join(f)),
            },
            stop_deadline: duration_or(&self.stop_deadline, Duration::from_secs(8))?,
            echo_output: self.echo_output.unwrap_or(true),
            nvidia_smi: self.nvidia_smi.unwrap_or_else(|| "nvidia-smi".into()),
            gpu_timeout: duration_or(&self.gpu_timeout, Duration::from_secs(10))?,
            log_max_size: size_or(&self.log_max_size, 10 * 1024 * 1024)?,
            log_keep: self.log_keep.unwrap_or(3),
        })
    }
}

impl RawProgram {
    fn validate(
        self,
        name: String,
        base: &Path,
        supervisor: &SupervisorConfig,
    ) -> Result<Program, Invalid> {
        let p = self;
        if p.command.get_ref().is_empty() {
            return Err(invalid(&p.command, format!(
                "program \"{name}\" has an empty command: expected an argument list such as [\"python3\", \"-m\", \"http.server\"]"
            )));
        }
        let default_restart = if p.oneshot {
            RestartPolicy::Never
        } else {
            RestartPolicy::Always
        };
        let restart = p.restart.as_ref().map_or(default_restart, |r| *r.get_ref());
        if let (true, Some(r)) = (p.oneshot, &p.restart) {
            if *r.get_ref() == RestartPolicy::Always {
                return Err(invalid(
                    r,
                    format!(
                        "program \"{name}\" is a oneshot, which runs to completion, but restart = \"always\" \
                         would run it forever: expected restart = \"never\" (the default for a oneshot) \
                         or \"on-failure\""
                    ),
                ));
            }
        }
        if let Some(retries) = &p.start_retries {
            if restart != RestartPolicy::OnFailure {
                return Err(invalid(
                    retries,
                    format!(
                    "program \"{name}\": start_retries only applies to restart = \"on-failure\" \
                     (restart = \"always\" never gives up, \"never\" never retries): expected \
                     restart = \"on-failure\" or no start_retries"
                ),
                ));
            }
        }
        if let Some(user) = &p.user {
            if user.get_ref().trim().is_empty() {
                return Err(invalid(
                    user,
                    "user is empty: expected a user name such as \"appuser\" or a numeric uid",
                ));
            }
        }
        let stop_signal = match &p.stop_signal {
            None => StopSignal::TERM,
            Some(s) => StopSignal::parse(s.get_ref()).ok_or_else(|| {
                invalid(s, format!(
                    "unknown stop signal \"{}\": expected one of TERM, INT, QUIT, HUP, KILL, USR1, USR2",
                    s.get_ref()
                ))
            })?,
        };
        let cwd = p.cwd.map(|c| base.join(c));
        let restart_file = p
            .restart_file
            .map(|f| cwd.as_deref().unwrap_or(base).join(f));
        let log = p.log.map_or_else(
            || supervisor.log_dir.join(format!("{name}.log")),
            |l| base.join(l),
        );
        let restart_on_log = p
            .restart_on_log
            .iter()
            .map(|pattern| {
                regex::Regex::new(pattern.get_ref()).map_err(|e| {
                    invalid(pattern, format!(
                        "restart_on_log pattern \"{}\" is not a regular expression ({}): expected e.g. \"illegal memory access\"",
                        pattern.get_ref(),
                        e.to_string().lines().last().unwrap_or("invalid")
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let gpu = match &p.gpu {
            None => GpuNeed::NotNeeded,
            Some(g) => match g.get_ref().as_str() {
                "required" => GpuNeed::Required {
                    wait: duration_or(&p.gpu_wait, Duration::from_secs(600))?,
                },
                "none" | "optional" => GpuNeed::NotNeeded,
                other => {
                    return Err(invalid(g, format!(
                        "gpu = \"{other}\" is not understood: expected \"required\" (wait for a GPU before starting) or \"none\""
                    )))
                }
            },
        };
        let backoff = match &p.backoff {
            None => BackoffConfig::default(),
            Some(b) => b.validate()?,
        };
        Ok(Program {
            command: p.command.into_inner(),
            cwd,
            env: p.env,
            user: p.user.map(|u| u.into_inner().trim().to_string()),
            autostart: p.autostart,
            restart,
            start_retries: p.start_retries.map(Spanned::into_inner),
            depends_on: p.depends_on.into_iter().map(Spanned::into_inner).collect(),
            stop_signal,
            stop_timeout: duration_or(&p.stop_timeout, Duration::from_secs(5))?,
            log,
            log_max_size: size_or(&p.log_max_size, supervisor.log_max_size)?,
            log_keep: p.log_keep.unwrap_or(supervisor.log_keep),
            ready_after: duration_or(&p.ready_after, Duration::from_secs(1))?,
            startup_probe: p
                .startup_probe
                .as_ref()
                .map(|probe| validate_probe(probe, "startup_probe"))
                .transpose()?,
            liveness_probe: p
                .liveness_probe
                .as_ref()
                .map(|probe| validate_probe(probe, "liveness_probe"))
                .transpose()?,
            restart_on_log,
            restart_file,
            gpu,
            backoff,
            oneshot: p.oneshot,
            name,
        })
    }
}

impl RawBackoff {
    fn validate(&self) -> Result<BackoffConfig, Invalid> {
        let d = BackoffConfig::default();
        let initial = duration_or(&self.initial, d.initial)?;
        let max = duration_or(&self.max, d.max.max(initial))?;
        if max < initial {
            if let Some(m) = &self.max {
                return Err(invalid(
                    m,
                    "backoff max is shorter than initial: expected max >= initial",
                ));
            }
        }
        let jitter =
            match &self.jitter {
                None => d.jitter,
                Some(j) if (0.0..=1.0).contains(j.get_ref()) => *j.get_ref(),
                Some(j) => return Err(invalid(
                    j,
                    "backoff jitter is a fraction: expected a number from 0.0 to 1.0 such as 0.2",
                )),
            };
        Ok(BackoffConfig {
            initial,
            max,
            reset_after: duration_or(&self.reset_after, d.reset_after)?,
            jitter,
        })
    }
}

fn validate_probe(probe: &Sp<RawProbe>, key: &str) -> Result<Probe, Invalid> {
    let p = probe.get_ref();
    let given = [p.http.is_some(), p.tcp.is_some(), p.command.is_some()]
        .iter()
        .filter(|&&b| b)
        .count();
    if given != 1 {
        return Err(invalid(probe, format!(
            "{key} needs exactly one check: expected one of http = \"http://127.0.0.1:7860/internal/ping\", \
             tcp = \"127.0.0.1:7860\" or command = [\"...\"]"
        )));
    }
    let check = if let Some(url) = &p.http {
        parse_probe_url(url.get_ref()).ok_or_else(|| {
            invalid(url, format!(
                "probe URL \"{}\" is not an HTTP URL: expected \"http://HOST:PORT/PATH\" such as \"http://127.0.0.1:7860/internal/ping\"",
                url.get_ref()
            ))
        })?
    } else if let Some(addr) = &p.tcp {
        let ok = addr.get_ref().rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !ok {
            return Err(invalid(
                addr,
                format!(
                    "probe address \"{}\" is not HOST:PORT: expected e.g. \"127.0.0.1:8081\"",
                    addr.get_ref()
                ),
            ));
        }
        ProbeCheck::Tcp {
            address: addr.get_ref().clone(),
        }
    } else if let Some(cmd) = &p.command {
        if cmd.get_ref().is_empty() {
            return Err(invalid(cmd, "probe command is empty: expected an argument list such as [\"curl\", \"-fs\", \"http://127.0.0.1:8081/\"]"));
        }
        ProbeCheck::Command(cmd.get_ref().clone())
    } else {
        return Err(invalid(probe, format!("{key} needs a check")));
    };
    let failure_threshold = match &p.failure_threshold {
        None => 3,
        Some(n) if *n.get_ref() >= 1 => *n.get_ref(),
        Some(n) => {
            return Err(invalid(
                n,
                "failure_threshold must be at least 1: expected e.g. 3",
            ))
        }
    };
    Ok(Probe {
        check,
        period: duration_or(&p.period, Duration::from_secs(10))?,
        timeout: duration_or(&p.timeout, Duration::from_secs(5))?,
        failure_threshold,
        deadline: duration_or(&p.deadline, Duration::from_secs(30 * 60))?,
    })
}

/// `http://HOST:PORT/PATH` (PATH defaults to `/`).
fn parse_probe_url(s: &str) -> Option<ProbeCheck> {
    let rest = s.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let authority: Authority = authority.parse().ok()?;
    let port_ok = authority.port_u16().is_some_and(|p| p != 0);
    (port_ok && !authority.as_str().contains('@') && !path.contains(char::is_whitespace)).then(
        || ProbeCheck::Http {
            authority,
            path: path.to_string(),
        },
    )
}

/// Every `depends_on` names a program, and the dependencies have no cycle.
fn check_dependencies(
    programs: &[Program],
    dependencies: &[Vec<Sp<String>>],
) -> Result<(), Invalid> {
    for (program, deps) in programs.iter().zip(dependencies) {
        for dep in deps {
            if dep.get_ref() == &program.name {
                return Err(invalid(
                    dep,
                    format!(
                        "program \"{}\" depends on itself: expected the names of other programs",
                        program.name
                    ),
                ));
            }
            if !programs.iter().any(|p| p.name == *dep.get_ref()) {
                return Err(invalid(
                    dep,
                    format!(
                        "program \"{}\" depends on \"{}\" but there is no [program.{}] section",
                        program.name,
                        dep.get_ref(),
                        dep.get_ref()
                    ),
                ));
            }
        }
    }
    if let Some(stuck) = dependency_cycle(programs) {
        let at = programs.iter().position(|p| p.name == stuck).unwrap_or(0);
        let span_of = dependencies
            .get(at)
            .and_then(|d| d.first())
            .map(Spanned::span)
            .unwrap_or(0..0);
        return Err(Invalid {
            span: span_of,
            message: format!(
                "program \"{stuck}\" is part of a depends_on cycle: expected dependencies that end somewhere"
            ),
        });
    }
    Ok(())
}

/// A program on a dependency cycle, if there is one.
fn dependency_cycle(programs: &[Program]) -> Option<String> {
    let mut done: Vec<&str> = Vec::new();
    let mut remaining: Vec<&Program> = programs.iter().collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|p| {
            let ready = p.depends_on.iter().all(|d| done.contains(&d.as_str()));
            if ready {
                done.push(&p.name);
            }
            !ready
        });
        if remaining.len() == before {
            return remaining.first().map(|p| p.name.clone());
        }
    }
    None
}

impl RawRoute {
    fn validate(self, programs: &[Program]) -> Result<Route, Invalid> {
        let prefix = self.prefix.get_ref();
        if !prefix.starts_with('/') {
            return Err(invalid(
                &self.prefix,
                format!("route prefix \"{prefix}\" must start with \"/\" (e.g. \"/files/\")"),
            ));
        }
        if crate::gateway::path::canonicalize(prefix).map_or(true, |c| c != *prefix) {
            return Err(invalid(&self.prefix, format!(
                "route prefix \"{prefix}\" is not a canonical path: no \"//\", \".\" or \"..\" segments, escapes or special characters"
            )));
        }
        let upstream = parse_upstream(self.upstream.get_ref()).ok_or_else(|| {
            invalid(&self.upstream, format!(
                "upstream \"{}\" is not an HTTP address: expected \"http://HOST:PORT\" such as \"http://127.0.0.1:7860\"",
                self.upstream.get_ref()
            ))
        })?;
        if let Some(p) = &self.program {
            if !programs.iter().any(|prog| prog.name == *p.get_ref()) {
                return Err(invalid(
                    p,
                    format!(
                        "route names program \"{}\" but there is no [program.{}] section",
                        p.get_ref(),
                        p.get_ref()
                    ),
                ));
            }
        }
        let allow_origins = self
            .allow_origins
            .into_iter()
            .map(|o| {
                let ok = o.get_ref().parse::<http::Uri>().ok().is_some_and(|u| {
                    u.scheme().is_some() && u.authority().is_some() && u.path() == "/"
                });
                if ok {
                    Ok(o.get_ref().trim_end_matches('/').to_string())
                } else {
                    Err(invalid(&o, format!(
                        "allowed origin \"{}\" is not an origin: expected SCHEME://HOST[:PORT] such as \"https://example.com\"",
                        o.get_ref()
                    )))
                }
            })
            .collect::<Result<_, _>>()?;
        let program = self.program.map(Spanned::into_inner);
        let prefix = self.prefix.into_inner();
        let name = self
            .name
            .or_else(|| program.clone())
            .unwrap_or_else(|| prefix.clone());
        Ok(Route {
            name,
            upstream,
            strip_prefix: self.strip_prefix,
            program,
            drop_accept_encoding: self.drop_accept_encoding,
            compress: self.compress.unwrap_or(true),
            allow_origins,
            response_timeout: duration_or(&self.response_timeout, Duration::from_secs(3600))?,
            sensitive: self.sensitive,
            keep_authorization: self.keep_authorization,
            prefix: prefix.into(),
        })
    }
}

/// Accepts exactly `http://HOST:PORT` with an optional trailing `/`.
fn parse_upstream(s: &str) -> Option<Authority> {
    let rest = s.strip_prefix("http://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let authority: Authority = rest.parse().ok()?;
    let port_ok = authority.port_u16().is_some_and(|p| p != 0);
    (port_ok && !authority.as_str().contains('@') && !authority.host().is_empty())
        .then_some(authority)
}

/// Parses `500ms`, `30s`, `5m`, `2h` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    let n: u64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Parses `10MB`, `512KB`, `1GB` (binary units, `KiB` spellings too) or a bare number of bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn size_or(v: &Option<Sp<String>>, default: u64) -> Result<u64, Invalid> {
    match v {
        None => Ok(default),
        Some(s) => match parse_size(s.get_ref()) {
            Some(n) if n > 0 => Ok(n),
            _ => Err(invalid(s, format!(
                "\"{}\" is not a size: expected a positive number with a unit, such as \"512KB\", \"10MB\" or \"1GB\"",
                s.get_ref()
            ))),
        },
    }
}

fn duration_or(v: &Option<Sp<String>>, default: Duration) -> Result<Duration, Invalid> {
    match v {
        None => Ok(default),
        Some(s) => match parse_duration(s.get_ref()) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(invalid(s, format!(
                "\"{}\" is not a duration: expected a positive number with a unit, such as \"500ms\", \"30s\", \"5m\" or \"1h\"",
                s.get_ref()
            ))),
        },
    }
}

/// Like [`duration_or`], but `"off"` means no limit.
fn optional_duration_or(
    v: &Option<Sp<String>>,
    default: Option<Duration>,
) -> Result<Option<Duration>, Invalid> {
    match v {
        Some(s) if s.get_ref() == "off" => Ok(None),
        None => Ok(default),
        Some(_) => duration_or(v, Duration::ZERO).map(Some),
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::Basic => "basic",
            AuthMode::None => "none",
            AuthMode::Upstream => "upstream",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/vastgate/proxy.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_gets_safe_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.gateway.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(c.gateway.auth, AuthMode::Basic);
        assert!(c.gateway.public.contains(&"/healthz".to_string()));
        assert_eq!(c.gateway.pool_idle_timeout, Duration::from_secs(4));
    }

    #[test]
    fn unknown_key_is_located() {
        let err = parse("[gateway]\nlisten = \"127.0.0.1:8000\"\nlisen = 1\n").unwrap_err();
        assert!(
            err.starts_with("/etc/vastgate/proxy.toml:3:1: unknown field `lisen`"),
            "{err}"
        );
    }

    #[test]
    fn bad_listen_address_is_located_at_the_value() {
        let err = parse("[gateway]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(err.starts_with("/etc/vastgate/proxy.toml:2:10: "), "{err}");
        assert!(err.contains("expected IP:PORT"), "{err}");
    }

    #[test]
    fn prefix_without_leading_slash_is_refused() {
        let err = parse("[[route]]\nprefix = \"files/\"\nupstream = \"http://127.0.0.1:1\"\n")
            .unwrap_err();
        assert!(err.starts_with("/etc/vastgate/proxy.toml:2:10: "), "{err}");
        assert!(err.contains("must start with \"/\""), "{err}");
    }

    #[test]
    fn duplicate_prefix_is_located_at_the_second() {
        let text = "[[route]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:1\"\n\
                    [[route]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:2\"\n";
        let err = parse(text).unwrap_err();
        assert!(err.starts_with("/etc/vastgate/proxy.toml:5:10: "), "{err}");
        assert!(err.contains("duplicate route prefix"), "{err}");
    }

    #[test]
    fn upstream_must_be_plain_http_with_port() {
        for bad in [
            "https://127.0.0.1:1",
            "http://127.0.0.1",
            "127.0.0.1:80",
            "http://u:p@h:1",
            "http://h:1/x",
        ] {
            let text = format!("[[route]]\nprefix = \"/\"\nupstream = \"{bad}\"\n");
            let err = parse(&text).unwrap_err();
            assert!(err.contains(":3:12: "), "{bad}: {err}");
            assert!(
                err.contains("expected \"http://HOST:PORT\""),
                "{bad}: {err}"
            );
        }
        let ok =
            parse("[[route]]\nprefix = \"/\"\nupstream = \"http://localhost:7860/\"\n").unwrap();
        assert_eq!(ok.routes[0].upstream.as_str(), "localhost:7860");
    }

    #[test]
    fn route_naming_unknown_program_is_refused() {
        let err =
            parse("[[route]]\nprefix = \"/\"\nupstream = \"http://h:1\"\nprogram = \"forge\"\n")
                .unwrap_err();
        assert!(err.contains(":4:11: "), "{err}");
        assert!(err.contains("no [program.forge] section"), "{err}");
    }

    #[test]
    fn workers_default_to_one_per_cpu_and_are_bounded() {
        assert_eq!(parse("[gateway]\n").unwrap().gateway.workers, 0);
        assert_eq!(
            parse("[gateway]\nworkers = 3\n").unwrap().gateway.workers,
            3
        );
        let err = parse("[gateway]\nworkers = 5000\n").unwrap_err();
        assert!(err.starts_with("/etc/vastgate/proxy.toml:2:11: "), "{err}");
        assert!(err.contains("workers must be at most 1024"), "{err}");
        let err = parse("[gateway]\nworkers = -1\n").unwrap_err();
        assert!(err.contains(":2:11: "), "{err}");
    }

    #[test]
    fn type_errors_are_located() {
        let err = parse("[gateway]\nauth = \"open\"\n").unwrap_err();
        assert!(err.starts_with("/etc/vastgate/proxy.toml:2:8: "), "{err}");
        let err =
            parse("[[route]]\nprefix = \"/\"\nupstream = \"http://h:1\"\nstrip_prefix = \"yes\"\n")
                .unwrap_err();
        assert!(err.contains(":4:16: "), "{err}");
    }

    #[test]
    fn tls_table_enables_tls_with_vast_defaults() {
        assert_eq!(parse("").unwrap().gateway.tls, None);
        let c = parse("[gateway.tls]\n").unwrap();
        assert_eq!(c.gateway.tls, Some(TlsConfig::default()));
        let c = parse("[gateway.tls]\ncert = \"c.pem\"\nkey = \"/k.pem\"\n").unwrap();
        let tls = c.gateway.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/vastgate/c.pem"));
        assert_eq!(tls.key, PathBuf::from("/k.pem"));
        let err = parse("[gateway.tls]\ncertificate = \"x\"\n").unwrap_err();
        assert!(err.contains(":2:1: unknown field `certificate`"), "{err}");
        assert!(is_true(Some("TRUE")) && is_true(Some("1")) && !is_true(Some("false")));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("5 min"), None);
        assert_eq!(parse_duration("-1s"), None);
        let err = parse("[gateway]\nheader_timeout = \"soon\"\n").unwrap_err();
        assert!(
            err.contains(":2:18: ") && err.contains("not a duration"),
            "{err}"
        );
        let c = parse("[gateway]\ntunnel_idle_timeout = \"off\"\n").unwrap();
        assert_eq!(c.gateway.tunnel_idle_timeout, None);
    }

    #[test]
    fn paths_resolve_against_the_config_directory() {
        let c =
            parse("[gateway]\nhtpasswd = \"htpasswd\"\naccess_log = \"access.jsonl\"\n").unwrap();
        assert_eq!(
            c.gateway.htpasswd,
            Some(PathBuf::from("/etc/vastgate/htpasswd"))
        );
        assert_eq!(
            c.gateway.access_log,
            AccessLog::File("/etc/vastgate/access.jsonl".into())
        );
    }

    #[test]
    fn program_defaults_are_supervisord_like_but_never_give_up() {
        let c = parse("[program.web]\ncommand = [\"python3\", \"-m\", \"http.server\"]\n").unwrap();
        let p = &c.programs[0];
        assert_eq!(p.restart, RestartPolicy::Always);
        assert_eq!(p.start_retries, None);
        assert!(p.autostart);
        assert_eq!(p.stop_signal, StopSignal::TERM);
        assert_eq!(p.log, PathBuf::from("/var/log/vastgate/web.log"));
        assert_eq!(p.backoff, BackoffConfig::default());
        assert_eq!(p.gpu, GpuNeed::NotNeeded);
        assert_eq!(
            c.supervisor.environment_file,
            Some(PathBuf::from("/etc/environment"))
        );
        assert_eq!(c.supervisor.stop_deadline, Duration::from_secs(8));
    }

    #[test]
    fn every_program_key_parses() {
        let text = r#"
[supervisor]
socket = "run/vg.sock"
log_dir = "logs"
log_max_size = "1MB"
log_keep = 5
environment_file = "off"
stop_deadline = "9s"

[program.base]
command = ["sleep", "1000"]

[program.forge]
command = ["python3", "launch.py"]
cwd = "/forge"
env = { SD_WEBUI_RESTART = "1" }
user = "appuser"
autostart = false
restart = "on-failure"
start_retries = 4
depends_on = ["base"]
stop_signal = "SIGINT"
stop_timeout = "20s"
log = "forge.log"
ready_after = "2s"
restart_on_log = ["illegal memory access", "CUDA error: .*"]
restart_file = "tmp/restart"
gpu = "required"
gpu_wait = "2m"
backoff = { initial = "100ms", max = "2s", reset_after = "30s", jitter = 0.0 }
startup_probe = { http = "http://127.0.0.1:7860/internal/ping", period = "2s", timeout = "1s", deadline = "30m" }
liveness_probe = { tcp = "127.0.0.1:7860", period = "10s", failure_threshold = 2 }
"#;
        let c = parse(text).unwrap();
        assert_eq!(
            c.supervisor.socket,
            PathBuf::from("/etc/vastgate/run/vg.sock")
        );
        assert_eq!(c.supervisor.environment_file, None);
        let p = c.programs.iter().find(|p| p.name == "forge").unwrap();
        assert_eq!(p.user.as_deref(), Some("appuser"));
        assert!(!p.autostart);
        assert_eq!(p.restart, RestartPolicy::OnFailure);
        assert_eq!(p.start_retries, Some(4));
        assert_eq!(p.depends_on, ["base"]);
        assert_eq!(p.stop_signal.name, "INT");
        assert_eq!(p.stop_timeout, Duration::from_secs(20));
        assert_eq!(p.log, PathBuf::from("/etc/vastgate/forge.log"));
        assert_eq!(p.log_max_size, 1 << 20);
        assert_eq!(p.log_keep, 5);
        assert_eq!(p.restart_on_log.len(), 2);
        assert_eq!(p.restart_file, Some(PathBuf::from("/forge/tmp/restart")));
        assert_eq!(
            p.gpu,
            GpuNeed::Required {
                wait: Duration::from_secs(120)
            }
        );
        assert_eq!(p.backoff.initial, Duration::from_millis(100));
        assert_eq!(p.backoff.jitter, 0.0);
        let startup = p.startup_probe.as_ref().unwrap();
        assert_eq!(startup.deadline, Duration::from_secs(1800));
        assert!(
            matches!(&startup.check, ProbeCheck::Http { path, .. } if path == "/internal/ping")
        );
        let liveness = p.liveness_probe.as_ref().unwrap();
        assert_eq!(liveness.failure_threshold, 2);
        assert_eq!(
            liveness.check,
            ProbeCheck::Tcp {
                address: "127.0.0.1:7860".into()
            }
        );
    }

    #[test]
    fn program_mistakes_are_located_with_what_was_expected() {
        let cases: &[(&str, &str, &str)] = &[
            ("restart = \"sometimes\"", ":3:11: ", "unknown variant"),
            (
                "restart = \"always\"\nstart_retries = 3",
                ":4:17: ",
                "expected restart = \"on-failure\"",
            ),
            ("stop_signal = \"STOP\"", ":3:15: ", "expected one of TERM"),
            ("stop_timeout = \"soon\"", ":3:16: ", "not a duration"),
            ("log_max_size = \"10 parsecs\"", ":3:16: ", "not a size"),
            (
                "restart_on_log = [\"(unclosed\"]",
                ":3:19: ",
                "not a regular expression",
            ),
            ("gpu = \"maybe\"", ":3:7: ", "expected \"required\""),
            (
                "depends_on = [\"ghost\"]",
                ":3:15: ",
                "no [program.ghost] section",
            ),
            ("depends_on = [\"a\"]", ":3:15: ", "depends on itself"),
            (
                "startup_probe = { period = \"1s\" }",
                ":3:17: ",
                "exactly one check",
            ),
            (
                "liveness_probe = { http = \"https://x:1/\" }",
                ":3:27: ",
                "expected \"http://HOST:PORT/PATH\"",
            ),
            (
                "liveness_probe = { tcp = \"nohost\" }",
                ":3:26: ",
                "not HOST:PORT",
            ),
            (
                "liveness_probe = { tcp = \"h:1\", failure_threshold = 0 }",
                ":3:53: ",
                "at least 1",
            ),
            ("backoff = { jitter = 2.0 }", ":3:22: ", "from 0.0 to 1.0"),
            ("user = \" \"", ":3:8: ", "expected a user name"),
        ];
        for (line, at, expected) in cases {
            let text = format!("[program.a]\ncommand = [\"true\"]\n{line}\n");
            let err = parse(&text).unwrap_err();
            assert!(err.contains(at), "{line}: {err}");
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn oneshot_defaults_to_never_and_refuses_always() {
        let c = parse("[program.p]\ncommand = [\"true\"]\noneshot = true\n").unwrap();
        assert!(c.programs[0].oneshot);
        assert_eq!(c.programs[0].restart, RestartPolicy::Never);
        let c =
            parse("[program.p]\ncommand = [\"true\"]\noneshot = true\nrestart = \"on-failure\"\n")
                .unwrap();
        assert_eq!(c.programs[0].restart, RestartPolicy::OnFailure);
        let err =
            parse("[program.p]\ncommand = [\"true\"]\noneshot = true\nrestart = \"always\"\n")
                .unwrap_err();
        assert!(err.contains(":4:11: ") && err.contains("oneshot"), "{err}");
        assert!(
            !parse("[program.p]\ncommand = [\"true\"]\n")
                .unwrap()
                .programs[0]
                .oneshot
        );
    }

    #[test]
    fn dependency_cycles_are_refused() {
        let text = "[program.a]\ncommand = [\"true\"]\ndepends_on = [\"b\"]\n\
                    [program.b]\ncommand = [\"true\"]\ndepends_on = [\"a\"]\n";
        let err = parse(text).unwrap_err();
        assert!(err.contains("depends_on cycle"), "{err}");
        assert!(err.contains(":3:15: "), "{err}");
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("512KB"), Some(512 * 1024));
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5MB"), None);
        assert_eq!(parse_size("MB"), None);
    }

    #[test]
    fn stop_signals_accept_both_spellings() {
        assert_eq!(StopSignal::parse("sigterm"), Some(StopSignal::TERM));
        assert_eq!(
            StopSignal::parse("KILL").map(|s| s.number),
            Some(libc::SIGKILL)
        );
        assert_eq!(StopSignal::parse("SIGSTOP"), None);
    }

    #[test]
    fn ip_networks_match_members_only() {
        let net = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let host = IpNet::parse("127.0.0.1").unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(IpNet::parse("::1/128")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert_eq!(IpNet::parse("10.0.0.0/33"), None);
        assert_eq!(IpNet::parse("localhost"), None);
    }
}
