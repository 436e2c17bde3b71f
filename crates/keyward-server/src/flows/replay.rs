//! What identifies a signed request for the replay guards (SPEC §2).

use super::Context;
use crate::error::Result;
use crate::store::Tx;
use keyward_core::signature::{MessageForm, SignedBody};
use sha2::{Digest, Sha256};

/// What a replay record guards; the same signed message may be used once for each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplayPurpose {
    Regeneration,
    CreateKey,
    SingleUse,
}

/// What identifies a signed request for the replay guards: the key and the canonical form
/// (RFC 8785) of what was signed. Every encoding of one request on the wire (whitespace,
/// escapes, member order, hex case, either message form) gives the same digest, so a
/// re-encoded request is the same request (SPEC §2).
pub(crate) fn replay_digest(purpose: ReplayPurpose, key_id: &str, body: &SignedBody) -> [u8; 32] {
    let label = match purpose {
        ReplayPurpose::Regeneration => "keyward/replay/regeneration/v1",
        ReplayPurpose::CreateKey => "keyward/replay/create-key/v1",
        ReplayPurpose::SingleUse => "keyward/replay/single-use/v1",
    };
    let mut hash = Sha256::new();
    for part in [label, key_id, &body.message(MessageForm::Canonical)] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// Records the signed request in the caller's transaction; `false` when the same key signed
/// the same message for `purpose` within the replay window (on any node): the caller then
/// does not act on it again.
pub(crate) async fn first_use(
    ctx: &Context,
    tx: &mut Tx,
    purpose: ReplayPurpose,
    key_id: &str,
    body: &SignedBody,
) -> Result<bool> {
    let now = ctx.clock.now();
    let digest = replay_digest(purpose, key_id, body);
    let first = tx
        .record_replay(&digest, now, now + ctx.settings.replay_window)
        .await?;
    if !first {
        tracing::info!("identical signed request within the replay window: not acted on again");
    }
    Ok(first)
}
