//! Settings: defaults, then an optional TOML file, then `KEYWARD_*` environment variables,
//! then command-line flags. Every setting has a default that works on a fresh machine.
//!
//! Each setting is declared once, in the `settings!` table below, with its default and the
//! range its value must be in beside it: its name is its TOML key, and `KEYWARD_` + the name in
//! upper case is its environment variable (errors name it from there). [`RawSettings::resolve`]
//! fills in the defaults, checks the ranges, and turns what needs more than a range
//! (addresses, URLs, choices) into the typed [`Settings`].

use anyhow::{bail, Context};
use ipnet::IpNet;
use lettre::message::Mailbox;
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A value as an environment variable spells it.
trait FromEnv: Sized {
    fn from_env(value: &str) -> Result<Self, String>;
}

impl FromEnv for String {
    fn from_env(value: &str) -> Result<Self, String> {
        Ok(value.to_owned())
    }
}

impl FromEnv for PathBuf {
    fn from_env(value: &str) -> Result<Self, String> {
        Ok(value.into())
    }
}

impl FromEnv for u64 {
    fn from_env(value: &str) -> Result<Self, String> {
        value
            .trim()
            .parse()
            .map_err(|_| "must be a whole number".to_owned())
    }
}

impl FromEnv for u32 {
    fn from_env(value: &str) -> Result<Self, String> {
        value
            .trim()
            .parse()
            .map_err(|_| "must be a whole number below 4294967296".to_owned())
    }
}

impl FromEnv for bool {
    fn from_env(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err("must be on or off (true/false, 1/0, yes/no)".to_owned()),
        }
    }
}

