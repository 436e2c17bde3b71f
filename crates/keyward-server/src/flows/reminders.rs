//! Reminders before a pair expires (SPEC §8.4). Their due times are stored when a pair is made
//! and when the partner's allow-list changes; each node's janitor claims the due ones and, in
//! the same transaction, either sends one (through the outbox) or moves it (the pair was used
//! since, so its idle limit moved) or drops it (revoked, regenerated, nothing expires). A row
//! is decided once, by one node: exactly once across nodes.

use super::key_policy::KeyTimes;
use super::{commit_and_wake, human_time, queue_email, Context, Outgoing};
use crate::clock::{from_millis, millis};
use crate::error::Result;
use crate::mail::EmailKind;
use crate::store::{DueReminder, KeyClass, KeyTimesRow, Partner, Tx};
use chrono::{DateTime, Utc};
use keyward_core::PartnerStatus;
use serde::Serialize;

/// Reminders decided per transaction.
const BATCH: i64 = 100;

/// Stores the reminders of a pair just made.
pub(crate) async fn schedule_for_new_key(
    ctx: &Context,
    tx: &mut Tx,
    key_id: &str,
    times: &KeyTimes,
    partner: &Partner,
    now: DateTime<Utc>,
) -> Result<()> {
    let has_allow_list = !partner.allowed_ips.is_empty();
    plan(ctx, tx, key_id, times, has_allow_list, millis(now)).await
}

/// Stores the reminders the policy gives one pair (those still ahead of `now`, ms).
async fn plan(
    ctx: &Context,
    tx: &mut Tx,
    key_id: &str,
    times: &KeyTimes,
    has_allow_list: bool,
    now: i64,
) -> Result<()> {
    let dues = ctx
        .settings
        .expiry
        .reminders_due(times, has_allow_list, now);
    if !dues.is_empty() {
        tx.schedule_reminders(key_id, &dues).await?;
    }
    Ok(())
}

/// A stored live pair's times, as the policy reads them.
fn times_of(key: &KeyTimesRow) -> KeyTimes {
    KeyTimes {
        created_at: key.created_at,
        last_used_at: key.last_used_at,
        retiring_until: key.expires_at,
        valid_until: key.valid_until,
        legacy: key.legacy.0,
    }
}

/// Stores the reminders of every live pair of the partner again, after a change of what its
/// expiry depends on (an allow-list set lifts `KEYWARD_KEY_MAX_AGE_WITHOUT_ALLOWLIST`, removing
/// it applies it again). In the caller's transaction.
pub(crate) async fn reschedule_partner(
    ctx: &Context,
    tx: &mut Tx,
    partner: &Partner,
    has_allow_list: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    if ctx.settings.expiry.max_age_without_allowlist.is_none() {
        return Ok(());
    }
    tx.drop_partner_reminders(&partner.id).await?;
    for key in tx.live_key_times(&partner.id).await? {
        plan(
            ctx,
            tx,
            &key.id,
            &times_of(&key),
            has_allow_list,
            millis(now),
        )
        .await?;
    }
    Ok(())
}

/// Where the policy the reminders were last stored from is kept.
const POLICY_META: &str = "expiry_policy";

/// When the expiry policy differs from the one the stored reminders were computed from (an
/// operator turned `KEYWARD_KEY_MAX_AGE` on, or changed the reminders), stores every live
/// pair's reminders again, 1,000 pairs per transaction; returns how many pairs. The unsent
/// reminders of the revoked pairs among them are dropped too (they would be, when due).
/// Idempotent: two nodes starting together store the same rows.
pub async fn reschedule_after_policy_change(ctx: &Context) -> Result<u64> {
    let policy = &ctx.settings.expiry;
    let fingerprint = format!(
        "v1 {:?} {:?} {:?} {:?} {:?}",
        policy.max_age,
        policy.max_age_without_allowlist,
        policy.max_idle,
        policy.reminders,
        policy.legacy_keys_until
    );
    if ctx.store.meta(POLICY_META).await?.as_deref() == Some(fingerprint.as_bytes()) {
        return Ok(0);
    }
    let mut after = String::new();
    let mut done = 0;
    loop {
        let batch = ctx.store.live_keys_after(&after, 1_000).await?;
        let Some((last, _)) = batch.last() else { break };
        let now = millis(ctx.clock.now());
        // The reminders are worked out before the write lock is taken, and the old ones of
        // the whole batch go in one statement: a store of a million pairs under a policy that
        // plans none of them costs a thousand short transactions, not a million statements.
        let planned: Vec<(&str, Vec<(i64, i64)>)> = batch
            .iter()
            .map(|(key, has_allow_list)| {
                let dues = ctx
                    .settings
                    .expiry
                    .reminders_due(&times_of(key), *has_allow_list, now);
                (key.id.as_str(), dues)
            })
            .filter(|(_, dues)| !dues.is_empty())
            .collect();
        let mut tx = ctx.store.begin().await?;
        tx.drop_reminders_of_keys_in(&after, &last.id).await?;
        for (key_id, dues) in &planned {
            tx.schedule_reminders(key_id, dues).await?;
        }
        tx.commit().await?;
        after.clone_from(&last.id);
        done += batch.len() as u64;
    }
    let mut tx = ctx.store.begin().await?;
    tx.set_meta(POLICY_META, fingerprint.as_bytes()).await?;
    tx.commit().await?;
    Ok(done)
}

