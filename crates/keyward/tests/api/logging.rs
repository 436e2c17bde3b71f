//! With logging at debug level (ours and every library's) for a whole flow, no secret key
//! and no link token appears in the log. Runs the real binary with its default mailbox folder.

use crate::helpers::*;
use crate::process::{emails_in, ServerProcess};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn a_whole_flow_at_debug_level_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &[("KEYWARD_LOG", "debug"), ("RUST_LOG", "trace")],
    );
    let client = reqwest::Client::new();
    let post = |path: &str, body: String, auth: Option<String>| {
        let mut request = client
            .post(format!("{}{path}", server.address))
            .header("content-type", "application/json")
            .body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    let mailbox = dir.path().join("mailbox");
    let wait_for = |n: usize| {
        let mailbox = mailbox.clone();
        eventually(Duration::from_secs(10), move || {
            std::future::ready(Some(emails_in(&mailbox)).filter(|e| e.len() >= n))
        })
    };

    // Onboard; the email lands in the default mailbox folder as an .eml file.
    let response = post(
        ONBOARD,
        json!({"partner_code": "LOGS", "email": "l@logs.example"}).to_string(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let emails = wait_for(1)
        .await
        .expect("the onboarding email in the mailbox folder");
    assert_eq!(emails[0].0, "l@logs.example");
    let onboarding_link = link_in_text(&emails[0].1);
    assert!(onboarding_link.starts_with(&format!("{}/link/", server.address)));

    // Page, wrong code, reveal, signed request, regeneration, redemption.
    assert_eq!(
        client.get(&onboarding_link).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        client
            .post(&onboarding_link)
            .form(&[("partner_code", "WRONG")])
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
    let body = json!({"token": token_of(&onboarding_link), "partner_code": "LOGS"}).to_string();
    let first: Value = post(REDEEM, body, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (public, secret) = (
        first["data"]["public_key"].as_str().unwrap().to_owned(),
        first["data"]["secret_key"].as_str().unwrap().to_owned(),
    );
    let response = post(
        WHOAMI,
        sign("{}", &secret),
        Some(format!("Bearer {public}")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let regen = sign(
        &json!({"email": "l@logs.example", "partner_code": "LOGS"}).to_string(),
        &secret,
    );
    assert_eq!(
        post(REGENERATE, regen, Some(format!("Bearer {public}")))
            .await
            .unwrap()
            .status(),
        200
    );
    let emails = wait_for(2).await.expect("the regeneration email");
    let regeneration_link = link_in_text(&emails[1].1);
    let reveal = client
        .post(&regeneration_link)
        .form(&[("partner_code", "LOGS")])
        .send()
        .await
        .unwrap();
    assert_eq!(reveal.status(), 200);
    let page = reveal.text().await.unwrap();
    let new_secret = regex::Regex::new(r"sk_partner_[0-9A-Za-z]{36}")
        .unwrap()
        .find(&page)
        .unwrap()
        .as_str()
        .to_owned();
    let response = post(
        WHOAMI,
        sign("{}", &secret),
        Some(format!("Bearer {public}")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 401);
    wait_for(3).await.expect("the notice email");

    let log = server.log();
    assert!(
        log.contains("DEBUG") || log.contains("TRACE"),
        "the log really is at debug level"
    );
    assert!(log.lines().count() > 20, "the log captured the flow");
    for secret_text in [
        &secret,
        &new_secret,
        &token_of(&onboarding_link),
        &token_of(&regeneration_link),
    ] {
        assert!(
            !log.contains(secret_text.as_str()),
            "a secret appeared in the log"
        );
    }
    let master_key = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    assert!(
        !log.contains(master_key.trim()),
        "the master key appeared in the log"
    );
}

#[tokio::test]
async fn the_master_key_file_is_created_0600_and_a_wrong_key_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // One database for the three starts (on the PostgreSQL run; else the SQLite file in `dir`).
    let database = crate::database::postgres_server()
        .map(|server| crate::database::TestDatabase::create(&server));
    let database_env: Vec<(&str, &str)> = database
        .iter()
        .map(|d| ("KEYWARD_DATABASE_URL", d.url.as_str()))
        .collect();
    {
        let _server = ServerProcess::start(dir.path(), &database_env);
    }
    let key_file = dir.path().join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(text.trim().len(), 44);

    // Another key: the server refuses to start, and says why.
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("serve")
        .env("KEYWARD_LISTEN", "127.0.0.1:0")
        .env("KEYWARD_DATA_DIR", dir.path())
        .env("KEYWARD_MASTER_KEY", wrong)
        .envs(database_env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
    assert!(!stderr.contains(wrong) && !stderr.contains(text.trim()));

    // The key file missing for a database that holds data: refused, not silently replaced.
    std::fs::remove_file(&key_file).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("serve")
        .env("KEYWARD_LISTEN", "127.0.0.1:0")
        .env("KEYWARD_DATA_DIR", dir.path())
        .env_remove("KEYWARD_MASTER_KEY")
        .envs(database_env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is missing"));
    assert!(!key_file.exists(), "no new key was made over existing data");
}
