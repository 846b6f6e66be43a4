//! What a decision says: the effect, the rule that decided, the reason as data, and the
//! trace of every rule considered. Also how each reason reads to an operator
//! ([`Display`](std::fmt::Display)); what the client reads is the responder's.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use crate::country::Country;

/// A rule's id, unique across all policy files.
///
/// Ids are interned: one copy of each for the life of the process, shared by every load
/// that names it. A decision then names its rules by copying a reference, not by touching
/// a reference count: a write to memory that every core serving requests would share. The
/// copies kept are the distinct ids ever loaded, a few bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub &'static str);

impl RuleId {
    /// The id `id`, interned.
    pub fn new(id: &str) -> RuleId {
        RuleId(interned(id))
    }
}

/// `text`, kept once for the life of the process: the same `&'static str` for every
/// caller that names it. For names taken from the config (rule ids, header names) that a
/// request would otherwise reach through a reference count every core shares; the copies
/// kept are the distinct names ever loaded.
pub fn interned(text: &str) -> &'static str {
    static KEPT: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = kept.get(text) {
        return known;
    }
    let new: &'static str = Box::leak(Box::from(text));
    kept.insert(new);
    new
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An address as `Display` writes it, an IPv4 one digit by digit: a decision-log line
/// writes the client address and the sentence of every rule in its trace, and the
/// standard formatting of each octet costs more than the rest of the sentence.
pub struct Address(pub IpAddr);

impl Address {
    /// Writes the address as `Display` does, into any writer: into a `String`, without
    /// the formatting machinery.
    pub fn write_to<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write_v4(v4, out),
            IpAddr::V6(v6) => write!(out, "{v6}"),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// `v4` in dotted decimal, a character at a time: into a `String`, that is a store each.
fn write_v4<W: fmt::Write>(v4: std::net::Ipv4Addr, out: &mut W) -> fmt::Result {
    let digit = |value: u8| char::from(b'0' + value);
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            out.write_char('.')?;
        }
        if octet >= 100 {
            out.write_char(digit(octet / 100))?;
        }
        if octet >= 10 {
            out.write_char(digit(octet / 10 % 10))?;
        }
        out.write_char(digit(octet % 10))?;
    }
    Ok(())
}

/// Whether a rule lets a request through or stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Forward the request.
    Allow,
    /// Answer it with a 403.
    Deny,
}

impl Effect {
    /// `allow` or `deny`, as written in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// Whether a rule's verdict counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The rule decides requests.
    Enforce,
    /// Dry run: the rule is evaluated, logged and counted, but never changes a decision.
    Audit,
}

impl Mode {
    /// `enforce` or `audit`, as written in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// Why a request was allowed or denied: one variant per reason code, each carrying what
/// it needs to explain itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An enforced allow rule matched and no enforced deny rule did.
    Allowed,
    /// An enforced deny rule matched the request.
    ExplicitDeny,
    /// No allow rule fits the request, or the closest one failed on a condition that has no
    /// code of its own (a header condition); `unmet` says which, for operators.
    NoMatchingAllow {
        /// The failed condition of the closest allow rule, when there was one.
        unmet: Option<String>,
    },
    /// An allow rule fits the host and path, but not the method.
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The methods that rule allows.
        allowed: Vec<String>,
    },
    /// The client's address is not in the networks an allow rule requires, or is in
    /// networks it excludes.
    IpNotAllowed {
        /// The client's address.
        ip: IpAddr,
        /// The networks the rule names (`@list` or CIDRs), for operators only.
        networks: &'static str,
    },
    /// A deny rule matched because of the client's address.
    IpDenied {
        /// The client's address.
        ip: IpAddr,
        /// The networks the rule names, for operators only.
        networks: &'static str,
    },
    /// The client's country is not one an allow rule requires, or is one a deny rule names;
    /// or it could not be found out, and a rule names countries (fail closed).
    CountryDenied {
        /// The client's country (`XX`: the database does not know the address); `None`
        /// when it could not be found out (no geo database serves, or its record for the
        /// address is unreadable).
        country: Option<Country>,
        /// The countries the rule names (`@eu, CH`, or `not KP`), for operators.
        countries: &'static str,
        /// Whether a deny rule matched because of it, rather than a rule's condition
        /// failing on it.
        by_deny: bool,
    },
    /// The closest rule needs an identified caller and the request carried no credentials.
    CredentialsMissing,
    /// The token has expired.
    TokenExpired {
        /// How long ago, in seconds.
        seconds_ago: u64,
    },
    /// The token is for another audience.
    TokenWrongAudience {
        /// The audiences the issuer's tokens must name here.
        expected: Vec<String>,
    },
    /// The token comes from an issuer the gateway does not trust.
    TokenWrongIssuer,
    /// The request carried credentials that are not valid (an unknown API key); says
    /// what was wrong without echoing the credential.
    TokenInvalid {
        /// What was wrong, for operators and the client.
        problem: String,
    },
    /// The caller lacks a role the closest rule needs.
    MissingRole {
        /// The roles needed: all of them, or one of them when `one_of`.
        required: Vec<String>,
        /// Whether one of `required` would do.
        one_of: bool,
        /// The caller's roles, inherited ones included.
        present: Vec<String>,
    },
    /// The caller's token or key lacks a scope the closest rule needs.
    MissingScope {
        /// The scopes needed: all of them, or one of them when `one_of`.
        required: Vec<String>,
        /// Whether one of `required` would do.
        one_of: bool,
        /// The caller's scopes.
        present: Vec<String>,
    },
    /// The closest rule needs a client certificate it accepts, and the connection showed
    /// none, or another one.
    MtlsRequired {
        /// How the certificate shown names its holder, if one was shown.
        presented: Option<String>,
        /// The certificates the rule accepts, for operators.
        accepted: String,
    },
    /// A claim of the caller (such as its tenant) does not match the resource.
    TenantMismatch {
        /// The claim's name.
        claim: String,
        /// What the rule wanted, for operators.
        expected: String,
        /// What the claim held, for operators.
        found: String,
    },
}

