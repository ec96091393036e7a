//! The process's life: readiness until started, and the SIGTERM drain.

use std::process::Command;
use std::time::Duration;

use crate::support::{self, copy_dir, free_port, repo, send};

#[tokio::test]
async fn ready_is_503_until_started_and_200_after() {
    let dir = tempfile::tempdir().unwrap();
    let (p, s) = (dir.path().join("policies"), dir.path().join("schema"));
    copy_dir(&repo().join("policies"), &p);
    copy_dir(&repo().join("schema"), &s);
    std::fs::write(dir.path().join("master.secret"), support::MASTER_SECRET).unwrap();
    let cfg = dir.path().join("rolegate.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\nstore = \"{}\"\nmaster_secret_file = \"master.secret\"\npolicies_dir = \"policies\"\nschema_dir = \"schema\"\n",
            dir.path().join("rolegate.db").display()
        ),
    )
    .unwrap();
    let overrides = rolegate::config::Overrides {
        config: Some(cfg),
        ..Default::default()
    };
    let env: std::collections::HashMap<String, String> = Default::default();
    let settings = rolegate::config::Settings::resolve(&overrides, &env, false).unwrap();
    let state = rolegate::app::build(settings).await.unwrap();
    // The ops listener alone, before the sidecar is started.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(rolegate::app::serve_ops(state.clone(), listener, rx));
    let r = send(&ops, "GET", "/ready", &[], None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(send(&ops, "GET", "/live", &[], None).await.status, 200);
    let running = rolegate::app::start(state.clone()).await.unwrap();
    let r = send(&ops, "GET", "/ready", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send(
        &format!("http://{}", running.ops_addr),
        "GET",
        "/ready",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    running.shutdown().await;
    assert!(!state.is_ready());
    let _ = tx.send(true);
    let _ = task.await;
}

/// An upstream that waits 2 s, then sends its body in chunks over another second.
async fn slow_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n")
                    .await;
                for i in 0..5 {
                    let chunk = format!("part-{i};");
                    let _ = s
                        .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                        .await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_slow_response_whole_and_exits_zero() {
    let upstream = slow_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("policies"), &dir.path().join("policies"));
    copy_dir(&repo().join("schema"), &dir.path().join("schema"));
    std::fs::write(dir.path().join("master.secret"), support::MASTER_SECRET).unwrap();
    let (data, ops) = (free_port(), free_port());
    let cfg = dir.path().join("rolegate.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{data}\"\nops_listen = \"127.0.0.1:{ops}\"\nupstream = \"{upstream}\"\nstore = \"{}\"\nmaster_secret_file = \"master.secret\"\npolicies_dir = \"policies\"\nschema_dir = \"schema\"\ndrain_seconds = 10\n",
            dir.path().join("rolegate.db").display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let bin = env!("CARGO_BIN_EXE_rolegate");
    // An organisation to call as; its API key is printed once on stderr.
    let add = Command::new(bin)
        .args([
            "--config",
            &cfg,
            "user",
            "add",
            "--org",
            "acme",
            "--email",
            "a@acme.test",
            "--role",
            "nanoAdmin",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&add.stderr).into_owned();
    assert!(add.status.success(), "{err}");
    let key = err
        .lines()
        .find_map(|l| l.split("API key (shown once): ").nth(1))
        .unwrap()
        .trim()
        .to_owned();

    // One worker thread: the current-thread scheduler (cli/mod.rs), which the
    // in-process tests do not start through the binary.
    let mut child = Command::new(bin)
        .args(["--config", &cfg, "serve"])
        .env("ROLEGATE_LOG_FORMAT", "text")
        .env("ROLEGATE_WORKER_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ops_url = format!("http://127.0.0.1:{ops}");
    let mut ready = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tokio::net::TcpStream::connect(("127.0.0.1", ops))
            .await
            .is_ok()
            && send(&ops_url, "GET", "/ready", &[], None).await.status == 200
        {
            ready = true;
            break;
        }
    }
    assert!(ready, "rolegate did not become ready");

    let base = format!("http://127.0.0.1:{data}");
    let req = tokio::spawn(async move {
        send(
            &base,
            "GET",
            "/stream/s1",
            &[("x-bintu-apikey", &key)],
            None,
        )
        .await
    });
    // The request is now waiting on the upstream: stop the sidecar.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let r = req.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "part-0;part-1;part-2;part-3;part-4;");
    let mut code = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            code = s.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(code, Some(0));
}

/// With the data listener at its connection cap (every connection busy with a
/// request whose body never comes), the ops listener still answers `/live`
/// and `/ready` at once: a busy pod is not restarted as a dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_the_data_listener_is_saturated() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const CAP: usize = 8;
    let echo = support::Echo::start().await;
    let sc = support::Sidecar::with(support::Options {
        upstream: Some(echo.url()),
        config: format!("max_connections = {CAP}\n"),
        ..Default::default()
    })
    .await;
    let data = sc.base.trim_start_matches("http://").to_owned();
    // Each hog sends a request head announcing a body it never sends, so its
    // connection stays busy (not idle, so not shed near the cap). One at a
    // time, so each request is under way before the next connection arrives.
    let mut hogs = Vec::new();
    for _ in 0..CAP {
        let mut s = TcpStream::connect(&data).await.unwrap();
        s.write_all(
            b"POST /user/validate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"email\":",
        )
        .await
        .unwrap();
        hogs.push(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Saturated: a new connection waits in the backlog, unanswered.
    let mut late = TcpStream::connect(&data).await.unwrap();
    late.write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let waited = tokio::time::timeout(Duration::from_millis(500), late.read(&mut buf)).await;
    assert!(waited.is_err(), "the data listener answered past its cap");

    for probe in ["/live", "/ready"] {
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), sc.ops_get(probe))
            .await
            .unwrap_or_else(|_| panic!("{probe} did not answer within 2 s"));
        assert_eq!(r.status, 200, "{probe}: {}", r.body);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    // The hogs leave: the waiting connection is served.
    drop(hogs);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), late.read_to_end(&mut out))
        .await
        .expect("the waiting connection was not served after the hogs left")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
