//! Policy files → a compiled [`PolicySet`]: lists, roles and rules typed and
//! cross-checked across every file named by `policy.files`.
//!
//! Names are global: a list or rule id defined in one file is visible in (and must be
//! unique across) all of them. Files are read in the order their globs name them, each
//! glob's matches sorted by name, and that order is the rules' file order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::build::{Builder, check_id, check_token, parse_host_pattern, parse_network};
use super::error::{ConfigError, did_you_mean};
use super::raw::{
    OneOrMany, RawAnyAll, RawClaim, RawEffect, RawList, RawMode, RawMtls, RawPolicyFile, RawRule,
    RawWhen, parse_policy,
};
use super::source::{Source, key_segment};
use crate::policy::{
    ClaimPattern, ClaimValue, ClaimsCondition, Condition, Countries, Country, CountrySet, Effect,
    HeaderCondition, MethodSet, Mode, MtlsCondition, NetSet, Networks, PathGlob, PolicySet,
    RoleGraph, RolesCondition, Rule, RuleId, ScopesCondition, Segment, SpiffePattern, ValuePattern,
    parse_fingerprint,
};

/// The named lists of every policy file: networks and countries, and where each name was
/// defined (broken lists included, so that a reference to one is not also "unknown").
#[derive(Default)]
struct Lists {
    networks: HashMap<String, Arc<NetSet>>,
    countries: HashMap<String, CountrySet>,
    defined: HashMap<String, String>,
}

/// Whether a list entry is written as a country code (`DE`, `T1`; `DEU` is a mistake
/// the country check explains) rather than a network, which always has `.` or `:`.
fn looks_like_country(entry: &str) -> bool {
    (1..=3).contains(&entry.len())
        && entry.bytes().all(|byte| byte.is_ascii_alphanumeric())
        && entry.bytes().any(|byte| byte.is_ascii_alphabetic())
}

/// The most errors reported for one list file; past this the file is surely not a list.
const MAX_LIST_FILE_ERRORS: usize = 10;

/// What was loaded besides the rules, for summaries.
#[derive(Debug, Clone, Default)]
pub struct PolicySummary {
    /// The policy files, in the order they were read.
    pub files: Vec<PathBuf>,
    /// Named lists and how many prefixes each holds.
    pub lists: Vec<(String, usize)>,
    /// Where each rule is written, in the policy set's rule order.
    pub rule_origins: Vec<RuleOrigin>,
    /// Problems that do not stop loading, such as an empty list.
    pub warnings: Vec<ConfigError>,
    /// SHA-256 over every policy and list file read, names and contents, in order.
    pub digest: [u8; 32],
    /// The list files read (`lists: { name: { file: ... } }`).
    pub list_files: Vec<PathBuf>,
}

/// Where a rule is written.
#[derive(Debug, Clone)]
pub struct RuleOrigin {
    /// The policy file.
    pub file: PathBuf,
    /// Line and column of the rule.
    pub position: Option<(usize, usize)>,
    /// Its YAML path in that file, `rules[3]`.
    pub yaml_path: String,
}

impl RuleOrigin {
    /// A warning or error about this rule.
    pub fn problem(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.file, self.position, self.yaml_path.clone(), message)
    }
}

/// The files `pattern` names, relative to `base`: a path whose last part may hold `*`
/// and `?` wildcards. Matches are sorted by name; a pattern that names no file is an error.
pub fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = base.join(pattern);
    let (Some(dir), Some(name)) = (full.parent(), full.file_name().and_then(|n| n.to_str())) else {
        return Err(format!("\"{pattern}\" does not name a file"));
    };
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!(
            "\"{pattern}\": wildcards are allowed in the file name only"
        ));
    }
    if !name.contains(['*', '?']) {
        return if full.is_file() {
            Ok(vec![full])
        } else {
            Err(format!("policy file \"{}\" does not exist", full.display()))
        };
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|err| format!("cannot list directory \"{}\": {err}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                // Editors' and Kubernetes' hidden files (`..data`, `.x.swp`) are never policy.
                .is_some_and(|file| !file.starts_with('.') && wildcard_match(name, file))
        })
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(format!(
            "\"{pattern}\" matches no file in \"{}\"",
            dir.display()
        ));
    }
    Ok(found)
}

