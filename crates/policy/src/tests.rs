//! Table-driven tests of the decision core. Only `check` calls the API; every case states
//! the effect, the deciding rule and the reason code.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::*;

struct RuleSpec(Rule);

fn allow(id: &str) -> RuleSpec {
    spec(id, Effect::Allow)
}

fn deny(id: &str) -> RuleSpec {
    spec(id, Effect::Deny)
}

fn spec(id: &str, effect: Effect) -> RuleSpec {
    RuleSpec(Rule::new(id, effect))
}

fn networks(cidrs: &[&str]) -> Networks {
    let set = NetSet::new(cidrs.iter().map(|c| c.parse::<IpNet>().unwrap()));
    Networks::new(vec![Arc::new(set)], &cidrs.join(", "))
}

fn countries(codes: &[&str]) -> Countries {
    let set = CountrySet::new(codes.iter().map(|code| Country::parse(code).unwrap()));
    Countries::new(set, &codes.join(", "))
}

fn header(name: &str, values: &[&str]) -> HeaderCondition {
    HeaderCondition {
        name: name.to_owned(),
        values: values
            .iter()
            .map(|value| match *value {
                "*" => ValuePattern::Present,
                _ if value.starts_with('{') => {
                    ValuePattern::Capture(value.trim_matches(['{', '}']).to_owned())
                }
                _ => ValuePattern::Exact((*value).to_owned()),
            })
            .collect(),
    }
}

impl RuleSpec {
    fn paths(mut self, paths: &[&str]) -> Self {
        self.0.paths = paths.iter().map(|p| PathGlob::parse(p).unwrap()).collect();
        self
    }
    fn hosts(mut self, hosts: &[&str]) -> Self {
        self.0.hosts = hosts
            .iter()
            .map(|h| match h.strip_prefix('*') {
                Some(suffix) => HostPattern::Suffix(suffix.to_owned()),
                None => HostPattern::Exact((*h).to_owned()),
            })
            .collect();
        self
    }
    fn methods(mut self, methods: &[&str]) -> Self {
        self.0.methods = Some(MethodSet::new(methods.iter().copied()));
        self
    }
    fn ip(mut self, cidrs: &[&str]) -> Self {
        self.0.when.push(Condition::Ip(networks(cidrs)));
        self
    }
    fn not_ip(mut self, cidrs: &[&str]) -> Self {
        self.0.when.push(Condition::NotIp(networks(cidrs)));
        self
    }
    fn countries(mut self, codes: &[&str]) -> Self {
        self.0.when.push(Condition::Countries(countries(codes)));
        self
    }
    fn not_countries(mut self, codes: &[&str]) -> Self {
        self.0.when.push(Condition::NotCountries(countries(codes)));
        self
    }
    fn when_header(mut self, name: &str, values: &[&str]) -> Self {
        self.0.when.push(Condition::Header(header(name, values)));
        self
    }
    fn match_header(mut self, name: &str, values: &[&str]) -> Self {
        self.0.headers.push(header(name, values));
        self
    }
    fn roles_any(mut self, roles: &[&str]) -> Self {
        self.0.when.push(Condition::Roles(RolesCondition {
            any: roles.iter().map(|r| (*r).to_owned()).collect(),
            all: Vec::new(),
        }));
        self
    }
    fn scopes_all(mut self, scopes: &[&str]) -> Self {
        self.0.when.push(Condition::Scopes(ScopesCondition {
            any: Vec::new(),
            all: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }));
        self
    }
    fn claim_capture(mut self, claim: &str, capture: &str) -> Self {
        self.0.when.push(Condition::Claims(ClaimsCondition {
            claims: vec![(claim.to_owned(), ClaimPattern::Capture(capture.to_owned()))],
        }));
        self
    }
    fn mtls(mut self, spiffe_ids: &[&str]) -> Self {
        self.0.when.push(Condition::Mtls(MtlsCondition {
            spiffe_ids: (spiffe_ids.iter())
                .map(|id| SpiffePattern::parse(id).unwrap())
                .collect(),
            ..MtlsCondition::default()
        }));
        self
    }
    fn authenticated(mut self) -> Self {
        self.0.when.push(Condition::Authenticated);
        self
    }
    fn audit(mut self) -> Self {
        self.0.mode = Mode::Audit;
        self
    }
}

struct Req {
    method: &'static str,
    host: Option<&'static str>,
    path: &'static str,
    ip: IpAddr,
    headers: Vec<(&'static str, &'static str)>,
    principal: Option<Principal>,
    client_cert: Option<ClientCertificate>,
    country: Option<Country>,
}

