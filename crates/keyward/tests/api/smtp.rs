//! A real SMTP server process (Python's aiosmtpd) receives the emails when KEYWARD_SMTP_URL
//! points at it; one that is down at first gets them once it comes up, while the request
//! that queued them had already succeeded.

use crate::helpers::*;
use crate::process::{aiosmtpd_available, free_port, SmtpServer};
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
        std::future::ready(Some(smtp.received()).filter(|r| !r.is_empty()))
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
        std::future::ready(Some(smtp.received()).filter(|r| !r.is_empty()))
    })
    .await
    .expect("the email after the server came up");
    assert!(received[0].0.contains("late@smtp.example"));
    // The sender records the delivery just after the SMTP server has the message.
    let stats = eventually(Duration::from_secs(5), || async {
        let stats = app.state.store.outbox_stats().await.unwrap();
        (stats.sent == 1).then_some(stats)
    })
    .await
    .expect("the delivery recorded");
    assert_eq!((stats.pending, stats.sent), (0, 1));
}

/// An app whose emails go by SMTP (the real transport) to 127.0.0.1:`port`, with a real clock
/// so that retries come due.
async fn spawn_smtp_app(port: u16) -> SmtpApp {
    spawn_smtp_app_with(port, |_| {}).await
}

async fn spawn_smtp_app_with(
    port: u16,
    configure: impl FnOnce(&mut keyward_server::config::Settings),
) -> SmtpApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = keyward_server::config::Settings::for_tests(dir.path());
    let url = secrecy::SecretString::from(format!("smtp://127.0.0.1:{port}"));
    settings.smtp = Some(keyward_server::mail::SmtpSettings::parse(url).unwrap());
    settings.ip_rate_limit_per_minute = 100_000;
    configure(&mut settings);
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

/// The raw messages in the SMTP server's Maildir.
fn raw_messages(smtp: &SmtpServer) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(smtp.maildir.join("new")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect()
}

fn header<'a>(mail: &'a mailparse::ParsedMail<'a>, name: &str) -> Option<String> {
    use mailparse::MailHeaderMap;
    mail.headers.get_first_value(name)
}

#[tokio::test]
async fn many_emails_go_out_concurrently_once_each_with_our_headers() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(free_port(), dir.path()).await;
    let app = spawn_smtp_app_with(smtp.port, |s| {
        s.smtp_concurrency = 8;
        s.mail_from = "keyward <no-reply@keys.exchange.example>".parse().unwrap();
    })
    .await;
    let n = 120;
    let onboardings = (0..n).map(|i| {
        let app = &app;
        async move {
            app.onboard(&format!("MANY{i}"), &format!("m{i}@many.example"))
                .await
        }
    });
    for response in futures::future::join_all(onboardings).await {
        assert_eq!(response.status(), 200);
    }
    let all = eventually(Duration::from_secs(30), || {
        std::future::ready(Some(raw_messages(&smtp)).filter(|r| r.len() >= n))
    })
    .await
    .expect("every email at the SMTP server");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = if raw_messages(&smtp).len() > all.len() {
        raw_messages(&smtp)
    } else {
        all
    };
    assert_eq!(all.len(), n, "each email once");
    let mut ids = std::collections::HashSet::new();
    for raw in &all {
        let mail = mailparse::parse_mail(raw).unwrap();
        let id = header(&mail, "Message-ID").unwrap();
        assert!(id.ends_with("@keys.exchange.example>"), "{id}");
        assert!(ids.insert(id), "a Message-ID repeated");
        assert_eq!(
            header(&mail, "Auto-Submitted").as_deref(),
            Some("auto-generated")
        );
    }
    let stats = app.state.store.outbox_stats().await.unwrap();
    assert_eq!(stats.pending, 0);
}

/// Whether Python's dkimpy is installed (an independent DKIM verifier). `.ci/run` installs
/// it; there a missing one is a failure.
fn dkimpy_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import dkim"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("the DKIM test needs Python's dkimpy: pip install dkimpy");
    }
    ok
}

/// Verifies `raw` with dkimpy, the public key supplied locally instead of from DNS.
fn dkimpy_verifies(raw: &[u8], selector: &str, domain: &str, public_der_base64: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let message = dir.path().join("message.eml");
    std::fs::write(&message, raw).unwrap();
    let script = format!(
        r#"
import dkim, sys
record = b"v=DKIM1; k=rsa; p={public_der_base64}"
def dns(name, timeout=5):
    return record if name == b"{selector}._domainkey.{domain}." else None
sys.exit(0 if dkim.verify(open(sys.argv[1], "rb").read(), dnsfunc=dns) else 1)
"#
    );
    std::process::Command::new("python3")
        .args(["-c", &script])
        .arg(&message)
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn dkim_signatures_verify_with_an_independent_verifier() {
    if !aiosmtpd_available() || !dkimpy_available() || !crate::docs::available("openssl", "version")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dkim.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let public = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    use base64::Engine;
    let public = base64::engine::general_purpose::STANDARD.encode(public.stdout);

    let smtp = SmtpServer::start(free_port(), dir.path()).await;
    let key_file = key.clone();
    let app = spawn_smtp_app_with(smtp.port, move |s| {
        s.mail_from = "keyward <no-reply@keys.exchange.example>".parse().unwrap();
        s.dkim = Some(keyward_server::config::DkimSettings {
            key_file,
            selector: "mail2026".into(),
        });
    })
    .await;
    assert_eq!(app.onboard("DKIM", "d@dkim.example").await.status(), 200);
    let raw = eventually(Duration::from_secs(15), || {
        std::future::ready(raw_messages(&smtp).into_iter().next())
    })
    .await
    .expect("the signed email");
    let mail = mailparse::parse_mail(&raw).unwrap();
    let signature = header(&mail, "DKIM-Signature").expect("a DKIM-Signature header");
    assert!(signature.contains("d=keys.exchange.example"), "{signature}");
    assert!(signature.contains("s=mail2026"), "{signature}");
    assert!(dkimpy_verifies(
        &raw,
        "mail2026",
        "keys.exchange.example",
        &public
    ));
    // The check can fail: a changed body, or another key, does not verify.
    let text = String::from_utf8(raw.clone()).unwrap();
    let tampered = text.replacen("partner", "partnex", 1);
    assert_ne!(tampered, text);
    assert!(!dkimpy_verifies(
        tampered.as_bytes(),
        "mail2026",
        "keys.exchange.example",
        &public
    ));
    let other = public.replacen('A', "B", 1);
    assert!(!dkimpy_verifies(
        &raw,
        "mail2026",
        "keys.exchange.example",
        &other
    ));
}
