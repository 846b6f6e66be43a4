//! Warnings about a valid config: rules that can never match, and allow rules that an
//! unconditional deny rule always overrides. Warnings never stop a config from loading;
//! `portcullis validate` prints them and the gateway logs them at startup.

use crate::policy::{Condition, Effect, HostPattern, Mode, NetSet, PathGlob, Rule, Segment};

use super::error::ConfigError;
use super::model::{Config, KeySource, RouteSettings};
use super::source::Source;
use crate::tls::ClientCertMode;

/// Every warning for `config`, whose own file is `source`.
pub fn warnings(config: &Config, source: &Source) -> Vec<ConfigError> {
    let mut warnings = config.policy_summary.warnings.clone();
    if config.policy_summary.files.is_empty() {
        warnings.push(ConfigError::at(
            source.path(),
            source.locate("policy.files"),
            "policy.files",
            "no policy files: every request is denied (no_matching_allow); name rule files in policy.files",
        ));
    }
    if config
        .identity
        .api_keys
        .as_ref()
        .is_some_and(|keys| keys.keys.is_empty())
    {
        warnings.push(ConfigError::at(
            source.path(),
            source.locate("identity.api_keys.file"),
            "identity.api_keys.file",
            "the key file lists no keys: every API key is refused",
        ));
    }
    for (index, issuer) in config.identity.jwt.iter().enumerate() {
        if let KeySource::Url(remote) = &issuer.keys
            && remote.url.scheme_str() == Some("http")
            && !is_loopback(remote.url.host().unwrap_or(""))
        {
            let yaml_path = format!("identity.jwt[{index}].jwks_url");
            warnings.push(ConfigError::at(
                source.path(),
                source.locate(&yaml_path),
                &yaml_path,
                "the key set is fetched over plain http: anyone on the path can swap in their own keys and sign tokens; use https",
            ));
        }
    }
    for upstream in &config.upstreams {
        if upstream.tls.as_ref().is_some_and(|tls| tls.insecure) {
            let yaml_path = format!("upstreams.{}.tls.insecure_skip_verify", upstream.name.0);
            warnings.push(ConfigError::at(
                source.path(),
                source.locate(&yaml_path),
                &yaml_path,
                "the https targets' certificates are not verified: anyone on the path can read and change this traffic; name their CA in tls.ca instead",
            ));
        }
    }
    if let Some(geoip) = &config.geoip
        && geoip.database.is_none()
        && geoip.header_from.is_empty()
    {
        warnings.push(ConfigError::at(
            source.path(),
            source.locate("network.geoip.header"),
            "network.geoip.header",
            "the country header is believed only from network.geoip.header_from (by default network.trusted_proxies), which names none, and no database is named: no request's country is known, so country conditions fail closed",
        ));
    }
    let rules = config.policy.rules();
    let trusted = NetSet::new(config.trusted_proxies.iter().copied());
    for (rule, origin) in rules.iter().zip(&config.policy_summary.rule_origins) {
        // A request whose forwarding header a proxy garbled is decided on the proxy's own
        // address: an allow list that holds it, or a deny rule that spares it, lets such
        // a request through.
        let spares_proxies = rule
            .when
            .iter()
            .any(|condition| match (condition, rule.effect) {
                (Condition::Ip(networks), Effect::Allow)
                | (Condition::NotIp(networks), Effect::Deny) => networks.intersects(&trusted),
                _ => false,
            });
        if spares_proxies {
            warnings.push(origin.problem(format!(
                "rule \"{}\" lets trusted proxies through by their own address, which is what a request with a garbled forwarding header is decided on; keep network.trusted_proxies out of allow lists and deny exceptions",
                rule.id
            )));
        }
        let asks_for_certificates = config.listeners.iter().any(|listener| {
            (listener.tls.as_ref()).is_some_and(|tls| tls.client_cert != ClientCertMode::None)
        });
        if !asks_for_certificates
            && (rule.when.iter()).any(|condition| matches!(condition, Condition::Mtls(_)))
        {
            warnings.push(origin.problem(format!(
                "rule \"{}\" needs a client certificate, but no listener asks clients for one: its mtls condition never holds; set listen[].tls.client_ca",
                rule.id
            )));
        }
        if let Some(role) = unknown_role(rule, config) {
            warnings.push(origin.problem(format!(
                "rule \"{}\" names role \"{role}\", which no policy file declares and no API key grants; a typo here never matches",
                rule.id
            )));
        }
        if let Some(name) = owned_header_named(rule, config) {
            warnings.push(origin.problem(format!(
                "rule \"{}\" looks at header {name}, which the gateway removes from every request before deciding; the condition never sees it",
                rule.id
            )));
        }
        if let Some(problem) = upper_case_on_folded_routes(rule, &config.routes) {
            warnings.push(origin.problem(format!("rule \"{}\": {problem}", rule.id)));
        }
        if let Some(problem) = never_matches(rule, &config.routes) {
            warnings
                .push(origin.problem(format!("rule \"{}\" can never match: {problem}", rule.id)));
            continue;
        }
        if rule.effect == Effect::Allow
            && let Some((deny, deny_origin)) = rules
                .iter()
                .zip(&config.policy_summary.rule_origins)
                .find(|(deny, _)| shadows(deny, rule))
        {
            let at = deny_origin
                .position
                .map(|(line, _)| format!("{}:{line}", deny_origin.file.display()))
                .unwrap_or_else(|| deny_origin.file.display().to_string());
            warnings.push(origin.problem(format!(
                "allow rule \"{}\" never allows anything: deny rule \"{}\" ({at}) matches every request it does",
                rule.id, deny.id
            )));
        }
    }
    warnings
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A role a `roles` condition names that nothing declares or grants.
fn unknown_role<'r>(rule: &'r Rule, config: &Config) -> Option<&'r str> {
    // Tokens carry whatever roles their issuer grants; only keys' and client
    // certificates' roles are known here.
    if !config.identity.jwt.is_empty() {
        return None;
    }
    let granted = |role: &str| {
        config.policy.roles().declares(role)
            || config.identity.api_keys.as_ref().is_some_and(|keys| {
                keys.keys
                    .iter()
                    .any(|key| key.roles.iter().any(|granted| granted == role))
            })
            || (config.identity.client_certs.iter())
                .any(|caller| caller.roles.iter().any(|granted| granted == role))
    };
    rule.when.iter().find_map(|condition| match condition {
        Condition::Roles(roles) => roles
            .any
            .iter()
            .chain(&roles.all)
            .find(|role| !granted(role))
            .map(String::as_str),
        _ => None,
    })
}

