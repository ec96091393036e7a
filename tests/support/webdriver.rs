//! A headless Chromium driven over the W3C WebDriver protocol through
//! chromedriver, for the dashboard's browser test.
//!
//! Written against the protocol directly (a dozen JSON commands over the
//! tests' own hyper client) rather than with a WebDriver crate: the test needs
//! only navigation, finding, clicking, typing, script execution and
//! screenshots, and this keeps a second HTTP stack and its TLS features out of
//! the dev-dependencies. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
// Generous: CI runs this beside the other tests on two cores.
pub const WAIT: Duration = Duration::from_secs(30);

/// chromedriver and one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

#[derive(Clone, Debug)]
pub struct El(String);

fn find_binary(names: &[&str]) -> PathBuf {
    for n in names {
        for dir in ["/usr/bin", "/usr/lib/chromium", "/usr/local/bin"] {
            let p = Path::new(dir).join(n);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("none of {names:?} is installed: run scripts/test-deps");
}

impl Browser {
    pub async fn start() -> Browser {
        let chromium = find_binary(&["chromium", "chromium-browser"]);
        let chromedriver = find_binary(&["chromedriver"]);
        let port = super::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(v) = raw("GET", &format!("{base}/status"), None).await {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let v = raw("POST", &format!("{base}/session"), Some(caps))
            .await
            .expect("a browser session");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let v = raw(method, &url, body).await.expect("webdriver answers");
        if let Some(err) = v["value"].get("error") {
            panic!(
                "webdriver {method} {path}: {err}: {}",
                v["value"]["message"]
            );
        }
        v["value"].clone()
    }

    async fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let v = raw(method, &url, body).await.ok()?;
        if v["value"].get("error").is_some() {
            return None;
        }
        Some(v["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// The first element matching an XPath, waiting for it to appear.
    pub async fn wait(&self, xpath: &str) -> El {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = self
                .try_cmd(
                    "POST",
                    "/element",
                    Some(json!({"using": "xpath", "value": xpath})),
                )
                .await
            {
                if let Some(id) = v[ELEMENT].as_str() {
                    return El(id.to_owned());
                }
            }
            if Instant::now() > deadline {
                let text = self
                    .execute("return document.body.innerText", json!([]))
                    .await;
                panic!("no element `{xpath}` within {WAIT:?}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every element matching an XPath now (no wait).
    pub async fn all(&self, xpath: &str) -> Vec<El> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({"using": "xpath", "value": xpath})),
            )
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| El(e[ELEMENT].as_str().unwrap().to_owned()))
            .collect()
    }

    /// Wait until no element matches.
    pub async fn wait_gone(&self, xpath: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.all(xpath).await.is_empty() {
            assert!(Instant::now() < deadline, "`{xpath}` still there");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, el: &El) {
        self.cmd("POST", &format!("/element/{}/click", el.0), Some(json!({})))
            .await;
    }

    pub async fn click_on(&self, xpath: &str) {
        let el = self.wait(xpath).await;
        self.click(&el).await;
    }

    /// Type into a field (real key events, as a user would).
    pub async fn type_into(&self, el: &El, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The field labelled `label` (label text, then its input/select).
    pub async fn field(&self, label: &str) -> El {
        self.wait(&format!(
            "//label[normalize-space()='{label}']/following-sibling::*[self::input or self::select][1]"
        ))
        .await
    }

    pub async fn fill(&self, label: &str, text: &str) {
        let el = self.field(label).await;
        self.type_into(&el, text).await;
    }

    /// Choose an option of the select labelled `label` by its value, with the
    /// keyboard-equivalent events a user's choice fires.
    pub async fn choose(&self, label: &str, value: &str) {
        let el = self.field(label).await;
        self.execute(
            "const [s, v] = arguments; s.focus(); s.value = v; \
             if (s.value !== v) throw new Error('no option ' + v); \
             s.dispatchEvent(new Event('input', {bubbles: true})); \
             s.dispatchEvent(new Event('change', {bubbles: true}));",
            json!([el.arg(), value]),
        )
        .await;
    }

    pub async fn text(&self, el: &El) -> String {
        self.cmd("GET", &format!("/element/{}/text", el.0), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub async fn property(&self, el: &El, name: &str) -> Value {
        self.cmd("GET", &format!("/element/{}/property/{name}", el.0), None)
            .await
    }

    pub async fn enabled(&self, el: &El) -> bool {
        self.cmd("GET", &format!("/element/{}/enabled", el.0), None)
            .await
            .as_bool()
            .unwrap_or(false)
    }

    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Press keys as a keyboard would: each character of `keys` down and up
    /// in turn (WebDriver key codes such as `\u{E004}` Tab, `\u{E007}` Enter,
    /// `\u{E00C}` Escape included), to whatever has focus.
    pub async fn press(&self, keys: &str) {
        let mut actions = Vec::new();
        for c in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
    }

    /// What has focus, described by a script expression on `el` (e.g. `el.type`).
    pub async fn focused(&self, describe: &str) -> Value {
        self.execute(
            &format!("const el = document.activeElement; return {describe};"),
            json!([]),
        )
        .await
    }

    pub async fn set_script_timeout(&self, ms: u64) {
        self.cmd("POST", "/timeouts", Some(json!({ "script": ms })))
            .await;
    }
}

impl El {
    /// This element as a script argument.
    pub fn arg(&self) -> Value {
        json!({ ELEMENT: self.0 })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session ends Chromium; then chromedriver itself.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), raw("DELETE", &url, None)).await;
            });
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn raw(method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .map_err(|_| "webdriver timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// axe-core, installed by scripts/test-deps (npm) under the target directory.
pub fn axe_source() -> String {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| super::repo().join("target"));
    let path = target.join("browser-deps/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core missing at {}: {e}; run scripts/test-deps",
            path.display()
        )
    })
}
