//! The upstream connections: kept alive across responses of every framing,
//! never reused while a body is still arriving, replaced when the upstream
//! closes them, and a request the upstream took is never sent twice.
//!
//! The upstream here is scripted at the byte level (hyper as an upstream would
//! hide exactly the connection behaviour under test): it counts connections,
//! records each request, and answers the n-th request as the test says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{tok, Options, Sidecar};

/// How the scripted upstream answers one request.
#[derive(Clone)]
enum Answer {
    /// Write these bytes and keep the connection for the next request.
    Keep(Vec<u8>),
    /// Write these bytes (keep-alive framing, no `Connection: close`), then
    /// close the connection after a moment, as an upstream's idle timeout does.
    CloseLater(Vec<u8>),
    /// Close the connection without answering.
    Drop,
    /// Write these bytes and then send nothing more, holding the connection.
    Stall(Vec<u8>),
    /// Write these bytes as soon as the request head is in, before reading
    /// its body (as an upstream refusing an upload early does), then read the
    /// body and keep the connection.
    Early(Vec<u8>),
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn chunked(total: usize) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut left = total;
    let mut n = 0u8;
    while left > 0 {
        let len = left.min(4096);
        out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'a' + n % 26, len));
        out.extend_from_slice(b"\r\n");
        left -= len;
        n = n.wrapping_add(1);
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

