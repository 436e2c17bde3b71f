//! Restricted and test keys (SPEC §8.1): asking for one (a one-time link, like regeneration),
//! making it when the link is used, listing a partner's pairs, and revoking one.

use super::key_cache::wait_out;
use super::key_policy::KeyTimes;
use super::links::Redeemed;
use super::reminders::schedule_for_new_key;
use super::{
    commit_and_wake, enforce_partner_limit, first_use, issue_key_link, Authenticated, Context,
    LinkRequest, Overlap, ReplayPurpose, Requester,
};
use crate::clock::millis;
use crate::crypto::secret_key_aad;
use crate::error::{Error, Result};
use crate::store::{
    Actor, Audit, AuditKind, KeyClass, KeyInfo, KeySpec, Link, NewKey, Partner, Tx,
};
use chrono::{DateTime, Utc};
use keyward_core::signature::SignedBody;
use keyward_core::wire::{self, wire_time};
use keyward_core::{ErrorCode, KeyPair, LinkPurpose, PartnerStatus};
use rand::rngs::OsRng;
use secrecy::ExposeSecret;
use std::net::IpAddr;

/// A partner holds at most this many restricted pairs (10 pairs with the primary).
pub const MAX_RESTRICTED_PAIRS: i64 = 9;

/// What `CreateKey` asks for, as sent (checked by [`KeyRequest::check`]).
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    /// `None`: the member was not sent.
    pub scopes: Option<Vec<String>>,
    pub mode: keyward_core::KeyMode,
    pub valid_days: Option<i64>,
}

impl KeyRequest {
    /// The pair to make, once its scopes are checked against the exchange's: with scopes off,
    /// a key cannot be given any (every key has all power); with them on, each must be known.
    pub fn check(self, ctx: &Context) -> Result<KeySpec> {
        let scopes = self.scopes.unwrap_or_default();
        let known = &ctx.settings.scopes.known;
        match known {
            None if !scopes.is_empty() => {
                return Err(Error::field(
                    "scopes",
                    "this exchange has no scopes (KEYWARD_SCOPES is unset): leave scopes out; every key may do everything",
                ))
            }
            Some(known) => {
                if let Some(i) = scopes.iter().position(|s| !known.contains(s)) {
                    let names: Vec<&str> = known.iter().collect();
                    return Err(Error::field(
                        &format!("scopes[{i}]"),
                        &format!("is not a scope of this exchange; the scopes are: {}", names.join(", ")),
                    ));
                }
            }
            None => {}
        }
        Ok(KeySpec {
            name: self.name,
            scopes: keyward_core::scopes::Scopes::from_names(scopes),
            mode: self.mode,
            valid_days: self.valid_days,
        })
    }
}

/// `CreateKey`: after the primary pair's checks, emails a one-time link to the new pair. The
/// same signed request (however encoded) within the replay window is not acted on twice. The
/// link counts toward the partner's emailed-link budget; it holds no place among the 10 pairs
/// until it is used.
#[tracing::instrument(skip_all, fields(partner_id = %auth.partner.id))]
pub async fn create_key(
    ctx: &Context,
    auth: &Authenticated,
    key: &KeySpec,
    body: &SignedBody,
    ip: IpAddr,
) -> Result<()> {
    auth.require_current_pair()?;
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    if !first_use(ctx, &mut tx, ReplayPurpose::CreateKey, &auth.key_id, body).await? {
        return Ok(());
    }
    let partner = tx
        .partner_by_id_for_update(&auth.partner.id)
        .await?
        .ok_or(Error::from(ErrorCode::UnknownKey))?;
    free_place(&mut tx, &partner, now).await?;
    enforce_partner_limit(ctx, &mut tx, &partner, Requester::KeyHolder, now).await?;
    let request = LinkRequest {
        partner: &partner,
        purpose: LinkPurpose::RestrictedKey,
        requester: Requester::KeyHolder,
        overlap: Overlap::default(),
        ip: Some(ip),
        now,
    };
    issue_key_link(ctx, &mut tx, request, key).await?;
    commit_and_wake(ctx, tx).await
}

