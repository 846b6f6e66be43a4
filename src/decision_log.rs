//! The decision log: one JSON line per request the gateway decided (and per request it
//! refused before deciding), to the process log, stdout or a file. Allowed requests may
//! be sampled; denials and errors are always logged. A line names the principal by its
//! subject, never a token or key.
//!
//! This module knows the line's fields and where it goes; the request flow that fills
//! them is `proxy`'s.

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use crate::config::{DecisionSink, LogSettings};
use crate::json;
use crate::policy::{Decision, Effect, PathGlob, Principal};

/// What a decision-log line says of a decided request.
pub struct Decided<'a> {
    /// The request id (also in the response and sent upstream).
    pub request_id: &'a http::HeaderValue,
    /// The route it took.
    pub route: &'a str,
    /// Its method.
    pub method: &'a str,
    /// The canonical path decided on.
    pub path: &'a str,
    /// The client address the policy saw.
    pub client_ip: IpAddr,
    /// Who called, when identified.
    pub principal: Option<&'a Principal>,
}

/// What a decision-log line says of a request refused before it could be decided. (Its
/// path is not logged: it had no canonical form, or none was needed to refuse it.)
pub struct Refused<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The route, when one was chosen.
    pub route: Option<&'a str>,
    /// Its method.
    pub method: &'a str,
    /// The socket peer.
    pub peer: IpAddr,
    /// The reason code of the refusal.
    pub reason: &'a str,
}

/// Where lines go, and how many allowed requests are logged.
pub struct DecisionLog {
    sink: Sink,
    sample_allows: f64,
    /// `log.redact_paths`.
    redact_paths: Vec<PathGlob>,
}

enum Sink {
    /// The process log, through `tracing`.
    Log,
    /// Lines for the writer thread (stdout or a file): a full disk or a reader that stops
    /// reading a pipe must not stall request handling, so lines that do not fit are
    /// dropped and counted.
    Writer {
        lines: SyncSender<String>,
        dropped: AtomicU64,
    },
}

/// `path` with the segments that the first glob of `globs` to match captures written as
/// `{name}`, so that secrets in paths stay out of the log.
fn redact<'p>(globs: &[PathGlob], path: &'p str) -> Cow<'p, str> {
    let Some(captures) = globs.iter().find_map(|glob| glob.matches(path)) else {
        return Cow::Borrowed(path);
    };
    // A capture is a slice of `path` itself: its place is its offset. (Should one ever
    // not be, nothing of the path is logged: a secret must not slip through.)
    let places: Option<Vec<(usize, usize, &str)>> = (captures.into_iter())
        .map(|(name, segment)| {
            let start = (segment.as_ptr() as usize).checked_sub(path.as_ptr() as usize)?;
            let end = start + segment.len();
            (end <= path.len()).then_some((start, end, name))
        })
        .collect();
    let Some(mut places) = places else {
        return Cow::Borrowed("{redacted}");
    };
    places.sort_unstable();
    let mut redacted = String::with_capacity(path.len());
    let mut at = 0;
    for (start, end, name) in places {
        redacted.push_str(path.get(at..start).unwrap_or_default());
        redacted.push('{');
        redacted.push_str(name);
        redacted.push('}');
        at = end;
    }
    redacted.push_str(path.get(at..).unwrap_or_default());
    Cow::Owned(redacted)
}

/// Lines waiting for the writer thread, at most.
const QUEUE: usize = 8192;

