//! The serde shape of the config file: plain structs, unknown keys rejected, no logic.
//!
//! Values that need checking (addresses, durations, sizes, references) stay strings here;
//! `build` types them and reports each problem with its YAML path.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::{ConfigError, ConfigErrors};
use super::source::Source;

/// The whole config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listen")]
    pub listen: Vec<RawListen>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub network: RawNetwork,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub denials: RawDenials,
}

/// One `listen` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub addr: String,
}

fn default_listen() -> Vec<RawListen> {
    vec![RawListen {
        addr: "127.0.0.1:8080".to_owned(),
    }]
}

/// The `admin` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default = "default_admin_addr")]
    pub addr: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            addr: default_admin_addr(),
        }
    }
}

fn default_admin_addr() -> String {
    "127.0.0.1:9090".to_owned()
}

/// The `network` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub keep_override_headers: bool,
}

/// One entry of `upstreams`, keyed by its name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub targets: Vec<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    #[serde(default = "default_upstream_timeout")]
    pub timeout: String,
    #[serde(default = "default_failure_cooldown")]
    pub failure_cooldown: String,
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: String,
}

fn default_connect_timeout() -> String {
    "2s".to_owned()
}

fn default_upstream_timeout() -> String {
    "30s".to_owned()
}

fn default_failure_cooldown() -> String {
    "10s".to_owned()
}

fn default_keepalive_timeout() -> String {
    "4s".to_owned()
}

/// One `routes` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub id: String,
    pub host: Option<String>,
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub case_insensitive: bool,
}

fn default_path_prefix() -> String {
    "/".to_owned()
}

/// The `limits` section: timeouts and sizes that protect the gateway from its clients.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
    #[serde(default = "default_max_header_size")]
    pub max_header_size: String,
    #[serde(default)]
    pub max_body_size: Option<String>,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            header_read_timeout: default_header_read_timeout(),
            max_header_size: default_max_header_size(),
            max_body_size: None,
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_header_read_timeout() -> String {
    "15s".to_owned()
}

fn default_max_header_size() -> String {
    "64KiB".to_owned()
}

fn default_idle_timeout() -> String {
    "60s".to_owned()
}

fn default_max_connections() -> String {
    "10000".to_owned()
}

/// The `shutdown` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    #[serde(default = "default_grace_period")]
    pub grace_period: String,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown {
            grace_period: default_grace_period(),
        }
    }
}

fn default_grace_period() -> String {
    "30s".to_owned()
}

/// The `policy` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub files: Vec<String>,
}

/// The `denials` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDenials {
    #[serde(default)]
    pub detail: RawDetail,
    pub help_url: Option<String>,
}

/// `denials.detail`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawDetail {
    Minimal,
    #[default]
    Standard,
    Verbose,
}

/// One policy file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyFile {
    #[serde(default)]
    pub lists: BTreeMap<String, RawList>,
    #[serde(default)]
    pub roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// A named list of networks: written inline, or `{ file: path }` with one CIDR per line.
#[derive(Debug)]
pub enum RawList {
    Inline(Vec<String>),
    File(String),
}

impl<'de> Deserialize<'de> for RawList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of networks, or { file: path }")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawList, A::Error> {
                let mut networks = Vec::new();
                while let Some(network) = seq.next_element::<String>()? {
                    networks.push(network);
                }
                Ok(RawList::Inline(networks))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawList, A::Error> {
                let mut file = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "file" {
                        return Err(serde::de::Error::unknown_field(&key, &["file"]));
                    }
                    file = Some(map.next_value::<String>()?);
                }
                file.map(RawList::File)
                    .ok_or_else(|| serde::de::Error::missing_field("file"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One entry of `roles`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    #[serde(default)]
    pub inherits: Vec<String>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: String,
    pub description: Option<String>,
    pub effect: RawEffect,
    #[serde(default)]
    pub mode: RawMode,
    #[serde(default, rename = "match")]
    pub matches: RawMatch,
    #[serde(default)]
    pub when: RawWhen,
    pub help: Option<String>,
}

/// `effect`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawEffect {
    Allow,
    Deny,
}

/// `mode`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    #[default]
    Enforce,
    Audit,
}

/// A rule's `match`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub hosts: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, OneOrMany>,
}

/// A rule's `when`. The identity, country and client-certificate keys are accepted here so
/// that `build` can say why they cannot be used yet, instead of "unknown field".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWhen {
    pub authenticated: Option<serde::de::IgnoredAny>,
    pub roles: Option<serde::de::IgnoredAny>,
    pub scopes: Option<serde::de::IgnoredAny>,
    pub claims: Option<serde::de::IgnoredAny>,
    pub ip: Option<Vec<String>>,
    pub not_ip: Option<Vec<String>>,
    pub countries: Option<serde::de::IgnoredAny>,
    pub not_countries: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub headers: BTreeMap<String, OneOrMany>,
    pub mtls: Option<serde::de::IgnoredAny>,
}

/// A value or a list of values; scalars of any YAML type are read as their text.
#[derive(Debug)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_owned()]))
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_string()]))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_string()]))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_string()]))
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<String>()? {
                    values.push(value);
                }
                Ok(OneOrMany(values))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses a policy file's text; like [`parse`], a syntax or shape error stops the file.
pub fn parse_policy(path: &Path, text: &str) -> Result<RawPolicyFile, ConfigErrors> {
    // A file of nothing but comments is an empty policy, not a syntax error.
    let blank = text
        .lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#') || line == "---");
    if blank {
        return Ok(RawPolicyFile::default());
    }
    parse_as(path, text)
}

/// Parses the file text. A syntax or shape error stops this file and is returned alone.
pub fn parse(path: &Path, text: &str) -> Result<RawConfig, ConfigErrors> {
    parse_as(path, text)
}

pub(super) fn parse_as<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigErrors> {
    serde_saphyr::from_str::<T>(text).map_err(|err| {
        let location = err.location();
        let message = serde_message(&err);
        let source = Source::new(path, text);
        let position = location.map(|l| (l.line() as usize, l.column() as usize));
        let yaml_path = position
            .and_then(|(line, column)| source.path_at(line, column))
            .unwrap_or_default();
        ConfigErrors::from(ConfigError::at(path, position, yaml_path, message))
    })
}

/// The parser's message without its own location suffix, which we print in front instead.
fn serde_message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter as _;
    let inner = err.without_snippet();
    if matches!(inner, serde_saphyr::Error::Eof { .. }) {
        return "the file is empty or ends too early".to_owned();
    }
    let message = serde_saphyr::UserMessageFormatter.format_message(inner);
    // The formatter leaves control characters to its renderer; we render, so we neutralise them.
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
