//! Policy test cases: a request and the answer it must get. The format of
//! `portcullis test` case files, also used by our own test suite, so the two cannot drift.
//! Parsing the YAML is `config`'s job; this file holds the data and the comparison.

use std::net::IpAddr;

/// One case: a synthetic request and what it must get.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
