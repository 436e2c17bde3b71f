//! Sending email: one [`Mailer`] built at start, over SMTP (lettre), into the mailbox folder
//! as `.eml` files (the default), or into memory (tests). Emails reach it only through the
//! transactional outbox (`outbox.rs`).

pub mod outbox;
pub mod templates;

use anyhow::{bail, Context};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use templates::{EmailKind, RenderedEmail};

/// An email as the memory transport keeps it: the parts tests read, and the whole message as
/// lettre built it for the wire (so tests cover message construction too).
#[derive(Clone)]
pub struct SentEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The RFC 5322 message, as it would have been sent.
    pub raw: Vec<u8>,
}

/// The memory transport's mailbox (tests read it, and can make an address undeliverable).
#[derive(Clone, Default)]
pub struct MemoryMailbox {
    emails: Arc<Mutex<Vec<SentEmail>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

impl MemoryMailbox {
    pub fn emails(&self) -> Vec<SentEmail> {
        self.emails.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Every later send to `address` fails as a mail server that is down would.
    pub fn refuse(&self, address: &str) {
        if let Ok(mut refused) = self.refused.lock() {
            refused.push(address.to_lowercase());
        }
    }

    fn deliver(&self, email: SentEmail) -> Result<(), MailError> {
        let refused = self
            .refused
            .lock()
            .map(|r| r.contains(&email.to.to_lowercase()))
            .unwrap_or(false);
        if refused {
            return Err(MailError::Transport(format!(
                "{} refused by the memory transport",
                email.to
            )));
        }
        if let Ok(mut emails) = self.emails.lock() {
            emails.push(email);
        }
        Ok(())
    }
}

pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File {
        dir: PathBuf,
        transport: AsyncFileTransport<Tokio1Executor>,
    },
    Memory(MemoryMailbox),
}

pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the recipient address is not valid: {0}")]
    Address(String),
    #[error("the email could not be built: {0}")]
    Build(String),
    #[error("the mail server refused or could not be reached: {0}")]
    Transport(String),
}

impl MailError {
    /// Whether trying again later cannot help (the message itself is wrong).
    pub fn is_permanent(&self) -> bool {
        matches!(self, MailError::Address(_) | MailError::Build(_))
    }
}

impl Mailer {
    pub fn new(from: Mailbox, transport: Transport) -> Self {
        Self { from, transport }
    }

    /// The transport of the settings: SMTP when a URL is set, else the mailbox folder.
    pub fn transport_for(
        smtp_url: Option<&SecretString>,
        data_dir: &Path,
    ) -> anyhow::Result<Transport> {
        match smtp_url {
            Some(url) => Ok(Transport::Smtp(smtp_transport(url.expose_secret())?)),
            None => {
                let dir = data_dir.join("mailbox");
                std::fs::create_dir_all(&dir).with_context(|| {
                    format!("could not create the mailbox folder {}", dir.display())
                })?;
                // The emails hold one-time links: only the service's user may read them.
                #[cfg(unix)]
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .with_context(|| {
                        format!("could not restrict the mailbox folder {}", dir.display())
                    })?;
                Ok(Transport::File {
                    transport: AsyncFileTransport::new(&dir),
                    dir,
                })
            }
        }
    }

    /// Where mail goes, for the start-up log line (no credentials).
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(_) => "SMTP".into(),
            Transport::File { dir, .. } => format!("the mailbox folder {}", dir.display()),
            Transport::Memory(_) => "memory".into(),
        }
    }

    pub async fn send(&self, to: &str, email: &RenderedEmail) -> Result<(), MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Address(e.to_string()))?;
        let recipient = to.email.to_string();
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| MailError::Build(e.to_string()))?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(drop)
                .map_err(|e| MailError::Transport(e.to_string())),
            Transport::File { transport, .. } => transport
                .send(message)
                .await
                .map(drop)
                .map_err(|e| MailError::Transport(e.to_string())),
            Transport::Memory(mailbox) => mailbox.deliver(SentEmail {
                to: recipient,
                subject: email.subject.clone(),
                text: email.text.clone(),
                html: email.html.clone(),
                raw: message.formatted(),
            }),
        }
    }
}

/// `smtp://[user:pass@]host[:port][?tls=none|starttls|opportunistic|wrapper]`, or `smtps://…`
/// (TLS from the first byte). A plain `smtp://host:port` means no TLS: local relays and test
/// servers.
pub fn smtp_transport(url: &str) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let parsed = url::Url::parse(url)
        .context("KEYWARD_SMTP_URL is not a URL (expected smtp://host:port)")?;
    let host = parsed
        .host_str()
        .context("KEYWARD_SMTP_URL has no host")?
        .to_owned();
    let tls_mode = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| {
            if parsed.scheme() == "smtps" {
                "wrapper".into()
            } else {
                "none".into()
            }
        });
    let (tls, default_port) = match (parsed.scheme(), tls_mode.as_str()) {
        ("smtps", _) | ("smtp", "wrapper" | "tls" | "implicit") => {
            (Tls::Wrapper(TlsParameters::new(host.clone())?), 465)
        }
        ("smtp", "starttls" | "required") => {
            (Tls::Required(TlsParameters::new(host.clone())?), 587)
        }
        ("smtp", "opportunistic") => (Tls::Opportunistic(TlsParameters::new(host.clone())?), 587),
        ("smtp", "none" | "") => (Tls::None, 25),
        ("smtp", other) => bail!(
            "KEYWARD_SMTP_URL: tls={other} is not one of none, starttls, opportunistic, wrapper"
        ),
        (scheme, _) => {
            bail!("KEYWARD_SMTP_URL must start with smtp:// or smtps://, not {scheme}://")
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
        .port(parsed.port().unwrap_or(default_port))
        .tls(tls)
        .timeout(Some(Duration::from_secs(15)));
    if !parsed.username().is_empty() {
        let user = percent_decode(parsed.username());
        let password = percent_decode(parsed.password().unwrap_or_default());
        builder = builder.credentials(Credentials::new(user, password));
    }
    Ok(builder.build())
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    // lettre's connection pool lives on the Tokio runtime.
    #[tokio::test]
    async fn smtp_urls_are_understood() {
        assert!(smtp_transport("smtp://127.0.0.1:2525").is_ok());
        assert!(smtp_transport("smtp://user:p%40ss@mail.example.com?tls=starttls").is_ok());
        assert!(smtp_transport("smtps://mail.example.com").is_ok());
        assert!(smtp_transport("smtp://mail.example.com?tls=bogus").is_err());
        assert!(smtp_transport("http://mail.example.com").is_err());
        assert!(smtp_transport("not a url").is_err());
    }
}
