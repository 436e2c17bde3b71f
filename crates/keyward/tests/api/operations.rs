//! The operator's commands that touch the schema: `keyward migrate`, `serve --no-migrate`.

use crate::database::{postgres_server, TestDatabase};
use crate::process::ServerProcess;
use std::process::Command;

#[tokio::test]
async fn migrate_prepares_the_database_and_serve_can_then_skip_migrating() {
    let dir = tempfile::tempdir().unwrap();
    let database = postgres_server().map(|server| TestDatabase::create(&server));
    let url = match &database {
        Some(database) => database.url.clone(),
        None => format!("sqlite://{}/keyward.db", dir.path().display()),
    };
    let keyward = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .env("KEYWARD_DATA_DIR", dir.path())
            .env("KEYWARD_DATABASE_URL", &url)
            .env("KEYWARD_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap()
    };

    // Without the schema, --no-migrate refuses to start and says what to do.
    let output = keyward(&["serve", "--no-migrate"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("run `keyward migrate` first"), "{stderr}");

    // migrate, twice (idempotent).
    for _ in 0..2 {
        let output = keyward(&["migrate"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
    }

    // Now serve --no-migrate starts and works.
    let env = [
        ("KEYWARD_DATABASE_URL", url.as_str()),
        ("KEYWARD_MIGRATE_ON_START", "false"),
    ];
    let server = ServerProcess::start(dir.path(), &env);
    let ready = reqwest::get(format!("{}/readyz", server.address))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    drop(server);
    drop(database);
}

#[test]
fn check_config_never_prints_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("check-config")
        .env("KEYWARD_DATA_DIR", dir.path())
        // Unreachable on purpose: the settings are printed before the database is tried.
        .env(
            "KEYWARD_DATABASE_URL",
            "postgres://keyward:db-s3cret@127.0.0.1:1/keyward?password=q-s3cret",
        )
        .env(
            "KEYWARD_SMTP_URL",
            "smtp://mailer:smtp-s3cret@mail.example:587?tls=starttls",
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("database_url      postgres://keyward:***@127.0.0.1:1/keyward?password=***"),
        "{text}"
    );
    assert!(
        text.contains("SMTP smtp://mailer:***@mail.example:587?tls=starttls"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn activating_a_pending_partner_refuses_and_leaves_it_pending() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let onboard = reqwest::Client::new()
        .post(format!("{}{}", server.address, crate::helpers::ONBOARD))
        .json(&serde_json::json!({"partner_code": "NEWBIE", "email": "n@newbie.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(onboard.status(), 200);
    let activate = server.operator(&["partner", "activate", "NEWBIE"]);
    assert!(!activate.status.success());
    assert!(
        String::from_utf8_lossy(&activate.stderr).contains("has not redeemed its onboarding link")
    );
    let show = server.operator(&["partner", "show", "NEWBIE"]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("status       pending"));
}

#[test]
fn the_help_lists_operator_and_partner_commands_apart_and_partner_commands_take_no_server_settings()
{
    let help = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let top = help(&["--help"]);
    let operators = top.find("Operator commands").expect(&top);
    let partners = top.find("Partner commands").expect(&top);
    let at = |name: &str| top.find(&format!("\n  {name} ")).expect(name);
    for name in ["serve", "partner", "service-token", "audit"] {
        assert!(
            (operators..partners).contains(&at(name)),
            "{name} among the operator's: {top}"
        );
    }
    for name in ["sign", "redeem", "whoami", "regenerate"] {
        assert!(at(name) > partners, "{name} among the partner's: {top}");
    }
    assert!(!help(&["sign", "--help"]).contains("--config"));
}

#[test]
fn an_operator_without_a_name_is_recorded_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let keyward = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .env("KEYWARD_DATA_DIR", dir.path())
            .env_remove("USER")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    keyward(&["service-token", "create", "payments"]);
    let audit = keyward(&["audit", "--json"]);
    let entry: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(entry["event"], "service_token_created");
    assert_eq!(entry["actor"], "operator:unknown");
}

#[test]
fn check_config_shows_every_feature_that_changes_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let check = |upstream: &str| {
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("check-config")
            .env("KEYWARD_DATA_DIR", dir.path())
            .env("KEYWARD_UPSTREAM_URL", upstream)
            .env("KEYWARD_UPSTREAM_PREFIXES", "/api/v1/PartnerP2P/Payout/")
            .env("KEYWARD_UPSTREAM_SINGLE_USE", "off")
            .env("KEYWARD_ONBOARDING", "invite")
            .env("KEYWARD_TRUSTED_PROXIES", "10.0.0.0/8")
            .env("KEYWARD_KEY_CACHE_MS", "250")
            .output()
            .unwrap()
    };
    // Credentials in the upstream's URL are refused, without being repeated.
    let refused = check("http://gw:gw-s3cret@127.0.0.1:9000/partner-api");
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success());
    assert!(
        said.contains("KEYWARD_UPSTREAM_URL must not carry a user name or password"),
        "{said}"
    );
    assert!(!said.contains("gw-s3cret"), "{said}");
    let output = check("http://127.0.0.1:9000/partner-api");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "gateway           http://127.0.0.1:9000/partner-api (prefixes /api/v1/PartnerP2P/Payout/; single use off",
        "internal listener 127.0.0.1:8081",
        "onboarding        invite",
        "dkim              off",
        "key cache         250 ms",
        "trusted proxies   10.0.0.0/8 (reading X-Forwarded-For)",
        "exact numbers     off",
        "console           off",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}
