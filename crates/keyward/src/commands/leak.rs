//! `keyward leak report`: a token found in public, reported by an operator (SPEC §9.2). The
//! same work as GitHub's secret-scanning endpoint: a partner's pair is revoked (or, with
//! `KEYWARD_LEAK_ACTION=notify`, only announced), the partner emailed, the leak audited.

use super::output::operator_name;
use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use keyward_core::scan::{find_tokens, TokenKind};
use keyward_server::config::Settings;
use keyward_server::flows::leaks::{self, Leak, Outcome, Reporter, Verdict};
use std::io::Read;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum LeakAction {
    /// Report a token found in public: a partner's pair is revoked on every node when this
    /// returns (KEYWARD_LEAK_ACTION=notify: only emailed), the partner told where it was found.
    Report(ReportArgs),
}

#[derive(Args)]
pub struct ReportArgs {
    /// The token (a public key, a secret key or a service token).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    token: Option<String>,
    /// Report every token in this file (`-`: standard input), found as `keyward scan` finds
    /// them.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Where it was found (the partner's email names it).
    #[arg(long)]
    url: Option<String>,
    /// One JSON object per token: {kind, hint, sha256, result, partner_code}.
    #[arg(long)]
    json: bool,
    /// Who reports it, for the audit log (default: $USER).
    #[arg(long)]
    operator: Option<String>,
}

pub async fn leak(settings: &Settings, action: LeakAction) -> anyhow::Result<()> {
    let LeakAction::Report(args) = action;
    let tokens: Vec<String> = match (&args.token, &args.file) {
        (Some(token), _) => {
            let token = token.trim().to_owned();
            if TokenKind::of(&token).is_none() {
                bail!("this is not a keyward token: a pk_partner_, sk_partner_, pk_test_partner_, sk_test_partner_ or kw_service_ prefix, 30 letters and digits, and a valid checksum (a mistyped or truncated token fails the checksum)");
            }
            vec![token]
        }
        (None, Some(path)) => {
            let mut text = Vec::new();
            if path.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut text)
                    .context("could not read standard input")?;
            } else {
                text = std::fs::read(path)
                    .with_context(|| format!("could not read {}", path.display()))?;
            }
            let tokens: Vec<String> = find_tokens(&text)
                .into_iter()
                .map(|f| f.token.to_owned())
                .collect();
            if tokens.is_empty() {
                bail!("no keyward token in {}: nothing reported", path.display());
            }
            tokens
        }
        (None, None) => bail!("give a TOKEN, or --file FILE"),
    };
    let ctx = super::flows_context(settings).await?;
    let operator = operator_name(args.operator);
    let reported: Vec<Leak<'_>> = tokens
        .iter()
        .map(|token| Leak {
            token,
            url: args.url.as_deref(),
            source: None,
        })
        .collect();
    let verdicts = leaks::report(&ctx, &reported, Reporter::Operator(&operator)).await?;
    for (token, verdict) in tokens.iter().zip(&verdicts) {
        print_verdict(token, verdict, args.json);
    }
    Ok(())
}

fn print_verdict(token: &str, verdict: &Verdict, json: bool) {
    let hint = verdict.kind.map_or_else(String::new, |k| {
        format!("{}…", &token[..k.prefix().len() + 4])
    });
    let kind = verdict.kind.map_or("unknown", TokenKind::name);
    let (result, partner, text) = match &verdict.outcome {
        Outcome::NotOurs => (
            "not_ours",
            None,
            "not a token of this keyward (never issued here): nothing to do".to_owned(),
        ),
        Outcome::Revoked { partner, link } => (
            "revoked",
            Some(partner.as_str()),
            format!(
                "revoked on every node; partner {partner} emailed{}",
                if *link {
                    " with a link to new keys"
                } else {
                    ""
                }
            ),
        ),
        Outcome::Notified { partner } => (
            "notified",
            Some(partner.as_str()),
            format!("partner {partner} emailed; the pair still works (KEYWARD_LEAK_ACTION=notify)"),
        ),
        Outcome::AlreadyRevoked { partner } => (
            "already_revoked",
            Some(partner.as_str()),
            format!("of partner {partner}, already revoked: audited, nobody emailed"),
        ),
        Outcome::ServiceToken { name } => (
            "service_token",
            None,
            format!("service token {name}: create a new one, move the service to it, then `keyward service-token revoke {name}`"),
        ),
    };
    if json {
        let line = serde_json::json!({
            "kind": kind,
            "hint": hint,
            "sha256": verdict.token_sha256,
            "result": result,
            "partner_code": partner,
        });
        println!("{line}");
    } else {
        println!("{kind} {hint}: {text}");
    }
}
