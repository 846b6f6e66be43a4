//! The `scopes` condition: what a token or key was granted to do.

use super::decision::Reason;

/// `scopes: { any: [...], all: [...] }`: the caller's scopes must hold one of `any` (when
/// given) and every one of `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopesCondition {
    /// At least one of these.
    pub any: Vec<String>,
    /// Every one of these.
    pub all: Vec<String>,
}

impl ScopesCondition {
    /// `None` when `scopes` satisfy the condition, otherwise the scopes still needed.
    pub fn failure(&self, scopes: &[String]) -> Option<Reason> {
        let any_ok = self.any.is_empty() || self.any.iter().any(|scope| scopes.contains(scope));
        let missing: Vec<String> = self
            .all
            .iter()
            .filter(|scope| !scopes.contains(scope))
            .cloned()
            .collect();
        if any_ok && missing.is_empty() {
            return None;
        }
        let required = if any_ok { missing } else { self.any.clone() };
        Some(Reason::MissingScope {
            required,
            one_of: !any_ok && self.any.len() > 1,
            present: scopes.to_vec(),
        })
    }
}
