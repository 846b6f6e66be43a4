//! The pure decision core of portcullis: [`RequestFacts`] in, [`Decision`] out.
//!
//! No I/O, no async, no HTTP types, no YAML, no clock reads: this crate depends on std
//! and ipnet only, and the gateway's tests fail if that changes. The gateway's `config`
//! builds the values here through their constructors; the proxy, `portcullis explain`,
//! `portcullis test` and the benchmarks all decide through [`PolicySet::evaluate`].
//!
//! Semantics:
//! 1. any matching enforced deny rule denies (`ip_denied` when it names networks,
//!    `country_denied` when it names countries, `explicit_deny` otherwise);
//! 2. otherwise any matching enforced allow rule allows;
//! 3. otherwise the default deny is explained by the closest allow rules, those whose
//!    hosts and paths fit. One that only credentials stand between comes first (a 401),
//!    then those whose methods fit too and failed only on `when`, then those that failed
//!    on their methods (`method_not_allowed`); file order breaks ties. With none,
//!    `no_matching_allow`;
//! 4. audit rules are judged and traced, and never change the outcome;
//! 5. a country condition on a request whose country is not known (no geo database
//!    loaded) fails an allow rule and holds for a deny rule: fail closed.

mod claims;
mod country;
mod decision;
mod facts;
mod headers;
mod index;
mod mtls;
mod network;
mod principal;
mod roles;
mod rule;
mod scopes;

pub use claims::{ClaimPattern, ClaimsCondition};
pub use country::{Countries, Country, CountrySet};
pub use decision::{
    AUTHENTICATION_CODES, Address, Decision, Effect, Mode, Outcome, REFUSED_CREDENTIAL_CODES,
    Reason, RuleId, Step, elapsed, interned, needs,
};
pub use facts::RequestFacts;
pub use headers::{HeaderCondition, NOT_TEXT, ValuePattern};
pub use mtls::{ClientCertificate, MtlsCondition, SpiffePattern, parse_fingerprint};
pub use network::{NetSet, Networks};
pub use principal::{ClaimValue, Principal};
pub use roles::{RoleGraph, RolesCondition};
pub use rule::{Condition, HostPattern, MethodSet, PathGlob, Rule, Segment};
pub use scopes::ScopesCondition;

use index::Index;

/// Compiled rules, ready to decide requests.
#[derive(Debug, Default)]
pub struct PolicySet {
    rules: Vec<Rule>,
    index: Index,
    header_names: Vec<String>,
    claim_names: Vec<String>,
    uses_countries: bool,
    roles: RoleGraph,
}

impl PolicySet {
    /// Compiles `rules`, in file order (which orders explanations, never effects).
    pub fn new(rules: Vec<Rule>) -> PolicySet {
        PolicySet::with_roles(rules, RoleGraph::default())
    }

