//! The partner's commands: `keyward sign`, `keyward redeem`, `keyward whoami`,
//! `keyward regenerate`. Secrets come from files or the environment, never from a flag value
//! (which would land in shell history and the process list).

use crate::{Client, ClientError, Credentials, MessageForm, SecretKey};
use clap::{Args, Subcommand};
use keyward_core::signature::{sign_body, SignedBody};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const DEFAULT_CREDENTIALS: &str = "keyward-credentials.json";

#[derive(Debug, Subcommand)]
pub enum PartnerCommand {
    /// Sign a JSON body read on stdin; write it with `signature` on stdout.
    Sign {
        /// A file holding the secret key (else KEYWARD_SECRET_KEY).
        #[arg(long, value_name = "FILE")]
        secret_key_file: Option<PathBuf>,
        /// Sign the RFC 8785 form (members sorted) instead of the body as sent.
        #[arg(long)]
        canonical: bool,
        /// Print both messages the server checks and their SHA-256, to compare with the
        /// `message_sha256` of an invalid_signature answer (no key needed for this part).
        #[arg(long)]
        explain: bool,
    },
    /// Redeem a one-time link; save the credentials to a 0600 file, or print `export` lines.
    Redeem {
        /// The link from the email (https://…/link/…).
        link: String,
        /// The partner code the link was sent for.
        #[arg(long)]
        partner_code: String,
        /// Write the credentials (and the server URL) to this file, mode 0600.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check that your keys and signing work (a signed ping).
    Whoami(SavedCredentials),
    /// Ask for new keys: a one-time link is emailed to the partner's registered address.
    Regenerate {
        #[command(flatten)]
        saved: SavedCredentials,
        /// The partner's registered email address.
        #[arg(long)]
        email: String,
        /// The partner code (default: the one in the credentials).
        #[arg(long)]
        partner_code: Option<String>,
        /// You lost your keys: ask without signing (the server answers the same either way).
        #[arg(long)]
        lost_keys: bool,
        /// Keep the current keys working this long after the link is used (e.g. 24h, 90m,
        /// 7d; at most 7 days), so every system can switch without an outage.
        #[arg(long, value_name = "DURATION", value_parser = parse_overlap)]
        overlap: Option<std::time::Duration>,
    },
    /// End the retiring key pair's overlap now (signed with the current pair).
    RetireOldKeys(SavedCredentials),
    /// Restricted and test keys (signed with the primary pair): create, list, revoke.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Set the IP allow-list: requests are accepted only from these addresses or CIDR blocks.
    AllowIps {
        #[command(flatten)]
        saved: SavedCredentials,
        /// IPv4/IPv6 addresses or CIDR blocks (at most 20).
        #[arg(required_unless_present = "any", conflicts_with = "any")]
        entries: Vec<String>,
        /// Clear the list: accept requests from any address.
        #[arg(long)]
        any: bool,
        /// Apply a list that leaves out this machine's own address.
        #[arg(long)]
        confirm_lock_out: bool,
    },
}

/// `keyward key …`: the partner's own key pairs (SPEC §8.1).
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Ask for a new restricted (or test) pair: a one-time link to it is emailed to the
    /// partner's registered address; redeem it with `keyward redeem`.
    Create {
        #[command(flatten)]
        saved: SavedCredentials,
        /// What the key is for (1-64 characters), e.g. "reporting job".
        #[arg(long)]
        name: String,
        /// A scope the key may use (repeat, or comma-separate), among the exchange's.
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// A test key (pk_test_partner_…): never reaches the live service.
        #[arg(long)]
        test: bool,
        /// The key stops working this many days after it is made (1-366).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u16).range(1..=366))]
        expires_in_days: Option<u16>,
    },
    /// List every key pair that works, with its kind, scopes, mode and expiry.
    List {
        #[command(flatten)]
        saved: SavedCredentials,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one restricted pair by its id (as `keyward key list` shows it).
    Revoke {
        #[command(flatten)]
        saved: SavedCredentials,
        key_id: String,
    },
}

/// `24h`, `90m`, `7d`, `3600s` or plain seconds; at most 7 days.
fn parse_overlap(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => std::time::Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{e}: write it like 24h, 90m or 7d"))?,
    };
    if duration.as_secs() > keyward_core::Overlap::MAX_SECONDS.unsigned_abs() {
        return Err("the overlap is at most 7 days (7d)".into());
    }
    Ok(duration)
}

