//! Rules: which requests they are about (`match`: hosts, path globs, methods, headers) and
//! what the caller must satisfy (`when`). Path globs are compiled once, here.

use std::fmt;

use super::claims::ClaimsCondition;
use super::country::Countries;
use super::decision::{Effect, Mode, Outcome, Reason, RuleId};
use super::facts::RequestFacts;
use super::headers::HeaderCondition;
use super::mtls::MtlsCondition;
use super::network::Networks;
use super::roles::RolesCondition;
use super::scopes::ScopesCondition;

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique across all policy files.
    pub id: RuleId,
    /// What the rule is for, in the author's words.
    pub description: Option<String>,
    /// Allow or deny.
    pub effect: Effect,
    /// Enforce or audit.
    pub mode: Mode,
    /// Hosts the rule is about; empty means every host.
    pub hosts: Vec<HostPattern>,
    /// Path globs the rule is about; empty means every path.
    pub paths: Vec<PathGlob>,
    /// Methods the rule is about; `None` means every method.
    pub methods: Option<MethodSet>,
    /// Headers a request must carry for the rule to be about it.
    pub headers: Vec<HeaderCondition>,
    /// Conditions the request must satisfy, in evaluation order.
    pub when: Vec<Condition>,
    /// Where a denied caller can ask for access.
    pub help: Option<String>,
}

impl Rule {
    /// An enforced rule with this id and effect about every request from every caller;
    /// set its fields to narrow it.
    pub fn new(id: &str, effect: Effect) -> Rule {
        Rule {
            id: RuleId::new(id),
            description: None,
            effect,
            mode: Mode::Enforce,
            hosts: Vec::new(),
            paths: Vec::new(),
            methods: None,
            headers: Vec::new(),
            when: Vec::new(),
            help: None,
        }
    }

    /// Judges a request whose host and path this rule's `hosts` and `paths` fit (the index
    /// guarantees that). `captures` are the path's captured segments.
    pub fn check(
        &self,
        facts: &RequestFacts<'_>,
        captures: &[(&str, &str)],
        roles: &[&str],
    ) -> Outcome {
        if let Some(header) = self.headers.iter().find(|h| !h.holds(facts, captures)) {
            return Outcome::NotApplicable(Reason::NoMatchingAllow {
                unmet: Some(header.describe()),
            });
        }
        // Conditions credentials cannot change come first, then the identity ones, so
        // that a caller is asked to authenticate (401) only when that would help. (Two
        // passes over the conditions, rather than two lists of them: no allocation.)
        let failure =
            |condition: &Condition| condition.failure(facts, captures, roles, self.effect);
        if let Some(reason) = (self.when.iter())
            .filter(|condition| !condition.is_about_identity())
            .find_map(failure)
        {
            return Outcome::ConditionFailed(reason);
        }
        let identity_failure = (self.when.iter())
            .filter(|condition| condition.is_about_identity())
            .find_map(failure);
        match identity_failure {
            Some(reason) if reason != Reason::CredentialsMissing => {
                return Outcome::ConditionFailed(reason);
            }
            _ => {}
        }
        if let Some(methods) = &self.methods
            && !methods.contains(facts.method)
        {
            return Outcome::NotApplicable(Reason::MethodNotAllowed {
                method: facts.method.to_owned(),
                allowed: methods.names(),
            });
        }
        match identity_failure {
            Some(reason) => Outcome::ConditionFailed(reason),
            None => Outcome::Matched,
        }
    }

    /// Why this rule, having matched as an enforced deny rule, denies: `country_denied`
    /// when it names countries and the country could not be found out (fail closed, which
    /// the answer must say); otherwise `ip_denied` when it names networks,
    /// `country_denied` when it names countries (the first of them in evaluation order),
    /// `explicit_deny` otherwise.
    pub fn deny_reason(&self, facts: &RequestFacts<'_>) -> Reason {
        let unknown_country = facts.country.is_none().then(|| {
            self.when.iter().find_map(|condition| match condition {
                Condition::Countries(countries) => Some(countries.label()),
                Condition::NotCountries(countries) => Some(countries.negated_label()),
                _ => None,
            })
        });
        if let Some(Some(countries)) = unknown_country {
            return Reason::CountryDenied {
                country: None,
                countries,
                by_deny: true,
            };
        }
        self.when
            .iter()
            .find_map(|condition| match condition {
                Condition::Ip(networks) | Condition::NotIp(networks) => Some(Reason::IpDenied {
                    ip: facts.client_ip,
                    networks: networks.label(),
                }),
                Condition::Countries(countries) => Some(Reason::CountryDenied {
                    country: facts.country,
                    countries: countries.label(),
                    by_deny: true,
                }),
                Condition::NotCountries(countries) => Some(Reason::CountryDenied {
                    country: facts.country,
                    countries: countries.negated_label(),
                    by_deny: true,
                }),
                _ => None,
            })
            .unwrap_or(Reason::ExplicitDeny)
    }
}

