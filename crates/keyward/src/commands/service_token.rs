//! `keyward service-token create|list|revoke`: the tokens of the exchange's own services.

use super::output::{operator_name, time_text};
use clap::Subcommand;
use keyward_server::config::Settings;
use keyward_server::flows::service_tokens;
use keyward_server::startup::open_migrated_store;
use secrecy::ExposeSecret;

#[derive(Subcommand)]
pub enum ServiceTokenAction {
    /// Create a token for a service; it is printed once and stored only as a hash.
    Create {
        /// What calls with it (1 to 64 of A-Z a-z 0-9 . _ -), e.g. payments-api.
        name: String,
    },
    /// List the tokens: name, created, last used (approximate), hint. Never the tokens.
    List,
    /// Revoke a service's token; it is refused on every node when this returns.
    Revoke {
        name: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn service_token(settings: &Settings, action: ServiceTokenAction) -> anyhow::Result<()> {
    let store = open_migrated_store(settings).await?;
    let now = chrono::Utc::now();
    match action {
        ServiceTokenAction::Create { name } => {
            let token = service_tokens::create(
                &store,
                &name,
                &operator_name(None),
                now,
                settings.key_cache,
            )
            .await?;
            eprintln!(
                "Service token {name} created. It is shown once: store it in the service's secret store now."
            );
            println!("{}", token.expose_secret());
        }
        ServiceTokenAction::List => {
            let tokens = service_tokens::list(&store).await?;
            if tokens.is_empty() {
                println!("no service tokens (create one with `keyward service-token create NAME`)");
                return Ok(());
            }
            println!(
                "{:<24} {:<24} {:<24} {:<20} state",
                "name", "created", "last used (approx.)", "hint"
            );
            for token in tokens {
                let state = match token.revoked_at {
                    Some(at) => format!("revoked {}", time_text(Some(at))),
                    None => "live".to_owned(),
                };
                println!(
                    "{:<24} {:<24} {:<24} {:<20} {state}",
                    token.name,
                    time_text(Some(token.created_at)),
                    time_text(token.last_used_at),
                    token.hint,
                );
            }
        }
        ServiceTokenAction::Revoke { name, reason } => {
            service_tokens::revoke(
                &store,
                &name,
                &operator_name(None),
                reason.as_deref(),
                now,
                settings.key_cache,
            )
            .await?;
            println!("{name}'s service token is revoked: every node refuses it from now on");
        }
    }
    Ok(())
}