/// A free place (1–9) among the partner's restricted pairs, or 409 `key_limit_reached`.
/// Pairs whose own expiry has passed can never work again: they are revoked to make room.
async fn free_place(tx: &mut Tx, partner: &Partner, now: DateTime<Utc>) -> Result<i64> {
    let mut taken = tx.restricted_slots(&partner.id).await?;
    if taken.len() >= 9 && tx.revoke_lapsed_restricted_keys(&partner.id, now).await? > 0 {
        taken = tx.restricted_slots(&partner.id).await?;
    }
    (1..=MAX_RESTRICTED_PAIRS)
        .find(|slot| !taken.contains(slot))
        .ok_or_else(|| ErrorCode::KeyLimitReached.into())
}

/// Makes the pair a used `restricted_key` link asked for, in the caller's transaction (the
/// link is consumed already); nothing else of the partner's changes.
pub(super) async fn make_restricted_pair(
    ctx: &Context,
    mut tx: Tx,
    link: &Link,
    partner: Partner,
    ip: IpAddr,
    now: DateTime<Utc>,
) -> Result<Redeemed> {
    let Some(spec) = &link.key else {
        return Err(Error::Unexpected(anyhow::anyhow!(
            "restricted_key link {} holds no key",
            link.id
        )));
    };
    if partner.status != PartnerStatus::Active {
        return Err(ErrorCode::PartnerSuspended.into());
    }
    let slot = free_place(&mut tx, &partner, now).await?;
    let pair = KeyPair::generate_in(spec.mode, &mut OsRng);
    let key_id = uuid::Uuid::now_v7().to_string();
    let ciphertext = ctx.cipher()?.encrypt(
        pair.secret.expose_secret().as_bytes(),
        &secret_key_aad(partner.id.as_str(), &key_id),
    )?;
    let created_at = millis(now);
    let valid_until = spec.valid_days.map(|days| created_at + days * 86_400_000);
    let class = KeyClass::Restricted {
        name: spec.name.clone(),
        scopes: spec.scopes.clone(),
        valid_until,
    };
    tx.insert_key(&NewKey {
        id: &key_id,
        partner_id: &partner.id,
        public_key_hash: &pair.public.hash(),
        public_key_hint: &pair.public.redacted(),
        secret_ciphertext: &ciphertext,
        secret_key_hash: &pair.secret.hash(),
        created_at,
        class: &class,
        mode: spec.mode,
        slot: Some(slot),
    })
    .await
    .map_err(|e| match e {
        // A concurrent redemption took the last place first.
        crate::store::StoreError::Conflict => ErrorCode::KeyLimitReached.into(),
        e => Error::from(e),
    })?;
    let times = KeyTimes {
        created_at,
        last_used_at: None,
        retiring_until: None,
        valid_until,
        legacy: false,
    };
    schedule_for_new_key(ctx, &mut tx, &key_id, &times, &partner, now).await?;
    let detail = format!(
        "key {key_id}; restricted {} pair {:?}; scopes: {}",
        spec.mode.as_str(),
        spec.name,
        if spec.scopes.is_empty() {
            "none".to_owned()
        } else {
            spec.scopes.to_stored()
        }
    );
    tx.audit(&Audit {
        partner: Some(&partner.id),
        ip: Some(ip),
        detail: Some(&detail),
        key_id: Some(&key_id),
        ..Audit::new(
            AuditKind::LinkRedeemed(LinkPurpose::RestrictedKey),
            Actor::Partner,
            now,
        )
    })
    .await?;
    commit_and_wake(ctx, tx).await?;
    ctx.metrics.link_redeemed(LinkPurpose::RestrictedKey);
    tracing::info!(partner_id = %partner.id, key = %pair.public.redacted(), "restricted key pair made");
    let expires_at = ctx
        .settings
        .expiry
        .expires_at(&times, !partner.allowed_ips.is_empty());
    let key = wire::KeyInfo {
        key_id,
        kind: class.kind().to_owned(),
        name: Some(spec.name.clone()),
        hint: pair.public.redacted(),
        scopes: ctx.settings.scopes.granted(&class),
        mode: spec.mode.as_str().to_owned(),
        created_at: wire_time(created_at),
        expires_at: expires_at.map(wire_time),
        last_used_at: None,
        state: "current".to_owned(),
        legacy: false,
    };
    Ok(Redeemed {
        partner_id: partner.id,
        partner_code: partner.code,
        keys: pair,
        purpose: LinkPurpose::RestrictedKey,
        old_keys_expire_at: None,
        key: Some(key),
    })
}