/// One `when` condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// The caller must be identified.
    Authenticated,
    /// The caller's roles, inherited ones included.
    Roles(RolesCondition),
    /// The caller's scopes.
    Scopes(ScopesCondition),
    /// The caller's claims.
    Claims(ClaimsCondition),
    /// The client address must be in one of these networks.
    Ip(Networks),
    /// The client address must not be in any of these networks.
    NotIp(Networks),
    /// The client's country must be one of these.
    Countries(Countries),
    /// The client's country must not be one of these.
    NotCountries(Countries),
    /// The request must carry this header with an accepted value.
    Header(HeaderCondition),
    /// The connection must have shown a verified client certificate this accepts.
    Mtls(MtlsCondition),
}

impl Condition {
    /// Whether the condition is about who the caller is.
    pub fn is_about_identity(&self) -> bool {
        matches!(
            self,
            Condition::Authenticated
                | Condition::Roles(_)
                | Condition::Scopes(_)
                | Condition::Claims(_)
        )
    }

    /// `None` when the condition holds, otherwise the reason it failed. A condition that
    /// cannot be judged (a country not found out) fails in an allow rule (`effect`) and
    /// holds in a deny rule: fail closed.
    fn failure(
        &self,
        facts: &RequestFacts<'_>,
        captures: &[(&str, &str)],
        roles: &[&str],
        effect: Effect,
    ) -> Option<Reason> {
        // Identity conditions: an anonymous request cannot satisfy them, and the answer
        // to that is a 401 asking for credentials, not a 403.
        match (self, facts.principal) {
            (Condition::Authenticated, None)
            | (Condition::Roles(_), None)
            | (Condition::Scopes(_), None)
            | (Condition::Claims(_), None) => return Some(Reason::CredentialsMissing),
            (Condition::Authenticated, Some(_)) => return None,
            (Condition::Roles(condition), Some(_)) => return condition.failure(roles),
            (Condition::Scopes(condition), Some(principal)) => {
                return condition.failure(&principal.scopes);
            }
            (Condition::Claims(condition), Some(principal)) => {
                return condition.failure(principal, captures);
            }
            _ => {}
        }
        let holds = match self {
            Condition::Ip(networks) => networks.contains(facts.client_ip),
            Condition::NotIp(networks) => !networks.contains(facts.client_ip),
            Condition::Header(header) => header.holds(facts, captures),
            Condition::Mtls(mtls) => facts.client_cert.is_some_and(|cert| mtls.accepts(cert)),
            Condition::Countries(countries) => {
                facts.country.map_or(effect == Effect::Deny, |country| {
                    countries.contains(country)
                })
            }
            Condition::NotCountries(countries) => {
                facts.country.map_or(effect == Effect::Deny, |country| {
                    !countries.contains(country)
                })
            }
            _ => true,
        };
        if holds {
            return None;
        }
        Some(match self {
            Condition::Ip(networks) => Reason::IpNotAllowed {
                ip: facts.client_ip,
                networks: networks.label(),
            },
            Condition::NotIp(networks) => Reason::IpNotAllowed {
                ip: facts.client_ip,
                networks: networks.negated_label(),
            },
            Condition::Header(header) => Reason::NoMatchingAllow {
                unmet: Some(header.describe()),
            },
            Condition::Mtls(mtls) => Reason::MtlsRequired {
                presented: facts.client_cert.map(|cert| cert.name().to_owned()),
                accepted: mtls.describe(),
            },
            Condition::Countries(countries) => Reason::CountryDenied {
                country: facts.country,
                countries: countries.label(),
                by_deny: false,
            },
            Condition::NotCountries(countries) => Reason::CountryDenied {
                country: facts.country,
                countries: countries.negated_label(),
                by_deny: false,
            },
            _ => return None,
        })
    }
}

/// A host a rule (or route) is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this host, lower-case, without a port.
    Exact(String),
    /// Any host ending in this suffix, which starts with a dot (`*.example.com`).
    Suffix(String),
}

impl HostPattern {
    /// Whether `host` (lower-case, without port) fits.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }

    /// Whether every host this pattern fits, `other` fits too.
    pub fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Suffix(a), HostPattern::Exact(b)) => {
                HostPattern::Suffix(a.clone()).matches(b)
            }
            (HostPattern::Suffix(a), HostPattern::Suffix(b)) => b.ends_with(a.as_str()),
            (HostPattern::Exact(_), HostPattern::Suffix(_)) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// One segment of a path glob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// This exact segment.
    Literal(String),
    /// Any one non-empty segment: `*`, or `{name}`, which captures it.
    Single(Option<String>),
    /// Any number of segments, none included: `**`.
    Rest,
}

