//! `keyward audit`: the audit log, as a table or JSON lines.

use super::output::{parse_time, rfc3339, time_text};
use anyhow::Context as _;
use clap::Args;
use keyward_core::PartnerCode;
use keyward_server::config::Settings;
use keyward_server::flows::admin;
use keyward_server::store::AuditFilter;
use serde_json::json;

#[derive(Args)]
pub struct AuditArgs {
    /// Only this partner's events.
    #[arg(long)]
    partner: Option<String>,
    /// Only this event (partner_created, onboarding_link_issued, regeneration_link_redeemed,
    /// keys_revoked, partner_suspended, allowed_ips_changed, master_key_rotated, …).
    #[arg(long)]
    event: Option<String>,
    /// From: an RFC 3339 time, or a duration ago such as 24h.
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Until: an RFC 3339 time, or a duration ago.
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    #[arg(long, default_value_t = 10_000)]
    limit: i64,
    /// JSON lines, one event per line (for a SIEM).
    #[arg(long)]
    json: bool,
}

pub async fn audit(settings: &Settings, args: AuditArgs) -> anyhow::Result<()> {
    let store = keyward_server::startup::open_migrated_store(settings).await?;
    let partner = args
        .partner
        .as_deref()
        .map(|c| PartnerCode::parse(c).context("--partner takes a partner code"))
        .transpose()?;
    let filter = AuditFilter {
        partner_id: None,
        event: args.event,
        since: args.since,
        until: args.until,
        limit: args.limit.clamp(1, 1_000_000),
        newest_first: false,
    };
    let events = admin::audit(&store, partner.as_ref(), filter).await?;
    for e in &events {
        if args.json {
            let line = json!({
                "id": e.id, "time": rfc3339(Some(e.created_at)), "event": e.event,
                "partner_id": e.partner_id, "partner_code": e.partner_code,
                "actor": e.actor, "ip": e.ip, "detail": e.detail,
            });
            println!("{line}");
        } else {
            println!(
                "{}  {:<30} {:<16} {:<20} {:<15} {}",
                time_text(Some(e.created_at)),
                e.event,
                e.partner_code.as_deref().unwrap_or("-"),
                e.actor.as_deref().unwrap_or("-"),
                e.ip.as_deref().unwrap_or("-"),
                e.detail.as_deref().unwrap_or("")
            );
        }
    }
    if events.is_empty() && !args.json {
        eprintln!("no events match");
    }
    Ok(())
}
