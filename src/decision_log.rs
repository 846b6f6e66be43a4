//! The decision log: one JSON line per request the gateway decided (and per request it
//! refused before deciding), with the same fields whichever sink it goes to: stderr
//! beside the process log, stdout or a file. Allowed requests may be sampled; denials and
//! errors are always logged. A line holds what deciding the request again needs (see
//! [`schema`]), and names the principal by its subject, never a token, key or cookie.
//!
//! A request formats its line straight into its thread's batch, a buffer only that
//! thread fills. One writer thread takes each batch when it reaches 64 KiB, every 100 ms,
//! before a reload switches sinks, and at shutdown, and writes it with one write. When the
//! writer falls behind (a full disk, a pipe no one reads), whole batches are dropped and
//! counted, unless `log.on_full: block` asks requests to wait for it. Batches enter
//! [`recent`], the ring the admin listener looks decisions up in, as they leave their
//! thread, before they are written.
//!
//! This module knows the line's fields and where it goes; the request flow that fills
//! them is `proxy`'s.

pub mod recent;
mod schema;

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderName;
use prometheus::IntCounter;

pub use schema::schema;

use crate::config::{Config, DecisionSink, LogSettings, OnFull, TokenSource};
use crate::json;
use crate::policy::{
    Address, ClaimValue, ClientCertificate, Country, Decision, Effect, PathGlob, Principal,
};
use recent::{Filter, Recent};

/// What a decision-log line says of a decided request.
pub struct Decided<'a> {
    /// The request id (also in the response and sent upstream).
    pub request_id: &'a http::HeaderValue,
    /// The route it took.
    pub route: &'a str,
    /// Its method.
    pub method: &'a str,
    /// The host decided on, lower-case, without port; `None` for an HTTP/1.0 request that
    /// named none.
    pub host: Option<&'a str>,
    /// The canonical path decided on.
    pub path: &'a str,
    /// A WebDAV `MOVE` or `COPY`'s canonical destination path, decided on too.
    pub destination: Option<&'a str>,
    /// The client address the policy saw.
    pub client_ip: IpAddr,
    /// The client's country, when a rule named countries and it was found out.
    pub country: Option<Country>,
    /// The client certificate the connection showed, verified.
    pub client_cert: Option<&'a ClientCertificate>,
    /// Who called, when identified.
    pub principal: Option<&'a Principal>,
    /// The request's headers as the policy saw them (identity headers removed).
    pub headers: &'a http::HeaderMap,
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

/// What a line records of a request beyond its head, so that it can be decided again:
/// the values of the headers rules read and the caller's claims rules compare, minus
/// what must never be logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Header names whose values are logged, sorted.
    pub headers: Vec<HeaderName>,
    /// Claim names whose values are logged, sorted.
    pub claims: Vec<String>,
}

/// Headers that carry credentials wherever they are configured: never logged.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

