//! TLS on the gateway's port: the certificate (Vast's `/etc/instance.crt` and `.key`, or a
//! self-signed one made once and kept), picked up again when the files change, and the sniff that
//! tells a TLS client from a plain-HTTP one on the same port.

use std::fs;
use std::io::{BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The first byte of a TLS record carrying a handshake; anything else on a TLS port is taken for
/// plain HTTP and redirected.
pub const HANDSHAKE_RECORD: u8 = 0x16;
/// How often the certificate files are checked for changes.
const WATCH_PERIOD: Duration = Duration::from_secs(5);

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key in it")]
    NoKey(PathBuf),
    #[error("{path}: unusable private key: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The certificate in use, swapped when its files change.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The files' modification times at the last load.
    seen: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    /// Loads the configured pair. When neither file exists, a self-signed pair is generated and
    /// written there (and used again at the next start). When the files exist but cannot be used,
    /// they are left alone and a self-signed pair serves from memory until they are fixed.
    pub fn open(config: &TlsConfig) -> Result<Arc<CertStore>, CertError> {
        let store = |key: CertifiedKey| {
            Arc::new(CertStore {
                current: ArcSwap::from_pointee(key),
                cert_path: config.cert.clone(),
                key_path: config.key.clone(),
                seen: Mutex::new(mtimes(&config.cert, &config.key)),
            })
        };
        if !config.cert.exists() && !config.key.exists() {
            let (cert_pem, key_pem) = self_signed()?;
            match write_pair(&config.cert, &cert_pem, &config.key, &key_pem) {
                Ok(()) => tracing::info!(
                    cert = %config.cert.display(),
                    "no TLS certificate found; made a self-signed one and saved it (browsers will warn)"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "no TLS certificate found; made a self-signed one, but cannot save it (a new one is made at every start)"
                ),
            }
            return Ok(store(parse_pair(
                &cert_pem,
                &key_pem,
                &config.cert,
                &config.key,
            )?));
        }
        match load_pair(&config.cert, &config.key) {
            Ok(key) => Ok(store(key)),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "the TLS certificate cannot be used; serving a temporary self-signed one until the files are fixed"
                );
                let (cert_pem, key_pem) = self_signed()?;
                Ok(store(parse_pair(
                    &cert_pem,
                    &key_pem,
                    &config.cert,
                    &config.key,
                )?))
            }
        }
    }

    /// Reloads the pair when either file changed; a pair that fails to load keeps the old one.
    pub fn refresh(&self) {
        let now = mtimes(&self.cert_path, &self.key_path);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if now.is_none() || *seen == now {
                return;
            }
            *seen = now;
        }
        match load_pair(&self.cert_path, &self.key_path) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "new TLS certificate refused; keeping the previous one")
            }
        }
    }

    /// Checks the files every few seconds until aborted.
    pub fn spawn_watcher(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(WATCH_PERIOD);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let store = self.clone();
                let _ = tokio::task::spawn_blocking(move || store.refresh()).await;
            }
        })
    }

    /// The DER certificate chain now in use (for tests and diagnostics).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }
}

/// The acceptor for `store`, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(store: Arc<CertStore>) -> Result<TlsAcceptor, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn mtimes(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let read = |p: &Path| {
        fs::read(p).map_err(|source| CertError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    parse_pair(&read(cert)?, &read(key)?, cert, key)
}

fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(cert_pem))
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoCertificate(cert_path.to_path_buf()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
        .ok()
        .flatten()
        .ok_or_else(|| CertError::NoKey(key_path.to_path_buf()))?;
    let signing = any_supported_type(&key).map_err(|e| CertError::BadKey {
        path: key_path.to_path_buf(),
        why: e.to_string(),
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| CertError::BadKey {
        path: key_path.to_path_buf(),
        why: format!("it does not belong to the certificate ({e})"),
    })?;
    Ok(certified)
}

/// A self-signed pair for the names this box answers to.
fn self_signed() -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for var in ["PUBLIC_IPADDR", "HOSTNAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() && !names.contains(&v) {
                names.push(v);
            }
        }
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| CertError::Generate(e.to_string()))?;
    Ok((
        made.cert.pem().into_bytes(),
        made.key_pair.serialize_pem().into_bytes(),
    ))
}

fn write_pair(cert: &Path, cert_pem: &[u8], key: &Path, key_pem: &[u8]) -> std::io::Result<()> {
    for p in [cert, key] {
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir)?;
        }
    }
    let write = |path: &Path, data: &[u8], mode: u32| {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(data))
    };
    write(key, key_pem, 0o600)?;
    write(cert, cert_pem, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> TlsConfig {
        TlsConfig {
            cert: dir.join("tls/instance.crt"),
            key: dir.join("tls/instance.key"),
            handshake_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn missing_pair_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let first = CertStore::open(&cfg).unwrap().chain();
        assert!(cfg.cert.exists() && cfg.key.exists());
        let mode = fs::metadata(&cfg.key).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let second = CertStore::open(&cfg).unwrap().chain();
        assert_eq!(first, second, "the saved pair is used again");
    }

    #[test]
    fn unusable_files_are_left_alone_and_a_temporary_pair_serves() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        fs::create_dir_all(cfg.cert.parent().unwrap()).unwrap();
        fs::write(&cfg.cert, "not a certificate").unwrap();
        fs::write(&cfg.key, "not a key").unwrap();
        let store = CertStore::open(&cfg).unwrap();
        assert_eq!(store.chain().len(), 1);
        assert_eq!(fs::read_to_string(&cfg.cert).unwrap(), "not a certificate");
    }

    #[test]
    fn replaced_files_are_picked_up_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let store = CertStore::open(&cfg).unwrap();
        let before = store.chain();

        let (cert, key) = self_signed().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&cfg.cert, &cert).unwrap();
        fs::write(&cfg.key, &key).unwrap();
        // Make sure the modification time moves even on coarse-grained filesystems.
        let later = SystemTime::now() + Duration::from_secs(2);
        fs::File::options()
            .write(true)
            .open(&cfg.cert)
            .unwrap()
            .set_modified(later)
            .unwrap();
        store.refresh();
        let after = store.chain();
        assert_ne!(before, after);

        fs::write(&cfg.key, "garbage").unwrap();
        let later = SystemTime::now() + Duration::from_secs(4);
        fs::File::options()
            .write(true)
            .open(&cfg.key)
            .unwrap()
            .set_modified(later)
            .unwrap();
        store.refresh();
        assert_eq!(store.chain(), after, "a broken key keeps the previous pair");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (cert, _) = self_signed().unwrap();
        let (_, other_key) = self_signed().unwrap();
        let err = parse_pair(&cert, &other_key, Path::new("c"), Path::new("k")).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }
}
