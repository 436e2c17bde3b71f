//! The store's contract, run on both backends: SQLite here, and PostgreSQL on the suite's
//! second run (each test then gets a fresh database). What the flows rely on from the store,
//! stated once and checked against both implementations.

use crate::database::{postgres_server, TestDatabase};
use keyward_core::{
    AllowedIps, Email, KeyPair, LinkPurpose, LinkToken, PartnerCode, PartnerId, PartnerStatus,
};
use keyward_server::clock::ClaimTime;
use keyward_server::store::{
    Claim, Delivery, FailedAttempt, KeyUse, NewEmail, NewKey, NewLink, Store, StoreError,
    Supersede, Tx, OUTBOX_LEASE_MS,
};
use tempfile::TempDir;

/// A migrated store on this run's backend, with what keeps it alive.
struct TestStore {
    store: Store,
    _dir: TempDir,
    _database: Option<TestDatabase>,
}

async fn test_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let database = postgres_server().map(|server| TestDatabase::create(&server));
    let url = match &database {
        Some(database) => database.url.clone(),
        None => format!("sqlite://{}/keyward.db", dir.path().display()),
    };
    let store = Store::connect(&url, None).await.unwrap();
    store.migrate().await.unwrap();
    TestStore {
        store,
        _dir: dir,
        _database: database,
    }
}

fn code(s: &str) -> PartnerCode {
    PartnerCode::parse(s).unwrap()
}

