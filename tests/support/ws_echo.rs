//! A real WebSocket upstream on loopback: it records each opening handshake,
//! echoes every text and binary message, answers a handshake for a path
//! under `/stream/refuse` with 403, picks the `echo.v1` subprotocol when
//! offered, and records the close code each connection ended with.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// One opening handshake as it arrived.
#[derive(Debug, Clone)]
pub struct WsSeen {
    pub target: String,
    pub headers: HeaderMap,
}

#[derive(Clone)]
pub struct WsEcho {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<WsSeen>>>,
    /// How each connection ended: the close code received, `None` without one.
    closes: Arc<Mutex<Vec<Option<u16>>>>,
}

impl WsEcho {
    pub async fn start() -> WsEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<WsSeen>>> = Arc::default();
        let closes: Arc<Mutex<Vec<Option<u16>>>> = Arc::default();
        let (s, c) = (seen.clone(), closes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, c) = (s.clone(), c.clone());
                tokio::spawn(async move {
                    // The callback's error type is tungstenite's (a whole response).
                    #[allow(clippy::result_large_err)]
                    let record = |req: &Request, mut resp: Response| {
                        let target = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        s.lock().unwrap().push(WsSeen {
                            target: target.clone(),
                            headers: req.headers().clone(),
                        });
                        if target.starts_with("/stream/refuse") {
                            let mut no = ErrorResponse::new(Some("upstream says no".to_owned()));
                            *no.status_mut() = http::StatusCode::FORBIDDEN;
                            return Err(no);
                        }
                        let offered = req
                            .headers()
                            .get("sec-websocket-protocol")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.split(',').any(|p| p.trim() == "echo.v1"));
                        if offered {
                            resp.headers_mut()
                                .insert("sec-websocket-protocol", "echo.v1".parse().unwrap());
                        }
                        Ok(resp)
                    };
                    // No limit of its own: the relay's limit is what is tested.
                    let config = WebSocketConfig::default()
                        .max_message_size(None)
                        .max_frame_size(None);
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(
                        stream,
                        record,
                        Some(config),
                    )
                    .await
                    else {
                        return;
                    };
                    let mut code = None;
                    while let Some(Ok(m)) = ws.next().await {
                        if let Message::Close(f) = &m {
                            code = f.as_ref().map(|f| u16::from(f.code));
                            break;
                        }
                        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                            break;
                        }
                    }
                    let _ = ws.close(None).await;
                    c.lock().unwrap().push(code);
                });
            }
        });
        WsEcho { addr, seen, closes }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<WsSeen> {
        self.seen.lock().unwrap().last().cloned()
    }

    pub fn closes(&self) -> Vec<Option<u16>> {
        self.closes.lock().unwrap().clone()
    }
}