struct Scripted {
    url: String,
    connections: Arc<AtomicUsize>,
    /// "METHOD target body" of every request, in arrival order.
    requests: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: Vec<Answer>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let script = Arc::new(script);
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, script.clone(), r.clone()));
            }
        });
        Scripted {
            url,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Read requests off one connection and answer each from the script.
async fn serve(mut s: TcpStream, script: Arc<Vec<Answer>>, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let line = head.lines().next().unwrap_or("");
        let mut words = line.split(' ');
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push(format!("{method} {target} "));
            seen.len() - 1
        };
        let answer = script.get(n).cloned().unwrap_or(Answer::Drop);
        if let Answer::Early(bytes) = &answer {
            if s.write_all(bytes).await.is_err() {
                return;
            }
        }
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        buf.drain(..head_end + length);
        seen.lock().unwrap()[n].push_str(&body);
        match answer {
            Answer::Early(_) => {}
            Answer::Keep(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Answer::CloseLater(bytes) => {
                let _ = s.write_all(&bytes).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            Answer::Drop => return,
            Answer::Stall(bytes) => {
                let _ = s.write_all(&bytes).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
        }
    }
}

/// Read from `s` until `marker` has arrived (5 s at most); everything read.
async fn read_until(s: &mut TcpStream, marker: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    while !got.windows(marker.len()).any(|w| w == marker) {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the bytes arrive in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

/// A sidecar in front of `upstream` and an admin's token.
async fn sidecar(upstream: &Scripted) -> (Sidecar, String) {
    let sc = Sidecar::with(Options {
        upstream: Some(upstream.url.clone()),
        config: "upstream_timeout_secs = 2\n".into(),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let t = sc.token(&u.id).await;
    (sc, t)
}

#[tokio::test]
async fn one_upstream_connection_carries_responses_of_every_framing_in_turn() {
    let script = vec![
        Answer::Keep(ok("first")),
        Answer::Keep(chunked(200 * 1024)),
        Answer::Keep(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        Answer::Keep(ok("")),
        Answer::Keep(chunked(10)),
        Answer::Keep(ok("last")),
    ];
    let up = Scripted::start(script).await;
    let (sc, t) = sidecar(&up).await;
    let expect: [(u16, usize); 6] = [
        (200, 5),
        (200, 200 * 1024),
        (204, 0),
        (200, 0),
        (200, 10),
        (200, 4),
    ];
    for (i, (status, len)) in expect.into_iter().enumerate() {
        let r = sc
            .send("GET", &format!("/stream?n={i}"), &[tok(&t)], None)
            .await;
        assert_eq!(r.status, status, "request {i}: {}", r.body);
        assert_eq!(r.body.len(), len, "request {i}");
    }
    let r = sc.send("GET", "/stream?n=1", &[tok(&t)], None).await;
    assert_eq!(r.status, 502, "the script has ended: the upstream drops");
    assert_eq!(up.requests().len(), 7);
    assert_eq!(
        up.connections(),
        1,
        "every response ended, so its connection was reused"
    );
}

#[tokio::test]
async fn connections_the_upstream_closed_are_replaced_and_no_request_is_lost_or_repeated() {
    let up = Scripted::start(
        (0..5)
            .map(|i| Answer::CloseLater(ok(&format!("r{i}"))))
            .collect(),
    )
    .await;
    let (sc, t) = sidecar(&up).await;
    for i in 0..5 {
        let body = format!("{{\"n\":{i}}}");
        let r = sc.send("POST", "/stream", &[tok(&t)], Some(&body)).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.body, format!("r{i}"));
        // Let the upstream's close arrive, as an idle timeout's would.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let seen = up.requests();
    let expect: Vec<String> = (0..5)
        .map(|i| format!("POST /stream {{\"n\":{i}}}"))
        .collect();
    assert_eq!(
        seen, expect,
        "each request reached the upstream exactly once"
    );
    assert_eq!(up.connections(), 5);
}

#[tokio::test]
async fn a_request_the_upstream_took_and_dropped_is_a_502_and_is_not_sent_again() {
    let up = Scripted::start(vec![
        Answer::Keep(ok("one")),
        Answer::Drop,
        Answer::Keep(ok("three")),
    ])
    .await;
    let (sc, t) = sidecar(&up).await;
    let r = sc
        .send("POST", "/stream", &[tok(&t)], Some("{\"n\":1}"))
        .await;
    assert_eq!(r.status, 200);
    let r = sc
        .send("POST", "/stream", &[tok(&t)], Some("{\"n\":2}"))
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.reason(), "upstream_unreachable");
    assert_eq!(
        up.requests(),
        ["POST /stream {\"n\":1}", "POST /stream {\"n\":2}"],
        "the dropped request was written, so it is not retried"
    );
    let r = sc
        .send("POST", "/stream", &[tok(&t)], Some("{\"n\":3}"))
        .await;
    assert_eq!(r.status, 200, "a new connection serves the next request");
    assert_eq!(r.body, "three");
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn a_connection_still_carrying_a_response_is_not_lent_to_another_request() {
    // The first response promises a megabyte and sends ten bytes of it.
    let stalled = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n0123456789".to_vec();
    let script = vec![
        Answer::Stall(stalled),
        Answer::Keep(ok("second")),
        Answer::Keep(ok("third")),
    ];
    let up = Scripted::start(script).await;
    let (sc, t) = sidecar(&up).await;
    let addr = sc.base.trim_start_matches("http://").to_owned();
    let mut client = TcpStream::connect(&addr).await.unwrap();
    let get = format!("GET /stream HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {t}\r\n\r\n");
    client.write_all(get.as_bytes()).await.unwrap();
    let got = read_until(&mut client, b"0123456789").await;
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    // Had the half-sent response's connection been lent out, this request
    // would wait on it until the upstream timeout (504).
    let r = sc.send("GET", "/stream", &[tok(&t)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "second");
    // The client gives up on the first response; its connection is closed,
    // and the one that finished its response serves the next request.
    drop(client);
    let r = sc.send("GET", "/stream", &[tok(&t)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "third");
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn a_connection_still_sending_a_request_body_is_not_lent_to_another_request() {
    let script = vec![Answer::Early(ok("refused")), Answer::Keep(ok("second"))];
    let up = Scripted::start(script).await;
    let (sc, t) = sidecar(&up).await;
    let addr = sc.base.trim_start_matches("http://").to_owned();
    let mut uploader = TcpStream::connect(&addr).await.unwrap();
    // Half of a 20-byte body; the upstream answers before it has any of it.
    let head = format!(
        "POST /stream HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {t}\r\nContent-Length: 20\r\n\r\n0123456789"
    );
    uploader.write_all(head.as_bytes()).await.unwrap();
    read_until(&mut uploader, b"refused").await;
    // The upload is unfinished, so its upstream connection is busy: another
    // request that waited on it would time out (504).
    let r = sc.send("GET", "/stream", &[tok(&t)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "second");
    assert_eq!(up.connections(), 2);
    drop(uploader);
}