impl Reason {
    /// The stable snake_case code used in responses, metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::ExplicitDeny => "explicit_deny",
            Reason::NoMatchingAllow { .. } => "no_matching_allow",
            Reason::MethodNotAllowed { .. } => "method_not_allowed",
            Reason::IpNotAllowed { .. } => "ip_not_allowed",
            Reason::IpDenied { .. } => "ip_denied",
            Reason::CountryDenied { .. } => "country_denied",
            Reason::CredentialsMissing => "credentials_missing",
            Reason::TokenInvalid { .. } => "token_invalid",
            Reason::TokenExpired { .. } => "token_expired",
            Reason::TokenWrongAudience { .. } => "token_wrong_audience",
            Reason::TokenWrongIssuer => "token_wrong_issuer",
            Reason::MissingRole { .. } => "missing_role",
            Reason::MissingScope { .. } => "missing_scope",
            Reason::TenantMismatch { .. } => "tenant_mismatch",
            Reason::MtlsRequired { .. } => "mtls_required",
        }
    }

    /// Whether the caller failed to identify itself (no credentials, or refused ones),
    /// rather than being identified, or anonymous, and still not allowed. HTTP answers the
    /// first kind with 401 and the second with 403 (RFC 9110).
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            Reason::CredentialsMissing
                | Reason::TokenInvalid { .. }
                | Reason::TokenExpired { .. }
                | Reason::TokenWrongAudience { .. }
                | Reason::TokenWrongIssuer
        )
    }
}

/// The codes of the reasons a credential was refused for, before any rule was read.
pub const REFUSED_CREDENTIAL_CODES: [&str; 4] = [
    "token_invalid",
    "token_expired",
    "token_wrong_audience",
    "token_wrong_issuer",
];

/// The codes of the reasons [`Reason::is_authentication`] holds for: answered 401.
pub const AUTHENTICATION_CODES: [&str; 5] = [
    "credentials_missing",
    "token_invalid",
    "token_expired",
    "token_wrong_audience",
    "token_wrong_issuer",
];

/// "role editor", "roles editor and staff", "one of the roles editor or admin".
pub fn needs(what: &str, required: &[String], one_of: bool) -> String {
    match (required, one_of) {
        ([only], _) => format!("{what} {only}"),
        (_, true) => format!("one of the {what}s {}", required.join(" or ")),
        (_, false) => format!("{what}s {}", required.join(" and ")),
    }
}