fn req(method: &'static str, path: &'static str) -> Req {
    Req {
        method,
        host: Some("app.example"),
        path,
        ip: "192.0.2.1".parse().unwrap(),
        headers: Vec::new(),
        principal: None,
        client_cert: None,
        country: None,
    }
}

impl Req {
    fn from(mut self, ip: &str) -> Self {
        self.ip = ip.parse().unwrap();
        self
    }
    /// From this country (`None`: it could not be found out).
    fn country(mut self, code: Option<&str>) -> Self {
        self.country = code.map(|code| Country::parse(code).unwrap());
        self
    }
    fn host(mut self, host: Option<&'static str>) -> Self {
        self.host = host;
        self
    }
    fn with_cert(mut self, spiffe_id: &str) -> Self {
        self.client_cert = Some(ClientCertificate {
            uris: vec![spiffe_id.to_owned()],
            fingerprint: "00".repeat(32),
            ..ClientCertificate::default()
        });
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn by_caller(mut self, roles: &[&str], scopes: &[&str], claims: &[(&str, ClaimValue)]) -> Self {
        self.principal = Some(Principal {
            subject: "alice".to_owned(),
            issuer: "test".to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            claims: claims
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone()))
                .collect(),
        });
        self
    }
}

/// The expected answer: effect, deciding rule, reason code.
type Expect = (Effect, Option<&'static str>, &'static str);

fn decide(rules: Vec<RuleSpec>, req: &Req) -> Decision {
    let roles = RoleGraph::new(&[("admin".to_owned(), vec!["editor".to_owned()])]).unwrap();
    let set = PolicySet::with_roles(rules.into_iter().map(|r| r.0).collect(), roles);
    let facts = RequestFacts {
        method: req.method,
        host: req.host,
        path: req.path,
        client_ip: req.ip,
        headers: &req.headers,
        principal: req.principal.as_ref(),
        client_cert: req.client_cert.as_ref(),
        country: req.country,
    };
    set.evaluate(&facts)
}

fn check(rules: Vec<RuleSpec>, req: Req, expect: Expect) -> Decision {
    let decision = decide(rules, &req);
    let found = (
        decision.effect,
        decision.rule.as_ref().map(|r| r.0),
        decision.reason.code(),
    );
    assert_eq!(found, expect, "{} {}: {decision:#?}", req.method, req.path);
    decision
}

const ALLOW: Effect = Effect::Allow;
const DENY: Effect = Effect::Deny;

fn office_policy() -> Vec<RuleSpec> {
    vec![
        deny("block-listed").ip(&["198.51.100.0/24"]),
        allow("public-read")
            .paths(&["/public/**"])
            .methods(&["GET", "HEAD"]),
        allow("admin-console")
            .paths(&["/admin/**"])
            .ip(&["203.0.113.0/24", "2001:db8::/32"]),
        deny("no-debug").paths(&["/public/debug/**"]),
    ]
}

#[test]
fn every_reason_code() {
    let cases: Vec<(Req, Expect)> = vec![
        (
            req("GET", "/public/a"),
            (ALLOW, Some("public-read"), "allowed"),
        ),
        (
            req("HEAD", "/public"),
            (ALLOW, Some("public-read"), "allowed"),
        ),
        (
            req("POST", "/public/a"),
            (DENY, Some("public-read"), "method_not_allowed"),
        ),
        (
            req("GET", "/public/debug/vars"),
            (DENY, Some("no-debug"), "explicit_deny"),
        ),
        (
            req("GET", "/public/a").from("198.51.100.9"),
            (DENY, Some("block-listed"), "ip_denied"),
        ),
        (
            req("GET", "/admin/users"),
            (DENY, Some("admin-console"), "ip_not_allowed"),
        ),
        (
            req("GET", "/admin/users").from("203.0.113.5"),
            (ALLOW, Some("admin-console"), "allowed"),
        ),
        (
            req("DELETE", "/admin").from("2001:db8::1"),
            (ALLOW, Some("admin-console"), "allowed"),
        ),
        (req("GET", "/"), (DENY, None, "no_matching_allow")),
        (req("GET", "/private"), (DENY, None, "no_matching_allow")),
    ];
    for (req, expect) in cases {
        check(office_policy(), req, expect);
    }
}

#[test]
fn deny_overrides_allow_whatever_the_order() {
    let rules = || {
        vec![
            allow("everything").paths(&["/**"]),
            deny("admin").paths(&["/admin/**"]),
        ]
    };
    check(
        rules(),
        req("GET", "/admin/x"),
        (DENY, Some("admin"), "explicit_deny"),
    );
    let mut reversed = rules();
    reversed.reverse();
    check(
        reversed,
        req("GET", "/admin/x"),
        (DENY, Some("admin"), "explicit_deny"),
    );
    check(
        rules(),
        req("GET", "/other"),
        (ALLOW, Some("everything"), "allowed"),
    );
}