/// `*` any run of characters, `?` one character.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Classic two-pointer glob match with one backtrack point.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Adds a file to a digest: its name and contents, each length-prefixed so that no two
/// sets of files hash alike.
pub(super) fn digest_file(digest: &mut Sha256, path: &Path, content: impl AsRef<[u8]>) {
    for part in [path.to_string_lossy().as_bytes(), content.as_ref()] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
}

/// One parsed policy file, with the builder that places its errors.
struct File {
    builder: Builder,
    raw: RawPolicyFile,
}

/// Reads, parses and compiles `files`; every error found is returned.
pub fn build(files: &[PathBuf]) -> Result<(PolicySet, PolicySummary), Vec<ConfigError>> {
    let mut unreadable = Vec::new();
    let mut sources = Vec::new();
    for path in files {
        match std::fs::read_to_string(path) {
            Ok(text) => sources.push((path.clone(), text)),
            Err(err) => unreadable.push(ConfigError::unreadable(path, &err)),
        }
    }
    match compile(&sources) {
        Ok(built) if unreadable.is_empty() => Ok(built),
        Ok(_) => Err(unreadable),
        Err(errors) => {
            unreadable.extend(errors);
            Err(unreadable)
        }
    }
}

/// Parses and compiles policy files already read, as `(path, text)` in order; every
/// error found is returned. List files they name are still read from disk.
pub fn compile(
    sources: &[(PathBuf, String)],
) -> Result<(PolicySet, PolicySummary), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    let mut digest = Sha256::new();
    for (path, text) in sources {
        digest_file(&mut digest, path, text);
        match parse_policy(path, text) {
            Ok(raw) => parsed.push(File {
                builder: Builder {
                    source: Source::new(path, text),
                    errors: Vec::new(),
                },
                raw,
            }),
            Err(parse_errors) => errors.extend(parse_errors.0),
        }
    }

    let mut lists = Lists::default();
    let mut summary = PolicySummary {
        files: sources.iter().map(|(path, _)| path.clone()).collect(),
        lists: Vec::new(),
        rule_origins: Vec::new(),
        warnings: Vec::new(),
        digest: [0; 32],
        list_files: Vec::new(),
    };
    for file in &mut parsed {
        for (name, raw_list) in &file.raw.lists {
            let base = format!("lists.{}", key_segment(name));
            if file
                .builder
                .typed(&base, check_id("list name", name))
                .is_none()
            {
                continue;
            }
            if let Some(origin) = lists.defined.get(name) {
                file.builder.error(
                    &base,
                    format!("list \"{name}\" is already defined in {origin}"),
                );
                continue;
            }
            lists
                .defined
                .insert(name.clone(), origin_of(&file.builder, &base));
            if let RawList::Inline(entries) = raw_list
                && entries
                    .first()
                    .is_some_and(|entry| looks_like_country(entry))
            {
                if let Some(set) = build_country_list(&mut file.builder, &base, entries) {
                    lists.countries.insert(name.clone(), set);
                }
                continue;
            }
            if let Some(set) = build_list(
                &mut file.builder,
                &base,
                raw_list,
                &mut errors,
                &mut digest,
                &mut summary.list_files,
            ) {
                if set.is_empty() {
                    let position = file.builder.source.locate(&base);
                    summary.warnings.push(ConfigError::at(
                        file.builder.source.path(),
                        position,
                        base.clone(),
                        format!("list \"{name}\" holds no networks: ip conditions naming it never hold, and not_ip ones always do"),
                    ));
                }
                summary.lists.push((name.clone(), set.prefixes()));
                lists.networks.insert(name.clone(), Arc::new(set));
            }
        }
    }

    let role_names: Vec<String> = parsed
        .iter()
        .flat_map(|file| file.raw.roles.keys().cloned())
        .collect();
    let role_pairs: Vec<(String, Vec<String>)> = parsed
        .iter()
        .flat_map(|file| file.raw.roles.iter())
        .map(|(name, role)| (name.clone(), role.inherits.clone()))
        .collect();
    let role_graph = match RoleGraph::new(&role_pairs) {
        Ok(graph) => graph,
        Err(cycle) => {
            let first = cycle.split(" → ").next().unwrap_or("").to_owned();
            if let Some(file) = parsed
                .iter_mut()
                .find(|file| file.raw.roles.contains_key(&first))
            {
                let base = format!("roles.{}", key_segment(&first));
                file.builder
                    .error(&base, format!("roles inherit in a cycle: {cycle}"));
            }
            RoleGraph::default()
        }
    };
    let mut rules = Vec::new();
    let mut rule_origin: HashMap<String, String> = HashMap::new();
    let mut role_origin: HashMap<String, String> = HashMap::new();
    for file in &mut parsed {
        for (name, role) in &file.raw.roles {
            let base = format!("roles.{}", key_segment(name));
            file.builder.typed(&base, check_id("role name", name));
            if let Some(origin) = role_origin.get(name) {
                file.builder.error(
                    &base,
                    format!("role \"{name}\" is already defined in {origin}"),
                );
            } else {
                role_origin.insert(name.clone(), origin_of(&file.builder, &base));
            }
            for (index, parent) in role.inherits.iter().enumerate() {
                if !role_names.contains(parent) {
                    let help = did_you_mean(parent, role_names.iter().map(String::as_str));
                    file.builder.error_with_help(
                        &format!("{base}.inherits[{index}]"),
                        format!("unknown role \"{parent}\""),
                        help,
                    );
                }
            }
        }
        for (index, raw_rule) in file.raw.rules.iter().enumerate() {
            let base = format!("rules[{index}]");
            let id_path = format!("{base}.id");
            if let Some(origin) = rule_origin.get(&raw_rule.id) {
                file.builder.error(
                    &id_path,
                    format!(
                        "duplicate rule id \"{}\" (first defined in {origin})",
                        raw_rule.id
                    ),
                );
            } else {
                rule_origin.insert(raw_rule.id.clone(), origin_of(&file.builder, &id_path));
            }
            if let Some(rule) = build_rule(&mut file.builder, &base, raw_rule, &lists) {
                rules.push(rule);
                summary.rule_origins.push(RuleOrigin {
                    file: file.builder.source.path().to_owned(),
                    position: file.builder.source.locate(&base),
                    yaml_path: base,
                });
            }
        }
    }

    for file in parsed {
        let mut file_errors = file.builder.errors;
        file_errors.sort_by_key(|error| error.position.unwrap_or((usize::MAX, 0)));
        errors.extend(file_errors);
    }
    if errors.is_empty() {
        summary.digest = digest.finalize().into();
        Ok((PolicySet::with_roles(rules, role_graph), summary))
    } else {
        Err(errors)
    }
}

