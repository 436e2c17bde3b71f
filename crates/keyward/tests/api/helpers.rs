//! Drives the real server: `spawn_app()` starts it on 127.0.0.1:0 with a fresh SQLite file in
//! a temporary folder (cleaned up afterwards), emails caught in memory, and a clock tests can
//! move.

use keyward_core::signature::{sign_message, MessageForm, SignatureKey, SignedBody};
use keyward_core::SecretKey;
use keyward_server::clock::ManualClock;
use keyward_server::config::Settings;
use keyward_server::mail::{MemoryMailbox, SentEmail, Transport};
use keyward_server::state::AppState;
use keyward_server::{Application, Overrides};
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use std::time::Duration;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub use keyward_core::wire::paths::{ONBOARD, REDEEM, REGENERATE, WHOAMI};

pub struct TestApp {
    pub address: String,
    /// The internal listener (verify API, metrics).
    pub internal_address: String,
    pub mailbox: MemoryMailbox,
    pub clock: ManualClock,
    pub state: AppState,
    pub client: reqwest::Client,
    pub dir: TempDir,
    stop: CancellationToken,
    /// On the PostgreSQL run, the test's own database (dropped after the app stops).
    pub database: Option<crate::database::TestDatabase>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Credentials as a partner holds them.
#[derive(Debug, Clone)]
pub struct Partner {
    pub code: String,
    pub partner_id: String,
    pub public_key: String,
    pub secret_key: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let mut settings = Settings::for_tests(dir.path());
    // Tests send many requests from one address; the limit has its own test.
    settings.ip_rate_limit_per_minute = 100_000;
    let database = crate::database::postgres_server()
        .map(|server| crate::database::TestDatabase::create(&server));
    if let Some(database) = &database {
        settings.database_url = secrecy::SecretString::from(database.url.clone());
    }
    configure(&mut settings);
    spawn_configured(settings, dir, database).await
}

/// Starts an app on `settings` as they are (several nodes share a database this way).
pub async fn spawn_configured(
    settings: Settings,
    dir: TempDir,
    database: Option<crate::database::TestDatabase>,
) -> TestApp {
    let mailbox = MemoryMailbox::default();
    let clock = ManualClock::default();
    let app = Application::build_with(
        settings,
        Overrides {
            clock: Some(std::sync::Arc::new(clock.clone())),
            transport: Some(Transport::Memory(mailbox.clone())),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("the app did not start: {e:#}"));
    let address = format!("http://127.0.0.1:{}", app.port());
    let internal_address = format!(
        "http://127.0.0.1:{}",
        app.internal_port()
            .expect("tests run with the internal listener on")
    );
    let state = app.state().clone();
    let stop = app.stop_token();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        internal_address,
        mailbox,
        clock,
        state,
        client: reqwest::Client::new(),
        dir,
        stop,
        database,
    }
}

impl TestApp {
    pub async fn post_raw(
        &self,
        path: &str,
        body: &str,
        authorization: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_raw(path, &body.to_string(), None).await
    }

    pub async fn onboard(&self, code: &str, email: &str) -> reqwest::Response {
        self.post_json(
            ONBOARD,
            &serde_json::json!({"partner_code": code, "email": email}),
        )
        .await
    }

    /// `onboard` with owned arguments, for futures that outlive a loop's borrows.
    pub async fn onboard_owned(&self, code: String, email: String) -> u16 {
        self.onboard(&code, &email).await.status().as_u16()
    }

    /// Emails delivered to `to` so far.
    pub fn emails_to(&self, to: &str) -> Vec<SentEmail> {
        self.mailbox
            .emails()
            .into_iter()
            .filter(|e| e.to.eq_ignore_ascii_case(to))
            .collect()
    }

    /// Waits until `count` emails reached `to` (the outbox sends in the background).
    pub async fn wait_for_emails(&self, to: &str, count: usize) -> Vec<SentEmail> {
        crate::cluster::wait_for(std::slice::from_ref(self), to, count).await
    }

    /// The link in the newest email to `to`, after waiting for the `count`-th email.
    pub async fn link_in_email(&self, to: &str, count: usize) -> String {
        let emails = self.wait_for_emails(to, count).await;
        let email = &emails[count - 1];
        let link = link_in_text(&email.text);
        assert!(
            link.starts_with(&format!("{}/link/", self.state.settings.public_url)),
            "the link does not start with the public URL"
        );
        // The HTML part carries the same link (with `/` escaped as an entity, valid in an href).
        assert!(
            email.html.contains(&token_of(&link)),
            "the HTML part carries the same link"
        );
        link
    }