/// `ListKeys`: the partner's pairs that still work or retire, as the partner may see them.
pub async fn list_keys(ctx: &Context, auth: &Authenticated) -> Result<Vec<wire::KeyInfo>> {
    auth.require_current_pair()?;
    let keys = ctx.store.live_partner_keys(&auth.partner.id).await?;
    Ok(keys
        .iter()
        .map(|key| describe(ctx, key, &auth.partner))
        .collect())
}

/// One pair as `ListKeys` (and the operators) show it.
pub fn describe(ctx: &Context, key: &KeyInfo, partner: &Partner) -> wire::KeyInfo {
    let class = KeyClass::from_stored(
        &key.kind,
        key.name.clone(),
        key.scopes.clone(),
        key.valid_until,
    );
    let times = KeyTimes {
        created_at: key.created_at,
        last_used_at: key.last_used_at,
        retiring_until: key.expires_at,
        valid_until: key.valid_until,
        legacy: key.legacy.0,
    };
    wire::KeyInfo {
        key_id: key.id.clone(),
        kind: class.kind().to_owned(),
        name: key.name.clone(),
        hint: key.public_key_hint.clone(),
        scopes: ctx.settings.scopes.granted(&class),
        mode: key.mode.clone(),
        created_at: wire_time(key.created_at),
        expires_at: ctx
            .settings
            .expiry
            .expires_at(&times, !partner.allowed_ips.is_empty())
            .map(wire_time),
        last_used_at: key.last_used_at.map(wire_time),
        state: if key.expires_at.is_some() {
            "retiring"
        } else {
            "current"
        }
        .to_owned(),
        legacy: key.legacy.0,
    }
}

/// `RevokeKey`: revokes one restricted pair of the partner; in force on every node when this
/// returns. Returns how many were revoked (0 when it was revoked already).
#[tracing::instrument(skip_all, fields(partner_id = %auth.partner.id))]
pub async fn revoke_key(
    ctx: &Context,
    auth: &Authenticated,
    key_id: &str,
    ip: IpAddr,
) -> Result<u64> {
    auth.require_current_pair()?;
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    let partner = tx
        .partner_by_id_for_update(&auth.partner.id)
        .await?
        .ok_or(Error::from(ErrorCode::UnknownKey))?;
    let Some((kind, revoked_at)) = tx.key_state(&partner.id, key_id).await? else {
        return Err(Error::field(
            "key_id",
            "is not one of your key pairs: ListKeys shows their ids",
        ));
    };
    if kind == "primary" {
        return Err(Error::field(
            "key_id",
            "is your primary key pair, which RevokeKey cannot revoke: regenerate it with GenKeysForPartner instead",
        ));
    }
    if revoked_at.is_some() || !tx.revoke_key(&partner.id, key_id, now).await? {
        return Ok(0);
    }
    tx.audit(&Audit {
        partner: Some(&partner.id),
        ip: Some(ip),
        detail: Some(&format!("key {key_id} revoked by the partner")),
        key_id: Some(key_id),
        ..Audit::new(AuditKind::KeyRevoked, Actor::Partner, now)
    })
    .await?;
    commit_and_wake(ctx, tx).await?;
    wait_out(ctx.settings.key_cache).await;
    Ok(1)
}