#[derive(Debug, Args)]
pub struct SavedCredentials {
    /// The credentials file written by `keyward redeem --out` (else KEYWARD_CREDENTIALS, else
    /// KEYWARD_PUBLIC_KEY + KEYWARD_SECRET_KEY + KEYWARD_URL, else ./keyward-credentials.json).
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// The server (default: the one in the credentials, or KEYWARD_URL).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

/// What `redeem --out` writes.
#[derive(Serialize, Deserialize)]
struct SavedFile {
    server_url: String,
    #[serde(flatten)]
    credentials: Credentials,
}

async fn key_command(command: KeyCommand) -> Result<(), String> {
    match command {
        KeyCommand::Create {
            saved,
            name,
            scopes,
            test,
            expires_in_days,
        } => {
            let (client, _) = load(&saved)?;
            let scopes: Vec<&str> = scopes.iter().map(|s| s.trim()).collect();
            let mode = if test {
                keyward_core::KeyMode::Test
            } else {
                keyward_core::KeyMode::Live
            };
            let message = client
                .create_key(&name, &scopes, mode, expires_in_days)
                .await
                .map_err(explain)?;
            println!("{message}");
            println!("Then: keyward redeem LINK --partner-code CODE --out FILE");
            Ok(())
        }
        KeyCommand::List { saved, json } => {
            let (client, _) = load(&saved)?;
            let keys = client.list_keys().await.map_err(explain)?;
            if json {
                let text = serde_json::to_string_pretty(&keys).map_err(|e| e.to_string())?;
                println!("{text}");
                return Ok(());
            }
            println!(
                "{:<36}  {:<10}  {:<4}  {:<8}  {:<24}  {:<24}  name / scopes",
                "key_id", "kind", "mode", "state", "expires_at", "last_used_at"
            );
            for key in keys {
                println!(
                    "{:<36}  {:<10}  {:<4}  {:<8}  {:<24}  {:<24}  {}{}  ({})",
                    key.key_id,
                    key.kind,
                    key.mode,
                    key.state,
                    key.expires_at.as_deref().unwrap_or("never"),
                    key.last_used_at.as_deref().unwrap_or("never"),
                    key.name.map(|n| format!("\"{n}\" ")).unwrap_or_default(),
                    if key.scopes.is_empty() {
                        "all power".to_owned()
                    } else {
                        key.scopes.join(" ")
                    },
                    key.hint,
                );
            }
            Ok(())
        }
        KeyCommand::Revoke { saved, key_id } => {
            let (client, _) = load(&saved)?;
            match client.revoke_key(key_id.trim()).await.map_err(explain)? {
                0 => println!("That key pair was revoked already."),
                _ => println!("Revoked: no node accepts that key pair any more."),
            }
            Ok(())
        }
    }
}

/// Runs a partner command; the error is what the user reads.
pub async fn run(command: PartnerCommand) -> Result<(), String> {
    match command {
        PartnerCommand::Sign {
            secret_key_file,
            canonical,
            explain,
        } => sign(secret_key_file.as_deref(), canonical, explain),
        PartnerCommand::Redeem {
            link,
            partner_code,
            out,
        } => redeem(&link, &partner_code, out.as_deref()).await,
        PartnerCommand::Whoami(saved) => {
            let (client, _) = load(&saved)?;
            let me = client.whoami().await.map_err(explain)?;
            println!("Your request is signed correctly.");
            println!(
                "partner_id      {}\npartner_code    {}\nkey_created_at  {}",
                me.partner_id, me.partner_code, me.key_created_at
            );
            println!("key_id          {}", me.key_id);
            match &me.name {
                Some(name) => println!("kind            {} \"{name}\"", me.kind),
                None => println!("kind            {}", me.kind),
            }
            println!("mode            {}", me.mode);
            if me.scopes.is_empty() {
                println!("scopes          (the exchange has none: every key may do everything)");
            } else {
                println!("scopes          {}", me.scopes.join(" "));
            }
            match &me.key_expires_at {
                Some(at) if me.state == "retiring" => println!(
                    "key_expires_at  {at}  (this is your retiring pair: switch to the new one before then)"
                ),
                Some(at) => println!("key_expires_at  {at}  (switch to another pair before then)"),
                None => println!("key_expires_at  never"),
            }
            if me.allowed_ips.is_empty() {
                println!("allowed_ips     any address");
            } else {
                println!("allowed_ips     {}", me.allowed_ips.join(", "));
            }
            Ok(())
        }
        PartnerCommand::Key(command) => key_command(command).await,
        PartnerCommand::RetireOldKeys(saved) => {
            let (client, _) = load(&saved)?;
            match client.retire_old_keys().await.map_err(explain)? {
                0 => println!("You had no retiring key pair: nothing was revoked."),
                n => println!("Revoked {n} retiring key pair: only your current keys work now."),
            }
            Ok(())
        }
        PartnerCommand::AllowIps {
            saved,
            entries,
            any: _,
            confirm_lock_out,
        } => {
            let (client, _) = load(&saved)?;
            let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
            let list = client
                .set_allowed_ips(&entries, confirm_lock_out)
                .await
                .map_err(explain)?;
            if list.is_empty() {
                println!("Your allow-list is empty: requests are accepted from any address.");
            } else {
                println!("Requests are now accepted only from:");
                for entry in list {
                    println!("  {entry}");
                }
            }
            Ok(())
        }
        PartnerCommand::Regenerate {
            saved,
            email,
            partner_code,
            lost_keys,
            overlap,
        } => {
            if lost_keys {
                if overlap.is_some() {
                    return Err("--overlap needs your current keys: a lost-keys request always revokes the old pair when the link is used".into());
                }
                let code = partner_code.ok_or("--lost-keys needs --partner-code")?;
                let server = saved
                    .server
                    .or_else(|| std::env::var("KEYWARD_URL").ok())
                    .ok_or("give --server URL or set KEYWARD_URL")?;
                let message = Client::new(&server)
                    .map_err(explain)?
                    .request_new_keys(&code, &email)
                    .await
                    .map_err(explain)?;
                println!("{message}");
                return Ok(());
            }
            let (client, saved_code) = load(&saved)?;
            let code = partner_code.or(saved_code).ok_or("give --partner-code")?;
            let message = client
                .regenerate_with_overlap(&code, &email, overlap.unwrap_or_default())
                .await
                .map_err(explain)?;
            println!("{message}");
            println!("Open the link in the email, or run: keyward redeem <link> --partner-code {code} --out <file>");
            Ok(())
        }
    }
}

fn sign(secret_key_file: Option<&Path>, canonical: bool, explain: bool) -> Result<(), String> {
    let secret_text = match secret_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("could not read {}: {e}", path.display()))?,
        ),
        None => std::env::var("KEYWARD_SECRET_KEY").ok(),
    };
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| format!("could not read stdin: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    if explain {
        let text =
            explanation(&body).map_err(|e| format!("stdin must hold one JSON object: {e}"))?;
        write!(stdout, "{text}").map_err(|e| e.to_string())?;
        if secret_text.is_none() {
            return writeln!(stdout, "(no secret key given: nothing signed)")
                .map_err(|e| e.to_string());
        }
    }
    let secret_text = secret_text.ok_or("give --secret-key-file FILE or set KEYWARD_SECRET_KEY")?;
    let secret = SecretKey::parse_or_legacy(secret_text.trim())
        .map_err(|e| format!("the secret key is not valid: {e}"))?;
    let form = if canonical {
        MessageForm::Canonical
    } else {
        MessageForm::AsSent
    };
    let signed = sign_body(&body, &secret, form)
        .map_err(|e| format!("stdin must hold one JSON object: {e}"))?;
    if explain {
        let signature = keyward_core::signature::sign_message(
            &secret,
            &SignedBody::parse(signed.as_bytes())
                .map_err(|e| e.to_string())?
                .message(form),
        );
        let which = if canonical { "canonical" } else { "as sent" };
        writeln!(stdout, "signature ({which}):\n  {signature}\nsigned body:")
            .map_err(|e| e.to_string())?;
    }
    writeln!(stdout, "{signed}").map_err(|e| e.to_string())
}

