//! The dashboard in a real headless Chromium (the distribution's package,
//! driven through chromedriver) against a running rolegate: the whole
//! user-management story end to end, each screen checked by axe-core and
//! photographed. `UPDATE_SCREENSHOTS=1` copies the pictures into docs/.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::support::webdriver::{axe_source, Browser};
use crate::support::{tok, Echo, Options, Sidecar};

const PASSWORD: &str = "admin password 1";
/// A hostile email and role description: they must show up as text.
const EVIL_EMAIL: &str = "<img src=x onerror=window.__xss=1>@evil.test";
const EVIL_DESCRIPTION: &str = "<script>window.__xss=2</script><img src=x onerror=window.__xss=3>";

struct Story {
    sc: Sidecar,
    b: Browser,
    page: String,
    shots: PathBuf,
    axe: String,
    _echo: Echo,
}

impl Story {
    /// Check the screen with axe-core (no serious or critical violation),
    /// check nothing injected ran, and photograph it.
    async fn screen(&self, name: &str) {
        self.b
            .execute(&format!("{};return true;", self.axe), json!([]))
            .await;
        let v = self
            .b
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations\
                   .filter(v => v.impact === 'serious' || v.impact === 'critical')\
                   .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target)}))),\
                   e => done([{id: 'axe-error', help: String(e)}]));",
                json!([]),
            )
            .await;
        assert_eq!(v, json!([]), "axe on `{name}`: {v:#}");
        let xss = self
            .b
            .execute("return window.__xss === undefined", json!([]))
            .await;
        assert_eq!(xss, true, "injected markup ran on `{name}`");
        self.b
            .screenshot(&self.shots.join(format!("{name}.png")))
            .await;
    }

    async fn sign_in(&self, email: &str, password: &str) {
        self.b.goto(&format!("{}#/login", self.page)).await;
        self.b
            .wait("//h1[normalize-space()='Sign in to User Management']")
            .await;
        self.b.fill("Email", email).await;
        self.b.fill("Password", password).await;
        self.b
            .click_on("//button[normalize-space()='Sign in']")
            .await;
        self.b
            .wait("//h1[normalize-space()='Organisation overview']")
            .await;
    }

    async fn sign_out(&self) {
        self.b
            .click_on("//button[normalize-space()='Sign out']")
            .await;
        self.b
            .wait("//h1[normalize-space()='Sign in to User Management']")
            .await;
    }

    async fn api(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> crate::support::Reply {
        self.sc
            .send(
                method,
                path,
                &[tok(token)],
                body.map(|b| b.to_string()).as_deref(),
            )
            .await
    }

    async fn login_api(&self, email: &str, password: &str) -> String {
        let r = self
            .sc
            .send(
                "POST",
                "/user/validate",
                &[],
                Some(&json!({"email": email, "password": password}).to_string()),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["data"]["token"].as_str().unwrap().to_owned()
    }

    /// The signed-in token of the page (sessionStorage, the only place it lives).
    async fn page_token(&self) -> String {
        let v = self
            .b
            .execute(
                "return JSON.parse(sessionStorage.getItem('rolegate.session')).token",
                json!([]),
            )
            .await;
        v.as_str().unwrap().to_owned()
    }
}

async fn with_password(
    sc: &Sidecar,
    org: &rolegate::store::CreatedOrg,
    email: &str,
    role: &str,
) -> rolegate::store::User {
    let u = sc.user(org, email, role).await;
    let hash = rolegate::authn::password::hash(PASSWORD.as_bytes()).unwrap();
    sc.state.store.set_password(&u.id, &hash).await.unwrap();
    u
}

/// A custom role whose description carries markup (roles.toml is the admin's
/// file; the page must still show it as text).
fn policies_with_custom_role() -> std::sync::Arc<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    crate::support::copy_dir(&crate::support::repo().join("policies"), &policies);
    crate::support::copy_dir(
        &crate::support::repo().join("schema"),
        &dir.path().join("schema"),
    );
    let mut roles = std::fs::read_to_string(policies.join("roles.toml")).unwrap();
    roles.push_str(&format!(
        "\n[roles.streamWatcher]\ntitle = \"Watcher\"\ndescription = {}\naudiences = [\"bintu\"]\n",
        toml_string(EVIL_DESCRIPTION)
    ));
    std::fs::write(policies.join("roles.toml"), roles).unwrap();
    std::fs::write(
        policies.join("streamWatcher.cedar"),
        "@id(\"streamWatcher\")\npermit (\n  principal in Role::\"streamWatcher\",\n  action == Action::\"listStreams\",\n  resource\n);\n",
    )
    .unwrap();
    std::sync::Arc::new(dir)
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_end_to_end_in_a_real_browser() {
    let echo = Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        dir: Some(policies_with_custom_role()),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let admin = with_password(&sc, &org, "admin@acme.test", "nanoAdmin").await;
    let _operator = with_password(&sc, &org, "operator@acme.test", "nanoUser").await;
    let _observer = with_password(&sc, &org, "observer@acme.test", "nanoReadOnly").await;
    let evil = sc.user(&org, EVIL_EMAIL, "streamWatcher").await;
    let page = format!("{}/_rolegate/dashboard/index.html", sc.base);
    let shots = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::support::repo().join("target"))
        .join("screenshots");
    let b = Browser::start().await;
    b.set_script_timeout(30_000).await;
    let s = Story {
        sc,
        b,
        page,
        shots: shots.clone(),
        axe: axe_source(),
        _echo: echo,
    };
    let b = &s.b;

    // --- the admin signs in --------------------------------------------------
    b.goto(&s.page).await;
    b.wait("//h1[normalize-space()='Sign in to User Management']")
        .await;
    s.screen("login").await;
    // By keyboard alone: the heading has focus, Tab reaches the fields, Enter submits.
    const TAB: &str = "\u{E004}";
    const ENTER: &str = "\u{E007}";
    const ESCAPE: &str = "\u{E00C}";
    assert_eq!(b.focused("el.tagName").await, "H1");
    b.press(TAB).await;
    assert_eq!(b.focused("el.type").await, "email");
    b.press(&format!("admin@acme.test{TAB}{PASSWORD}{ENTER}"))
        .await;
    b.wait("//h1[normalize-space()='Organisation overview']")
        .await;
    // Users per role, from the live catalogue (the custom role included).
    b.wait("//h2[normalize-space()='4 users, by role']").await;
    b.wait("//a[@href='#/users?role=streamWatcher']/span[@class='count'][.='1']")
        .await;
    b.wait("//a[@href='#/users?role=nanoAdmin']/span[@class='count'][.='1']")
        .await;
    s.screen("overview").await;

    // --- the user list, with the hostile email as text -------------------------
    b.click_on("//nav//a[normalize-space()='Users']").await;
    b.wait("//h1[normalize-space()='User Management']").await;
    let cell = b
        .wait(&format!("//td//a[normalize-space()=\"{EVIL_EMAIL}\"]"))
        .await;
    assert_eq!(b.text(&cell).await, EVIL_EMAIL);
    assert_eq!(
        b.all("//main//img").await.len(),
        0,
        "no element was made from data"
    );
    s.screen("users").await;
    // Filter by role (custom roles too) and search by email.
    b.choose("Filter by role", "streamWatcher").await;
    b.wait("//p[normalize-space()='1 of 1 users shown']").await;
    b.choose("Filter by role", "").await;
    b.wait("//p[normalize-space()='4 of 4 users shown']").await;
    b.fill("Search by email", "observer").await;
    b.wait("//p[normalize-space()='1 of 4 users shown']").await;
    // A dialog by keyboard: Enter opens it with focus inside, Escape closes it
    // and gives focus back to the button that opened it.
    let reset = b
        .wait("//button[@aria-label='Reset User Token of observer@acme.test']")
        .await;
    b.execute("arguments[0].focus()", json!([reset.arg()]))
        .await;
    b.press(ENTER).await;
    b.wait("//dialog[@open]").await;
    assert_eq!(b.focused("el.closest('dialog') !== null").await, true);
    b.press(ESCAPE).await;
    b.wait_gone("//dialog").await;
    assert_eq!(
        b.focused("el.getAttribute('aria-label')").await,
        "Reset User Token of observer@acme.test"
    );

    // The custom role's description, as text, on that user's page.
    b.goto(&format!("{}#/users/{}", s.page, evil.id)).await;
    let d = b.wait("//dd[@data-field='description']").await;
    assert_eq!(b.text(&d).await, EVIL_DESCRIPTION);
    assert_eq!(b.all("//main//img | //main//script").await.len(), 0);
    let xss = b
        .execute("return window.__xss === undefined", json!([]))
        .await;
    assert_eq!(xss, true);

    // --- invite a user -----------------------------------------------------------
    b.click_on("//nav//a[normalize-space()='Invite New User']")
        .await;
    b.wait("//h1[normalize-space()='Invite New User']").await;
    b.choose("Role of the invitee", "nanoUser").await;
    b.wait("//h2[normalize-space()='Permission overview: nanoUser']")
        .await;
    s.screen("invite").await;
    b.click_on("//button[normalize-space()='Generate New Invite Token']")
        .await;
    let link_field = b.wait("//dialog//input[contains(@class,'mono')]").await;
    let link = b
        .property(&link_field, "value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        link.starts_with(&s.page) && link.contains("#/accept/inv_"),
        "{link}"
    );
    s.screen("invite-link").await;
    b.click_on("//dialog//button[normalize-space()='Done']")
        .await;

    // --- the invitee accepts through the link and signs in ------------------------
    b.goto(&link).await;
    b.wait("//h1[normalize-space()='Accept your invitation']")
        .await;
    s.screen("accept").await;
    b.fill("Email", "new@acme.test").await;
    b.fill("Password (at least 10 characters)", "invitee password")
        .await;
    b.click_on("//button[normalize-space()='Join the organisation']")
        .await;
    b.wait("//div[normalize-space()='You joined the organisation as nanoUser.']")
        .await;
    b.click_on("//a[normalize-space()='Sign in']").await;
    let email = b.field("Email").await;
    assert_eq!(b.property(&email, "value").await, "new@acme.test");
    b.fill("Password", "invitee password").await;
    b.click_on("//button[normalize-space()='Sign in']").await;
    b.wait("//h1[normalize-space()='Organisation overview']")
        .await;
    let invitee_token = s.page_token().await;
    let invitee =
        s.sc.state
            .store
            .user_by_email("new@acme.test")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(invitee.role, "nanoUser");
    // A nanoUser sees the list read-only: no changing controls offered.
    b.click_on("//nav//a[normalize-space()='Users']").await;
    b.wait("//p[contains(normalize-space(),'You see this list read-only')]")
        .await;
    assert!(b
        .all("//button[normalize-space()='Delete User' or normalize-space()='Reset User Token']")
        .await
        .is_empty());
    assert!(b
        .all("//nav//a[normalize-space()='Invite New User' or normalize-space()='Audit']")
        .await
        .is_empty());
    s.screen("users-nanoUser").await;
    // Their token works for what nanoUser may do.
    assert_eq!(
        s.api("POST", "/stream", &invitee_token, Some(json!({})))
            .await
            .status,
        200
    );
    s.sign_out().await;

    // --- the admin changes their role: the diff is the policies' ------------------
    s.sign_in("admin@acme.test", PASSWORD).await;
    let admin_token = s.page_token().await;
    b.goto(&format!("{}#/users/{}", s.page, invitee.id)).await;
    b.wait("//h1[normalize-space()='User overview']").await;
    b.click_on("//summary[starts-with(normalize-space(),'Permission Overview')]")
        .await;
    s.screen("user").await;
    b.click_on("//button[normalize-space()='Update Permission']")
        .await;
    b.choose("New role", "nanoReadOnly").await;
    b.wait("//h3[starts-with(normalize-space(),'Loses')]").await;
    let roles = s
        .api("GET", "/permission/list", &admin_token, None)
        .await
        .json();
    let perms = |name: &str| -> Vec<String> {
        roles["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };
    let (from, to) = (perms("nanoUser"), perms("nanoReadOnly"));
    let want_lose: Vec<String> = from.iter().filter(|p| !to.contains(p)).cloned().collect();
    let want_gain: Vec<String> = to.iter().filter(|p| !from.contains(p)).cloned().collect();
    assert!(!want_lose.is_empty());
    let listed = |cls: &'static str| async move {
        let mut out = Vec::new();
        for el in b
            .all(&format!("//dialog//ul[contains(@class,'{cls}')]/li"))
            .await
        {
            out.push(b.text(&el).await);
        }
        out
    };
    assert_eq!(listed("lose").await, want_lose);
    assert_eq!(listed("gain").await, want_gain);
    b.wait("//dialog//div[contains(normalize-space(),'All API (bintu) tokens of this user stop working at once')]").await;
    s.screen("update-permission").await;
    b.click_on("//dialog//button[normalize-space()='Confirm']")
        .await;
    // The new state at once.
    b.wait("//dd[@data-field='permission']/span[normalize-space()='nanoReadOnly']")
        .await;
    // The invitee's old token is dead; a fresh one is judged as nanoReadOnly.
    assert_eq!(
        s.api("GET", "/stream", &invitee_token, None).await.status,
        401
    );
    let fresh = s.login_api("new@acme.test", "invitee password").await;
    assert_eq!(
        s.api("POST", "/stream", &fresh, Some(json!({})))
            .await
            .status,
        403
    );
    assert_eq!(s.api("GET", "/stream", &fresh, None).await.status, 200);

    // --- reset their token ----------------------------------------------------------
    let key_before = b.text(&b.wait("//dd[@data-field='tokenKey']").await).await;
    b.click_on("//button[normalize-space()='Reset User Token']")
        .await;
    b.wait("//dialog//div[contains(normalize-space(),'Playback tokens issued by this user remain valid until their expiration date.')]").await;
    s.screen("reset-token").await;
    b.click_on("//dialog//button[normalize-space()='Confirm']")
        .await;
    b.wait(&format!(
        "//dd[@data-field='tokenKey'][normalize-space()!='{key_before}']"
    ))
    .await;
    assert_eq!(s.api("GET", "/stream", &fresh, None).await.status, 401);

    // --- a password reset link, used on its page --------------------------------------
    b.click_on("//button[normalize-space()='Password reset link']")
        .await;
    b.click_on("//dialog//button[normalize-space()='Create link']")
        .await;
    let link_field = b.wait("//dialog//input[contains(@class,'mono')]").await;
    let reset_link = b
        .property(&link_field, "value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reset_link.contains("#/reset/pwr_"), "{reset_link}");
    b.click_on("//dialog//button[normalize-space()='Done']")
        .await;
    b.goto(&reset_link).await;
    b.wait("//h1[normalize-space()='Set a new password']").await;
    s.screen("password-reset").await;
    b.fill(
        "New password (at least 10 characters)",
        "brand new password",
    )
    .await;
    b.fill("New password, again", "brand new password").await;
    b.click_on("//button[normalize-space()='Set password']")
        .await;
    b.wait("//h1[normalize-space()='Password set']").await;
    s.login_api("new@acme.test", "brand new password").await;

    // --- delete them, with the typed confirmation ---------------------------------------
    b.goto(&format!("{}#/users/{}", s.page, invitee.id)).await;
    b.click_on("//button[normalize-space()='Delete User']")
        .await;
    let confirm = b
        .wait("//dialog//button[normalize-space()='Delete User']")
        .await;
    assert!(
        !b.enabled(&confirm).await,
        "deleting needs the typed email first"
    );
    b.fill("Type new@acme.test to confirm", "new@acme.test")
        .await;
    assert!(b.enabled(&confirm).await);
    s.screen("delete-user").await;
    b.click(&confirm).await;
    b.wait("//h1[normalize-space()='User Management']").await;
    b.wait_gone("//td//a[normalize-space()='new@acme.test']")
        .await;
    assert!(s.sc.state.store.user(&invitee.id).await.unwrap().is_none());

    // --- the last-nanoAdmin guard, shown clearly ------------------------------------------
    b.goto(&format!("{}#/users/{}", s.page, admin.id)).await;
    b.click_on("//button[normalize-space()='Update Permission']")
        .await;
    b.choose("New role", "nanoUser").await;
    b.click_on("//dialog//button[normalize-space()='Confirm']")
        .await;
    b.wait(
        "//dialog//div[@role='alert'][contains(., 'last nanoAdmin cannot be demoted or deleted')]",
    )
    .await;
    s.screen("last-admin").await;
    b.click_on("//dialog//button[normalize-space()='Cancel']")
        .await;
    assert_eq!(
        s.sc.state
            .store
            .user(&admin.id)
            .await
            .unwrap()
            .unwrap()
            .role,
        "nanoAdmin"
    );

    // --- the audit view lists each step, filterable ----------------------------------------
    b.click_on("//nav//a[normalize-space()='Audit']").await;
    b.wait("//h1[normalize-space()='Audit']").await;
    for action in [
        "inviteUser",
        "acceptInvite",
        "editUserRole",
        "resetUserToken",
        "createPasswordReset",
        "resetPassword",
        "deleteUser",
    ] {
        b.wait(&format!("//td/code[normalize-space()='{action}']"))
            .await;
    }
    s.screen("audit").await;
    b.choose("Action", "deleteUser").await;
    b.wait("//p[normalize-space()='1 records']").await;
    b.choose("Action", "").await;
    b.choose("User (who was changed)", &admin.id).await;
    b.wait("//td/code[normalize-space()='editUserRole']").await;
    assert!(b
        .all("//td/code[normalize-space()='deleteUser']")
        .await
        .is_empty());

    // --- the policy playground ---------------------------------------------------------------
    b.click_on("//nav//a[normalize-space()='Policy playground']")
        .await;
    b.choose("Caller", "role:nanoReadOnly").await;
    b.choose("Method", "DELETE").await;
    let path = b.field("Path").await;
    b.execute("arguments[0].value = ''", json!([path.arg()]))
        .await;
    b.type_into(&path, "/stream/s1").await;
    b.click_on("//button[normalize-space()='Explain']").await;
    b.wait("//dd[@data-field='decision'][normalize-space()='deny']")
        .await;
    s.screen("playground").await;

    // --- a phone-sized screen --------------------------------------------------------------------
    b.set_size(390, 844).await;
    b.click_on("//nav//a[normalize-space()='Users']").await;
    b.wait("//td//a[normalize-space()='observer@acme.test']")
        .await;
    s.screen("users-phone").await;
    b.set_size(1280, 900).await;
    // The page's token dies (its tokenKey renewed elsewhere): the next call
    // is a 401, the token is forgotten and the sign-in page says why.
    let own = s.page_token().await;
    let r = s
        .api(
            "PUT",
            "/user/tokenkey",
            &own,
            Some(json!({"userId": admin.id})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    b.click_on("//nav//a[normalize-space()='Audit']").await;
    b.wait("//div[contains(normalize-space(),'Your session ended')]")
        .await;
    b.wait("//h1[normalize-space()='Sign in to User Management']")
        .await;
    let kept = b
        .execute(
            "return sessionStorage.getItem('rolegate.session')",
            json!([]),
        )
        .await;
    assert_eq!(kept, Value::Null, "the dead token is forgotten");

    // --- a nanoReadOnly session: told why, offered nothing it may not use ---------------------------
    s.sign_in("observer@acme.test", PASSWORD).await;
    b.wait("//div[contains(normalize-space(),'Your role, nanoReadOnly, may not list the users')]")
        .await;
    assert!(b.all("//nav//a[normalize-space()='Users' or normalize-space()='Audit' or normalize-space()='Invite New User']").await.is_empty());
    s.screen("overview-nanoReadOnly").await;
    b.goto(&format!("{}#/users", s.page)).await;
    b.wait("//div[contains(normalize-space(),'may not list the users of the organisation')]")
        .await;

    // The token lived in sessionStorage only: no cookie was ever set.
    let cookies = b.execute("return document.cookie", json!([])).await;
    assert_eq!(cookies, "");

    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let docs = crate::support::repo().join("docs/dashboard");
        std::fs::create_dir_all(&docs).unwrap();
        for e in std::fs::read_dir(&shots).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, docs.join(p.file_name().unwrap())).unwrap();
        }
    }
}