/// A compiled path glob such as `/tenants/{tenant}/orders/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    text: String,
    segments: Vec<Segment>,
}

impl PathGlob {
    /// Compiles a glob. `*` is one whole segment, `**` any number of them (at most one
    /// `**` per glob), `{name}` one segment captured under `name`. Literal segments are
    /// taken as written; the caller checks they are in canonical form.
    pub fn parse(text: &str) -> Result<PathGlob, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("path \"{text}\" must start with \"/\""));
        };
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for part in rest.split('/') {
            let segment = match part {
                "**" => {
                    if segments.contains(&Segment::Rest) {
                        return Err(format!(
                            "path \"{text}\" has more than one \"**\"; one is allowed per path"
                        ));
                    }
                    Segment::Rest
                }
                "*" => Segment::Single(None),
                _ if part.starts_with('{') && part.ends_with('}') => {
                    let name = &part[1..part.len() - 1];
                    let valid = !name.is_empty()
                        && name.len() <= 64
                        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(format!(
                            "path \"{text}\": capture \"{part}\" needs a name of letters, digits and '_', such as {{tenant}}"
                        ));
                    }
                    if names.contains(&name) {
                        return Err(format!("path \"{text}\" captures \"{name}\" twice"));
                    }
                    names.push(name);
                    Segment::Single(Some(name.to_owned()))
                }
                _ if part.contains(['*', '{', '}']) => {
                    return Err(format!(
                        "path \"{text}\": \"*\", \"**\" and {{name}} stand for whole segments; \"{part}\" mixes them with text"
                    ));
                }
                _ => Segment::Literal(part.to_owned()),
            };
            segments.push(segment);
        }
        Ok(PathGlob {
            text: text.to_owned(),
            segments,
        })
    }

    /// The glob matching every path (`/**`), for rules without `paths`.
    pub fn everything() -> PathGlob {
        PathGlob {
            text: "/**".to_owned(),
            segments: vec![Segment::Rest],
        }
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The names it captures, in order.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Single(Some(name)) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Whether every path this glob matches, `self` matches too.
    pub fn covers(&self, other: &PathGlob) -> bool {
        covers(&self.segments, &other.segments)
    }

    /// Whether `path` (canonical) fits, with its captures: the slow reference the index is
    /// tested against; requests go through the index.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let parts: Vec<&str> = split(path).collect();
        let mut captures = Vec::new();
        matches(&self.segments, &parts, &mut captures).then_some(captures)
    }
}

/// A canonical path's segments: `/` is one empty segment, `/a/` is `a` and an empty one.
pub fn split(path: &str) -> std::str::Split<'_, char> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

