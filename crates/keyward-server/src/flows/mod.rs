//! What keyward does, independent of HTTP: onboarding, authentication, regeneration and the
//! redemption of one-time links. Each state change happens in one transaction, together with
//! the email that announces it (transactional outbox).

pub mod admin;
mod allow_list;
mod authenticate;
mod context;
pub mod import;
mod issue;
pub mod key_cache;
pub mod key_policy;
pub mod key_usage;
mod keys;
pub mod leaks;
mod limits;
mod links;
pub mod master_key;
mod onboarding;
mod outgoing;
mod regeneration;
mod reminders;
mod replay;
mod rotation;
pub mod service_tokens;
mod verify;
pub mod webhooks;

pub(crate) use allow_list::change_allowed_ips;
pub use allow_list::{set_allowed_ips, Changer};
pub use authenticate::{authenticate, use_once, Authenticated, Authorization, ClientAddress};
pub use context::Context;
pub use keys::{create_key, list_keys, revoke_key, KeyRequest};
pub use keyward_core::overlap::{describe_duration, Overlap};
pub use links::{redeem, view_link, LinkView, Redeemed, Redemption};
pub use onboarding::{onboard, onboard_invited};
pub use regeneration::{request_regeneration, request_regeneration_without_keys};
pub use reminders::{reschedule_after_policy_change, send_due_reminders};
pub use rotation::retire_old_keys;
pub use verify::{verify, Verdict, VerifyInput};

pub(crate) use issue::{
    describe_scopes, describe_validity, issue_key_link, issue_link, LinkRequest,
};
pub(crate) use limits::{
    enforce_partner_limit, enforce_recipient_limit, within_anyones_limits, Requester,
};
pub(crate) use outgoing::{commit_and_wake, human_time, queue_email, Outgoing};
pub(crate) use replay::{first_use, replay_digest, ReplayPurpose};
