//! `portcullis replay`: decision-log lines decided again under a candidate config, and
//! what would change. Each line is turned back into the request it records (method, host,
//! path, client address, country, certificate, the headers and claims rules read, the
//! caller as identified) and decided the way `explain` decides one.
//!
//! Identity is taken from the log, not replayed: a line whose credentials were refused is
//! counted apart. A line that lacks something the candidate's rules read (a claim, a
//! header left out of the log, a country) is counted as not decidable, never guessed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::net::IpAddr;

use serde::Deserialize;

use crate::config::Config;
use crate::identity::Identity;
use crate::policy::{ClientCertificate, Condition, Country, Principal, REFUSED_CREDENTIAL_CODES};
use crate::proxy::offline::{Batch, Caller, Synthetic, Verdict};

/// Request ids kept as examples of each group of changes.
const EXAMPLES: usize = 3;

/// The longest line read; a decision-log line is a few KiB at most.
const MAX_LINE: usize = 1024 * 1024;

/// A decision-log line, as far as deciding it again needs (`portcullis schema
/// decision-log`). Strings are borrowed from the line unless they hold escapes.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    decision: Cow<'a, str>,
    #[serde(rename = "request.id", borrow)]
    request_id: Cow<'a, str>,
    #[serde(rename = "route.id", borrow)]
    route: Option<Cow<'a, str>>,
    #[serde(rename = "http.method", borrow)]
    method: Cow<'a, str>,
    #[serde(rename = "url.domain", borrow)]
    host: Option<Cow<'a, str>>,
    #[serde(rename = "url.path", borrow)]
    path: Option<Cow<'a, str>>,
    #[serde(rename = "url.destination", borrow)]
    destination: Option<Cow<'a, str>>,
    #[serde(rename = "client.ip")]
    client_ip: IpAddr,
    #[serde(rename = "client.geo.country_iso_code", borrow)]
    country: Option<Cow<'a, str>>,
    #[serde(rename = "client.certificate")]
    certificate: Option<Certificate>,
    #[serde(rename = "principal.id")]
    subject: Option<String>,
    #[serde(rename = "principal.issuer")]
    issuer: Option<String>,
    #[serde(rename = "principal.roles")]
    roles: Vec<String>,
    #[serde(rename = "principal.scopes")]
    scopes: Vec<String>,
    #[serde(rename = "principal.claims")]
    claims: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "http.request.headers")]
    headers: BTreeMap<String, Vec<String>>,
    #[serde(rename = "decision.reason", borrow)]
    reason: Cow<'a, str>,
    #[serde(rename = "rule.id", borrow)]
    rule: Option<Cow<'a, str>>,
}

/// `client.certificate`.
#[derive(Deserialize)]
struct Certificate {
    subject: Option<String>,
    dns: Vec<String>,
    uris: Vec<String>,
    fingerprint: String,
}

/// What a request came to: `allow`, `deny` or `error`, the reason and the rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Outcome {
    /// `allow`, `deny`, or `error` (refused before any rule).
    pub decision: String,
    /// The reason code.
    pub reason: String,
    /// The rule that decided, if one did.
    pub rule: Option<String>,
}

/// How a decision changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Allowed before, not now.
    AllowToDeny,
    /// Not allowed before, allowed now.
    DenyToAllow,
    /// As allowed as before, for another reason or by another rule.
    ReasonOrRule,
}

impl Change {
    /// The name in reports and `--fail-on`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::AllowToDeny => "allow_to_deny",
            Change::DenyToAllow => "deny_to_allow",
            Change::ReasonOrRule => "reason_or_rule",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Change::AllowToDeny => "allow → deny",
            Change::DenyToAllow => "deny → allow",
            Change::ReasonOrRule => "reason or rule changed",
        }
    }
}

/// Changes of one kind, on one route, from one outcome to another.
#[derive(Debug, Default)]
pub struct Group {
    /// How many lines.
    pub count: u64,
    /// The first few lines' request ids.
    pub examples: Vec<String>,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines read.
    pub lines: u64,
    /// Lines that are not decision-log lines (process log lines, blank ones, others).
    pub not_decisions: u64,
    /// Lines that look like decision-log lines but do not read as one: another version's
    /// format, a line cut short, bytes that are not UTF-8.
    pub unreadable: u64,
    /// Requests refused before any rule (`decision: error`): not decided again.
    pub refused_before: u64,
    /// Requests whose credentials were refused: identity is not replayed.
    pub credentials_refused: u64,
    /// Lines that could not be decided again, by why.
    pub undecidable: BTreeMap<String, u64>,
    /// Lines decided again.
    pub replayed: u64,
    /// Of those, the ones decided as before.
    pub unchanged: u64,
    /// The others, grouped.
    pub changes: BTreeMap<(Change, String, Outcome, Outcome), Group>,
}

