//! Settings: defaults, then an optional TOML file, then `KEYWARD_*` environment variables,
//! then command-line flags. Every setting has a default that works on a fresh machine.

use anyhow::{bail, Context};
use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The settings as an operator may write them; every field optional. No `Debug`: it holds
/// the master key and database and SMTP credentials in the clear.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub database_max_connections: Option<u32>,
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub onboarding_link_ttl_secs: Option<u64>,
    pub regeneration_link_ttl_secs: Option<u64>,
    pub freshness_window_secs: Option<u64>,
    pub replay_window_secs: Option<u64>,
    pub ip_rate_limit_per_minute: Option<u32>,
    pub partner_links_per_hour: Option<u32>,
    pub outbox_max_attempts: Option<u32>,
    pub migrate_on_start: Option<bool>,
    pub log: Option<String>,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where emailed links point; never taken from a request's Host header.
    pub public_url: String,
    /// Whether `public_url` is the default (`http://` + the listen address), which then
    /// follows the address actually bound (port 0 picks a free port).
    pub public_url_is_default: bool,
    pub data_dir: PathBuf,
    pub database_url: SecretString,
    /// Connections this node may open (SQLite 8, PostgreSQL 16 by default).
    pub database_max_connections: Option<u32>,
    pub master_key: MasterKeySource,
    pub smtp_url: Option<SecretString>,
    pub mail_from: String,
    pub trusted_proxies: Vec<IpNet>,
    pub onboarding_link_ttl: Duration,
    pub regeneration_link_ttl: Duration,
    pub freshness_window: Duration,
    pub replay_window: Duration,
    pub ip_rate_limit_per_minute: u32,
    pub partner_links_per_hour: u32,
    pub outbox_max_attempts: u32,
    pub migrate_on_start: bool,
    pub log: String,
}

#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// The key itself (from `KEYWARD_MASTER_KEY`), standard base64 of 32 bytes.
    Inline(SecretString),
    /// A file holding it; created on first start when the database is new.
    File(PathBuf),
}

