//! Small things an attacker or an accident would find: file permissions, answers that are not
//! in the envelope, invisible characters in addresses, the CLI on a closed pipe.

use crate::helpers::*;
use serde_json::json;
use std::process::{Command, Stdio};

#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_and_the_database_are_readable_by_the_service_alone() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    app.onboard("PERM", "ops@perm.example").await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(app.dir.path()), 0o700);
    if crate::database::postgres_server().is_none() {
        for file in ["keyward.db", "keyward.db-wal", "keyward.db-shm"] {
            let path = app.dir.path().join(file);
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{file}");
            }
        }
    }
    assert_eq!(mode(&app.dir.path().join("master.key")), 0o600);
}

#[tokio::test]
async fn link_pages_answer_every_malformed_request_with_a_page() {
    let app = spawn_app().await;
    let bad_token = app
        .client
        .get(format!("{}/link/%ZZ%C0", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_token.status(), 404);
    assert!(bad_token.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    let token = "A".repeat(43);
    let huge = format!("partner_code={}", "x".repeat(70 * 1024));
    let too_large = app
        .client
        .post(format!("{}/link/{token}", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert!(too_large.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn addresses_with_invisible_characters_are_refused() {
    let app = spawn_app().await;
    for email in [
        "ops\u{202E}@acme.example",
        "o\u{200B}ps@acme.example",
        "ops\u{1b}[2J@acme.example",
    ] {
        let response = app
            .post_json(ONBOARD, &json!({"partner_code": "INVIS", "email": email}))
            .await;
        let (status, code, body) = error_of(response).await;
        assert_eq!((status, code.as_str()), (400, "invalid_field"), "{email:?}");
        assert_eq!(body["errors"][0]["field"], "email");
    }
}

#[test]
fn the_cli_ends_quietly_when_its_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("check-config")
        .env("KEYWARD_DATA_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader (`| head -0`) is gone before anything is printed
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_locked_sqlite_answers_writes_503_quickly_and_keeps_serving_reads() {
    if crate::database::postgres_server().is_some() {
        return; // SQLite's single writer; PostgreSQL has row locks instead
    }
    let app = spawn_app_with(|s| s.key_cache = std::time::Duration::ZERO).await;
    let partner = app.onboarded_partner("READER", "ops@reader.example").await;
    // Another process (an operator command, a backup) holds the write lock.
    let mut other = hold_write_lock(&app).await;

    let started = std::time::Instant::now();
    let writes = futures::future::join_all(
        (0..12).map(|i| app.onboard_owned(format!("W{i}"), format!("w{i}@locked.example"))),
    )
    .await;
    assert!(writes.iter().all(|s| *s == 503), "{writes:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Reads are not starved meanwhile.
    assert_eq!(app.whoami(&partner).await.status(), 200);

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(app.onboard("W99", "w99@locked.example").await.status(), 200);
}

#[tokio::test]
async fn a_lost_keys_request_during_a_database_outage_is_retried_and_its_email_arrives() {
    if crate::database::postgres_server().is_some() {
        return; // the outage is SQLite's write lock; the PostgreSQL restart is in faults
    }
    let app = spawn_app().await;
    let email = "ops@outage.example";
    app.onboarded_partner("OUTAGE", email).await;
    app.settle().await;
    let before = app.emails_to(email).len();
    // Another process holds the write lock for longer than a write waits (3 s): the first
    // attempt of the request's work finds the database unavailable.
    let mut other = hold_write_lock(&app).await;

    let response = app
        .post_json(
            REGENERATE,
            &serde_json::json!({"email": email, "partner_code": "OUTAGE"}),
        )
        .await;
    assert_eq!(
        response.status(),
        200,
        "the answer never waits for the work"
    );
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();

    let emails = app.wait_for_emails(email, before + 1).await;
    assert!(
        emails[before].subject.starts_with("Regenerate"),
        "{}",
        emails[before].subject
    );
    app.settle().await;
    let metrics = app.metrics_text().await;
    assert!(
        !metrics.contains("keyward_background_failures_total{"),
        "{metrics}"
    );
}

/// A connection of another process to the app's SQLite file, holding its write lock until
/// `ROLLBACK` (an operator command or a backup, say).
async fn hold_write_lock(app: &TestApp) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}", app.dir.path().join("keyward.db").display());
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    other
}
