//! TLS on both sides: the data listener's certificate rotated on disk
//! without a restart or a dropped connection, client certificates when a
//! client CA is set, an `https://` upstream verified always (an untrusted
//! certificate is a 502, never a downgrade), and bad TLS settings refused at
//! start-up by name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use rolegate::config::{Overrides, Settings};

use crate::support::tls::{
    echo_over, presented_certificate, slow_upstream, tls_connect, Ca, Client, EchoOver, Pair, Proto,
};
use crate::support::{tok, Options, Sidecar};

fn addr(sc: &Sidecar) -> std::net::SocketAddr {
    sc.base.trim_start_matches("http://").parse().unwrap()
}

/// Put `pair` live the way a Kubernetes Secret volume does: the files sit in
/// a timestamped directory, `..data` points at it, and `cert.pem`/`key.pem`
/// are links through `..data`; an update writes a new directory and renames
/// a new `..data` link over the old one.
fn publish(dir: &Path, pair: &Pair, n: u32) {
    let version = format!("..v{n}");
    pair.write(&dir.join(&version));
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
        }
    }
}

/// Wait (bounded: past the 10 s periodic check, should the file watch miss
/// the change) until new handshakes are given `want`.
async fn wait_for_certificate(addr: std::net::SocketAddr, ca: &Ca, want: &[u8]) -> bool {
    for _ in 0..300 {
        if presented_certificate(addr, ca).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart_while_a_long_response_streams() {
    let ca = Ca::new("test CA");
    let secret = tempfile::tempdir().unwrap();
    let (first, second, third) = (ca.server("one"), ca.server("two"), ca.server("three"));
    publish(secret.path(), &first, 1);
    // 60 chunks, 100 ms apart: a response that outlives the rotation.
    let upstream = slow_upstream(60, Duration::from_millis(100)).await;
    let sc = Sidecar::with(Options {
        upstream: Some(format!("http://{upstream}")),
        config: format!(
            "tls_cert_file = \"{0}/cert.pem\"\ntls_key_file = \"{0}/key.pem\"\n",
            secret.path().display()
        ),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    let a = addr(&sc);
    assert_eq!(presented_certificate(a, &ca).await, first.der());

    // The long request, over TLS with the first certificate.
    let mut long = Client::new(a, Some(ca.client_config(&["h2"], None)), Proto::H2);
    let resp = long.start("/stream/s1", &[tok(&t)]).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first_chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first_chunk[..], b"chunk\n");

    // Rotate: new handshakes get the new certificate, no restart.
    publish(secret.path(), &second, 2);
    assert!(
        wait_for_certificate(a, &ca, &second.der()).await,
        "the new certificate was not picked up"
    );
    // The old connection is still streaming.
    let more = body
        .frame()
        .await
        .expect("the long response ended at the rotation");
    let mut received = first_chunk.len() + more.unwrap().into_data().unwrap().len();
    // A new client works with it, HTTP/1.1 and HTTP/2 alike.
    for (alpn, proto) in [("http/1.1", Proto::H1), ("h2", Proto::H2)] {
        let mut c = Client::new(a, Some(ca.client_config(&[alpn], None)), proto);
        assert_eq!(c.send("GET", "/stream", &[tok(&t)], None).await.status, 200);
    }

    // A broken pair (the key of another certificate) is refused; the live one stays.
    let broken = Pair {
        cert_pem: third.cert_pem.clone(),
        key_pem: first.key_pem.clone(),
    };
    publish(secret.path(), &broken, 3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(presented_certificate(a, &ca).await, second.der());
    // Fixed, it goes live.
    publish(secret.path(), &third, 4);
    assert!(wait_for_certificate(a, &ca, &third.der()).await);

    // The connection opened before all this streams to its end.
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map(|d| d.len()).unwrap_or(0);
    }
    assert_eq!(received, 60 * b"chunk\n".len(), "the long response was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("another CA");
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = ca.server("rolegate").write(dir.path());
    let client_ca = clients.write(&dir.path().join("clients.pem"));
    let echo = crate::support::Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_client_ca_file = \"{}\"\n",
            c.display(),
            k.display(),
            client_ca.display()
        ),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    let a = addr(&sc);

    // Without a certificate, or with one from another CA, no request gets through.
    for identity in [None, Some(stranger.client("mallory"))] {
        let refused = async {
            let mut s = tls_connect(a, ca.client_config(&["http/1.1"], identity.as_ref())).await?;
            // TLS 1.3: the server's refusal arrives after the client's Finished.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(
                format!("GET /stream HTTP/1.1\r\nHost: x\r\nx-bintu-token: {t}\r\n\r\n").as_bytes(),
            )
            .await?;
            let mut buf = [0u8; 64];
            match s.read(&mut buf).await? {
                0 => Err(std::io::Error::other("closed")),
                n => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            }
        };
        let r = tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .unwrap();
        assert!(
            r.is_err(),
            "answered without a valid client certificate: {r:?}"
        );
    }
    assert_eq!(echo.count(), 0);
    // With a certificate from the client CA: served, and still authorized as usual.
    let alice = clients.client("alice");
    let mut c = Client::new(a, Some(ca.client_config(&["h2"], Some(&alice))), Proto::H2);
    assert_eq!(c.send("GET", "/stream", &[tok(&t)], None).await.status, 200);
    assert_eq!(c.send("GET", "/stream", &[], None).await.status, 401);
    assert_eq!(echo.count(), 1);
    // The upstream, reached over plain HTTP, is told the client came over
    // TLS, and which authority it asked for (HTTP/2: `:authority`).
    let seen = echo.last().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    let host = seen.headers["x-forwarded-host"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(host.ends_with(&format!(":{}", a.port())), "{host}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_upstream_certificate_is_a_502_and_the_upstream_sees_nothing() {
    let upstream_ca = Arc::new(Ca::new("upstream CA"));
    let echo = echo_over(EchoOver::Tls(
        upstream_ca.server("upstream"),
        upstream_ca.clone(),
    ))
    .await;
    let url = format!("https://127.0.0.1:{}", echo.addr.port());
    // Not trusted: the system roots do not know the private CA.
    let sc = Sidecar::with(Options {
        upstream: Some(url.clone()),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    for _ in 0..2 {
        let r = sc.send("GET", "/stream", &[tok(&t)], None).await;
        assert_eq!(
            (r.status.as_u16(), r.reason().as_str()),
            (502, "upstream_untrusted"),
            "{}",
            r.body
        );
    }
    assert_eq!(echo.count(), 0, "a request reached an untrusted upstream");

    // A certificate for another name, from the trusted CA, is refused too.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = upstream_ca.write(&dir.path().join("ca.pem"));
    let named = Arc::new(Ca::new("upstream CA 2"));
    let wrong_name = echo_over(EchoOver::Tls(
        named.leaf_for_test("elsewhere.example"),
        named.clone(),
    ))
    .await;
    let ca2 = named.write(&dir.path().join("ca2.pem"));
    let sc2 = Sidecar::with(Options {
        upstream: Some(format!("https://127.0.0.1:{}", wrong_name.addr.port())),
        config: format!("upstream_ca_file = \"{}\"\n", ca2.display()),
        ..Default::default()
    })
    .await;
    let org2 = sc2.org("acme").await;
    let u2 = sc2.user(&org2, "u@acme.test", "nanoUser").await;
    let r = sc2
        .send("GET", "/stream", &[tok(&sc2.token(&u2.id).await)], None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.reason().as_str()),
        (502, "upstream_untrusted")
    );
    assert_eq!(wrong_name.count(), 0);

    // With the private CA as `upstream_ca_file`: verified, forwarded.
    let trusted = Sidecar::with(Options {
        upstream: Some(url),
        config: format!("upstream_ca_file = \"{}\"\n", ca_file.display()),
        ..Default::default()
    })
    .await;
    let org = trusted.org("acme").await;
    let u = trusted.user(&org, "u@acme.test", "nanoUser").await;
    let r = trusted
        .send(
            "GET",
            "/stream?x=1",
            &[tok(&trusted.token(&u.id).await)],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-echo-version"], "HTTP/1.1");
    assert_eq!(echo.count(), 1);
    assert_eq!(echo.last().unwrap().target, "/stream?x=1");
}

/// Resolve settings from `extra` config lines in a fresh directory.
fn resolve(dir: &Path, extra: &str, upstream: &str) -> Result<Settings, String> {
    std::fs::write(dir.join("master.secret"), crate::support::MASTER_SECRET).unwrap();
    let config = dir.join("rolegate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\nmaster_secret_file = \"master.secret\"\nupstream = \"{upstream}\"\n{extra}"
        ),
    )
    .unwrap();
    let env: std::collections::HashMap<String, String> = Default::default();
    Settings::resolve(
        &Overrides {
            config: Some(config),
            ..Default::default()
        },
        &env,
        true,
    )
    .map_err(|e| e.to_string())
}

#[test]
fn bad_tls_settings_stop_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("test CA");
    let (one, two) = (ca.server("one"), ca.server("two"));
    let (c, k) = one.write(&d.join("one"));
    let (_, k2) = two.write(&d.join("two"));
    std::fs::write(d.join("garbage.pem"), "not a certificate").unwrap();
    let ca_file = ca.write(&d.join("ca.pem"));
    let http = "http://127.0.0.1:1";
    let https = "https://127.0.0.1:1";
    let cases = [
        (format!("tls_cert_file = \"{}\"\n", c.display()), http, "tls_key_file"),
        (format!("tls_key_file = \"{}\"\n", k.display()), http, "tls_cert_file"),
        (
            format!("tls_cert_file = \"{}/missing.pem\"\ntls_key_file = \"{}\"\n", d.display(), k.display()),
            http,
            "tls_cert_file",
        ),
        (
            format!("tls_cert_file = \"{}/garbage.pem\"\ntls_key_file = \"{}\"\n", d.display(), k.display()),
            http,
            "tls_cert_file",
        ),
        (
            format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n", c.display(), k2.display()),
            http,
            "tls_key_file",
        ),
        (
            format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_client_ca_file = \"{}/garbage.pem\"\n",
                c.display(),
                k.display(),
                d.display()
            ),
            http,
            "tls_client_ca_file",
        ),
        (format!("tls_client_ca_file = \"{}\"\n", ca_file.display()), http, "tls_client_ca_file"),
        (format!("upstream_ca_file = \"{}/garbage.pem\"\n", d.display()), https, "upstream_ca_file"),
        (format!("upstream_ca_file = \"{}\"\n", ca_file.display()), http, "upstream_ca_file"),
        (String::new(), "ftp://127.0.0.1:1", "upstream"),
    ];
    for (extra, upstream, setting) in cases {
        let err = resolve(d, &extra, upstream).expect_err(&extra);
        assert!(err.contains(&format!("`{setting}`")), "{extra}: {err}");
    }
    // The good ones resolve.
    let ok = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_client_ca_file = \"{}\"\nupstream_ca_file = \"{}\"\nupstream_http2 = true\n",
        c.display(),
        k.display(),
        ca_file.display(),
        ca_file.display()
    );
    let s = resolve(d, &ok, https).unwrap();
    assert!(s.tls.is_some() && s.upstream_http2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_listener_is_refused_and_frees_its_slot() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = ca.server("rolegate").write(dir.path());
    let echo = crate::support::Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nmax_connections = 2\n",
            c.display(),
            k.display()
        ),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    // More plain-text requests than there are connection slots: each fails
    // its handshake, gets no HTTP answer, and gives its slot back.
    for _ in 0..4 {
        let out = crate::support::raw(
            &sc.base,
            format!("GET /stream HTTP/1.1\r\nHost: x\r\nx-bintu-token: {t}\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(!out.contains("HTTP/1.1 200"), "{out}");
    }
    assert_eq!(echo.count(), 0);
    let mut c = Client::new(
        addr(&sc),
        Some(ca.client_config(&["http/1.1"], None)),
        Proto::H1,
    );
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        c.send("GET", "/stream", &[tok(&t)], None),
    )
    .await
    .expect("no slot was free");
    assert_eq!(r.status, 200);
    assert_eq!(echo.count(), 1);
}
