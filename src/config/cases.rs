//! Policy test cases (`portcullis test`, `explain --as`): a request and the answer it must
//! get, how an answer is compared with it, and how case files are read: YAML text →
//! [`Case`]s, with errors placed by file, line, column and YAML path like every other
//! config error. Our own test suite reads the same files, so the two cannot drift.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use super::build::Builder;
use super::error::{ConfigError, ConfigErrors};
use super::source::{Source, key_segment};
use crate::policy::{ClaimValue, ClientCertificate, Country, Principal, parse_fingerprint};

/// One case: a synthetic request and what it must get.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// A name to report it by.
    pub name: String,
    /// Where it is written, `file:line`.
    pub origin: String,
    /// The request.
    pub request: CaseRequest,
    /// The expected answer.
    pub expect: Expected,
}

/// A synthetic request, as a client would send it.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRequest {
    /// The method.
    pub method: String,
    /// `http://host/path?query`, or just `/path` (no host).
    pub url: String,
    /// The socket peer the request comes from; a trusted proxy's forwarding header among
    /// `headers` is believed as it would be live.
    pub ip: IpAddr,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// A simulated caller (`as:`), standing in for whatever credentials say.
    pub principal: Option<Principal>,
    /// The client certificate the connection showed (`client_cert:`), taken as verified.
    pub client_cert: Option<ClientCertificate>,
    /// The client's country (`country:`), instead of what the geo database says.
    pub country: Option<Country>,
}

/// Reads a client certificate for `explain --cert-as` and cases' `client_cert`: its
/// facts, `uri=spiffe://example.org/ns/a/sa/b,dns=api.example.org,subject=billing,
/// fingerprint=AB:CD:…` (repeat `uri` or `dns` for several), or `file=PATH`, a PEM
/// certificate (relative to `files`), whose facts are read; without `files`, reading
/// files is refused (a request to the admin listener must not read the disk).
pub fn parse_client_cert(spec: &str, files: Option<&Path>) -> Result<ClientCertificate, String> {
    let mut certificate = ClientCertificate::default();
    for pair in key_values(spec) {
        let (key, value) = pair?;
        match key {
            "file" => {
                let Some(base_dir) = files else {
                    return Err("file= is not read here: give the certificate's facts".to_owned());
                };
                let path = base_dir.join(value);
                let chain = crate::tls::read_certificates(&path)?;
                let leaf = chain
                    .first()
                    .ok_or_else(|| format!("\"{value}\" holds no certificate"))?;
                certificate = crate::tls::certificate_facts(leaf)
                    .map_err(|err| format!("\"{}\": {err}", path.display()))?
                    .holder;
            }
            "uri" | "spiffe" => certificate.uris.push(value.to_owned()),
            "dns" => certificate.dns_names.push(value.to_ascii_lowercase()),
            "subject" | "cn" => certificate.subject = Some(value.to_owned()),
            "fingerprint" | "sha256" => certificate.fingerprint = parse_fingerprint(value)?,
            other => {
                return Err(format!(
                    "unknown key \"{other}\": use file, uri, dns, subject or fingerprint"
                ));
            }
        }
    }
    Ok(certificate)
}

/// The `key=value` pairs of a comma-separated spec (`--as`, `--cert-as`), trimmed.
fn key_values(spec: &str) -> impl Iterator<Item = Result<(&str, &str), String>> {
    spec.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((key, value)) => Ok((key.trim(), value.trim())),
            None => Err(format!("\"{part}\" is not key=value")),
        })
}

/// Reads a simulated caller: `sub=alice,roles=editor,roles=admin,scopes=orders:read,claims.tenant=acme`.
/// Repeat `roles` or `scopes` for several; a claim that reads as a number or `true`/`false`
/// is one.
pub fn parse_principal(spec: &str) -> Result<Principal, String> {
    let mut principal = Principal {
        issuer: "simulated".to_owned(),
        ..Principal::default()
    };
    for pair in key_values(spec) {
        let (key, value) = pair?;
        match key {
            "sub" | "subject" => principal.subject = value.to_owned(),
            "roles" | "role" => principal.roles.push(value.to_owned()),
            "scopes" | "scope" => principal.scopes.push(value.to_owned()),
            other => match other.strip_prefix("claims.") {
                Some(claim) if !claim.is_empty() => {
                    let value = match value {
                        "true" => ClaimValue::Bool(true),
                        "false" => ClaimValue::Bool(false),
                        _ => value
                            .parse::<f64>()
                            .map(ClaimValue::Number)
                            .unwrap_or_else(|_| ClaimValue::String(value.to_owned())),
                    };
                    principal.claims.push((claim.to_owned(), value));
                }
                _ => {
                    return Err(format!(
                        "unknown key \"{other}\": use sub, roles, scopes or claims.NAME"
                    ));
                }
            },
        }
    }
    if principal.subject.is_empty() {
        principal.subject = "simulated".to_owned();
    }
    Ok(principal)
}