#[test]
fn default_deny_with_no_rules() {
    let decision = check(vec![], req("GET", "/"), (DENY, None, "no_matching_allow"));
    assert!(decision.trace.is_empty());
}

#[test]
fn audit_rules_never_change_the_outcome() {
    let decision = check(
        vec![
            allow("read").paths(&["/a/**"]),
            deny("staged-deny").paths(&["/a/secret"]).audit(),
        ],
        req("GET", "/a/secret"),
        (ALLOW, Some("read"), "allowed"),
    );
    let audits: Vec<&str> = decision.audit_matches().map(|s| s.rule.0).collect();
    assert_eq!(audits, ["staged-deny"]);

    let decision = check(
        vec![allow("staged-allow").paths(&["/b/**"]).audit()],
        req("GET", "/b/x"),
        (DENY, None, "no_matching_allow"),
    );
    assert_eq!(decision.audit_matches().count(), 1);
    assert_eq!(decision.trace[0].mode, Mode::Audit);
}

#[test]
fn closest_allow_explains_in_file_order() {
    let decision = check(
        vec![
            allow("unrelated").paths(&["/other/**"]),
            allow("office-only")
                .paths(&["/reports/**"])
                .ip(&["10.0.0.0/8"]),
            allow("writers").paths(&["/reports/**"]).methods(&["POST"]),
        ],
        req("GET", "/reports/q3"),
        (DENY, Some("office-only"), "ip_not_allowed"),
    );
    let closest: Vec<&str> = decision.closest().map(|s| s.rule.0).collect();
    assert_eq!(closest, ["office-only", "writers"]);
    assert!(decision.trace.iter().all(|s| s.rule.0 != "unrelated"));
    assert_eq!(
        decision.reason.to_string(),
        "client 192.0.2.1 does not satisfy 10.0.0.0/8"
    );
}

#[test]
fn method_is_reported_only_when_it_is_the_only_failure() {
    check(
        vec![
            allow("office-write")
                .paths(&["/r/**"])
                .methods(&["POST"])
                .ip(&["10.0.0.0/8"]),
        ],
        req("GET", "/r/1"),
        (DENY, Some("office-write"), "ip_not_allowed"),
    );
    let decision = check(
        vec![
            allow("office-write")
                .paths(&["/r/**"])
                .methods(&["POST", "PUT"])
                .ip(&["10.0.0.0/8"]),
        ],
        req("GET", "/r/1").from("10.1.1.1"),
        (DENY, Some("office-write"), "method_not_allowed"),
    );
    assert_eq!(
        decision.reason,
        Reason::MethodNotAllowed {
            method: "GET".to_owned(),
            allowed: vec!["POST".to_owned(), "PUT".to_owned()]
        }
    );
}

#[test]
fn not_ip() {
    let rules = || {
        vec![
            allow("outside-lab")
                .paths(&["/**"])
                .not_ip(&["10.9.0.0/16"]),
        ]
    };
    check(
        rules(),
        req("GET", "/x"),
        (ALLOW, Some("outside-lab"), "allowed"),
    );
    check(
        rules(),
        req("GET", "/x").from("10.9.3.3"),
        (DENY, Some("outside-lab"), "ip_not_allowed"),
    );
    check(
        vec![
            allow("all").paths(&["/**"]),
            deny("not-office").not_ip(&["10.0.0.0/8"]),
        ],
        req("GET", "/x"),
        (DENY, Some("not-office"), "ip_denied"),
    );
}

