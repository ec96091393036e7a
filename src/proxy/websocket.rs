//! WebSocket (RFC 6455) through the proxy door: the client's handshake is
//! checked, the request is decided like any other (the pipeline, `app::data`,
//! hands over only an [`Allowed`]), the upstream's WebSocket is opened with
//! the same identity headers a forwarded request carries, and only when the
//! upstream accepted is the client answered 101. Then messages are relayed
//! both ways, one in flight per direction (a direction waits until its
//! message is written before it reads the next: back-pressure reaches the
//! sender), until either side closes, the idle timeout passes, or the
//! credential that opened the connection is revoked or expires ([`super::live`]).
//!
//! The relay works on messages, not bytes: tungstenite (a well-kept crate)
//! parses and checks frames on both legs, unmasks and masks them, enforces the
//! message size limit and answers pings. Each leg is its own WebSocket
//! connection; pings and pongs stay on their leg (they count as activity),
//! extensions are not negotiated, subprotocols pass through.
//!
//! [`Relay::relay`] takes any client IO: an HTTP/2 extended CONNECT
//! (RFC 8441, checked in [`super::websocket_h2`]) is relayed by the same code
//! once its stream is upgraded; only the answer differs (200, not 101).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::live::{Cut, Holder, Live, RegisterError, Registration};
use super::upstream::UpstreamError;
use super::upstream_tls::Dialer;
use super::ProxyBody;
use crate::authn::credential::{self, Credential, CredentialKind};
use crate::authn::token;
use crate::config::WebSocketSettings;
use crate::decision::forwarding;
use crate::decision::Allowed;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::request::client_addr::Client;
use crate::request::REQUEST_ID_NAME;
use crate::tls::stream::MaybeTls;

/// How long a closing handshake may take on each leg before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The fields of the client's handshake that belong to its leg only: the
/// upstream leg gets its own key and version, and no extension is offered
/// (the relay negotiates none).
const HANDSHAKE_ONLY: &[&str] = &[
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "content-length",
];

/// Whether a request asks for a WebSocket: an `Upgrade` field naming
/// `websocket`. Other upgrades (`h2c`, TLS) are not WebSocket and go the
/// ordinary way, where `Upgrade` is stripped as hop-by-hop.
pub fn asks_for_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .any(|v| has_token(v, "websocket"))
}

fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A client handshake that passed [`check_handshake`].
pub struct Handshake {
    /// `Sec-WebSocket-Key`, for the `Sec-WebSocket-Accept` answer; `None`
    /// for an HTTP/2 extended CONNECT (RFC 8441), which has no key and is
    /// answered 200 on its stream instead of 101.
    key: Option<HeaderValue>,
}

impl Handshake {
    /// An HTTP/2 extended CONNECT handshake checked by
    /// [`super::websocket_h2::check_handshake`].
    pub(super) fn over_h2() -> Self {
        Handshake { key: None }
    }
}

/// The one value of a field that must appear exactly once.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

