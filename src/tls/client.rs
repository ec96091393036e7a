//! TLS towards an `https://` upstream. Verification is always on: the
//! system's roots (`rustls-native-certs`, which honours `SSL_CERT_FILE`) plus
//! the private CA of `upstream_ca_file`. There is no setting to turn it off,
//! and a certificate that does not verify fails the request (502,
//! `upstream_untrusted`); nothing falls back to plain HTTP.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;

use super::{provider, read_certificates, TlsError};

/// The client configuration for the upstream. `http2`: offer only `h2` by
/// ALPN (the upstream pool then speaks HTTP/2); else only `http/1.1`.
pub fn upstream_config(ca_file: Option<&Path>, http2: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::debug!(
            errors = found.errors.len(),
            "some system CA certificates could not be loaded"
        );
    }
    roots.add_parsable_certificates(found.certs);
    if let Some(path) = ca_file {
        for cert in read_certificates("upstream_ca_file", path)? {
            roots.add(cert).map_err(|e| {
                TlsError::new(
                    "upstream_ca_file",
                    path,
                    format!("not a usable CA certificate: {e}"),
                )
            })?;
        }
    }
    if roots.is_empty() {
        tracing::warn!("no CA certificate to verify the https upstream with: every request to it will fail (set `upstream_ca_file`)");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("upstream_ca_file", Path::new(""), e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