#[test]
fn country_conditions() {
    let rules = || {
        vec![
            deny("embargo").countries(&["KP", "IR"]),
            allow("eu-only").paths(&["/eu/**"]).countries(&["DE", "FR"]),
            allow("not-from-us")
                .paths(&["/intl/**"])
                .not_countries(&["US"]),
            allow("public").paths(&["/public/**"]),
        ]
    };
    for (path, country, expect) in [
        ("/eu/a", Some("DE"), (ALLOW, Some("eu-only"), "allowed")),
        (
            "/eu/a",
            Some("US"),
            (DENY, Some("eu-only"), "country_denied"),
        ),
        (
            "/intl/a",
            Some("DE"),
            (ALLOW, Some("not-from-us"), "allowed"),
        ),
        (
            "/intl/a",
            Some("US"),
            (DENY, Some("not-from-us"), "country_denied"),
        ),
        (
            "/public/a",
            Some("KP"),
            (DENY, Some("embargo"), "country_denied"),
        ),
        ("/public/a", Some("DE"), (ALLOW, Some("public"), "allowed")),
        // An address the database does not know is XX: it matches only XX.
        ("/public/a", Some("XX"), (ALLOW, Some("public"), "allowed")),
        (
            "/eu/a",
            Some("XX"),
            (DENY, Some("eu-only"), "country_denied"),
        ),
        (
            "/intl/a",
            Some("XX"),
            (ALLOW, Some("not-from-us"), "allowed"),
        ),
        // Not found out (no database loaded): allow rules fail and deny rules hold.
        ("/public/a", None, (DENY, Some("embargo"), "country_denied")),
    ] {
        check(rules(), req("GET", path).country(country), expect);
    }
    check(
        vec![allow("unknown-only").countries(&["XX"])],
        req("GET", "/").country(Some("XX")),
        (ALLOW, Some("unknown-only"), "allowed"),
    );
    for rule in [
        allow("eu").countries(&["DE"]),
        allow("not-us").not_countries(&["US"]),
    ] {
        let id = rule.0.id.0;
        check(
            vec![rule],
            req("GET", "/").country(None),
            (DENY, Some(id), "country_denied"),
        );
    }
    check(
        vec![allow("all"), deny("not-eu").not_countries(&["DE"])],
        req("GET", "/").country(None),
        (DENY, Some("not-eu"), "country_denied"),
    );
    // A deny rule that names networks and countries: an unknown country is the reason
    // when it made the rule hold (fail closed), the networks otherwise.
    let mixed = || {
        vec![
            allow("all"),
            deny("mixed").ip(&["192.0.2.0/24"]).countries(&["KP"]),
        ]
    };
    check(
        mixed(),
        req("GET", "/").country(None),
        (DENY, Some("mixed"), "country_denied"),
    );
    check(
        mixed(),
        req("GET", "/").country(Some("KP")),
        (DENY, Some("mixed"), "ip_denied"),
    );
}

#[test]
fn country_reasons_say_what_was_seen_and_whether_it_was_known() {
    let sentence = |rules, country| {
        decide(rules, &req("GET", "/").country(country))
            .reason
            .to_string()
    };
    assert_eq!(
        sentence(vec![deny("embargo").countries(&["KP", "IR"])], Some("KP")),
        "country KP matches KP, IR"
    );
    assert_eq!(
        sentence(vec![allow("eu").countries(&["DE", "FR"])], Some("US")),
        "country US does not satisfy DE, FR"
    );
    assert_eq!(
        sentence(vec![allow("intl").not_countries(&["US"])], Some("US")),
        "country US does not satisfy not US"
    );
    assert_eq!(
        sentence(vec![allow("eu").countries(&["DE"])], None),
        "the country could not be determined, so DE counts as not satisfied (fail closed)"
    );
    assert_eq!(
        sentence(vec![allow("all"), deny("embargo").countries(&["KP"])], None),
        "the country could not be determined, so KP counts as matched (fail closed)"
    );
    // A deny rule that spares the country says so in the trace.
    let decision = decide(
        vec![allow("all"), deny("embargo").countries(&["KP"])],
        &req("GET", "/").country(Some("US")),
    );
    assert_eq!(
        decision.trace[1].outcome.to_string(),
        "condition failed: country US does not satisfy KP"
    );
    // A deny rule's country reason is not a default deny: no closest allow rules.
    let decision = decide(
        vec![
            allow("all").methods(&["POST"]),
            deny("embargo").countries(&["KP"]),
        ],
        &req("GET", "/").country(Some("KP")),
    );
    assert_eq!(decision.closest().count(), 0);
    let decision = decide(
        vec![allow("eu").countries(&["DE"])],
        &req("GET", "/").country(Some("KP")),
    );
    assert_eq!(decision.closest().count(), 1);
    assert!(PolicySet::new(vec![allow("eu").countries(&["DE"]).0]).uses_countries());
    assert!(!PolicySet::new(vec![allow("office").ip(&["10.0.0.0/8"]).0]).uses_countries());
}

#[test]
fn ipv4_mapped_clients_count_as_ipv4() {
    check(
        vec![allow("office").ip(&["203.0.113.0/24"])],
        req("GET", "/").from("::ffff:203.0.113.7"),
        (ALLOW, Some("office"), "allowed"),
    );
}

