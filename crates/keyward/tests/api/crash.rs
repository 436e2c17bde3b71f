//! Crash safety: `kill -9` of a real `keyward serve` in the middle of a load of onboardings,
//! regenerations and redemptions loses nothing. After a restart on the same database:
//! every active partner has exactly one active key pair, every used link produced exactly one
//! key pair, every committed link's email is sent, and no email exists for a change that did
//! not commit. Runs on SQLite, and on PostgreSQL in the PostgreSQL run.

use crate::database::{postgres_server, TestDatabase};
use crate::helpers::*;
use crate::process::{emails_in, ServerProcess};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WORKERS: usize = 6;
const KILL_AFTER: usize = 30; // completed operations before the crash

#[derive(Clone)]
struct Held {
    email: String,
    code: String,
    public: String,
    secret: String,
}

/// The link in the newest email to `to` that is not in `seen`.
async fn new_link(mailbox: &Path, to: &str, seen: &HashSet<String>) -> Option<String> {
    let mailbox = mailbox.to_path_buf();
    eventually(Duration::from_secs(5), || {
        std::future::ready(
            emails_in(&mailbox)
                .into_iter()
                .filter(|(recipient, _)| recipient.contains(to))
                .filter_map(|(_, text)| {
                    regex::Regex::new(r"https?://\S+/link/[A-Za-z0-9_-]{43}")
                        .unwrap()
                        .find(&text)
                        .map(|m| m.as_str().to_owned())
                })
                .find(|link| !seen.contains(link)),
        )
    })
    .await
}