impl Report {
    /// How many lines changed in this way.
    pub fn changed(&self, change: Change) -> u64 {
        (self.changes.iter())
            .filter(|((kind, ..), _)| *kind == change)
            .map(|(_, group)| group.count)
            .sum()
    }

    /// Lines that could not be decided again.
    pub fn undecidable_count(&self) -> u64 {
        self.undecidable.values().sum()
    }

    /// Why a CI gate cannot trust this replay, if it cannot: lines it could not judge, or
    /// none it could.
    pub fn doubt(&self) -> Option<String> {
        let undecidable = self.undecidable_count();
        if undecidable > 0 {
            Some(format!(
                "{undecidable} line{} could not be decided again",
                plural(undecidable)
            ))
        } else if self.unreadable > 0 {
            Some(format!(
                "{} line{} could not be read",
                self.unreadable,
                plural(self.unreadable)
            ))
        } else if self.replayed == 0 {
            Some("no line was decided again".to_owned())
        } else {
            None
        }
    }
}

/// Decides decision-log lines again under one config.
pub struct Replay<'c> {
    config: &'c Config,
    batch: Batch<'c>,
    report: Report,
}

impl<'c> Replay<'c> {
    /// A replay under `config`, whose callers (those the log names none for, that showed a
    /// certificate) are identified with `identity`.
    pub fn new(config: &'c Config, identity: &'c Identity) -> Replay<'c> {
        Replay {
            config,
            batch: Batch::new(config, identity),
            report: Report::default(),
        }
    }

    /// Reads every line of `input`; an error says where reading failed. A line longer
    /// than [`MAX_LINE`] or not UTF-8 is counted, not read.
    pub fn read(&mut self, input: impl BufRead, name: &str) -> Result<(), String> {
        let mut input = input;
        let mut bytes = Vec::new();
        let mut number = 0u64;
        loop {
            bytes.clear();
            number += 1;
            let read = (&mut input)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut bytes)
                .map_err(|err| format!("{name}: cannot read line {number}: {err}"))?;
            if read == 0 {
                return Ok(());
            }
            if bytes.len() == MAX_LINE && bytes.last() != Some(&b'\n') {
                self.report.lines += 1;
                self.report.unreadable += 1;
                skip_line(&mut input)
                    .map_err(|err| format!("{name}: cannot read line {number}: {err}"))?;
                continue;
            }
            match std::str::from_utf8(&bytes) {
                Ok(text) => self.line(text),
                Err(_) => {
                    self.report.lines += 1;
                    self.report.unreadable += 1;
                }
            }
        }
    }

    /// Decides one line again, and counts what became of it.
    pub fn line(&mut self, text: &str) {
        self.report.lines += 1;
        let text = text.trim_end();
        // Most lines that are not decisions (the process log beside them on stderr) are
        // told apart without parsing them.
        if !text.starts_with('{') || !text.contains("\"decision.reason\"") {
            self.report.not_decisions += 1;
            return;
        }
        let Ok(line) = serde_json::from_str::<Line<'_>>(text) else {
            self.report.unreadable += 1;
            return;
        };
        match self.decide_again(&line) {
            Ok(now) => self.compare(&line, now),
            Err(Skipped::RefusedBefore) => self.report.refused_before += 1,
            Err(Skipped::CredentialsRefused) => self.report.credentials_refused += 1,
            Err(Skipped::Undecidable(why)) => *self.report.undecidable.entry(why).or_default() += 1,
        }
    }

    /// What was found.
    pub fn finish(self) -> Report {
        self.report
    }

    fn decide_again(&mut self, line: &Line<'_>) -> Result<Outcome, Skipped> {
        if line.decision == "error" {
            return Err(Skipped::RefusedBefore);
        }
        if REFUSED_CREDENTIAL_CODES.contains(&&*line.reason) {
            return Err(Skipped::CredentialsRefused);
        }
        let undecidable = |why: &str| Skipped::Undecidable(why.to_owned());
        let path = line
            .path
            .as_deref()
            .ok_or_else(|| undecidable("the line has no path"))?;
        // A canonical path spells `{` as %7B: one in the log is log.redact_paths' doing.
        if path.contains('{') || line.destination.as_deref().is_some_and(|d| d.contains('{')) {
            return Err(undecidable("log.redact_paths left part of the path out"));
        }
        // As the gateway took it from its database or a CDN's header.
        let country = match line.country.as_deref() {
            None => None,
            Some(code) => Some(
                Country::from_reported(code.as_bytes())
                    .ok_or_else(|| undecidable("the line's country is not a country code"))?,
            ),
        };
        let url = match line.host.as_deref() {
            Some(host) => format!("http://{}{path}", bracketed(host)),
            None => path.to_owned(),
        };
        let mut headers: Vec<(String, String)> = (line.headers.iter())
            .flat_map(|(name, values)| values.iter().map(|value| (name.clone(), value.clone())))
            .collect();
        if let Some(destination) = line.destination.as_deref() {
            let written = match line.host.as_deref() {
                Some(host) => format!("http://{}{destination}", bracketed(host)),
                None => destination.to_owned(),
            };
            headers.push(("destination".to_owned(), written));
        }
        let caller = match &line.subject {
            Some(subject) => Caller::Simulated(Principal {
                subject: subject.clone(),
                issuer: line.issuer.clone().unwrap_or_default(),
                roles: line.roles.clone(),
                scopes: line.scopes.clone(),
                claims: (line.claims.iter())
                    .filter(|(_, value)| !value.is_null())
                    .map(|(name, value)| (name.clone(), crate::identity::claim_value(value)))
                    .collect(),
            }),
            None => Caller::FromRequest,
        };
        let client_cert = line.certificate.as_ref().map(|cert| ClientCertificate {
            subject: cert.subject.clone(),
            dns_names: cert.dns.clone(),
            uris: cert.uris.clone(),
            fingerprint: cert.fingerprint.clone(),
        });
        let offline = self.batch.decide(&Synthetic {
            method: &line.method,
            url: &url,
            peer: line.client_ip,
            headers: &headers,
            caller: &caller,
            client_cert: client_cert.as_ref(),
            country,
        });
        match offline.verdict {
            Verdict::Refused { reason, .. } => Ok(Outcome {
                decision: "error".to_owned(),
                reason: reason.to_owned(),
                rule: None,
            }),
            Verdict::Decided(decision) => {
                // Every rule that fit was read: each must have had what it reads.
                for step in &decision.trace {
                    if let Some(rule) = self.config.policy.rules().get(step.position)
                        && let Some(missing) = missing(rule, line)
                    {
                        return Err(Skipped::Undecidable(missing));
                    }
                }
                Ok(Outcome {
                    decision: decision.effect.as_str().to_owned(),
                    reason: decision.reason.code().to_owned(),
                    rule: decision.rule.map(|rule| rule.0.to_owned()),
                })
            }
        }
    }

    fn compare(&mut self, line: &Line<'_>, now: Outcome) {
        self.report.replayed += 1;
        let before = Outcome {
            decision: line.decision.clone().into_owned(),
            reason: line.reason.clone().into_owned(),
            rule: line.rule.as_deref().map(str::to_owned),
        };
        if before == now {
            self.report.unchanged += 1;
            return;
        }
        let change = match (before.decision == "allow", now.decision == "allow") {
            (true, false) => Change::AllowToDeny,
            (false, true) => Change::DenyToAllow,
            _ => Change::ReasonOrRule,
        };
        let route = line.route.as_deref().unwrap_or("-").to_owned();
        let group = self
            .report
            .changes
            .entry((change, route, before, now))
            .or_default();
        group.count += 1;
        if group.examples.len() < EXAMPLES {
            group.examples.push(line.request_id.clone().into_owned());
        }
    }
}

