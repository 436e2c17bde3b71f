//! The HTTP test suite: the real server on a random port, SQLite in a temporary folder.
// clippy.toml allows these inside #[test] functions; the harness's helpers are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod allow_list;
mod cluster;
mod connections;
mod console;
mod crash;
mod database;
mod docs;
mod errors;
mod faults;
mod flow;
mod forwarding;
mod gateway;
mod gateway_paths;
mod hardening;
mod helpers;
mod import;
mod integration;
mod layer;
mod limits;
mod links;
mod logging;
mod lost_keys;
mod node_parity;
mod nodes;
mod observability;
mod operations;
mod operators;
mod partner_side;
mod postgres;
mod process;
mod restricted_keys;
mod revocation;
mod rotation;
mod scan;
mod secret_scanning;
mod signing_help;
mod smtp;
mod store;
#[cfg(target_os = "linux")]
mod threads;
mod vectors;
mod verify;
mod webhooks;