async fn redeem(
    client: &reqwest::Client,
    address: &str,
    link: &str,
    code: &str,
) -> Option<(String, String)> {
    let body: Value = client
        .post(format!("{address}{REDEEM}"))
        .json(&json!({"token": token_of(link), "partner_code": code}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some((
        body["data"]["public_key"].as_str()?.to_owned(),
        body["data"]["secret_key"].as_str()?.to_owned(),
    ))
}

/// One load worker: onboard a partner and redeem its link, then regenerate and redeem,
/// until the server goes away.
async fn worker(id: usize, address: String, mailbox: std::path::PathBuf, done: Arc<AtomicUsize>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut seen = HashSet::new();
    for round in 0..20 {
        let code = format!("CRASH{id}R{round}");
        let email = format!("w{id}r{round}@crash.example");
        let onboard = client
            .post(format!("{address}{ONBOARD}"))
            .json(&json!({"partner_code": code, "email": email}))
            .send()
            .await;
        if onboard.is_err() {
            return;
        }
        let Some(link) = new_link(&mailbox, &email, &seen).await else {
            return;
        };
        seen.insert(link.clone());
        let Some((public, secret)) = redeem(&client, &address, &link, &code).await else {
            return;
        };
        done.fetch_add(1, Ordering::SeqCst);
        let mut held = Held {
            email,
            code,
            public,
            secret,
        };
        for _ in 0..2 {
            let body = sign(
                &json!({"email": held.email, "partner_code": held.code, "nonce": uuid_like()})
                    .to_string(),
                &held.secret,
            );
            let sent = client
                .post(format!("{address}{REGENERATE}"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", held.public))
                .body(body)
                .send()
                .await;
            if sent.is_err() {
                return;
            }
            let Some(link) = new_link(&mailbox, &held.email, &seen).await else {
                return;
            };
            seen.insert(link.clone());
            let Some((public, secret)) = redeem(&client, &address, &link, &held.code).await else {
                return;
            };
            held = Held {
                public,
                secret,
                ..held
            };
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn a_kill_9_in_the_middle_of_a_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let database = postgres_server().map(|server| TestDatabase::create(&server));
    let database_url = match &database {
        Some(database) => database.url.clone(),
        None => format!("sqlite://{}/keyward.db", dir.path().display()),
    };
    let env = [
        ("KEYWARD_DATABASE_URL", database_url.as_str()),
        ("KEYWARD_IP_RATE_LIMIT_PER_MINUTE", "100000"),
    ];
    let mailbox = dir.path().join("mailbox");

    // Load, then the crash.
    let mut server = ServerProcess::start(dir.path(), &env);
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            tokio::spawn(worker(
                id,
                server.address.clone(),
                mailbox.clone(),
                done.clone(),
            ))
        })
        .collect();
    let reached = eventually(Duration::from_secs(60), || {
        std::future::ready((done.load(Ordering::SeqCst) >= KILL_AFTER).then_some(()))
    })
    .await;
    assert!(
        reached.is_some(),
        "the load did not get going: {} operations",
        done.load(Ordering::SeqCst)
    );
    server.kill();
    for worker in workers {
        let _ = worker.await;
    }

    // Restart on the same database and master key; the outbox drains.
    let server = ServerProcess::start(dir.path(), &env);
    let client = reqwest::Client::new();
    let mut pending = u64::MAX;
    for _ in 0..600 {
        let metrics = client
            .get(format!("{}/metrics", server.internal_address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        pending = metrics
            .lines()
            .find(|l| l.starts_with("keyward_outbox_emails{state=\"pending\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(u64::MAX);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0, "every queued email is sent after the restart");

    check_invariants(&database_url, &mailbox).await;
    drop(server);
    drop(database);
}

/// The outbox's and the keys' invariants, from the database and the emails in `mailbox`.
pub async fn check_invariants(database_url: &str, mailbox: &Path) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    let scalar = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    // Every active partner has exactly one active key pair.
    let active = scalar("SELECT COUNT(*) FROM partners WHERE status = 'active'").await;
    assert!(active >= 1, "the load made partners ({active})");
    let wrong = scalar(
        "SELECT COUNT(*) FROM partners p WHERE p.status = 'active' AND \
         (SELECT COUNT(*) FROM partner_keys k WHERE k.partner_id = p.id AND k.revoked_at IS NULL) <> 1",
    )
    .await;
    assert_eq!(
        wrong, 0,
        "active partners without exactly one active key pair"
    );
    // Pending partners have no key at all.
    let early = scalar("SELECT COUNT(*) FROM partner_keys k JOIN partners p ON p.id = k.partner_id WHERE p.status = 'pending'").await;
    assert_eq!(early, 0);

    // Every used link produced exactly one key pair (and no key pair came from nowhere).
    let mismatched = scalar(
        "SELECT COUNT(*) FROM partners p WHERE \
         (SELECT COUNT(*) FROM links l WHERE l.partner_id = p.id AND l.used_at IS NOT NULL) <> \
         (SELECT COUNT(*) FROM partner_keys k WHERE k.partner_id = p.id)",
    )
    .await;
    assert_eq!(
        mismatched, 0,
        "partners whose used links and key pairs differ in number"
    );

    // Every email sent, and bodies erased.
    assert_eq!(
        scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await,
        0
    );
    assert_eq!(
        scalar("SELECT COUNT(*) FROM outbox WHERE body_ciphertext IS NOT NULL").await,
        0
    );

    // Every committed link has its email, and every emailed link was committed.
    let stored: HashSet<Vec<u8>> = sqlx::query("SELECT token_hash FROM links")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<Vec<u8>, _>(0))
        .collect();
    let link_re = regex::Regex::new(r"/link/([A-Za-z0-9_-]{43})").unwrap();
    let emails = emails_in(mailbox);
    let mut emailed = HashSet::new();
    let mut notices: HashMap<String, usize> = HashMap::new();
    for (to, text) in &emails {
        match link_re.captures(text) {
            Some(token) => {
                let hash = Sha256::digest(token[1].as_bytes()).to_vec();
                assert!(
                    stored.contains(&hash),
                    "an email carries a link that was never committed"
                );
                emailed.insert(hash);
            }
            None => *notices.entry(to.clone()).or_default() += 1,
        }
    }
    assert_eq!(
        emailed.len(),
        stored.len(),
        "committed links without their email"
    );
    let used = scalar("SELECT COUNT(*) FROM links WHERE used_at IS NOT NULL").await;
    eprintln!(
        "after the crash: {active} active partners, {} links ({used} used), {} emails",
        stored.len(),
        emails.len()
    );

    // Every regeneration that committed got its notice.
    let rows = sqlx::query(
        "SELECT p.email, COUNT(*) FROM links l JOIN partners p ON p.id = l.partner_id \
         WHERE l.purpose = 'regeneration' AND l.used_at IS NOT NULL GROUP BY p.email",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for row in rows {
        let (email, used): (String, i64) = (row.get(0), row.get(1));
        let got = notices.get(&email).copied().unwrap_or(0);
        assert!(
            got as i64 >= used,
            "{email}: {used} regenerations, {got} notices"
        );
    }
    pool.close().await;
}
