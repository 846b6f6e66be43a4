//! portcullis: a reverse-proxy authorization gateway.
//!
//! See ARCHITECTURE.md for the request flow and which module owns which step.

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod cli;
pub mod config;
pub mod decision_log;
pub mod geoip;
pub mod identity;
#[cfg(any(test, feature = "fuzzing"))]
pub mod invariants;
pub mod json;
pub mod key_set;
pub mod path;
pub mod proxy;
pub mod reload;
pub mod replay;
pub mod telemetry;
pub mod tls;

/// The pure decision core, a crate of its own (`crates/policy`).
pub use portcullis_policy as policy;

#[cfg(test)]
mod testing;
