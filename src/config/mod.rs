//! Configuration: YAML text in, a validated [`Config`] out.
//!
//! ```text
//!   file text ──serde-saphyr──▶ raw::RawConfig ──build──▶ model::Config
//!        │                           │                        │
//!   source.rs maps a             deny_unknown_fields;     every value typed,
//!   position to its YAML         syntax and type errors   every reference resolved;
//!   path for those errors        stop the file here       all errors collected
//! ```
//!
//! This is the only module that knows the YAML parser. Nothing outside it sees a
//! raw string that still has to be parsed.

mod build;
pub mod cases;
mod error;
mod lint;
mod model;
mod policy;
mod raw;
mod source;
mod units;

pub use build::secret_bytes;
pub use error::{ConfigError, ConfigErrors};
pub use model::{
    AdminSettings, ApiKeyEntry, ApiKeySettings, BODILESS_METHODS, ClientCertIdentity, Config,
    DecisionSink, DenialSettings, Detail, ForwardHeaderNames, ForwardedHeader, GeoipSettings,
    HostPattern, IdentitySettings, JwtSettings, KeySource, Limits, ListenerSettings, ListenerTls,
    LogSettings, OnFull, RemoteKeys, RouteId, RouteSettings, Secret, ServedCertificate, Target,
    TokenSource, UpstreamName, UpstreamSettings, UpstreamTls,
};
pub use policy::{PolicySummary, compile as compile_policy, parse_list_file, wildcard_match};
pub use raw::DEFAULT_ADMIN_ADDR;
pub use units::{format_duration, format_size, parse_duration, parse_size};

use std::path::Path;

/// Reads, parses and validates the config file at `path`.
///
/// Every problem found is returned, each naming file, line, column and YAML path.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigErrors::from(ConfigError::unreadable(path, &err)))?;
    from_str(path, &text)
}

/// Parses and validates config `text` as if it had been read from `path`.
pub fn from_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let raw = raw::parse(path, text)?;
    build::build(path, text, raw)
}

/// The kinds of file portcullis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The config file (`config/portcullis.yaml`).
    Config,
    /// A policy file (`policy.files`).
    Policy,
    /// A `portcullis test` case file.
    Cases,
    /// An API-key file (`identity.api_keys.file`).
    ApiKeys,
}

/// The JSON Schema (draft 2020-12) of a kind of file, for editor completion and checks.
pub fn schema(kind: FileKind) -> serde_json::Value {
    let (schema, title) = match kind {
        FileKind::Config => (schemars::schema_for!(raw::RawConfig), "portcullis config"),
        FileKind::Policy => (
            schemars::schema_for!(raw::RawPolicyFile),
            "portcullis policy file",
        ),
        FileKind::Cases => (
            schemars::schema_for!(cases::RawCases),
            "portcullis policy cases",
        ),
        FileKind::ApiKeys => (
            schemars::schema_for!(raw::RawApiKeyFile),
            "portcullis API-key file",
        ),
    };
    let mut value = schema.to_value();
    value["title"] = title.into();
    value
}
