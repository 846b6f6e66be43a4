//! Policy case files (`portcullis test`): YAML text → [`Case`]s, with errors placed by
//! file, line, column and YAML path like every other config error.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use super::build::Builder;
use super::error::{ConfigError, ConfigErrors};
use super::source::{Source, key_segment};
use crate::policy::{Case, CaseRequest, Expected};

/// The address a case's request comes from when it names none (TEST-NET-1).
pub const DEFAULT_CASE_IP: &str = "192.0.2.1";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCases {
    /// Requests and the answers they must get.
    cases: Vec<RawCase>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawCase {
    /// What the case checks, for the report.
    name: String,
    /// The synthetic request.
    request: RawRequest,
    /// The answer it must get; absent fields are not checked.
    expect: RawExpect,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    /// The method; GET when absent.
    #[serde(default = "default_method")]
    method: String,
    /// http://host/path?query, or just a path.
    url: String,
    /// The address the request comes from; 192.0.2.1 when absent.
    ip: Option<String>,
    /// Request headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// A simulated caller: sub=alice,roles=editor,scopes=orders:read,claims.tenant=acme.
    #[serde(rename = "as")]
    principal: Option<String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    /// allow, deny, or refused (a 400, 404 or 405 before any rule).
    decision: String,
    /// The reason code, such as ip_not_allowed.
    reason: Option<String>,
    /// The deciding rule; null for none.
    #[serde(default, deserialize_with = "present")]
    rule: Option<Option<String>>,
}

/// Tells `rule: null` (expect no rule) from a missing `rule` (do not check).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// Reads and checks a case file.
pub fn load(path: &Path) -> Result<Vec<Case>, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigErrors::from(ConfigError::unreadable(path, &err)))?;
    let raw: RawCases = super::raw::parse_as(path, &text)?;
    let mut builder = Builder {
        source: Source::new(path, &text),
        errors: Vec::new(),
    };
    let mut cases = Vec::new();
    for (index, raw_case) in raw.cases.into_iter().enumerate() {
        let base = format!("cases[{index}]");
        let ip = match &raw_case.request.ip {
            None => DEFAULT_CASE_IP.parse::<IpAddr>().ok(),
            Some(text) => builder.typed(
                &format!("{base}.request.ip"),
                text.parse::<IpAddr>()
                    .map_err(|_| format!("\"{text}\" is not an IP address")),
            ),
        };
        if !["allow", "deny", "refused"].contains(&raw_case.expect.decision.as_str()) {
            builder.error(
                &format!("{base}.expect.decision"),
                format!(
                    "\"{}\" is not a decision; write allow, deny or refused (a 400 or 404 before any rule)",
                    raw_case.expect.decision
                ),
            );
        }
        for name in raw_case.request.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                builder.error(
                    &format!("{base}.request.headers.{}", key_segment(name)),
                    format!("\"{name}\" is not a header name"),
                );
            }
        }
        let origin = match builder.source.locate(&base) {
            Some((line, _)) => format!("{}:{line}", path.display()),
            None => path.display().to_string(),
        };
        let principal = match &raw_case.request.principal {
            None => Some(None),
            Some(spec) => builder
                .typed(
                    &format!("{base}.request.as"),
                    crate::policy::parse_principal(spec),
                )
                .map(Some),
        };
        if let (Some(ip), Some(principal)) = (ip, principal) {
            cases.push(Case {
                name: raw_case.name,
                origin,
                request: CaseRequest {
                    method: raw_case.request.method,
                    url: raw_case.request.url,
                    ip,
                    headers: raw_case.request.headers.into_iter().collect(),
                    principal,
                },
                expect: Expected {
                    decision: raw_case.expect.decision,
                    reason: raw_case.expect.reason,
                    rule: raw_case.expect.rule,
                },
            });
        }
    }
    if builder.errors.is_empty() {
        Ok(cases)
    } else {
        Err(ConfigErrors(builder.errors))
    }
}