/// A comma-separated list in the environment; a list in the TOML file.
impl FromEnv for Vec<String> {
    fn from_env(value: &str) -> Result<Self, String> {
        Ok(value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// A setting's value once its default is filled in: the type itself when the table gives a
/// default, else still optional.
macro_rules! filled_type {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

macro_rules! filled_value {
    ($value:expr) => {
        $value
    };
    ($value:expr, $default:expr) => {
        $value.unwrap_or_else(|| $default)
    };
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty $(= $default:expr)? $(; in $range:expr)? , )*) => {
        /// The settings as an operator may write them; every field optional. No `Debug`: it
        /// holds the master key and database and SMTP credentials in the clear.
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawSettings {
            $( $(#[doc = $doc])* pub $name: Option<$ty>, )*
        }

        /// The settings with the table's defaults filled in and its ranges checked: what
        /// [`RawSettings::resolve`] turns into the typed [`Settings`].
        struct Filled {
            $( $name: filled_type!($ty $(, $default)?), )*
        }

        impl RawSettings {
            /// Every setting's name (its TOML key; `KEYWARD_` + upper case is its variable).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// The defaults of the table, and its range checks (the error names the variable).
            fn fill(self) -> anyhow::Result<Filled> {
                Ok(Filled {
                    $( $name: {
                        let value = filled_value!(self.$name $(, $default)?);
                        $( within(stringify!($name), value, $range)?; )?
                        value
                    }, )*
                })
            }

            /// Sets the setting called `name` from an environment variable's text; `false` if
            /// no setting has that name. The error names the variable, never its value (it may
            /// be a secret).
            fn set_from_env(&mut self, name: &str, value: &str) -> anyhow::Result<bool> {
                $(
                    if name == stringify!($name) {
                        let parsed = <$ty as FromEnv>::from_env(value).map_err(|why| {
                            anyhow::anyhow!("{} {why}", variable(name))
                        })?;
                        self.$name = Some(parsed);
                        return Ok(true);
                    }
                )*
                Ok(false)
            }
        }
    };
}

/// The environment variable of the setting called `name`.
fn variable(name: &str) -> String {
    format!("KEYWARD_{}", name.to_ascii_uppercase())
}

/// Checks a value against its range in the table.
fn within<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> anyhow::Result<()> {
    if range.contains(&value) {
        return Ok(());
    }
    bail!(
        "{} must be between {} and {}, not {value}",
        variable(name),
        range.start(),
        range.end()
    )
}

/// The longest duration setting: ten years, so that every timestamp computed from it is valid.
const TEN_YEARS_SECS: u64 = 10 * 366 * 24 * 3600;

// Each setting once: its name (the TOML key; `KEYWARD_` + upper case is its variable), its
// type, its default when it has one, and the range its value must be in. What needs more than
// a range (addresses, URLs, choices) is checked in `resolve`.
settings! {
    /// `KEYWARD_LISTEN`: the public listener's address.
    listen: String = "127.0.0.1:8080".into(),
    /// Where emailed links point; never taken from a request's Host header.
    public_url: String,
    data_dir: PathBuf = PathBuf::from("./keyward-data"),
    database_url: String,
    /// A file holding the database URL (it may hold a password).
    database_url_file: PathBuf,
    database_max_connections: u32,
    master_key: String,
    master_key_file: PathBuf,
    /// During a master-key rotation: the other key, also accepted for decryption.
    master_key_previous: String,
    master_key_previous_file: PathBuf,
    smtp_url: String,
    /// A file holding the SMTP URL (it may hold a password).
    smtp_url_file: PathBuf,
    mail_from: String = "keyward <no-reply@localhost>".into(),
    /// Emails sent at once, each over its own reused SMTP connection.
    smtp_concurrency: u32 = 8; in 1..=64,
    /// A DKIM private key (RSA PKCS#1 PEM, or Ed25519 as base64 of its 32 bytes); unset: no
    /// signature. The domain is `KEYWARD_MAIL_FROM`'s.
    dkim_key_file: PathBuf,
    /// The DKIM selector: the key is published at `{selector}._domainkey.{domain}`.
    dkim_selector: String,
    trusted_proxies: Vec<String> = Vec::new(),
    onboarding_link_ttl_secs: u64 = 24 * 3600; in 0..=TEN_YEARS_SECS,
    regeneration_link_ttl_secs: u64 = 3600; in 0..=TEN_YEARS_SECS,
    freshness_window_secs: u64 = 300; in 0..=TEN_YEARS_SECS,
    replay_window_secs: u64 = 600; in 0..=TEN_YEARS_SECS,
    ip_rate_limit_per_minute: u32 = 60,
    partner_links_per_hour: u32 = 10,
    /// Emails anyone could cause (onboarding, lost keys) to one address per hour.
    recipient_emails_per_hour: u32 = 20,
    outbox_max_attempts: u32 = 12; in 1..=u32::MAX,
    /// Sent emails are deleted from the outbox after this many hours.
    outbox_retention_hours: u64 = 168; in 0..=TEN_YEARS_SECS / 3600,
    migrate_on_start: bool = true,
    log: String = "info".into(),
    /// The internal listener (verify API, `/metrics`), or `off`.
    internal_listen: String,
    /// The payment API behind the gateway; unset: no gateway.
    upstream_url: String,
    /// Paths under these prefixes that are not keyward's own routes go to the upstream.
    upstream_prefixes: Vec<String> = vec!["/api/v1/PartnerP2P/".to_owned()],
    upstream_timeout_ms: u64 = 30_000; in 1..=3_600_000,
    /// State-changing requests through the gateway are single-use.
    upstream_single_use: bool = true,
    /// How stale a node's view of a key or service token may be, in ms (SPEC §6); 0: none.
    key_cache_ms: u64 = 1000; in 0..=60_000,
    /// Refuse signed bodies holding numbers whose digits the signature does not cover (SPEC §2).
    exact_numbers: bool = false,
    /// Which header the trusted proxies write: `x-forwarded-for` or `forwarded` (RFC 7239).
    forwarded_header: String,
    /// `open` (anyone may onboard, the published behaviour) or `invite` (only partners an
    /// operator invited with `keyward partner invite`).
    onboarding: String,
    /// Open connections per listener; past it a new one gets 503 and is closed.
    max_connections: u32 = DEFAULT_MAX_CONNECTIONS; in 1..=u32::MAX,
    /// To send a request's headers, counted from when the connection could send one (so it
    /// also closes idle keep-alive connections).
    header_read_timeout_ms: u64 = 10_000; in 100..=600_000,
    /// To send a request's body, counted from the end of its headers.
    body_read_timeout_ms: u64 = 30_000; in 100..=600_000,
    /// Serve GitHub's secret scanning partner endpoint (SPEC §9.2).
    github_secret_scanning: bool = false,
    /// Where GitHub publishes the keys that sign its secret-scanning reports.
    github_keys_url: String = DEFAULT_GITHUB_KEYS_URL.into(),
    /// What a reported leak of a partner's key does: `revoke` (default) or `notify`.
    leak_action: String,
    /// The scopes this exchange knows (SPEC §8.2); unset: scopes are off.
    scopes: Vec<String>,
    /// Gateway path prefixes and the scope each needs: `/api/v1/PartnerP2P/Payout=payouts:write`.
    upstream_scopes: Vec<String> = Vec::new(),
    /// Where the gateway sends requests made with test keys (SPEC §8.3); unset: refused.
    sandbox_upstream_url: String,
    /// Every pair expires this long after it was made (`30d`, `12h`, `90s`).
    key_max_age: String,
    /// The same, shorter, for partners without an IP allow-list.
    key_max_age_without_allowlist: String,
    /// A pair not used for this long expires.
    key_max_idle: String,
    /// When the partner is reminded before a pair expires.
    key_expiry_reminders: Vec<String> = vec!["14d".into(), "3d".into(), "1d".into()],
    /// When imported keys of another format stop working (RFC 3339, SPEC §10.2).
    legacy_keys_until: String,
    /// The operators' console on the internal listener (SPEC §10.1); needs OpenID Connect.
    console: bool = false,
    /// The console's external base URL: the redirect URI is `{console_url}/console/callback`.
    console_url: String,
    oidc_issuer: String,
    oidc_client_id: String,
    oidc_client_secret: String,
    /// A file holding the client secret.
    oidc_client_secret_file: PathBuf,
    /// The ID token claim that lists the user's groups.
    oidc_roles_claim: String = "groups".into(),
    /// The groups whose members are admins, operators and viewers of the console.
    console_admins: Vec<String> = Vec::new(),
    console_operators: Vec<String> = Vec::new(),
    console_viewers: Vec<String> = Vec::new(),
}

/// `KEYWARD_GITHUB_KEYS_URL` when unset: GitHub's published secret-scanning keys.
pub const DEFAULT_GITHUB_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";

/// `KEYWARD_*` variables that are not settings of the server: they name the config file, are
/// read before the runtime starts (`KEYWARD_PIN_WORKERS`), or are read by the test suite and
/// the partner commands. Listed so that they draw no warning.
const OTHER_VARIABLES: &[&str] = &[
    "KEYWARD_CONFIG",
    "KEYWARD_PIN_WORKERS",
    "KEYWARD_TEST_POSTGRES_URL",
    "KEYWARD_TEST_BACKEND",
    "KEYWARD_STRICT_TESTS",
    "KEYWARD_SECRET_KEY",
    "KEYWARD_PUBLIC_KEY",
    "KEYWARD_URL",
    "KEYWARD_PARTNER_ID",
    "KEYWARD_PARTNER_CODE",
    "KEYWARD_CREDENTIALS",
];

/// The settings in force, every value checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where emailed links point; never taken from a request's Host header.
    pub public_url: PublicUrl,
    /// Whether `public_url` is the default (`http://` + the listen address), which then
    /// follows the address actually bound (port 0 picks a free port).
    pub public_url_is_default: bool,
    pub data_dir: PathBuf,
    pub database_url: SecretString,
    /// Connections this node may open (SQLite 8, PostgreSQL 16 by default).
    pub database_max_connections: Option<u32>,
    pub master_key: MasterKeySource,
    /// Also decrypts (never encrypts) during a rotation: `KEYWARD_MASTER_KEY_PREVIOUS(_FILE)`.
    pub master_key_previous: Option<MasterKeySource>,
    /// `KEYWARD_SMTP_URL` (or its file), parsed; unset: emails go to the mailbox folder.
    pub smtp: Option<crate::mail::SmtpSettings>,
    pub mail_from: Mailbox,
    /// How many emails are sent at once (`KEYWARD_SMTP_CONCURRENCY`, 1 to 64).
    pub smtp_concurrency: usize,
    /// DKIM signing, when `KEYWARD_DKIM_KEY_FILE` is set.
    pub dkim: Option<DkimSettings>,
    pub trusted_proxies: Vec<IpNet>,
    /// The header the trusted proxies write; the other is ignored.
    pub forwarded_header: ForwardedHeader,
    /// Who may onboard (`KEYWARD_ONBOARDING`).
    pub onboarding: Onboarding,
    pub onboarding_link_ttl: chrono::TimeDelta,
    pub regeneration_link_ttl: chrono::TimeDelta,
    pub freshness_window: chrono::TimeDelta,
    pub replay_window: chrono::TimeDelta,
    pub ip_rate_limit_per_minute: u32,
    pub partner_links_per_hour: u32,
    pub recipient_emails_per_hour: u32,
    pub outbox_max_attempts: u32,
    pub outbox_retention: chrono::TimeDelta,
    pub migrate_on_start: bool,
    pub log: String,
    /// `None` when the internal listener is `off`.
    pub internal_listen: Option<SocketAddr>,
    /// The gateway of SPEC §7.2, when `KEYWARD_UPSTREAM_URL` is set.
    pub upstream: Option<Upstream>,
    /// How stale a node's view of a key or service token may be (SPEC §6); zero: no cache.
    /// Changes that must hold on every node are acknowledged only after it has passed.
    pub key_cache: std::time::Duration,
    /// What protects each listener from slow, idle and too many connections.
    pub connection_limits: crate::listener::ConnectionLimits,
    /// `KEYWARD_EXACT_NUMBERS` (SPEC §2): a signed body holding a number whose decimal value
    /// differs from that of its ECMAScript form (digits beyond double precision) is refused.
    pub exact_numbers: bool,
    /// GitHub's secret scanning endpoint (SPEC §9.2): where its signing keys are published,
    /// when `KEYWARD_GITHUB_SECRET_SCANNING` is on.
    pub github_keys_url: Option<url::Url>,
    /// The operators' console (SPEC §10.1), when `KEYWARD_CONSOLE` is on.
    pub console: Option<ConsoleSettings>,
    /// What a reported leak of a partner's key does (`KEYWARD_LEAK_ACTION`).
    pub leak_action: LeakAction,
    /// `KEYWARD_SCOPES` and `KEYWARD_UPSTREAM_SCOPES` (SPEC §8.2).
    pub scopes: crate::flows::key_policy::ScopeSettings,
    /// `KEYWARD_KEY_MAX_AGE` and the rest of SPEC §8.4.
    pub expiry: crate::flows::key_policy::ExpiryPolicy,
}

/// What a leak of a partner's key does (SPEC §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeakAction {
    /// The pair is revoked at once and the partner emailed (with a regeneration link when it
    /// was the current pair).
    #[default]
    Revoke,
    /// The partner is only emailed; the pair keeps working.
    Notify,
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// `KEYWARD_MAX_CONNECTIONS` when unset.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

impl Settings {
    /// Every setting that changes how keyward behaves, as name and value for people: the
    /// start-up log line and `keyward check-config` show the same list. Secrets and the
    /// credentials in URLs are never in it.
    pub fn features(&self) -> Vec<(&'static str, String)> {
        let on_off = |on: bool| if on { "on" } else { "off" }.to_owned();
        let gateway = match &self.upstream {
            None => "off".to_owned(),
            Some(upstream) => format!(
                "{} (prefixes {}; single use {}; timeout {} ms)",
                without_credentials(&upstream.url),
                upstream.prefixes.join(", "),
                on_off(upstream.single_use),
                upstream.timeout.as_millis()
            ),
        };
        let proxies = if self.trusted_proxies.is_empty() {
            "none (X-Forwarded-For and Forwarded are ignored)".to_owned()
        } else {
            let header = match self.forwarded_header {
                ForwardedHeader::XForwardedFor => "X-Forwarded-For",
                ForwardedHeader::Forwarded => "Forwarded",
            };
            let list: Vec<String> = self
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("{} (reading {header})", list.join(", "))
        };
        vec![
            ("gateway", gateway),
            (
                "internal listener",
                self.internal_listen
                    .map_or_else(|| "off".to_owned(), |a| a.to_string()),
            ),
            (
                "onboarding",
                match self.onboarding {
                    Onboarding::Open => "open (anyone with a code and an email)".to_owned(),
                    Onboarding::Invite => "invite (only partners an operator invited)".to_owned(),
                },
            ),
            (
                "dkim",
                self.dkim
                    .as_ref()
                    .map_or_else(|| "off".to_owned(), |d| format!("selector {}", d.selector)),
            ),
            ("key cache", format!("{} ms", self.key_cache.as_millis())),
            (
                "console",
                self.console.as_ref().map_or_else(
                    || "off".to_owned(),
                    |c| {
                        let [admins, operators, viewers] = &c.groups;
                        format!(
                            "{}/console/ (issuer {}; roles from `{}`: admins {:?}, operators {:?}, viewers {:?})",
                            c.url.as_str().trim_end_matches('/'),
                            c.issuer,
                            c.roles_claim,
                            admins,
                            operators,
                            viewers
                        )
                    },
                ),
            ),
            ("trusted proxies", proxies),
            ("exact numbers", on_off(self.exact_numbers)),
            (
                "scopes",
                match &self.scopes.known {
                    None => "off (every key may do everything)".to_owned(),
                    Some(known) => format!(
                        "{} ({} gateway prefix(es) need one)",
                        known.iter().collect::<Vec<_>>().join(", "),
                        self.scopes.upstream.len()
                    ),
                },
            ),
            (
                "sandbox",
                self.upstream
                    .as_ref()
                    .and_then(|u| u.sandbox_url.as_ref())
                    .map_or_else(
                        || "off (test keys are refused at the gateway)".to_owned(),
                        without_credentials,
                    ),
            ),
            ("key expiry", self.expiry.describe()),
            (
                "github secret scanning",
                self.github_keys_url
                    .as_ref()
                    .map_or_else(|| "off".to_owned(), |url| format!("on (keys from {url})")),
            ),
            (
                "leak action",
                match self.leak_action {
                    LeakAction::Revoke => "revoke".to_owned(),
                    LeakAction::Notify => "notify".to_owned(),
                },
            ),
            (
                "max connections",
                format!("{} per listener", self.connection_limits.max_connections),
            ),
        ]
    }
}

/// A URL as it may be shown: without its user name and password.
fn without_credentials(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Who may onboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Onboarding {
    /// Anyone with a code and an email (SPEC §3.1).
    #[default]
    Open,
    /// Only partners an operator invited; `OnboardPartner` answers every request the same and
    /// only re-sends the link of an invited, pending partner whose email matches.
    Invite,
}

/// The DKIM key and selector; the domain is the sender's.
#[derive(Debug, Clone)]
pub struct DkimSettings {
    pub key_file: PathBuf,
    pub selector: String,
}

/// Where the gateway forwards authenticated requests, and how.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Where requests made with test keys go (SPEC §8.3); none: they are refused.
    pub sandbox_url: Option<url::Url>,
    /// Scheme, host, port and an optional base path; the request's own path and query are
    /// appended to it unchanged.
    pub url: url::Url,
    pub prefixes: Vec<String>,
    pub timeout: std::time::Duration,
    pub single_use: bool,
}

/// An absolute `http(s)` URL, shown and joined without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(text)
            .with_context(|| format!("KEYWARD_PUBLIC_URL must be an absolute URL, not {text:?}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            bail!("KEYWARD_PUBLIC_URL must start with http:// or https:// and name a host");
        }
        Ok(Self(parsed.as_str().trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which header the trusted proxies write (`KEYWARD_FORWARDED_HEADER`). Only that one is
/// read: a proxy that appends to one header passes the other through from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// The key itself (from `KEYWARD_MASTER_KEY`), standard base64 of 32 bytes.
    Inline(SecretString),
    /// A file holding it; created on first start when the database is new.
    File(PathBuf),
}

impl RawSettings {
    /// Reads the TOML file named by `path`, or by `KEYWARD_CONFIG`, if any.
    pub fn from_file(path: Option<&Path>) -> anyhow::Result<Self> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("KEYWARD_CONFIG").map(PathBuf::from));
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read the config file {}", path.display()))?;
        // toml's own message quotes the offending line, which may hold a secret: say only
        // what is wrong and where.
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(0, |span| line_of(&text, span.start));
            anyhow::anyhow!(
                "the config file {} is not valid at line {line}: {}",
                path.display(),
                e.message()
            )
        })
    }

    /// Overrides what is set in the environment. Returns the unknown `KEYWARD_*` names, which
    /// are most likely typos the operator wants to hear about.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Vec<String>> {
        let mut unknown = Vec::new();
        for (variable, value) in vars {
            let Some(name) = variable.strip_prefix("KEYWARD_") else {
                continue;
            };
            let is_upper = !name.bytes().any(|b| b.is_ascii_lowercase());
            let known = is_upper && self.set_from_env(&name.to_ascii_lowercase(), &value)?;
            if !known && !OTHER_VARIABLES.contains(&variable.as_str()) {
                unknown.push(variable);
            }
        }
        Ok(unknown)
    }