/// Check a WebSocket opening handshake (RFC 6455 §4.2.1): a GET over
/// HTTP/1.1 without a body, one `Upgrade: websocket`, `Connection` naming
/// `upgrade`, one `Sec-WebSocket-Key` of 16 bytes in base64, and one
/// `Sec-WebSocket-Version: 13`. Anything else is a 400 (fail closed: a
/// handshake the upstream might read differently is not passed on).
pub fn check_handshake<B>(req: &Request<B>) -> Result<Handshake, ApiError> {
    if req.method() != Method::GET {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "A WebSocket upgrade must be a GET",
        ));
    }
    if req.version() != Version::HTTP_11 {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "A WebSocket upgrade must be HTTP/1.1",
        ));
    }
    let h = req.headers();
    if !single(h, &header::UPGRADE).is_some_and(|v| has_token(v, "websocket")) {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "A WebSocket upgrade needs exactly one Upgrade field",
        ));
    }
    if !h
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, "upgrade"))
    {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "A WebSocket upgrade needs Connection: upgrade",
        ));
    }
    let has_body = h.contains_key(header::TRANSFER_ENCODING)
        || h.get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "A WebSocket upgrade has no body",
        ));
    }
    let key = single(h, &header::SEC_WEBSOCKET_KEY)
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k.as_bytes())
                .is_ok_and(|b| b.len() == 16)
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                Reason::WebSocketKey,
                "Sec-WebSocket-Key must be one base64 value of 16 bytes",
            )
        })?;
    if single(h, &header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(ApiError::bad_request(
            Reason::WebSocketVersion,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    Ok(Handshake {
        key: Some(key.clone()),
    })
}

/// The upstream's WebSocket endpoint: the HTTP upstream's authority.
struct Target {
    /// TCP, then TLS for an `https://` upstream (verified as for HTTP; ALPN
    /// `http/1.1`, as the upgrade is an HTTP/1.1 exchange even when requests
    /// go to the upstream over HTTP/2).
    dialer: Dialer,
    /// The authority, for the `Host` field and the request URI.
    authority: String,
    timeout: Duration,
}

/// What the upstream said to the opening handshake, when not 101.
type Refusal = Response<Option<Vec<u8>>>;

/// The WebSocket relay of the proxy door.
pub struct Relay {
    target: Option<Target>,
    settings: WebSocketSettings,
    forward_credentials: bool,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
}

/// What a relayed connection is bound to: its registration and the
/// credential's end.
pub struct Session {
    registration: Registration,
    cut: oneshot::Receiver<Cut>,
    /// The credential's `exp` (Unix seconds): a playback token's or a user token's.
    expires_at: Option<u64>,
}

impl Relay {
    /// `upstream` is the HTTP upstream's base URL (`http://host[:port]`).
    pub fn new(
        upstream: Option<&Uri>,
        upstream_ca_file: Option<&Path>,
        timeout: Duration,
        settings: WebSocketSettings,
        forward_credentials: bool,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UpstreamError> {
        // The configuration only accepts an upstream with an authority.
        let target = upstream
            .and_then(|u| Some((u, u.authority()?)))
            .map(|(u, a)| {
                Ok::<_, UpstreamError>(Target {
                    dialer: Dialer::new(u, upstream_ca_file, false)?,
                    authority: a.as_str().to_owned(),
                    timeout,
                })
            })
            .transpose()?;
        Ok(Relay {
            target,
            settings,
            forward_credentials,
            live,
            metrics,
        })
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    fn config(&self) -> WebSocketConfig {
        let max = self.settings.max_message_bytes;
        WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }

    /// Register a connection `allowed` opens, decided at live epoch `seen`
    /// on a request with `headers`.
    pub fn register(
        &self,
        allowed: &Allowed,
        seen: u64,
        headers: &HeaderMap,
    ) -> Result<Session, ApiError> {
        let (registration, cut) =
            self.live
                .register(Holder::of(allowed), seen)
                .map_err(|e| match e {
                    RegisterError::Revoked => ApiError::UnknownPrincipal(Reason::CredentialRevoked),
                    RegisterError::Full => ApiError::Unavailable(Reason::TooManyWebSockets),
                    RegisterError::ShuttingDown => ApiError::NotReady,
                })?;
        Ok(Session {
            registration,
            cut,
            expires_at: credential_exp(allowed, headers),
        })
    }

    /// Open the upstream's WebSocket for an allowed request: the client's
    /// fields less hop-by-hop ones, client-sent identity claims, credentials
    /// (unless `forward_credentials`) and its own leg's handshake fields;
    /// rolegate's identity headers set from `allowed`.
    pub async fn open_upstream(
        &self,
        client_headers: &HeaderMap,
        path_and_query: &str,
        allowed: &Allowed,
        request_id: &HeaderValue,
        client: &Client,
    ) -> Result<Result<(WebSocketStream<MaybeTls>, Option<HeaderValue>), Refusal>, ApiError> {
        let target = self
            .target
            .as_ref()
            .ok_or_else(|| ApiError::UpstreamUnreachable("no upstream configured".to_owned()))?;
        let uri: Uri = format!("ws://{}{}", target.authority, path_and_query)
            .parse()
            .map_err(|e| ApiError::Internal(format!("upstream WebSocket URI: {e}")))?;
        let mut req = uri
            .into_client_request()
            .map_err(|e| ApiError::Internal(format!("upstream WebSocket request: {e}")))?;
        let mut headers = client_headers.clone();
        forwarding::strip_request(&mut headers, self.forward_credentials);
        for n in HANDSHAKE_ONLY {
            headers.remove(*n);
        }
        forwarding::set_identity(&mut headers, allowed, request_id, client);
        for (name, value) in &headers {
            req.headers_mut().append(name.clone(), value.clone());
        }

        let stream = tokio::time::timeout(target.timeout, target.dialer.dial())
            .await
            .map_err(|_| ApiError::UpstreamTimeout)??;
        let handshake =
            tokio_tungstenite::client_async_with_config(req, stream, Some(self.config()));
        match tokio::time::timeout(target.timeout, handshake).await {
            Err(_) => Err(ApiError::UpstreamTimeout),
            Ok(Ok((ws, resp))) => {
                let protocol = resp.headers().get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
                Ok(Ok((ws, protocol)))
            }
            Ok(Err(WsError::Http(refusal))) => Ok(Err(*refusal)),
            Ok(Err(e)) => Err(ApiError::UpstreamUnreachable(format!(
                "WebSocket handshake with the upstream: {e}"
            ))),
        }
    }

    /// The whole upgrade of an allowed request: register, open the upstream,
    /// answer 101 (HTTP/1.1) or 200 (HTTP/2 extended CONNECT) and relay once
    /// hyper hands the connection (or the HTTP/2 stream) over.
    /// An upstream that refuses the handshake is answered as it answered
    /// (its status and body), like any forwarded response.
    #[allow(clippy::too_many_arguments)]
    pub async fn upgrade<B: Send + 'static>(
        self: &Arc<Self>,
        mut req: Request<B>,
        handshake: Handshake,
        seen: u64,
        path_and_query: &str,
        allowed: &Allowed,
        request_id: &HeaderValue,
        client: &Client,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let session = self.register(allowed, seen, req.headers())?;
        let (upstream, protocol) = match self
            .open_upstream(req.headers(), path_and_query, allowed, request_id, client)
            .await?
        {
            Ok(opened) => opened,
            Err(refusal) => return Ok(refused(refusal, request_id)),
        };
        let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
        let h = resp.headers_mut();
        match &handshake.key {
            Some(key) => {
                let accept = derive_accept_key(key.as_bytes());
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(
                    header::SEC_WEBSOCKET_ACCEPT,
                    HeaderValue::from_str(&accept)
                        .map_err(|e| ApiError::Internal(format!("accept key: {e}")))?,
                );
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            }
            // RFC 8441 §5: a 2xx on the stream opens the tunnel; hyper hands
            // the stream over once this (bodiless) answer is sent.
            None => *resp.status_mut() = StatusCode::OK,
        }
        let h = resp.headers_mut();
        if let Some(p) = protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        h.insert(REQUEST_ID_NAME, request_id.clone());

        let on_upgrade = hyper::upgrade::on(&mut req);
        let relay = self.clone();
        let request_id = request_id.to_str().unwrap_or("").to_owned();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let client = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(relay.config()),
                    )
                    .await;
                    relay.relay(client, upstream, session).await;
                }
                Err(e) => {
                    tracing::debug!(request_id, error = %e, "the client's connection was not upgraded");
                    let mut upstream = upstream;
                    let _ = tokio::time::timeout(
                        CLOSE_GRACE,
                        upstream.close(Some(close_frame(CloseCode::Away, "going away"))),
                    )
                    .await;
                }
            }
        });
        self.metrics.websocket_upgrades.inc();
        Ok(resp)
    }

    /// Relay messages between an upgraded client connection and the
    /// upstream's, until one side closes or rolegate cuts the connection.
    pub async fn relay<C, U>(
        &self,
        client: WebSocketStream<C>,
        upstream: WebSocketStream<U>,
        session: Session,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let Session {
            registration,
            mut cut,
            expires_at,
        } = session;
        let (mut client_tx, mut client_rx) = client.split();
        let (mut upstream_tx, mut upstream_rx) = upstream.split();
        let clock = Activity::new();
        let end = tokio::select! {
            e = pump(&mut client_rx, &mut upstream_tx, &clock) => End::Client(e),
            e = pump(&mut upstream_rx, &mut client_tx, &clock) => End::Upstream(e),
            c = watch(&mut cut, expires_at, self.settings.idle_timeout, &clock) => End::Cut(c),
        };
        let (to_client, to_upstream) = match end {
            End::Client(Ended::Closed(frame)) => (None, Some(frame)),
            End::Upstream(Ended::Closed(frame)) => (Some(frame), None),
            End::Client(Ended::TooBig) => (
                Some(Some(close_frame(CloseCode::Size, "message too big"))),
                Some(Some(close_frame(CloseCode::Away, "going away"))),
            ),
            End::Upstream(Ended::TooBig) => (
                Some(Some(close_frame(CloseCode::Away, "going away"))),
                Some(Some(close_frame(CloseCode::Size, "message too big"))),
            ),
            End::Client(Ended::Gone) => {
                (None, Some(Some(close_frame(CloseCode::Away, "going away"))))
            }
            End::Upstream(Ended::Gone) => {
                (Some(Some(close_frame(CloseCode::Away, "going away"))), None)
            }
            End::Client(Ended::PeerGone) => {
                (Some(Some(close_frame(CloseCode::Away, "going away"))), None)
            }
            End::Upstream(Ended::PeerGone) => {
                (None, Some(Some(close_frame(CloseCode::Away, "going away"))))
            }
            End::Cut(c) => {
                if matches!(c, Cut::Expired | Cut::Idle) {
                    // Decided here; the registry counts the cuts it makes.
                    self.live.count_cut(c);
                }
                let frame = match c {
                    Cut::Idle => close_frame(CloseCode::Away, "idle timeout"),
                    Cut::Shutdown => close_frame(CloseCode::Away, "going away"),
                    Cut::Expired => close_frame(CloseCode::Policy, "credential expired"),
                    Cut::Revoked | Cut::KeyRotated | Cut::PlaybackRevoked | Cut::Resync => {
                        close_frame(CloseCode::Policy, "credential revoked")
                    }
                };
                (Some(Some(frame.clone())), Some(Some(frame)))
            }
        };
        // Both legs close at once; each is bounded by the grace period.
        tokio::join!(
            finish(&mut client_tx, to_client),
            finish(&mut upstream_tx, to_upstream),
        );
        drop(registration);
    }
}

