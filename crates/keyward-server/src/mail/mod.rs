//! Sending email: one [`Mailer`] built at start, over SMTP (lettre), into the mailbox folder
//! as `.eml` files (the default), or into memory (tests). Emails reach it only through the
//! transactional outbox (`outbox.rs`).

pub mod outbox;
pub mod smtp;
pub mod templates;

use anyhow::{bail, Context};
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::TlsParameters;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use smtp::{SmtpPool, SmtpTarget, TlsMode};
use std::path::PathBuf;
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
    Smtp(SmtpPool),
    File {
        dir: PathBuf,
        transport: AsyncFileTransport<Tokio1Executor>,
    },
    Memory(MemoryMailbox),
}

pub struct Mailer {
    from: Mailbox,
    transport: Transport,
    /// Signs every message when set (`KEYWARD_DKIM_KEY_FILE`).
    dkim: Option<DkimConfig>,
}

/// `Auto-Submitted: auto-generated` (RFC 3834): mail robots and vacation responders do not
/// answer it.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// Reads a DKIM key: RSA as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), or Ed25519 as the base64 of
/// its 32 bytes.
pub fn load_dkim(
    settings: &crate::config::DkimSettings,
    from: &Mailbox,
) -> anyhow::Result<DkimConfig> {
    let path = &settings.key_file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the DKIM key {}", path.display()))?;
    let text = text.trim();
    let key = if text.contains("BEGIN RSA PRIVATE KEY") {
        DkimSigningKey::new(text, DkimSigningAlgorithm::Rsa)
    } else if text.contains("BEGIN") {
        bail!(
            "the DKIM key {} is not PKCS#1: convert it with `openssl pkey -in KEY -traditional` (RSA), or give an Ed25519 key as base64",
            path.display()
        )
    } else {
        DkimSigningKey::new(text, DkimSigningAlgorithm::Ed25519)
    }
    .map_err(|_| {
        anyhow::anyhow!(
            "the DKIM key {} is not a valid RSA (PKCS#1 PEM) or Ed25519 (base64) private key",
            path.display()
        )
    })?;
    // relaxed/relaxed survives the re-folding relays do; the headers that make the message
    // ours (and Message-ID, so a resent copy is recognisably the same) are covered.
    // Content-Type and MIME-Version are written by lettre with the body, after signing, so
    // they cannot be listed (a listed header it does not see breaks the signature).
    let headers = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Auto-Submitted",
    ]
    .into_iter()
    .map(HeaderName::new_from_ascii_str)
    .collect();
    Ok(DkimConfig::new(
        settings.selector.clone(),
        from.email.domain().to_owned(),
        key,
        headers,
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ))
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
    pub fn new(from: Mailbox, transport: Transport, dkim: Option<DkimConfig>) -> Self {
        Self {
            from,
            transport,
            dkim,
        }
    }

    /// The mailer the settings describe: SMTP or the mailbox folder, DKIM when configured.
    pub fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        let transport = Self::transport_for(settings)?;
        Self::with_transport(settings, transport)
    }

    /// The settings' sender and DKIM key, with this transport.
    pub fn with_transport(
        settings: &crate::config::Settings,
        transport: Transport,
    ) -> anyhow::Result<Self> {
        let dkim = settings
            .dkim
            .as_ref()
            .map(|dkim| load_dkim(dkim, &settings.mail_from))
            .transpose()?;
        Ok(Self::new(settings.mail_from.clone(), transport, dkim))
    }

    /// The transport of the settings: SMTP when a URL is set, else the mailbox folder.
    pub fn transport_for(settings: &crate::config::Settings) -> anyhow::Result<Transport> {
        let data_dir = &settings.data_dir;
        match settings.smtp.as_ref() {
            Some(smtp) => Ok(Transport::Smtp(SmtpPool::new(
                smtp.target.clone(),
                settings.smtp_concurrency,
            ))),
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

    /// Sends one email. `id` (the outbox row's) becomes its `Message-ID` on the sender's
    /// domain, so a copy sent twice (at-least-once delivery) is recognisably the same message.
    pub async fn send(&self, id: &str, to: &str, email: &RenderedEmail) -> Result<(), MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Address(e.to_string()))?;
        let recipient = to.email.to_string();
        let mut message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .message_id(Some(format!("<{id}@{}>", self.from.email.domain())))
            .header(AutoSubmitted)
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| MailError::Build(e.to_string()))?;
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        match &self.transport {
            Transport::Smtp(pool) => pool
                .send(message.envelope(), &message.formatted())
                .await
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

/// `KEYWARD_SMTP_URL`, parsed when the settings are loaded (a bad URL stops the start with
/// its reason), and the URL itself, which may hold a password, for `check-config` to show
/// without it.
#[derive(Clone)]
pub struct SmtpSettings {
    pub url: secrecy::SecretString,
    pub target: SmtpTarget,
}

impl SmtpSettings {
    pub fn parse(url: secrecy::SecretString) -> anyhow::Result<Self> {
        let target = smtp_target(url.expose_secret())?;
        Ok(Self { url, target })
    }
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .finish_non_exhaustive()
    }
}

/// `smtp://[user:pass@]host[:port][?tls=none|starttls|opportunistic|wrapper]`, or `smtps://…`
/// (TLS from the first byte). A plain `smtp://host:port` means no TLS: local relays and test
/// servers.
pub fn smtp_target(url: &str) -> anyhow::Result<SmtpTarget> {
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
            (TlsMode::Wrapper(TlsParameters::new(host.clone())?), 465)
        }
        ("smtp", "starttls" | "required") => {
            (TlsMode::StartTls(TlsParameters::new(host.clone())?), 587)
        }
        ("smtp", "opportunistic") => (
            TlsMode::Opportunistic(TlsParameters::new(host.clone())?),
            587,
        ),
        ("smtp", "none" | "") => (TlsMode::None, 25),
        ("smtp", other) => bail!(
            "KEYWARD_SMTP_URL: tls={other} is not one of none, starttls, opportunistic, wrapper"
        ),
        (scheme, _) => {
            bail!("KEYWARD_SMTP_URL must start with smtp:// or smtps://, not {scheme}://")
        }
    };
    let credentials = (!parsed.username().is_empty()).then(|| {
        Credentials::new(
            percent_decode(parsed.username()),
            percent_decode(parsed.password().unwrap_or_default()),
        )
    });
    Ok(SmtpTarget {
        host,
        port: parsed.port().unwrap_or(default_port),
        tls,
        credentials,
        timeout: Duration::from_secs(15),
    })
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
        let target = smtp_target("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("127.0.0.1", 2525));
        assert!(matches!(target.tls, TlsMode::None) && target.credentials.is_none());
        let target = smtp_target("smtp://user:p%40ss@mail.example.com?tls=starttls").unwrap();
        assert!(matches!(target.tls, TlsMode::StartTls(_)) && target.port == 587);
        assert!(target.credentials.is_some());
        let target = smtp_target("smtps://mail.example.com").unwrap();
        assert!(matches!(target.tls, TlsMode::Wrapper(_)) && target.port == 465);
        assert!(smtp_target("smtp://mail.example.com?tls=bogus").is_err());
        assert!(smtp_target("http://mail.example.com").is_err());
        assert!(smtp_target("not a url").is_err());
    }
}