/// Why a line was not decided again.
enum Skipped {
    RefusedBefore,
    CredentialsRefused,
    Undecidable(String),
}

/// Reads past the rest of an overlong line, a bounded piece at a time.
fn skip_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|byte| *byte == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                input.consume(all);
            }
        }
    }
}

/// What `rule` reads that `line` does not record, if anything.
fn missing(rule: &crate::policy::Rule, line: &Line<'_>) -> Option<String> {
    let header = |name: &str| {
        (!line.headers.contains_key(name)).then(|| {
            format!("the log has no value for header {name} (a credential, or in log.redact_headers, or no rule read it then)")
        })
    };
    if let Some(missing) = rule.headers.iter().find_map(|h| header(&h.name)) {
        return Some(missing);
    }
    rule.when.iter().find_map(|condition| match condition {
        Condition::Header(h) => header(&h.name),
        Condition::Claims(claims) if line.subject.is_some() => (claims.claims.iter())
            .find(|(name, _)| !line.claims.contains_key(name))
            .map(|(name, _)| {
                format!("the log has no value for claim {name} (no rule read it then)")
            }),
        // A country that could not be found out was decided on as such (fail closed).
        Condition::Countries(_) | Condition::NotCountries(_)
            if line.country.is_none() && line.reason != "country_denied" =>
        {
            Some("the log has no country (no rule named countries then)".to_owned())
        }
        _ => None,
    })
}

