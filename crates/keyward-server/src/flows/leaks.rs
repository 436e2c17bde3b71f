//! Leaked keys (SPEC §9.2): a token found in public — reported by GitHub's secret scanning or
//! by an operator's `keyward leak report` — is looked up, and a partner's pair it belongs to is
//! revoked (`KEYWARD_LEAK_ACTION=revoke`, the default) or only announced (`notify`). Each
//! report is audited and emailed to the partner in one transaction; a revocation holds on
//! every node when this returns.

use super::issue::create_link;
use super::key_cache::wait_out;
use super::limits::Requester;
use super::outgoing::{commit_and_wake, human_time, queue_email, Outgoing};
use super::{Context, LinkRequest, Overlap};
use crate::config::LeakAction;
use crate::crypto::secret_key_aad;
use crate::error::{Error, Result};
use crate::mail::EmailKind;
use crate::store::{Actor, Audit, AuditKind, KeyRecord};
use keyward_core::scan::TokenKind;
use keyward_core::{KeyHash, LinkPurpose, PartnerCode, PartnerStatus, SecretKey};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Who reported the leak: it is the actor of the audit event.
#[derive(Debug, Clone, Copy)]
pub enum Reporter<'a> {
    /// GitHub's secret scanning partner program (a signed request).
    GitHub,
    /// An operator's `keyward leak report`.
    Operator(&'a str),
}

impl Reporter<'_> {
    fn name(self) -> &'static str {
        match self {
            Reporter::GitHub => "github",
            Reporter::Operator(_) => "operator",
        }
    }

    fn actor(&self) -> Actor<'_> {
        match *self {
            Reporter::GitHub => Actor::GitHub,
            Reporter::Operator(name) => Actor::Operator(name),
        }
    }

    fn requester(&self) -> Requester<'_> {
        match *self {
            Reporter::GitHub => Requester::GitHub,
            Reporter::Operator(name) => Requester::Operator(name),
        }
    }
}

/// One token reported as found in public, and where.
#[derive(Debug, Clone, Copy)]
pub struct Leak<'a> {
    pub token: &'a str,
    /// Where it was found (GitHub's `url`; `--url`), if said.
    pub url: Option<&'a str>,
    /// GitHub's `source` (`content`, `commit`, …), if said.
    pub source: Option<&'a str>,
}

/// What was done about one reported token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not a token of this keyward (or no longer known to it).
    NotOurs,
    /// A partner's pair, revoked now; `link` says whether a regeneration link was emailed.
    Revoked { partner: PartnerCode, link: bool },
    /// A partner's pair, left working; the partner was emailed (`KEYWARD_LEAK_ACTION=notify`).
    Notified { partner: PartnerCode },
    /// A partner's pair that was revoked already: audited, nobody emailed.
    AlreadyRevoked { partner: PartnerCode },
    /// A service token of the exchange (audited and logged; its operators revoke it).
    ServiceToken { name: String },
}

impl Outcome {
    /// Whether the token is or was ours (GitHub's `true_positive`).
    pub fn ours(&self) -> bool {
        !matches!(self, Outcome::NotOurs)
    }

    fn metric(&self) -> &'static str {
        match self {
            Outcome::NotOurs => "not_ours",
            Outcome::Revoked { .. } => "revoked",
            Outcome::Notified { .. } => "notified",
            Outcome::AlreadyRevoked { .. } => "already_revoked",
            Outcome::ServiceToken { .. } => "service_token",
        }
    }
}

/// A reported token's verdict: its SHA-256 (lower-case hex, as GitHub's feedback names it),
/// its kind if it has one of our formats, and what was done.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub token_sha256: String,
    pub kind: Option<TokenKind>,
    pub outcome: Outcome,
}

/// The longest `url` kept in the audit log and the email; GitHub's are far shorter.
const MAX_URL: usize = 1000;

#[derive(Serialize)]
struct LeakEmailContext<'a> {
    partner_code: &'a str,
    what: &'static str,
    hint: String,
    found_at: String,
    revoked: bool,
    /// The revoked pair was the partner's current one.
    current: bool,
    link_url: String,
    expires_at: String,
}