thread_local! {
    /// The sentence of the reason being logged, a buffer per thread.
    static SENTENCE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl Recorded {
    /// What lines record under `config`: the headers its rules read, except those in
    /// `log.redact_headers` and those credentials come in (`Authorization`, `Cookie`, the
    /// API-key header, a token's header); the claims its rules compare.
    pub fn of(config: &Config) -> Recorded {
        let mut secret: Vec<&str> = CREDENTIAL_HEADERS.to_vec();
        secret.extend(config.log.redact_headers.iter().map(String::as_str));
        if let Some(keys) = &config.identity.api_keys {
            secret.push(keys.header.as_str());
        }
        for source in config.identity.jwt.iter().flat_map(|jwt| &jwt.sources) {
            if let TokenSource::Header { name, .. } = source {
                secret.push(name.as_str());
            }
        }
        Recorded {
            // Parsed once here, so that no line parses a name to look its values up.
            headers: (config.policy.header_names().iter())
                .filter(|name| !secret.contains(&name.as_str()))
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            claims: config.policy.claim_names().to_vec(),
        }
    }
}

/// The decision log of one load of the config: what is logged, and the writer, which
/// outlives reloads.
pub struct DecisionLog {
    writer: Arc<Writer>,
    /// False for `log.decisions: off` with `log.recent: 0`: no line is formatted.
    on: bool,
    /// `log.recent`, given to the ring when this load starts serving.
    recent: usize,
    /// The header values and claims lines record.
    recorded: Recorded,
    on_full: OnFull,
    sample_allows: f64,
    /// `log.redact_paths`.
    redact_paths: Vec<PathGlob>,
    /// The sink this load opened, handed to the writer when the load starts serving.
    opened: Mutex<Option<Out>>,
}

/// A batch is handed to the writer once it holds this much.
const BATCH: usize = 64 * 1024;

/// The writer takes every thread's batch at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Full batches waiting for the writer, at most (4 MiB of lines).
const QUEUED: usize = 64;

/// Batches, one per thread that logs (threads past this many share).
const SHARDS: usize = 64;

/// Where lines are written.
struct Out {
    name: String,
    /// `None` for `log.decisions: off`: lines only go to the ring.
    write: Option<Box<dyn Write + Send>>,
}

/// The lines one thread has formatted and the writer has not taken yet.
#[derive(Default)]
struct Batch {
    text: String,
    lines: u64,
}

/// A batch the ring of recent decisions holds already, on its way to the sink.
#[derive(Default)]
struct Kept {
    text: Arc<String>,
    lines: u64,
}

/// One thread's batch, on a cache line of its own: only that thread and, every 100 ms,
/// the writer touch it.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Batch>);

/// What requests and the writer thread share.
struct Shared {
    shards: Box<[Shard]>,
    /// Sinks to switch to once every line before is written (reloads), oldest first.
    switch: Mutex<Vec<Out>>,
    closing: AtomicBool,
    /// `portcullis_decision_log_dropped_total`.
    dropped: IntCounter,
    /// The lines logged last.
    recent: Recent,
}

/// The writer thread and the way to it.
struct Writer {
    shared: Arc<Shared>,
    batches: SyncSender<Kept>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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

impl DecisionLog {
    /// Opens the sink `settings` name (a file is created if missing and appended to). A
    /// reload passes the log it replaces, whose writer thread it keeps; the first load
    /// starts one, counting dropped lines in `dropped`.
    pub fn open(
        settings: &LogSettings,
        recorded: Recorded,
        previous: Option<&DecisionLog>,
        dropped: &IntCounter,
    ) -> Result<DecisionLog, String> {
        let opened = match &settings.decisions {
            DecisionSink::Off => Out {
                name: "off".to_owned(),
                write: None,
            },
            DecisionSink::Log => Out {
                name: "stderr".to_owned(),
                write: Some(Box::new(std::io::stderr())),
            },
            DecisionSink::Stdout => Out {
                name: "stdout".to_owned(),
                write: Some(Box::new(std::io::stdout())),
            },
            DecisionSink::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|err| {
                        format!("cannot open the decision log \"{}\": {err}", path.display())
                    })?;
                Out {
                    name: path.display().to_string(),
                    write: Some(Box::new(file)),
                }
            }
        };
        let writer = match previous {
            Some(previous) => Arc::clone(&previous.writer),
            None => Writer::start(dropped.clone())?,
        };
        Ok(DecisionLog {
            writer,
            on: opened.write.is_some() || settings.recent > 0,
            recent: settings.recent,
            recorded,
            on_full: settings.on_full,
            sample_allows: settings.sample_allows,
            redact_paths: settings.redact_paths.clone(),
            opened: Mutex::new(Some(opened)),
        })
    }

    /// Makes this load's sink the one written to, once every line logged before is
    /// written to the sink it replaces. Called when the load starts serving.
    pub fn serving(&self) {
        self.writer.shared.recent.resize(self.recent);
        if let Some(out) = lock(&self.opened).take() {
            lock(&self.writer.shared.switch).push(out);
            self.writer.wake();
        }
    }

    /// Asks the writer thread to write every line logged so far and end; the caller
    /// waits for the thread it hands back (the first close gets it). Lines logged after
    /// this are dropped.
    pub fn close(&self) -> Option<std::thread::JoinHandle<()>> {
        self.writer.shared.closing.store(true, Ordering::Release);
        self.writer.wake();
        lock(&self.writer.thread).take()
    }

    /// Logs a decided request (an allowed one as sampled), with the whole trace.
    pub fn decided(&self, request: &Decided<'_>, decision: &Decision, took: Duration) {
        if !self.on || (decision.effect == Effect::Allow && !sampled(self.sample_allows)) {
            return;
        }
        let path = redact(&self.redact_paths, request.path);
        let destination = request
            .destination
            .map(|destination| redact(&self.redact_paths, destination));
        let rule = decision.rule.as_ref().map(|rule| rule.0);
        self.writer.line(self.on_full, |text| {
            let mut object = json::Object::new(text);
            // Request ids, config ids and methods are checked to hold none of the bytes
            // JSON escapes (`telemetry::is_valid_request_id`, `check_id`, tokens).
            line_head(&mut object, decision.effect.as_str())
                .plain("request.id", request.request_id.to_str().unwrap_or(""))
                .plain("route.id", request.route)
                .plain("http.method", request.method)
                .str_or_null("url.domain", request.host)
                .str("url.path", &path)
                .str_or_null("url.destination", destination.as_deref())
                .plain_with("client.ip", |out| {
                    let _ = Address(request.client_ip).write_to(out);
                })
                .str_or_null(
                    "client.geo.country_iso_code",
                    request.country.as_ref().map(Country::as_str),
                );
            certificate(&mut object, request.client_cert);
            principal(&mut object, request.principal, &self.recorded.claims);
            object.object("http.request.headers", |fields| {
                for name in &self.recorded.headers {
                    fields.array(name.as_str(), |values| {
                        for value in request.headers.get_all(name) {
                            values
                                .value()
                                .str(value.to_str().unwrap_or(crate::policy::NOT_TEXT));
                        }
                    });
                }
            });
            // The reason's sentence, written once: the trace step it came from repeats it.
            SENTENCE.with_borrow_mut(|sentence| {
                sentence.clear();
                let _ = decision.reason.write_sentence(sentence);
                object
                    .plain("decision.reason", decision.reason.code())
                    .str("decision.explanation", sentence)
                    .plain_or_null("rule.id", rule)
                    .array("audit", |items| {
                        for step in decision.audit_matches() {
                            let effect = step.effect.as_str();
                            items.str_parts(&[step.rule.0, ":would_", effect]);
                        }
                    })
                    .u64("decision.micros", took.as_micros() as u64)
                    .array("trace", |items| {
                        for step in &decision.trace {
                            let mut item = items.object();
                            item.plain("rule", step.rule.0)
                                .plain("effect", step.effect.as_str())
                                .plain("mode", step.mode.as_str());
                            match step.outcome.parts() {
                                (words, None) => item.plain("outcome", words),
                                (words, Some(reason)) if *reason == decision.reason => {
                                    item.str_parts("outcome", &[words, sentence])
                                }
                                (_, Some(_)) => item.str_with("outcome", |out| {
                                    let _ = step.outcome.write_sentence(out);
                                }),
                            };
                            item.finish();
                        }
                    });
            });
            object.finish();
        });
    }

    /// Logs a request refused before it was decided: the fields a decision would have
    /// are there, null or empty.
    pub fn refused(&self, request: &Refused<'_>) {
        if !self.on {
            return;
        }
        self.writer.line(self.on_full, |text| {
            let mut object = json::Object::new(text);
            line_head(&mut object, "error")
                .str("request.id", request.request_id)
                .str_or_null("route.id", request.route)
                .str("http.method", request.method)
                .null("url.domain")
                .null("url.path")
                .null("url.destination")
                .plain_with("client.ip", |out| {
                    let _ = Address(request.peer.to_canonical()).write_to(out);
                })
                .null("client.geo.country_iso_code");
            certificate(&mut object, None);
            principal(&mut object, None, &[]);
            object
                .object("http.request.headers", |_| {})
                .str("decision.reason", request.reason)
                .null("decision.explanation")
                .null("rule.id")
                .array("audit", |_| {})
                .null("decision.micros")
                .array("trace", |_| {});
            object.finish();
        });
    }

    /// The line of the request with this id, if it is among the recent decisions: those
    /// logged but not yet written first, as they are the newest.
    pub fn find(&self, request_id: &str) -> Option<String> {
        if self.recent == 0 {
            return None;
        }
        let needle = recent::id_needle(request_id);
        (self.writer.shared.shards.iter())
            .find_map(|shard| recent::find_line(&lock(&shard.0).text, &needle).map(str::to_owned))
            .or_else(|| self.writer.shared.recent.find(request_id))
    }

    /// Up to `limit` recent lines that `filter` lets through, newest first: those the
    /// ring holds and those logged but not yet written.
    pub fn select(&self, filter: &Filter, limit: usize) -> Vec<String> {
        if self.recent == 0 {
            return Vec::new();
        }
        // Copied out, so that no request waits for its thread's batch while the ring is
        // searched.
        let pending: Vec<String> = (self.writer.shared.shards.iter())
            .map(|shard| lock(&shard.0).text.clone())
            .filter(|text| !text.is_empty())
            .collect();
        self.writer.shared.recent.select(filter, limit, &pending)
    }

    /// How many decisions the ring keeps now, and at most (`log.recent`).
    pub fn recent_kept(&self) -> (usize, usize) {
        (self.writer.shared.recent.len(), self.recent)
    }
}

