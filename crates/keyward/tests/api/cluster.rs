//! Several nodes on one database (SPEC §6 across nodes): two in-process nodes sharing one
//! database and one master key — PostgreSQL on the PostgreSQL run, one SQLite file otherwise —
//! and the emails any of them sent.

use crate::database::{postgres_server, TestDatabase};
use crate::helpers::*;
use keyward_server::config::{MasterKeySource, Settings};
use keyward_server::crypto::MasterKey;
use keyward_server::mail::SentEmail;
use secrecy::SecretString;
use std::time::Duration;

pub async fn spawn_nodes(n: usize, configure: impl Fn(&mut Settings)) -> Vec<TestApp> {
    let database = postgres_server().map(|server| TestDatabase::create(&server));
    let shared = tempfile::tempdir().unwrap();
    let url = match &database {
        Some(database) => database.url.clone(),
        None => format!("sqlite://{}/keyward.db", shared.path().display()),
    };
    let key = MasterKey::generate().to_base64();
    let mut nodes = Vec::new();
    let mut database = database;
    let mut shared = Some(shared);
    for _ in 0..n {
        let dir = shared
            .take()
            .unwrap_or_else(|| tempfile::tempdir().unwrap());
        let mut settings = Settings::for_tests(dir.path());
        settings.ip_rate_limit_per_minute = 100_000;
        settings.database_url = SecretString::from(url.clone());
        settings.master_key = MasterKeySource::Inline(SecretString::from(key.clone()));
        configure(&mut settings);
        // The first node keeps the database (and the SQLite folder) alive.
        nodes.push(spawn_configured(settings, dir, database.take()).await);
    }
    nodes
}

/// Every email any node sent to `to` (whichever node's outbox worker claimed it).
pub fn emails_to(nodes: &[TestApp], to: &str) -> Vec<SentEmail> {
    nodes.iter().flat_map(|n| n.emails_to(to)).collect()
}

/// A partner onboarded on the first node, whichever node's outbox sent its email.
pub async fn onboarded_on(nodes: &[TestApp], code: &str, email: &str) -> Partner {
    let before = emails_to(nodes, email).len();
    assert_eq!(nodes[0].onboard(code, email).await.status(), 200);
    let emails = wait_for(nodes, email, before + 1).await;
    nodes[0]
        .redeem(&link_in_text(&emails[before].text), code)
        .await
}

/// The link of the regeneration email to `to`, from whichever node sent it, once `count`
/// emails reached `to` (nodes' mailboxes are not in order with each other; an email may
/// arrive twice, as delivery is at least once).
pub async fn regeneration_link(nodes: &[TestApp], to: &str, count: usize) -> String {
    wait_for(nodes, to, count).await;
    let link = eventually(Duration::from_secs(15), || {
        std::future::ready(
            emails_to(nodes, to)
                .iter()
                .rev()
                .find(|e| e.subject.starts_with("Regenerate"))
                .map(|email| link_in_text(&email.text)),
        )
    })
    .await;
    link.unwrap_or_else(|| panic!("no regeneration email to {to}"))
}

/// Waits until `count` emails reached `to`, from whichever node sent them.
pub async fn wait_for(nodes: &[TestApp], to: &str, count: usize) -> Vec<SentEmail> {
    let emails = eventually(Duration::from_secs(15), || {
        std::future::ready(Some(emails_to(nodes, to)).filter(|e| e.len() >= count))
    })
    .await;
    emails.unwrap_or_else(|| {
        panic!(
            "expected {count} email(s) to {to}, got {}",
            emails_to(nodes, to).len()
        )
    })
}
