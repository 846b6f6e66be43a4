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

/// Parses the file text. A syntax or shape error stops this file and is returned alone.
pub fn parse(path: &Path, text: &str) -> Result<RawConfig, ConfigErrors> {
    serde_saphyr::from_str::<RawConfig>(text).map_err(|err| {
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
