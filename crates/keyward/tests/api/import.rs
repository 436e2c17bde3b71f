//! Moving partners in (SPEC §10.2): `keyward partner import` run as a real process on the
//! app's store, then the imported keys used over HTTP.

use crate::cluster::{emails_to, spawn_nodes};
use crate::helpers::*;
use keyward_core::wire::paths::LIST_KEYS;
use keyward_core::KeyPair;
use keyward_server::config::MasterKeySource;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const DAY: i64 = 86_400_000;

/// Runs `keyward partner import FILE ARGS…` on the app's store and master key, with `env`.
/// Awaited, not blocking: the app runs on this test's runtime, and a write it began must be
/// able to finish while the command waits for the database.
async fn import(app: &TestApp, rows: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let file = app.dir.path().join(format!("import-{}.jsonl", uuid_like()));
    std::fs::write(&file, rows).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
    command
        .args(["partner", "import"])
        .arg(&file)
        .args(args)
        .args(["--operator", "migration"])
        .env("KEYWARD_DATA_DIR", app.dir.path())
        .env(
            "KEYWARD_DATABASE_URL",
            app.state.settings.database_url.expose_secret(),
        );
    if let MasterKeySource::Inline(key) = &app.state.settings.master_key {
        command.env("KEYWARD_MASTER_KEY", key.expose_secret());
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn row(code: &str, public: &str, secret: &str) -> String {
    json!({"partner_code": code, "email": format!("ops@{}.example", code.to_lowercase()),
           "public_key": public, "secret_key": secret})
    .to_string()
}

fn held(code: &str, public: &str, secret: &str) -> Partner {
    Partner {
        code: code.to_owned(),
        partner_id: String::new(),
        public_key: public.to_owned(),
        secret_key: secret.to_owned(),
    }
}

async fn whoami_data(app: &TestApp, partner: &Partner) -> Value {
    let response = app.whoami(partner).await;
    assert_eq!(response.status(), 200, "{}", partner.code);
    response.json::<Value>().await.unwrap()["data"].clone()
}

#[tokio::test]
async fn imported_partners_keep_their_keys_and_a_legacy_key_works_until_regenerated() {
    let app = spawn_app().await;
    let legacy = held(
        "OLDCO",
        "pk_partner_0ldcoPublic42",
        "sk_partner_0ldcoSecret42",
    );
    let native_pair = KeyPair::generate(&mut rand::rngs::OsRng);
    let native = held(
        "NEWCO",
        native_pair.public.as_str(),
        native_pair.secret.expose_secret(),
    );
    // Before any legacy key is held, a key of the legacy shape is malformed, as always.
    let (_, code, _) = error_of(app.whoami(&legacy).await).await;
    assert_eq!(code, "malformed_authorization");

    let rows = [
        row("OLDCO", &legacy.public_key, &legacy.secret_key),
        row("NEWCO", &native.public_key, &native.secret_key),
        row("BADKEY", "pk_partner_short", "sk_partner_0ldcoSecret99"),
        String::new(),
        row("oldco", "pk_partner_AnotherOne1", "sk_partner_AnotherOne2"),
        "{\"partner_code\": \"X\"".to_owned(),
    ]
    .join("\n");
    let (ok, out) = import(&app, &rows, &[], &[]).await;
    assert!(ok, "{out}");
    assert!(out.contains("line 3: public_key"), "{out}");
    assert!(
        out.contains("line 5: this partner_code is on line 1"),
        "{out}"
    );
    assert!(out.contains("line 6: not a JSON object"), "{out}");
    assert!(
        out.contains("2 imported (1 with legacy keys), 0 already there, 3 refused"),
        "{out}"
    );
    for secret in [&legacy.secret_key, &native.secret_key, &legacy.public_key] {
        assert!(!out.contains(secret.as_str()), "a key was printed: {out}");
    }

    // Both authenticate with the keys they held, as active partners, at once.
    let data = whoami_data(&app, &legacy).await;
    assert_eq!(data["partner_code"], "OLDCO");
    let partner_id = data["partner_id"].as_str().unwrap().to_owned();
    assert_eq!(whoami_data(&app, &native).await["partner_code"], "NEWCO");
    // The Rust SDK signs with a legacy pair when asked to; by default it wants §1's format.
    let client = keyward_client::Client::new(&app.address).unwrap();
    assert!(client
        .with_credentials(&legacy.public_key, &legacy.secret_key)
        .is_err());
    let me = client
        .with_legacy_credentials(&legacy.public_key, &legacy.secret_key)
        .unwrap()
        .whoami()
        .await
        .unwrap();
    assert_eq!(me.partner_code, "OLDCO");
    let keys = app
        .signed(
            LIST_KEYS,
            &json!({}),
            &legacy.public_key,
            &legacy.secret_key,
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["data"]["keys"]
        .clone();
    assert_eq!(keys[0]["legacy"], true, "{keys}");
    assert_eq!(keys[0]["hint"], "pk_partner_0ldc…");
    let show = app.cli(&["partner", "show", "OLDCO", "--json"]);
    let show: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(show["keys"][0]["legacy"], true);
    assert_eq!(show["status"], "active");
    let audit = String::from_utf8_lossy(&app.cli(&["audit", "--json"]).stdout).into_owned();
    assert!(
        audit.contains("partner_imported") && audit.contains("operator:migration"),
        "{audit}"
    );

    // While a legacy key is held, a key of its shape that is not stored is looked up: unknown.
    let stranger = held("OLDCO", "pk_partner_NeverIssued7", &legacy.secret_key);
    let (_, code, _) = error_of(app.whoami(&stranger).await).await;
    assert_eq!(code, "unknown_key");
    // A wrong signature with the legacy key is refused like any other.
    let forged = held("OLDCO", &legacy.public_key, "sk_partner_0ldcoSecret43");
    let (_, code, _) = error_of(app.whoami(&forged).await).await;
    assert_eq!(code, "invalid_signature");

    // Idempotent: the same file again changes nothing.
    let (ok, again) = import(&app, &rows, &[], &[]).await;
    assert!(ok, "{again}");
    assert!(
        again.contains("0 imported (0 with legacy keys), 2 already there, 3 refused"),
        "{again}"
    );
    let (ok, strict) = import(&app, &rows, &["--strict"], &[]).await;
    assert!(!ok && strict.contains("3 rows were refused"), "{strict}");
    // The same code with other keys is reported, and the partner left as it was.
    let other = row(
        "OLDCO",
        "pk_partner_SomeoneElse1",
        "sk_partner_SomeoneElse2",
    );
    let (_, out) = import(&app, &other, &[], &[]).await;
    assert!(
        out.contains("line 1: a partner with this code exists with other keys"),
        "{out}"
    );
    assert_eq!(
        whoami_data(&app, &legacy).await["partner_id"],
        partner_id.as_str()
    );

    // Regeneration replaces the legacy pair with keys of §1's format; the ID stays.
    let email = "ops@oldco.example";
    assert_eq!(app.regenerate(&legacy, email).await.status(), 200);
    let link = app.link_in_email(email, 1).await;
    let renewed = app.redeem(&link, "OLDCO").await;
    assert_eq!(renewed.partner_id, partner_id);
    assert!(keyward_core::PublicKey::parse(&renewed.public_key).is_ok());
    assert_eq!(
        whoami_data(&app, &renewed).await["partner_id"],
        partner_id.as_str()
    );
    // With no legacy key held any more, the legacy shape is malformed again, as §1 says
    // (once this node's view of "held" is older than the key cache's bound).
    // Refused at once (revoked), then malformed once the bound has passed.
    let (_, code, _) = error_of(app.whoami(&legacy).await).await;
    assert!(
        matches!(code.as_str(), "revoked_key" | "malformed_authorization"),
        "the regenerated legacy key: {code}"
    );
    let bound = app.state.settings.key_cache;
    let malformed = eventually(bound * 5, || async {
        let (_, code, _) = error_of(app.whoami(&legacy).await).await;
        (code == "malformed_authorization").then_some(())
    })
    .await;
    assert!(malformed.is_some(), "still looked up after the bound");
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_bad_files_are_explained() {
    let app = spawn_app().await;
    let rows = row("DRY", "pk_partner_DryRun0001", "sk_partner_DryRun0002");
    let (ok, out) = import(&app, &rows, &["--dry-run"], &[]).await;
    assert!(ok && out.contains("1 would be imported"), "{out}");
    let partner = held("DRY", "pk_partner_DryRun0001", "sk_partner_DryRun0002");
    let (_, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!(code, "malformed_authorization");
    let (ok, out) = import(&app, "", &[], &[]).await;
    assert!(ok && out.contains("0 rows read"), "{out}");
}

#[tokio::test]
async fn legacy_keys_expire_at_the_exchanges_end_date_after_reminders() {
    let until = chrono::Utc::now() + chrono::TimeDelta::days(10);
    let until_text = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until_ms = until.timestamp() * 1000;
    let app = spawn_app_with(|s| {
        s.expiry.legacy_keys_until = Some(until_ms);
        s.expiry.reminders = vec![3 * DAY, DAY];
    })
    .await;
    let legacy = held(
        "ENDCO",
        "pk_partner_EndcoPublic1",
        "sk_partner_EndcoSecret1",
    );
    let native_pair = KeyPair::generate(&mut rand::rngs::OsRng);
    let native = held(
        "KEEPCO",
        native_pair.public.as_str(),
        native_pair.secret.expose_secret(),
    );
    let rows = [
        row("ENDCO", &legacy.public_key, &legacy.secret_key),
        row("KEEPCO", &native.public_key, &native.secret_key),
    ]
    .join("\n");
    let (ok, out) = import(
        &app,
        &rows,
        &[],
        &[("KEYWARD_LEGACY_KEYS_UNTIL", &until_text)],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("KEYWARD_LEGACY_KEYS_UNTIL"), "{out}");

    // The legacy key says when it ends; the key of §1's format does not end.
    let response = app.whoami(&legacy).await;
    let expires = response
        .headers()
        .get("keyward-key-expires")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        expires.as_deref(),
        Some(keyward_core::wire::wire_time(until_ms).as_str())
    );
    let response = app.whoami(&native).await;
    assert!(response.headers().get("keyward-key-expires").is_none());

    // The reminders of §8.4, each once; then the key stops working.
    app.clock
        .advance(chrono::TimeDelta::days(7) + chrono::TimeDelta::minutes(1));
    keyward_server::flows::send_due_reminders(&app.state.ctx)
        .await
        .unwrap();
    app.settle().await;
    let reminders: Vec<_> = emails_to(std::slice::from_ref(&app), "ops@endco.example")
        .into_iter()
        .filter(|e| e.subject.contains("expires at"))
        .collect();
    assert_eq!(reminders.len(), 1);
    assert!(
        reminders[0]
            .text
            .contains("moved in from its previous system"),
        "{}",
        reminders[0].text
    );
    assert!(emails_to(std::slice::from_ref(&app), "ops@keepco.example").is_empty());
    app.clock.advance(chrono::TimeDelta::days(4));
    let (_, code, _) = error_of(app.whoami(&legacy).await).await;
    assert_eq!(code, "expired_key");
    assert_eq!(app.whoami(&native).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_keys_work_on_every_node_when_the_import_returns() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let legacy = held(
        "TWOCO",
        "pk_partner_TwoNodes0001",
        "sk_partner_TwoNodes0002",
    );
    // Node b has just decided that no legacy key is held, and cached it.
    let (_, code, _) = error_of(b.whoami(&legacy).await).await;
    assert_eq!(code, "malformed_authorization");
    let (ok, out) = import(
        a,
        &row("TWOCO", &legacy.public_key, &legacy.secret_key),
        &[],
        &[],
    )
    .await;
    assert!(ok, "{out}");
    // No waiting here: the command returned, so every node takes the key.
    assert_eq!(b.whoami(&legacy).await.status(), 200);
    assert_eq!(a.whoami(&legacy).await.status(), 200);
}