/// `file:line` of a YAML path, for "first defined in" messages.
fn origin_of(builder: &Builder, yaml_path: &str) -> String {
    let file = builder.source.path().display();
    match builder.source.locate(yaml_path) {
        Some((line, _)) => format!("{file}:{line}"),
        None => file.to_string(),
    }
}

/// A list of country codes, each checked; a network among them is an error (a list holds
/// one kind).
fn build_country_list(builder: &mut Builder, base: &str, entries: &[String]) -> Option<CountrySet> {
    let mut set = CountrySet::default();
    let mut ok = true;
    for (index, entry) in entries.iter().enumerate() {
        let yaml_path = format!("{base}[{index}]");
        if !looks_like_country(entry) {
            builder.error(
                &yaml_path,
                format!("\"{entry}\" is not a country code, and this list holds countries; put networks in a list of their own"),
            );
            ok = false;
            continue;
        }
        match builder.typed(&yaml_path, Country::parse(entry)) {
            Some(country) => set.extend([country]),
            None => ok = false,
        }
    }
    ok.then_some(set)
}

fn build_list(
    builder: &mut Builder,
    base: &str,
    raw: &RawList,
    errors: &mut Vec<ConfigError>,
    digest: &mut Sha256,
    list_files: &mut Vec<PathBuf>,
) -> Option<NetSet> {
    match raw {
        RawList::Inline(entries) => {
            let mut networks = Vec::new();
            let mut ok = true;
            for (index, text) in entries.iter().enumerate() {
                match builder.typed(&format!("{base}[{index}]"), parse_network(text)) {
                    Some(network) => networks.push(network),
                    None => ok = false,
                }
            }
            ok.then(|| NetSet::new(networks))
        }
        RawList::File(file) => {
            let policy_dir = builder.source.path().parent().unwrap_or(Path::new(""));
            let path = policy_dir.join(file);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(err) => {
                    builder.error(
                        &format!("{base}.file"),
                        format!("cannot read list file \"{}\": {err}", path.display()),
                    );
                    return None;
                }
            };
            digest_file(digest, &path, &text);
            list_files.push(path.clone());
            let (set, list_errors) = parse_list_file(&path, &text);
            let failed = !list_errors.is_empty();
            errors.extend(list_errors);
            (!failed).then_some(set)
        }
    }
}

