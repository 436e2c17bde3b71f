//! Several nodes on one database (SPEC §6 across nodes): links, redemptions, the outbox and
//! the limits hold whichever node a request reaches.

use crate::cluster::*;
use crate::database::{postgres_server, TestDatabase};
use crate::helpers::*;
use keyward_server::config::{MasterKeySource, Settings};
use keyward_server::crypto::MasterKey;
use secrecy::SecretString;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_link_from_one_node_is_redeemed_on_another_and_revocation_is_seen_at_once() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_eq!(a.onboard("ACROSS", "x@across.example").await.status(), 200);
    let link = link_in_text(&wait_for(&nodes, "x@across.example", 1).await[0].text);
    let partner = b.redeem(&link, "ACROSS").await;
    assert_eq!(a.whoami(&partner).await.status(), 200);
    assert_eq!(b.whoami(&partner).await.status(), 200);

    assert_eq!(
        a.regenerate(&partner, "x@across.example").await.status(),
        200
    );
    let emails = wait_for(&nodes, "x@across.example", 2).await;
    let regeneration = emails
        .iter()
        .find(|e| e.subject.contains("Regenerate"))
        .unwrap();
    let renewed = b.redeem(&link_in_text(&regeneration.text), "ACROSS").await;
    // The very next request on the other node refuses the old key.
    let (status, code, _) = error_of(a.whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
    assert_eq!(a.whoami(&renewed).await.status(), 200);
    assert_eq!(renewed.partner_id, partner.partner_id);
}

#[tokio::test]
async fn twenty_concurrent_redemptions_over_two_nodes_give_exactly_one_success() {
    let nodes = spawn_nodes(2, |_| {}).await;
    assert_eq!(
        nodes[0].onboard("RACE2", "r@race2.example").await.status(),
        200
    );
    let token = token_of(&link_in_text(
        &wait_for(&nodes, "r@race2.example", 1).await[0].text,
    ));
    let body = json!({"token": token, "partner_code": "RACE2"});
    let attempts = (0..20).map(|i| {
        let node = &nodes[i % 2];
        let body = body.clone();
        async move { node.post_json(REDEEM, &body).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        tally(&statuses),
        [(200, 1), (410, 19)].into(),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn ten_concurrent_onboardings_of_one_code_make_one_partner_and_one_email() {
    let nodes = spawn_nodes(2, |_| {}).await;
    // Ten different requesters race for one code: one wins, the others are told it is taken.
    let attempts = (0..10).map(|i| {
        let node = &nodes[i % 2];
        async move {
            node.onboard("CONTESTED", &format!("claimant{i}@contested.example"))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        tally(&statuses),
        [(200, 1), (409, 9)].into(),
        "{statuses:?}"
    );
    settle(&nodes).await;
    let sent: usize = nodes.iter().map(|n| n.mailbox.emails().len()).sum();
    assert_eq!(sent, 1);
    let partner = nodes[0]
        .state
        .store
        .partner_by_code(&keyward_core::PartnerCode::parse("contested").unwrap())
        .await
        .unwrap();
    assert!(partner.is_some());
}

#[tokio::test]
async fn every_node_sends_from_the_outbox_and_no_email_goes_twice() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let onboardings = (0..40).map(|i| {
        let node = &nodes[i % 2];
        async move {
            node.onboard(&format!("BULK{i}"), &format!("bulk{i}@bulk.example"))
                .await
                .status()
                .as_u16()
        }
    });
    assert!(futures::future::join_all(onboardings)
        .await
        .iter()
        .all(|s| *s == 200));
    // Every claimed email sent and recorded: a duplicate would show.
    settle(&nodes).await;
    let all: Vec<_> = nodes.iter().flat_map(|n| n.mailbox.emails()).collect();
    let mut recipients: Vec<_> = all.iter().map(|e| e.to.clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!((all.len(), recipients.len()), (40, 40));
    let stats = nodes[1].state.store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.sent, stats.dead), (0, 40, 0));
}

#[tokio::test]
async fn an_undeliverable_email_is_dead_lettered_and_does_not_block_the_queue() {
    let nodes = spawn_nodes(1, |s| s.outbox_max_attempts = 2).await;
    let node = &nodes[0];
    node.mailbox.refuse("bounce@dead.example");
    assert_eq!(
        node.onboard("DEAD", "bounce@dead.example").await.status(),
        200
    );
    for i in 0..3 {
        assert_eq!(
            node.onboard(&format!("ALIVE{i}"), &format!("alive{i}@dead.example"))
                .await
                .status(),
            200
        );
    }
    // The others go through while the first waits for its retry.
    for i in 0..3 {
        node.wait_for_emails(&format!("alive{i}@dead.example"), 1)
            .await;
    }
    let dead = eventually(Duration::from_secs(10), || async {
        node.clock.advance(chrono::Duration::seconds(5)); // past the retry's backoff
        let dead = node.state.store.outbox_stats().await.unwrap().dead;
        (dead == 1).then_some(dead)
    })
    .await
    .unwrap_or(0);
    assert_eq!(dead, 1);
    let listed = node.state.store.dead_emails().await.unwrap();
    assert_eq!(listed[0].recipient, "bounce@dead.example");
    assert_eq!(listed[0].attempts, 2);
    assert!(listed[0]
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("refused"));
    let metrics = node.metrics_text().await;
    assert!(
        metrics.contains("keyward_outbox_emails{state=\"dead\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_per_partner_limit_holds_across_nodes_under_concurrency() {
    let nodes = spawn_nodes(2, |_| {}).await;
    assert_eq!(
        nodes[0]
            .onboard("LIMITED", "l@limited.example")
            .await
            .status(),
        200
    ); // link 1 of 10
    let link = link_in_text(&wait_for(&nodes, "l@limited.example", 1).await[0].text);
    let partner = nodes[1].redeem(&link, "LIMITED").await;
    let attempts = (0..12).map(|i| {
        let node = &nodes[i % 2];
        let partner = partner.clone();
        async move {
            node.regenerate(&partner, "l@limited.example")
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        tally(&statuses),
        [(200, 9), (429, 3)].into(),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn nodes_starting_together_on_a_new_database_migrate_once() {
    let Some(server) = postgres_server() else {
        return; // several nodes are a PostgreSQL deployment; on SQLite one node migrates
    };
    let database = TestDatabase::create(&server);
    let key = MasterKey::generate().to_base64();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let builds = dirs.iter().map(|dir| {
        let mut settings = Settings::for_tests(dir.path());
        settings.database_url = SecretString::from(database.url.clone());
        settings.master_key = MasterKeySource::Inline(SecretString::from(key.clone()));
        keyward_server::Application::build(settings)
    });
    let apps = futures::future::join_all(builds).await;
    for app in &apps {
        assert!(app.is_ok(), "{:?}", app.as_ref().err());
    }
    let store = apps[0].as_ref().unwrap().state().store.clone();
    store.migrate().await.unwrap();
    assert!(
        store
            .partner_by_code(&keyward_core::PartnerCode::parse("nobody").unwrap())
            .await
            .unwrap()
            .is_none(),
        "the schema is in place"
    );
}