    /// Fills in the defaults and checks every value.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let public_url_is_default = self.public_url.is_none();
        let f = self.fill()?;
        let listen: SocketAddr = f.listen.parse().with_context(|| {
            format!(
                "KEYWARD_LISTEN must be an address and port such as 127.0.0.1:8080, not {:?}",
                f.listen
            )
        })?;
        let public_url =
            PublicUrl::parse(&f.public_url.unwrap_or_else(|| format!("http://{listen}")))?;
        let data_dir = f.data_dir;
        let database_url = match (f.database_url, f.database_url_file) {
            (Some(url), _) => url,
            (None, Some(file)) => read_secret_file("KEYWARD_DATABASE_URL_FILE", &file)?,
            (None, None) => format!("sqlite://{}/keyward.db", data_dir.display()),
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            bail!("KEYWARD_DATABASE_URL must start with sqlite:// or postgres://");
        }
        let smtp_url = match (f.smtp_url, f.smtp_url_file) {
            (Some(url), _) => Some(url),
            (None, Some(file)) => Some(read_secret_file("KEYWARD_SMTP_URL_FILE", &file)?),
            (None, None) => None,
        };
        let master_key = match (f.master_key, f.master_key_file) {
            (Some(key), _) => MasterKeySource::Inline(SecretString::from(key)),
            (None, Some(file)) => MasterKeySource::File(file),
            (None, None) => MasterKeySource::File(data_dir.join("master.key")),
        };
        let trusted_proxies = f
            .trusted_proxies
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mail_from = f.mail_from.parse::<Mailbox>().with_context(|| {
            format!(
                "KEYWARD_MAIL_FROM must be an address such as `keyward <no-reply@example.com>`, not {:?}",
                f.mail_from
            )
        })?;
        let internal_listen = match f.internal_listen.as_deref().map(str::trim) {
            Some("off") => None,
            Some(text) => Some(text.parse().with_context(|| {
                format!("KEYWARD_INTERNAL_LISTEN must be an address and port such as 127.0.0.1:8081, or off, not {text:?}")
            })?),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
        };
        let upstream = match f.upstream_url.filter(|u| !u.trim().is_empty()) {
            None => None,
            Some(text) => {
                let url = upstream_url("KEYWARD_UPSTREAM_URL", text.trim())?;
                if let Some(bad) = f.upstream_prefixes.iter().find(|p| !p.starts_with('/')) {
                    bail!("KEYWARD_UPSTREAM_PREFIXES entries must start with /, not {bad:?}");
                }
                let sandbox_url = f
                    .sandbox_upstream_url
                    .as_deref()
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(|text| upstream_url("KEYWARD_SANDBOX_UPSTREAM_URL", text))
                    .transpose()?;
                Some(Upstream {
                    url,
                    sandbox_url,
                    prefixes: f.upstream_prefixes,
                    timeout: Duration::from_millis(f.upstream_timeout_ms),
                    single_use: f.upstream_single_use,
                })
            }
        };
        if upstream.is_none()
            && f.sandbox_upstream_url
                .as_deref()
                .is_some_and(|u| !u.trim().is_empty())
        {
            bail!("KEYWARD_SANDBOX_UPSTREAM_URL needs KEYWARD_UPSTREAM_URL: the sandbox is the gateway's, for test keys");
        }
        let scopes = scope_settings(f.scopes, &f.upstream_scopes)?;
        let expiry = expiry_policy(
            f.key_max_age.as_deref(),
            f.key_max_age_without_allowlist.as_deref(),
            f.key_max_idle.as_deref(),
            &f.key_expiry_reminders,
        )?;
        if f.console && internal_listen.is_none() {
            bail!("KEYWARD_CONSOLE=on needs the internal listener (KEYWARD_INTERNAL_LISTEN is off): the console is served there, never on the public listener");
        }
        let console = if f.console {
            Some(console_settings(
                f.console_url,
                f.oidc_issuer,
                f.oidc_client_id,
                match (f.oidc_client_secret, f.oidc_client_secret_file) {
                    (Some(secret), _) => Some(secret),
                    (None, Some(file)) => {
                        Some(read_secret_file("KEYWARD_OIDC_CLIENT_SECRET_FILE", &file)?)
                    }
                    (None, None) => None,
                },
                f.oidc_roles_claim,
                [f.console_admins, f.console_operators, f.console_viewers],
            )?)
        } else {
            None
        };
        let expiry = crate::flows::key_policy::ExpiryPolicy {
            legacy_keys_until: legacy_keys_until(f.legacy_keys_until.as_deref())?,
            ..expiry
        };
        let dkim = match (f.dkim_key_file, f.dkim_selector) {
            (None, None) => None,
            (Some(key_file), Some(selector)) => {
                let valid = !selector.is_empty()
                    && selector.split('.').all(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    bail!("KEYWARD_DKIM_SELECTOR must be a DNS label such as mail2026, not {selector:?}");
                }
                Some(DkimSettings { key_file, selector })
            }
            _ => bail!(
                "KEYWARD_DKIM_KEY_FILE and KEYWARD_DKIM_SELECTOR go together: set both, or neither"
            ),
        };
        let forwarded_header = match f
            .forwarded_header
            .as_deref()
            .map(|h| h.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("x-forwarded-for") => ForwardedHeader::XForwardedFor,
            Some("forwarded") => ForwardedHeader::Forwarded,
            Some(_) => bail!("KEYWARD_FORWARDED_HEADER must be x-forwarded-for or forwarded"),
        };
        let onboarding = match f
            .onboarding
            .as_deref()
            .map(|o| o.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("open") => Onboarding::Open,
            Some("invite") => Onboarding::Invite,
            Some(_) => bail!("KEYWARD_ONBOARDING must be open or invite"),
        };
        let leak_action = match f
            .leak_action
            .as_deref()
            .map(|a| a.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("revoke") => LeakAction::Revoke,
            Some("notify") => LeakAction::Notify,
            Some(_) => bail!("KEYWARD_LEAK_ACTION must be revoke or notify"),
        };
        let github_keys_url = if f.github_secret_scanning {
            let text = f.github_keys_url.trim();
            let url = url::Url::parse(text).with_context(|| {
                format!("KEYWARD_GITHUB_KEYS_URL must be an absolute URL, not {text:?}")
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                bail!(
                    "KEYWARD_GITHUB_KEYS_URL must start with http:// or https:// and name a host"
                );
            }
            Some(url)
        } else {
            None
        };
        let seconds =
            |secs: u64| chrono::TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX));
        Ok(Settings {
            scopes,
            expiry,
            github_keys_url,
            console,
            leak_action,
            exact_numbers: f.exact_numbers,
            onboarding,
            forwarded_header,
            connection_limits: crate::listener::ConnectionLimits {
                max_connections: usize::try_from(f.max_connections)?,
                header_read_timeout: Duration::from_millis(f.header_read_timeout_ms),
                body_read_timeout: Duration::from_millis(f.body_read_timeout_ms),
            },
            key_cache: Duration::from_millis(f.key_cache_ms),
            internal_listen,
            upstream,
            listen,
            public_url,
            public_url_is_default,
            database_url: SecretString::from(database_url),
            database_max_connections: f.database_max_connections.map(|n| n.max(1)),
            master_key,
            master_key_previous: match (f.master_key_previous, f.master_key_previous_file) {
                (Some(key), _) => Some(MasterKeySource::Inline(SecretString::from(key))),
                (None, Some(file)) => Some(MasterKeySource::File(file)),
                (None, None) => None,
            },
            smtp: smtp_url
                .filter(|s| !s.is_empty())
                .map(|url| crate::mail::SmtpSettings::parse(SecretString::from(url)))
                .transpose()?,
            mail_from,
            smtp_concurrency: usize::try_from(f.smtp_concurrency)?,
            dkim,
            trusted_proxies,
            onboarding_link_ttl: seconds(f.onboarding_link_ttl_secs),
            regeneration_link_ttl: seconds(f.regeneration_link_ttl_secs),
            freshness_window: seconds(f.freshness_window_secs),
            replay_window: seconds(f.replay_window_secs),
            ip_rate_limit_per_minute: f.ip_rate_limit_per_minute,
            partner_links_per_hour: f.partner_links_per_hour,
            recipient_emails_per_hour: f.recipient_emails_per_hour,
            outbox_retention: seconds(f.outbox_retention_hours * 3600),
            outbox_max_attempts: f.outbox_max_attempts,
            migrate_on_start: f.migrate_on_start,
            log: f.log,
            data_dir,
        })
    }
}

