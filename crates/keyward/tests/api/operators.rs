//! The operators' side (issue 12): finding partners, last use, emergency revocation across
//! nodes, resending and inviting, the audit log, master-key rotation under load.

use crate::cluster::{onboarded_on, regeneration_link, spawn_nodes};
use crate::helpers::*;
use crate::process::ServerProcess;
use keyward_core::{Email, PartnerCode};
use keyward_server::config::Onboarding;
use keyward_server::flows::admin::{self, Operator};
use serde_json::{json, Value};
use std::time::Duration;

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn an_operator_finds_a_partner_by_a_fragment_and_sees_its_keys_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    for (code, email) in [
        ("FINDME", "treasury@findme-bank.example"),
        ("OTHER1", "ops@other.example"),
        ("OTHER2", "ops@another.example"),
    ] {
        server.partner(dir.path(), code, email).await;
    }
    let (_, public, secret) = server.partner(dir.path(), "USED", "ops@used.example").await;
    let client = reqwest::Client::new();
    let whoami = client
        .post(format!("{}{WHOAMI}", server.address))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {public}"))
        .body(sign("{}", &secret))
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);

    let list = stdout(&server.operator(&["partner", "list", "--email-like", "FINDME-bank"]));
    assert!(
        list.contains("FINDME") && !list.contains("OTHER1"),
        "{list}"
    );
    let lines = stdout(&server.operator(&["partner", "list", "--status", "active", "--json"]));
    let rows: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert!(rows
        .iter()
        .all(|r| r["key_hint"].as_str().unwrap().starts_with("pk_partner_")));
    let none = stdout(&server.operator(&["partner", "list", "--code-like", "nobody"]));
    assert!(none.contains("no partner matches"));

    // The last use is written within a flush interval (5 s), never per request.
    let used = eventually(Duration::from_secs(15), || {
        let show = stdout(&server.operator(&["partner", "show", "USED", "--json"]));
        let details: Value = serde_json::from_str(&show).unwrap();
        let key = details["keys"][0].clone();
        std::future::ready(key["last_used_at"].is_string().then_some(key))
    })
    .await
    .expect("the key's last use recorded");
    assert_eq!(used["state"], "current");
    assert_eq!(used["last_used_ip"], "127.0.0.1");
    let show = stdout(&server.operator(&["partner", "show", "USED"]));
    assert!(
        show.contains("current") && show.contains("from 127.0.0.1"),
        "{show}"
    );
    assert!(show.contains("onboarding   used"), "{show}");
    assert!(!show.contains(&public) && !show.contains(&secret));
    // The event that made the key names it as the keys table does, by its hint.
    let hint = used["hint"].as_str().unwrap();
    let redeemed = show
        .lines()
        .find(|l| l.contains("onboarding_link_redeemed"))
        .unwrap_or_else(|| panic!("{show}"));
    assert!(redeemed.contains(hint), "{redeemed}");
}

#[tokio::test]
async fn revoked_keys_are_refused_on_every_node_when_the_revocation_returns() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let email = "ops@emergency.example";
    let partner = onboarded_on(&nodes, "EMERGENCY", email).await;
    // The other node has the key in its cache.
    assert_eq!(nodes[1].whoami(&partner).await.status(), 200);
    let state = &nodes[0].state;
    let operator = Operator {
        name: "alice",
        reason: Some("key leaked in a public repository"),
    };
    let done = admin::revoke_keys(
        state,
        &PartnerCode::parse("EMERGENCY").unwrap(),
        operator,
        true,
    )
    .await
    .unwrap();
    assert_eq!((done.keys, done.notified), (1, true));
    let (status, code, _) = error_of(nodes[1].whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
    // The partner's way back in: the emailed regeneration link.
    let link = regeneration_link(&nodes, email, 2).await;
    let new = nodes[1].redeem(&link, "EMERGENCY").await;
    assert_eq!(nodes[0].whoami(&new).await.status(), 200);
    let id = keyward_core::PartnerId::parse(&partner.partner_id).unwrap();
    let events = state.store.audit_events(&id, 20).await.unwrap();
    let revoked = events.iter().find(|e| e.event == "keys_revoked").unwrap();
    assert!(revoked
        .detail
        .as_deref()
        .unwrap()
        .contains("reason: key leaked"));
}

