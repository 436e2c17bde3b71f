//! The metrics operators watch: every query of the shipped Grafana dashboard and every alert
//! of `deploy/prometheus/alerts.yml` names only metrics a live server exports.

use crate::docs::repo_file;
use crate::helpers::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// The metric names a scrape holds (sample lines, so histogram series and `_total` included).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn named_in(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"keyward_[a-z0-9_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_owned()).collect()
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_use_only_metrics_the_server_exports() {
    let app = spawn_app_with(|s| s.ip_rate_limit_per_minute = 3).await;
    // An endpoint that refuses connections: its deliveries fail.
    keyward_server::flows::webhooks::add(&app.state, "http://127.0.0.1:9/hooks", &[], "tests")
        .await
        .unwrap();
    // Traffic that makes every family appear: a link issued and redeemed, emails sent, a good
    // and a refused request, a key the cache has, a rate-limit refusal.
    let partner = app
        .onboarded_partner("METRICS", "ops@metrics.example")
        .await;
    assert_eq!(app.whoami(&partner).await.status(), 200);
    let wrong = app
        .post_raw(
            WHOAMI,
            &sign("{}", "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK"),
            Some(&format!("Bearer {}", partner.public_key)),
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let mut limited = false;
    for i in 0..5 {
        let response = app
            .post_json(
                ONBOARD,
                &json!({"partner_code": format!("L{i}"), "email": "l@x.example"}),
            )
            .await;
        limited |= response.status() == 429;
    }
    assert!(limited);
    // A token reported as leaked (not one of ours: nothing changes).
    use keyward_server::flows::leaks::{report, Leak, Reporter};
    let leak = Leak {
        token: "pk_partner_0000000000000000000000000000000000",
        url: None,
        source: None,
    };
    report(&app.state, &[leak], Reporter::Operator("tests"))
        .await
        .unwrap();
    let text = eventually(Duration::from_secs(10), || async {
        let text = app.metrics_text().await;
        text.contains("keyward_webhook_deliveries_total")
            .then_some(text)
    })
    .await
    .expect("a webhook delivery was attempted");
    let exported = exported(&text);
    for needed in [
        "keyward_auth_failures_total",
        "keyward_links_redeemed_total",
        "keyward_rate_limited_total",
        "keyward_build_info",
        "keyward_storage_up",
    ] {
        assert!(
            exported.contains(needed),
            "{needed} is not exported:\n{text}"
        );
    }
    assert!(
        text.contains(
            r#"keyward_auth_failures_total{code="invalid_signature",partner="METRICS"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"code="invalid_signature"} 1"#),
        "requests carry their error code"
    );

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("deploy/grafana/keyward.json")).unwrap(),
    )
    .unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries += 1;
            let names = named_in(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "the dashboard queries {name}, which the server does not export"
                );
            }
        }
    }
    assert!(queries >= 15);
    let alerts = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let alert_names = named_in(&alerts);
    assert!(alert_names.len() >= 4);
    for name in alert_names {
        assert!(
            exported.contains(&name),
            "an alert uses {name}, which the server does not export"
        );
    }
}

/// On SQLite a write is answered only once the log is synced after its commit, and commits
/// that end together share one fsync (`store/group_commit.rs`). The sync thread counts a
/// commit before it answers it: once every onboarding below has its answer, each is counted.
#[tokio::test]
async fn each_write_on_sqlite_is_answered_after_a_sync_of_its_log() {
    if crate::database::postgres_server().is_some() {
        return; // PostgreSQL syncs its own log at each commit
    }
    let app = spawn_app().await;
    let counts = |text: &str| {
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"))
        };
        (
            value("keyward_sqlite_log_syncs_total"),
            value("keyward_sqlite_commits_synced_total"),
        )
    };
    let (syncs_before, commits_before) = counts(&app.metrics_text().await);

    let statuses = futures::future::join_all(
        (0..32).map(|i| app.onboard_owned(format!("SYNC{i}"), format!("ops{i}@sync.example"))),
    )
    .await;
    assert_eq!(tally(&statuses), [(200, 32)].into());

    let (syncs, commits) = counts(&app.metrics_text().await);
    let (syncs, commits) = (syncs - syncs_before, commits - commits_before);
    assert!(
        commits >= 32.0,
        "{commits} commits synced for 32 onboardings"
    );
    assert!(
        (1.0..=commits).contains(&syncs),
        "{syncs} syncs for {commits} commits"
    );
}