/// A header the rule looks at that the gateway owns (identity headers, the API key).
fn owned_header_named<'c>(rule: &Rule, config: &'c Config) -> Option<&'c str> {
    let identity = &config.identity;
    let mut owned = vec![
        &identity.forward.subject,
        &identity.forward.roles,
        &identity.forward.scopes,
        &identity.forward.client_cert,
    ];
    if let Some(keys) = &identity.api_keys {
        owned.push(&keys.header);
    }
    let named = rule
        .headers
        .iter()
        .map(|header| header.name.as_str())
        .chain(rule.when.iter().filter_map(|condition| match condition {
            Condition::Header(header) => Some(header.name.as_str()),
            _ => None,
        }));
    for name in named {
        if let Some(found) = owned.iter().find(|owned| owned.as_str() == name) {
            return Some(found.as_str());
        }
    }
    None
}

/// Why `rule` can never match a request, if it cannot.
fn never_matches(rule: &Rule, routes: &[RouteSettings]) -> Option<String> {
    for condition in &rule.when {
        match condition {
            Condition::NotIp(networks) if networks.is_everything() => {
                return Some(format!(
                    "not_ip [{}] excludes every address",
                    networks.label()
                ));
            }
            Condition::Ip(networks) if networks.is_empty() => {
                return Some(format!("ip [{}] holds no address", networks.label()));
            }
            _ => {}
        }
    }
    if !routes.iter().any(|route| reaches(route, rule)) {
        return Some("no route accepts its hosts and paths".to_owned());
    }
    None
}

