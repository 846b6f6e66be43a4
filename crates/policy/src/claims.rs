//! The `claims` condition: a claim must equal a value, hold it (when the claim is an
//! array), or equal a path capture (`tenant: "{tenant}"`, the tenancy check).

use super::decision::Reason;
use super::principal::{ClaimValue, Principal};

/// What one claim must be.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimPattern {
    /// This value (or an array claim holding it).
    Value(ClaimValue),
    /// The text of the path capture with this name.
    Capture(String),
}

/// `claims: { name: value, ... }`: every named claim must match.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimsCondition {
    /// Claim name and what it must be, in name order.
    pub claims: Vec<(String, ClaimPattern)>,
}

impl ClaimsCondition {
    /// `None` when the principal's claims match, otherwise the first claim that does not.
    pub fn failure(&self, principal: &Principal, captures: &[(&str, &str)]) -> Option<Reason> {
        self.claims.iter().find_map(|(name, pattern)| {
            let claim = principal.claim(name);
            let holds = match (claim, pattern) {
                (None, _) => false,
                (Some(claim), ClaimPattern::Value(wanted)) => claim.satisfies(wanted),
                (Some(claim), ClaimPattern::Capture(capture)) => captures
                    .iter()
                    .find(|(captured, _)| captured == capture)
                    .is_some_and(|(_, segment)| claim.satisfies_text(segment)),
            };
            (!holds).then(|| Reason::TenantMismatch {
                claim: name.clone(),
                expected: match pattern {
                    ClaimPattern::Value(value) => value.to_string(),
                    ClaimPattern::Capture(capture) => format!("{{{capture}}}"),
                },
                found: claim.map_or_else(|| "no such claim".to_owned(), ToString::to_string),
            })
        })
    }
}
