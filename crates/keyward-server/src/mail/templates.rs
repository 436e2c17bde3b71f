//! Email templates, compiled in: `templates/email/<name>/{subject,body.txt,body.html}`.

use minijinja::{AutoEscape, Environment};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The emails keyward sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    /// The one-time link to a new partner's first keys.
    Onboarding,
    /// The one-time link to regenerate a partner's keys.
    Regeneration,
    /// The notice that a partner's keys were regenerated.
    RegeneratedNotice,
    /// The reminder, a day ahead, that a retiring key pair stops working.
    RetiringReminder,
    /// The notice that a partner's IP allow-list changed.
    AllowedIpsChanged,
    /// The notice that a key was found in public (SPEC §9.2), with a regeneration link when
    /// the current pair was revoked.
    KeyLeaked,
    /// The one-time link to a restricted (or test) key pair asked for with CreateKey.
    RestrictedKey,
    /// The reminder that a pair expires under the expiry policy or its own (SPEC §8.4).
    KeyExpiryReminder,
}

impl EmailKind {
    pub const fn name(self) -> &'static str {
        match self {
            EmailKind::Onboarding => "onboarding",
            EmailKind::Regeneration => "regeneration",
            EmailKind::RegeneratedNotice => "regenerated_notice",
            EmailKind::RetiringReminder => "retiring_reminder",
            EmailKind::AllowedIpsChanged => "allowed_ips_changed",
            EmailKind::KeyLeaked => "key_leaked",
            EmailKind::RestrictedKey => "restricted_key",
            EmailKind::KeyExpiryReminder => "key_expiry_reminder",
        }
    }
}

/// A rendered email: what is encrypted into the outbox and later sent.
#[derive(Clone, Serialize, Deserialize)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for RenderedEmail {
    // Bodies carry one-time links: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedEmail")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

macro_rules! templates {
    ($($name:literal),*) => {
        &[$(
            (concat!($name, "/subject"), include_str!(concat!("../../templates/email/", $name, "/subject"))),
            (concat!($name, "/body.txt"), include_str!(concat!("../../templates/email/", $name, "/body.txt"))),
            (concat!($name, "/body.html"), include_str!(concat!("../../templates/email/", $name, "/body.html"))),
        )*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "onboarding",
    "regeneration",
    "regenerated_notice",
    "retiring_reminder",
    "allowed_ips_changed",
    "key_leaked",
    "restricted_key",
    "key_expiry_reminder"
);

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "an email template does not compile");
            }
        }
        env
    })
}

/// Renders the email `kind` with `context`.
pub fn render(
    kind: EmailKind,
    context: &impl Serialize,
) -> Result<RenderedEmail, minijinja::Error> {
    let env = environment();
    let part = |suffix: &str| -> Result<String, minijinja::Error> {
        env.get_template(&format!("{}/{suffix}", kind.name()))?
            .render(context)
    };
    Ok(RenderedEmail {
        subject: part("subject")?.trim().to_owned(),
        text: part("body.txt")?,
        html: part("body.html")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes_html() -> Result<(), minijinja::Error> {
        let context = minijinja::context! {
            partner_code => "A<CME", link_url => "http://x/link/t", expires_at => "soon",
            requested_ip => "192.0.2.1", regenerated_at => "now", ip => "192.0.2.1",
            overlap => "1 day", old_keys_expire_at => "tomorrow", allowed_ips => ["192.0.2.0/24"],
            changed_by => "the partner", what => "secret key", hint => "sk_partner_abcd…",
            found_at => "https://github.com/o/r/blob/x/.env", revoked => true,
            key_name => "reports", key_scopes => "reports:read", mode => "test",
            key_expiry => "never", key_expires_at => "tomorrow", key_label => "restricted key",
            reason => "it was not used for 90 days", primary => false,
        };
        for kind in [
            EmailKind::Onboarding,
            EmailKind::Regeneration,
            EmailKind::RegeneratedNotice,
            EmailKind::RetiringReminder,
            EmailKind::AllowedIpsChanged,
            EmailKind::KeyLeaked,
            EmailKind::RestrictedKey,
            EmailKind::KeyExpiryReminder,
        ] {
            let email = render(kind, &context)?;
            assert!(email.subject.contains("A<CME"));
            assert!(email.text.contains("A<CME"));
            assert!(email.html.contains("A&lt;CME") && !email.html.contains("A<CME"));
        }
        Ok(())
    }
}