impl Reason {
    /// The operator's sentence: everything, networks included. Into any writer: a
    /// decision-log line writes it into its `String` without the formatting machinery.
    pub fn write_sentence<W: fmt::Write>(&self, f: &mut W) -> fmt::Result {
        match self {
            Reason::Allowed => f.write_str("allowed"),
            Reason::ExplicitDeny => f.write_str("a deny rule matched"),
            Reason::NoMatchingAllow { unmet: None } => f.write_str("no allow rule matched"),
            Reason::NoMatchingAllow { unmet: Some(unmet) } => write!(f, "{unmet}"),
            Reason::MethodNotAllowed { method, allowed } => {
                write!(f, "method {method} is not one of {}", allowed.join(", "))
            }
            Reason::IpNotAllowed { ip, networks } => {
                f.write_str("client ")?;
                Address(*ip).write_to(f)?;
                f.write_str(" does not satisfy ")?;
                f.write_str(networks)
            }
            Reason::IpDenied { ip, networks } => {
                f.write_str("client ")?;
                Address(*ip).write_to(f)?;
                f.write_str(" matches ")?;
                f.write_str(networks)
            }
            Reason::CountryDenied {
                country: Some(country),
                countries,
                by_deny,
            } => {
                f.write_str("country ")?;
                f.write_str(country.as_str())?;
                f.write_str(if *by_deny {
                    " matches "
                } else {
                    " does not satisfy "
                })?;
                f.write_str(countries)
            }
            Reason::CountryDenied {
                country: None,
                countries,
                by_deny,
            } => {
                f.write_str("the country could not be determined, so ")?;
                f.write_str(countries)?;
                f.write_str(if *by_deny {
                    " counts as matched (fail closed)"
                } else {
                    " counts as not satisfied (fail closed)"
                })
            }
            Reason::CredentialsMissing => f.write_str("the request carried no credentials"),
            Reason::TokenInvalid { problem } => write!(f, "invalid credentials: {problem}"),
            Reason::TokenExpired { seconds_ago } => {
                write!(f, "token expired {} ago", elapsed(*seconds_ago))
            }
            Reason::TokenWrongAudience { expected } => {
                write!(f, "token audience is not {}", expected.join(" or "))
            }
            Reason::TokenWrongIssuer => f.write_str("token issuer is not trusted"),
            Reason::MissingRole {
                required,
                one_of,
                present,
            } => write!(
                f,
                "requires {}; caller has {}",
                needs("role", required, *one_of),
                listed(present)
            ),
            Reason::MissingScope {
                required,
                one_of,
                present,
            } => write!(
                f,
                "requires {}; caller has {}",
                needs("scope", required, *one_of),
                listed(present)
            ),
            Reason::TenantMismatch {
                claim,
                expected,
                found,
            } => write!(f, "claim {claim} must be {expected}; it is {found}"),
            Reason::MtlsRequired {
                presented: None,
                accepted,
            } => write!(
                f,
                "requires a client certificate ({accepted}); none was shown"
            ),
            Reason::MtlsRequired {
                presented: Some(presented),
                accepted,
            } => write!(f, "client certificate {presented} is not one of {accepted}"),
        }
    }
}

/// The operator's sentence: everything, networks included.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_sentence(f)
    }
}

/// `3m12s`, `2h5m`, `40s`.
/// A duration in seconds as "5s", "3m20s" or "2h15m", for sentences about token expiry.
pub fn elapsed(seconds: u64) -> String {
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m"),
    }
}

fn listed(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// What became of one rule for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The rule's `match` and `when` both hold.
    Matched,
    /// The rule fits the host and path, but its methods or `match.headers` do not fit.
    NotApplicable(Reason),
    /// The rule fits the request, but a `when` condition failed; the first one is given.
    ConditionFailed(Reason),
}

impl Outcome {
    /// What became of the rule, in words, into any writer (see [`Reason::write_sentence`]).
    pub fn write_sentence<W: fmt::Write>(&self, f: &mut W) -> fmt::Result {
        let (words, reason) = self.parts();
        f.write_str(words)?;
        match reason {
            Some(reason) => reason.write_sentence(f),
            None => Ok(()),
        }
    }

    /// The sentence in two parts: its opening words, then the reason's sentence when it
    /// has one. A decision-log line writes the reason that decided once and repeats it.
    pub fn parts(&self) -> (&'static str, Option<&Reason>) {
        match self {
            Outcome::Matched => ("matched", None),
            Outcome::NotApplicable(reason) => ("not applicable: ", Some(reason)),
            Outcome::ConditionFailed(reason) => ("condition failed: ", Some(reason)),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_sentence(f)
    }
}

/// One rule considered for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The rule.
    pub rule: RuleId,
    /// The rule's position in file order ([`crate::PolicySet::rules`]).
    pub position: usize,
    /// Its effect.
    pub effect: Effect,
    /// Its mode; audit steps never change the decision.
    pub mode: Mode,
    /// What became of it.
    pub outcome: Outcome,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Forward or deny.
    pub effect: Effect,
    /// The rule that decided: the matching rule, or for a default deny the closest allow
    /// rule that failed; `None` when no rule came close.
    pub rule: Option<RuleId>,
    /// Why.
    pub reason: Reason,
    /// Every rule whose hosts and paths fit the request, in file order, audit rules included.
    pub trace: Vec<Step>,
}

impl Decision {
    /// The answer for a request whose credentials were refused before any rule: 401.
    pub fn unauthenticated(reason: Reason) -> Decision {
        Decision {
            effect: Effect::Deny,
            rule: None,
            reason,
            trace: Vec::new(),
        }
    }

    /// Whether the request may be forwarded.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// The closest allow rules of a default deny: enforced allow rules that fit the host and
    /// path but failed, in file order.
    pub fn closest(&self) -> impl Iterator<Item = &Step> {
        let default_deny = self.effect == Effect::Deny
            && !matches!(
                self.reason,
                Reason::ExplicitDeny
                    | Reason::IpDenied { .. }
                    | Reason::CountryDenied { by_deny: true, .. }
            );
        self.trace.iter().filter(move |step| {
            default_deny
                && step.effect == Effect::Allow
                && step.mode == Mode::Enforce
                && step.outcome != Outcome::Matched
        })
    }

    /// Audit rules that matched, with what they would have done.
    pub fn audit_matches(&self) -> impl Iterator<Item = &Step> {
        self.trace
            .iter()
            .filter(|step| step.mode == Mode::Audit && step.outcome == Outcome::Matched)
    }
}