/// A list file: one network per line; blank lines and `#` comments are ignored.
pub fn parse_list_file(path: &Path, text: &str) -> (NetSet, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut bad_lines = 0usize;
    let mut networks: Vec<IpNet> = Vec::with_capacity(text.len() / 16);
    for (number, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("");
        let entry = content.trim();
        if entry.is_empty() {
            continue;
        }
        match parse_network(entry) {
            Ok(network) => networks.push(network),
            Err(message) => {
                bad_lines += 1;
                if errors.len() < MAX_LIST_FILE_ERRORS {
                    let column = content.len() - content.trim_start().len() + 1;
                    errors.push(ConfigError::at(
                        path,
                        Some((number + 1, column)),
                        "",
                        message,
                    ));
                }
            }
        }
    }
    if bad_lines > errors.len() {
        errors.push(ConfigError::at(
            path,
            None,
            "",
            format!("{} more lines are not networks", bad_lines - errors.len()),
        ));
    }
    (NetSet::new(networks), errors)
}

fn build_rule(builder: &mut Builder, base: &str, raw: &RawRule, lists: &Lists) -> Option<Rule> {
    let errors_before = builder.errors.len();
    builder.typed(&format!("{base}.id"), check_id("rule id", &raw.id));

    let hosts = match &raw.matches.hosts {
        None => Vec::new(),
        Some(hosts) => {
            non_empty(builder, &format!("{base}.match.hosts"), hosts.len(), "host");
            hosts
                .iter()
                .enumerate()
                .filter_map(|(index, text)| {
                    builder.typed(
                        &format!("{base}.match.hosts[{index}]"),
                        parse_host_pattern(text),
                    )
                })
                .collect()
        }
    };

    let paths: Vec<PathGlob> = match &raw.matches.paths {
        None => Vec::new(),
        Some(paths) => {
            non_empty(builder, &format!("{base}.match.paths"), paths.len(), "path");
            paths
                .iter()
                .enumerate()
                .filter_map(|(index, text)| {
                    builder.typed(&format!("{base}.match.paths[{index}]"), parse_glob(text))
                })
                .collect()
        }
    };

    let methods = raw.matches.methods.as_ref().map(|methods| {
        non_empty(
            builder,
            &format!("{base}.match.methods"),
            methods.len(),
            "method",
        );
        for (index, method) in methods.iter().enumerate() {
            builder.typed(
                &format!("{base}.match.methods[{index}]"),
                check_method(method),
            );
        }
        MethodSet::new(methods.iter().map(String::as_str))
    });

    no_empty_map(
        builder,
        &format!("{base}.match.headers"),
        &raw.matches.headers,
    );
    let headers = raw
        .matches
        .headers
        .iter()
        .filter_map(|(name, values)| {
            let yaml_path = format!("{base}.match.headers.{}", key_segment(name));
            header_condition(builder, &yaml_path, name, values, &paths)
        })
        .collect();

    let when = build_when(builder, &format!("{base}.when"), &raw.when, lists, &paths);

    if let Some(help) = &raw.help {
        let link = ["https://", "http://", "mailto:"]
            .iter()
            .any(|scheme| help.starts_with(scheme))
            && !help.contains(char::is_whitespace);
        if !link {
            builder.error(
                &format!("{base}.help"),
                "help must be a link (https://…, http://… or mailto:…); put prose in description",
            );
        }
    }

    if builder.errors.len() > errors_before {
        return None;
    }
    Some(Rule {
        id: RuleId::new(&raw.id),
        description: raw.description.clone(),
        effect: match raw.effect {
            RawEffect::Allow => Effect::Allow,
            RawEffect::Deny => Effect::Deny,
        },
        mode: match raw.mode {
            RawMode::Enforce => Mode::Enforce,
            RawMode::Audit => Mode::Audit,
        },
        hosts,
        paths,
        methods,
        headers,
        when,
        help: raw.help.clone(),
    })
}