/// `KEYWARD_SCOPES` (unset: off) and `KEYWARD_UPSTREAM_SCOPES`, checked: a malformed list
/// stops the server at start.
fn scope_settings(
    known: Option<Vec<String>>,
    upstream: &[String],
) -> anyhow::Result<crate::flows::key_policy::ScopeSettings> {
    use keyward_core::scopes::{is_scope_name, Scopes};
    let known = match known {
        None => None,
        Some(names) => {
            if let Some(bad) = names.iter().find(|n| !is_scope_name(n)) {
                bail!("KEYWARD_SCOPES: {bad:?} is not a scope name: use a lower-case letter, then up to 63 of a-z 0-9 _ . : - (such as payouts:write)");
            }
            if names.is_empty() {
                bail!("KEYWARD_SCOPES is empty: list the scopes (such as payouts:write,reports:read), or leave it unset to turn scopes off");
            }
            Some(Scopes::from_names(names))
        }
    };
    let mut mapped = Vec::new();
    for entry in upstream {
        let Some((prefix, scope)) = entry.split_once('=') else {
            bail!("KEYWARD_UPSTREAM_SCOPES entries are PREFIX=SCOPE, such as /api/v1/PartnerP2P/Payout=payouts:write; {entry:?} has no =");
        };
        let (prefix, scope) = (prefix.trim(), scope.trim());
        if !prefix.starts_with('/') {
            bail!("KEYWARD_UPSTREAM_SCOPES prefixes must start with /, not {prefix:?}");
        }
        let Some(known) = &known else {
            bail!(
                "KEYWARD_UPSTREAM_SCOPES needs KEYWARD_SCOPES: list the scopes the exchange knows"
            );
        };
        if !known.contains(scope) {
            bail!("KEYWARD_UPSTREAM_SCOPES names {scope:?}, which is not in KEYWARD_SCOPES");
        }
        // Compared as the gateway compares paths: decoded, in lower case.
        let prefix = crate::flows::key_policy::scope_path(prefix);
        mapped.push((prefix, scope.to_owned()));
    }
    // Longest prefix first: the first match is the one that applies.
    mapped.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    Ok(crate::flows::key_policy::ScopeSettings {
        known,
        upstream: mapped,
    })
}

