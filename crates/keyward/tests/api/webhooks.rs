//! Lifecycle webhooks (SPEC §9.3): events queued with their change, delivered signed as
//! Standard Webhooks v1 (every delivery verified by the official Python library), retried with
//! the same `webhook-id`, disabled on 410, dead-lettered after the schedule; across a kill -9
//! and across two nodes.

use crate::cluster::{onboarded_on, spawn_nodes};
use crate::database::{postgres_server, TestDatabase};
use crate::helpers::*;
use crate::process::ServerProcess;
use keyward_core::PartnerCode;
use keyward_server::flows::admin::{self, Operator};
use keyward_server::flows::webhooks;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

impl Received {
    fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }

    fn event(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// The exchange's system: records every delivery, answers the queued statuses (then 200).
#[derive(Clone)]
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    /// Answered when the queue is empty.
    otherwise: Arc<Mutex<u16>>,
}

impl Receiver {
    async fn start() -> Self {
        let receiver = Self {
            url: String::new(),
            received: Arc::default(),
            answers: Arc::default(),
            otherwise: Arc::new(Mutex::new(200)),
        };
        let state = receiver.clone();
        let router = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    state
                        .received
                        .lock()
                        .unwrap()
                        .push(Received { headers, body });
                    let status = state
                        .answers
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or(*state.otherwise.lock().unwrap());
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url: format!("http://{address}/hooks"),
            ..receiver
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` deliveries arrived.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let got = eventually(Duration::from_secs(20), || {
            std::future::ready(Some(self.received()).filter(|r| r.len() >= count))
        })
        .await;
        got.unwrap_or_else(|| {
            panic!(
                "expected {count} deliveries, got {:?}",
                self.received()
                    .iter()
                    .map(|r| r.event()["type"].clone())
                    .collect::<Vec<_>>()
            )
        })
    }
}

/// Every delivery verified with the official Standard Webhooks library for Python.
fn verify_with_standard_webhooks(secret: &str, deliveries: &[Received]) {
    let check = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output();
    if !check.is_ok_and(|o| o.status.success()) {
        skip("Standard Webhooks verification: `pip install standardwebhooks` (Python)");
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let list: Vec<Value> = deliveries
        .iter()
        .map(|d| json!({"headers": d.headers, "body": d.body}))
        .collect();
    std::fs::write(file.path(), serde_json::to_string(&list).unwrap()).unwrap();
    let script = "import json, sys\nfrom standardwebhooks import Webhook\n\
        hook = Webhook(sys.argv[1])\n\
        for d in json.load(open(sys.argv[2])):\n    hook.verify(d['body'], d['headers'])\n\
        try:\n    hook.verify(d['body'] + ' ', d['headers'])\n    sys.exit('a changed body verified')\n\
        except Exception:\n    pass\nprint('verified')";
    let output = std::process::Command::new("python3")
        .args(["-c", script, secret])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("verified"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn by(name: &str) -> Operator<'_> {
    Operator { name, reason: None }
}

fn code(text: &str) -> PartnerCode {
    PartnerCode::parse(text).unwrap()
}

#[tokio::test]
async fn every_change_reaches_the_endpoint_signed_as_standard_webhooks_say() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let added = webhooks::add(&app.state, &receiver.url, &[], "tests")
        .await
        .unwrap();
    assert!(added.secret.starts_with("whsec_"));
    let email = "ops@hooked.example";
    let partner = app.onboarded_partner("HOOKED", email).await;
    assert_eq!(app.regenerate(&partner, email).await.status(), 200);
    let link = app.link_in_email(email, 2).await;
    let renewed = app.redeem(&link, "HOOKED").await;
    admin::suspend(&app.state, &code("HOOKED"), by("ana"))
        .await
        .unwrap();
    admin::activate(&app.state, &code("HOOKED"), by("ana"))
        .await
        .unwrap();
    let allowed = keyward_core::AllowedIps::parse(["192.0.2.0/24"]).unwrap();
    admin::set_allowed_ips(&app.state, &code("HOOKED"), allowed, by("ana"))
        .await
        .unwrap();
    admin::revoke_keys(&app.state, &code("HOOKED"), by("ana"), false)
        .await
        .unwrap();
    app.service_token("risk-engine").await;

    let deliveries = receiver.wait_for(8).await;
    let mut types: Vec<String> = deliveries
        .iter()
        .map(|d| d.event()["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "allowlist.changed",
            "key.regenerated",
            "key.revoked",
            "partner.activated",
            "partner.onboarded",
            "partner.reactivated",
            "partner.suspended",
            "service_token.created",
        ]
    );
    verify_with_standard_webhooks(&added.secret, &deliveries);
    let mut ids: Vec<&str> = deliveries.iter().map(Received::id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), deliveries.len(), "one webhook-id per event");
    for delivery in &deliveries {
        for secret in [
            &partner.secret_key,
            &partner.public_key,
            &renewed.secret_key,
            &renewed.public_key,
        ] {
            assert!(
                !delivery.body.contains(secret.as_str()),
                "{}",
                delivery.body
            );
        }
        assert!(!delivery.body.contains("/link/"), "{}", delivery.body);
    }
    let regenerated = deliveries
        .iter()
        .map(Received::event)
        .find(|e| e["type"] == "key.regenerated")
        .unwrap();
    assert_eq!(regenerated["data"]["partner_code"], "HOOKED");
    assert_eq!(regenerated["data"]["partner_id"], partner.partner_id);
    assert_eq!(regenerated["data"]["actor"], "partner");
    assert!(regenerated["data"]["key_id"].is_string());
    let suspended = deliveries
        .iter()
        .map(Received::event)
        .find(|e| e["type"] == "partner.suspended")
        .unwrap();
    assert_eq!(suspended["data"]["actor"], "operator:ana");
    let token = deliveries
        .iter()
        .map(Received::event)
        .find(|e| e["type"] == "service_token.created")
        .unwrap();
    assert_eq!(
        token["data"],
        json!({"name": "risk-engine", "actor": "operator:tests"})
    );
}

#[tokio::test]
async fn an_endpoint_gets_only_the_events_it_subscribed_to() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    webhooks::add(
        &app.state,
        &receiver.url,
        &["partner.suspended".to_owned()],
        "tests",
    )
    .await
    .unwrap();
    assert!(webhooks::add(
        &app.state,
        &receiver.url,
        &["key.exploded".to_owned()],
        "tests"
    )
    .await
    .is_err());
    app.onboarded_partner("PICKY", "ops@picky.example").await;
    admin::suspend(&app.state, &code("PICKY"), by("ana"))
        .await
        .unwrap();
    let deliveries = receiver.wait_for(1).await;
    app.settle().await;
    let pending = app.state.store.pending_webhooks().await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(deliveries[0].event()["type"], "partner.suspended");
}

#[tokio::test]
async fn a_restricted_pair_made_and_revoked_is_announced_as_restricted() {
    use keyward_core::wire::paths::{CREATE_KEY, REDEEM, REVOKE_KEY};
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    webhooks::add(
        &app.state,
        &receiver.url,
        &["key.created".to_owned(), "key.revoked".to_owned()],
        "tests",
    )
    .await
    .unwrap();
    let email = "ops@narrow.example";
    let primary = app.onboarded_partner("NARROW", email).await;
    let asked = app
        .signed(
            CREATE_KEY,
            &json!({"name": "reports", "scopes": []}),
            &primary.public_key,
            &primary.secret_key,
        )
        .await;
    assert_eq!(asked.status(), 200);
    let link = app.link_in_email(email, 2).await;
    let redeemed = app
        .post_json(
            REDEEM,
            &json!({"token": token_of(&link), "partner_code": "NARROW"}),
        )
        .await;
    let key_id = redeemed.json::<Value>().await.unwrap()["data"]["key"]["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = app
        .signed(
            REVOKE_KEY,
            &json!({"key_id": key_id}),
            &primary.public_key,
            &primary.secret_key,
        )
        .await;
    assert_eq!(revoked.status(), 200);
    let deliveries = receiver.wait_for(2).await;
    // Deliveries are sent concurrently: in no particular order.
    let mut events: Vec<Value> = deliveries.iter().map(Received::event).collect();
    events.sort_by_key(|e| e["type"].as_str().unwrap_or_default().to_owned());
    for (event, kind) in events.iter().zip(["key.created", "key.revoked"]) {
        assert_eq!(event["type"], kind, "{events:?}");
        assert_eq!(
            (
                &event["data"]["key_id"],
                &event["data"]["kind"],
                &event["data"]["actor"]
            ),
            (&json!(key_id), &json!("restricted"), &json!("partner")),
            "{event}"
        );
    }
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_its_webhook_id_and_410_disables_the_endpoint() {
    let app = spawn_app().await;
    let flaky = Receiver::start().await;
    flaky.answers.lock().unwrap().extend([500, 302]);
    let gone = Receiver::start().await;
    *gone.otherwise.lock().unwrap() = 410;
    webhooks::add(&app.state, &flaky.url, &[], "tests")
        .await
        .unwrap();
    let added_gone = webhooks::add(&app.state, &gone.url, &[], "tests")
        .await
        .unwrap();
    app.onboard("RETRIED", "ops@retried.example").await;

    let first = flaky.wait_for(1).await;
    gone.wait_for(1).await;
    // The next attempt is 5 s later (with jitter), by the service's clock.
    app.clock.advance(chrono::Duration::seconds(6));
    let second = flaky.wait_for(2).await;
    assert_eq!(second[1].id(), first[0].id());
    // A redirect is not followed: it is a failure, retried 5 minutes later.
    app.clock.advance(chrono::Duration::minutes(6));
    let third = flaky.wait_for(3).await;
    assert_eq!(third[2].id(), first[0].id());
    assert_eq!(third[2].body, first[0].body);

    let endpoints = webhooks::list(&app.state).await.unwrap();
    let (disabled, _) = endpoints
        .iter()
        .find(|(e, _)| e.id == added_gone.endpoint.id)
        .unwrap();
    assert!(disabled.disabled_at.is_some(), "{disabled:?}");
    // A disabled endpoint hears nothing more.
    app.onboard("RETRIED2", "ops@retried.example").await;
    flaky.wait_for(4).await;
    app.settle().await;
    assert_eq!(gone.received().len(), 1);
    assert!(app
        .metrics_text()
        .await
        .contains(r#"keyward_webhook_deliveries_total{result="gone"} 1"#));
}

#[tokio::test]
async fn after_the_retry_schedule_a_delivery_is_dead_lettered() {
    let app = spawn_app().await;
    let down = Receiver::start().await;
    *down.otherwise.lock().unwrap() = 503;
    webhooks::add(&app.state, &down.url, &[], "tests")
        .await
        .unwrap();
    app.onboard("DOOMED", "ops@doomed.example").await;
    for attempt in 1..=10 {
        down.wait_for(attempt).await;
        app.clock.advance(chrono::Duration::hours(27));
    }
    let dead = eventually(Duration::from_secs(10), || async {
        let dead = webhooks::dead(&app.state, 10).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await
    .unwrap();
    assert_eq!(dead[0].attempts, 10);
    assert_eq!(dead[0].event_type, "partner.onboarded");
    assert!(dead[0].last_error.as_deref().unwrap().contains("503"));
    app.settle().await;
    assert_eq!(down.received().len(), 10, "nothing after the schedule");
    let ids: std::collections::HashSet<String> =
        down.received().iter().map(|r| r.id().to_owned()).collect();
    assert_eq!(ids.len(), 1);
}

// Multi-threaded: the receiver answers while the test waits on the CLI process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_add_list_test_and_remove_endpoints_with_the_cli() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let output = app.cli(&[
        "webhook",
        "add",
        &receiver.url,
        "--events",
        "key.leaked,partner.suspended",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let secret = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");

    let output = app.cli(&["webhook", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed["url"], receiver.url);
    assert_eq!(listed["events"], json!(["key.leaked", "partner.suspended"]));
    assert!(!String::from_utf8_lossy(&output.stdout).contains(&secret));

    let output = app.cli(&["webhook", "test", listed["id"].as_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deliveries = receiver.wait_for(1).await;
    assert_eq!(deliveries[0].event()["type"], "webhook.test");
    verify_with_standard_webhooks(&secret, &deliveries);

    *receiver.otherwise.lock().unwrap() = 500;
    let output = app.cli(&["webhook", "test", &receiver.url]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("HTTP 500"));

    let output = app.cli(&["webhook", "add", "ftp://x.example/hooks"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("http://"));

    let output = app.cli(&["webhook", "remove", &receiver.url]);
    assert!(output.status.success());
    let output = app.cli(&["webhook", "list"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("no webhook endpoints"));
    let output = app.cli(&["webhook", "dead"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("no dead webhook deliveries"));
}

#[tokio::test]
async fn two_nodes_deliver_each_event_once() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let receiver = Receiver::start().await;
    webhooks::add(&nodes[0].state, &receiver.url, &[], "tests")
        .await
        .unwrap();
    for i in 0..6 {
        onboarded_on(
            &nodes,
            &format!("TWOHOOK{i}"),
            &format!("ops{i}@twohook.example"),
        )
        .await;
    }
    // partner.onboarded and partner.activated for each.
    receiver.wait_for(12).await;
    settle(&nodes).await;
    // Every delivery recorded as delivered: no lease is left to run out and send one again.
    let waiting = eventually(Duration::from_secs(10), || async {
        let pending = nodes[0].state.store.pending_webhooks().await.unwrap();
        pending.is_empty().then_some(())
    })
    .await;
    assert!(waiting.is_some(), "deliveries still waiting");
    let received = receiver.received();
    let mut ids: Vec<&str> = received.iter().map(Received::id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    assert_eq!(received.len(), 12, "an event delivered twice");
}

/// Each node keeps a view of the endpoints for up to `KEYWARD_KEY_CACHE_MS` (here 3 s, so that
/// the steps below fall well within it): an endpoint added on one node gets the events of the
/// other node's changes made after the add returned, and an endpoint removed is sent nothing
/// from a view that still names it.
#[tokio::test]
async fn each_nodes_view_of_the_endpoints_follows_an_add_and_a_remove() {
    let nodes = spawn_nodes(2, |s| s.key_cache = Duration::from_secs(3)).await;
    let receiver = Receiver::start().await;
    let onboard = |i: usize| {
        let node = &nodes[1];
        async move {
            let status = node
                .onboard(&format!("VIEW{i}"), &format!("ops{i}@view.example"))
                .await
                .status();
            assert_eq!(status, 200);
        }
    };
    // Node 1's view is filled now, with no endpoint.
    onboard(0).await;
    let added = webhooks::add(
        &nodes[0].state,
        &receiver.url,
        &["partner.onboarded".to_owned()],
        "tests",
    )
    .await
    .unwrap();
    onboard(1).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].event()["data"]["partner_code"], "VIEW1");

    // Node 1's view is filled again (or still fresh), naming the endpoint; it is removed on
    // node 0 and node 1 makes a change at once, within its view's bound.
    onboard(2).await;
    webhooks::remove(&nodes[0].state, &added.endpoint.id, "tests", None)
        .await
        .unwrap();
    onboard(3).await;
    // The change committed before its answer: had a delivery been queued, it would be here.
    let pending = nodes[0].state.store.pending_webhooks().await.unwrap();
    assert!(
        pending.is_empty(),
        "queued for a removed endpoint: {pending:?}"
    );
}

#[tokio::test]
async fn an_event_committed_before_a_kill_9_is_still_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let database = postgres_server().map(|server| TestDatabase::create(&server));
    let database_url = match &database {
        Some(database) => database.url.clone(),
        None => format!("sqlite://{}/keyward.db", dir.path().display()),
    };
    let env = [("KEYWARD_DATABASE_URL", database_url.as_str())];
    let receiver = Receiver::start().await;
    *receiver.otherwise.lock().unwrap() = 503;
    let mut server = ServerProcess::start(dir.path(), &env);
    let output = server.operator(&["webhook", "add", &receiver.url]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer = reqwest::Client::new()
        .post(format!("{}{ONBOARD}", server.address))
        .json(&json!({"partner_code": "CRASHHOOK", "email": "ops@crashhook.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    server.kill();
    *receiver.otherwise.lock().unwrap() = 200;

    let _server = ServerProcess::start(dir.path(), &env);
    let delivered = eventually(Duration::from_secs(30), || {
        std::future::ready(receiver.received().into_iter().rev().find(|r| {
            r.event()["type"] == "partner.onboarded"
                && r.event()["data"]["partner_code"] == "CRASHHOOK"
        }))
    })
    .await;
    assert!(
        delivered.is_some(),
        "the event was lost: {:?}",
        receiver.received()
    );
}

#[test]
fn the_integration_guide_describes_every_event_with_its_json() {
    let guide = std::fs::read_to_string(crate::docs::repo_file("docs/integration.md")).unwrap();
    for event in keyward_server::store::EVENT_TYPES {
        assert!(
            guide.contains(&format!("`{event}`")),
            "{event} is not in the catalogue"
        );
        let emitted = *event != "key.created";
        if emitted {
            assert!(
                guide.contains(&format!("{{\"type\": \"{event}\"")),
                "{event} has no example"
            );
        }
    }
}

#[tokio::test]
async fn a_retiring_pair_announces_its_expiry_once_unless_it_is_revoked_first() {
    use keyward_core::wire::paths::RETIRE_OLD_KEYS;
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let events = ["key.expired".to_owned(), "key.retired".to_owned()];
    webhooks::add(&app.state, &receiver.url, &events, "tests")
        .await
        .unwrap();
    let email = "ops@expiring.example";
    let first = app.onboarded_partner("EXPIRING", email).await;
    let rotate = |from: Partner, count: usize| {
        let app = &app;
        async move {
            let body = json!({"email": email, "partner_code": "EXPIRING", "nonce": uuid_like(), "overlap_seconds": 60});
            let response = app
                .signed(REGENERATE, &body, &from.public_key, &from.secret_key)
                .await;
            assert_eq!(response.status(), 200);
            let link = app.link_in_email(email, count).await;
            app.redeem(&link, "EXPIRING").await
        }
    };
    let second = rotate(first.clone(), 2).await;
    // Scheduled for the end of the overlap: waiting, not sent.
    let waiting = app.state.store.pending_webhooks().await.unwrap();
    assert_eq!(waiting.iter().map(|(_, n)| n).sum::<i64>(), 1);
    assert!(receiver.received().is_empty());
    app.clock.advance(chrono::Duration::seconds(61));
    let expired = receiver.wait_for(1).await[0].event();
    assert_eq!(expired["type"], "key.expired");
    assert_eq!(expired["data"]["actor"], "keyward");
    assert_eq!(expired["data"]["partner_code"], "EXPIRING");

    // Retired early: key.retired, and the scheduled key.expired is cancelled.
    let third = rotate(second.clone(), 4).await;
    let response = app
        .signed(
            RETIRE_OLD_KEYS,
            &json!({}),
            &third.public_key,
            &third.secret_key,
        )
        .await;
    assert_eq!(response.status(), 200);
    let retired = receiver.wait_for(2).await[1].event();
    assert_eq!(retired["type"], "key.retired");
    let cancelled = app.state.store.pending_webhooks().await.unwrap();
    assert!(cancelled.is_empty(), "{cancelled:?}");
    app.clock.advance(chrono::Duration::seconds(120));
    app.settle().await;
    assert_eq!(
        receiver.received().len(),
        2,
        "no key.expired for a revoked pair"
    );
}