/// Acts on every reported token (each distinct token once) and returns a verdict per report,
/// in order. Revocations hold on every node when this returns.
pub async fn report(
    ctx: &Context,
    leaks: &[Leak<'_>],
    reporter: Reporter<'_>,
) -> Result<Vec<Verdict>> {
    let mut done: HashMap<&str, Verdict> = HashMap::new();
    let mut revoked_any = false;
    let mut verdicts = Vec::with_capacity(leaks.len());
    for leak in leaks {
        if let Some(verdict) = done.get(leak.token) {
            verdicts.push(verdict.clone());
            continue;
        }
        let kind = TokenKind::of(leak.token);
        let outcome = match kind {
            None => Outcome::NotOurs,
            Some(TokenKind::ServiceToken) => service_token_leaked(ctx, leak, reporter).await?,
            Some(kind) => partner_key_leaked(ctx, leak, kind, reporter).await?,
        };
        revoked_any |= matches!(outcome, Outcome::Revoked { .. });
        ctx.metrics.leak(reporter.name(), outcome.metric());
        let verdict = Verdict {
            token_sha256: hex::encode(Sha256::digest(leak.token.as_bytes())),
            kind,
            outcome,
        };
        done.insert(leak.token, verdict.clone());
        verdicts.push(verdict);
    }
    if revoked_any {
        wait_out(ctx.settings.key_cache).await;
    }
    Ok(verdicts)
}

/// Where the token was found, as the audit log and the email say it.
fn found_at(leak: &Leak<'_>, reporter: Reporter<'_>) -> String {
    let url: Option<String> = leak.url.map(|url| {
        url.chars()
            .filter(|c| !c.is_control())
            .take(MAX_URL)
            .collect()
    });
    match (url, reporter) {
        (Some(url), _) if !url.is_empty() => url,
        (_, Reporter::GitHub) => "a public place GitHub's secret scanning did not name".into(),
        (_, Reporter::Operator(_)) => "a place the exchange's operators were told of".into(),
    }
}

async fn service_token_leaked(
    ctx: &Context,
    leak: &Leak<'_>,
    reporter: Reporter<'_>,
) -> Result<Outcome> {
    let Some((name, revoked)) = ctx
        .store
        .service_token_by_hash(&KeyHash::of(leak.token))
        .await?
    else {
        return Ok(Outcome::NotOurs);
    };
    let found = found_at(leak, reporter);
    tracing::warn!(
        service_token = %name,
        revoked,
        "a service token was reported as leaked: create a new one and revoke this one"
    );
    let detail = format!(
        "service token {name} found at {found}{}",
        if revoked { "; already revoked" } else { "" }
    );
    let mut tx = ctx.store.begin().await?;
    tx.audit(&Audit {
        detail: Some(&detail),
        ..Audit::new(
            AuditKind::ServiceTokenLeaked,
            reporter.actor(),
            ctx.clock.now(),
        )
    })
    .await?;
    tx.commit().await?;
    Ok(Outcome::ServiceToken { name })
}

async fn partner_key_leaked(
    ctx: &Context,
    leak: &Leak<'_>,
    kind: TokenKind,
    reporter: Reporter<'_>,
) -> Result<Outcome> {
    let hash = KeyHash::of(leak.token);
    let record = if kind.is_public() {
        ctx.store.key_by_hash(&hash).await?
    } else {
        ctx.store.key_by_secret_hash(&hash).await?
    };
    let Some(KeyRecord {
        key_id,
        revoked_at,
        expires_at,
        partner,
        ..
    }) = record
    else {
        return Ok(Outcome::NotOurs);
    };
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    // Locked, so that a regeneration racing with the report is ordered with it.
    let partner = tx
        .partner_by_id_for_update(&partner.id)
        .await?
        .unwrap_or(partner);
    let revoke = ctx.settings.leak_action == LeakAction::Revoke;
    let was_live = revoked_at.is_none();
    let revoked = was_live && revoke && tx.revoke_key(&partner.id, &key_id, now).await?;
    let current = expires_at.is_none();
    let what = if kind.is_public() {
        "public key"
    } else {
        "secret key"
    };
    let hint = format!("{}…", &leak.token[..kind.prefix().len() + 4]);
    let found = found_at(leak, reporter);
    let code = partner.code.clone();
    let outcome = if !was_live || (revoke && !revoked) {
        Outcome::AlreadyRevoked { partner: code }
    } else {
        let link = if revoked && current && partner.status == PartnerStatus::Active {
            let request = LinkRequest {
                partner: &partner,
                purpose: LinkPurpose::Regeneration,
                requester: reporter.requester(),
                overlap: Overlap::default(),
                ip: None,
                now,
            };
            Some(create_link(ctx, &mut tx, &request).await?)
        } else {
            None
        };
        let context = LeakEmailContext {
            partner_code: partner.code.as_str(),
            what,
            hint: hint.clone(),
            found_at: found.clone(),
            revoked,
            current,
            link_url: link.as_ref().map(|l| l.url.clone()).unwrap_or_default(),
            expires_at: link
                .as_ref()
                .map(|l| human_time(l.expires_at))
                .unwrap_or_default(),
        };
        let email = Outgoing::now(&partner.email, EmailKind::KeyLeaked, now);
        queue_email(ctx.cipher()?, &mut tx, email, &context).await?;
        if revoked {
            Outcome::Revoked {
                partner: code,
                link: link.is_some(),
            }
        } else {
            Outcome::Notified { partner: code }
        }
    };
    let action = match &outcome {
        Outcome::Revoked { link: true, .. } => "pair revoked; regeneration link emailed",
        Outcome::Revoked { link: false, .. } => "pair revoked; partner emailed",
        Outcome::Notified { .. } => "partner emailed (KEYWARD_LEAK_ACTION=notify)",
        _ => "pair already revoked",
    };
    let source = leak
        .source
        .map(|s| {
            format!(
                " ({})",
                s.chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect::<String>()
            )
        })
        .unwrap_or_default();
    let detail = format!("{what} {hint} of key {key_id} found at {found}{source}; {action}");
    tx.audit(&Audit {
        partner: Some(&partner.id),
        detail: Some(&detail),
        key_id: Some(&key_id),
        ..Audit::new(AuditKind::KeyLeaked, reporter.actor(), now)
    })
    .await?;
    commit_and_wake(ctx, tx).await?;
    tracing::warn!(partner_id = %partner.id, key_id, result = outcome.metric(), "a key was reported as leaked");
    Ok(outcome)
}

/// Pairs per batch when storing the secret-key hashes of older pairs.
const BACKFILL_BATCH: i64 = 500;

/// Stores the secret-key hash of every live pair made before they were stored (migration
/// 0007), so that a leaked secret of an older pair is found too. Idempotent, in batches; a
/// secret that does not decrypt is skipped (and logged) rather than stopping start-up.
pub async fn backfill_secret_hashes(ctx: &Context) -> Result<u64> {
    let cipher = ctx.cipher()?;
    let mut stored = 0;
    let mut skipped = std::collections::HashSet::new();
    loop {
        let batch = ctx
            .store
            .keys_without_secret_hash(BACKFILL_BATCH + skipped.len() as i64)
            .await?;
        let mut hashes = Vec::new();
        for key in &batch {
            if skipped.contains(&key.key_id) {
                continue;
            }
            let decrypted = cipher
                .decrypt(
                    &key.secret_ciphertext,
                    &secret_key_aad(&key.partner_id, &key.key_id),
                )
                .ok()
                .and_then(|plain| String::from_utf8(plain).ok())
                .and_then(|text| SecretKey::parse(&text).ok());
            match decrypted {
                Some(secret) => {
                    hashes.push((key.key_id.clone(), KeyHash::of(secret.expose_secret())))
                }
                None => {
                    tracing::error!(key_id = %key.key_id, "a stored secret key does not decrypt: its leaks cannot be found by the secret");
                    skipped.insert(key.key_id.clone());
                }
            }
        }
        if hashes.is_empty() {
            return Ok(stored);
        }
        stored += hashes.len() as u64;
        ctx.store
            .set_secret_hashes(&hashes)
            .await
            .map_err(Error::from)?;
    }
}
