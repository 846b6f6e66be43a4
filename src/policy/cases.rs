//! Policy test cases: a request and the answer it must get. The format of
//! `portcullis test` case files, also used by our own test suite, so the two cannot drift.
//! Parsing the YAML is `config`'s job; this file holds the data and the comparison.

use std::net::IpAddr;

use super::principal::{ClaimValue, Principal};

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
}

/// Reads a simulated caller: `sub=alice,roles=editor,roles=admin,scopes=orders:read,claims.tenant=acme`.
/// Repeat `roles` or `scopes` for several; a claim that reads as a number or `true`/`false`
/// is one.
pub fn parse_principal(spec: &str) -> Result<Principal, String> {
    let mut principal = Principal {
        issuer: "simulated".to_owned(),
        ..Principal::default()
    };
    for part in spec
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("\"{part}\" is not key=value"));
        };
        match key.trim() {
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
