//! TLS and HTTP/2 for the tests: a test CA with server and client
//! certificates (rcgen), clients that speak HTTP/1.1 or HTTP/2 over plain
//! TCP (h2c) or TLS (ALPN), an echo upstream over h2c or TLS, an upstream
//! that streams a slow body, and a raw HTTP/2 frame writer for requests no
//! well-behaved client library will send.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Echo, Reply, Seen};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pair {
    pub fn der(&self) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// Write `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }
}

/// A test certificate authority.
pub struct Ca {
    pub name: String,
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self, cn: &str) -> Pair {
        self.leaf(
            cn,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A server certificate for `name` only (not the loopback address).
    pub fn leaf_for_test(&self, name: &str) -> Pair {
        self.leaf(name, &[name], ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client(&self, cn: &str) -> Pair {
        self.leaf(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.cert_pem).unwrap();
        path.to_owned()
    }

    fn roots(&self) -> rustls::RootCertStore {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap())
            .unwrap();
        roots
    }

    /// A client configuration trusting this CA, offering `alpn`, with an
    /// optional client certificate.
    pub fn client_config(
        &self,
        alpn: &[&str],
        identity: Option<&Pair>,
    ) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        let mut config = match identity {
            Some(p) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(p.cert_pem.as_bytes())
                        .map(|c| c.unwrap())
                        .collect(),
                    PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        Arc::new(config)
    }

    fn server_config(&self, pair: &Pair, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// A TLS connection to `addr` (named `127.0.0.1`). The handshake's outcome
/// is the result: a server that wants a client certificate refuses here or
/// at the first read (TLS 1.3 sends the refusal after the client's Finished).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The end-entity certificate a TLS server at `addr` presents now.
pub async fn presented_certificate(addr: SocketAddr, ca: &Ca) -> Vec<u8> {
    let s = tls_connect(addr, ca.client_config(&["http/1.1"], None))
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// How a [`Client`] talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A client on one connection: HTTP/1.1 or HTTP/2, over TCP or TLS. HTTP/2
/// sends every request as a new stream on the same connection; HTTP/1.1
/// reconnects when the server has closed the connection.
pub struct Client {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub proto: Proto,
    sender: Option<Sender>,
}

async fn handshake<I>(io: I, proto: Proto) -> Sender
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match proto {
        Proto::H1 => {
            let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .unwrap();
            tokio::spawn(c);
            Sender::H1(s)
        }
        Proto::H2 => {
            let (s, c) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                    .await
                    .unwrap();
            tokio::spawn(c);
            Sender::H2(s)
        }
    }
}

impl Client {
    /// `tls`: the client configuration (its ALPN must match `proto`); `None`: plain TCP.
    pub fn new(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>, proto: Proto) -> Client {
        Client {
            addr,
            tls,
            proto,
            sender: None,
        }
    }

    async fn connect(&mut self) {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let sender = match &self.tls {
            Some(config) => {
                let name = ServerName::try_from("127.0.0.1").unwrap();
                let s = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .unwrap();
                let negotiated = s.get_ref().1.alpn_protocol().map(|p| p.to_vec());
                let expected: &[u8] = if self.proto == Proto::H2 {
                    b"h2"
                } else {
                    b"http/1.1"
                };
                assert_eq!(negotiated.as_deref(), Some(expected), "ALPN");
                handshake(s, self.proto).await
            }
            None => handshake(tcp, self.proto).await,
        };
        self.sender = Some(sender);
    }

    /// Send one request; `headers` may repeat a name.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let usable = match &mut self.sender {
            Some(Sender::H1(s)) => !s.is_closed() && s.ready().await.is_ok(),
            Some(Sender::H2(s)) => !s.is_closed() && s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.connect().await;
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut req = Request::builder().method(Method::from_bytes(method.as_bytes()).unwrap());
        req = match self.proto {
            // HTTP/2 carries the scheme and authority as pseudo-headers.
            Proto::H2 => req.uri(format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())),
            Proto::H1 => req
                .uri(path)
                .header("host", format!("127.0.0.1:{}", self.addr.port())),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .unwrap();
        let resp = match self.sender.as_mut().unwrap() {
            Sender::H1(s) => s.send_request(req).await.unwrap(),
            Sender::H2(s) => s.send_request(req).await.unwrap(),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Start a request and return its response head with the body still
    /// streaming (for long responses).
    pub async fn start(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> http::Response<Incoming> {
        if self.sender.is_none() {
            self.connect().await;
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut req = Request::builder().method("GET");
        req = match self.proto {
            Proto::H2 => req.uri(format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())),
            Proto::H1 => req
                .uri(path)
                .header("host", format!("127.0.0.1:{}", self.addr.port())),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        match self.sender.as_mut().unwrap() {
            Sender::H1(s) => s.send_request(req).await.unwrap(),
            Sender::H2(s) => s.send_request(req).await.unwrap(),
        }
    }
}

/// How the test upstream is reached.
pub enum EchoOver {
    /// HTTP/1.1 and HTTP/2 with prior knowledge, on plain TCP.
    H2c,
    /// TLS with this certificate, ALPN `h2` and `http/1.1`.
    Tls(Pair, Arc<Ca>),
}

/// An echo upstream like [`Echo::start`], served by hyper-util's auto
/// builder (HTTP/1.1 and HTTP/2), over plain TCP or TLS. Each response says
/// which HTTP version the request came in (`x-echo-version`).
pub async fn echo_over(over: EchoOver) -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s = seen.clone();
    let tls = match &over {
        EchoOver::H2c => None,
        EchoOver::Tls(pair, ca) => Some(tokio_rustls::TlsAcceptor::from(
            ca.server_config(pair, &["h2", "http/1.1"]),
        )),
    };
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let version = format!("{:?}", req.version());
                        let method = req.method().to_string();
                        let uri = req.uri().to_string();
                        let target = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let headers = req.headers().clone();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        s.lock().unwrap().push(Seen {
                            method,
                            target,
                            uri,
                            headers,
                            body,
                        });
                        let mut resp =
                            http::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        resp.headers_mut()
                            .insert("x-echo-version", version.parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        // A client that refuses the certificate ends here.
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    Echo {
        addr,
        seen,
        task: Arc::new(task),
    }
}

/// An upstream (HTTP/1.1) that answers every request 200 with `chunks`
/// chunks of `chunk\n`, one every `every`: a long response.
pub async fn slow_upstream(chunks: usize, every: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    let (tx, rx) = tokio::sync::mpsc::channel::<
                        Result<Frame<Bytes>, std::convert::Infallible>,
                    >(1);
                    tokio::spawn(async move {
                        for _ in 0..chunks {
                            if tx
                                .send(Ok(Frame::data(Bytes::from_static(b"chunk\n"))))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            tokio::time::sleep(every).await;
                        }
                    });
                    let body = StreamBody::new(tokio_stream_from(rx));
                    Ok::<_, std::convert::Infallible>(http::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A receiver as a stream of frames (no tokio-stream dependency needed).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

// === raw HTTP/2 ===

/// What the server did with one raw HTTP/2 request on stream 1.
#[derive(Debug, PartialEq, Eq)]
pub enum H2Outcome {
    /// A response head; the status when HPACK carried it as a static-table
    /// index (200, 204, 206, 304, 400, 404, 500), else `None`.
    Response(Option<u16>),
    /// The stream was reset, with this error code (1: PROTOCOL_ERROR).
    Reset(u32),
    /// The connection was closed with GOAWAY, with this error code.
    GoAway(u32),
    /// Nothing within the time allowed.
    Silent,
}

/// An HPACK string length: an integer with a 7-bit prefix, no Huffman flag
/// (RFC 7541 5.1).
fn hpack_len(out: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// An HPACK literal field without indexing, with a new name (RFC 7541 6.2.2),
/// strings without Huffman coding.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_len(out, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_len(out, value.len());
    out.extend_from_slice(value.as_bytes());
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Send one request on stream 1 of a fresh h2c connection to `addr`, its
/// header block exactly `fields` in that order (pseudo-headers included),
/// and report what the server answered.
pub async fn raw_h2(addr: SocketAddr, fields: &[(&str, &str)]) -> H2Outcome {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[]); // SETTINGS
    let mut block = Vec::new();
    for (n, v) in fields {
        literal(&mut block, n, v);
    }
    frame(&mut out, 0x1, 0x4 | 0x1, 1, &block); // HEADERS, END_HEADERS | END_STREAM
    s.write_all(&out).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    loop {
        // Parse every complete frame in the buffer.
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            let flags = buf[4];
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                0x4 if flags & 0x1 == 0 => {
                    // SETTINGS from the server: acknowledge them.
                    let mut ack = Vec::new();
                    frame(&mut ack, 0x4, 0x1, 0, &[]);
                    let _ = s.write_all(&ack).await;
                }
                0x1 if stream == 1 => {
                    let status = payload.first().and_then(|b| match b {
                        0x88 => Some(200),
                        0x89 => Some(204),
                        0x8a => Some(206),
                        0x8b => Some(304),
                        0x8c => Some(400),
                        0x8d => Some(404),
                        0x8e => Some(500),
                        _ => None,
                    });
                    return H2Outcome::Response(status);
                }
                0x3 if stream == 1 => {
                    return H2Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                0x7 => {
                    return H2Outcome::GoAway(u32::from_be_bytes(
                        payload[4..8].try_into().unwrap(),
                    ));
                }
                _ => {}
            }
        }
        let mut chunk = [0u8; 4096];
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return H2Outcome::Silent;
        }
        match tokio::time::timeout(deadline - now, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return H2Outcome::Silent,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The headers the echo saw, as `(name, value)` pairs, for messages.
pub fn names(h: &HeaderMap) -> Vec<String> {
    h.keys().map(|k| k.to_string()).collect()
}