/// When the credential that opened a connection stops being valid: a
/// playback token's `exp`, or a user token's (read from the token the
/// decision just verified; one that cannot be read ends the connection at
/// once: fail closed). Keys and anonymous callers have no expiry.
fn credential_exp(allowed: &Allowed, headers: &HeaderMap) -> Option<u64> {
    if let Some(p) = allowed.playback() {
        return Some(p.exp);
    }
    if allowed.caller().kind != CredentialKind::UserToken {
        return None;
    }
    let exp = match credential::extract(headers) {
        Ok(Credential::UserToken(t)) => token::parse(t).ok().and_then(|t| token::claimed_exp(&t)),
        _ => None,
    };
    Some(exp.unwrap_or(0))
}

/// The upstream's refusal of the handshake, as the client's answer.
fn refused(refusal: Refusal, request_id: &HeaderValue) -> Response<ProxyBody> {
    let (parts, body) = refusal.into_parts();
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(
        body.unwrap_or_default(),
    ))));
    *resp.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    resp.headers_mut()
        .insert(REQUEST_ID_NAME, request_id.clone());
    resp
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

/// The last frame either way, as milliseconds since the relay began.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// How a direction ended.
enum Ended {
    /// Its sender closed (with this frame, if any).
    Closed(Option<CloseFrame>),
    /// Its sender sent a message over the size limit.
    TooBig,
    /// Its sender went away without closing, or broke the protocol.
    Gone,
    /// The side it writes to went away.
    PeerGone,
}

