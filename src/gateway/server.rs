//! The listener: accepting connections, serving HTTP/1.1 and HTTP/2 on them, reloading on SIGHUP
//! and stopping cleanly on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{header, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::access_log::{AccessLogger, RequestIds};
use super::forward::UpstreamClient;
use super::handler::ConnInfo;
use super::pool::RequestBody;
use super::workers::Workers;
use super::{express, pages, tls, vast_portal};
use super::{Gateway, Snapshot};
use crate::config::{Config, ConfigError};
use crate::supervisor::Board;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Unsafe(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the access log {path}: {source}")]
    AccessLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
}

/// How the gateway runs.
pub struct ServeOptions {
    /// Cancelled to stop the gateway.
    pub stop: CancellationToken,
    /// The supervisor's program states (under `vastgate up`), for "starting" pages and the portal.
    pub board: Option<Arc<Board>>,
    /// Stop on SIGTERM/SIGINT (`vastgate serve`). Under `vastgate up` the supervisor decides
    /// when the gateway stops: last, after the programs.
    pub stop_on_signals: bool,
}

/// Runs the gateway for the config at `path` until SIGTERM/SIGINT or `stop` is cancelled.
pub async fn serve(path: &Path, stop: CancellationToken) -> Result<(), ServeError> {
    let options = ServeOptions {
        stop,
        board: None,
        stop_on_signals: true,
    };
    serve_with(path, options).await
}

/// Runs the gateway for the config at `path` as `options` say.
pub async fn serve_with(path: &Path, options: ServeOptions) -> Result<(), ServeError> {
    let ServeOptions {
        stop,
        board,
        stop_on_signals,
    } = options;
    let config = Config::load(path)?;
    let listen = config.gateway.listen;
    let access_log = config.gateway.access_log.clone();
    let tls_config = config.gateway.tls.clone();
    let workers = Arc::new(Workers::start(config.gateway.workers).map_err(ServeError::Workers)?);
    let upstreams = UpstreamClient::new(&config.gateway);
    let snapshot = tokio::task::spawn_blocking(move || Snapshot::build(config, None))
        .await
        .map_err(|e| ServeError::Unsafe(e.to_string()))?
        .map_err(ServeError::Unsafe)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let log = AccessLogger::start(&access_log).map_err(|source| ServeError::AccessLog {
        path: match &access_log {
            crate::config::AccessLog::File(p) => p.clone(),
            _ => PathBuf::from("stdout"),
        },
        source,
    })?;
    let gateway = Arc::new(Gateway {
        upstreams,
        snapshot: ArcSwap::from_pointee(snapshot),
        log,
        ids: RequestIds::new(),
        streams_stop: CancellationToken::new(),
        tunnels: TaskTracker::new(),
        board,
        metrics: Default::default(),
    });
    let (tls, _cert_watcher) = match tls_config {
        None => (None, None),
        Some(config) => {
            let store = tokio::task::spawn_blocking(move || {
                tls::CertStore::open(&config).map(|store| (store, config.handshake_timeout))
            })
            .await
            .map_err(|e| ServeError::Tls(e.to_string()))?
            .map_err(|e| ServeError::Tls(e.to_string()))?;
            let (store, handshake_timeout) = store;
            let acceptor =
                tls::acceptor(store.clone()).map_err(|e| ServeError::Tls(e.to_string()))?;
            let watcher = AbortOnDrop(store.spawn_watcher());
            (
                Some(Tls {
                    acceptor,
                    handshake_timeout,
                }),
                Some(watcher),
            )
        }
    };
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(ServeError::Signals)?;

    let local = listener.local_addr().ok();
    tracing::info!(
        listen = ?local,
        tls = tls.is_some(),
        workers = workers.len(),
        config = %path.display(),
        "gateway listening"
    );

    let graceful = GracefulShutdown::new();
    let stop_accepting = CancellationToken::new();
    let mut portals = Vec::new();
    if gateway.snapshot.load().config.vast.portal {
        for portal in vast_portal::open(&gateway).await {
            portals.push(tokio::spawn(accept_loop(
                portal,
                workers.clone(),
                tls.clone(),
                stop_accepting.clone(),
            )));
        }
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_connection(&gateway, &workers, graceful.watcher(), tls.as_ref(), stream, peer),
                Err(e) => accept_failed(e).await,
            },
            _ = hangup.recv() => reload(&gateway, path).await,
            _ = terminate.recv(), if stop_on_signals => break,
            _ = interrupt.recv(), if stop_on_signals => break,
            () = stop.cancelled() => break,
        }
    }

    drop(listener);
    stop_accepting.cancel();
    let grace = gateway.snapshot.load().config.gateway.shutdown_grace;
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
    gateway.streams_stop.cancel();
    gateway.tunnels.close();
    let drained = tokio::time::timeout(grace, async {
        graceful.shutdown().await;
        for portal in portals {
            let _ = portal.await;
        }
        gateway.tunnels.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight requests still running after the grace period; closing them");
    }
    gateway.log.flush(Duration::from_secs(1)).await;
    Ok(())
}

/// TLS on the listener: the acceptor and how long a handshake may take.
#[derive(Clone)]
struct Tls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