/// `headers: {}` is written but says nothing: surely conditions that were commented out.
fn no_empty_map<V>(
    builder: &mut Builder,
    yaml_path: &str,
    map: &std::collections::BTreeMap<String, V>,
) {
    if map.is_empty() && builder.source.locate(yaml_path).is_some() {
        builder.error(
            yaml_path,
            "holds no headers; write at least one, or remove the key",
        );
    }
}

/// The client certificates written at `base` (a rule's `when.mtls`, or the `match` of
/// `identity.client_certs`), each entry checked.
pub(super) fn mtls_condition(builder: &mut Builder, base: &str, mtls: &RawMtls) -> MtlsCondition {
    // SECURITY: only `{}` accepts any certificate; a list written empty (a template that
    // rendered nothing) must not widen the rule to every certificate.
    let mut entries = |key: &str, entries: &Option<Vec<String>>| -> Vec<String> {
        match entries {
            Some(entries) if entries.is_empty() => {
                builder.error(
                    &format!("{base}.{key}"),
                    "holds no entries; write at least one, or remove the key (mtls: {} accepts any verified certificate)",
                );
                Vec::new()
            }
            Some(entries) => entries.clone(),
            None => Vec::new(),
        }
    };
    let subjects = entries("subjects", &mtls.subjects);
    let dns_names = entries("dns_names", &mtls.dns_names);
    let spiffe_ids = entries("spiffe_ids", &mtls.spiffe_ids);
    let fingerprints = entries("fingerprints", &mtls.fingerprints);
    let mut parsed = |key: &str, entries: &[String], parse: &dyn Fn(&str) -> Result<(), String>| {
        for (index, entry) in entries.iter().enumerate() {
            if let Err(problem) = parse(entry) {
                builder.error(&format!("{base}.{key}[{index}]"), problem);
            }
        }
    };
    parsed("dns_names", &dns_names, &|name| {
        parse_host_pattern(name).map(drop)
    });
    parsed("spiffe_ids", &spiffe_ids, &|id| {
        SpiffePattern::parse(id).map(drop)
    });
    parsed("fingerprints", &fingerprints, &|hash| {
        parse_fingerprint(hash).map(drop)
    });
    MtlsCondition {
        subjects,
        dns_names: (dns_names.iter())
            .filter_map(|name| parse_host_pattern(name).ok())
            .collect(),
        spiffe_ids: (spiffe_ids.iter())
            .filter_map(|id| SpiffePattern::parse(id).ok())
            .collect(),
        fingerprints: (fingerprints.iter())
            .filter_map(|hash| parse_fingerprint(hash).ok())
            .collect(),
    }
}

/// `{ any: [...], all: [...] }`, at least one of them non-empty.
fn any_all(
    builder: &mut Builder,
    yaml_path: &str,
    raw: &RawAnyAll,
    comma_allowed: bool,
) -> Option<(Vec<String>, Vec<String>)> {
    let any = raw.any.clone().unwrap_or_default();
    let all = raw.all.clone().unwrap_or_default();
    if any.is_empty() && all.is_empty() {
        builder.error(yaml_path, "name at least one in any: [...] or all: [...]");
        return None;
    }
    let mut ok = true;
    for (key, names) in [("any", &any), ("all", &all)] {
        for (index, name) in names.iter().enumerate() {
            ok &= builder
                .typed(
                    &format!("{yaml_path}.{key}[{index}]"),
                    check_token(name, comma_allowed),
                )
                .is_some();
        }
    }
    ok.then_some((any, all))
}