#[tokio::test]
async fn a_pending_partner_gets_a_fresh_link_and_only_a_pending_one() {
    let app = spawn_app().await;
    let email = "ops@resend.example";
    assert_eq!(app.onboard("RESEND", email).await.status(), 200);
    let first = app.link_in_email(email, 1).await;
    let state = &app.state;
    let code = PartnerCode::parse("RESEND").unwrap();
    admin::resend_link(state, &code, OPERATOR).await.unwrap();
    let second = app.link_in_email(email, 2).await;
    assert_ne!(first, second);
    let response = app
        .post_json(
            REDEEM,
            &json!({"token": token_of(&first), "partner_code": "RESEND"}),
        )
        .await;
    assert_eq!(error_of(response).await.1, "link_expired");
    app.redeem(&second, "RESEND").await;
    let again = admin::resend_link(state, &code, OPERATOR).await;
    assert!(matches!(again, Err(admin::AdminError::NotPending(_))));
}

#[tokio::test]
async fn invite_only_onboarding_answers_alike_and_sends_only_to_the_invited() {
    let app = spawn_app_with(|s| s.onboarding = Onboarding::Invite).await;
    let existing = "ops@existing.example";
    let body_of = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    // Not invited: the published success, nothing created, nothing sent.
    let stranger = body_of(app.onboard("STRANGER", "x@stranger.example").await).await;
    assert_eq!(stranger.0, 200);
    assert!(stranger.1.contains(keyward_core::wire::ONBOARD_MESSAGE));

    let state = &app.state;
    let invited = admin::invite(
        state,
        &PartnerCode::parse("INVITED").unwrap(),
        &Email::parse(existing).unwrap(),
        OPERATOR,
    )
    .await
    .unwrap();
    assert!(invited.invited);
    let link = app.link_in_email(existing, 1).await;
    // The invited code with its email: a fresh link (replacing the first); with another
    // email, or an active partner's code, the very same answer and nothing sent.
    assert_eq!(
        body_of(app.onboard("INVITED", existing).await).await,
        stranger
    );
    let fresh = app.link_in_email(existing, 2).await;
    assert_ne!(fresh, link);
    assert_eq!(
        body_of(app.onboard("INVITED", "thief@evil.example").await).await,
        stranger
    );
    app.redeem(&fresh, "INVITED").await;
    assert_eq!(
        body_of(app.onboard("INVITED", existing).await).await,
        stranger
    );
    app.settle().await;
    assert_eq!(app.emails_to(existing).len(), 2);
    assert!(app.emails_to("x@stranger.example").is_empty());
    assert!(app.emails_to("thief@evil.example").is_empty());
    assert!(state
        .store
        .partner_by_code(&PartnerCode::parse("STRANGER").unwrap())
        .await
        .unwrap()
        .is_none());
    // Inviting a taken code is refused.
    let again = admin::invite(
        state,
        &PartnerCode::parse("invited").unwrap(),
        &Email::parse("other@example.com").unwrap(),
        OPERATOR,
    )
    .await;
    assert!(matches!(again, Err(admin::AdminError::CodeTaken(_))));
}

#[tokio::test]
async fn the_audit_log_ships_every_credential_event_with_its_actor_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    server
        .partner(dir.path(), "AUDITED", "ops@audited.example")
        .await;
    let revoke = server.operator(&[
        "partner",
        "revoke-keys",
        "AUDITED",
        "--reason",
        "incident 42",
        "--operator",
        "bob",
    ]);
    assert!(stdout(&revoke).contains("1 key pair(s) revoked"));
    let suspend = server.operator(&["partner", "suspend", "AUDITED"]);
    stdout(&suspend);
    let lines = stdout(&server.operator(&["audit", "--partner", "AUDITED", "--json"]));
    let events: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "partner_created",
            "onboarding_link_issued",
            "onboarding_link_redeemed",
            "keys_revoked",
            "partner_suspended"
        ]
    );
    assert_eq!(events[0]["actor"], "anyone");
    assert_eq!(events[2]["actor"], "partner");
    assert_eq!(events[2]["ip"], "127.0.0.1");
    assert_eq!(events[3]["actor"], "operator:bob");
    assert!(events[3]["detail"]
        .as_str()
        .unwrap()
        .contains("incident 42"));
    assert_eq!(
        events[4]["actor"], "operator:ops-tester",
        "$USER by default"
    );
    assert!(events
        .iter()
        .all(|e| e["time"].as_str().unwrap().ends_with('Z') && e["partner_code"] == "AUDITED"));
    let only = stdout(&server.operator(&[
        "audit",
        "--event",
        "keys_revoked",
        "--since",
        "1h",
        "--json",
    ]));
    assert_eq!(only.lines().count(), 1);
    let future = stdout(&server.operator(&["audit", "--since", "2999-01-01T00:00:00Z", "--json"]));
    assert!(future.is_empty());
}

