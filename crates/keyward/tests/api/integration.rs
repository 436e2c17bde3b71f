//! docs/integration.md is real: the example payout API behind the gateway, and the example
//! services (Python, Node) that call the verify API, run against `keyward serve`, with the
//! service token made by the operator's command.

use crate::docs::{available, repo_file};
use crate::helpers::{eventually, sign};
use crate::process::ServerProcess;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running example server; killed when dropped.
struct Example {
    child: Child,
    url: String,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program example` on a free port and reads the URL it prints.
fn start(program: &str, example: &str, env: &[(&str, &str)]) -> Example {
    let mut child = Command::new(program)
        .arg(repo_file(example))
        .env("PORT", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .last()
        .unwrap_or_else(|| panic!("{example} printed no address"))
        .to_owned();
    Example { child, url }
}

async fn post(url: &str, raw: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(raw.to_owned());
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_example_payout_api_runs_behind_the_gateway() {
    if !available("python3", "--version") {
        return;
    }
    let upstream = start("python3", "examples/upstream.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[("KEYWARD_UPSTREAM_URL", &upstream.url)]);
    let (partner_id, public, secret) = server
        .partner(dir.path(), "GATEWAY", "ops@gateway.example")
        .await;
    let auth = format!("Bearer {public}");
    let raw = sign(r#"{"amount":"25.00","currency":"USDT"}"#, &secret);
    let payout = format!("{}/api/v1/PartnerP2P/Payout", server.address);

    let (status, body) = post(&payout, &raw, Some(&auth)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["partner_id"], partner_id.as_str());
    assert_eq!(body["data"]["partner_code"], "GATEWAY");
    assert_eq!(body["data"]["body_bytes"], raw.len());
    assert_eq!(body["data"]["client_ip"], "127.0.0.1");

    // Replayed, tampered, unsigned: answered by keyward.
    assert_eq!(
        post(&payout, &raw, Some(&auth)).await.1["code"],
        "replayed_request"
    );
    let tampered = raw.replace("25.00", "2500.00");
    assert_eq!(
        post(&payout, &tampered, Some(&auth)).await.1["code"],
        "invalid_signature"
    );
    assert_eq!(
        post(&payout, &raw, None).await.1["code"],
        "missing_authorization"
    );
    // Called directly, the example refuses: it must listen only where keyward can reach it.
    let direct = format!("{}/api/v1/PartnerP2P/Payout", upstream.url);
    assert_eq!(post(&direct, &raw, None).await.0, 403);
}

#[tokio::test]
async fn the_example_services_authenticate_partners_through_the_verify_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[("KEYWARD_KEY_CACHE_MS", "200")]);
    let (partner_id, public, secret) = server.partner(dir.path(), "SVC", "ops@svc.example").await;
    let auth = format!("Bearer {public}");

    let created = server.operator(&["service-token", "create", "payouts"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("kw_service_"), "only the token on stdout");
    let again = server.operator(&["service-token", "create", "payouts"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already called payouts"));

    let mut examples = Vec::new();
    let env = [
        ("KEYWARD_INTERNAL_URL", server.internal_address.as_str()),
        ("KEYWARD_SERVICE_TOKEN", token.as_str()),
    ];
    if available("python3", "--version") {
        examples.push(start("python3", "examples/verify_service.py", &env));
    }
    if available("node", "--version") {
        examples.push(start("node", "examples/verify_service.mjs", &env));
    }
    for (i, example) in examples.iter().enumerate() {
        let raw = sign(&format!(r#"{{"payout":"p-{i}"}}"#), &secret);
        let (status, body) = post(&example.url, &raw, Some(&auth)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["partner_id"], partner_id.as_str());

        let (status, body) = post(&example.url, &raw, Some(&auth)).await;
        assert_eq!(
            (status, &body["code"]),
            (409, &Value::from("replayed_request"))
        );
        let (status, body) = post(&example.url, &raw.replace("p-", "q-"), Some(&auth)).await;
        assert_eq!(
            (status, &body["code"]),
            (401, &Value::from("invalid_signature"))
        );
        assert_eq!(body["success"], false);
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        let (status, body) = post(&example.url, "{}", Some(&auth)).await;
        assert_eq!(
            (status, &body["code"]),
            (400, &Value::from("missing_fields"))
        );
        assert_eq!(body["errors"][0]["field"], "signature");
    }

    let list = server.operator(&["service-token", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("payouts") && listed.contains("live"),
        "{listed}"
    );
    assert!(listed.contains(&token[..15]), "the hint: {listed}");
    assert!(!listed.contains(&token), "never the token");

    // The token's last use reaches the list: noted in memory, kept across the snapshot's
    // reloads (every 200 ms here), written in the next batch (every 5 s).
    let verify = format!("{}/internal/v1/verify", server.internal_address);
    let service = format!("Bearer {token}");
    assert_eq!(
        post(&verify, r#"{"body":"{}"}"#, Some(&service)).await.0,
        200
    );
    let used = eventually(Duration::from_secs(20), || {
        let list = server.operator(&["service-token", "list"]);
        let listed = String::from_utf8_lossy(&list.stdout).into_owned();
        // The payouts row with two times: created, and last used.
        let row = listed
            .lines()
            .find(|l| l.starts_with("payouts") && l.matches(" UTC").count() == 2)
            .map(str::to_owned);
        std::future::ready(row)
    })
    .await;
    assert!(used.is_some(), "the token's last use was never listed");

    let revoked = server.operator(&["service-token", "revoke", "payouts"]);
    assert!(revoked.status.success());
    // Refused on every node when the command has returned.
    assert_eq!(
        post(&verify, r#"{"body":"{}"}"#, Some(&service)).await.0,
        401
    );
    let listed = server.operator(&["service-token", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("revoked"));
}

#[tokio::test]
async fn the_example_services_refuse_to_start_without_a_token_and_log_a_refused_one() {
    let mut runs = Vec::new();
    if available("python3", "--version") {
        runs.push(("python3", "examples/verify_service.py"));
    }
    if available("node", "--version") {
        runs.push(("node", "examples/verify_service.mjs"));
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    for (program, example) in runs {
        // No token: it stops at once and says what to set.
        let output = Command::new(program)
            .arg(repo_file(example))
            .env("PORT", "0")
            .env_remove("KEYWARD_SERVICE_TOKEN")
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{example} started without a token"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("KEYWARD_SERVICE_TOKEN"),
            "{example}: {stderr}"
        );

        // A token keyward does not know: the partner gets 503, the log says why.
        let unknown = keyward_core::ServiceToken::generate(&mut rand::rngs::OsRng);
        let mut child = Command::new(program)
            .arg(repo_file(example))
            .env("PORT", "0")
            .env("KEYWARD_INTERNAL_URL", &server.internal_address)
            .env(
                "KEYWARD_SERVICE_TOKEN",
                secrecy::ExposeSecret::expose_secret(&unknown),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.split_whitespace().last().unwrap().to_owned();
        let (status, body) = post(&url, "{}", Some("Bearer pk_partner_x")).await;
        assert_eq!((status, &body["code"]), (503, &Value::from("unavailable")));
        let mut logged = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut logged)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            logged.contains("configuration error") && logged.contains("401"),
            "{example}: {logged}"
        );
    }
}