    /// Onboards a partner and redeems its link through the API.
    pub async fn onboarded_partner(&self, code: &str, email: &str) -> Partner {
        let before = self.emails_to(email).len();
        assert_eq!(self.onboard(code, email).await.status(), 200);
        let link = self.link_in_email(email, before + 1).await;
        self.redeem(&link, code).await
    }

    pub async fn redeem(&self, link: &str, code: &str) -> Partner {
        let token = link.rsplit('/').next().unwrap_or_default();
        let response = self
            .post_json(
                REDEEM,
                &serde_json::json!({"token": token, "partner_code": code}),
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let data = &body["data"];
        Partner {
            code: code.to_owned(),
            partner_id: data["partner_id"].as_str().unwrap().to_owned(),
            public_key: data["public_key"].as_str().unwrap().to_owned(),
            secret_key: data["secret_key"].as_str().unwrap().to_owned(),
        }
    }

    /// Sends `body` (a JSON object) signed with `secret` to `path`, with `public` as bearer.
    pub async fn signed(
        &self,
        path: &str,
        body: &Value,
        public: &str,
        secret: &str,
    ) -> reqwest::Response {
        let raw = sign(&body.to_string(), secret);
        self.post_raw(path, &raw, Some(&format!("Bearer {public}")))
            .await
    }

    /// A new live service token for the verify API.
    pub async fn service_token(&self, name: &str) -> String {
        let token = keyward_server::flows::service_tokens::create(
            &self.state.store,
            name,
            "tests",
            self.state.clock.now(),
            self.state.settings.key_cache,
        )
        .await
        .unwrap();
        secrecy::ExposeSecret::expose_secret(&token).to_owned()
    }

    /// Runs the operator CLI (`keyward ARGS…`, a real process) on this app's store and master
    /// key.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .env("KEYWARD_DATA_DIR", self.dir.path())
            .env(
                "KEYWARD_DATABASE_URL",
                secrecy::ExposeSecret::expose_secret(&self.state.settings.database_url),
            )
            .output()
            .unwrap()
    }

    /// `GET /metrics` on the internal listener, as text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.internal_address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `POST /internal/v1/verify` on the internal listener, with `token` as bearer.
    pub async fn verify(&self, token: Option<&str>, request: &Value) -> reqwest::Response {
        let mut call = self
            .client
            .post(format!("{}/internal/v1/verify", self.internal_address))
            .json(request);
        if let Some(token) = token {
            call = call.bearer_auth(token);
        }
        call.send().await.unwrap()
    }

    /// Waits until this node's background work is done: every request that was answered before
    /// its work (lost keys, invite-only onboarding) handled, and no email due (each one sent,
    /// dead-lettered or scheduled for later). After it, a test may assert that nothing happened.
    pub async fn settle(&self) {
        settle(std::slice::from_ref(self)).await;
    }

    async fn is_settled(&self) -> bool {
        let slots = self.state.lost_keys_slots.available_permits();
        let now = keyward_server::clock::millis(self.state.clock.now());
        let backlog = self.state.store.outbox_backlog(now).await;
        slots == keyward_server::state::LOST_KEYS_SLOTS && backlog.is_ok_and(|b| b.due == 0)
    }

    pub async fn whoami(&self, partner: &Partner) -> reqwest::Response {
        self.signed(
            WHOAMI,
            &serde_json::json!({}),
            &partner.public_key,
            &partner.secret_key,
        )
        .await
    }