/// The expiry policy of SPEC §8.4 from its settings' text.
fn expiry_policy(
    max_age: Option<&str>,
    without_allowlist: Option<&str>,
    max_idle: Option<&str>,
    reminders: &[String],
) -> anyhow::Result<crate::flows::key_policy::ExpiryPolicy> {
    let duration = |variable: &str, text: Option<&str>| -> anyhow::Result<Option<i64>> {
        match text.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(text) => keyward_core::scopes::parse_duration(text)
                .filter(|&secs| secs <= TEN_YEARS_SECS)
                .map(|secs| Some(i64::try_from(secs).unwrap_or(i64::MAX) * 1000))
                .ok_or_else(|| {
                    anyhow::anyhow!("{variable} must be a duration such as 90d, 12h or 90s (at most ten years), not {text:?}")
                }),
        }
    };
    let mut before = Vec::new();
    for text in reminders {
        match duration("KEYWARD_KEY_EXPIRY_REMINDERS", Some(text))? {
            Some(ms) => before.push(ms),
            None => {
                bail!("KEYWARD_KEY_EXPIRY_REMINDERS entries must be durations such as 14d,3d,1d")
            }
        }
    }
    before.sort_unstable_by(|a, b| b.cmp(a));
    before.dedup();
    Ok(crate::flows::key_policy::ExpiryPolicy {
        max_age: duration("KEYWARD_KEY_MAX_AGE", max_age)?,
        max_age_without_allowlist: duration(
            "KEYWARD_KEY_MAX_AGE_WITHOUT_ALLOWLIST",
            without_allowlist,
        )?,
        max_idle: duration("KEYWARD_KEY_MAX_IDLE", max_idle)?,
        reminders: before,
        legacy_keys_until: None,
    })
}

