//! Start-up as a value: [`Application::build`] opens storage, checks the master key, binds the
//! listener (port 0 in tests) and records the port; [`Application::run_until_stopped`] serves
//! until a shutdown signal, then lets the outbox worker finish its batch.

use crate::clock::{Clock, SystemClock};
use crate::config::{PublicUrl, Settings};
use crate::crypto::Cipher;
use crate::flows::master_key::{cipher_for, MASTER_KEY_CHECK};
use crate::flows::Context;
use crate::github::GitHubKeys;
use crate::mail::outbox::OutboxWorker;
use crate::mail::{Mailer, Transport};
use crate::state::AppState;
use crate::store::Store;
use crate::upstream::Gateway;
use anyhow::{bail, Context as _};
use secrecy::ExposeSecret;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct Application {
    listener: TcpListener,
    port: u16,
    /// The internal listener (verify API, metrics), unless it is `off`.
    internal: Option<TcpListener>,
    state: AppState,
    mailer: Arc<Mailer>,
    stop: CancellationToken,
}

/// What tests may swap; production uses the defaults.
#[derive(Default)]
pub struct Overrides {
    pub clock: Option<Arc<dyn Clock>>,
    pub transport: Option<Transport>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Overrides::default()).await
    }

    pub async fn build_with(mut settings: Settings, overrides: Overrides) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "could not create the data folder {}",
                settings.data_dir.display()
            )
        })?;
        // It holds the master key, the database and emails with one-time links.
        #[cfg(unix)]
        std::fs::set_permissions(
            &settings.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .with_context(|| {
            format!(
                "could not restrict the data folder {}",
                settings.data_dir.display()
            )
        })?;
        // Connections are files: take every descriptor we may, and keep the caps within them.
        let open_files = crate::listener::raise_open_file_limit();
        let budget = usize::try_from(open_files.saturating_sub(256) / 2)
            .unwrap_or(usize::MAX)
            .max(16);
        if settings.connection_limits.max_connections > budget {
            // Worth a warning only when the operator asked for more than the machine allows.
            if u32::try_from(settings.connection_limits.max_connections)
                == Ok(crate::config::DEFAULT_MAX_CONNECTIONS)
            {
                tracing::info!(
                    open_files,
                    max_connections = budget,
                    "connections capped by the open-file limit"
                );
            } else {
                tracing::warn!(
                    open_files,
                    max_connections = budget,
                    "KEYWARD_MAX_CONNECTIONS lowered to fit the open-file limit"
                );
            }
            settings.connection_limits.max_connections = budget;
        }
        let (store, cipher) = open_store_and_cipher(&settings).await?;
        let transport = match overrides.transport {
            Some(t) => t,
            None => Mailer::transport_for(&settings)?,
        };
        let mailer = Arc::new(Mailer::with_transport(&settings, transport)?);
        let listener = TcpListener::bind(settings.listen).await.with_context(|| {
            format!(
                "could not listen on {} (is another process using it?)",
                settings.listen
            )
        })?;
        let port = listener.local_addr()?.port();
        let internal = match settings.internal_listen {
            Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
                format!(
                    "could not listen on {address} for the internal listener (KEYWARD_INTERNAL_LISTEN; is another process using it?)"
                )
            })?),
            None => None,
        };
        let internal_address = match &internal {
            Some(listener) => listener.local_addr()?.to_string(),
            None => "off".to_owned(),
        };
        if settings.public_url_is_default {
            settings.public_url = PublicUrl::parse(&format!("http://{}", listener.local_addr()?))?;
            if !listener.local_addr()?.ip().is_loopback() {
                tracing::warn!(
                    public_url = %settings.public_url,
                    "KEYWARD_PUBLIC_URL is not set: emailed links point at the listen address; set it to the URL partners reach"
                );
            }
        }
        let clock = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let features = settings
            .features()
            .into_iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect::<Vec<_>>()
            .join("; ");
        tracing::info!(
            listen = %listener.local_addr()?, internal = %internal_address, public_url = %settings.public_url,
            backend = ?store.backend(), mail = %mailer.describe(), %features, "keyward is ready"
        );
        let gateway = match &settings.upstream {
            Some(upstream) => Some(Arc::new(
                Gateway::new(upstream.clone()).context("could not set up the gateway's client")?,
            )),
            None => None,
        };
        let github_keys = match &settings.github_keys_url {
            Some(url) => Some(Arc::new(GitHubKeys::new(url.clone()).context(
                "could not set up the client for GitHub's secret-scanning keys",
            )?)),
            None => None,
        };
        let console = match &settings.console {
            Some(console) => Some(Arc::new(
                crate::console::oidc::Oidc::new(console.clone())
                    .context("could not set up the console's OpenID Connect client")?,
            )),
            None => None,
        };
        let state = AppState::new(
            Context::new(Arc::new(settings), store, cipher, clock),
            gateway,
            github_keys,
            console,
        );
        let hashed = crate::flows::leaks::backfill_secret_hashes(&state)
            .await
            .context("could not store the secret-key hashes of older key pairs")?;
        if hashed > 0 {
            tracing::info!(pairs = hashed, "stored the secret-key hashes of older key pairs, so that their leaks are found (SPEC §9.2)");
        }
        // In the background: a changed expiry policy re-plans every pair's reminders.
        let ctx = state.ctx.clone();
        tokio::spawn(async move {
            match crate::flows::reschedule_after_policy_change(&ctx).await {
                Ok(0) => {}
                Ok(pairs) => tracing::info!(pairs, "the expiry policy changed: the reminders of every key pair were planned again (SPEC §8.4)"),
                Err(e) => tracing::warn!(error = %e, "could not plan the reminders of the new expiry policy; they are planned again at the next start"),
            }
        });
        Ok(Self {
            listener,
            port,
            internal,
            state,
            mailer,
            stop: CancellationToken::new(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The internal listener's port, unless it is `off`.
    pub fn internal_port(&self) -> Option<u16> {
        self.internal
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A token that stops the server when cancelled (tests; signals do the same in `serve`).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let worker = OutboxWorker {
            store: self.state.store.clone(),
            cipher: self.state.cipher()?.clone(),
            mailer: self.mailer.clone(),
            clock: self.state.clock.clone(),
            wake: self.state.outbox_wake.clone(),
            max_attempts: self.state.settings.outbox_max_attempts,
            concurrency: self.state.settings.smtp_concurrency,
            metrics: self.state.metrics.clone(),
        };
        let worker = tokio::spawn(worker.run(self.stop.clone()));
        let webhooks = crate::webhooks::WebhookWorker {
            store: self.state.store.clone(),
            cipher: self.state.cipher()?.clone(),
            clock: self.state.clock.clone(),
            metrics: self.state.metrics.clone(),
            client: crate::webhooks::client()
                .context("could not set up the client for webhook deliveries")?,
        };
        let webhooks = tokio::spawn(webhooks.run(self.stop.clone()));
        let janitor = tokio::spawn(janitor(self.state.clone(), self.stop.clone()));
        let limits = self.state.settings.connection_limits;
        let internal = self.internal.map(|listener| {
            let app = crate::http::internal_app(self.state.clone());
            tokio::spawn(crate::listener::serve(
                listener,
                app,
                limits,
                self.stop.clone(),
            ))
        });
        let stop = self.stop.clone();
        let signal = tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = shutdown_signal() => stop.cancel(),
            }
        });
        let public = crate::listener::serve(
            self.listener,
            crate::http::app(self.state.clone()),
            limits,
            self.stop.clone(),
        )
        .await;
        self.stop.cancel();
        if let Some(internal) = internal {
            internal.await.context("the internal listener panicked")??;
        }
        public?;
        let _ = tokio::join!(worker, webhooks, janitor, signal);
        self.state.store.close().await;
        Ok(())
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

/// Housekeeping: every 5 s, records when service tokens and keys were last used and sends
/// the reminders of expiring keys that fell due (SPEC §8.4); every minute,
/// forgets replay records whose window has passed and deletes emails sent longer ago than the
/// retention period.
async fn janitor(state: AppState, stop: CancellationToken) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        ticks += 1;
        if let Err(e) = state.service_tokens.flush_last_used(&state.store).await {
            tracing::warn!(error = %e, "could not record when service tokens were last used");
        }
        if let Err(e) = state.key_usage.flush(&state.store).await {
            tracing::warn!(error = ?e, "could not record when keys were last used");
        }
        // After the flush: an idle limit is judged by the latest recorded use.
        if let Err(e) = crate::flows::send_due_reminders(&state.ctx).await {
            tracing::warn!(error = %e, "could not send the reminders of expiring keys");
        }
        if ticks.is_multiple_of(12) {
            if let Err(e) = state
                .store
                .purge_replays(state.clock.now().timestamp_millis())
                .await
            {
                tracing::warn!(error = %e, "could not purge old replay records");
            }
            let before = state.clock.now() - state.settings.outbox_retention;
            if let Err(e) = state
                .store
                .prune_sent_emails(before.timestamp_millis())
                .await
            {
                tracing::warn!(error = %e, "could not prune sent emails");
            }
        }
    }
    // What was used since the last flush is not lost at a clean stop.
    let _ = state.service_tokens.flush_last_used(&state.store).await;
    let _ = state.key_usage.flush(&state.store).await;
}

/// The store, migrated unless that is turned off, and the cipher of the master key, proven to
/// be the one the database was created with.
pub async fn open_store_and_cipher(settings: &Settings) -> anyhow::Result<(Store, Cipher)> {
    let store = open_migrated_store(settings).await?;
    if !settings.migrate_on_start && store.meta(MASTER_KEY_CHECK).await.is_err() {
        bail!("the database has no keyward schema yet: run `keyward migrate` first (or start without --no-migrate)");
    }
    let cipher = cipher_for(settings, &store).await?;
    Ok((store, cipher))
}

/// The store, with the schema migrated as `serve` does (unless that is turned off).
pub async fn open_migrated_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = open_store(settings).await?;
    if settings.migrate_on_start {
        store
            .migrate()
            .await
            .context("could not apply the database migrations")?;
    }
    Ok(store)
}

pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(
        settings.database_url.expose_secret(),
        settings.database_max_connections,
    )
    .await
    .map(|store| store.with_endpoint_view(settings.key_cache))
    .context("could not open the database (check KEYWARD_DATABASE_URL)")
}
