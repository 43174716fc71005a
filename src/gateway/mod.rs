//! The gateway: one port in front of every app of the container.
//!
//! A request travels one straight line: accept ([`server`]) → canonical path ([`path`]) → route
//! ([`router`]) → authenticate → forward or tunnel ([`forward`], [`tunnel`]) → access log
//! ([`access_log`]). [`handler`] is that line; the other modules are its steps.

pub mod access_log;
pub mod compress;
pub mod deadline;
pub mod express;
pub mod forward;
pub mod gatekeeper;
pub mod gather;
pub mod handler;
pub mod headers;
pub mod metrics;
pub mod pages;
pub mod path;
pub mod pool;
pub mod portal;
pub mod programs;
pub mod rewrite;
pub mod router;
pub mod server;
pub mod tls;
pub mod tunnel;
pub mod vast_portal;
pub mod verbatim;
pub mod wire;
pub mod workers;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::supervisor::Board;

pub use server::{serve, serve_with, ServeError, ServeOptions};

/// Errors of streamed bodies; boxed because they come from several layers (upstream, encoder).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What one configuration file turns into; swapped whole on reload, so a request sees either the
/// old routes or the new ones, never a mix.
pub struct Snapshot {
    pub config: Config,
    pub router: router::Router,
    pub gatekeeper: gatekeeper::Gatekeeper,
}

impl Snapshot {
    /// Prepares `config` for serving, reusing what `previous` can lend (the authenticator and its
    /// cache). Blocking: it reads the password file and may hash. `Err` says why the
    /// configuration cannot be served.
    pub fn build(config: Config, previous: Option<&Snapshot>) -> Result<Snapshot, String> {
        let gatekeeper = gatekeeper::Gatekeeper::build(&config, previous.map(|p| &p.gatekeeper))?;
        let router = router::Router::new(&config.routes);
        Ok(Snapshot {
            config,
            router,
            gatekeeper,
        })
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
    /// The supervisor's program states, under `vastgate up`.
    pub board: Option<Arc<Board>>,
    pub metrics: metrics::Metrics,
}