/// The console's settings (SPEC §10.1): OpenID Connect and the groups of each role.
#[derive(Clone)]
pub struct ConsoleSettings {
    /// Its external base, without a trailing slash (`https://ops.example.com`).
    pub url: url::Url,
    /// The issuer exactly as configured: discovery must find this very string (some providers'
    /// issuers end with a slash, most do not).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub roles_claim: String,
    /// The groups of admins, operators and viewers, in that order.
    pub groups: [Vec<String>; 3],
}

impl ConsoleSettings {
    /// Whether cookies must be `Secure`: the console is reached over https.
    pub fn https(&self) -> bool {
        self.url.scheme() == "https"
    }
}

impl std::fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("url", &self.url.as_str())
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("roles_claim", &self.roles_claim)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

fn console_settings(
    url: Option<String>,
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    roles_claim: String,
    groups: [Vec<String>; 3],
) -> anyhow::Result<ConsoleSettings> {
    let required = |name: &str, value: Option<String>| -> anyhow::Result<String> {
        value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).ok_or_else(|| {
            anyhow::anyhow!(
                "KEYWARD_CONSOLE=on needs {name}: the console only runs behind an OpenID Connect login (docs/deployment.md, \"The operators' console\")"
            )
        })
    };
    let url = upstream_url(
        "KEYWARD_CONSOLE_URL",
        &required("KEYWARD_CONSOLE_URL", url)?,
    )?;
    if url.path() != "/" {
        bail!("KEYWARD_CONSOLE_URL must be the console's origin (such as https://ops.example.com): the console lives under /console/");
    }
    let issuer_text = required("KEYWARD_OIDC_ISSUER", issuer)?;
    let issuer = url::Url::parse(&issuer_text)
        .context("KEYWARD_OIDC_ISSUER must be the identity provider's issuer URL")?;
    let loopback = match issuer.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    if !(issuer.scheme() == "https" || issuer.scheme() == "http" && loopback) {
        bail!(
            "KEYWARD_OIDC_ISSUER must be https:// (http:// only on a loopback address, for tests)"
        );
    }
    let groups = groups.map(|list| {
        list.into_iter()
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect::<Vec<_>>()
    });
    if groups.iter().all(Vec::is_empty) {
        bail!("KEYWARD_CONSOLE=on needs at least one of KEYWARD_CONSOLE_ADMINS, KEYWARD_CONSOLE_OPERATORS, KEYWARD_CONSOLE_VIEWERS: the groups that may use the console");
    }
    Ok(ConsoleSettings {
        url,
        issuer: issuer_text,
        client_id: required("KEYWARD_OIDC_CLIENT_ID", client_id)?,
        client_secret: SecretString::from(required(
            "KEYWARD_OIDC_CLIENT_SECRET or KEYWARD_OIDC_CLIENT_SECRET_FILE",
            client_secret,
        )?),
        roles_claim: roles_claim.trim().to_owned(),
        groups,
    })
}

/// `KEYWARD_LEGACY_KEYS_UNTIL`: an RFC 3339 date-time, in ms.
fn legacy_keys_until(text: Option<&str>) -> anyhow::Result<Option<i64>> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
        anyhow::anyhow!(
            "KEYWARD_LEGACY_KEYS_UNTIL must be an RFC 3339 date-time such as 2027-06-30T00:00:00Z, not {text:?}"
        )
    })?;
    Ok(Some(at.timestamp_millis()))
}