/// What a case expects; an absent field is not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// `allow`, `deny`, or `refused` (the gateway answers 400 or 404 before deciding).
    pub decision: String,
    /// The reason code.
    pub reason: Option<String>,
    /// The deciding rule; `Some(None)` expects no rule (`rule: null`).
    pub rule: Option<Option<String>>,
}

/// What a request actually got, in the terms of [`Expected`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actual {
    /// `allow`, `deny` or `refused`.
    pub decision: String,
    /// The reason code.
    pub reason: String,
    /// The deciding rule.
    pub rule: Option<String>,
}

impl Expected {
    /// Each way `actual` differs, as `field: expected X, got Y`; empty when it passes.
    pub fn differences(&self, actual: &Actual) -> Vec<String> {
        let mut differences = Vec::new();
        if self.decision != actual.decision {
            differences.push(format!(
                "decision: expected {}, got {}",
                self.decision, actual.decision
            ));
        }
        if let Some(reason) = &self.reason
            && *reason != actual.reason
        {
            differences.push(format!("reason: expected {reason}, got {}", actual.reason));
        }
        if let Some(rule) = &self.rule
            && *rule != actual.rule
        {
            let show = |rule: &Option<String>| rule.clone().unwrap_or_else(|| "none".to_owned());
            differences.push(format!(
                "rule: expected {}, got {}",
                show(rule),
                show(&actual.rule)
            ));
        }
        differences
    }
}

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
    /// The client certificate the connection showed, taken as verified: file=cert.pem, or
    /// its facts: uri=spiffe://example.org/ns/a/sa/b,dns=a.example.org,subject=a,fingerprint=….
    client_cert: Option<String>,
    /// The client's country (ISO 3166-1 alpha-2, XX for unknown), instead of what the geo
    /// database says of ip.
    country: Option<String>,
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
                .typed(&format!("{base}.request.as"), parse_principal(spec))
                .map(Some),
        };
        let client_cert = match &raw_case.request.client_cert {
            None => Some(None),
            Some(spec) => builder
                .typed(
                    &format!("{base}.request.client_cert"),
                    parse_client_cert(spec, Some(path.parent().unwrap_or(Path::new("")))),
                )
                .map(Some),
        };
        let country = match &raw_case.request.country {
            None => Some(None),
            Some(code) => builder
                .typed(&format!("{base}.request.country"), Country::parse(code))
                .map(Some),
        };
        if let (Some(ip), Some(principal), Some(client_cert), Some(country)) =
            (ip, principal, client_cert, country)
        {
            cases.push(Case {
                name: raw_case.name,
                origin,
                request: CaseRequest {
                    method: raw_case.request.method,
                    url: raw_case.request.url,
                    ip,
                    headers: raw_case.request.headers.into_iter().collect(),
                    principal,
                    client_cert,
                    country,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_callers() {
        let principal =
            parse_principal("sub=alice, roles=editor,roles=admin,scopes=orders:read,claims.tenant=acme,claims.level=3")
                .unwrap();
        assert_eq!(principal.subject, "alice");
        assert_eq!(principal.roles, ["editor", "admin"]);
        assert_eq!(principal.scopes, ["orders:read"]);
        assert_eq!(
            principal.claim("tenant"),
            Some(&ClaimValue::String("acme".into()))
        );
        assert_eq!(principal.claim("level"), Some(&ClaimValue::Number(3.0)));
        assert!(
            parse_principal("group=x")
                .unwrap_err()
                .contains("unknown key")
        );
        assert!(parse_principal("alice").is_err());
    }

    #[test]
    fn differences_name_each_field() {
        let expected = Expected {
            decision: "deny".into(),
            reason: Some("ip_not_allowed".into()),
            rule: Some(Some("admin".into())),
        };
        let actual = Actual {
            decision: "deny".into(),
            reason: "no_matching_allow".into(),
            rule: None,
        };
        assert_eq!(
            expected.differences(&actual),
            [
                "reason: expected ip_not_allowed, got no_matching_allow",
                "rule: expected admin, got none"
            ]
        );
        let loose = Expected {
            decision: "deny".into(),
            reason: None,
            rule: None,
        };
        assert!(loose.differences(&actual).is_empty());
    }
}
