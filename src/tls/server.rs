//! The data listener's TLS: certificate and key from PEM files, swapped in
//! when the files change, with ALPN `h2` and `http/1.1`.
//!
//! The certificate is chosen per handshake by a resolver that reads an
//! `ArcSwap`: a reload swaps the pair for new handshakes, and connections
//! already open keep the session they negotiated (nothing is dropped).
//! Changes are seen by a file watcher on the files' directories (Kubernetes
//! rotates a Secret by swapping the `..data` symlink of the mounted
//! directory) and by a periodic check of the files' bytes as the fallback.
//! A new pair that does not load (unreadable, not PEM, key not matching the
//! certificate, a half-written file) is logged and the old pair stays live;
//! the next change is tried again.
//!
//! The client CA (`tls_client_ca_file`) is read once at start-up: trusting a
//! different CA is a restart, not something a file swap should do silently.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::{provider, read_roots, TlsError};

/// How often the files are read and compared when no file event came.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// A Secret update writes several files and a symlink; events closer
/// together than this are one change.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The `tls_*` settings: where the server's certificate chain, its key and
/// (optionally) the CA that client certificates must chain to are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The live certificate and key, handed to every new handshake.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The data listener's TLS state: the acceptor for handshakes and the files
/// it reloads from.
pub struct ServerTls {
    files: ServerFiles,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
    /// Digest of the certificate and key bytes last looked at (loaded or not).
    seen: Mutex<[u8; 32]>,
}

/// Both files' bytes as read, and one digest over both (so a change to
/// either is seen).
struct PairBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
    digest: [u8; 32],
}

fn read_pair(files: &ServerFiles) -> Result<PairBytes, TlsError> {
    let cert = std::fs::read(&files.cert)
        .map_err(|e| TlsError::new("tls_cert_file", &files.cert, format!("cannot read: {e}")))?;
    let key = std::fs::read(&files.key)
        .map_err(|e| TlsError::new("tls_key_file", &files.key, format!("cannot read: {e}")))?;
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(&cert);
    h.update(&key);
    Ok(PairBytes {
        cert,
        key,
        digest: h.finalize().into(),
    })
}

/// Parse a certificate chain and its key, and check that they belong together.
fn certified_key(
    files: &ServerFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::new(
                "tls_cert_file",
                &files.cert,
                format!("not valid PEM: {e:?}"),
            )
        })?;
    if chain.is_empty() {
        return Err(TlsError::new(
            "tls_cert_file",
            &files.cert,
            "holds no PEM certificate",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsError::new(
            "tls_key_file",
            &files.key,
            format!("holds no usable PEM private key: {e:?}"),
        )
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError::new(
            "tls_key_file",
            &files.key,
            format!(
                "does not fit the certificate in `{}`: {e}",
                files.cert.display()
            ),
        )
    })
}

impl ServerTls {
    /// Load the pair (and the client CA, if set) and build the acceptor. Any
    /// failure is an error naming the setting at fault.
    pub fn load(files: &ServerFiles) -> Result<Self, TlsError> {
        let PairBytes { cert, key, digest } = read_pair(files)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(certified_key(
            files, &cert, &key,
        )?)));
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("tls_cert_file", &files.cert, e.to_string()))?;
        let builder = match &files.client_ca {
            Some(ca) => {
                let roots = read_roots("tls_client_ca_file", ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::new("tls_client_ca_file", ca, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            files: files.clone(),
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            seen: Mutex::new(digest),
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The end-entity certificate new handshakes are given (DER).
    pub fn current_certificate(&self) -> Vec<u8> {
        self.current
            .0
            .load()
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// Reload when the files' bytes differ from those last looked at. `Ok(true)`:
    /// a new pair is live; `Ok(false)`: nothing changed. A pair that does not
    /// load is an error and the old one stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let PairBytes { cert, key, digest } = read_pair(&self.files)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == digest {
                return Ok(false);
            }
            // Remembered even if it fails to load: a broken pair is reported
            // once, and tried again when the files change again.
            *seen = digest;
        }
        let pair = certified_key(&self.files, &cert, &key)?;
        self.current.0.store(Arc::new(pair));
        Ok(true)
    }

    fn check(&self, why: &str) {
        match self.reload_if_changed() {
            Ok(true) => tracing::info!(trigger = why, "TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                trigger = why,
                setting = e.setting,
                error = %e,
                "TLS certificate not reloaded; the previous one stays in use"
            ),
        }
    }

    /// Watch the files until `stop` flips: file events, then the periodic check.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>, every: Duration) {
        let (tx, mut events) = mpsc::channel::<()>(1);
        // Kept alive for the whole loop: dropping the watcher stops the events.
        let _watcher = self.file_watcher(tx);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = stop.changed() => return,
                Some(()) = events.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while events.try_recv().is_ok() {}
                    "file event"
                }
                _ = tick.tick() => "periodic check",
            };
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.check(why)).await;
        }
    }

    /// A watcher on the directories holding the files. `None` when it cannot
    /// start: the periodic check still sees changes.
    fn file_watcher(&self, tx: mpsc::Sender<()>) -> Option<RecommendedWatcher> {
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(e) = event {
                if !e.kind.is_access() {
                    // A full channel already holds a wake-up.
                    let _ = tx.try_send(());
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "TLS file watcher unavailable; relying on the periodic check");
                return None;
            }
        };
        let mut dirs: Vec<&Path> = [&self.files.cert, &self.files.key]
            .into_iter()
            .map(|p| {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
            })
            .collect();
        dirs.dedup();
        for dir in dirs {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch TLS directory; relying on the periodic check");
            }
        }
        Some(watcher)
    }
}