fn non_empty(builder: &mut Builder, yaml_path: &str, len: usize, what: &str) {
    if len == 0 {
        builder.error(
            yaml_path,
            format!("an empty list matches no request; remove the key to match every {what}"),
        );
    }
}

fn build_when(
    builder: &mut Builder,
    base: &str,
    raw: &RawWhen,
    lists: &Lists,
    paths: &[PathGlob],
) -> Vec<Condition> {
    let mut when = Vec::new();
    match raw.authenticated {
        Some(true) => when.push(Condition::Authenticated),
        Some(false) => builder.error(
            &format!("{base}.authenticated"),
            "authenticated: false would match every caller; remove the key instead",
        ),
        None => {}
    }
    if let Some(roles) = &raw.roles
        && let Some((any, all)) = any_all(builder, &format!("{base}.roles"), roles, false)
    {
        when.push(Condition::Roles(RolesCondition { any, all }));
    }
    if let Some(scopes) = &raw.scopes
        && let Some((any, all)) = any_all(builder, &format!("{base}.scopes"), scopes, true)
    {
        when.push(Condition::Scopes(ScopesCondition { any, all }));
    }
    if let Some(claims) = &raw.claims {
        let mut patterns = Vec::new();
        if claims.is_empty() {
            builder.error(
                &format!("{base}.claims"),
                "holds no claims; write at least one, or remove the key",
            );
        }
        for (name, value) in claims {
            let yaml_path = format!("{base}.claims.{}", key_segment(name));
            let pattern = match value {
                RawClaim::String(text) => match capture_name(text) {
                    Some(capture) => {
                        if !captured_by_every_path(builder, &yaml_path, text, capture, paths) {
                            continue;
                        }
                        ClaimPattern::Capture(capture.to_owned())
                    }
                    None => ClaimPattern::Value(ClaimValue::String(text.clone())),
                },
                RawClaim::Number(number) => ClaimPattern::Value(ClaimValue::Number(*number)),
                RawClaim::Bool(value) => ClaimPattern::Value(ClaimValue::Bool(*value)),
            };
            patterns.push((name.clone(), pattern));
        }
        when.push(Condition::Claims(ClaimsCondition { claims: patterns }));
    }
    if let Some(mtls) = &raw.mtls {
        when.push(Condition::Mtls(mtls_condition(
            builder,
            &format!("{base}.mtls"),
            mtls,
        )));
    }

    if let Some(entries) = &raw.ip
        && let Some(networks) = networks(builder, &format!("{base}.ip"), entries, lists)
    {
        when.push(Condition::Ip(networks));
    }
    if let Some(entries) = &raw.not_ip
        && let Some(networks) = networks(builder, &format!("{base}.not_ip"), entries, lists)
    {
        when.push(Condition::NotIp(networks));
    }
    if let Some(entries) = &raw.countries
        && let Some(countries) = countries(builder, &format!("{base}.countries"), entries, lists)
    {
        when.push(Condition::Countries(countries));
    }
    if let Some(entries) = &raw.not_countries
        && let Some(countries) =
            countries(builder, &format!("{base}.not_countries"), entries, lists)
    {
        when.push(Condition::NotCountries(countries));
    }
    no_empty_map(builder, &format!("{base}.headers"), &raw.headers);
    for (name, values) in &raw.headers {
        let yaml_path = format!("{base}.headers.{}", key_segment(name));
        if let Some(header) = header_condition(builder, &yaml_path, name, values, paths) {
            when.push(Condition::Header(header));
        }
    }
    when
}

