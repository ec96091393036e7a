//! Dialling the upstream: TCP, then TLS for an `https://` upstream.
//!
//! The certificate is always verified (`tls::client`): one that does not
//! chain to a trusted root, names another host or has expired fails the
//! request as `upstream_untrusted` (502), and nothing is ever retried in
//! plain HTTP.

use std::path::Path;

use http::Uri;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::upstream::UpstreamError;
use crate::tls::stream::MaybeTls;

/// How the upstream is reached: its address and, for `https://`, the TLS
/// client and the name its certificate must carry.
pub struct Dialer {
    /// `host:port`, as dialled.
    addr: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    /// `base` is an `http://` or `https://` URL with an authority (checked by
    /// the configuration). `http2` only chooses what ALPN offers.
    pub fn new(base: &Uri, ca_file: Option<&Path>, http2: bool) -> Result<Self, UpstreamError> {
        let authority = base
            .authority()
            .ok_or_else(|| UpstreamError::Address("upstream has no authority".to_owned()))?;
        let https = base.scheme_str() == Some("https");
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = format!("{}:{port}", authority.host());
        let tls = if https {
            let config = crate::tls::client::upstream_config(ca_file, http2)
                .map_err(|e| UpstreamError::Address(format!("{}: {e}", e.setting)))?;
            // An IP literal in brackets (`[::1]`) is named without them.
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned()).map_err(|_| {
                UpstreamError::Address(format!("`{host}` is not a name a certificate can carry"))
            })?;
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Dialer { addr, tls })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A new connection to the upstream, TLS established when it is `https://`.
    pub async fn dial(&self) -> Result<MaybeTls, UpstreamError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            UpstreamError::Unreachable(format!("{what} {}: {e}", self.addr))
        };
        let stream = TcpStream::connect(self.addr.as_str())
            .await
            .map_err(|e| unreachable("connect", &e))?;
        // Requests are written whole; waiting for more bytes only delays them.
        stream
            .set_nodelay(true)
            .map_err(|e| unreachable("set TCP_NODELAY on", &e))?;
        let Some((connector, name)) = &self.tls else {
            return Ok(MaybeTls::Plain(stream));
        };
        match connector.connect(name.clone(), stream).await {
            Ok(tls) => Ok(MaybeTls::Client(Box::new(tls))),
            Err(e) => Err(handshake_error(&self.addr, e)),
        }
    }
}

/// A certificate the upstream presented and rustls refused is
/// `Untrusted`; any other handshake failure is `Unreachable`.
fn handshake_error(addr: &str, e: std::io::Error) -> UpstreamError {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(why)) => {
            UpstreamError::Untrusted(format!("certificate of {addr}: {why:?}"))
        }
        Some(other) => UpstreamError::Unreachable(format!("TLS handshake with {addr}: {other}")),
        None => UpstreamError::Unreachable(format!("TLS handshake with {addr}: {e}")),
    }
}
