//! The partner's side: the SDK against the real server, and the partner commands of the
//! `keyward` binary (`sign`, `redeem`, `whoami`, `regenerate`) as a person runs them.

use crate::helpers::*;
use keyward_client::{Client, ClientError, ErrorCode};
use serde::Deserialize;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs the binary without blocking the runtime that the in-process server shares.
pub async fn keyward(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || run_keyward(&args, &env, stdin.as_deref()))
        .await
        .unwrap()
}

fn run_keyward(
    args: &[String],
    env: &[(String, String)],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in [
        "KEYWARD_SECRET_KEY",
        "KEYWARD_PUBLIC_KEY",
        "KEYWARD_URL",
        "KEYWARD_CREDENTIALS",
        "KEYWARD_PARTNER_CODE",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[derive(Deserialize)]
struct Vectors {
    signature_cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    secret_key: String,
    body: String,
    message_as_sent: Option<String>,
    signed_form: Option<String>,
    expect: String,
    #[serde(default)]
    uppercase_hex: bool,
    mutation: Option<serde_json::Value>,
}

#[tokio::test]
async fn keyward_sign_produces_the_signatures_node_computed() {
    let vectors: Vectors =
        serde_json::from_str(include_str!("../../../../testdata/signatures.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in vectors.signature_cases {
        if case.expect != "valid" || case.uppercase_hex || case.mutation.is_some() {
            continue;
        }
        // The Node-made signature of this case, and the body without it.
        let body: serde_json::Value = serde_json::from_str(&case.body).unwrap();
        let node_signature = body["signature"].as_str().unwrap().to_owned();
        let unsigned = case.message_as_sent.clone().unwrap();
        let key_file = dir.path().join("sk");
        std::fs::write(&key_file, format!("{}\n", case.secret_key)).unwrap();
        let mut args = vec!["sign", "--secret-key-file", key_file.to_str().unwrap()];
        if case.signed_form.as_deref() == Some("jcs") {
            args.push("--canonical");
        }
        let (ok, stdout, stderr) = keyward(&args, &[], Some(&unsigned)).await;
        assert!(ok, "{}: {stderr}", case.name);
        let signed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            signed["signature"],
            node_signature.as_str(),
            "case {:?}",
            case.name
        );
        checked += 1;
    }
    assert!(checked >= 8, "{checked}");
    // The key from the environment, and the RFC 8785 form.
    let (ok, stdout, _) = keyward(
        &["sign", "--canonical"],
        &[(
            "KEYWARD_SECRET_KEY",
            "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK",
        )],
        Some(r#"{"partner_code": "ACME", "email": "ops@acme.example"}"#),
    )
    .await;
    assert!(ok);
    assert!(stdout.starts_with(r#"{"email":"ops@acme.example","partner_code":"ACME","signature":"8d6abd806937145f7f5fbf337b618ad250964d1b39bbf610fe1524ac00293c63a05fe36e2c835e5741c0d1a9ccf9acc67d5073b159473eae78320f76ee31cefe"}"#), "{stdout}");
}

#[tokio::test]
async fn keyward_sign_explains_what_is_wrong() {
    let key = [(
        "KEYWARD_SECRET_KEY",
        "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK",
    )];
    let (ok, _, stderr) = keyward(&["sign"], &[], Some("{}")).await;
    assert!(!ok && stderr.contains("KEYWARD_SECRET_KEY"), "{stderr}");
    let (ok, _, stderr) = keyward(&["sign"], &key, Some("[1,2]")).await;
    assert!(!ok && stderr.contains("one JSON object"), "{stderr}");
    let (ok, _, stderr) = keyward(&["sign"], &key, Some(r#"{"a":1,"a":2}"#)).await;
    assert!(!ok && stderr.contains("twice"), "{stderr}");
    let (ok, _, stderr) = keyward(
        &["sign"],
        &[("KEYWARD_SECRET_KEY", "sk_partner_nope")],
        Some("{}"),
    )
    .await;
    assert!(
        !ok && stderr.contains("secret key is not valid"),
        "{stderr}"
    );
    let (ok, _, stderr) = keyward(&["sign", "--secret-key", "x"], &[], Some("{}")).await;
    assert!(
        !ok && stderr.contains("unexpected argument"),
        "no flag takes the key itself: {stderr}"
    );
}

#[tokio::test]
async fn the_partner_commands_take_a_partner_from_link_to_regenerated_keys() {
    let app = spawn_app().await;
    assert_eq!(
        app.onboard("CLI", "cli@partner.example").await.status(),
        200
    );
    let link = app.link_in_email("cli@partner.example", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.json");
    let file_arg = file.to_str().unwrap();

    // Wrong code: the link is not used.
    let (ok, _, stderr) = keyward(
        &[
            "redeem",
            &link,
            "--partner-code",
            "WRONG",
            "--out",
            file_arg,
        ],
        &[],
        None,
    )
    .await;
    assert!(
        !ok && stderr.contains("partner_code_mismatch (HTTP 422)")
            && stderr.contains("Type the partner code"),
        "{stderr}"
    );
    assert!(!file.exists());

    let (ok, stdout, stderr) = keyward(
        &["redeem", &link, "--partner-code", "cli", "--out", file_arg],
        &[],
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("0600"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["server_url"], app.address.as_str());
    assert!(saved["secret_key"]
        .as_str()
        .unwrap()
        .starts_with("sk_partner_"));
    assert!(
        !stdout.contains(saved["secret_key"].as_str().unwrap()),
        "the secret goes to the file, not the screen"
    );

    let (ok, stdout, stderr) = keyward(&["whoami", "--credentials", file_arg], &[], None).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(saved["partner_id"].as_str().unwrap()));

    let (ok, stdout, stderr) = keyward(
        &[
            "regenerate",
            "--credentials",
            file_arg,
            "--email",
            "cli@partner.example",
        ],
        &[],
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("keyward redeem"));
    let regen = app.link_in_email("cli@partner.example", 2).await;

    // Without --out: export lines.
    let (ok, stdout, stderr) =
        keyward(&["redeem", &regen, "--partner-code", "CLI"], &[], None).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("export KEYWARD_SECRET_KEY='sk_partner_"));
    let exports: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect();
    let env: Vec<(&str, &str)> = exports
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (ok, stdout, stderr) = keyward(&["whoami"], &env, None).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(saved["partner_id"].as_str().unwrap()),
        "same partner ID"
    );

    // The saved (old) keys are now refused, with the reason and what to do.
    let (ok, _, stderr) = keyward(&["whoami", "--credentials", file_arg], &[], None).await;
    assert!(!ok);
    assert!(stderr.contains("revoked_key (HTTP 401)"), "{stderr}");

    // Lost keys: no credentials needed; the answer never says whether the pair matched.
    let (ok, stdout, stderr) = keyward(
        &[
            "regenerate",
            "--lost-keys",
            "--partner-code",
            "NOBODY",
            "--email",
            "n@x.example",
            "--server",
            &app.address,
        ],
        &[],
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("If this partner code and email match"));
}

#[tokio::test]
async fn the_sdk_calls_every_route_and_its_errors_carry_the_spec_code() {
    let app = spawn_app().await;
    let client = Client::new(&app.address).unwrap();
    let message = client.onboard("SDK", "sdk@partner.example").await.unwrap();
    assert_eq!(
        message,
        "API Keys generated. Please check your email to confirm"
    );
    match client.onboard("SDK", "other@partner.example").await {
        Err(ClientError::Api {
            status: 409,
            code: ErrorCode::PartnerExists,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match client.onboard("bad code", "nope").await {
        Err(ClientError::Api {
            code: ErrorCode::InvalidField,
            errors,
            ..
        }) => assert_eq!(errors.len(), 2),
        other => panic!("{other:?}"),
    }
    let link = app.link_in_email("sdk@partner.example", 1).await;
    let wrong = client.redeem_link(&link, "NOPE").await.unwrap_err();
    assert_eq!(wrong.code(), Some(ErrorCode::PartnerCodeMismatch));
    let credentials = client.redeem_link(&link, "SDK").await.unwrap();
    let partner = client
        .with_credentials(&credentials.public_key, &credentials.secret_key)
        .unwrap();
    assert_eq!(
        partner.whoami().await.unwrap().partner_id,
        credentials.partner_id
    );
    assert_eq!(
        partner
            .clone()
            .canonical()
            .whoami()
            .await
            .unwrap()
            .partner_code,
        "SDK"
    );
    partner
        .regenerate("SDK", "sdk@partner.example")
        .await
        .unwrap();
    assert_eq!(
        partner
            .regenerate("OTHER", "sdk@partner.example")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::PartnerMismatch)
    );
    client
        .request_new_keys("SDK", "sdk@partner.example")
        .await
        .unwrap();
    let used = client.redeem_link(&link, "SDK").await.unwrap_err();
    assert_eq!(used.code(), Some(ErrorCode::LinkUsed));
    assert!(used.advice().contains("once"));
    let unreachable = Client::new("http://127.0.0.1:9")
        .unwrap()
        .onboard("X", "x@y.example")
        .await
        .unwrap_err();
    assert!(matches!(unreachable, ClientError::Transport(_)));
}

#[tokio::test]
async fn the_cli_rotates_with_an_overlap_sets_the_allow_list_and_retires_the_old_keys() {
    let app = spawn_app().await;
    let email = "rotate@partner.example";
    let link = {
        assert_eq!(app.onboard("ROTATECLI", email).await.status(), 200);
        app.link_in_email(email, 1).await
    };
    let dir = tempfile::tempdir().unwrap();
    let old_file = dir.path().join("old.json");
    let old_arg = old_file.to_str().unwrap();
    let (ok, _, stderr) = keyward(
        &[
            "redeem",
            &link,
            "--partner-code",
            "ROTATECLI",
            "--out",
            old_arg,
        ],
        &[],
        None,
    )
    .await;
    assert!(ok, "{stderr}");

    // A bad duration is refused before anything is sent.
    let (ok, _, stderr) = keyward(
        &[
            "regenerate",
            "--credentials",
            old_arg,
            "--email",
            email,
            "--overlap",
            "8d",
        ],
        &[],
        None,
    )
    .await;
    assert!(!ok && stderr.contains("at most 7 days"), "{stderr}");
    let (ok, stdout, stderr) = keyward(
        &[
            "regenerate",
            "--credentials",
            old_arg,
            "--email",
            email,
            "--overlap",
            "24h",
        ],
        &[],
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("for 1 day after that"), "{stdout}");
    let regen = app.link_in_email(email, 2).await;
    let new_file = dir.path().join("new.json");
    let new_arg = new_file.to_str().unwrap();
    let (ok, _, stderr) = keyward(
        &[
            "redeem",
            &regen,
            "--partner-code",
            "ROTATECLI",
            "--out",
            new_arg,
        ],
        &[],
        None,
    )
    .await;
    assert!(ok, "{stderr}");

    let (ok, stdout, stderr) = keyward(&["whoami", "--credentials", old_arg], &[], None).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("this is your retiring pair"), "{stdout}");
    let (ok, stdout, _) = keyward(&["whoami", "--credentials", new_arg], &[], None).await;
    assert!(ok && stdout.contains("key_expires_at  never"), "{stdout}");
    assert!(stdout.contains("allowed_ips     any address"), "{stdout}");

    // The allow-list: a list that leaves this machine out needs confirmation.
    let (ok, _, stderr) = keyward(
        &["allow-ips", "--credentials", new_arg, "2001:db8::/48"],
        &[],
        None,
    )
    .await;
    assert!(!ok && stderr.contains("would_lock_out"), "{stderr}");
    let (ok, stdout, stderr) = keyward(
        &[
            "allow-ips",
            "--credentials",
            new_arg,
            "127.0.0.1",
            "2001:DB8::/48",
        ],
        &[],
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("  2001:db8::/48"), "{stdout}");
    let (ok, stdout, _) = keyward(&["whoami", "--credentials", new_arg], &[], None).await;
    assert!(
        ok && stdout.contains("allowed_ips     127.0.0.1, 2001:db8::/48"),
        "{stdout}"
    );
    let (ok, stdout, stderr) =
        keyward(&["allow-ips", "--credentials", new_arg, "--any"], &[], None).await;
    assert!(ok && stdout.contains("any address"), "{stderr}");

    let (ok, stdout, stderr) =
        keyward(&["retire-old-keys", "--credentials", new_arg], &[], None).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Revoked 1"), "{stdout}");
    let (ok, _, stderr) = keyward(&["whoami", "--credentials", old_arg], &[], None).await;
    assert!(!ok && stderr.contains("revoked_key"), "{stderr}");

    // A wrong signature is explained with the server's hashes.
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&new_file).unwrap()).unwrap();
    saved["secret_key"] = serde_json::json!("sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK");
    let wrong_file = dir.path().join("wrong.json");
    std::fs::write(&wrong_file, saved.to_string()).unwrap();
    let (ok, _, stderr) = keyward(
        &["whoami", "--credentials", wrong_file.to_str().unwrap()],
        &[],
        None,
    )
    .await;
    assert!(!ok, "signed with another key");
    assert!(stderr.contains("invalid_signature"), "{stderr}");
    assert!(stderr.contains("keyward sign --explain"), "{stderr}");
}