/// Each `KEYWARD_*` variable and the setting it fills. Secrets also take `…_FILE`.
const ENV_VARS: &[&str] = &[
    "KEYWARD_CONFIG",
    "KEYWARD_LISTEN",
    "KEYWARD_PUBLIC_URL",
    "KEYWARD_DATA_DIR",
    "KEYWARD_DATABASE_URL",
    "KEYWARD_DATABASE_URL_FILE",
    "KEYWARD_DATABASE_MAX_CONNECTIONS",
    "KEYWARD_MASTER_KEY",
    "KEYWARD_MASTER_KEY_FILE",
    "KEYWARD_SMTP_URL",
    "KEYWARD_SMTP_URL_FILE",
    "KEYWARD_MAIL_FROM",
    "KEYWARD_TRUSTED_PROXIES",
    "KEYWARD_ONBOARDING_LINK_TTL_SECS",
    "KEYWARD_REGENERATION_LINK_TTL_SECS",
    "KEYWARD_FRESHNESS_WINDOW_SECS",
    "KEYWARD_REPLAY_WINDOW_SECS",
    "KEYWARD_IP_RATE_LIMIT_PER_MINUTE",
    "KEYWARD_PARTNER_LINKS_PER_HOUR",
    "KEYWARD_OUTBOX_MAX_ATTEMPTS",
    "KEYWARD_MIGRATE_ON_START",
    "KEYWARD_LOG",
    // Read by the test suite, not by the server; listed so that it draws no warning.
    "KEYWARD_TEST_POSTGRES_URL",
    "KEYWARD_TEST_BACKEND",
    "KEYWARD_STRICT_TESTS",
    // Read by the partner commands (`keyward sign`, `whoami`, …).
    "KEYWARD_SECRET_KEY",
    "KEYWARD_PUBLIC_KEY",
    "KEYWARD_URL",
    "KEYWARD_PARTNER_ID",
    "KEYWARD_PARTNER_CODE",
    "KEYWARD_CREDENTIALS",
];

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
            let line = e
                .span()
                .map_or(0, |span| text[..span.start].lines().count().max(1));
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
        for (name, value) in vars {
            if !name.starts_with("KEYWARD_") {
                continue;
            }
            let number = |v: &str| -> anyhow::Result<u64> {
                v.trim()
                    .parse()
                    .with_context(|| format!("{name} must be a whole number, not {v:?}"))
            };
            let from_file = |v: &str| -> anyhow::Result<String> {
                let text = std::fs::read_to_string(v)
                    .with_context(|| format!("{name}: could not read {v}"))?;
                Ok(text.trim_end().to_owned())
            };
            match name.as_str() {
                "KEYWARD_LISTEN" => self.listen = Some(value),
                "KEYWARD_PUBLIC_URL" => self.public_url = Some(value),
                "KEYWARD_DATA_DIR" => self.data_dir = Some(value.into()),
                "KEYWARD_DATABASE_URL" => self.database_url = Some(value),
                "KEYWARD_DATABASE_URL_FILE" => self.database_url = Some(from_file(&value)?),
                "KEYWARD_DATABASE_MAX_CONNECTIONS" => {
                    self.database_max_connections = Some(u32::try_from(number(&value)?)?.max(1));
                }
                "KEYWARD_MASTER_KEY" => self.master_key = Some(value),
                "KEYWARD_MASTER_KEY_FILE" => self.master_key_file = Some(value.into()),
                "KEYWARD_SMTP_URL" => self.smtp_url = Some(value),
                "KEYWARD_SMTP_URL_FILE" => self.smtp_url = Some(from_file(&value)?),
                "KEYWARD_MAIL_FROM" => self.mail_from = Some(value),
                "KEYWARD_TRUSTED_PROXIES" => {
                    self.trusted_proxies = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    );
                }
                "KEYWARD_ONBOARDING_LINK_TTL_SECS" => {
                    self.onboarding_link_ttl_secs = Some(number(&value)?)
                }
                "KEYWARD_REGENERATION_LINK_TTL_SECS" => {
                    self.regeneration_link_ttl_secs = Some(number(&value)?)
                }
                "KEYWARD_FRESHNESS_WINDOW_SECS" => {
                    self.freshness_window_secs = Some(number(&value)?)
                }
                "KEYWARD_REPLAY_WINDOW_SECS" => self.replay_window_secs = Some(number(&value)?),
                "KEYWARD_IP_RATE_LIMIT_PER_MINUTE" => {
                    self.ip_rate_limit_per_minute = Some(u32::try_from(number(&value)?)?);
                }
                "KEYWARD_PARTNER_LINKS_PER_HOUR" => {
                    self.partner_links_per_hour = Some(u32::try_from(number(&value)?)?);
                }
                "KEYWARD_OUTBOX_MAX_ATTEMPTS" => {
                    self.outbox_max_attempts = Some(u32::try_from(number(&value)?)?)
                }
                "KEYWARD_MIGRATE_ON_START" => {
                    self.migrate_on_start =
                        Some(matches!(value.trim(), "1" | "true" | "yes" | "on"));
                }
                "KEYWARD_LOG" => self.log = Some(value),
                other if ENV_VARS.contains(&other) => {}
                other => unknown.push(other.to_owned()),
            }
        }
        Ok(unknown)
    }

    /// Fills in the defaults and checks every value.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("KEYWARD_LISTEN must be an address and port such as 127.0.0.1:8080, not {listen_text:?}"))?;
        let public_url_is_default = self.public_url.is_none();
        let public_url = match self.public_url {
            Some(url) => {
                let parsed = url::Url::parse(&url).with_context(|| {
                    format!("KEYWARD_PUBLIC_URL must be an absolute URL, not {url:?}")
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    bail!("KEYWARD_PUBLIC_URL must start with http:// or https://");
                }
                url.trim_end_matches('/').to_owned()
            }
            None => format!("http://{listen}"),
        };
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./keyward-data"));
        let database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}/keyward.db", data_dir.display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            bail!("KEYWARD_DATABASE_URL must start with sqlite:// or postgres://");
        }
        let master_key = match (self.master_key, self.master_key_file) {
            (Some(key), _) => MasterKeySource::Inline(SecretString::from(key)),
            (None, Some(file)) => MasterKeySource::File(file),
            (None, None) => MasterKeySource::File(data_dir.join("master.key")),
        };
        let trusted_proxies = self
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mail_from = self
            .mail_from
            .unwrap_or_else(|| "keyward <no-reply@localhost>".into());
        mail_from
            .parse::<lettre::message::Mailbox>()
            .with_context(|| format!("KEYWARD_MAIL_FROM must be an address such as `keyward <no-reply@example.com>`, not {mail_from:?}"))?;
        let secs = |v: Option<u64>, default: u64| Duration::from_secs(v.unwrap_or(default));
        Ok(Settings {
            listen,
            public_url,
            public_url_is_default,
            database_url: SecretString::from(database_url),
            database_max_connections: self.database_max_connections,
            master_key,
            smtp_url: self
                .smtp_url
                .filter(|s| !s.is_empty())
                .map(SecretString::from),
            mail_from,
            trusted_proxies,
            onboarding_link_ttl: secs(self.onboarding_link_ttl_secs, 24 * 3600),
            regeneration_link_ttl: secs(self.regeneration_link_ttl_secs, 3600),
            freshness_window: secs(self.freshness_window_secs, 300),
            replay_window: secs(self.replay_window_secs, 600),
            ip_rate_limit_per_minute: self.ip_rate_limit_per_minute.unwrap_or(60),
            partner_links_per_hour: self.partner_links_per_hour.unwrap_or(10),
            outbox_max_attempts: self.outbox_max_attempts.unwrap_or(12).max(1),
            migrate_on_start: self.migrate_on_start.unwrap_or(true),
            log: self.log.unwrap_or_else(|| "info".into()),
            data_dir,
        })
    }
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
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .with_context(|| format!("{s:?} is not an IP address or CIDR block (such as 10.0.0.0/8)"))
}