#[derive(Serialize)]
struct ReminderContext<'a> {
    partner_code: &'a str,
    key_label: String,
    hint: &'a str,
    key_expires_at: String,
    reason: &'static str,
    primary: bool,
}

/// What became of one due reminder.
enum Decision {
    Send { expires_at: i64 },
    Move { due_at: i64 },
    Drop,
}

/// Decides every reminder due now, in batches; returns how many were sent.
pub async fn send_due_reminders(ctx: &Context) -> Result<u64> {
    let mut sent = 0;
    loop {
        let now = ctx.clock.now();
        let mut tx = ctx.store.begin().await?;
        let due = tx.claim_due_reminders(now, BATCH).await?;
        if due.is_empty() {
            return Ok(sent);
        }
        let count = due.len();
        for reminder in &due {
            match decide(ctx, reminder, millis(now)) {
                Decision::Drop => {
                    tx.drop_reminder(&reminder.key_id, reminder.before_secs)
                        .await?;
                }
                Decision::Move { due_at } => {
                    tx.move_reminder(&reminder.key_id, reminder.before_secs, due_at)
                        .await?;
                }
                Decision::Send { expires_at } => {
                    queue_reminder(ctx, &mut tx, reminder, expires_at, now).await?;
                    tx.mark_reminder_sent(&reminder.key_id, reminder.before_secs, now)
                        .await?;
                    sent += 1;
                }
            }
        }
        commit_and_wake(ctx, tx).await?;
        if count < usize::try_from(BATCH).unwrap_or(usize::MAX) {
            return Ok(sent);
        }
    }
}

/// Whether a due reminder is still true: the pair still lapses `before_secs` from now.
fn decide(ctx: &Context, reminder: &DueReminder, now: i64) -> Decision {
    if reminder.revoked_at.is_some()
        || reminder.retiring_until.is_some()
        || reminder.partner.status != PartnerStatus::Active
    {
        return Decision::Drop;
    }
    let times = KeyTimes {
        created_at: reminder.created_at,
        last_used_at: reminder.last_used_at,
        retiring_until: None,
        valid_until: reminder.class.valid_until(),
        legacy: reminder.legacy,
    };
    let has_allow_list = !reminder.partner.allowed_ips.is_empty();
    let Some(expires_at) = ctx.settings.expiry.lapses_at(&times, has_allow_list) else {
        return Decision::Drop;
    };
    if expires_at <= now {
        return Decision::Drop;
    }
    let due_at = expires_at - reminder.before_secs * 1000;
    // Used since (or the policy changed): the reminder waits for the new time.
    if due_at > now + 1000 && due_at > reminder.due_at {
        return Decision::Move { due_at };
    }
    Decision::Send { expires_at }
}

async fn queue_reminder(
    ctx: &Context,
    tx: &mut Tx,
    reminder: &DueReminder,
    expires_at: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    let policy = &ctx.settings.expiry;
    let has_allow_list = !reminder.partner.allowed_ips.is_empty();
    let age_limit = policy
        .max_age
        .into_iter()
        .chain(policy.max_age_without_allowlist.filter(|_| !has_allow_list));
    let by_age = age_limit.min().map(|age| reminder.created_at + age);
    let reason = if reminder.class.valid_until() == Some(expires_at) {
        "the expiry it was made with"
    } else if reminder.legacy && policy.legacy_keys_until == Some(expires_at) {
        "the exchange's end date for keys moved in from its previous system (regenerate your keys to get keys of the current format: your partner ID stays the same)"
    } else if by_age == Some(expires_at) {
        if has_allow_list || policy.max_age_without_allowlist.is_none() {
            "the exchange's maximum key age"
        } else {
            "the exchange's maximum key age for partners without an IP allow-list (setting one with SetAllowedIps lifts it)"
        }
    } else {
        "it has not been used for the exchange's maximum idle time (a signed request with it, such as WhoAmI, keeps it alive)"
    };
    let key_label = match &reminder.class {
        KeyClass::Primary => "primary key pair".to_owned(),
        KeyClass::Restricted { name, .. } => {
            format!("restricted {} key \"{name}\"", reminder.mode.as_str())
        }
    };
    let context = ReminderContext {
        partner_code: reminder.partner.code.as_str(),
        key_label,
        hint: &reminder.key_hint,
        key_expires_at: human_time(from_millis(expires_at)),
        reason,
        primary: reminder.class == KeyClass::Primary,
    };
    let mut email = Outgoing::now(&reminder.partner.email, EmailKind::KeyExpiryReminder, now);
    email.about_key_id = Some(&reminder.key_id);
    queue_email(ctx.cipher()?, tx, email, &context).await
}