/// Both messages of SPEC §2 for `raw` (any `signature` member removed) and their SHA-256:
/// what the server hashes into an invalid_signature answer's `message_sha256`.
fn explanation(raw: &[u8]) -> Result<String, keyward_core::signature::BodyError> {
    let body = SignedBody::parse(raw)?;
    let hashes = body.message_hashes();
    Ok(format!(
        "as sent (JSON.stringify of the body without `signature`):\n  message  {}\n  sha256   {}\n\
         canonical (RFC 8785: members sorted):\n  message  {}\n  sha256   {}\n\
         Compare these hashes with data.message_sha256 of an invalid_signature answer: where one\n\
         matches, the message is right and the key or the hex is wrong; where neither does, the\n\
         message you signed differs (member order, spaces, number or escape forms).\n",
        body.message(MessageForm::AsSent),
        hashes.as_sent,
        body.message(MessageForm::Canonical),
        hashes.canonical,
    ))
}

async fn redeem(link: &str, partner_code: &str, out: Option<&Path>) -> Result<(), String> {
    let (server, _) = link
        .rsplit_once("/link/")
        .ok_or("that is not a keyward link: it should look like https://…/link/<token>")?;
    let client = Client::new(server).map_err(explain)?;
    if let Some(out) = out {
        if out.exists() {
            return Err(format!(
                "{} exists: choose another file (a link works once, so nothing was used)",
                out.display()
            ));
        }
    }
    let credentials = client
        .redeem_link(link, partner_code)
        .await
        .map_err(explain)?;
    match out {
        Some(out) => {
            let saved = SavedFile {
                server_url: server.to_owned(),
                credentials,
            };
            write_private(
                out,
                &serde_json::to_string_pretty(&saved).map_err(|e| e.to_string())?,
            )?;
            println!(
                "Saved the credentials of {} to {} (mode 0600).",
                saved.credentials.partner_code,
                out.display()
            );
            println!("The secret key is not shown again: keep that file safe. Test it with: keyward whoami --credentials {}", out.display());
        }
        None => {
            // What a server sends is checked before it reaches a shell: a malicious or broken
            // server cannot make these lines run anything.
            for line in export_lines(server, &credentials)? {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// `export NAME='value'` lines for a shell, each value checked against its format and quoted.
fn export_lines(server: &str, credentials: &crate::Credentials) -> Result<Vec<String>, String> {
    let refuse =
        |what: &str| format!("the server sent a {what} that is not well formed: not printed");
    let url = url::Url::parse(server).map_err(|_| refuse("URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse("URL"));
    }
    crate::PublicKey::parse(&credentials.public_key).map_err(|_| refuse("public key"))?;
    crate::SecretKey::parse(&credentials.secret_key).map_err(|_| refuse("secret key"))?;
    keyward_core::PartnerId::parse(&credentials.partner_id).ok_or_else(|| refuse("partner ID"))?;
    keyward_core::PartnerCode::parse(&credentials.partner_code)
        .ok_or_else(|| refuse("partner code"))?;
    Ok([
        ("KEYWARD_URL", server),
        ("KEYWARD_PARTNER_ID", credentials.partner_id.as_str()),
        ("KEYWARD_PARTNER_CODE", credentials.partner_code.as_str()),
        ("KEYWARD_PUBLIC_KEY", credentials.public_key.as_str()),
        ("KEYWARD_SECRET_KEY", credentials.secret_key.as_str()),
    ]
    .iter()
    .map(|(name, value)| format!("export {name}={}", shell_quote(value)))
    .collect())
}

/// Single-quoted for a POSIX shell, where nothing inside single quotes is interpreted; a
/// single quote itself is closed, escaped and reopened.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("could not create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("could not write {}: {e}", path.display()))
}

/// The client of the saved credentials, and the partner code saved with them.
fn load(saved: &SavedCredentials) -> Result<(crate::PartnerClient, Option<String>), String> {
    let file = saved
        .credentials
        .clone()
        .or_else(|| std::env::var_os("KEYWARD_CREDENTIALS").map(PathBuf::from));
    let from_env = (
        std::env::var("KEYWARD_PUBLIC_KEY"),
        std::env::var("KEYWARD_SECRET_KEY"),
    );
    let (server, public, secret, code) = match (file, from_env) {
        (None, (Ok(public), Ok(secret))) => (
            std::env::var("KEYWARD_URL").ok(),
            public,
            secret,
            std::env::var("KEYWARD_PARTNER_CODE").ok(),
        ),
        (file, _) => {
            let path = file.unwrap_or_else(|| PathBuf::from(DEFAULT_CREDENTIALS));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!("could not read the credentials file {}: {e}. Run `keyward redeem <link> --partner-code CODE --out {}` first, or set KEYWARD_PUBLIC_KEY and KEYWARD_SECRET_KEY.", path.display(), path.display())
            })?;
            let saved: SavedFile = serde_json::from_str(&text).map_err(|e| {
                format!("{} is not a keyward credentials file: {e}", path.display())
            })?;
            let c = saved.credentials;
            (
                Some(saved.server_url),
                c.public_key,
                c.secret_key,
                Some(c.partner_code),
            )
        }
    };
    let server = saved
        .server
        .clone()
        .or(server)
        .ok_or("give --server URL or set KEYWARD_URL")?;
    let client = Client::new(&server)
        .map_err(explain)?
        .with_credentials(&public, &secret)
        .map_err(explain)?;
    Ok((client, code))
}

/// An error as the user should read it: what happened, then what to do.
fn explain(error: ClientError) -> String {
    match &error {
        ClientError::Api {
            status,
            code,
            message,
            errors,
            data,
        } => {
            let mut text = format!("{code} (HTTP {status}): {message}");
            for problem in errors {
                text.push_str(&format!("\n  - {}: {}", problem.field, problem.problem));
            }
            if let Some(hashes) = data.as_ref().map(|d| &d["message_sha256"]) {
                if let (Some(as_sent), Some(canonical)) =
                    (hashes["as_sent"].as_str(), hashes["canonical"].as_str())
                {
                    text.push_str(&format!(
                        "\nThe server signed these messages (SHA-256):\n  as sent    {as_sent}\n  canonical  {canonical}\nRun `keyward sign --explain` on the body you sent to compare."
                    ));
                }
            }
            if let Some(skew) = data.as_ref().and_then(|d| d["skew_ms"].as_i64()) {
                text.push_str(&format!(
                    "\nYour timestamp was {} ms {} the server's clock.",
                    skew.unsigned_abs(),
                    if skew > 0 { "ahead of" } else { "behind" }
                ));
            }
            if message != code.message() {
                text.push_str(&format!("\nWhat to do: {}", code.message()));
            }
            text
        }
        other => format!("{other}\nWhat to do: {}", other.advice()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_explained_with_what_to_do() {
        let text = explain(ClientError::Api {
            status: 401,
            code: crate::ErrorCode::RevokedKey,
            message: "revoked".into(),
            errors: vec![],
            data: None,
        });
        assert!(text.starts_with("revoked_key (HTTP 401): revoked"));
        assert!(text.contains("What to do: This public key was revoked"));
    }

    #[test]
    fn export_lines_are_checked_and_quoted() {
        let good = crate::Credentials {
            partner_id: "0190c3a0-7b1e-7cc2-9d1a-1f2e3d4c5b6a".into(),
            partner_code: "ACME".into(),
            public_key: "pk_partner_BSB8wIYc6sE7hIysyRYv9Z0oCJif3k38fgkq".into(),
            secret_key: "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK".into(),
            old_keys_expire_at: None,
            key: None,
        };
        let lines = export_lines("http://127.0.0.1:8080", &good).unwrap();
        assert_eq!(lines[2], "export KEYWARD_PARTNER_CODE='ACME'");
        let evil = crate::Credentials {
            partner_code: "x'; rm -rf ~; echo '".into(),
            ..good.clone()
        };
        assert!(export_lines("http://127.0.0.1:8080", &evil).is_err());
        assert!(export_lines("javascript:alert(1)", &good).is_err());
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
    }

    #[test]
    fn every_code_has_advice() {
        for code in crate::ErrorCode::ALL {
            assert!(code.message().len() > 20, "{code}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let secret = "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK";
        let client = Client::new("http://127.0.0.1:1").and_then(|c| {
            c.with_credentials("pk_partner_BSB8wIYc6sE7hIysyRYv9Z0oCJif3k38fgkq", secret)
        });
        assert!(
            client.is_ok_and(|c| !format!("{c:?}").contains(secret) && c.secret_key() == secret)
        );
    }
}
