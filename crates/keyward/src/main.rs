//! `keyward`: the partner-credential service and its operator commands.

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyward_core::PartnerCode;
use keyward_server::config::Settings;
use keyward_server::flows::service_tokens;
use keyward_server::mail::{templates, EmailKind, Mailer};
use keyward_server::startup::{open_migrated_store, open_store};
use keyward_server::{telemetry, Application};
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::process::ExitCode;

mod operator;

/// mimalloc instead of glibc's malloc: under load the service allocates on every request from
/// many threads, and glibc's arena locks showed up in profiles (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "Partner credentials for a payment API: onboarding, signed requests, key regeneration."
)]
struct Cli {
    /// A TOML file of settings (also KEYWARD_CONFIG). Environment variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Server(ServerCommand),
    #[command(flatten)]
    Partner(keyward_client::cli::PartnerCommand),
}

/// The operator's commands.
#[derive(Subcommand)]
enum ServerCommand {
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
        action: operator::PartnerAction,
    },
    /// The audit log: every credential event with its time, IP and actor.
    Audit(operator::AuditArgs),
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
        action: OutboxAction,
    },
    /// Fill the store with N active partners fast, and write a sample of their signed
    /// requests for bench/ (not for production data).
    #[command(hide = true)]
    BenchFill {
        #[arg(long)]
        partners: u64,
        #[arg(long, default_value_t = 256)]
        sample: u64,
        /// JSON lines: {"public_key", "body"} (a signed body).
        #[arg(long)]
        out: PathBuf,
    },
    /// Tokens for the exchange's own services to call the verify API.
    ServiceToken {
        #[command(subcommand)]
        action: ServiceTokenAction,
    },
}

#[derive(Subcommand)]
enum ServiceTokenAction {
    /// Create a token for a service; it is printed once and stored only as a hash.
    Create {
        /// What calls with it (1 to 64 of A-Z a-z 0-9 . _ -), e.g. payments-api.
        name: String,
    },
    /// List the tokens: name, created, last used (approximate), hint. Never the tokens.
    List,
    /// Revoke a service's token; it is refused on every node when this returns.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Counts of pending, sent and dead-lettered emails.
    Stats,
    /// List dead-lettered emails.
    Dead,
    /// Queue dead-lettered emails again (after fixing the mail server).
    Retry,
}

#[tokio::main]
async fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `keyward … | head` ends quietly when `head` stops reading, as a command-line tool should:
/// printing to a closed pipe ends the process with success instead of a panic message.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        // The partner's commands talk to a server; they need none of the server's settings.
        Command::Partner(command) => keyward_client::cli::run(command)
            .await
            .map_err(anyhow::Error::msg),
        Command::Server(command) => operate(cli.config.as_deref(), command).await,
    }
}

async fn operate(config: Option<&std::path::Path>, command: ServerCommand) -> anyhow::Result<()> {
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
        ServerCommand::CheckConfig => check_config(&settings).await,
        ServerCommand::SendTestEmail { to } => send_test_email(&settings, &to).await,
        ServerCommand::Partner { operator, action } => {
            operator::partner(&settings, &operator::operator_name(operator), action).await
        }
        ServerCommand::Audit(args) => operator::audit(&settings, args).await,
        ServerCommand::RotateMasterKey {
            new_key_file,
            operator,
        } => {
            operator::rotate_master_key(
                &settings,
                &operator::operator_name(operator),
                &new_key_file,
            )
            .await
        }
        ServerCommand::Outbox { action } => outbox(&settings, action).await,
        ServerCommand::ServiceToken { action } => service_token(&settings, action).await,
        ServerCommand::BenchFill {
            partners,
            sample,
            out,
        } => bench_fill(&settings, partners, sample, &out).await,
    }
}