/// `["@office", "10.0.0.0/8"]`: named lists and inline networks.
fn networks(
    builder: &mut Builder,
    yaml_path: &str,
    entries: &[String],
    lists: &Lists,
) -> Option<Networks> {
    non_empty(builder, yaml_path, entries.len(), "address");
    let mut sets = Vec::new();
    let mut inline = Vec::new();
    let mut ok = !entries.is_empty();
    for (index, entry) in entries.iter().enumerate() {
        let entry_path = format!("{yaml_path}[{index}]");
        if let Some(name) = entry.strip_prefix('@') {
            match lists.networks.get(name) {
                Some(set) => sets.push(Arc::clone(set)),
                None => {
                    ok = false;
                    unusable_list(builder, &entry_path, name, lists, ListKind::Networks);
                }
            }
        } else if looks_like_country(entry) && Country::parse(entry).is_ok() {
            ok = false;
            builder.error(
                &entry_path,
                format!(
                    "\"{entry}\" is a country code; name countries in countries or not_countries"
                ),
            );
        } else {
            match builder.typed(&entry_path, parse_network(entry)) {
                Some(network) => inline.push(network),
                None => ok = false,
            }
        }
    }
    if !inline.is_empty() {
        sets.push(Arc::new(NetSet::new(inline)));
    }
    ok.then(|| Networks::new(sets, &entries.join(", ")))
}

/// `["@eu", "CH"]`: named country lists and country codes.
fn countries(
    builder: &mut Builder,
    yaml_path: &str,
    entries: &[String],
    lists: &Lists,
) -> Option<Countries> {
    non_empty(builder, yaml_path, entries.len(), "country");
    let mut set = CountrySet::default();
    let mut ok = !entries.is_empty();
    for (index, entry) in entries.iter().enumerate() {
        let entry_path = format!("{yaml_path}[{index}]");
        if let Some(name) = entry.strip_prefix('@') {
            match lists.countries.get(name) {
                Some(list) => set.union(list),
                None => {
                    ok = false;
                    unusable_list(builder, &entry_path, name, lists, ListKind::Countries);
                }
            }
        } else {
            match builder.typed(&entry_path, Country::parse(entry)) {
                Some(country) => set.extend([country]),
                None => ok = false,
            }
        }
    }
    ok.then(|| Countries::new(set, &entries.join(", ")))
}

/// What a condition needs a named list to hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Networks,
    Countries,
}

/// Reports why `@name` cannot be used where a list of `wanted` is: it holds the other
/// kind, or it does not exist (with the closest name of the right kind). A list that is
/// defined but broken has its own error already.
fn unusable_list(
    builder: &mut Builder,
    yaml_path: &str,
    name: &str,
    lists: &Lists,
    wanted: ListKind,
) {
    let of_other_kind = |list: &str| match wanted {
        ListKind::Networks => lists.countries.contains_key(list),
        ListKind::Countries => lists.networks.contains_key(list),
    };
    let other = of_other_kind(name);
    // Broken lists of the right kind are still names worth suggesting.
    let own = (lists.defined.keys())
        .filter(|defined| !of_other_kind(defined))
        .map(String::as_str);
    if other {
        let message = match wanted {
            ListKind::Networks => {
                format!("list \"@{name}\" holds countries; name it in countries or not_countries")
            }
            ListKind::Countries => {
                format!("list \"@{name}\" holds networks; name it in ip or not_ip")
            }
        };
        builder.error(yaml_path, message);
    } else if !lists.defined.contains_key(name) {
        let help = did_you_mean(name, own).map(|help| help.replacen('"', "\"@", 1));
        builder.error_with_help(yaml_path, format!("unknown list \"@{name}\""), help);
    }
}

fn header_condition(
    builder: &mut Builder,
    yaml_path: &str,
    name: &str,
    values: &OneOrMany,
    paths: &[PathGlob],
) -> Option<HeaderCondition> {
    let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
        builder.error(yaml_path, format!("\"{name}\" is not a header name"));
        return None;
    };
    if values.0.is_empty() {
        builder.error(yaml_path, "list at least one value, or \"*\" for any value");
        return None;
    }
    let mut patterns = Vec::new();
    for value in &values.0 {
        let pattern = if value == "*" {
            ValuePattern::Present
        } else if let Some(capture) = capture_name(value) {
            if !captured_by_every_path(builder, yaml_path, value, capture, paths) {
                return None;
            }
            ValuePattern::Capture(capture.to_owned())
        } else {
            ValuePattern::Exact(value.clone())
        };
        patterns.push(pattern);
    }
    Some(HeaderCondition {
        name: header.as_str().to_owned(),
        values: patterns,
    })
}

