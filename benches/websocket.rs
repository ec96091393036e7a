//! The WebSocket relay beside a direct connection, with the shipped policies
//! and a SQLite store, on loopback:
//!
//! - `websocket_round_trip_direct` / `websocket_round_trip_rolegate`: one
//!   32-byte text message to an in-process echo upstream and back, directly
//!   and through rolegate's relay (the difference is the relay's added
//!   latency: two extra legs' framing and one extra loopback hop each way);
//! - `websocket_batch_direct` / `websocket_batch_rolegate`: 100 messages of
//!   1 KiB written back to back, then their 100 echoes read (messages per
//!   second with the pipe kept full).
//!
//! Run: `cargo bench --bench websocket`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::{SinkExt, StreamExt};
use rolegate::config::{Overrides, Settings};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const MASTER: &str = "bench-master-secret-0123456789abcdef0123";
const BATCH: usize = 100;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An echo upstream: every text or binary message straight back.
async fn echo_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn connect(url: &str, api_key: Option<&str>) -> Client {
    let mut req = url.into_client_request().unwrap();
    if let Some(k) = api_key {
        req.headers_mut()
            .insert("x-bintu-apikey", k.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
        .await
        .unwrap();
    ws
}

async fn round_trip(ws: &mut Client, m: &Message) {
    ws.send(m.clone()).await.unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.len(), m.len());
}

async fn batch(ws: &mut Client, m: &Message) {
    for _ in 0..BATCH {
        ws.feed(m.clone()).await.unwrap();
    }
    ws.flush().await.unwrap();
    for _ in 0..BATCH {
        ws.next().await.unwrap().unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt.block_on(echo_upstream());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.secret"), MASTER).unwrap();
    let config = dir.path().join("rolegate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\n\
             store = \"{}\"\nmaster_secret_file = \"master.secret\"\npolicies_dir = \"{}\"\nschema_dir = \"{}\"\n",
            dir.path().join("b.db").display(),
            root.join("policies").display(),
            root.join("schema").display(),
        ),
    )
    .unwrap();
    let overrides = Overrides {
        config: Some(config),
        ..Default::default()
    };
    let env: std::collections::HashMap<String, String> = Default::default();
    let settings = Settings::resolve(&overrides, &env, true).unwrap();
    let state = rt.block_on(rolegate::app::build(settings)).unwrap();
    let running = rt.block_on(rolegate::app::start(state.clone())).unwrap();
    let org = rt.block_on(state.store.create_org("bench")).unwrap();

    let mut direct = rt.block_on(connect(&format!("ws://{upstream}/stream/s1"), None));
    let mut relayed = rt.block_on(connect(
        &format!("ws://{}/stream/s1", running.data_addr),
        Some(&org.api_key),
    ));
    let small = Message::text("x".repeat(32));
    let kib = Message::binary(vec![7u8; 1024]);

    c.bench_function("websocket_round_trip_direct", |b| {
        b.iter(|| rt.block_on(round_trip(&mut direct, &small)))
    });
    c.bench_function("websocket_round_trip_rolegate", |b| {
        b.iter(|| rt.block_on(round_trip(&mut relayed, &small)))
    });
    let mut g = c.benchmark_group("websocket_batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("direct", |b| {
        b.iter(|| rt.block_on(batch(&mut direct, &kib)))
    });
    g.bench_function("rolegate", |b| {
        b.iter(|| rt.block_on(batch(&mut relayed, &kib)))
    });
    g.finish();
    drop((direct, relayed));
    rt.block_on(running.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
