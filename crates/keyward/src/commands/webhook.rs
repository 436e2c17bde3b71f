//! `keyward webhook add|list|remove|test|dead`: the exchange's systems that hear of every
//! change to partners and keys (SPEC §9.3).

use super::output::{operator_name, time_text};
use clap::Subcommand;
use keyward_server::config::Settings;
use keyward_server::flows::webhooks;
use keyward_server::webhooks::Answer;

#[derive(Subcommand)]
pub enum WebhookAction {
    /// Subscribe an endpoint; its signing secret (whsec_…) is printed once.
    Add {
        url: String,
        /// Only these events (comma-separated); default: every event.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// The endpoints: id, URL, events, state, deliveries waiting.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint (by id or URL); what it was not sent yet is dropped.
    Remove { endpoint: String },
    /// Send a signed `webhook.test` event to an endpoint now and show what it answered.
    Test {
        endpoint: String,
        /// Who runs it (default: $USER).
        #[arg(long)]
        operator: Option<String>,
    },
    /// Deliveries given up on after the retry schedule (or a 410), newest first.
    Dead {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

pub async fn webhook(settings: &Settings, action: WebhookAction) -> anyhow::Result<()> {
    let ctx = super::flows_context(settings).await?;
    match action {
        WebhookAction::Add { url, events } => {
            let added =
                webhooks::add(&ctx, &url, &events, &super::output::operator_name(None)).await?;
            eprintln!(
                "Endpoint {} added for {}. Its signing secret is shown once: store it where the endpoint verifies deliveries (Standard Webhooks).",
                added.endpoint.id,
                added.endpoint.events.as_deref().unwrap_or("every event")
            );
            println!("{}", added.secret);
        }
        WebhookAction::List { json } => {
            let endpoints = webhooks::list(&ctx).await?;
            if endpoints.is_empty() && !json {
                println!("no webhook endpoints (add one with `keyward webhook add URL`)");
            }
            for (e, waiting) in endpoints {
                let state = match &e.disabled_reason {
                    Some(reason) => format!("disabled ({reason})"),
                    None => "enabled".to_owned(),
                };
                if json {
                    let line = serde_json::json!({
                        "id": e.id, "url": e.url,
                        "events": e.events.as_deref().map(|l| l.split(',').collect::<Vec<_>>()),
                        "created_at": keyward_core::wire::wire_time(e.created_at),
                        "disabled_at": e.disabled_at.map(keyward_core::wire::wire_time),
                        "disabled_reason": e.disabled_reason, "waiting": waiting,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{}  {}  events: {}  {state}  {waiting} waiting",
                        e.id,
                        e.url,
                        e.events.as_deref().unwrap_or("all")
                    );
                }
            }
        }
        WebhookAction::Remove { endpoint } => {
            let removed =
                webhooks::remove(&ctx, &endpoint, &super::output::operator_name(None), None)
                    .await?;
            println!("{} ({}) removed", removed.id, removed.url);
        }
        WebhookAction::Test { endpoint, operator } => {
            let (endpoint, answer) =
                webhooks::test(&ctx, &endpoint, &operator_name(operator)).await?;
            match answer {
                Answer::Status(status) if (200..300).contains(&status) => {
                    println!("{} answered HTTP {status}: it receives and accepts events", endpoint.url);
                }
                other => anyhow::bail!(
                    "{} did not accept the test event: {} (a 2xx is needed; check that it verifies with the secret `webhook add` printed)",
                    endpoint.url,
                    other.describe()
                ),
            }
        }
        WebhookAction::Dead { limit, json } => {
            let dead = webhooks::dead(&ctx, limit).await?;
            if dead.is_empty() && !json {
                println!("no dead webhook deliveries");
            }
            for d in dead {
                if json {
                    let line = serde_json::json!({
                        "webhook_id": d.id, "endpoint_id": d.endpoint_id, "url": d.url,
                        "type": d.event_type, "created_at": keyward_core::wire::wire_time(d.created_at),
                        "dead_at": keyward_core::wire::wire_time(d.dead_at),
                        "attempts": d.attempts, "last_error": d.last_error,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{}  {}  {}  {} attempt(s), dead {}: {}",
                        d.id,
                        d.event_type,
                        d.url,
                        d.attempts,
                        time_text(Some(d.dead_at)),
                        d.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    }
    Ok(())
}
