//! Forward-auth behind a real nginx: the shipped `deploy/nginx/` example,
//! with its placeholders filled in, in front of the echo upstream, asking an
//! in-process rolegate. nginx runs as a child process in a temp dir on a
//! loopback port and is killed when the test ends.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, repo, send, Echo, Options, Reply, Sidecar};

const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx; killed (and reaped) on drop, so a failing test leaves no process behind.
struct Nginx {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // One process (`master_process off`), so nothing outlives it. SIGTERM is
        // nginx's fast shutdown; SIGKILL if it has not exited within 5 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// The shipped example with its three placeholders filled in.
fn example_config(rolegate: &str, upstream: &str, listen: &str) -> String {
    let text = std::fs::read_to_string(repo().join("deploy/nginx/rolegate-forward-auth.conf"))
        .expect("deploy/nginx/rolegate-forward-auth.conf");
    for placeholder in ["@ROLEGATE_ADDR@", "@UPSTREAM_ADDR@", "@LISTEN_PORT@"] {
        assert!(
            text.contains(placeholder),
            "the example lost its {placeholder} placeholder"
        );
    }
    let filled = text
        .replace("@ROLEGATE_ADDR@", rolegate)
        .replace("@UPSTREAM_ADDR@", upstream)
        .replace("@LISTEN_PORT@", listen);
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
    filled
}

/// The main configuration around the example: everything nginx writes stays in `dir`.
fn main_config(dir: &Path, include: &Path) -> String {
    let d = dir.display();
    // As root, nginx would switch its workers to `nobody`, who cannot read
    // the temp dir; as anyone else the directive is ignored with a warning.
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        "{user}daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 64;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {inc};
}}
",
        inc = include.display()
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Start nginx with the example pointed at `rolegate` and `upstream`, and wait until it listens.
fn start_nginx(rolegate: &str, upstream: &str) -> Nginx {
    let bin = PathBuf::from(NGINX);
    assert!(
        bin.is_file(),
        "nginx is required for this test and is missing at {NGINX}: run scripts/test-deps \
         (scripts/test does) or `apt-get install nginx-light`"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let site = dir.path().join("rolegate.conf");
    std::fs::write(&site, example_config(rolegate, upstream, &listen)).unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, main_config(dir.path(), &site)).unwrap();
    let prefix = format!("{}/", dir.path().display());
    let error_log = dir.path().join("error.log");
    let args = [
        "-p",
        prefix.as_str(),
        "-c",
        conf.to_str().unwrap(),
        "-e",
        error_log.to_str().unwrap(),
    ];
    // The configuration must be valid as shipped, apart from the placeholders.
    let t = Command::new(&bin)
        .args(args)
        .arg("-t")
        .output()
        .expect("run nginx -t");
    assert!(
        t.status.success(),
        "nginx -t rejects the example: {}{}",
        String::from_utf8_lossy(&t.stdout),
        String::from_utf8_lossy(&t.stderr)
    );
    let child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut nginx = Nginx {
        child,
        base: format!("http://{listen}"),
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(&listen).is_ok() {
            return nginx;
        }
        if let Ok(Some(status)) = nginx.child.try_wait() {
            panic!("nginx exited ({status}): {}", nginx.error_log());
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not listen on {listen} within 10 s: {}",
            nginx.error_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn addr(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// The platform's error body (`{"error":{"code":…,"message":…,"userinfo":{"reason":…}}}`),
/// relayed from rolegate rather than nginx's own HTML page.
fn assert_platform_error(r: &Reply, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let j = r.json();
    assert!(j["error"]["code"].is_u64(), "{}", r.body);
    assert!(j["error"]["message"].is_string(), "{}", r.body);
    assert_eq!(r.reason(), reason, "{}", r.body);
    assert!(
        r.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    for h in ["x-rolegate-user-id", "x-rolegate-org-id", "x-rolegate-role"] {
        assert!(r.headers.get(h).is_none(), "{h} leaked to a refused client");
    }
}

#[tokio::test]
async fn nginx_with_the_shipped_example_asks_rolegate_before_forwarding() {
    let echo = Echo::start().await;
    // nginx connects to rolegate from loopback: that address is a trusted proxy.
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: "trusted_proxies = [\"127.0.0.1/32\"]\n".to_owned(),
        ..Default::default()
    })
    .await;
    let nginx = start_nginx(addr(&sc.base), &echo.addr.to_string());
    let through =
        |method: &'static str, path: &'static str, headers: Vec<(&'static str, String)>| {
            let base = nginx.base.clone();
            async move {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                tokio::time::timeout(Duration::from_secs(10), send(&base, method, path, &h, None))
                    .await
                    .expect("nginx answered within 10 s")
            }
        };

    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;
    let bintu = |t: &str| ("x-bintu-token", t.to_owned());

    // Allowed: reaches the upstream with rolegate's identity, not the client's
    // claims, and without the credential.
    let r = through(
        "GET",
        "/stream?quantity=3",
        vec![
            bintu(&t),
            ("x-rolegate-role", "nanoAdmin".to_owned()),
            ("x-rolegate-user-id", "someone-else".to_owned()),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{} / {}", r.body, nginx.error_log());
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
    assert_eq!(header("x-request-id").len(), 1);
    assert!(
        header("x-bintu-token").is_empty(),
        "the credential reached the upstream"
    );

    // The API key is a credential of its own kind.
    let r = through("GET", "/tag", vec![("x-bintu-apikey", org.api_key.clone())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = echo.last().unwrap();
    assert_eq!(seen.target, "/tag");
    assert_eq!(seen.headers["x-rolegate-credential"], "apikey");
    assert_eq!(seen.headers["x-rolegate-org-id"], org.org.id.as_str());
    assert!(seen.headers.get("x-bintu-apikey").is_none());
    assert_eq!(echo.count(), 2);

    // Denied by policy: 403 with rolegate's body; the upstream never sees it.
    let r = through("DELETE", "/stream/s1", vec![bintu(&t)]).await;
    assert_platform_error(&r, 403, "policy_deny");
    let r = through("POST", "/stream/s1/stop", vec![bintu(&t)]).await;
    assert_platform_error(&r, 403, "policy_deny");
    // No route: denied as well.
    let r = through("GET", "/nope", vec![bintu(&t)]).await;
    assert_platform_error(&r, 403, "no_route");
    // No or a bad credential: 401 with rolegate's body and challenge.
    let r = through("GET", "/stream", vec![]).await;
    assert_platform_error(&r, 401, "credential_required");
    assert!(
        r.headers.get("www-authenticate").is_some(),
        "{:?}",
        r.headers
    );
    let r = through("GET", "/stream", vec![bintu("not-a-token")]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.reason().is_empty(), "{}", r.body);
    assert_eq!(echo.count(), 2, "a refused request reached the upstream");

    // tokenKey renewal (through rolegate, with the org's API key) bites on the
    // very next request through nginx.
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
    assert_eq!(r.status, 401, "the old token still works: {}", r.body);
    assert!(!r.reason().is_empty(), "{}", r.body);
    assert_eq!(echo.count(), 2);
    let fresh = sc.token(&u.id).await;
    let r = through("GET", "/stream", vec![bintu(&fresh)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echo.count(), 3);
    assert_eq!(
        echo.last().unwrap().headers["x-rolegate-user-id"],
        u.id.as_str()
    );

    // Everything went through this nginx (its access log has every request).
    let log = std::fs::read_to_string(nginx.dir.path().join("access.log")).unwrap_or_default();
    assert!(log.contains("\"DELETE /stream/s1 HTTP/1.1\" 403"), "{log}");
    drop(nginx);
}