/// `client.certificate`: what the verified client certificate says, or `null`.
fn certificate(object: &mut json::Object<'_>, certificate: Option<&ClientCertificate>) {
    let Some(certificate) = certificate else {
        object.null("client.certificate");
        return;
    };
    object.object("client.certificate", |fields| {
        fields
            .str_or_null("subject", certificate.subject.as_deref())
            .strs("dns", certificate.dns_names.iter().map(String::as_str))
            .strs("uris", certificate.uris.iter().map(String::as_str))
            .plain("fingerprint", &certificate.fingerprint);
    });
}

/// The `principal.*` fields of an anonymous request, in one piece: most requests a
/// gateway denies are anonymous.
const ANONYMOUS: &str = "\"principal.id\":null,\"principal.issuer\":null,\"principal.roles\":[],\"principal.scopes\":[],\"principal.claims\":{}";

/// `principal.*`: who called (as granted: inherited roles are the policy's to add), and
/// the claims rules compare; `null`, `[]` and `{}` for an anonymous request.
fn principal(object: &mut json::Object<'_>, principal: Option<&Principal>, claims: &[String]) {
    let Some(principal) = principal else {
        object.fields_text(ANONYMOUS);
        return;
    };
    object
        .str("principal.id", &principal.subject)
        .str("principal.issuer", &principal.issuer)
        .strs(
            "principal.roles",
            principal.roles.iter().map(String::as_str),
        )
        .strs(
            "principal.scopes",
            principal.scopes.iter().map(String::as_str),
        )
        .object("principal.claims", |fields| {
            for name in claims {
                let value = fields.data_key(name);
                match principal.claim(name) {
                    Some(claim) => claim_value(value, claim),
                    None => value.null(),
                }
            }
        });
}