#[test]
fn hosts_narrow_rules() {
    let rules = || {
        vec![
            allow("api-only").hosts(&["api.example"]).paths(&["/**"]),
            allow("any-sub")
                .hosts(&["*.internal.example"])
                .paths(&["/ops/**"]),
        ]
    };
    check(
        rules(),
        req("GET", "/x").host(Some("api.example")),
        (ALLOW, Some("api-only"), "allowed"),
    );
    check(rules(), req("GET", "/x"), (DENY, None, "no_matching_allow"));
    check(
        rules(),
        req("GET", "/x").host(None),
        (DENY, None, "no_matching_allow"),
    );
    // A request without a host cannot be shown to be outside a deny rule's hosts.
    check(
        vec![
            allow("all").paths(&["/**"]),
            deny("no-admin-host").hosts(&["admin.example"]),
        ],
        req("GET", "/x").host(None),
        (DENY, Some("no-admin-host"), "explicit_deny"),
    );
    check(
        rules(),
        req("GET", "/ops/1").host(Some("a.b.internal.example")),
        (ALLOW, Some("any-sub"), "allowed"),
    );
    check(
        rules(),
        req("GET", "/ops/1").host(Some("internal.example")),
        (DENY, None, "no_matching_allow"),
    );
}

#[test]
fn globs_and_captures() {
    let rules = || {
        vec![
            allow("tenant-orders")
                .paths(&["/tenants/{tenant}/orders/**"])
                .when_header("x-tenant", &["{tenant}"]),
            allow("one-level").paths(&["/files/*"]),
            allow("deep").paths(&["/docs/**/index"]),
        ]
    };
    check(
        rules(),
        req("GET", "/tenants/acme/orders/7").header("x-tenant", "acme"),
        (ALLOW, Some("tenant-orders"), "allowed"),
    );
    let decision = check(
        rules(),
        req("GET", "/tenants/acme/orders/7").header("x-tenant", "globex"),
        (DENY, Some("tenant-orders"), "no_matching_allow"),
    );
    assert_eq!(
        decision.reason.to_string(),
        "header x-tenant must be {tenant}"
    );
    check(
        rules(),
        req("GET", "/files/a"),
        (ALLOW, Some("one-level"), "allowed"),
    );
    check(
        rules(),
        req("GET", "/files/a/b"),
        (DENY, None, "no_matching_allow"),
    );
    check(
        rules(),
        req("GET", "/files/"),
        (DENY, None, "no_matching_allow"),
    );
    check(
        rules(),
        req("GET", "/docs/index"),
        (ALLOW, Some("deep"), "allowed"),
    );
    check(
        rules(),
        req("GET", "/docs/a/b/index"),
        (ALLOW, Some("deep"), "allowed"),
    );
    check(
        rules(),
        req("GET", "/docs/a/b/other"),
        (DENY, None, "no_matching_allow"),
    );
}

#[test]
fn header_conditions() {
    let rules = || {
        vec![
            allow("staging-only")
                .paths(&["/s/**"])
                .when_header("x-env", &["staging", "dev"]),
            deny("no-bots").match_header("user-agent", &["BadBot"]),
            allow("root").paths(&["/"]),
        ]
    };
    check(
        rules(),
        req("GET", "/s/1").header("x-env", "dev"),
        (ALLOW, Some("staging-only"), "allowed"),
    );
    check(
        rules(),
        req("GET", "/s/1"),
        (DENY, Some("staging-only"), "no_matching_allow"),
    );
    check(
        rules(),
        req("GET", "/").header("user-agent", "BadBot"),
        (DENY, Some("no-bots"), "explicit_deny"),
    );
    check(
        rules(),
        req("GET", "/").header("user-agent", "curl"),
        (ALLOW, Some("root"), "allowed"),
    );
}

#[test]
fn case_sensitive_paths() {
    check(
        vec![
            deny("admin").paths(&["/admin/**"]),
            allow("all").paths(&["/**"]),
        ],
        req("GET", "/ADMIN/x"),
        (ALLOW, Some("all"), "allowed"),
    );
}

#[test]
fn index_returns_only_rules_for_this_path() {
    let mut rules: Vec<RuleSpec> = (0..1000)
        .map(|n| {
            allow(&format!("r{n}")).paths(&[Box::leak(format!("/svc{n}/**").into_boxed_str())])
        })
        .collect();
    rules.push(allow("root").paths(&["/"]));
    let decision = check(
        rules,
        req("GET", "/svc42/x"),
        (ALLOW, Some("r42"), "allowed"),
    );
    assert_eq!(decision.trace.len(), 1);
}

