//! The operator's commands: one module per group, dispatched here with the server's settings.

mod audit;
mod bench_fill;
mod import;
mod leak;
mod master_key;
mod outbox;
mod output;
mod partner;
mod service_token;
mod setup;
mod webhook;

use anyhow::Context as _;
use clap::Subcommand;
use keyward_server::startup::open_store;
use keyward_server::{telemetry, Application};
use std::path::PathBuf;

/// The operator's commands.
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Run the service (on its embedded defaults unless configured otherwise).
    Serve {
        /// Address to listen on (overrides KEYWARD_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// Do not apply migrations at start (run `keyward migrate` yourself).
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Print the settings in force (secrets hidden) and check that storage opens.
    CheckConfig,
    /// Send a test email through the configured transport.
    SendTestEmail {
        /// The recipient.
        to: String,
    },
    /// Operator commands on partners: find, show, suspend, revoke keys, invite, …
    Partner {
        /// Who runs the command, for the audit log (default: $USER).
        #[arg(long, global = true)]
        operator: Option<String>,
        #[command(subcommand)]
        action: partner::PartnerAction,
    },
    /// The audit log: every credential event with its time, IP and actor.
    Audit(audit::AuditArgs),
    /// Re-encrypt every stored secret under a new master key, without downtime
    /// (docs/deployment.md says how to roll the nodes around it).
    RotateMasterKey {
        /// The new key: 32 random bytes in standard base64 (`openssl rand -base64 32`).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        /// Who runs it, for the audit log (default: $USER).
        #[arg(long)]
        operator: Option<String>,
    },
    /// The outbox: emails that could not be delivered.
    Outbox {
        #[command(subcommand)]
        action: outbox::OutboxAction,
    },
    /// Fill the store with N active partners fast, and write a sample of their signed
    /// requests for bench/ (not for production data).
    #[command(hide = true)]
    BenchFill {
        #[arg(long)]
        partners: u64,
        #[arg(long, default_value_t = 256)]
        sample: u64,
        /// JSON lines: {"public_key", "secret_key", "body"} (a signed body).
        #[arg(long)]
        out: PathBuf,
        /// Also this many distinct signed bodies of the sampled partners, for the single-use
        /// gateway target: lines of public key and body, tab-separated, in OUT's folder as
        /// `single-use.tsv`.
        #[arg(long, default_value_t = 0)]
        single_use: u64,
    },
    /// Leaked keys: report a token found in public (GitHub's reports arrive on their own).
    Leak {
        #[command(subcommand)]
        action: leak::LeakAction,
    },
    /// Webhooks: the exchange's systems hear of every change to partners and keys.
    Webhook {
        #[command(subcommand)]
        action: webhook::WebhookAction,
    },
    /// Tokens for the exchange's own services to call the verify API.
    ServiceToken {
        #[command(subcommand)]
        action: service_token::ServiceTokenAction,
    },
}

/// The flows' context for a command that acts (and so may encrypt): the migrated store and
/// the master key, on the real clock.
async fn flows_context(
    settings: &keyward_server::config::Settings,
) -> anyhow::Result<keyward_server::flows::Context> {
    let store = keyward_server::startup::open_migrated_store(settings).await?;
    let cipher = keyward_server::flows::master_key::cipher_for(settings, &store).await?;
    Ok(keyward_server::flows::Context::new(
        std::sync::Arc::new(settings.clone()),
        store,
        cipher,
        std::sync::Arc::new(keyward_server::clock::SystemClock),
    ))
}

pub async fn operate(
    config: Option<&std::path::Path>,
    command: ServerCommand,
) -> anyhow::Result<()> {
    let mut raw = keyward_server::config::RawSettings::from_file(config)?;
    let unknown = raw.apply_env(std::env::vars())?;
    if let ServerCommand::Serve { listen, no_migrate } = &command {
        if let Some(listen) = listen {
            raw.listen = Some(listen.clone());
        }
        if *no_migrate {
            raw.migrate_on_start = Some(false);
        }
    }
    let settings = raw.resolve()?;
    telemetry::init(&settings.log);
    for name in unknown {
        tracing::warn!(variable = %name, "unknown KEYWARD_* environment variable ignored (a typo?)");
    }
    match command {
        ServerCommand::Serve { .. } => {
            let pinned = crate::runtime::pinned_cpus();
            if !pinned.is_empty() {
                tracing::info!(cpus = ?pinned, "request threads pinned, one per CPU (KEYWARD_PIN_WORKERS=on)");
            }
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        ServerCommand::Migrate => {
            let store = open_store(&settings).await?;
            store
                .migrate()
                .await
                .context("could not apply the migrations")?;
            println!("migrations applied ({:?})", store.backend());
            Ok(())
        }
        ServerCommand::CheckConfig => setup::check_config(&settings).await,
        ServerCommand::SendTestEmail { to } => setup::send_test_email(&settings, &to).await,
        ServerCommand::Partner { operator, action } => {
            partner::partner(&settings, &output::operator_name(operator), action).await
        }
        ServerCommand::Audit(args) => audit::audit(&settings, args).await,
        ServerCommand::RotateMasterKey {
            new_key_file,
            operator,
        } => {
            master_key::rotate_master_key(
                &settings,
                &output::operator_name(operator),
                &new_key_file,
            )
            .await
        }
        ServerCommand::Outbox { action } => outbox::outbox(&settings, action).await,
        ServerCommand::Webhook { action } => webhook::webhook(&settings, action).await,
        ServerCommand::Leak { action } => leak::leak(&settings, action).await,
        ServerCommand::ServiceToken { action } => {
            service_token::service_token(&settings, action).await
        }
        ServerCommand::BenchFill {
            partners,
            sample,
            out,
            single_use,
        } => bench_fill::bench_fill(&settings, partners, sample, &out, single_use).await,
    }
}