/// A host as a URL writes it: an IPv6 address in brackets.
fn bracketed(host: &str) -> Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    }
}

/// The report as text, for a person.
pub fn text(report: &Report, candidate: &str) -> String {
    let mut text = format!(
        "{} decision{} decided again under {candidate}: {} unchanged, {} changed\n",
        report.replayed,
        plural(report.replayed),
        report.unchanged,
        report.replayed - report.unchanged
    );
    for change in [
        Change::AllowToDeny,
        Change::DenyToAllow,
        Change::ReasonOrRule,
    ] {
        let count = report.changed(change);
        if count == 0 {
            continue;
        }
        text.push_str(&format!("\n{} ({count}):\n", change.title()));
        for ((kind, route, before, now), group) in &report.changes {
            if *kind != change {
                continue;
            }
            text.push_str(&format!(
                "  {:>6}  route {route}: {} → {}\n          e.g. {}\n",
                group.count,
                described(before),
                described(now),
                group.examples.join(", ")
            ));
        }
    }
    let skipped = [
        (
            report.refused_before,
            "refused before any rule (errors): not decided again",
        ),
        (
            report.credentials_refused,
            "credentials refused: identity is not replayed",
        ),
        (report.not_decisions, "not decision-log lines"),
        (
            report.unreadable,
            "unreadable: not this version's decision-log format, cut short, or not UTF-8",
        ),
    ];
    if skipped.iter().any(|(count, _)| *count > 0) || !report.undecidable.is_empty() {
        text.push_str("\nnot decided again:\n");
        for (count, what) in skipped {
            if count > 0 {
                text.push_str(&format!("  {count:>6}  {what}\n"));
            }
        }
        for (why, count) in &report.undecidable {
            text.push_str(&format!("  {count:>6}  cannot be decided again: {why}\n"));
        }
    }
    text
}

/// "deny missing_scope by orders-write", "allow by orders-read", "error no_route".
fn described(outcome: &Outcome) -> String {
    let mut text = match outcome.decision.as_str() {
        "allow" => "allow".to_owned(),
        decision => format!("{decision} {}", outcome.reason),
    };
    if let Some(rule) = &outcome.rule {
        text.push_str(&format!(" by {rule}"));
    }
    text
}

/// The report as JSON, for tools.
pub fn json(report: &Report, candidate: &str) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = (report.changes.iter())
        .map(|((change, route, before, now), group)| {
            serde_json::json!({
                "change": change.as_str(),
                "route": route,
                "from": before,
                "to": now,
                "count": group.count,
                "examples": group.examples,
            })
        })
        .collect();
    serde_json::json!({
        "candidate": candidate,
        "lines": report.lines,
        "replayed": report.replayed,
        "unchanged": report.unchanged,
        "changed": {
            "allow_to_deny": report.changed(Change::AllowToDeny),
            "deny_to_allow": report.changed(Change::DenyToAllow),
            "reason_or_rule": report.changed(Change::ReasonOrRule),
        },
        "groups": groups,
        "not_replayed": {
            "refused_before_deciding": report.refused_before,
            "credentials_refused": report.credentials_refused,
            "not_decision_lines": report.not_decisions,
            "unreadable": report.unreadable,
        },
        "undecidable": {
            "count": report.undecidable_count(),
            "why": report.undecidable,
        },
    })
}

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}
