//! Work a request answers before doing (lost keys, invite-only onboarding): the answer is the
//! same, at once, whatever the work finds, so neither it nor its timing tells anything.
//!
//! At most [`LOST_KEYS_SLOTS`](crate::state::LOST_KEYS_SLOTS) such jobs run at once on a node;
//! past that (a flood from many addresses) a job is dropped, as the limits would have dropped
//! it. A job that finds the database unavailable is retried with backoff for up to about half
//! a minute, so a partner whose request arrives during a database restart still gets its
//! email; a job that still fails (or is dropped) is logged and counted in
//! `keyward_background_failures_total{work, reason}`.

use crate::error::{Error, Result};
use crate::flows::Context;
use crate::metrics::BackgroundFailure;
use crate::state::AppState;
use std::future::Future;
use std::time::Duration;

/// Delays between attempts: about 30 s in all.
const RETRY_DELAYS_MS: [u64; 7] = [250, 500, 1_000, 2_000, 4_000, 8_000, 15_000];

/// Runs `job` after the answer, within the node's slots, retrying while the database is
/// unavailable.
pub fn after_answer<F, Fut>(state: &AppState, work: &'static str, job: F)
where
    F: Fn(Context) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let Ok(slot) = state.lost_keys_slots.clone().try_acquire_owned() else {
        tracing::warn!(work, "requests handled after their answer are arriving faster than they can be handled: one was dropped");
        state
            .metrics
            .background_failed(work, BackgroundFailure::Dropped);
        return;
    };
    let ctx = state.ctx.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let mut delays = RETRY_DELAYS_MS.iter();
        loop {
            match job(ctx.clone()).await {
                Ok(()) => return,
                Err(Error::Unavailable(e)) => match delays.next() {
                    Some(&delay) => {
                        tracing::info!(work, error = %e, retry_in_ms = delay, "the database is unavailable: will try again");
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    None => {
                        tracing::error!(work, error = %e, "gave up: the database stayed unavailable");
                        ctx.metrics
                            .background_failed(work, BackgroundFailure::Unavailable);
                        return;
                    }
                },
                Err(e) => {
                    tracing::error!(work, error = %e, "a request handled after its answer failed");
                    ctx.metrics
                        .background_failed(work, BackgroundFailure::Failed);
                    return;
                }
            }
        }
    });
}
