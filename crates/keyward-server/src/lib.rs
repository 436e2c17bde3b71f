//! keyward's service: the library behind the `keyward` binary.

pub mod clock;
pub mod config;
pub mod console;
pub mod crypto;
pub mod error;
pub mod flows;
pub mod github;
pub mod http;
pub mod listener;
pub mod mail;
pub mod metrics;
pub mod ratelimit;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod webhooks;

pub use startup::{Application, Overrides};