/// The index against the reference matcher: for many globs and paths drawn from a small
/// alphabet, the rules the index returns are exactly those with a path that matches,
/// with the same captures.
#[test]
fn index_agrees_with_the_reference_matcher() {
    const SEGMENTS: [&str; 6] = ["a", "b", "*", "**", "{x}", ""];
    const PATH_SEGMENTS: [&str; 4] = ["a", "b", "c", ""];
    // A fixed xorshift sequence: the same globs and paths on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    let mut globs = Vec::new();
    while globs.len() < 60 {
        let length = 1 + next(4);
        let text: String = (0..length)
            .map(|_| format!("/{}", SEGMENTS[next(SEGMENTS.len())]))
            .collect();
        if let Ok(glob) = PathGlob::parse(&text) {
            globs.push(glob);
        }
    }
    let rules: Vec<Rule> = globs
        .iter()
        .enumerate()
        .map(|(n, glob)| {
            let mut rule = allow(&format!("r{n}")).0;
            rule.paths = vec![glob.clone()];
            rule
        })
        .collect();
    let set = PolicySet::new(rules);
    for _ in 0..2000 {
        let length = 1 + next(5);
        let path: String = (0..length)
            .map(|_| format!("/{}", PATH_SEGMENTS[next(PATH_SEGMENTS.len())]))
            .collect();
        let expected: Vec<(usize, Vec<(&str, &str)>)> = globs
            .iter()
            .enumerate()
            .filter_map(|(n, glob)| glob.matches(&path).map(|captures| (n, captures)))
            .collect();
        let found: Vec<(usize, Vec<(&str, &str)>)> = set
            .index
            .candidates(&set.rules, Some("app.example"), &path)
            .into_iter()
            .map(|candidate| (candidate.rule, candidate.captures))
            .collect();
        let expected_rules: Vec<usize> = expected.iter().map(|(n, _)| *n).collect();
        let found_rules: Vec<usize> = found.iter().map(|(n, _)| *n).collect();
        assert_eq!(found_rules, expected_rules, "{path}");
        for ((n, want), (_, got)) in expected.iter().zip(&found) {
            // With `**` before a capture, several splits match; both take the first.
            assert_eq!(got, want, "{path} against {}", globs[*n]);
        }
    }
}

/// The README's tenant-orders rule: members of a tenant manage that tenant's orders.
fn tenant_policy() -> Vec<RuleSpec> {
    vec![
        allow("tenant-orders")
            .paths(&["/tenants/{tenant}/orders/**"])
            .methods(&["GET", "POST"])
            .roles_any(&["editor"])
            .scopes_all(&["orders:write"])
            .claim_capture("tenant", "tenant"),
        allow("profile").paths(&["/me"]).authenticated(),
    ]
}

fn acme() -> (&'static str, ClaimValue) {
    ("tenant", ClaimValue::String("acme".to_owned()))
}

#[test]
fn identity_reasons() {
    let cases: Vec<(Req, Expect)> = vec![
        (
            req("POST", "/tenants/acme/orders/7").by_caller(
                &["editor"],
                &["orders:write"],
                &[acme()],
            ),
            (ALLOW, Some("tenant-orders"), "allowed"),
        ),
        (
            req("POST", "/tenants/acme/orders/7"),
            (DENY, Some("tenant-orders"), "credentials_missing"),
        ),
        (
            req("POST", "/tenants/acme/orders/7").by_caller(
                &["viewer"],
                &["orders:write"],
                &[acme()],
            ),
            (DENY, Some("tenant-orders"), "missing_role"),
        ),
        (
            req("POST", "/tenants/acme/orders/7").by_caller(
                &["admin"],
                &["orders:write"],
                &[acme()],
            ),
            (ALLOW, Some("tenant-orders"), "allowed"),
        ),
        (
            req("POST", "/tenants/acme/orders/7").by_caller(
                &["editor"],
                &["orders:read"],
                &[acme()],
            ),
            (DENY, Some("tenant-orders"), "missing_scope"),
        ),
        (
            req("POST", "/tenants/globex/orders/7").by_caller(
                &["editor"],
                &["orders:write"],
                &[acme()],
            ),
            (DENY, Some("tenant-orders"), "tenant_mismatch"),
        ),
        (
            req("POST", "/tenants/globex/orders/7").by_caller(
                &["editor"],
                &["orders:write"],
                &[(
                    "tenant",
                    ClaimValue::List(vec![
                        ClaimValue::String("acme".to_owned()),
                        ClaimValue::String("globex".to_owned()),
                    ]),
                )],
            ),
            (ALLOW, Some("tenant-orders"), "allowed"),
        ),
        (
            req("POST", "/tenants/acme/orders/7").by_caller(&["editor"], &["orders:write"], &[]),
            (DENY, Some("tenant-orders"), "tenant_mismatch"),
        ),
        (
            req("GET", "/me"),
            (DENY, Some("profile"), "credentials_missing"),
        ),
        (
            req("GET", "/me").by_caller(&[], &[], &[]),
            (ALLOW, Some("profile"), "allowed"),
        ),
    ];
    for (req, expect) in cases {
        check(tenant_policy(), req, expect);
    }
}