impl Settings {
    /// Defaults, then the file, then the environment. Unknown `KEYWARD_*` names are returned.
    pub fn load(config_file: Option<&Path>) -> anyhow::Result<(Self, Vec<String>)> {
        let mut raw = RawSettings::from_file(config_file)?;
        let unknown = raw.apply_env(std::env::vars())?;
        Ok((raw.resolve()?, unknown))
    }

    /// The settings for a test: defaults under `data_dir`, a random port, no env.
    pub fn for_tests(data_dir: &Path) -> Self {
        let raw = RawSettings {
            listen: Some("127.0.0.1:0".into()),
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
        assert_eq!(settings.public_url, "http://127.0.0.1:8080");
        assert!(
            matches!(settings.master_key, MasterKeySource::File(ref p) if p.ends_with("master.key"))
        );
        assert_eq!(settings.regeneration_link_ttl, Duration::from_secs(3600));
        Ok(())
    }

    #[test]
    fn env_overrides_and_unknown_names_are_reported() -> anyhow::Result<()> {
        let mut raw = RawSettings::default();
        let unknown = raw.apply_env(env(&[
            ("KEYWARD_LISTEN", "0.0.0.0:9000"),
            ("KEYWARD_PUBLIC_URL", "https://keys.example.com/"),
            ("KEYWARD_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1"),
            ("KEYWARD_LISTN", "typo"),
            ("PATH", "/bin"),
        ]))?;
        assert_eq!(unknown, vec!["KEYWARD_LISTN".to_owned()]);
        let settings = raw.resolve()?;
        assert_eq!(settings.public_url, "https://keys.example.com");
        assert_eq!(settings.trusted_proxies.len(), 2);
        Ok(())
    }

    #[test]
    fn bad_values_are_explained() {
        let mut raw = RawSettings::default();
        let err = raw
            .apply_env(env(&[("KEYWARD_REPLAY_WINDOW_SECS", "ten")]))
            .err();
        assert!(err.is_some_and(|e| e.to_string().contains("KEYWARD_REPLAY_WINDOW_SECS")));
        let raw = RawSettings {
            listen: Some("nowhere".into()),
            ..RawSettings::default()
        };
        assert!(raw
            .resolve()
            .is_err_and(|e| e.to_string().contains("KEYWARD_LISTEN")));
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
