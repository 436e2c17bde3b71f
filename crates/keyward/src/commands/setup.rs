//! Helping operators set keyward up: `keyward check-config` and `keyward send-test-email`.

use anyhow::Context as _;
use keyward_server::config::Settings;
use keyward_server::mail::{templates, EmailKind, Mailer};
use keyward_server::startup::open_store;
use secrecy::ExposeSecret;

/// A URL as it may be printed: the password in its user part and any `password` (or `pass`,
/// `secret`) query parameter replaced by `***`. Text that is not a URL is hidden whole.
fn without_passwords(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return "*** (not a URL)".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let secret = matches!(
                k.to_ascii_lowercase().as_str(),
                "password" | "pass" | "secret" | "sslpassword"
            );
            (
                k.into_owned(),
                if secret {
                    "***".to_owned()
                } else {
                    v.into_owned()
                },
            )
        })
        .collect();
    if !pairs.is_empty() {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

pub async fn check_config(settings: &Settings) -> anyhow::Result<()> {
    let shown_database = without_passwords(settings.database_url.expose_secret());
    println!("listen            {}", settings.listen);
    println!("public_url        {}", settings.public_url);
    println!("data_dir          {}", settings.data_dir.display());
    println!("database_url      {shown_database}");
    println!(
        "master_key        {}",
        match &settings.master_key {
            keyward_server::config::MasterKeySource::Inline(_) =>
                "from KEYWARD_MASTER_KEY".to_owned(),
            keyward_server::config::MasterKeySource::File(p) => format!("file {}", p.display()),
        }
    );
    println!(
        "mail              {}",
        match &settings.smtp {
            Some(smtp) => format!("SMTP {}", without_passwords(smtp.url.expose_secret())),
            None => format!("files in {}", settings.data_dir.join("mailbox").display()),
        }
    );
    println!("mail_from         {}", settings.mail_from);
    println!(
        "link lifetimes    onboarding {} s, regeneration {} s",
        settings.onboarding_link_ttl.num_seconds(),
        settings.regeneration_link_ttl.num_seconds()
    );
    println!(
        "windows           freshness {} s, replay {} s",
        settings.freshness_window.num_seconds(),
        settings.replay_window.num_seconds()
    );
    println!(
        "rate limits       {} requests/min per IP, {} links/hour per partner",
        settings.ip_rate_limit_per_minute, settings.partner_links_per_hour
    );
    for (name, value) in settings.features() {
        println!("{name:<17} {value}");
    }
    let store = open_store(settings).await?;
    store.ping().await.context("the database does not answer")?;
    println!("database          reachable ({:?})", store.backend());
    let has_check = store
        .meta(keyward_server::flows::master_key::MASTER_KEY_CHECK)
        .await
        .unwrap_or_default()
        .is_some();
    if has_check {
        keyward_server::flows::master_key::cipher_for(settings, &store).await?;
        println!("master key        matches this database");
    }
    Ok(())
}

pub async fn send_test_email(settings: &Settings, to: &str) -> anyhow::Result<()> {
    let mailer = Mailer::from_settings(settings)?;
    let context = minijinja_context(settings);
    let email = templates::render(EmailKind::RegeneratedNotice, &context)?;
    let email = templates::RenderedEmail {
        subject: format!("keyward test email: {}", email.subject),
        ..email
    };
    mailer
        .send(&uuid::Uuid::now_v7().to_string(), to, &email)
        .await
        .context("the test email was not sent")?;
    println!("test email sent to {to} via {}", mailer.describe());
    Ok(())
}

fn minijinja_context(settings: &Settings) -> serde_json::Value {
    serde_json::json!({
        "partner_code": "TEST", "regenerated_at": chrono::Utc::now().to_rfc3339(), "ip": "127.0.0.1",
        "public_url": settings.public_url.as_str(),
    })
}