/// `"{tenant}"` → `tenant`.
fn capture_name(value: &str) -> Option<&str> {
    value.strip_prefix('{').and_then(|v| v.strip_suffix('}'))
}

/// Whether every path of the rule captures `capture`; reports it at `yaml_path` if not.
fn captured_by_every_path(
    builder: &mut Builder,
    yaml_path: &str,
    value: &str,
    capture: &str,
    paths: &[PathGlob],
) -> bool {
    let missing: Vec<&str> = paths
        .iter()
        .filter(|glob| !glob.capture_names().any(|n| n == capture))
        .map(PathGlob::as_str)
        .collect();
    if paths.is_empty() {
        builder.error(
            yaml_path,
            format!("\"{value}\" refers to a path capture, but the rule has no paths"),
        );
        return false;
    }
    if !missing.is_empty() {
        builder.error(
            yaml_path,
            format!(
                "\"{value}\" refers to a path capture that path \"{}\" does not have",
                missing.join("\", \"")
            ),
        );
        return false;
    }
    true
}

/// A path glob whose literal segments are canonical, so it can match canonical paths.
pub fn parse_glob(text: &str) -> Result<PathGlob, String> {
    let glob = PathGlob::parse(text)?;
    // Stand a plain segment in for each wildcard, and check the rest is canonical.
    let probe: String = glob
        .segments()
        .iter()
        .map(|segment| match segment {
            Segment::Literal(literal) => format!("/{literal}"),
            Segment::Single(_) | Segment::Rest => "/x".to_owned(),
        })
        .collect();
    match crate::path::canonical(&probe) {
        Ok(canonical) if canonical == probe => Ok(glob),
        Ok(_) => Err(format!(
            "path \"{text}\" would never match: requests are matched in canonical form (no //, . or .. segments, no ;parameters, percent-encoding only where needed, upper-case hex)"
        )),
        Err(err) => Err(format!("path \"{text}\": {err}")),
    }
}

/// Methods are case-sensitive tokens; `get` is surely meant as `GET`.
fn check_method(method: &str) -> Result<(), String> {
    let token = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("\"{method}\" is not an HTTP method"));
    }
    let upper = method.to_ascii_uppercase();
    if upper != method
        && [
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT",
        ]
        .contains(&upper.as_str())
    {
        return Err(format!(
            "methods are case-sensitive: \"{method}\" would never match; write \"{upper}\""
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.yaml", "a.yaml"));
        assert!(wildcard_match("*.yaml", ".yaml"));
        assert!(!wildcard_match("*.yaml", "a.yml"));
        assert!(wildcard_match("p?.y*", "p1.yaml"));
        assert!(wildcard_match("*a*b", "xxaxxb"));
        assert!(!wildcard_match("*a*b", "xxaxxbc"));
    }

    #[test]
    fn globs_must_be_canonical() {
        assert!(parse_glob("/public/**").is_ok());
        assert!(parse_glob("/tenants/{t}/x").is_ok());
        assert!(parse_glob("/a//b").unwrap_err().contains("canonical"));
        assert!(parse_glob("/a/%2e%2e/b").unwrap_err().contains("canonical"));
        assert!(parse_glob("/a%2Fb").unwrap_err().contains("encoded slash"));
    }

    #[test]
    fn list_files() {
        let (set, errors) = parse_list_file(
            Path::new("l.txt"),
            "# office\n10.0.0.0/8\n\n  192.0.2.1 # one host\n2001:db8::/32\n",
        );
        assert!(errors.is_empty());
        assert_eq!(set.prefixes(), 3);
        let (_, errors) = parse_list_file(Path::new("l.txt"), "10.0.0.0/8\n  nope\n");
        assert_eq!(
            errors[0].to_string(),
            "l.txt:2:3: \"nope\" is not an IP network, e.g. \"10.0.0.0/8\" or \"2001:db8::/32\""
        );
    }

    #[test]
    fn methods() {
        assert!(check_method("GET").is_ok());
        assert!(check_method("PURGE").is_ok());
        assert!(check_method("get").unwrap_err().contains("write \"GET\""));
        assert!(check_method("G T").is_err());
    }
}
