//! The gateway: one port in front of every app of the container.
//!
//! A request travels one straight line: accept ([`server`]) → canonical path ([`path`]) → route
//! ([`router`]) → authenticate → forward or tunnel ([`forward`], [`tunnel`]) → access log
//! ([`access_log`]). [`handler`] is that line; the other modules are its steps.

pub mod access_log;
pub mod compress;
pub mod forward;
pub mod handler;
pub mod headers;
pub mod pages;
pub mod path;
pub mod router;
pub mod server;
pub mod tunnel;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AuthMode, Config};

pub use server::{serve, ServeError};

/// Errors of streamed bodies; boxed because they come from several layers (upstream, encoder).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What one configuration file turns into; swapped whole on reload, so a request sees either the
/// old routes or the new ones, never a mix.
pub struct Snapshot {
    pub config: Config,
    pub router: router::Router,
}

impl Snapshot {
    pub fn new(config: Config) -> Snapshot {
        let router = router::Router::new(&config.routes);
        Snapshot { config, router }
    }

    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.config
            .gateway
            .trusted_proxies
            .iter()
            .any(|net| net.contains(peer))
    }
}

/// The state every request handler shares.
pub struct Gateway {
    pub snapshot: ArcSwap<Snapshot>,
    pub upstreams: forward::UpstreamClient,
    pub log: Arc<access_log::AccessLogger>,
    pub ids: access_log::RequestIds,
    /// Cancelled at shutdown: event streams and tunnels end at once (they never finish by
    /// themselves, and their clients reconnect).
    pub streams_stop: CancellationToken,
    /// WebSocket tunnels, which hyper's graceful shutdown does not see once upgraded.
    pub tunnels: TaskTracker,
}

impl Gateway {
    /// Checks that `config` can be served as it stands: an open gateway must be asked for.
    pub fn refuse_unsafe(config: &Config) -> Result<(), String> {
        match config.gateway.auth {
            AuthMode::None | AuthMode::Upstream => Ok(()),
            AuthMode::Basic => Err(format!(
                "{}: auth = \"basic\" needs credentials, and this build has no htpasswd support yet; \
                 write auth = \"none\" under [gateway] to serve without a login (only behind another \
                 authenticating proxy or on a private network)",
                config.path.display()
            )),
        }
    }
}