    pub async fn regenerate(&self, partner: &Partner, email: &str) -> reqwest::Response {
        let body =
            serde_json::json!({"email": email, "partner_code": partner.code, "nonce": uuid_like()});
        self.signed(REGENERATE, &body, &partner.public_key, &partner.secret_key)
            .await
    }
}

/// The one polling helper: awaits `check` every 25 ms until it gives `Some`, for at most
/// `limit`. A check that needs no waiting of its own returns `std::future::ready(..)`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until every node's background work is done (see [`TestApp::settle`]): checked on all
/// nodes in one pass, as one node's work may queue an email that another sends.
pub async fn settle(nodes: &[TestApp]) {
    let settled = eventually(Duration::from_secs(20), || async move {
        for node in nodes {
            if !node.is_settled().await {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "the background work did not finish within 20 s"
    );
}

/// Marks a test that cannot run here because an outside program or privilege is missing.
/// With `KEYWARD_STRICT_TESTS` (CI) that is a failure. Elsewhere the skip is written to the real
/// stderr, not libtest's captured output (where a skipped test would show only as `ok`), and
/// recorded for the run's summary (`tests/skipped.rs`, which cargo runs after this binary).
pub fn skip(why: &str) {
    assert!(
        std::env::var_os("KEYWARD_STRICT_TESTS").is_none(),
        "CI must not skip: {why}"
    );
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    let recorded = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skips_file())
        .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
    if let Err(e) = recorded {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("(could not record the skip for the summary: {e})\n").as_bytes(),
        );
    }
}

/// Where this `cargo test` run's skips are recorded: one file per run, named after the cargo
/// process that runs every test binary (the PostgreSQL run, a child of this binary, is told
/// the file through `KEYWARD_SKIPS_FILE`).
pub fn skips_file() -> std::path::PathBuf {
    std::env::var_os("KEYWARD_SKIPS_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "keyward-skips-{}.txt",
                std::os::unix::process::parent_id()
            ))
        })
}

/// The operator the tests act as.
pub const OPERATOR: keyward_server::flows::admin::Operator<'static> =
    keyward_server::flows::admin::Operator {
        name: "test",
        reason: None,
    };

/// A value that makes two otherwise identical bodies differ.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "n{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Signs a JSON object text as sent, adding `signature`.
pub fn sign(raw: &str, secret: &str) -> String {
    let secret = SecretKey::parse_or_legacy(secret).unwrap_or_else(|e| panic!("secret key: {e}"));
    keyward_core::signature::sign_body(raw.as_bytes(), &secret, MessageForm::AsSent)
        .unwrap_or_else(|e| panic!("sign: {e}"))
}

pub fn hmac_hex(secret: &str, message: &str) -> String {
    let secret = SecretKey::parse_or_legacy(secret).unwrap_or_else(|e| panic!("secret key: {e}"));
    sign_message(&secret, message)
}

pub fn link_in_text(text: &str) -> String {
    let re = regex::Regex::new(r"https?://[^\s]+/link/[A-Za-z0-9_-]{43}")
        .unwrap_or_else(|e| panic!("{e}"));
    re.find(text)
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| panic!("no link in an email of {} characters", text.len()))
}

pub fn token_of(link: &str) -> String {
    link.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Status, `code` and the whole body of an error answer; checks the envelope's shape.
pub async fn error_of(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("not JSON: {e}"));
    assert_eq!(body["success"], false, "{body}");
    // `data` is null except where SPEC §3.4b gives the partner something to debug with.
    match body["code"].as_str() {
        Some("invalid_signature") => {
            for form in ["as_sent", "canonical"] {
                let hash = body["data"]["message_sha256"][form].as_str().unwrap_or("");
                assert!(
                    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{body}"
                );
            }
        }
        Some("stale_request") => {
            assert!(body["data"]["server_time_ms"].is_i64(), "{body}");
            assert!(body["data"]["skew_ms"].is_i64(), "{body}");
        }
        // At the gateway and the verify API: what the route needs and what the key holds;
        // on the key-management routes (a restricted key): null.
        Some("insufficient_scope") if !body["data"].is_null() => {
            assert!(body["data"]["required"].is_array(), "{body}");
            assert!(body["data"]["granted"].is_array(), "{body}");
        }
        _ => assert!(body["data"].is_null(), "{body}"),
    }
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let code = body["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code in {body}"))
        .to_owned();
    (status, code, body)
}

#[allow(dead_code)]
pub fn body_verifies(raw: &str, secret: &str) -> bool {
    let secret = SecretKey::parse(secret).unwrap_or_else(|e| panic!("{e}"));
    SignedBody::parse(raw.as_bytes()).is_ok_and(|b| b.verify(&SignatureKey::new(&secret)))
}

/// How many times each status occurs: `tally(&statuses) == [(200, 1), (410, 19)].into()`.
pub fn tally(statuses: &[u16]) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(*status).or_default() += 1;
    }
    counts
}
