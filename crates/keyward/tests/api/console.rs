//! The operators' console (SPEC §10.1) against a real OpenID Connect provider: `oidc-provider`
//! (e2e/oidc-provider.mjs; `npm ci` in e2e/ first), driven over HTTP like a browser would, form
//! by form; then the browser journey in headless Chromium (e2e/console-journey.mjs).

use crate::helpers::*;
use regex::Regex;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};

pub const CLIENT_ID: &str = "keyward-console";
pub const CLIENT_SECRET: &str = "console-secret-for-tests";

/// The provider, stopped when dropped.
pub struct IdentityProvider {
    child: Child,
    pub issuer: String,
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `oidc-provider` with keyward's client registered for `console_url`'s callback;
/// `None` (a recorded skip, a failure in CI) when it is not installed.
pub fn start_provider(console_url: &str) -> Option<IdentityProvider> {
    start_provider_with(console_url, &[])
}

/// The same, with the provider's own settings (`CLAIMS_IN_USERINFO`, `AUTH_METHOD`).
pub fn start_provider_with(console_url: &str, env: &[(&str, &str)]) -> Option<IdentityProvider> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e");
    if !dir.join("node_modules/oidc-provider").exists() {
        skip(&format!(
            "the console's tests need Node.js and oidc-provider: run `npm ci` in {}",
            dir.display()
        ));
        return None;
    }
    let port = free_port();
    let mut child = Command::new("node")
        .arg(dir.join("oidc-provider.mjs"))
        .args([
            &port.to_string(),
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("{console_url}/console/callback"),
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Drained for as long as it runs: a closed pipe would kill it at its next line.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    assert!(
        line.starts_with("ready "),
        "the provider did not start: {line}"
    );
    Some(IdentityProvider {
        child,
        issuer: line.trim_start_matches("ready ").trim().to_owned(),
    })
}

/// An app with the console on, its internal listener on a port known before it starts (the
/// console's URL, registered at the provider, names it), and the provider.
pub async fn console_app() -> Option<(TestApp, IdentityProvider)> {
    let port = free_port();
    let console_url = format!("http://127.0.0.1:{port}");
    let provider = start_provider(&console_url)?;
    let settings = console_settings(&console_url, &provider.issuer);
    let app = spawn_app_with(|s| {
        s.internal_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
        s.console = Some(settings);
    })
    .await;
    Some((app, provider))
}

fn console_settings(console_url: &str, issuer: &str) -> keyward_server::config::ConsoleSettings {
    keyward_server::config::ConsoleSettings {
        url: url::Url::parse(console_url).unwrap(),
        issuer: issuer.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        client_secret: secrecy::SecretString::from(CLIENT_SECRET.to_owned()),
        roles_claim: "groups".to_owned(),
        groups: [
            vec!["keyward-admins".to_owned()],
            vec!["keyward-operators".to_owned()],
            vec!["keyward-viewers".to_owned()],
        ],
    }
}

/// A cookie-keeping client that follows nothing by itself.
pub struct Browser {
    http: reqwest::Client,
    jar: BTreeMap<String, String>,
    /// Every `Set-Cookie` received, as sent.
    pub set_cookies: Vec<String>,
}

pub struct Page {
    pub url: String,
    pub status: u16,
    pub body: String,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: BTreeMap::new(),
            set_cookies: Vec::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            self.set_cookies.push(text.to_owned());
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.jar.remove(name.trim());
            } else {
                self.jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    pub async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let request = if self.jar.is_empty() {
            request
        } else {
            request.header(COOKIE, self.cookie_header())
        };
        let response = request.send().await.unwrap();
        self.keep_cookies(&response);
        response
    }

    /// GET, following redirects, to the first answer that is not one.
    pub async fn follow(&mut self, url: &str) -> Page {
        let mut url = url::Url::parse(url).unwrap();
        for _ in 0..20 {
            let response = self.send(self.http.get(url.clone())).await;
            if response.status().is_redirection() {
                let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
                url = url.join(&location).unwrap();
                continue;
            }
            return Page {
                url: url.to_string(),
                status: response.status().as_u16(),
                body: response.text().await.unwrap(),
            };
        }
        panic!("more than 20 redirects");
    }

    /// POSTs a form; returns the answer (not followed).
    pub async fn post(&mut self, url: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let request = self.http.post(url).form(fields);
        self.send(request).await
    }

    /// POSTs a form and follows the redirect that answers it.
    pub async fn submit(&mut self, url: &str, fields: &[(&str, &str)]) -> Page {
        let response = self.post(url, fields).await;
        if response.status().is_redirection() {
            let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
            let next = url::Url::parse(url).unwrap().join(&location).unwrap();
            return self.follow(next.as_str()).await;
        }
        Page {
            url: url.to_owned(),
            status: response.status().as_u16(),
            body: response.text().await.unwrap(),
        }
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.jar.contains_key(name)
    }
}

/// The provider's form on a page: its action and hidden fields, and whether it asks for a
/// login (its development login form, then its consent form; both post to the interaction).
struct ProviderForm {
    action: String,
    hidden: Vec<(String, String)>,
    asks_login: bool,
}

fn provider_form(page: &Page) -> Option<ProviderForm> {
    let form = Regex::new(r#"(?s)<form[^>]*action="([^"]+)"[^>]*method="post"[^>]*>(.*?)</form>"#)
        .unwrap();
    let hidden = Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)""#).unwrap();
    let found = form.captures(&page.body)?;
    let action = url::Url::parse(&page.url)
        .unwrap()
        .join(&found[1])
        .unwrap()
        .to_string();
    let inner = &found[2];
    Some(ProviderForm {
        action,
        hidden: hidden
            .captures_iter(inner)
            .map(|c| (c[1].to_owned(), c[2].to_owned()))
            .collect(),
        asks_login: inner.contains(r#"name="login""#),
    })
}

/// Submits the provider's form on `page` as `email`; the answer, not followed.
async fn submit_provider_form(
    browser: &mut Browser,
    page: &Page,
    email: &str,
) -> Option<(String, reqwest::Response)> {
    let form = provider_form(page)?;
    let mut fields: Vec<(&str, &str)> = form
        .hidden
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if form.asks_login {
        fields.extend([("login", email), ("password", "any")]);
    }
    let response = browser.post(&form.action, &fields).await;
    Some((form.action, response))
}

/// Signs in at the provider as `email` (its login form, then its consent form) from the login
/// page it shows; returns the page the flow lands on (the console's callback, when it works).
pub async fn sign_in_at_provider(browser: &mut Browser, mut page: Page, email: &str) -> Page {
    for _ in 0..4 {
        let Some((action, response)) = submit_provider_form(browser, &page, email).await else {
            return page;
        };
        let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
        let next = url::Url::parse(&action).unwrap().join(&location).unwrap();
        page = browser.follow(next.as_str()).await;
    }
    page
}

/// A browser signed in to the console as `email`; the console's partners page.
pub async fn signed_in(app: &TestApp, email: &str) -> (Browser, Page) {
    let mut browser = Browser::new();
    let start = browser
        .follow(&format!("{}/console/partners", app.internal_address))
        .await;
    let landed = sign_in_at_provider(&mut browser, start, email).await;
    assert_eq!(landed.status, 200, "{}: {}", landed.url, landed.body);
    assert!(
        landed.url.contains("/console/callback"),
        "{}: {}",
        landed.url,
        landed.body
    );
    assert!(
        landed.body.contains("Continue to the console"),
        "{}",
        landed.body
    );
    let page = browser
        .follow(&format!("{}/console/partners", app.internal_address))
        .await;
    (browser, page)
}

pub fn csrf_of(page: &Page) -> String {
    Regex::new(r#"name="csrf" value="([^"]+)""#)
        .unwrap()
        .captures(&page.body)
        .unwrap_or_else(|| panic!("no CSRF token in {}", page.body))[1]
        .to_owned()
}

async fn status_of(app: &TestApp, code: &str) -> String {
    let out = app.cli(&["partner", "show", code, "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    shown["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_signs_in_and_does_what_it_may_audited_as_its_email() {
    let Some((app, _provider)) = console_app().await else {
        return;
    };
    let partner = app
        .onboarded_partner("CONSOLE1", "ops@console1.example")
        .await;

    // An operator finds the partner and suspends it with a reason.
    let (mut ops, page) = signed_in(&app, "ops@example.com").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("ops@example.com · operator"),
        "{}",
        page.body
    );
    let found = ops
        .follow(&format!(
            "{}/console/partners?q=console1",
            app.internal_address
        ))
        .await;
    assert!(found.body.contains("CONSOLE1"), "{}", found.body);
    let by_email = ops
        .follow(&format!(
            "{}/console/partners?q=ops%40console1",
            app.internal_address
        ))
        .await;
    assert!(by_email.body.contains("CONSOLE1"));
    let detail = ops
        .follow(&format!(
            "{}/console/partners/CONSOLE1",
            app.internal_address
        ))
        .await;
    let csrf = csrf_of(&detail);
    let suspend = format!("{}/console/partners/CONSOLE1/suspend", app.internal_address);
    // No reason: refused, nothing changed.
    let page = ops
        .submit(&suspend, &[("csrf", &csrf), ("reason", "")])
        .await;
    assert_eq!(page.status, 409);
    assert!(page.body.contains("Give a reason"));
    assert_eq!(status_of(&app, "CONSOLE1").await, "active");
    let page = ops
        .submit(&suspend, &[("csrf", &csrf), ("reason", "chargeback fraud")])
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Suspended"), "{}", page.body);
    assert_eq!(status_of(&app, "CONSOLE1").await, "suspended");
    let (_, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!(code, "partner_suspended", "in force when the page answered");
    let audit = ops
        .follow(&format!(
            "{}/console/audit?partner=CONSOLE1",
            app.internal_address
        ))
        .await;
    assert!(audit.body.contains("partner_suspended"), "{}", audit.body);
    assert!(
        audit.body.contains("operator:ops@example.com"),
        "{}",
        audit.body
    );
    assert!(audit.body.contains("chargeback fraud"));

    // The CLI's other partner actions: an invitation, and a key found in public.
    let page = ops
        .submit(
            &format!("{}/console/partners/invite", app.internal_address),
            &[
                ("csrf", &csrf),
                ("code", "INVITED1"),
                ("email", "ops@invited1.example"),
                ("reason", "new deal"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page
        .body
        .contains("Invited: the onboarding link was emailed"));
    assert_eq!(status_of(&app, "INVITED1").await, "pending");
    app.wait_for_emails("ops@invited1.example", 1).await;
    let leaked = app
        .onboarded_partner("LEAKED1", "ops@leaked1.example")
        .await;
    let page = ops
        .submit(
            &format!("{}/console/leaks", app.internal_address),
            &[
                ("csrf", &csrf),
                ("token", &leaked.secret_key),
                ("url", "https://gist.example/x"),
            ],
        )
        .await;
    assert!(
        page.body
            .contains("Revoked on every node; LEAKED1 was emailed"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(&leaked.secret_key),
        "the key is not shown back"
    );
    let (_, code, _) = error_of(app.whoami(&leaked).await).await;
    assert_eq!(code, "revoked_key");
    // A partner moved in with a legacy key is marked as such.
    let rows = r#"{"partner_code":"OLDKEYS1","email":"ops@oldkeys1.example","public_key":"pk_partner_OldKeys0001","secret_key":"sk_partner_OldKeys0002"}"#;
    let file = app.dir.path().join("console-import.jsonl");
    std::fs::write(&file, rows).unwrap();
    let imported = app.cli(&["partner", "import", file.to_str().unwrap()]);
    assert!(imported.status.success(), "{imported:?}");
    let page = ops
        .follow(&format!(
            "{}/console/partners/OLDKEYS1",
            app.internal_address
        ))
        .await;
    assert!(
        page.body.contains(r#"class="tag""#) && page.body.contains("legacy"),
        "{}",
        page.body
    );

    // A viewer sees, and its POST (with a valid token) is refused and changes nothing.
    let (mut viewer, page) = signed_in(&app, "viewer@example.com").await;
    assert!(page.body.contains("viewer@example.com · viewer"));
    let detail = viewer
        .follow(&format!(
            "{}/console/partners/CONSOLE1",
            app.internal_address
        ))
        .await;
    assert!(
        !detail.body.contains("/activate\""),
        "a viewer is offered no action"
    );
    let activate = format!(
        "{}/console/partners/CONSOLE1/activate",
        app.internal_address
    );
    let page = viewer
        .submit(&activate, &[("csrf", &csrf_of(&detail)), ("reason", "x")])
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(status_of(&app, "CONSOLE1").await, "suspended");

    // An admin creates a service token, shown once, that the verify API takes at once.
    let (mut admin, _) = signed_in(&app, "admin@example.com").await;
    let tokens = admin
        .follow(&format!("{}/console/service-tokens", app.internal_address))
        .await;
    let page = admin
        .submit(
            &format!("{}/console/service-tokens", app.internal_address),
            &[("csrf", &csrf_of(&tokens)), ("name", "payouts")],
        )
        .await;
    let token = Regex::new(r#"id="new-token" [^>]*value="(kw_service_[A-Za-z0-9]+)""#)
        .unwrap()
        .captures(&page.body)
        .unwrap_or_else(|| panic!("{}", page.body))[1]
        .to_owned();
    let verify = app
        .verify(
            Some(&token),
            &serde_json::json!({"authorization": "Bearer nope", "body": "{}"}),
        )
        .await;
    assert_ne!(verify.status(), 401, "the new token is taken");
    // An endpoint added, then removed with a reason: both audited, in one change each.
    let hooks_url = format!("{}/console/webhooks", app.internal_address);
    let hooks = admin.follow(&hooks_url).await;
    let page = admin
        .submit(
            &hooks_url,
            &[
                ("csrf", &csrf_of(&hooks)),
                ("url", "http://127.0.0.1:9/hooks"),
                ("events", ""),
            ],
        )
        .await;
    assert!(page.body.contains(r#"id="new-secret""#), "{}", page.body);
    let id = Regex::new(r#"name="id" value="(ep_[0-9a-f]+)""#)
        .unwrap()
        .captures(&page.body)
        .unwrap()[1]
        .to_owned();
    let page = admin
        .submit(
            &format!("{hooks_url}/remove"),
            &[
                ("csrf", &csrf_of(&page)),
                ("id", &id),
                ("reason", "retired system"),
            ],
        )
        .await;
    assert!(
        page.body.contains("The endpoint is removed"),
        "{}",
        page.body
    );
    let audit = String::from_utf8_lossy(&app.cli(&["audit", "--json"]).stdout).into_owned();
    assert!(audit.contains("webhook_added") && audit.contains("webhook_removed"));
    assert!(
        audit.contains("reason: retired system") && audit.contains("operator:admin@example.com")
    );
    // An operator may not.
    let tokens = ops
        .follow(&format!("{}/console/service-tokens", app.internal_address))
        .await;
    let page = ops
        .submit(
            &format!("{}/console/service-tokens", app.internal_address),
            &[("csrf", &csrf_of(&tokens)), ("name", "sneaky")],
        )
        .await;
    assert_eq!(page.status, 403);

    // Someone in none of the groups is refused at the door.
    let mut nobody = Browser::new();
    let start = nobody
        .follow(&format!("{}/console/partners", app.internal_address))
        .await;
    let page = sign_in_at_provider(&mut nobody, start, "nobody@example.com").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("none of the groups"));
    assert!(!nobody.has_cookie("keyward_console"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_state_a_replayed_callback_and_a_form_without_its_token_are_refused() {
    let Some((app, _provider)) = console_app().await else {
        return;
    };
    app.onboarded_partner("CONSOLE2", "ops@console2.example")
        .await;

    // Without a session: a page sends to the login; a POST is refused.
    let mut stranger = Browser::new();
    let response = stranger
        .send(
            stranger
                .http
                .get(format!("{}/console/partners", app.internal_address)),
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/console/login");
    let response = stranger
        .post(
            &format!("{}/console/partners/CONSOLE2/suspend", app.internal_address),
            &[("reason", "x")],
        )
        .await;
    assert_eq!(response.status(), 403);
    // Nothing of the console on the public listener.
    let public = reqwest::get(format!("{}/console/partners", app.address))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);

    // A login run to the provider's redirect back, stopped there.
    let mut browser = Browser::new();
    let start = browser
        .follow(&format!("{}/console/login", app.internal_address))
        .await;
    // Through the provider's forms, stopping at its redirect to the console's callback.
    let mut page = start;
    let callback = 'flow: loop {
        let (action, response) = submit_provider_form(&mut browser, &page, "ops@example.com")
            .await
            .expect("a form of the provider");
        let mut next = url::Url::parse(&action)
            .unwrap()
            .join(response.headers()[LOCATION].to_str().unwrap())
            .unwrap();
        loop {
            if next.path() == "/console/callback" {
                break 'flow next;
            }
            let response = browser.send(browser.http.get(next.clone())).await;
            if !response.status().is_redirection() {
                page = Page {
                    url: next.to_string(),
                    status: response.status().as_u16(),
                    body: response.text().await.unwrap(),
                };
                break;
            }
            next = next
                .join(response.headers()[LOCATION].to_str().unwrap())
                .unwrap();
        }
    };
    let state: String = callback
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();

    // A tampered state: refused, no session.
    let mut tampered = callback.clone();
    let bad_state = format!("{}x", state);
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                bad_state.clone()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    let page = browser.follow(tampered.as_str()).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(!browser.has_cookie("keyward_console"));

    // The real callback signs in, once; replayed, it is refused.
    let page = browser.follow(callback.as_str()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(browser.has_cookie("keyward_console"));
    let mut replay = Browser::new();
    replay
        .jar
        .insert("keyward_console_login".into(), state.clone());
    let page = replay.follow(callback.as_str()).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(!replay.has_cookie("keyward_console"));

    // A form without its CSRF token, or with another session's, changes nothing.
    let suspend = format!("{}/console/partners/CONSOLE2/suspend", app.internal_address);
    let page = browser.submit(&suspend, &[("reason", "no token")]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    let page = browser
        .submit(&suspend, &[("csrf", "forged"), ("reason", "bad token")])
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(status_of(&app, "CONSOLE2").await, "active");

    // Logout ends the session on the server, not just in the browser.
    let home = browser
        .follow(&format!("{}/console/partners", app.internal_address))
        .await;
    let session = browser.jar["keyward_console"].clone();
    let page = browser
        .submit(
            &format!("{}/console/logout", app.internal_address),
            &[("csrf", &csrf_of(&home))],
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Signed out"));
    let mut old = Browser::new();
    old.jar.insert("keyward_console".into(), session);
    let response = old
        .send(
            stranger
                .http
                .get(format!("{}/console/partners", app.internal_address)),
        )
        .await;
    assert_eq!(response.status(), 303, "the old cookie opens nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_cookie_is_http_only_and_strict_and_pages_carry_the_security_headers() {
    let Some((app, _provider)) = console_app().await else {
        return;
    };
    let (browser, _) = signed_in(&app, "viewer@example.com").await;
    let session = browser
        .set_cookies
        .iter()
        .find(|c| c.starts_with("keyward_console="))
        .expect("the callback set the session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Secure"), "http console: {session}");
    let login = browser
        .set_cookies
        .iter()
        .find(|c| c.starts_with("keyward_console_login="))
        .unwrap();
    assert!(
        login.contains("HttpOnly") && login.contains("SameSite=Lax"),
        "{login}"
    );
    let page = reqwest::Client::new()
        .get(format!("{}/console/partners", app.internal_address))
        .header(COOKIE, browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'") && policy.contains("form-action 'self'"));
}

/// The browser journey (e2e/console-journey.mjs) in headless Chromium, against this
/// app and the provider; its screenshots land in target/e2e/.
#[tokio::test(flavor = "multi_thread")]
async fn the_browser_journey_of_each_role_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !std::path::Path::new(&chromium).exists() {
        skip(&format!(
            "the console's browser journey needs Chromium at {chromium} (apt-get install chromium), or CHROMIUM=path"
        ));
        return;
    }
    let Some((app, _provider)) = console_app().await else {
        return;
    };
    let partner = app
        .onboarded_partner("JOURNEY", "ops@journey.example")
        .await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out_dir = root.join("target/e2e");
    let console_url = app.state.settings.console.as_ref().unwrap().url.to_string();
    let journey = tokio::process::Command::new("node")
        .arg(root.join("e2e/console-journey.mjs"))
        .env("CONSOLE_URL", console_url.trim_end_matches('/'))
        .env("PARTNER_CODE", "JOURNEY")
        .env("OUT_DIR", &out_dir)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .unwrap();
    assert!(
        journey.status.success(),
        "{}{}",
        String::from_utf8_lossy(&journey.stdout),
        String::from_utf8_lossy(&journey.stderr)
    );
    for shot in [
        "desktop-operator-acted",
        "mobile-operator-acted",
        "desktop-viewer-partner",
    ] {
        assert!(
            out_dir.join(format!("console-{shot}.png")).exists(),
            "{shot}"
        );
    }
    // What the browser did is what the service did: suspended, then active again, by the
    // operator's email.
    assert_eq!(status_of(&app, "JOURNEY").await, "active");
    assert_eq!(app.whoami(&partner).await.status(), 200);
    let audit =
        String::from_utf8_lossy(&app.cli(&["audit", "--partner", "JOURNEY", "--json"]).stdout)
            .into_owned();
    for event in ["partner_suspended", "partner_activated"] {
        assert!(audit.contains(event), "{audit}");
    }
    assert!(audit.contains("operator:ops@example.com") && audit.contains("e2e: suspected fraud"));
}

#[tokio::test(flavor = "multi_thread")]
async fn any_node_serves_any_session_and_logout_ends_it_everywhere() {
    let port = free_port();
    let console_url = format!("http://127.0.0.1:{port}");
    let Some(provider) = start_provider(&console_url) else {
        return;
    };
    let settings = console_settings(&console_url, &provider.issuer);
    // The first node listens where the console's URL points (where a load balancer would).
    let first = std::sync::atomic::AtomicBool::new(true);
    let nodes = crate::cluster::spawn_nodes(2, |s| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            s.internal_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
        }
        s.console = Some(settings.clone());
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut browser, _) = signed_in(a, "ops@example.com").await;
    // The session made on node a opens node b.
    let page = browser
        .follow(&format!("{}/console/partners", b.internal_address))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("ops@example.com · operator"));
    // Logged out on node b, it opens neither.
    let session = browser.jar["keyward_console"].clone();
    let page = browser
        .submit(
            &format!("{}/console/logout", b.internal_address),
            &[("csrf", &csrf_of(&page))],
        )
        .await;
    assert!(page.body.contains("Signed out"));
    for node in [a, b] {
        let mut old = Browser::new();
        old.jar.insert("keyward_console".into(), session.clone());
        let response = old
            .send(
                old.http
                    .get(format!("{}/console/partners", node.internal_address)),
            )
            .await;
        assert_eq!(response.status(), 303);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_ends_after_30_idle_minutes_and_after_8_hours_whatever_its_use() {
    let Some((app, _provider)) = console_app().await else {
        return;
    };
    let partners = format!("{}/console/partners", app.internal_address);
    let opens = |browser: &mut Browser| {
        let request = browser.http.get(&partners);
        let cookie = browser.cookie_header();
        async move {
            request
                .header(COOKIE, cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Used every 25 minutes, a session lives on; idle 31 minutes, it is over.
    let (mut idle, _) = signed_in(&app, "viewer@example.com").await;
    app.clock.advance(chrono::TimeDelta::minutes(25));
    assert_eq!(opens(&mut idle).await, 200);
    app.clock.advance(chrono::TimeDelta::minutes(31));
    assert_eq!(opens(&mut idle).await, 303, "idle for 31 minutes");
    // However busy, 8 hours after the login it is over.
    let (mut busy, _) = signed_in(&app, "ops@example.com").await;
    for _ in 0..19 {
        app.clock.advance(chrono::TimeDelta::minutes(25));
        assert_eq!(opens(&mut busy).await, 200);
    }
    app.clock.advance(chrono::TimeDelta::minutes(25));
    assert_eq!(opens(&mut busy).await, 303, "8 hours after the login");
}

/// A provider that keeps the email and groups out of the ID token (they are in its userinfo
/// answer), with keyward's client registered for `client_secret_post`, and an issuer configured
/// with a trailing slash its discovery document does not have: the login still works.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_with_the_claims_in_userinfo_and_a_post_client_signs_in_too() {
    let port = free_port();
    let console_url = format!("http://127.0.0.1:{port}");
    let env = [
        ("CLAIMS_IN_USERINFO", "1"),
        ("AUTH_METHOD", "client_secret_post"),
    ];
    let Some(provider) = start_provider_with(&console_url, &env) else {
        return;
    };
    // The issuer as people copy it, with a slash the provider's own issuer does not have.
    let settings = console_settings(&console_url, &format!("{}/", provider.issuer));
    let app = spawn_app_with(|s| {
        s.internal_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
        s.console = Some(settings);
    })
    .await;
    let (_, page) = signed_in(&app, "ops@example.com").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("ops@example.com · operator"),
        "{}",
        page.body
    );
}