#[test]
fn identity_explanations() {
    let decision = decide(
        tenant_policy(),
        &req("POST", "/tenants/acme/orders/7").by_caller(&["editor"], &["orders:read"], &[acme()]),
    );
    assert!(!decision.reason.is_authentication());
    assert_eq!(
        decision.reason.to_string(),
        "requires scope orders:write; caller has orders:read"
    );
    let anonymous = decide(tenant_policy(), &req("GET", "/me"));
    assert!(anonymous.reason.is_authentication());
    let other_tenant = decide(
        tenant_policy(),
        &req("GET", "/tenants/globex/orders/1").by_caller(
            &["editor"],
            &["orders:write"],
            &[acme()],
        ),
    );
    assert_eq!(
        other_tenant.reason.to_string(),
        "claim tenant must be {tenant}; it is \"acme\""
    );
}

#[test]
fn a_401_only_when_credentials_would_help() {
    let rules = || {
        vec![
            allow("office-staff")
                .paths(&["/staff/**"])
                .methods(&["GET"])
                .ip(&["10.0.0.0/8"])
                .authenticated(),
            allow("members").paths(&["/members/**"]).authenticated(),
            allow("members-from-office")
                .paths(&["/members/**"])
                .ip(&["10.0.0.0/8"]),
        ]
    };
    // Outside the office, credentials would not help: 403.
    check(
        rules(),
        req("GET", "/staff/x"),
        (DENY, Some("office-staff"), "ip_not_allowed"),
    );
    // The wrong method: credentials would not help either.
    check(
        rules(),
        req("DELETE", "/staff/x").from("10.1.1.1"),
        (DENY, Some("office-staff"), "method_not_allowed"),
    );
    check(
        rules(),
        req("GET", "/staff/x").from("10.1.1.1"),
        (DENY, Some("office-staff"), "credentials_missing"),
    );
    // A later rule that only needs credentials wins over an earlier near miss.
    let mut reordered = rules();
    reordered.rotate_left(1);
    let decision = check(
        reordered,
        req("GET", "/members/x"),
        (DENY, Some("members"), "credentials_missing"),
    );
    assert!(decision.reason.is_authentication());
    let mut ip_first = rules();
    ip_first.swap(1, 2);
    check(
        ip_first,
        req("GET", "/members/x"),
        (DENY, Some("members"), "credentials_missing"),
    );
}

#[test]
fn rule_ids_are_interned_once_for_every_load_that_names_them() {
    let first = RuleId::new("interned-rule");
    let again = RuleId::new(&String::from("interned-rule"));
    assert_eq!(first, again);
    assert!(std::ptr::eq(first.0, again.0), "one copy of the id");
    assert_ne!(RuleId::new("interned-other"), first);
}

#[test]
fn addresses_in_reasons_read_as_the_standard_library_writes_them() {
    for ip in [
        "0.0.0.0",
        "10.0.0.1",
        "127.0.0.1",
        "192.168.100.9",
        "255.255.255.255",
        "2001:db8::1",
        "::ffff:10.0.0.1",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        let reason = Reason::IpDenied {
            ip,
            networks: "@office",
        };
        assert_eq!(reason.to_string(), format!("client {ip} matches @office"));
        let mut pushed = String::from(">");
        Address(ip).write_to(&mut pushed).unwrap();
        assert_eq!(pushed, format!(">{ip}"));
    }
}

#[test]
fn a_not_ip_condition_reads_with_its_not_and_its_labels_are_shared() {
    let set = |label: &str| Networks::new(vec![], label);
    let office = set("@office");
    assert_eq!(office.negated_label(), "not @office");
    assert!(std::ptr::eq(office.label(), set("@office").label()));
}