/// Paths with upper-case letters, on case-insensitive routes the rule reaches: the path
/// is lower-cased there first, so they never match on those routes.
fn upper_case_on_folded_routes(rule: &Rule, routes: &[RouteSettings]) -> Option<String> {
    let glob = rule.paths.iter().find(|glob| {
        glob.segments().iter().any(|segment| {
            matches!(segment, Segment::Literal(literal) if literal_has_upper_case(literal))
        })
    })?;
    let route = routes
        .iter()
        .find(|route| route.case_insensitive && reaches(route, rule))?;
    Some(format!(
        "path \"{glob}\" has upper-case letters, but route \"{}\" lower-cases paths before deciding, so the rule never matches there; write it in lower case",
        route.id
    ))
}

/// Upper-case letters outside percent-encodings (whose hex digits stay upper-case).
fn literal_has_upper_case(literal: &str) -> bool {
    let mut hex_left = 0;
    literal.bytes().any(|byte| {
        if hex_left > 0 {
            hex_left -= 1;
            false
        } else if byte == b'%' {
            hex_left = 2;
            false
        } else {
            byte.is_ascii_uppercase()
        }
    })
}

/// Whether some request `route` accepts could fit the rule's hosts and paths.
fn reaches(route: &RouteSettings, rule: &Rule) -> bool {
    let host_ok = match &route.host {
        None => true,
        Some(route_host) => {
            rule.hosts.is_empty() || rule.hosts.iter().any(|host| overlap(host, route_host))
        }
    };
    host_ok
        && (rule.paths.is_empty()
            || rule
                .paths
                .iter()
                .any(|glob| glob_meets_prefix(glob, &route.path_prefix)))
}

fn overlap(a: &HostPattern, b: &HostPattern) -> bool {
    match (a, b) {
        (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
        (suffix @ HostPattern::Suffix(_), HostPattern::Exact(host))
        | (HostPattern::Exact(host), suffix @ HostPattern::Suffix(_)) => suffix.matches(host),
        (HostPattern::Suffix(a), HostPattern::Suffix(b)) => {
            a.ends_with(b.as_str()) || b.ends_with(a.as_str())
        }
    }
}

/// Whether some path the glob matches starts with the route's prefix.
fn glob_meets_prefix(glob: &PathGlob, prefix: &str) -> bool {
    let mut prefix_segments: Vec<&str> = path_segments(prefix);
    if prefix.ends_with('/') {
        // `/files/` matches anything under it: the last, empty segment stands for any.
        prefix_segments.pop();
    }
    let mut segments = glob.segments().iter();
    for wanted in prefix_segments {
        match segments.next() {
            Some(Segment::Literal(literal)) if literal == wanted => {}
            Some(Segment::Single(_)) if !wanted.is_empty() => {}
            Some(Segment::Rest) => return true,
            _ => return false,
        }
    }
    true
}

/// A route prefix's segments; `/` has none.
fn path_segments(prefix: &str) -> Vec<&str> {
    match prefix.strip_prefix('/') {
        Some("") | None => Vec::new(),
        Some(rest) => rest.split('/').collect(),
    }
}

/// Whether `deny` is an enforced, unconditional deny rule that matches every request
/// `allow` matches.
fn shadows(deny: &Rule, allow: &Rule) -> bool {
    let unconditional = deny.effect == Effect::Deny
        && deny.mode == Mode::Enforce
        && deny.when.is_empty()
        && deny.headers.is_empty();
    let hosts = deny.hosts.is_empty()
        || (!allow.hosts.is_empty()
            && allow
                .hosts
                .iter()
                .all(|host| deny.hosts.iter().any(|d| d.covers(host))));
    let paths = deny.paths.is_empty()
        || (!allow.paths.is_empty()
            && allow
                .paths
                .iter()
                .all(|glob| deny.paths.iter().any(|d| d.covers(glob))));
    let methods = match (&deny.methods, &allow.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(deny), Some(allow)) => deny.covers(allow),
    };
    allow.mode == Mode::Enforce && unconditional && hosts && paths && methods
}
