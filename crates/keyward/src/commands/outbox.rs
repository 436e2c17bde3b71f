//! `keyward outbox stats|dead|retry`.

use clap::Subcommand;
use keyward_server::config::Settings;
use keyward_server::startup::open_migrated_store;

#[derive(Subcommand)]
pub enum OutboxAction {
    /// Counts of pending, sent and dead-lettered emails.
    Stats,
    /// List dead-lettered emails.
    Dead,
    /// Queue dead-lettered emails again (after fixing the mail server).
    Retry,
}

pub async fn outbox(settings: &Settings, action: OutboxAction) -> anyhow::Result<()> {
    let store = open_migrated_store(settings).await?;
    match action {
        OutboxAction::Stats => {
            let now = chrono::Utc::now().timestamp_millis();
            let stats = store.outbox_stats().await?;
            let backlog = store.outbox_backlog(now).await?;
            let last_minute = store.emails_sent_since(now - 60_000).await?;
            #[allow(clippy::cast_precision_loss)]
            let oldest = backlog.oldest_due_age_ms as f64 / 1000.0;
            println!(
                "pending     {}  (due now; the oldest has waited {oldest:.1} s)\n\
                 scheduled   {}  (reminders and retries not due yet)\n\
                 sent        {}  ({last_minute} in the last minute: {:.1}/s, all nodes)\n\
                 dead        {}{}",
                backlog.due,
                backlog.scheduled,
                stats.sent,
                f64::from(u32::try_from(last_minute).unwrap_or(u32::MAX)) / 60.0,
                stats.dead,
                if stats.dead > 0 {
                    "  (see `keyward outbox dead`, then `keyward outbox retry` once the mail server is fixed)"
                } else {
                    ""
                }
            );
        }
        OutboxAction::Dead => {
            let dead = store.dead_emails().await?;
            if dead.is_empty() {
                println!("no dead-lettered emails");
            }
            for email in dead {
                println!(
                    "{}  {}  to {}  after {} attempts: {}",
                    email.id,
                    email.kind,
                    email.recipient,
                    email.attempts,
                    email.last_error.unwrap_or_default()
                );
            }
        }
        OutboxAction::Retry => {
            let n = store
                .retry_dead_emails(chrono::Utc::now().timestamp_millis())
                .await?;
            println!("{n} email(s) queued again; a running server sends them within seconds");
        }
    }
    Ok(())
}