/// `keyward ARGS…` with `env` (and nothing else), as an operator would run it.
fn keyward_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("USER", "ops-tester")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_master_key_rotates_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let database = crate::database::postgres_server()
        .map(|server| crate::database::TestDatabase::create(&server));
    let data_dir = dir.path().display().to_string();
    let mut store_env = vec![("KEYWARD_DATA_DIR", data_dir.as_str())];
    if let Some(database) = &database {
        store_env.push(("KEYWARD_DATABASE_URL", database.url.as_str()));
    }
    let old = keyward_server::crypto::MasterKey::generate().to_base64();
    let new = keyward_server::crypto::MasterKey::generate().to_base64();
    let new_file = dir.path().join("new.key");
    std::fs::write(&new_file, &new).unwrap();
    let with = |extra: &[(&'static str, &str)]| {
        let mut env: Vec<(&str, String)> = store_env
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    };
    let start = |env: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ServerProcess::start(dir.path(), &pairs)
    };
    // Every request decrypts (no cache), so a secret the node could not read would show.
    let before = with(&[("KEYWARD_MASTER_KEY", &old), ("KEYWARD_KEY_CACHE_MS", "0")]);
    let mut first = start(before.clone());
    let mut partners = Vec::new();
    for i in 0..3 {
        let code = format!("ROT{i}");
        let email = format!("ops{i}@rotation.example");
        partners.push(first.partner(dir.path(), &code, &email).await);
    }
    let sample = dir.path().join("sample.jsonl");
    let fill = keyward_with(
        &[
            "bench-fill",
            "--partners",
            "1500",
            "--sample",
            "1",
            "--out",
            sample.to_str().unwrap(),
        ],
        &before
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    stdout(&fill);
    // The samples hold the bench partners' secret keys: the operator's alone.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sample).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "bench-fill's samples are private");
    first.kill();

    // The node restarts knowing both keys, encrypting under the new one, and keeps serving
    // while the rotation runs.
    let rolling = with(&[
        ("KEYWARD_MASTER_KEY", &new),
        ("KEYWARD_MASTER_KEY_PREVIOUS", &old),
        ("KEYWARD_KEY_CACHE_MS", "0"),
    ]);
    let server = start(rolling.clone());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let address = server.address.clone();
        let partners = partners.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (_, public, secret) in &partners {
                    let response = client
                        .post(format!("{address}{WHOAMI}"))
                        .header("content-type", "application/json")
                        .header("authorization", format!("Bearer {public}"))
                        .body(sign("{}", secret))
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => ok += 1,
                        other => failed.push(other),
                    }
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rolling_refs: Vec<(&str, &str)> = rolling.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let rotate = tokio::task::spawn_blocking({
        let env: Vec<(&'static str, String)> = rolling.clone();
        let file = new_file.clone();
        move || {
            let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            keyward_with(
                &[
                    "rotate-master-key",
                    "--new-key-file",
                    file.to_str().unwrap(),
                ],
                &pairs,
            )
        }
    })
    .await
    .unwrap();
    let report = stdout(&rotate);
    assert!(report.contains("1503 secret keys"), "{report}");
    // Running it again finds nothing left to do.
    let again = keyward_with(
        &[
            "rotate-master-key",
            "--new-key-file",
            new_file.to_str().unwrap(),
        ],
        &rolling_refs,
    );
    let again = stdout(&again);
    assert!(again.contains("0 secret keys"), "{again}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = hammer.await.unwrap();
    assert!(ok > 10, "the node served throughout ({ok} answers)");
    assert!(
        failed.is_empty(),
        "failed answers during the rotation: {failed:?}"
    );
    drop(server);

    // Afterwards the new key alone serves every partner...
    let after = start(with(&[("KEYWARD_MASTER_KEY", &new)]));
    for (_, public, secret) in &partners {
        let response = reqwest::Client::new()
            .post(format!("{}{WHOAMI}", after.address))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {public}"))
            .body(sign("{}", secret))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    drop(after);
    // ...and a node given the old key alone refuses to start, saying why.
    let old_only = with(&[("KEYWARD_MASTER_KEY", &old)]);
    let refused = keyward_with(
        &["check-config"],
        &old_only
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("master key does not match"));
}