enum End {
    Client(Ended),
    Upstream(Ended),
    Cut(Cut),
}

/// Relay one direction: read a message, write it, then read the next.
async fn pump<R, W>(rx: &mut R, tx: &mut W, clock: &Activity) -> Ended
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
    W: Sink<Message, Error = WsError> + Unpin,
{
    loop {
        let msg = match rx.next().await {
            None => return Ended::Gone,
            Some(Err(WsError::Capacity(_))) => return Ended::TooBig,
            Some(Err(_)) => return Ended::Gone,
            Some(Ok(m)) => m,
        };
        clock.touch();
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                if tx.send(msg).await.is_err() {
                    return Ended::PeerGone;
                }
            }
            // Answered on their own leg by tungstenite; not relayed.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => return Ended::Closed(frame),
        }
    }
}

/// Resolves with the reason rolegate closes the connection: a cut from the
/// registry, the playback token's `exp`, or the idle timeout.
async fn watch(
    cut: &mut oneshot::Receiver<Cut>,
    expires_at: Option<u64>,
    idle: Duration,
    clock: &Activity,
) -> Cut {
    let expiry = async {
        match expires_at {
            Some(exp) => {
                let exp_ms = i64::try_from(exp.saturating_mul(1000)).unwrap_or(i64::MAX);
                let left = exp_ms.saturating_sub(crate::clock::unix_now_ms()).max(0);
                tokio::time::sleep(Duration::from_millis(left.unsigned_abs())).await;
            }
            None => std::future::pending().await,
        }
    };
    let idle = async {
        loop {
            let deadline = clock.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let revoked = async {
        match cut.await {
            Ok(c) => c,
            // The registry dropped the entry without a reason: only when
            // the relay is ending anyway.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        c = revoked => c,
        _ = expiry => Cut::Expired,
        _ = idle => Cut::Idle,
    }
}

/// Close one leg: send `frame` (`None`: the leg closed itself, only its
/// close is answered), then flush and close, within [`CLOSE_GRACE`].
async fn finish<W>(tx: &mut W, frame: Option<Option<CloseFrame>>)
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    let closing = async {
        if let Some(frame) = frame {
            let _ = tx.send(Message::Close(frame)).await;
        }
        let _ = tx.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
}