impl DecisionLog {
    /// Opens the log `settings` describe: a file is created if missing and appended to.
    pub fn open(settings: &LogSettings) -> Result<DecisionLog, String> {
        let sink = match &settings.decisions {
            DecisionSink::Log => Sink::Log,
            DecisionSink::Stdout => writer(Box::new(std::io::stdout()), "stdout")?,
            DecisionSink::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|err| {
                        format!("cannot open the decision log \"{}\": {err}", path.display())
                    })?;
                writer(Box::new(file), &path.display().to_string())?
            }
        };
        Ok(DecisionLog {
            sink,
            sample_allows: settings.sample_allows,
            redact_paths: settings.redact_paths.clone(),
        })
    }

    /// Logs a decided request (an allowed one as sampled), with the full trace at debug
    /// when the sink is the process log.
    pub fn decided(&self, request: &Decided<'_>, decision: &Decision, took: Duration) {
        if decision.effect == Effect::Allow && !sampled(self.sample_allows) {
            return;
        }
        // The line is built only when someone reads it: this runs on every request.
        if matches!(self.sink, Sink::Log)
            && !tracing::enabled!(target: "portcullis::decision", tracing::Level::INFO)
        {
            return;
        }
        let request_id = request.request_id.to_str().unwrap_or("");
        let path = redact(&self.redact_paths, request.path);
        let path = path.as_ref();
        let audit: Vec<String> = decision
            .audit_matches()
            .map(|step| format!("{}:would_{}", step.rule, step.effect.as_str()))
            .collect();
        let principal = request
            .principal
            .map(|principal| principal.subject.as_str());
        let rule = decision.rule.as_ref().map(|rule| &*rule.0);
        match &self.sink {
            Sink::Log => {
                tracing::info!(
                    target: "portcullis::decision",
                    decision = decision.effect.as_str(),
                    request.id = request_id,
                    route.id = request.route,
                    http.method = request.method,
                    url.path = path,
                    client.ip = %request.client_ip,
                    principal.id = principal,
                    decision.reason = decision.reason.code(),
                    rule.id = rule,
                    audit = audit.join(","),
                    decision.micros = took.as_micros() as u64,
                    "decision"
                );
                if tracing::enabled!(target: "portcullis::decision", tracing::Level::DEBUG) {
                    for step in &decision.trace {
                        tracing::debug!(
                            target: "portcullis::decision",
                            outcome = %step.outcome,
                            request.id = request_id,
                            rule.id = %step.rule,
                            rule.effect = step.effect.as_str(),
                            rule.mode = step.mode.as_str(),
                            "rule considered"
                        );
                    }
                }
            }
            sink => {
                let mut line = String::with_capacity(512);
                let mut object = json::Object::new(&mut line);
                object
                    .str("timestamp", &timestamp())
                    .str("decision", decision.effect.as_str())
                    .str("request.id", request_id)
                    .str("route.id", request.route)
                    .str("http.method", request.method)
                    .str("url.path", path)
                    .display("client.ip", request.client_ip)
                    .str_or_null("principal.id", principal)
                    .str("decision.reason", decision.reason.code())
                    .str_or_null("rule.id", rule)
                    .array("audit", |items| {
                        for step in decision.audit_matches() {
                            let effect = step.effect.as_str();
                            items.str_parts(&[&step.rule.0, ":would_", effect]);
                        }
                    })
                    .u64("decision.micros", took.as_micros() as u64)
                    .array("trace", |items| {
                        for step in &decision.trace {
                            let mut item = items.object();
                            item.str("rule", &step.rule.0)
                                .str("effect", step.effect.as_str())
                                .str("mode", step.mode.as_str())
                                .display("outcome", &step.outcome);
                            item.finish();
                        }
                    });
                object.finish();
                write_line(sink, line);
            }
        }
    }

    /// Logs a request refused before it was decided.
    pub fn refused(&self, request: &Refused<'_>) {
        match &self.sink {
            Sink::Log => tracing::info!(
                target: "portcullis::decision",
                decision = "error",
                request.id = request.request_id,
                route.id = request.route,
                http.method = request.method,
                client.ip = %request.peer.to_canonical(),
                decision.reason = request.reason,
                "decision"
            ),
            sink => {
                let mut line = String::with_capacity(256);
                let mut object = json::Object::new(&mut line);
                object
                    .str("timestamp", &timestamp())
                    .str("decision", "error")
                    .str("request.id", request.request_id)
                    .str_or_null("route.id", request.route)
                    .str("http.method", request.method)
                    .display("client.ip", request.peer.to_canonical())
                    .str("decision.reason", request.reason);
                object.finish();
                write_line(sink, line);
            }
        }
    }
}

/// Whether this allowed request is among the logged share.
fn sampled(share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    // The top 53 bits of a random word, as a fraction in [0, 1).
    let draw = (crate::telemetry::next_random() >> 11) as f64 / (1u64 << 53) as f64;
    draw < share
}

/// A thread writing each line it is sent to `out` (the process's stdout, or a file
/// opened for appending: one write per line, so lines never interleave). It ends when the
/// sink is dropped, with the state that used it.
fn writer(mut out: Box<dyn Write + Send>, name: &str) -> Result<Sink, String> {
    let (lines, queued) = std::sync::mpsc::sync_channel::<String>(QUEUE);
    let what = name.to_owned();
    std::thread::Builder::new()
        .name("decision-log".to_owned())
        .spawn(move || {
            let mut failing = false;
            for line in queued {
                let written = out.write_all(line.as_bytes()).and_then(|()| out.flush());
                // One warning when writing starts failing, one when it works again.
                match written {
                    Err(err) if !failing => {
                        failing = true;
                        tracing::warn!(error = %err, log = %what, "cannot write the decision log; dropping lines until it works again");
                    }
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!(log = %what, "writing the decision log again");
                    }
                    _ => {}
                }
            }
        })
        .map_err(|err| format!("cannot start the decision-log writer: {err}"))?;
    Ok(Sink::Writer {
        lines,
        dropped: AtomicU64::new(0),
    })
}

fn write_line(sink: &Sink, mut line: String) {
    let Sink::Writer { lines, dropped } = sink else {
        return;
    };
    line.push('\n');
    match lines.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            // A warning for the first line dropped, then one per 10,000.
            if dropped.fetch_add(1, Ordering::Relaxed) % 10_000 == 0 {
                tracing::warn!("the decision log cannot keep up; dropping lines");
            }
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

/// Now, RFC 3339 in UTC with milliseconds.
fn timestamp() -> String {
    let now = SystemTime::now();
    let millis = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_millis());
    let seconds = crate::telemetry::rfc3339(now);
    format!("{}.{millis:03}Z", seconds.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_are_sampled_at_the_share_asked() {
        let logged = |share: f64| (0..10_000).filter(|_| sampled(share)).count();
        assert_eq!(logged(0.0), 0);
        assert_eq!(logged(1.0), 10_000);
        // 10,000 draws at one in ten: 1,000 expected, with a standard deviation of 30.
        let tenth = logged(0.1);
        assert!((700..1_300).contains(&tenth), "{tenth}");
    }

    #[test]
    fn captured_segments_are_left_out_of_logged_paths() {
        let globs: Vec<PathGlob> = ["/reset/{token}", "/invites/*/{code}/**"]
            .iter()
            .map(|glob| PathGlob::parse(glob).unwrap())
            .collect();
        for (path, logged) in [
            ("/reset/s3cr3t", "/reset/{token}"),
            ("/invites/team/abc123/accept", "/invites/team/{code}/accept"),
            ("/invites/team/abc123", "/invites/team/{code}"),
            ("/reset", "/reset"),
            ("/reset/s3cr3t/more", "/reset/s3cr3t/more"),
            ("/other/s3cr3t", "/other/s3cr3t"),
        ] {
            assert_eq!(redact(&globs, path), logged, "{path}");
        }
        assert_eq!(redact(&[], "/reset/s3cr3t"), "/reset/s3cr3t");
    }
}