    /// Compiles `rules` with the roles they inherit.
    pub fn with_roles(rules: Vec<Rule>, roles: RoleGraph) -> PolicySet {
        let mut header_names: Vec<String> = rules
            .iter()
            .flat_map(|rule| {
                let conditions = rule.when.iter().filter_map(|condition| match condition {
                    Condition::Header(header) => Some(header),
                    _ => None,
                });
                rule.headers.iter().chain(conditions)
            })
            .map(|header| header.name.clone())
            .collect();
        header_names.sort();
        header_names.dedup();
        let mut claim_names: Vec<String> = (rules.iter().flat_map(|rule| &rule.when))
            .filter_map(|condition| match condition {
                Condition::Claims(claims) => {
                    Some(claims.claims.iter().map(|(name, _)| name.clone()))
                }
                _ => None,
            })
            .flatten()
            .collect();
        claim_names.sort();
        claim_names.dedup();
        let uses_countries = (rules.iter().flat_map(|rule| &rule.when)).any(|condition| {
            matches!(
                condition,
                Condition::Countries(_) | Condition::NotCountries(_)
            )
        });
        PolicySet {
            index: Index::new(&rules),
            rules,
            header_names,
            claim_names,
            uses_countries,
            roles,
        }
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The header names (lower-case) that rules look at; [`RequestFacts::headers`] needs
    /// only these.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// The claim names that rules compare, sorted: what the decision log records of a
    /// caller's claims, so that the request can be decided again.
    pub fn claim_names(&self) -> &[String] {
        &self.claim_names
    }

    /// Whether a rule names countries: only then does a request need
    /// [`RequestFacts::country`].
    pub fn uses_countries(&self) -> bool {
        self.uses_countries
    }

    /// Decides one request. Never fails: anything that does not allow, denies.
    pub fn evaluate(&self, facts: &RequestFacts<'_>) -> Decision {
        let candidates = self.index.candidates(&self.rules, facts.host, facts.path);
        let roles = match facts.principal {
            Some(principal) if !candidates.is_empty() => self.roles.effective(&principal.roles),
            _ => Vec::new(),
        };
        let mut trace = Vec::with_capacity(candidates.len());
        let mut deny: Option<&Rule> = None;
        let mut allow: Option<&Rule> = None;
        // The closest allow rule explains a default deny: the best ranked, then the first
        // in file order (see [`closeness`]).
        let mut closest: Option<(&Rule, Reason, Closeness)> = None;
        for candidate in &candidates {
            let rule = &self.rules[candidate.rule];
            let outcome = rule.check(facts, &candidate.captures, &roles);
            if rule.mode == Mode::Enforce {
                match (&outcome, rule.effect) {
                    (Outcome::Matched, Effect::Deny) => {
                        deny.get_or_insert(rule);
                    }
                    (Outcome::Matched, Effect::Allow) => {
                        allow.get_or_insert(rule);
                    }
                    (
                        Outcome::NotApplicable(reason) | Outcome::ConditionFailed(reason),
                        Effect::Allow,
                    ) => {
                        let rank = closeness(rule, &outcome, facts);
                        if closest.as_ref().is_none_or(|(_, _, best)| rank < *best) {
                            closest = Some((rule, reason.clone(), rank));
                        }
                    }
                    _ => {}
                }
            }
            trace.push(Step {
                rule: rule.id,
                position: candidate.rule,
                effect: rule.effect,
                mode: rule.mode,
                outcome,
            });
        }
        let closest = closest.map(|(rule, reason, _)| (rule, reason));
        let (effect, rule, reason) = match (deny, allow, closest) {
            (Some(rule), _, _) => (Effect::Deny, Some(rule), rule.deny_reason(facts)),
            (None, Some(rule), _) => (Effect::Allow, Some(rule), Reason::Allowed),
            (None, None, Some((rule, reason))) => (Effect::Deny, Some(rule), reason),
            (None, None, None) => (Effect::Deny, None, Reason::NoMatchingAllow { unmet: None }),
        };
        Decision {
            effect,
            rule: rule.map(|rule| rule.id),
            reason,
            trace,
        }
    }

    /// The declared roles and what they inherit.
    pub fn roles(&self) -> &RoleGraph {
        &self.roles
    }

    /// The rule with this id.
    pub fn rule(&self, id: &RuleId) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.id == *id)
    }
}

/// How close an allow rule that failed came to allowing a request; lower is closer.
/// File order breaks ties (the first of equals is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Closeness {
    /// 0 when only credentials stand between the caller and the rule: the answer is then
    /// a 401 that asks for them, not a 403.
    credentials: u8,
    /// 0 when the rule's methods (and `match`) fit too and only its `when` failed: its
    /// reason (`missing_scope`, say) tells the caller more than another rule's
    /// `method_not_allowed`.
    fit: u8,
}

fn closeness(rule: &Rule, outcome: &Outcome, facts: &RequestFacts<'_>) -> Closeness {
    let methods_fit = (rule.methods.as_ref()).is_none_or(|methods| methods.contains(facts.method));
    match outcome {
        Outcome::ConditionFailed(Reason::CredentialsMissing) => Closeness {
            credentials: 0,
            fit: 0,
        },
        Outcome::ConditionFailed(_) if methods_fit => Closeness {
            credentials: 1,
            fit: 0,
        },
        _ => Closeness {
            credentials: 1,
            fit: 1,
        },
    }
}

#[cfg(test)]
mod tests;