/// A URL as it may be printed: the password in its user part and any `password` (or `pass`,
/// `secret`) query parameter replaced by `***`. Text that is not a URL is hidden whole.
fn without_passwords(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return "*** (not a URL)".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let secret = matches!(
                k.to_ascii_lowercase().as_str(),
                "password" | "pass" | "secret" | "sslpassword"
            );
            (
                k.into_owned(),
                if secret {
                    "***".to_owned()
                } else {
                    v.into_owned()
                },
            )
        })
        .collect();
    if !pairs.is_empty() {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

async fn check_config(settings: &Settings) -> anyhow::Result<()> {
    let shown_database = without_passwords(settings.database_url.expose_secret());
    println!("listen            {}", settings.listen);
    println!("public_url        {}", settings.public_url);
    println!("data_dir          {}", settings.data_dir.display());
    println!("database_url      {shown_database}");
    println!(
        "master_key        {}",
        match &settings.master_key {
            keyward_server::config::MasterKeySource::Inline(_) =>
                "from KEYWARD_MASTER_KEY".to_owned(),
            keyward_server::config::MasterKeySource::File(p) => format!("file {}", p.display()),
        }
    );
    println!(
        "mail              {}",
        match &settings.smtp_url {
            Some(url) => format!("SMTP {}", without_passwords(url.expose_secret())),
            None => format!("files in {}", settings.data_dir.join("mailbox").display()),
        }
    );
    println!("mail_from         {}", settings.mail_from);
    println!(
        "trusted_proxies   {:?}",
        settings
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    println!(
        "link lifetimes    onboarding {} s, regeneration {} s",
        settings.onboarding_link_ttl.num_seconds(),
        settings.regeneration_link_ttl.num_seconds()
    );
    println!(
        "windows           freshness {} s, replay {} s",
        settings.freshness_window.num_seconds(),
        settings.replay_window.num_seconds()
    );
    println!(
        "rate limits       {} requests/min per IP, {} links/hour per partner",
        settings.ip_rate_limit_per_minute, settings.partner_links_per_hour
    );
    let store = open_store(settings).await?;
    store.ping().await.context("the database does not answer")?;
    println!("database          reachable ({:?})", store.backend());
    let has_check = store
        .meta(keyward_server::flows::master_key::MASTER_KEY_CHECK)
        .await
        .unwrap_or_default()
        .is_some();
    if has_check {
        keyward_server::flows::master_key::cipher_for(settings, &store).await?;
        println!("master key        matches this database");
    }
    Ok(())
}

async fn send_test_email(settings: &Settings, to: &str) -> anyhow::Result<()> {
    let mailer = Mailer::from_settings(settings)?;
    let context = minijinja_context(settings);
    let email = templates::render(EmailKind::RegeneratedNotice, &context)?;
    let email = templates::RenderedEmail {
        subject: format!("keyward test email: {}", email.subject),
        ..email
    };
    mailer
        .send(&uuid::Uuid::now_v7().to_string(), to, &email)
        .await
        .context("the test email was not sent")?;
    println!("test email sent to {to} via {}", mailer.describe());
    Ok(())
}

fn minijinja_context(settings: &Settings) -> serde_json::Value {
    serde_json::json!({
        "partner_code": "TEST", "regenerated_at": chrono::Utc::now().to_rfc3339(), "ip": "127.0.0.1",
        "public_url": settings.public_url.as_str(),
    })
}

async fn bench_fill(
    settings: &Settings,
    partners: u64,
    sample: u64,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use keyward_core::{Email, KeyPair, PartnerId};
    use keyward_server::crypto::secret_key_aad;
    use keyward_server::store::ImportedPartner;
    use std::io::Write;
    let (store, cipher) = keyward_server::startup::open_store_and_cipher(settings).await?;
    let every = (partners / sample.max(1)).max(1);
    let mut samples = std::io::BufWriter::new(std::fs::File::create(out)?);
    let now = chrono::Utc::now().timestamp_millis();
    let started = std::time::Instant::now();
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..partners {
        let keys = KeyPair::generate(&mut rand::rngs::OsRng);
        let id = PartnerId::new_v7();
        let key_id = uuid::Uuid::now_v7().to_string();
        let secret = keys.secret.expose_secret();
        let ciphertext =
            cipher.encrypt(secret.as_bytes(), &secret_key_aad(id.as_str(), &key_id))?;
        if i % every == 0 {
            let body = keyward_core::signature::sign_body(
                format!(r#"{{"bench":{i}}}"#).as_bytes(),
                &keys.secret,
                keyward_core::signature::MessageForm::AsSent,
            )?;
            let line = serde_json::json!({"public_key": keys.public.as_str(), "body": body});
            writeln!(samples, "{line}")?;
        }
        batch.push(ImportedPartner {
            id,
            code: PartnerCode::parse(&format!("BENCH-{i:08}")).context("a bench code")?,
            email: Email::parse(&format!("p{i}@bench.example")).context("a bench email")?,
            key_id,
            public_key_hash: keys.public.hash(),
            public_key_hint: keys.public.redacted(),
            secret_ciphertext: ciphertext,
            created_at: now,
        });
        if batch.len() == 5_000 || i + 1 == partners {
            store.import_active_partners(&batch).await?;
            batch.clear();
            eprint!("\r{} of {partners} partners stored", i + 1);
        }
    }
    samples.flush()?;
    eprintln!(
        "\n{partners} partners in {:.1} s; {} signed samples in {}",
        started.elapsed().as_secs_f64(),
        partners.div_ceil(every),
        out.display()
    );
    Ok(())
}

async fn service_token(settings: &Settings, action: ServiceTokenAction) -> anyhow::Result<()> {
    let store = open_migrated_store(settings).await?;
    let now = chrono::Utc::now().timestamp_millis();
    match action {
        ServiceTokenAction::Create { name } => {
            let token = service_tokens::create(
                &store,
                &name,
                &operator::operator_name(None),
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
                    Some(at) => format!("revoked {}", operator::time_text(Some(at))),
                    None => "live".to_owned(),
                };
                println!(
                    "{:<24} {:<24} {:<24} {:<20} {state}",
                    token.name,
                    operator::time_text(Some(token.created_at)),
                    operator::time_text(token.last_used_at),
                    token.hint,
                );
            }
        }
        ServiceTokenAction::Revoke { name } => {
            service_tokens::revoke(
                &store,
                &name,
                &operator::operator_name(None),
                now,
                settings.key_cache,
            )
            .await?;
            println!("{name}'s service token is revoked: every node refuses it from now on");
        }
    }
    Ok(())
}

async fn outbox(settings: &Settings, action: OutboxAction) -> anyhow::Result<()> {
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