#[test]
fn client_certificates() {
    let rules = || {
        vec![
            allow("billing-api")
                .paths(&["/billing/**"])
                .mtls(&["spiffe://example.org/ns/billing/*"]),
            deny("quarantined")
                .paths(&["/**"])
                .mtls(&["spiffe://example.org/ns/quarantine/*"]),
        ]
    };
    check(
        rules(),
        req("GET", "/billing/x").with_cert("spiffe://example.org/ns/billing/sa/api"),
        (ALLOW, Some("billing-api"), "allowed"),
    );
    let missing = check(
        rules(),
        req("GET", "/billing/x"),
        (DENY, Some("billing-api"), "mtls_required"),
    );
    assert_eq!(
        missing.reason.to_string(),
        "requires a client certificate (spiffe://example.org/ns/billing/*); none was shown"
    );
    let other = check(
        rules(),
        req("GET", "/billing/x").with_cert("spiffe://example.org/ns/web/sa/frontend"),
        (DENY, Some("billing-api"), "mtls_required"),
    );
    assert_eq!(
        other.reason.to_string(),
        "client certificate spiffe://example.org/ns/web/sa/frontend is not one of spiffe://example.org/ns/billing/*"
    );
    assert!(!other.reason.is_authentication());
    check(
        rules(),
        req("GET", "/billing/x").with_cert("spiffe://example.org/ns/quarantine/sa/x"),
        (DENY, Some("quarantined"), "explicit_deny"),
    );
}

/// Of several close allow rules, one that fits the request's method and failed only on
/// `when` explains a default deny before one that failed on its methods; credentials come
/// first; file order breaks ties.
#[test]
fn the_closest_allow_rule_is_ranked_before_file_order() {
    let read = || {
        allow("orders-read")
            .paths(&["/orders/**"])
            .methods(&["GET"])
    };
    let write = || {
        allow("orders-write")
            .paths(&["/orders/**"])
            .methods(&["GET", "POST"])
            .scopes_all(&["orders:write"])
    };
    let reader = || req("POST", "/orders/7").by_caller(&[], &["orders:read"], &[]);
    // A method failure first in file order, a scope failure second: the scope explains.
    check(
        vec![read(), write()],
        reader(),
        (DENY, Some("orders-write"), "missing_scope"),
    );
    check(
        vec![write(), read()],
        reader(),
        (DENY, Some("orders-write"), "missing_scope"),
    );
    // Two rules that fail on `when`: the first in file order.
    let office = || {
        allow("orders-office")
            .paths(&["/orders/**"])
            .methods(&["POST"])
            .ip(&["203.0.113.0/24"])
    };
    check(
        vec![office(), write()],
        reader(),
        (DENY, Some("orders-office"), "ip_not_allowed"),
    );
    check(
        vec![write(), office()],
        reader(),
        (DENY, Some("orders-write"), "missing_scope"),
    );
    // Two rules that fail on their methods: the first in file order.
    let delete = || {
        allow("orders-delete")
            .paths(&["/orders/**"])
            .methods(&["DELETE"])
    };
    check(
        vec![delete(), read()],
        reader(),
        (DENY, Some("orders-delete"), "method_not_allowed"),
    );
    // A rule whose `when` failed but whose methods do not fit either ranks with method
    // failures: file order.
    let office_get = || {
        allow("office-get")
            .paths(&["/orders/**"])
            .methods(&["GET"])
            .ip(&["203.0.113.0/24"])
    };
    check(
        vec![read(), office_get()],
        reader(),
        (DENY, Some("orders-read"), "method_not_allowed"),
    );
    check(
        vec![office_get(), read()],
        reader(),
        (DENY, Some("office-get"), "ip_not_allowed"),
    );
    // An anonymous caller: the rule only credentials stand between comes first (a 401).
    let members = || {
        allow("members")
            .paths(&["/orders/**"])
            .methods(&["POST"])
            .authenticated()
    };
    check(
        vec![office(), read(), members()],
        req("POST", "/orders/7"),
        (DENY, Some("members"), "credentials_missing"),
    );
    // Every close rule stays in the trace, in file order.
    let decision = decide(vec![read(), write()], &reader());
    let listed: Vec<&str> = decision.closest().map(|step| step.rule.0).collect();
    assert_eq!(listed, ["orders-read", "orders-write"]);
}

#[test]
fn the_code_lists_agree_with_the_reasons() {
    let reasons = [
        Reason::Allowed,
        Reason::ExplicitDeny,
        Reason::NoMatchingAllow { unmet: None },
        Reason::CredentialsMissing,
        Reason::TokenExpired { seconds_ago: 1 },
        Reason::TokenWrongAudience {
            expected: Vec::new(),
        },
        Reason::TokenWrongIssuer,
        Reason::TokenInvalid {
            problem: String::new(),
        },
    ];
    for reason in &reasons {
        let code = reason.code();
        assert_eq!(
            AUTHENTICATION_CODES.contains(&code),
            reason.is_authentication(),
            "{code}"
        );
        assert_eq!(
            REFUSED_CREDENTIAL_CODES.contains(&code),
            reason.is_authentication() && *reason != Reason::CredentialsMissing,
            "{code}"
        );
    }
}
