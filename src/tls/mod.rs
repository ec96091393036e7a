//! TLS with rustls (ring as the crypto provider): the data listener's server
//! side ([`server`]: certificate and key reloaded from disk, optional client
//! certificates) and the client side towards an `https://` upstream
//! ([`client`]: verification always on). Also the one stream type the accept
//! loop serves, plain or TLS ([`stream`]).

pub mod client;
pub mod server;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A TLS file that could not be used. Each names the setting it came from, so
/// start-up can say which one to fix.
#[derive(Debug, thiserror::Error)]
#[error("`{path}`: {message}")]
pub struct TlsError {
    pub setting: &'static str,
    pub path: PathBuf,
    pub message: String,
}

impl TlsError {
    fn new(setting: &'static str, path: &Path, message: impl Into<String>) -> Self {
        TlsError {
            setting,
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// ring, the one provider rolegate uses (also for the PostgreSQL client).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; an unreadable file, a bad PEM section or
/// a file with none is an error naming `setting`.
pub fn read_certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::new(setting, path, pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(setting, path, pem_error(&e)))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            setting,
            path,
            "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
        ));
    }
    Ok(certs)
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// A root store from the CA certificates of a PEM file.
pub fn read_roots(setting: &'static str, path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certificates(setting, path)? {
        roots.add(cert).map_err(|e| {
            TlsError::new(setting, path, format!("not a usable CA certificate: {e}"))
        })?;
    }
    Ok(roots)
}
