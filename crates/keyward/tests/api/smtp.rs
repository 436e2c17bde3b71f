//! A real SMTP server process (Python's aiosmtpd) receives the emails when KEYWARD_SMTP_URL
//! points at it; one that is down at first gets them once it comes up, while the request
//! that queued them had already succeeded.

use crate::helpers::*;
use crate::process::{aiosmtpd_available, eventually, free_port, SmtpServer};
use std::time::Duration;

#[tokio::test]
async fn emails_reach_a_real_smtp_server() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(free_port(), dir.path()).await;
    let app = spawn_smtp_app(smtp.port).await;
    assert_eq!(app.onboard("SMTP", "s@smtp.example").await.status(), 200);
    let received = eventually(Duration::from_secs(15), || {
        Some(smtp.received()).filter(|r| !r.is_empty())
    })
    .await
    .expect("an email at the SMTP server");
    assert!(received[0].0.contains("s@smtp.example"));
    let link = link_in_text(&received[0].1);
    assert!(link.starts_with(app.state.settings.public_url.as_str()));
    let partner = app.redeem(&link, "SMTP").await;
    assert_eq!(app.whoami(&partner).await.status(), 200);
}

#[tokio::test]
async fn an_smtp_server_that_is_down_at_first_gets_the_email_when_it_comes_up() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = spawn_smtp_app(port).await;

    // Nothing listens yet: the request still succeeds at once.
    assert_eq!(app.onboard("LATE", "late@smtp.example").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = app.state.store.outbox_stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.sent),
        (1, 0),
        "queued, not lost, not sent"
    );

    let smtp = SmtpServer::start(port, dir.path()).await;
    let received = eventually(Duration::from_secs(40), || {
        Some(smtp.received()).filter(|r| !r.is_empty())
    })
    .await
    .expect("the email after the server came up");
    assert!(received[0].0.contains("late@smtp.example"));
    // The sender records the delivery just after the SMTP server has the message.
    let mut stats = app.state.store.outbox_stats().await.unwrap();
    for _ in 0..100 {
        if stats.sent == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stats = app.state.store.outbox_stats().await.unwrap();
    }
    assert_eq!((stats.pending, stats.sent), (0, 1));
}

/// An app whose emails go by SMTP (the real transport) to 127.0.0.1:`port`, with a real clock
/// so that retries come due.
async fn spawn_smtp_app(port: u16) -> SmtpApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = keyward_server::config::Settings::for_tests(dir.path());
    settings.smtp_url = Some(secrecy::SecretString::from(format!(
        "smtp://127.0.0.1:{port}"
    )));
    let app = keyward_server::Application::build(settings).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let stop = app.stop_token();
    tokio::spawn(app.run_until_stopped());
    SmtpApp {
        address,
        state,
        client: reqwest::Client::new(),
        _dir: dir,
        stop,
    }
}

struct SmtpApp {
    address: String,
    state: keyward_server::state::AppState,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for SmtpApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SmtpApp {
    async fn onboard(&self, code: &str, email: &str) -> reqwest::Response {
        self.client
            .post(format!("{}{ONBOARD}", self.address))
            .json(&serde_json::json!({"partner_code": code, "email": email}))
            .send()
            .await
            .unwrap()
    }

    async fn redeem(&self, link: &str, code: &str) -> Partner {
        let body: serde_json::Value = self
            .client
            .post(format!("{}{REDEEM}", self.address))
            .json(&serde_json::json!({"token": token_of(link), "partner_code": code}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Partner {
            code: code.into(),
            partner_id: body["data"]["partner_id"].as_str().unwrap().into(),
            public_key: body["data"]["public_key"].as_str().unwrap().into(),
            secret_key: body["data"]["secret_key"].as_str().unwrap().into(),
        }
    }

    async fn whoami(&self, partner: &Partner) -> reqwest::Response {
        self.client
            .post(format!("{}{WHOAMI}", self.address))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", partner.public_key))
            .body(sign("{}", &partner.secret_key))
            .send()
            .await
            .unwrap()
    }
}