fn matches<'g, 'p>(
    glob: &'g [Segment],
    path: &[&'p str],
    captures: &mut Vec<(&'g str, &'p str)>,
) -> bool {
    match (glob.first(), path.first()) {
        (None, None) => true,
        (Some(Segment::Rest), _) => (0..=path.len()).any(|skip| {
            let mark = captures.len();
            let found = matches(&glob[1..], &path[skip..], captures);
            if !found {
                captures.truncate(mark);
            }
            found
        }),
        (Some(Segment::Literal(literal)), Some(part)) if literal == part => {
            matches(&glob[1..], &path[1..], captures)
        }
        (Some(Segment::Single(name)), Some(part)) if !part.is_empty() => {
            if let Some(name) = name {
                captures.push((name, part));
            }
            matches(&glob[1..], &path[1..], captures)
        }
        _ => false,
    }
}

fn covers(wide: &[Segment], narrow: &[Segment]) -> bool {
    match (wide.first(), narrow.first()) {
        (None, None) => true,
        (Some(Segment::Rest), _) => {
            (0..=narrow.len()).any(|skip| covers(&wide[1..], &narrow[skip..]))
        }
        (Some(Segment::Single(_)), Some(Segment::Single(_))) => covers(&wide[1..], &narrow[1..]),
        (Some(Segment::Single(_)), Some(Segment::Literal(literal))) if !literal.is_empty() => {
            covers(&wide[1..], &narrow[1..])
        }
        (Some(Segment::Literal(a)), Some(Segment::Literal(b))) if a == b => {
            covers(&wide[1..], &narrow[1..])
        }
        _ => false,
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The standard methods, one bit each.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A set of methods: one bit per standard method, extension methods by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodSet {
    bits: u16,
    extensions: Vec<String>,
}

impl MethodSet {
    /// The set of `methods` (case-sensitive, as HTTP methods are).
    pub fn new<'a>(methods: impl IntoIterator<Item = &'a str>) -> MethodSet {
        let mut set = MethodSet::default();
        for method in methods {
            match KNOWN_METHODS.iter().position(|known| *known == method) {
                Some(bit) => set.bits |= 1 << bit,
                None if !set.extensions.iter().any(|m| m == method) => {
                    set.extensions.push(method.to_owned());
                }
                None => {}
            }
        }
        set
    }

    /// Whether `method` is in the set.
    pub fn contains(&self, method: &str) -> bool {
        match KNOWN_METHODS.iter().position(|known| *known == method) {
            Some(bit) => self.bits & (1 << bit) != 0,
            None => self.extensions.iter().any(|m| m == method),
        }
    }

    /// Whether every method of `other` is in this set.
    pub fn covers(&self, other: &MethodSet) -> bool {
        self.bits & other.bits == other.bits
            && other.extensions.iter().all(|m| self.extensions.contains(m))
    }

    /// The methods, standard ones first.
    pub fn names(&self) -> Vec<String> {
        KNOWN_METHODS
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.bits & (1 << bit) != 0)
            .map(|(_, name)| (*name).to_owned())
            .chain(self.extensions.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> PathGlob {
        PathGlob::parse(text).unwrap()
    }

    #[test]
    fn globs_match_whole_segments() {
        for (pattern, path, expected) in [
            ("/public/**", "/public", true),
            ("/public/**", "/public/", true),
            ("/public/**", "/public/a/b/c", true),
            ("/public/**", "/publicity", false),
            ("/public/**", "/", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/", "/", true),
            ("/", "/a", false),
            ("/a/*", "/a/b", true),
            ("/a/*", "/a/", false),
            ("/a/*", "/a/b/c", false),
            ("/a/*/c", "/a/b/c", true),
            ("/a/**/c", "/a/c", true),
            ("/a/**/c", "/a/x/y/c", true),
            ("/a/**/c", "/a/x/y/d", false),
            ("/a/b", "/a/b/", false),
            ("/a/b/", "/a/b/", true),
            ("/A", "/a", false),
        ] {
            assert_eq!(
                glob(pattern).matches(path).is_some(),
                expected,
                "{pattern} on {path}"
            );
        }
    }

    #[test]
    fn captures_name_segments() {
        let tenant = glob("/tenants/{tenant}/orders/{order}/**");
        assert_eq!(
            tenant.matches("/tenants/acme/orders/7/lines"),
            Some(vec![("tenant", "acme"), ("order", "7")])
        );
        assert_eq!(
            tenant.capture_names().collect::<Vec<_>>(),
            ["tenant", "order"]
        );
        assert_eq!(glob("/t/{t}").matches("/t/"), None);
    }

    #[test]
    fn malformed_globs() {
        for (text, needle) in [
            ("public/**", "must start with"),
            ("/a/**/b/**", "more than one"),
            ("/a/b*", "whole segments"),
            ("/a/{}", "needs a name"),
            ("/a/{1x}", "needs a name"),
            ("/{a}/{a}", "twice"),
        ] {
            let err = PathGlob::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn coverage() {
        assert!(glob("/admin/**").covers(&glob("/admin/users/*")));
        assert!(glob("/admin/**").covers(&glob("/admin")));
        assert!(glob("/**").covers(&glob("/a/**/b")));
        assert!(glob("/a/*").covers(&glob("/a/{id}")));
        assert!(!glob("/a/*").covers(&glob("/a/**")));
        assert!(!glob("/admin/**").covers(&glob("/public/**")));
        assert!(!glob("/a/*").covers(&glob("/a/")));
    }

    #[test]
    fn methods() {
        let set = MethodSet::new(["GET", "HEAD", "PURGE"]);
        assert!(set.contains("GET"));
        assert!(!set.contains("get"));
        assert!(set.contains("PURGE"));
        assert!(!set.contains("POST"));
        assert_eq!(set.names(), ["GET", "HEAD", "PURGE"]);
        assert!(set.covers(&MethodSet::new(["GET"])));
        assert!(!MethodSet::new(["GET"]).covers(&set));
    }

    #[test]
    fn hosts() {
        let wildcard = HostPattern::Suffix(".example.com".into());
        assert!(wildcard.matches("api.example.com"));
        assert!(!wildcard.matches("example.com"));
        assert!(wildcard.covers(&HostPattern::Exact("a.example.com".into())));
        assert!(wildcard.covers(&HostPattern::Suffix(".a.example.com".into())));
        assert!(!HostPattern::Exact("a.example.com".into()).covers(&wildcard));
    }
}