/// An upstream URL setting: absolute, http(s), with a host, no query or fragment.
fn upstream_url(variable: &str, text: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(text).with_context(|| {
        format!("{variable} must be an absolute URL such as http://127.0.0.1:9000, not {text:?}")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("{variable} must start with http:// or https:// and name a host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("{variable} must not have a query or fragment: the request's own are forwarded");
    }
    // The partner's own `Authorization` travels to the upstream; credentials in the URL would
    // have nowhere to go, so they are refused rather than silently dropped.
    if !url.username().is_empty() || url.password().is_some() {
        bail!("{variable} must not carry a user name or password: the partner's Authorization header is forwarded");
    }
    Ok(url)
}

fn read_secret_file(variable: &str, path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{variable}: could not read {}", path.display()))?;
    Ok(text.trim_end().to_owned())
}

/// An address or a CIDR block; a bare address means just that host.
///
/// ```
/// use keyward_server::config::parse_cidr;
/// assert!(parse_cidr("10.0.0.0/8")?.contains(&"10.1.2.3".parse::<std::net::IpAddr>()?));
/// assert_eq!(parse_cidr("192.0.2.7")?.to_string(), "192.0.2.7/32");
/// assert!(parse_cidr("not an address").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_cidr(s: &str) -> anyhow::Result<IpNet> {
    Ok(keyward_core::allow_list::parse_entry(s)?)
}

impl Settings {
    /// The settings for a test: defaults under `data_dir`, a random port, no env.
    pub fn for_tests(data_dir: &Path) -> Self {
        let raw = RawSettings {
            listen: Some("127.0.0.1:0".into()),
            internal_listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.to_path_buf()),
            ..RawSettings::default()
        };
        match raw.resolve() {
            Ok(settings) => settings,
            Err(e) => unreachable!("test defaults are valid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_work_without_anything_set() -> anyhow::Result<()> {
        let settings = RawSettings::default().resolve()?;
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.public_url.as_str(), "http://127.0.0.1:8080");
        assert!(
            matches!(settings.master_key, MasterKeySource::File(ref p) if p.ends_with("master.key"))
        );
        assert_eq!(settings.regeneration_link_ttl, chrono::TimeDelta::hours(1));
        Ok(())
    }

    #[test]
    fn env_overrides_and_unknown_names_are_reported() -> anyhow::Result<()> {
        let mut raw = RawSettings::default();
        let unknown = raw.apply_env(env(&[
            ("KEYWARD_LISTEN", "0.0.0.0:9000"),
            ("KEYWARD_PUBLIC_URL", "https://keys.example.com/"),
            ("KEYWARD_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1"),
            ("KEYWARD_MIGRATE_ON_START", "off"),
            ("KEYWARD_LISTN", "typo"),
            ("KEYWARD_listen", "lower case is not a setting"),
            ("KEYWARD_SECRET_KEY", "read by the partner commands"),
            ("PATH", "/bin"),
        ]))?;
        assert_eq!(
            unknown,
            vec!["KEYWARD_LISTN".to_owned(), "KEYWARD_listen".to_owned()]
        );
        let settings = raw.resolve()?;
        assert_eq!(settings.public_url.as_str(), "https://keys.example.com");
        assert_eq!(settings.trusted_proxies.len(), 2);
        assert!(!settings.migrate_on_start);
        Ok(())
    }

    #[test]
    fn every_setting_has_a_variable() -> anyhow::Result<()> {
        for name in RawSettings::NAMES {
            let mut raw = RawSettings::default();
            let value = if name.ends_with("secs")
                || name.ends_with("per_minute")
                || name.ends_with("per_hour")
                || name.ends_with("_hours")
                || name.ends_with("attempts")
                || name.ends_with("connections")
                || name.ends_with("concurrency")
                || name.ends_with("timeout_ms")
            {
                "5"
            } else if name == &"forwarded_header" {
                "forwarded"
            } else if name == &"onboarding" {
                "invite"
            } else if name == &"leak_action" {
                "notify"
            } else if name == &"github_keys_url" {
                "http://127.0.0.1:1/keys"
            } else if name.starts_with("migrate")
                || name.ends_with("single_use")
                || name == &"exact_numbers"
                || name == &"github_secret_scanning"
                || name == &"console"
            {
                "on"
            } else if name.ends_with("_ms") {
                "500"
            } else {
                "x"
            };
            let variable = format!("KEYWARD_{}", name.to_ascii_uppercase());
            let unknown = raw.apply_env([(variable.clone(), value.to_owned())])?;
            assert!(unknown.is_empty(), "{variable}");
        }
        Ok(())
    }

    #[test]
    fn scopes_and_the_expiry_policy_are_off_by_default_and_checked_when_set() -> anyhow::Result<()>
    {
        let settings = RawSettings::default().resolve()?;
        assert!(!settings.scopes.is_on());
        assert_eq!(
            settings.expiry.expires_at(
                &crate::flows::key_policy::KeyTimes {
                    created_at: 0,
                    last_used_at: None,
                    retiring_until: None,
                    valid_until: None,
                    legacy: false,
                },
                false
            ),
            None
        );
        let resolve = |pairs: &[(&str, &str)]| -> anyhow::Result<Settings> {
            let mut raw = RawSettings::default();
            raw.apply_env(env(pairs))?;
            raw.resolve()
        };
        let set = resolve(&[
            ("KEYWARD_SCOPES", "payouts:write, reports:read"),
            ("KEYWARD_UPSTREAM_URL", "http://127.0.0.1:9"),
            ("KEYWARD_SANDBOX_UPSTREAM_URL", "http://127.0.0.1:10"),
            (
                "KEYWARD_UPSTREAM_SCOPES",
                "/api/v1/PartnerP2P/Pay=payouts:write,/api/v1/PartnerP2P/PayReport=reports:read",
            ),
            ("KEYWARD_KEY_MAX_AGE", "90d"),
            ("KEYWARD_KEY_MAX_IDLE", "12h"),
            ("KEYWARD_KEY_EXPIRY_REMINDERS", "1d,7d"),
            ("KEYWARD_LEGACY_KEYS_UNTIL", "2027-06-30T12:00:00+02:00"),
        ])?;
        assert_eq!(set.expiry.legacy_keys_until, Some(1_814_349_600_000));
        assert_eq!(
            set.scopes
                .required_for_path("/api/v1/PartnerP2P/PayReport/x"),
            Some("reports:read")
        );
        assert_eq!(
            set.scopes.required_for_path("/api/v1/PartnerP2P/Pay"),
            Some("payouts:write")
        );
        assert_eq!(set.expiry.max_age, Some(90 * 86_400_000));
        assert_eq!(set.expiry.reminders, vec![7 * 86_400_000, 86_400_000]);
        for (pairs, names) in [
            (&[("KEYWARD_SCOPES", "Payouts")][..], "KEYWARD_SCOPES"),
            (&[("KEYWARD_SCOPES", ",")][..], "KEYWARD_SCOPES"),
            (&[("KEYWARD_UPSTREAM_SCOPES", "/x=a")][..], "KEYWARD_SCOPES"),
            (
                &[("KEYWARD_SCOPES", "a"), ("KEYWARD_UPSTREAM_SCOPES", "/x=b")][..],
                "KEYWARD_UPSTREAM_SCOPES",
            ),
            (
                &[("KEYWARD_SCOPES", "a"), ("KEYWARD_UPSTREAM_SCOPES", "/x")][..],
                "KEYWARD_UPSTREAM_SCOPES",
            ),
            (
                &[("KEYWARD_KEY_MAX_AGE", "30 days")][..],
                "KEYWARD_KEY_MAX_AGE",
            ),
            (
                &[("KEYWARD_KEY_MAX_IDLE", "0s")][..],
                "KEYWARD_KEY_MAX_IDLE",
            ),
            (
                &[("KEYWARD_KEY_EXPIRY_REMINDERS", "1w")][..],
                "KEYWARD_KEY_EXPIRY_REMINDERS",
            ),
            (
                &[("KEYWARD_SANDBOX_UPSTREAM_URL", "http://127.0.0.1:10")][..],
                "KEYWARD_SANDBOX_UPSTREAM_URL",
            ),
            (
                &[("KEYWARD_LEGACY_KEYS_UNTIL", "2027-06-30")][..],
                "KEYWARD_LEGACY_KEYS_UNTIL",
            ),
            (
                &[("KEYWARD_UPSTREAM_URL", "http://api:secret@127.0.0.1:9")][..],
                "KEYWARD_UPSTREAM_URL must not carry a user name or password",
            ),
        ] {
            let err = resolve(pairs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(names), "{pairs:?}: {err}");
        }
        Ok(())
    }

    #[test]
    fn the_console_needs_a_complete_single_sign_on_and_the_internal_listener() -> anyhow::Result<()>
    {
        let resolve = |pairs: &[(&str, &str)]| -> anyhow::Result<Settings> {
            let mut raw = RawSettings::default();
            raw.apply_env(env(pairs))?;
            raw.resolve()
        };
        let complete = [
            ("KEYWARD_CONSOLE", "on"),
            ("KEYWARD_CONSOLE_URL", "https://ops.example.com"),
            ("KEYWARD_OIDC_ISSUER", "https://sso.example.com/realms/x"),
            ("KEYWARD_OIDC_CLIENT_ID", "keyward"),
            ("KEYWARD_OIDC_CLIENT_SECRET", "s3cret-value"),
            ("KEYWARD_CONSOLE_OPERATORS", "ops, support"),
        ];
        let console = resolve(&complete)?.console.expect("on");
        assert!(console.https());
        assert_eq!(console.groups[1], ["ops", "support"]);
        assert_eq!(console.roles_claim, "groups");
        assert!(!format!("{console:?}").contains("s3cret-value"));
        assert!(resolve(&[])?.console.is_none());
        for (change, expected) in [
            (("KEYWARD_OIDC_ISSUER", ""), "KEYWARD_OIDC_ISSUER"),
            (
                ("KEYWARD_OIDC_ISSUER", "http://sso.example.com"),
                "https://",
            ),
            (
                ("KEYWARD_OIDC_CLIENT_SECRET", ""),
                "KEYWARD_OIDC_CLIENT_SECRET",
            ),
            (("KEYWARD_CONSOLE_OPERATORS", ""), "KEYWARD_CONSOLE_ADMINS"),
            (
                ("KEYWARD_CONSOLE_URL", "https://ops.example.com/keyward"),
                "origin",
            ),
            (("KEYWARD_INTERNAL_LISTEN", "off"), "internal listener"),
        ] {
            let mut pairs: Vec<(&str, &str)> = complete
                .iter()
                .filter(|(k, _)| *k != change.0)
                .copied()
                .collect();
            pairs.push(change);
            let err = resolve(&pairs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(expected), "{change:?}: {err}");
            assert!(!err.contains("s3cret-value"), "{err}");
        }
        // http is for a loopback issuer only (tests, a local provider).
        let mut local = complete.to_vec();
        local.retain(|(k, _)| *k != "KEYWARD_OIDC_ISSUER");
        local.push(("KEYWARD_OIDC_ISSUER", "http://127.0.0.1:9000"));
        assert!(resolve(&local)?.console.is_some());
        Ok(())
    }

    #[test]
    fn bad_values_are_explained_without_quoting_them() {
        let mut raw = RawSettings::default();
        let err = raw
            .apply_env(env(&[("KEYWARD_REPLAY_WINDOW_SECS", "ten-c2VjcmV0")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("KEYWARD_REPLAY_WINDOW_SECS"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let raw = RawSettings {
            listen: Some("nowhere".into()),
            ..RawSettings::default()
        };
        assert!(raw
            .resolve()
            .is_err_and(|e| e.to_string().contains("KEYWARD_LISTEN")));
        let raw = RawSettings {
            replay_window_secs: Some(u64::MAX),
            ..RawSettings::default()
        };
        assert!(raw
            .resolve()
            .is_err_and(|e| e.to_string().contains("KEYWARD_REPLAY_WINDOW_SECS")));
    }

    #[test]
    fn a_config_file_error_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyward.toml");
        for (text, line) in [
            ("listen = \"127.0.0.1:8080\"\nlisten_typo = \"x\"\n", 2),
            ("listen_typo = \"x\"\n", 1),
            ("\n\n\nkey_cache_ms = \"soon\"\n", 4),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = RawSettings::from_file(Some(&path))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.contains(&format!("at line {line}:")),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn an_smtp_url_is_parsed_when_the_settings_load() {
        let raw = |url: &str| RawSettings {
            smtp_url: Some(url.into()),
            ..RawSettings::default()
        };
        assert!(raw("smtp://mail.example.com:2525?tls=bogus")
            .resolve()
            .is_err_and(|e| format!("{e:#}").contains("tls=bogus")));
        let settings = raw("smtp://user:pw@mail.example.com:2525")
            .resolve()
            .unwrap();
        let smtp = settings.smtp.unwrap();
        assert_eq!(
            (smtp.target.host.as_str(), smtp.target.port),
            ("mail.example.com", 2525)
        );
    }

    #[test]
    fn secrets_can_come_from_files() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        std::fs::write(&path, "postgres://u:p@db.example/keyward\n")?;
        let mut raw = RawSettings::default();
        raw.apply_env(env(&[(
            "KEYWARD_DATABASE_URL_FILE",
            path.to_str().unwrap(),
        )]))?;
        let settings = raw.resolve()?;
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&settings.database_url),
            "postgres://u:p@db.example/keyward"
        );
        Ok(())
    }

    #[test]
    fn a_bad_config_file_is_reported_without_quoting_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("keyward.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nmaster_key = 42 # c2VjcmV0\n",
        )?;
        let err = RawSettings::from_file(Some(&path))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        Ok(())
    }

    #[test]
    fn the_config_file_rejects_unknown_keys() {
        let parsed: Result<RawSettings, _> =
            toml::from_str("listen = \"127.0.0.1:1\"\nlsiten = 1\n");
        assert!(parsed.is_err());
    }
}