/// Accepts on a portal entry's listener until the gateway stops, then lets its connections
/// finish like the main listener's.
async fn accept_loop(
    portal: vast_portal::PortalListener,
    workers: Arc<Workers>,
    tls: Option<Tls>,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = portal.listener.accept() => match accepted {
                Ok((stream, peer)) => serve_connection(&portal.gateway, &workers, graceful.watcher(), tls.as_ref(), stream, peer),
                Err(e) => accept_failed(e).await,
            },
            () = stop.cancelled() => break,
        }
    }
    drop(portal.listener);
    graceful.shutdown().await;
    tracing::debug!(name = %portal.name, "portal listener closed");
}

/// Hands an accepted connection to a worker, which serves it to the end.
fn serve_connection(
    gateway: &Arc<Gateway>,
    workers: &Workers,
    watcher: Watcher,
    tls: Option<&Tls>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    // Off this runtime's reactor, onto the worker's (below).
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cannot hand the connection to a worker");
            return;
        }
    };
    let header_timeout = gateway.snapshot.load().config.gateway.header_timeout;
    let stop = gateway.streams_stop.clone();
    let gateway = gateway.clone();
    let tls = tls.cloned();
    workers.spawn(async move {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot register the connection");
                return;
            }
        };
        // hyper's header timeout starts only once the protocol is known, which takes a first
        // byte: without this, a client that connects and sends nothing holds a socket forever.
        // (`peek`, not `readable`: tokio reports a fresh socket readable before any byte came.)
        let first_wait = tls.as_ref().map_or(header_timeout, |t| t.handshake_timeout);
        let mut first = [0u8; 1];
        tokio::select! {
            peeked = tokio::time::timeout(first_wait, stream.peek(&mut first)) => {
                match peeked {
                    Ok(Ok(1..)) => {}
                    Ok(_) => return,
                    Err(_) => {
                        tracing::debug!(%peer, "closing a connection that sent nothing");
                        return;
                    }
                }
            }
            () = stop.cancelled() => return,
        }
        let Some(tls) = tls else {
            let conn = ConnInfo {
                peer,
                proto: "http",
                own_codec: false,
            };
            return express::serve(gateway, watcher, stream, conn, header_timeout).await;
        };
        if first[0] != tls::HANDSHAKE_RECORD {
            return redirect_to_https(stream, header_timeout).await;
        }
        match tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let conn = ConnInfo {
                    peer,
                    proto: "https",
                    own_codec: false,
                };
                // HTTP/2 was agreed on in the handshake: hyper serves it.
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    serve_hyper(gateway, watcher, stream, conn, header_timeout).await;
                } else {
                    express::serve(gateway, watcher, stream, conn, header_timeout).await;
                }
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    });
}

/// Serves HTTP/1.1 (with upgrades) or HTTP/2 on one connection with hyper until it closes or
/// the gateway shuts down.
pub(super) async fn serve_hyper<I>(
    gateway: Arc<Gateway>,
    watcher: Watcher,
    io: I,
    conn_info: ConnInfo,
    header_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    gateway.metrics.count_hyper_connection();
    let service = service_fn(move |req| {
        let gw = gateway.clone();
        let req = req.map(RequestBody::from_client);
        async move { Ok::<_, std::convert::Infallible>(gw.handle(conn_info, req, None).await.resp) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(peer = %conn_info.peer, error = %e, "connection ended with an error");
    }
}

/// Plain HTTP on the TLS port: answer every request with a redirect to the same URL over https
/// rather than a garbled TLS error.
async fn redirect_to_https(stream: TcpStream, header_timeout: Duration) {
    let service = service_fn(|req: Request<Incoming>| async move {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let resp = match host {
            Some(host) => {
                let mut resp = pages::redirect(&format!("https://{host}{path}"));
                *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
                resp
            }
            None => pages::empty(StatusCode::BAD_REQUEST),
        };
        Ok::<_, std::convert::Infallible>(resp)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = conn.await;
}

/// Out of file descriptors or memory: wait instead of spinning on `accept`. Errors about one
/// connection (reset before it was accepted) just move on to the next.
async fn accept_failed(e: std::io::Error) {
    let exhausted = matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if exhausted {
        tracing::warn!(error = %e, "accept failed; pausing new connections for 100 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else {
        tracing::debug!(error = %e, "accept failed");
    }
}

/// Re-reads the config (and the password file); routes swap atomically, a bad file leaves the
/// old configuration serving.
async fn reload(gateway: &Gateway, path: &Path) {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the previous configuration keeps serving");
            return;
        }
    };
    let old = gateway.snapshot.load_full();
    if old.config.gateway.listen != config.gateway.listen {
        tracing::warn!(
            "the listen address changed; it takes effect at the next start (listeners stay)"
        );
    }
    if old.config.gateway.workers != config.gateway.workers {
        tracing::warn!("workers changed; it takes effect at the next start");
    }
    let routes = config.routes.len();
    let built = tokio::task::spawn_blocking(move || Snapshot::build(config, Some(&old))).await;
    match built {
        Ok(Ok(snapshot)) => {
            gateway.snapshot.store(Arc::new(snapshot));
            tracing::info!(routes, "configuration reloaded");
        }
        Ok(Err(why)) => {
            tracing::error!(%why, "reload refused; the previous configuration keeps serving")
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed; the previous configuration keeps serving")
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