/// A claim as JSON; one that is an object (or null) compares equal to nothing, and is
/// written `{}`.
fn claim_value(value: json::Value<'_>, claim: &ClaimValue) {
    match claim {
        ClaimValue::String(text) => value.str(text),
        ClaimValue::Number(number) => value.number(*number),
        ClaimValue::Bool(flag) => value.bool(*flag),
        ClaimValue::List(items) => value.array(|array| {
            for item in items {
                claim_value(array.value(), item);
            }
        }),
        ClaimValue::Other => value.object(|_| {}),
    }
}

/// The fields every line starts with.
fn line_head<'o, 'a>(object: &'o mut json::Object<'a>, decision: &str) -> &'o mut json::Object<'a> {
    object
        .plain_with("timestamp", |out| {
            crate::telemetry::push_timestamp(out, SystemTime::now());
        })
        .plain("decision", decision)
}

impl Writer {
    fn start(dropped: IntCounter) -> Result<Arc<Writer>, String> {
        let shared = Arc::new(Shared {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            switch: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            dropped,
            recent: Recent::default(),
        });
        let (batches, queued) = std::sync::mpsc::sync_channel::<Kept>(QUEUED);
        let thread = std::thread::Builder::new()
            .name("decision-log".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || write_batches(&shared, &queued)
            })
            .map_err(|err| format!("cannot start the decision-log writer: {err}"))?;
        Ok(Arc::new(Writer {
            shared,
            batches,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Appends the line `format` writes to this thread's batch, and hands the batch to
    /// the writer when it is full.
    fn line(&self, on_full: OnFull, format: impl FnOnce(&mut String)) {
        let shard = &self.shared.shards[crate::telemetry::thread_slot() % SHARDS];
        let full = {
            let mut batch = lock(&shard.0);
            if batch.text.capacity() == 0 {
                batch.text.reserve(BATCH + 4096);
            }
            format(&mut batch.text);
            batch.text.push('\n');
            batch.lines += 1;
            // Into the ring before the shard lets go of it: a lookup finds each line in
            // one or the other.
            (batch.text.len() >= BATCH).then(|| self.shared.keep(std::mem::take(&mut *batch)))
        };
        if let Some(batch) = full {
            self.hand_over(batch, on_full);
        }
    }

    fn hand_over(&self, batch: Kept, on_full: OnFull) {
        let lines = batch.lines;
        let sent = match on_full {
            OnFull::Block => self.batches.send(batch).is_ok(),
            OnFull::Drop => match self.batches.try_send(batch) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
        };
        if !sent {
            self.shared
                .dropped_lines(lines, "the decision log cannot keep up");
        }
    }

    /// Wakes the writer thread (it looks at least every 100 ms anyway).
    fn wake(&self) {
        let _ = self.batches.try_send(Kept::default());
    }
}

impl Shared {
    /// Puts `batch` in the ring of recent decisions, and gives it back to be written.
    fn keep(&self, batch: Batch) -> Kept {
        let lines = usize::try_from(batch.lines).unwrap_or(usize::MAX);
        Kept {
            text: self.recent.keep(batch.text, lines),
            lines: batch.lines,
        }
    }

    /// Counts dropped lines, with a warning for the first and then one per 10,000.
    fn dropped_lines(&self, lines: u64, why: &str) {
        let before = self.dropped.get();
        self.dropped.inc_by(lines);
        if before == 0 || before / 10_000 != (before + lines) / 10_000 {
            tracing::warn!(lines = before + lines, "{why}; lines dropped so far");
        }
    }
}

/// The writer thread: writes batches as they come, every thread's batch every 100 ms,
/// switches sinks when a reload asks, and ends at shutdown (or when every load that used
/// it is gone) once everything is written.
fn write_batches(shared: &Shared, queued: &Receiver<Kept>) {
    let mut out: Option<Out> = None;
    let mut failing = false;
    let mut swept = Instant::now();
    loop {
        // The first sink serves before any request is accepted.
        if out.is_none() {
            let mut switch = lock(&shared.switch);
            if !switch.is_empty() {
                out = Some(switch.remove(0));
            }
        }
        let received = queued.recv_timeout(FLUSH_EVERY);
        let mut switch = std::mem::take(&mut *lock(&shared.switch));
        // Lines written before this thread first saw the sink are that sink's: a slow
        // start must not drop them as lines of a log that never served.
        if out.is_none() && !switch.is_empty() {
            out = Some(switch.remove(0));
        }
        let gone = match received {
            Ok(batch) => {
                write(shared, &mut out, &mut failing, batch);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let closing = gone || shared.closing.load(Ordering::Acquire);
        if closing || !switch.is_empty() || swept.elapsed() >= FLUSH_EVERY {
            // Full batches sent before come first, then what every thread holds.
            while let Ok(batch) = queued.try_recv() {
                write(shared, &mut out, &mut failing, batch);
            }
            for batch in sweep(shared) {
                write(shared, &mut out, &mut failing, batch);
            }
            swept = Instant::now();
        }
        // Of several reloads since the last look, the latest sink is the one serving.
        if let Some(next) = switch.into_iter().last() {
            out = Some(next);
            failing = false;
        }
        if closing {
            return;
        }
    }
}

/// Takes every thread's batch into the ring, oldest first by its newest line, with every
/// shard locked: a lookup finds each line in its shard or in the ring, and a thread's
/// older lines do not enter after another's newer, to push them out. Requests wait for
/// their shard meanwhile: a few microseconds every 100 ms.
fn sweep(shared: &Shared) -> Vec<Kept> {
    let mut shards: Vec<MutexGuard<'_, Batch>> =
        shared.shards.iter().map(|shard| lock(&shard.0)).collect();
    let mut taken: Vec<&mut Batch> = (shards.iter_mut())
        .map(|batch| &mut **batch)
        .filter(|batch| batch.lines > 0)
        .collect();
    // Timestamps order as text does; a wall clock stepping back misorders one sweep at
    // most.
    taken.sort_by(|a, b| newest_time(&a.text).cmp(newest_time(&b.text)));
    taken
        .into_iter()
        .map(|batch| shared.keep(std::mem::take(batch)))
        .collect()
}

/// The `timestamp` of a batch's last line, its newest.
fn newest_time(text: &str) -> &str {
    let body = text.strip_suffix('\n').unwrap_or(text);
    recent::timestamp(body.rsplit('\n').next().unwrap_or(body))
}

fn write(shared: &Shared, out: &mut Option<Out>, failing: &mut bool, batch: Kept) {
    if batch.lines == 0 {
        return;
    }
    // Only lines of a log that never served (a gateway that failed to start) land here.
    let Some(out) = out else {
        shared.dropped_lines(batch.lines, "the decision log has no sink yet");
        return;
    };
    let Some(write_to) = &mut out.write else {
        return;
    };
    let written = write_to
        .write_all(batch.text.as_bytes())
        .and_then(|()| write_to.flush());
    // One warning when writing starts failing, one when it works again.
    match written {
        Err(err) => {
            if !*failing {
                *failing = true;
                tracing::warn!(error = %err, log = %out.name, "cannot write the decision log; dropping lines until it works again");
            }
            // Counted without `dropped_lines`' warnings: this failure has its own.
            shared.dropped.inc_by(batch.lines);
        }
        Ok(()) if *failing => {
            *failing = false;
            tracing::info!(log = %out.name, "writing the decision log again");
        }
        Ok(()) => {}
    }
}

/// A lock whose holder cannot leave its data half-changed: a panic elsewhere does not
/// stop the log.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_enters_threads_batches_oldest_first_so_the_newest_lines_stay() {
        let shared = Shared {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            switch: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            dropped: IntCounter::new("dropped", "dropped").unwrap(),
            recent: Recent::default(),
        };
        shared.recent.resize(2);
        let line = |id: &str, second: u32| {
            format!(
                "{{\"timestamp\":\"2026-12-07T07:00:{second:02}.000Z\",\"request.id\":\"{id}\",\"decision\":\"allow\"}}\n"
            )
        };
        // The newest line sits in the first shard, two older ones in a later shard.
        *lock(&shared.shards[0].0) = Batch {
            text: line("newest", 9),
            lines: 1,
        };
        *lock(&shared.shards[5].0) = Batch {
            text: line("old1", 1) + &line("old2", 2),
            lines: 2,
        };
        let swept = sweep(&shared);
        assert_eq!(swept.len(), 2);
        assert!(swept[0].text.contains("old1") && swept[1].text.contains("newest"));
        assert!(
            shared.recent.find("newest").is_some(),
            "the newest line stays"
        );
        assert!(shared.shards.iter().all(|shard| lock(&shard.0).lines == 0));
    }

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

    fn refuse(log: &DecisionLog, id: &str) {
        log.refused(&Refused {
            request_id: id,
            route: None,
            method: "GET",
            peer: IpAddr::from([127, 0, 0, 1]),
            reason: "bad_request",
        });
    }

    /// A reload's new sink takes over only once the lines logged before are written to
    /// the old one; lines still being logged by the old load's requests follow the writer.
    #[test]
    fn lines_written_before_the_writer_first_sees_its_sink_are_kept() {
        let path = std::env::temp_dir().join(format!("portcullis-dl-early-{}", std::process::id()));
        let settings = LogSettings {
            decisions: DecisionSink::File(path.clone()),
            on_full: OnFull::Drop,
            sample_allows: 1.0,
            redact_paths: Vec::new(),
            redact_headers: Vec::new(),
            recent: 0,
        };
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let log = DecisionLog::open(&settings, Recorded::default(), None, &dropped).unwrap();
        // A request that lands before the writer thread has looked at the sink it serves
        // (a slow start on a busy machine).
        std::thread::sleep(Duration::from_millis(20));
        refuse(&log, "early");
        log.serving();
        log.close().expect("the writer thread").join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.contains("\"early\""), "{text}");
        assert_eq!(dropped.get(), 0);
    }

    #[test]
    fn a_reload_switches_sinks_after_writing_what_came_before() {
        let dir = std::env::temp_dir().join(format!("portcullis-dl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = |name: &str| LogSettings {
            decisions: DecisionSink::File(dir.join(name)),
            on_full: OnFull::Drop,
            sample_allows: 1.0,
            redact_paths: Vec::new(),
            redact_headers: Vec::new(),
            recent: 0,
        };
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        // Until the writer has taken the sink a load's `serving` handed it (bounded wait).
        let taken = |log: &DecisionLog| {
            for _ in 0..500 {
                if lock(&log.writer.shared.switch).is_empty() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            panic!("the writer did not take the new sink");
        };
        let first =
            DecisionLog::open(&settings("first.log"), Recorded::default(), None, &dropped).unwrap();
        first.serving();
        taken(&first);
        refuse(&first, "one");
        let second = DecisionLog::open(
            &settings("second.log"),
            Recorded::default(),
            Some(&first),
            &dropped,
        )
        .unwrap();
        refuse(&first, "two");
        second.serving();
        taken(&second);
        refuse(&first, "three");
        refuse(&second, "four");
        let writer = second.close().expect("the writer thread");
        writer.join().unwrap();
        refuse(&second, "after close");
        let ids = |name: &str| -> Vec<String> {
            std::fs::read_to_string(dir.join(name))
                .unwrap()
                .lines()
                .map(|line| {
                    let line: serde_json::Value = serde_json::from_str(line).unwrap();
                    line["request.id"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        assert_eq!(ids("first.log"), ["one", "two"]);
        assert_eq!(ids("second.log"), ["three", "four"]);
        assert_eq!(dropped.get(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
