//! `keyward partner …`: find partners, look at one, act in an emergency, invite. Every change
//! names its operator (`--operator`, else `$USER`) and reason in the audit log, and runs through
//! the same flows as the server.

use super::output::{age, allow_list_text, parse_time, rfc3339, time_text};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use keyward_core::{AllowedIps, Email, PartnerCode, PartnerStatus};
use keyward_server::config::Settings;
use keyward_server::flows::admin::{self, Operator};
use keyward_server::flows::Context;
use keyward_server::store::PartnerFilter;
use serde_json::json;

#[derive(Subcommand)]
pub enum PartnerAction {
    /// Find partners: newest first, with key hint, key age, last use and allow-list size.
    List(ListArgs),
    /// One partner: status, keys (current, retiring, revoked), links and recent events.
    Show {
        code: String,
        #[arg(long)]
        json: bool,
    },
    /// Refuse every request of this partner until it is activated again.
    Suspend {
        code: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a suspension.
    Activate {
        code: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Allow requests only from these addresses or CIDR blocks (none: allow any).
    AllowIps {
        code: String,
        cidrs: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Emergency: revoke every current and retiring key pair now, on every node by the time
    /// this returns.
    RevokeKeys {
        code: String,
        #[arg(long)]
        reason: Option<String>,
        /// Email the partner a regeneration link (its way back in).
        #[arg(long)]
        notify: bool,
    },
    /// Email a pending partner a fresh onboarding link.
    ResendLink {
        code: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Create a pending partner and email its onboarding link (for KEYWARD_ONBOARDING=invite).
    Invite {
        code: String,
        email: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete a pending partner that never activated; its code becomes free.
    Release {
        code: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Move partners in with the keys they hold (JSON lines: partner_code, email, public_key,
    /// secret_key, and optionally created_at and allowed_ips; `-` reads stdin). Repeatable:
    /// rows already imported are skipped.
    Import {
        file: std::path::PathBuf,
        /// Check every row and report; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Exit with an error status when any row was refused (the others are still imported).
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Args)]
pub struct ListArgs {
    /// pending, active or suspended.
    #[arg(long)]
    status: Option<String>,
    /// A fragment of the partner code (case-insensitive; `*` for any run of characters).
    #[arg(long)]
    code_like: Option<String>,
    /// A fragment of the email address (case-insensitive; `*` for any run of characters).
    #[arg(long)]
    email_like: Option<String>,
    /// Created since: an RFC 3339 time, or a duration ago such as 7d or 12h.
    #[arg(long, value_parser = parse_time)]
    created_since: Option<i64>,
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub async fn partner(
    settings: &Settings,
    operator: &str,
    action: PartnerAction,
) -> anyhow::Result<()> {
    // The queries read the store alone; the actions run the flows, whose context holds the
    // master key's cipher (read only then).
    let store = keyward_server::startup::open_migrated_store(settings).await?;
    let clock: std::sync::Arc<dyn keyward_server::clock::Clock> =
        std::sync::Arc::new(keyward_server::clock::SystemClock);
    let shared = std::sync::Arc::new(settings.clone());
    let context = || async {
        let cipher = keyward_server::flows::master_key::cipher_for(settings, &store).await?;
        anyhow::Ok(Context::new(
            shared.clone(),
            store.clone(),
            cipher,
            clock.clone(),
        ))
    };
    // Suspending, activating and releasing encrypt nothing: they work with the database's URL
    // alone, as an emergency may require.
    let keyless = || Context::without_master_key(shared.clone(), store.clone(), clock.clone());
    let now_ms = chrono::Utc::now().timestamp_millis();
    let code = |text: &str| {
        PartnerCode::parse(text).context("a partner code is 1 to 64 of A-Z a-z 0-9 . _ -")
    };
    fn by<'a>(name: &'a str, reason: &'a Option<String>) -> Operator<'a> {
        Operator {
            name,
            reason: reason.as_deref(),
        }
    }
    match action {
        PartnerAction::Import {
            file,
            dry_run,
            strict,
        } => {
            let options = super::import::ImportOptions { dry_run, strict };
            super::import::import(context(), &file, operator, options).await?;
        }
        PartnerAction::List(args) => list(&store, args, now_ms).await?,
        PartnerAction::Show { code: text, json } => {
            show(&admin::show(&store, &code(&text)?).await?, json, now_ms)
        }
        PartnerAction::Suspend { code: text, reason } => {
            let partner = admin::suspend(&keyless(), &code(&text)?, by(operator, &reason)).await?;
            println!(
                "{} is suspended: its requests get 403 partner_suspended on every node",
                partner.code
            );
        }
        PartnerAction::Activate { code: text, reason } => {
            let partner = admin::activate(&keyless(), &code(&text)?, by(operator, &reason)).await?;
            println!("{} is active", partner.code);
        }
        PartnerAction::Release { code: text, reason } => {
            let partner = admin::release(&keyless(), &code(&text)?, by(operator, &reason)).await?;
            println!(
                "{} is released: the code is free to onboard again",
                partner.code
            );
        }
        PartnerAction::AllowIps {
            code: text,
            cidrs,
            reason,
        } => {
            let list = AllowedIps::parse(cidrs.iter().map(String::as_str))?;
            let partner = admin::set_allowed_ips(
                &context().await?,
                &code(&text)?,
                list,
                by(operator, &reason),
            )
            .await?;
            println!(
                "{} may call from: {} (the partner is emailed a notice)",
                partner.code,
                allow_list_text(&partner.allowed_ips)
            );
        }
        PartnerAction::RevokeKeys {
            code: text,
            reason,
            notify,
        } => {
            let done = admin::revoke_keys(
                &context().await?,
                &code(&text)?,
                by(operator, &reason),
                notify,
            )
            .await?;
            println!(
                "{}: {} key pair(s) revoked; every node refuses them from now on",
                done.partner.code, done.keys
            );
            if done.notified {
                println!("A regeneration link was emailed to the partner's registered address.");
            } else if notify {
                println!(
                    "No link was emailed: the partner is {}, not active.",
                    done.partner.status.as_str()
                );
            } else {
                println!("The partner has no keys now. To let it back in: `keyward partner revoke-keys {} --notify` emails it a regeneration link.", done.partner.code);
            }
        }
        PartnerAction::ResendLink { code: text, reason } => {
            let partner =
                admin::resend_link(&context().await?, &code(&text)?, by(operator, &reason)).await?;
            println!(
                "A fresh onboarding link was emailed to {}'s registered address; earlier ones no longer work",
                partner.code
            );
        }
        PartnerAction::Invite {
            code: text,
            email,
            reason,
        } => {
            let email = Email::parse(&email).context("that is not an email address")?;
            let partner = admin::invite(
                &context().await?,
                &code(&text)?,
                &email,
                by(operator, &reason),
            )
            .await?;
            println!(
                "{} is invited: its onboarding link was emailed to {}",
                partner.code, partner.email
            );
        }
    }
    Ok(())
}

async fn list(
    store: &keyward_server::store::Store,
    args: ListArgs,
    now: i64,
) -> anyhow::Result<()> {
    let status = args
        .status
        .as_deref()
        .map(|s| PartnerStatus::parse(s).context("--status is pending, active or suspended"))
        .transpose()?;
    let filter = PartnerFilter {
        status,
        code_like: args.code_like,
        email_like: args.email_like,
        created_since: args.created_since,
        limit: args.limit.clamp(1, 10_000),
    };
    let partners = admin::list(store, &filter).await?;
    if args.json {
        for p in &partners {
            let line = json!({
                "partner_id": p.partner.id.as_str(), "code": p.partner.code.as_str(),
                "email": p.partner.email.as_str(), "status": p.partner.status.as_str(),
                "created_at": rfc3339(Some(p.partner.created_at)),
                "key_hint": p.key_hint, "key_created_at": rfc3339(p.key_created_at),
                "key_last_used_at": rfc3339(p.key_last_used_at),
                "allowed_ips": p.partner.allowed_ips.len(),
                "pairs": p.pairs.iter().map(|k| pair_json(k, now)).collect::<Vec<_>>(),
            });
            println!("{line}");
        }
        return Ok(());
    }
    if partners.is_empty() {
        println!("no partner matches");
        return Ok(());
    }
    println!(
        "{:<20} {:<30} {:<9} {:<20} {:>7} {:>9} {:>4}",
        "code", "email", "status", "key", "key age", "last used", "ips"
    );
    for p in &partners {
        println!(
            "{:<20} {:<30} {:<9} {:<20} {:>7} {:>9} {:>4}",
            p.partner.code.as_str(),
            p.partner.email.as_str(),
            p.partner.status.as_str(),
            p.key_hint.as_deref().unwrap_or("-"),
            age(p.key_created_at, now),
            age(p.key_last_used_at, now),
            p.partner.allowed_ips.len(),
        );
        // The restricted pairs (SPEC §8.1), under their partner.
        for key in p.pairs.iter().filter(|k| k.kind != "primary") {
            println!("    {}", pair_line(key, now));
        }
    }
    if i64::try_from(partners.len()).is_ok_and(|n| n == filter.limit) {
        println!(
            "(the first {}; narrow the search or raise --limit)",
            filter.limit
        );
    }
    Ok(())
}

/// One pair for `partner show --json` and `partner list --json`: kind, name, scopes, mode and
/// expiry (the pair's own or a retiring pair's; the expiry policy's applies on top of it, as
/// `keyward check-config` says).
fn pair_json(k: &keyward_server::store::KeyInfo, now: i64) -> serde_json::Value {
    json!({
        "key_id": k.id, "hint": k.public_key_hint, "state": k.state(now),
        "kind": k.kind, "name": k.name, "mode": k.mode,
        "scopes": k.scopes.as_deref().map(|s| s.split_whitespace().collect::<Vec<_>>()),
        "created_at": rfc3339(Some(k.created_at)),
        "expires_at": rfc3339(k.expires_at.or(k.valid_until)),
        "revoked_at": rfc3339(k.revoked_at), "last_used_at": rfc3339(k.last_used_at),
        "last_used_ip": k.last_used_ip, "legacy": k.legacy.0,
    })
}

/// One pair on one line, for people.
fn pair_line(key: &keyward_server::store::KeyInfo, now: i64) -> String {
    let until = match (key.revoked_at, key.expires_at.or(key.valid_until)) {
        (Some(at), _) => format!("revoked {}", time_text(Some(at))),
        (None, Some(at)) => format!("expires {}", time_text(Some(at))),
        (None, None) => String::new(),
    };
    let what = match (&key.name, &key.scopes) {
        (Some(name), Some(scopes)) if !scopes.is_empty() => {
            format!("restricted \"{name}\" [{scopes}]")
        }
        (Some(name), _) => format!("restricted \"{name}\" [no scopes]"),
        // Moved in with a key of another format (SPEC §10.2): works until regenerated.
        _ if key.legacy.0 => "primary (legacy key, moved in)".to_owned(),
        _ => "primary".to_owned(),
    };
    format!(
        "{:<8} {:<4} {:<25} {what}  created {}  last used {} from {}  {until}",
        key.state(now),
        key.mode,
        key.public_key_hint,
        time_text(Some(key.created_at)),
        time_text(key.last_used_at),
        key.last_used_ip.as_deref().unwrap_or("-"),
    )
}

fn show(details: &admin::PartnerDetails, as_json: bool, now: i64) {
    let partner = &details.partner;
    if as_json {
        let keys: Vec<_> = details.keys.iter().map(|k| pair_json(k, now)).collect();
        let links: Vec<_> = details
            .links
            .iter()
            .map(|l| {
                json!({
                    "purpose": l.purpose, "state": l.state(now),
                    "created_at": rfc3339(Some(l.created_at)), "expires_at": rfc3339(Some(l.expires_at)),
                    "used_at": rfc3339(l.used_at), "requested_ip": l.requested_ip,
                    "overlap_seconds": l.overlap_seconds,
                })
            })
            .collect();
        let events: Vec<_> = details
            .events
            .iter()
            .map(|e| json!({"at": rfc3339(Some(e.created_at)), "event": e.event, "ip": e.ip, "detail": e.detail}))
            .collect();
        let out = json!({
            "partner_id": partner.id.as_str(), "code": partner.code.as_str(),
            "email": partner.email.as_str(), "status": partner.status.as_str(),
            "invited": partner.invited, "created_at": rfc3339(Some(partner.created_at)),
            "allowed_ips": partner.allowed_ips.to_strings(),
            "keys": keys, "links": links, "events": events,
        });
        println!("{out:#}");
        return;
    }
    println!("partner_id   {}", partner.id);
    println!("code         {}", partner.code);
    println!("email        {}", partner.email);
    println!(
        "status       {}{}",
        partner.status.as_str(),
        if partner.invited { " (invited)" } else { "" }
    );
    println!("created      {}", time_text(Some(partner.created_at)));
    println!("allowed_ips  {}", allow_list_text(&partner.allowed_ips));
    println!("\nkeys (newest first; last use is approximate, recorded every few seconds):");
    if details.keys.is_empty() {
        println!("  none");
    }
    for key in &details.keys {
        println!("  {}", pair_line(key, now));
    }
    println!("\nlinks (newest first; tokens are never stored):");
    if details.links.is_empty() {
        println!("  none");
    }
    for link in &details.links {
        println!(
            "  {:<12} {:<8} issued {}  expires {}  used {}  from {}",
            link.purpose,
            link.state(now),
            time_text(Some(link.created_at)),
            time_text(Some(link.expires_at)),
            time_text(link.used_at),
            link.requested_ip.as_deref().unwrap_or("-"),
        );
    }
    if !details.events.is_empty() {
        println!("\nrecent events (newest first):");
    }
    for event in &details.events {
        // Events name keys by ID; the table above shows them by hint: say which is which.
        let mut detail = event.detail.clone().unwrap_or_default();
        for key in &details.keys {
            detail = detail.replace(&key.id, &format!("{} ({})", key.public_key_hint, key.id));
        }
        println!(
            "  {}  {:<32} {:<16} {detail}",
            time_text(Some(event.created_at)),
            event.event,
            event.ip.as_deref().unwrap_or("-"),
        );
    }
}
