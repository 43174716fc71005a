//! In place of Vast's own Caddy (`[vast] portal = true`): one listener per `PORTAL_CONFIG` entry,
//! on its external port, proxying to `hostname:internal_port` with the client's Host kept, behind
//! the gateway's login (Vast's token, cookie, Bearer, then basic) — with a start-up in
//! milliseconds instead of Caddy's tens of seconds of bcrypt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use super::access_log::RequestIds;
use super::{Gateway, Snapshot};
use crate::config::{AuthMode, Config, Route};
use crate::vast::{self, PortalEntry};

/// Vast's public paths, and the resolver its portal page polls.
const PUBLIC: &[&str] = &[
    "/.well-known/",
    "/manifest.json",
    "/portal-resolver",
    "/healthz",
];
pub const RESOLVER: &str = "/portal-resolver";

/// A bound portal listener and the gateway state behind it.
pub struct PortalListener {
    pub listener: TcpListener,
    pub gateway: Arc<Gateway>,
    pub name: String,
}

/// Opens the listeners for the entries of `PORTAL_CONFIG` (or `/etc/portal.yaml`) that Vast's
/// Caddy would serve. Problems with single entries are logged and the others still open.
pub async fn open(main: &Arc<Gateway>) -> Vec<PortalListener> {
    let snapshot = main.snapshot.load_full();
    let config = &snapshot.config;
    let env = |name: &str| std::env::var(name).ok();
    let loaded = vast::load_portal(
        std::path::Path::new(vast::PORTAL_YAML),
        env("PORTAL_CONFIG").as_deref(),
    );
    let (entries, problems) = match loaded {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the portal entries; serving none");
            return Vec::new();
        }
    };
    for p in problems {
        tracing::warn!("{p}; skipped");
    }
    let serve = vast::entries_to_serve(
        &entries,
        vast::current_launch_mode(),
        config.gateway.listen.port(),
        |port| env(&format!("VAST_TCP_PORT_{port}")).is_some_and(|v| !v.is_empty()),
    );
    let mut opened = Vec::new();
    for entry in serve {
        let auth = vast::portal_auth_required(
            entry.external_port,
            env("ENABLE_AUTH").as_deref(),
            env("AUTH_EXCLUDE").as_deref(),
        );
        match open_one(main, &snapshot, entry, auth).await {
            Ok(l) => opened.push(l),
            Err(why) => tracing::error!(entry = %entry, "{why}; this entry is not served"),
        }
    }
    opened
}

async fn open_one(
    main: &Arc<Gateway>,
    snapshot: &Arc<Snapshot>,
    entry: &PortalEntry,
    auth: bool,
) -> Result<PortalListener, String> {
    let config = entry_config(&snapshot.config, entry, auth)?;
    let listen = config.gateway.listen;
    let previous = snapshot.clone();
    let portal_snapshot =
        tokio::task::spawn_blocking(move || Snapshot::build(config, Some(&previous)))
            .await
            .map_err(|e| e.to_string())??;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, name = %entry.name, upstream = %format!("{}:{}", entry.hostname, entry.internal_port), auth, "portal entry served");
    let gateway = Arc::new(Gateway {
        snapshot: ArcSwap::from_pointee(portal_snapshot),
        upstreams: main.upstreams.clone(),
        log: main.log.clone(),
        ids: RequestIds::new(),
        streams_stop: main.streams_stop.clone(),
        tunnels: main.tunnels.clone(),
        board: main.board.clone(),
        metrics: Default::default(),
    });
    Ok(PortalListener {
        listener,
        gateway,
        name: entry.name.clone(),
    })
}

/// The configuration of one entry's listener: the main one's login and settings, one route.
fn entry_config(main: &Config, entry: &PortalEntry, auth: bool) -> Result<Config, String> {
    let upstream = format!("{}:{}", entry.hostname, entry.internal_port)
        .parse()
        .map_err(|_| format!("\"{}\" is not a host name", entry.hostname))?;
    let mut config = main.clone();
    config.gateway.listen = SocketAddr::new(main.vast.portal_bind, entry.external_port);
    config.gateway.public = PUBLIC.iter().map(|p| p.to_string()).collect();
    // `env_credentials` stays as the main listener has it: built on the main snapshot, the entry's
    // gatekeeper does not write the environment's user again, and still knows whether it is the
    // default password.
    if !auth {
        config.gateway.auth = AuthMode::None;
    }
    config.routes = vec![Route {
        prefix: "/".into(),
        name: entry.name.clone(),
        upstream,
        strip_prefix: false,
        program: None,
        drop_accept_encoding: false,
        compress: true,
        allow_origins: Vec::new(),
        response_timeout: Duration::from_secs(3600),
        sensitive: false,
        keep_authorization: false,
    }];
    Ok(config)
}