async fn new_partner(store: &Store, c: &str) -> PartnerId {
    let id = PartnerId::new_v7();
    let mut tx = store.begin().await.unwrap();
    tx.insert_partner(
        &id,
        &code(c),
        &Email::parse("ops@acme.example").unwrap(),
        at(1),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

/// A live primary key pair for `partner`, created at 40 ms; returns its id.
async fn insert_primary_key(tx: &mut Tx, partner: &PartnerId, pair: &KeyPair) -> String {
    let key_id = uuid::Uuid::now_v7().to_string();
    tx.insert_key(&NewKey {
        id: &key_id,
        partner_id: partner,
        public_key_hash: &pair.public.hash(),
        public_key_hint: &pair.public.redacted(),
        secret_ciphertext: b"ciphertext",
        secret_key_hash: &pair.secret.hash(),
        created_at: 40,
        class: &keyward_server::store::KeyClass::Primary,
        mode: keyward_core::KeyMode::Live,
        slot: None,
    })
    .await
    .unwrap();
    key_id
}

#[tokio::test]
async fn partner_codes_are_unique_in_any_letter_case_and_found_in_any() {
    let t = test_store().await;
    let id = new_partner(&t.store, "Acme").await;
    let mut tx = t.store.begin().await.unwrap();
    let taken = tx
        .insert_partner(
            &PartnerId::new_v7(),
            &code("ACME"),
            &Email::parse("other@acme.example").unwrap(),
            at(2),
        )
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict)), "{taken:?}");
    drop(tx);

    let found = t
        .store
        .partner_by_code(&code("aCmE"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, id);
    assert_eq!(found.code.as_str(), "Acme");
    assert_eq!(found.status, PartnerStatus::Pending);
    assert!(found.allowed_ips.is_empty());
    let mut tx = t.store.begin().await.unwrap();
    let by_id = tx.partner_by_id_for_update(&id).await.unwrap().unwrap();
    assert_eq!(by_id.code, found.code);
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_nothing() {
    let t = test_store().await;
    let mut tx = t.store.begin().await.unwrap();
    tx.insert_partner(
        &PartnerId::new_v7(),
        &code("GONE"),
        &Email::parse("ops@gone.example").unwrap(),
        at(1),
    )
    .await
    .unwrap();
    drop(tx);
    assert!(t
        .store
        .partner_by_code(&code("GONE"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn status_and_allow_list_round_trip_as_typed_values() {
    let t = test_store().await;
    let id = new_partner(&t.store, "TYPED").await;
    let list = AllowedIps::parse(["203.0.113.7", "2001:db8::/48"]).unwrap();
    let mut tx = t.store.begin().await.unwrap();
    tx.set_partner_status(&id, PartnerStatus::Suspended, at(5))
        .await
        .unwrap();
    tx.set_allowed_ips(&id, &list, at(5)).await.unwrap();
    tx.commit().await.unwrap();
    let partner = t
        .store
        .partner_by_code(&code("typed"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(partner.status, PartnerStatus::Suspended);
    assert_eq!(partner.allowed_ips, list);

    let mut tx = t.store.begin().await.unwrap();
    tx.set_allowed_ips(&id, &AllowedIps::default(), at(6))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let partner = t
        .store
        .partner_by_code(&code("typed"))
        .await
        .unwrap()
        .unwrap();
    assert!(partner.allowed_ips.is_empty());
}

#[tokio::test]
async fn a_link_is_consumed_once_and_not_after_it_expired_or_was_superseded() {
    let t = test_store().await;
    let id = new_partner(&t.store, "LINKS").await;
    let insert = |expires_at: i64| {
        let store = t.store.clone();
        let id = id.clone();
        async move {
            let token = LinkToken::generate(&mut rand::rngs::OsRng);
            let link_id = uuid::Uuid::now_v7().to_string();
            let mut tx = store.begin().await.unwrap();
            tx.insert_link(&NewLink {
                id: &link_id,
                partner_id: &id,
                purpose: LinkPurpose::Onboarding,
                token_hash: &token.hash(),
                created_at: 10,
                expires_at,
                requested_ip: None,
                signed: false,
                overlap_seconds: 0,
                key: None,
            })
            .await
            .unwrap();
            tx.commit().await.unwrap();
            (link_id, token)
        }
    };
    let (first, token) = insert(1_000).await;
    let (link, partner) = t.store.link_by_hash(&token.hash()).await.unwrap().unwrap();
    assert_eq!(link.id, first);
    assert_eq!(partner.id, id);

    let mut tx = t.store.begin().await.unwrap();
    assert!(
        !tx.consume_link(&first, at(1_000)).await.unwrap(),
        "expired"
    );
    assert!(tx.consume_link(&first, at(999)).await.unwrap());
    assert!(!tx.consume_link(&first, at(999)).await.unwrap(), "used");
    tx.commit().await.unwrap();

    let (second, _) = insert(1_000).await;
    let mut tx = t.store.begin().await.unwrap();
    assert_eq!(
        tx.supersede_links(&id, LinkPurpose::Onboarding, Supersede::All, at(20))
            .await
            .unwrap(),
        1,
        "only the unused link is superseded"
    );
    assert!(
        !tx.consume_link(&second, at(30)).await.unwrap(),
        "superseded"
    );
}

#[tokio::test]
async fn keys_are_found_by_hash_and_revoked_all_at_once() {
    let t = test_store().await;
    let id = new_partner(&t.store, "KEYS").await;
    let pairs: Vec<KeyPair> = (0..2)
        .map(|_| KeyPair::generate(&mut rand::rngs::OsRng))
        .collect();
    let mut tx = t.store.begin().await.unwrap();
    for (i, pair) in pairs.iter().enumerate() {
        if i > 0 {
            tx.revoke_keys(&id, at(50)).await.unwrap();
        }
        insert_primary_key(&mut tx, &id, pair).await;
    }
    tx.commit().await.unwrap();
    let old = t
        .store
        .key_by_hash(&pairs[0].public.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.revoked_at, Some(50));
    let current = t
        .store
        .key_by_hash(&pairs[1].public.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.revoked_at, None);
    assert_eq!(current.partner.id, id);
    assert_eq!(current.secret_ciphertext, b"ciphertext");
    let unknown = KeyPair::generate(&mut rand::rngs::OsRng).public;
    assert!(t
        .store
        .key_by_hash(&unknown.hash())
        .await
        .unwrap()
        .is_none());
}

/// One key of its own for a new partner; returns the key's id.
async fn new_key(store: &Store, c: &str) -> (PartnerId, String) {
    let partner = new_partner(store, c).await;
    let pair = KeyPair::generate(&mut rand::rngs::OsRng);
    let mut tx = store.begin().await.unwrap();
    let key_id = insert_primary_key(&mut tx, &partner, &pair).await;
    tx.commit().await.unwrap();
    (partner, key_id)
}

async fn last_use(store: &Store, partner: &PartnerId) -> (Option<i64>, Option<String>) {
    let keys = store.partner_keys(partner).await.unwrap();
    (keys[0].last_used_at, keys[0].last_used_ip.clone())
}

#[tokio::test]
async fn last_uses_are_recorded_in_batches_and_never_move_back() {
    let t = test_store().await;
    let (a, key_a) = new_key(&t.store, "USED-A").await;
    let (b, key_b) = new_key(&t.store, "USED-B").await;
    let (c, key_c) = new_key(&t.store, "USED-C").await;
    let used = |key_id: &str, at: i64, ip: Option<&str>| KeyUse {
        key_id: key_id.to_owned(),
        at,
        ip: ip.map(|ip| ip.parse().unwrap()),
    };
    t.store
        .record_keys_used(&[
            used(&key_a, 1_000, Some("192.0.2.1")),
            used(&key_b, 1_000, None),
        ])
        .await
        .unwrap();
    assert_eq!(
        last_use(&t.store, &a).await,
        (Some(1_000), Some("192.0.2.1".to_owned()))
    );
    assert_eq!(last_use(&t.store, &b).await, (Some(1_000), None));
    assert_eq!(last_use(&t.store, &c).await, (None, None));

    // More uses than one statement takes, most of keys that do not exist (a key deleted since,
    // or another node's mistake): the real ones come last, in the second statement. An older
    // use never moves a newer one back.
    let mut uses: Vec<KeyUse> = (0..1_500)
        .map(|i| used(&format!("no-such-key-{i}"), 5_000, None))
        .collect();
    uses.push(used(&key_a, 500, Some("192.0.2.9")));
    uses.push(used(&key_b, 2_000, Some("2001:db8::1")));
    uses.push(used(&key_c, 3_000, Some("198.51.100.7")));
    t.store.record_keys_used(&uses).await.unwrap();
    assert_eq!(
        last_use(&t.store, &a).await,
        (Some(1_000), Some("192.0.2.1".to_owned()))
    );
    assert_eq!(
        last_use(&t.store, &b).await,
        (Some(2_000), Some("2001:db8::1".to_owned()))
    );
    assert_eq!(
        last_use(&t.store, &c).await,
        (Some(3_000), Some("198.51.100.7".to_owned()))
    );
    t.store.record_keys_used(&[]).await.unwrap();
}

#[tokio::test]
async fn a_replay_is_recorded_once_per_window() {
    let t = test_store().await;
    let digest = [7u8; 32];
    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.record_replay(&digest, at(100), at(200)).await.unwrap());
    assert!(!tx.record_replay(&digest, at(150), at(250)).await.unwrap());
    // Once the window has passed, the same digest is new again.
    assert!(tx.record_replay(&digest, at(200), at(300)).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(t.store.purge_replays(300).await.unwrap(), 1);
}

/// The single-use routes record a digest on its own, outside a transaction: the same window
/// rules, and of concurrent uses of one digest exactly one is the first, expired or not.
#[tokio::test]
async fn a_single_use_is_recorded_once_per_window_under_concurrency() {
    let t = test_store().await;
    let digest = [9u8; 32];
    assert!(t
        .store
        .record_replay(&digest, at(100), at(200))
        .await
        .unwrap());
    assert!(!t
        .store
        .record_replay(&digest, at(199), at(299))
        .await
        .unwrap());
    for (now, expires) in [(250, 350), (400, 500)] {
        // Past its window (at 200, then at 350): 16 concurrent uses, one first.
        let uses = (0..16).map(|_| t.store.record_replay(&digest, at(now), at(expires)));
        let firsts = futures::future::join_all(uses)
            .await
            .into_iter()
            .filter(|first| *first.as_ref().unwrap())
            .count();
        assert_eq!(firsts, 1, "at {now}");
    }
    assert_eq!(t.store.purge_replays(499).await.unwrap(), 0);
    assert_eq!(t.store.purge_replays(500).await.unwrap(), 1);
}

async fn queue(store: &Store, n: usize) {
    let mut tx = store.begin().await.unwrap();
    for _ in 0..n {
        tx.enqueue_email(&NewEmail {
            id: &uuid::Uuid::now_v7().to_string(),
            recipient: "ops@acme.example",
            unauthenticated: false,
            kind: "onboarding",
            body_ciphertext: b"body",
            created_at: 0,
            send_after: 0,
            about_key_id: None,
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Claims one due email at `now`, if any.
async fn claim_one(store: &Store, now: i64) -> Option<(String, Claim)> {
    let batch = store
        .claim_due_emails(ClaimTime::at(now), 1)
        .await
        .unwrap()?;
    assert_eq!(batch.emails.len(), 1);
    Some((batch.emails[0].id.clone(), batch.claim))
}

/// SQLite: a write outside a transaction (here the outbox's claim) waits for this node's turn
/// to write, however long the transaction ahead of it holds the database, instead of meeting
/// SQLite's lock, sleeping in its busy handler and failing "database is locked" after its
/// busy timeout (2 s).
#[tokio::test]
async fn a_write_outside_a_transaction_waits_its_turn_on_sqlite() {
    let t = test_store().await;
    if t.store.backend() != keyward_server::store::Backend::Sqlite {
        return;
    }
    queue(&t.store, 1).await;
    let tx = t.store.begin().await.unwrap();
    let store = t.store.clone();
    let claim = tokio::spawn(async move { store.claim_due_emails(ClaimTime::at(10), 1).await });
    // Longer than SQLite's busy timeout: a claim that met the lock would have failed by now.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(!claim.is_finished(), "the claim did not wait for its turn");
    tx.commit().await.unwrap();
    let batch = claim
        .await
        .unwrap()
        .expect("the claim succeeds once the turn is free");
    assert_eq!(batch.map(|b| b.emails.len()), Some(1));
}

#[tokio::test]
async fn a_claimed_email_is_not_claimed_again_until_released() {
    let t = test_store().await;
    queue(&t.store, 2).await;
    let (first, first_claim) = claim_one(&t.store, 10).await.unwrap();
    let (second, second_claim) = claim_one(&t.store, 10).await.unwrap();
    assert_ne!(first, second);
    assert!(claim_one(&t.store, 10).await.is_none());

    first_claim
        .finish(&t.store, &[(first.as_str(), Delivery::Sent { at: 11 })])
        .await
        .unwrap();
    let failed = Delivery::Failed(FailedAttempt {
        attempts: 1,
        next_attempt_at: 100,
        dead_at: None,
        error: "mail server down",
    });
    second_claim
        .finish(&t.store, &[(second.as_str(), failed)])
        .await
        .unwrap();
    assert!(claim_one(&t.store, 50).await.is_none(), "not due yet");
    let retried = t
        .store
        .claim_due_emails(ClaimTime::at(100), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retried.emails.len(), 1);
    assert_eq!(retried.emails[0].attempts, 1);
    assert_eq!(
        retried.emails[0].body_ciphertext.as_deref(),
        Some(&b"body"[..])
    );
    drop(retried);
    let stats = t.store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.sent, stats.dead), (1, 1, 0));
}

#[tokio::test]
async fn a_batch_is_claimed_once_and_recorded_in_one_go() {
    let t = test_store().await;
    queue(&t.store, 5).await;
    let batch = t
        .store
        .claim_due_emails(ClaimTime::at(10), 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.emails.len(), 3);
    let rest = t
        .store
        .claim_due_emails(ClaimTime::at(10), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.emails.len(), 2, "another sender gets only the others");
    let ids: Vec<String> = batch.emails.iter().map(|e| e.id.clone()).collect();
    let deliveries: Vec<(&str, Delivery<'_>)> = ids
        .iter()
        .map(|id| (id.as_str(), Delivery::Sent { at: 20 }))
        .collect();
    batch.claim.finish(&t.store, &deliveries).await.unwrap();
    drop(rest);
    let stats = t.store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.sent), (2, 3));
}

#[tokio::test]
async fn a_claim_left_by_a_dead_sender_is_taken_over_only_when_its_lease_runs_out() {
    let t = test_store().await;
    queue(&t.store, 1).await;
    let claimed = claim_one(&t.store, 10).await.unwrap();
    // The sender dies without recording anything: its claim is simply dropped.
    drop(claimed);
    // Another sender (a new process on the same database) cannot take it while it may still
    // be sending...
    assert!(claim_one(&t.store, 10).await.is_none());
    assert!(claim_one(&t.store, 10 + OUTBOX_LEASE_MS - 1)
        .await
        .is_none());
    // ...and takes it over once the lease has run out.
    assert!(claim_one(&t.store, 10 + OUTBOX_LEASE_MS).await.is_some());
}

/// Every sender of every node looks for due emails once a second: with none due (or every
/// due one held by a live claim), a look is a read, and takes no turn to write. On SQLite a
/// write would also sync the log: eight fsyncs a second, forever, on an idle node.
#[tokio::test]
async fn looking_at_an_outbox_with_nothing_to_claim_writes_nothing() {
    let t = test_store().await;
    let syncs = || {
        t.store
            .log_sync_counts()
            .map(|c| c.syncs.load(std::sync::atomic::Ordering::Relaxed))
    };
    let before = syncs();
    assert!(t
        .store
        .claim_due_emails(ClaimTime::at(10), 4)
        .await
        .unwrap()
        .is_none());
    queue(&t.store, 1).await;
    let held = t
        .store
        .claim_due_emails(ClaimTime::at(10), 4)
        .await
        .unwrap();
    assert!(held.is_some());
    let after_claim = syncs();
    assert!(t
        .store
        .claim_due_emails(ClaimTime::at(20), 4)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        syncs(),
        after_claim,
        "a look at a held email synced the log"
    );
    if let (Some(before), Some(after)) = (before, after_claim) {
        // The queueing and the claim synced; the empty look did not.
        assert_eq!(after - before, 2, "the empty look synced the log");
    }
}

/// The flake this answers: a test saw a reminder arrive and moved the service's clock two days
/// on before its sender had recorded it; the lease, then read on that clock, looked run out and
/// another sender sent the email again. A lease is read on the real clock.
#[tokio::test]
async fn a_live_claim_is_kept_when_the_services_clock_jumps_ahead() {
    let t = test_store().await;
    queue(&t.store, 1).await;
    let real = 1_000_000;
    let claimed = t
        .store
        .claim_due_emails(ClaimTime::at(real), 1)
        .await
        .unwrap();
    assert!(claimed.is_some());
    let two_days_on = ClaimTime {
        due: real + 2 * 86_400_000,
        lease: real + 1_000,
    };
    assert!(
        t.store
            .claim_due_emails(two_days_on, 1)
            .await
            .unwrap()
            .is_none(),
        "taken over while its holder is alive"
    );
    // The lease still runs out, in real time.
    let lease_out = ClaimTime {
        due: real,
        lease: real + OUTBOX_LEASE_MS,
    };
    assert!(t
        .store
        .claim_due_emails(lease_out, 1)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_renewed_claim_is_never_taken_over() {
    let t = test_store().await;
    queue(&t.store, 1).await;
    let (id, claim) = claim_one(&t.store, 10).await.unwrap();
    // A slow mail server: the sender renews its lease twice before the first runs out.
    let mut now = 10;
    for _ in 0..2 {
        now += OUTBOX_LEASE_MS - 1;
        assert_eq!(
            claim.renew(&t.store, now + OUTBOX_LEASE_MS).await.unwrap(),
            1
        );
        assert!(claim_one(&t.store, now + 1).await.is_none(), "still held");
    }
    claim
        .finish(&t.store, &[(id.as_str(), Delivery::Sent { at: now })])
        .await
        .unwrap();
    assert!(
        claim_one(&t.store, now + 10 * OUTBOX_LEASE_MS)
            .await
            .is_none(),
        "sent once"
    );
    let stats = t.store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.sent), (0, 1));
}

#[tokio::test]
async fn sent_emails_are_pruned_after_retention_and_the_backlog_is_counted_apart() {
    let t = test_store().await;
    queue(&t.store, 3).await;
    let (first, claim) = claim_one(&t.store, 10).await.unwrap();
    claim
        .finish(&t.store, &[(first.as_str(), Delivery::Sent { at: 100 })])
        .await
        .unwrap();
    let (second, claim) = claim_one(&t.store, 10).await.unwrap();
    claim
        .finish(&t.store, &[(second.as_str(), Delivery::Sent { at: 200 })])
        .await
        .unwrap();

    let backlog = t.store.outbox_backlog(1000).await.unwrap();
    assert_eq!((backlog.due, backlog.scheduled, backlog.dead), (1, 0, 0));
    assert_eq!(backlog.oldest_due_age_ms, 1000, "queued at 0");
    assert_eq!(t.store.prune_sent_emails(150).await.unwrap(), 1);
    let stats = t.store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.sent, stats.dead), (1, 1, 0));
}

/// A time given in milliseconds since the epoch, as the store keeps it.
fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    keyward_server::clock::from_millis(ms)
}
