//! Metric names and handles, and request ids.
//!
//! Label values come only from config ids and fixed enums, never from request data,
//! so the number of series stays bounded whatever clients send.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metric names, one constant each, as the README lists them.
pub mod names {
    /// Requests by route, decision and reason.
    pub const REQUESTS_TOTAL: &str = "portcullis_requests_total";
    /// Whole-request latency, from the request head to the response head.
    pub const REQUEST_DURATION: &str = "portcullis_request_duration_seconds";
    /// Upstream latency, from sending the request to the upstream's response head.
    pub const UPSTREAM_DURATION: &str = "portcullis_upstream_duration_seconds";
    /// Upstream failures by upstream and kind.
    pub const UPSTREAM_ERRORS_TOTAL: &str = "portcullis_upstream_errors_total";
    /// Client connections open now.
    pub const CONNECTIONS_ACTIVE: &str = "portcullis_connections_active";
    /// Client connections closed at accept because `limits.max_connections` was reached.
    pub const CONNECTIONS_REJECTED_TOTAL: &str = "portcullis_connections_rejected_total";
    /// Memory held by HTTP/1 request heads still being read.
    pub const HEADER_MEMORY_BYTES: &str = "portcullis_header_memory_bytes";
    /// Connections closed because their unfinished head was the slowest when
    /// `limits.header_memory` ran out.
    pub const HEADER_MEMORY_CUTS_TOTAL: &str = "portcullis_header_memory_cuts_total";
    /// Decision-log lines dropped because the writer fell behind or its sink failed.
    pub const DECISION_LOG_DROPPED_TOTAL: &str = "portcullis_decision_log_dropped_total";
    /// Always 1, labelled with the version.
    pub const BUILD_INFO: &str = "portcullis_build_info";
    /// Time the policy took to decide a request.
    pub const DECISION_DURATION: &str = "portcullis_decision_duration_seconds";
    /// Rules that matched a request, by rule, effect and mode (audit rules show what they
    /// would have done).
    pub const RULE_MATCHES_TOTAL: &str = "portcullis_rule_matches_total";
    /// Rules in the loaded policy.
    pub const POLICY_RULES: &str = "portcullis_policy_rules";
    /// Fetches of an issuer's `jwks_url`, by issuer and result (`ok`, `error`).
    pub const JWKS_REFRESHES_TOTAL: &str = "portcullis_jwks_refreshes_total";
    /// Reloads of the config and policy files, by result (`ok`, `error`).
    pub const POLICY_RELOADS_TOTAL: &str = "portcullis_policy_reloads_total";
    /// Always 1, labelled with the hash of the files serving now.
    pub const POLICY_INFO: &str = "portcullis_policy_info";
    /// 1 when the last reload succeeded (or none was tried), 0 while the last one failed.
    pub const POLICY_LAST_RELOAD_SUCCESSFUL: &str = "portcullis_policy_last_reload_successful";

    /// Every metric name, for checks of what dashboards and alerts refer to.
    pub const ALL: &[&str] = &[
        REQUESTS_TOTAL,
        REQUEST_DURATION,
        UPSTREAM_DURATION,
        UPSTREAM_ERRORS_TOTAL,
        CONNECTIONS_ACTIVE,
        CONNECTIONS_REJECTED_TOTAL,
        HEADER_MEMORY_BYTES,
        HEADER_MEMORY_CUTS_TOTAL,
        DECISION_LOG_DROPPED_TOTAL,
        BUILD_INFO,
        DECISION_DURATION,
        RULE_MATCHES_TOTAL,
        POLICY_RULES,
        JWKS_REFRESHES_TOTAL,
        POLICY_RELOADS_TOTAL,
        POLICY_INFO,
        POLICY_LAST_RELOAD_SUCCESSFUL,
    ];
}

/// The `decision` label of [`names::REQUESTS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionLabel {
    /// Forwarded upstream and answered.
    Allow,
    /// Denied by the policy (401 or 403).
    Deny,
    /// Answered by the gateway with an error: no route, a bad request, an upstream failure.
    Error,
}

impl DecisionLabel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionLabel::Allow => "allow",
            DecisionLabel::Deny => "deny",
            DecisionLabel::Error => "error",
        }
    }
}

/// The `kind` label of [`names::UPSTREAM_ERRORS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect,
    /// No response head within the upstream's `timeout`.
    Timeout,
    /// The connection broke or the upstream spoke invalid HTTP.
    Protocol,
}

impl UpstreamErrorKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }
}

/// The route label for requests that matched no route.
pub const NO_ROUTE_LABEL: &str = "-";

/// Latency buckets from 10µs to 60s: a proxy hop is microseconds, an upstream may be seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every metric the gateway exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// [`names::REQUESTS_TOTAL`].
    pub requests: IntCounterVec,
    /// [`names::REQUEST_DURATION`].
    pub request_duration: Histogram,
    /// [`names::UPSTREAM_DURATION`].
    pub upstream_duration: HistogramVec,
    /// [`names::UPSTREAM_ERRORS_TOTAL`].
    pub upstream_errors: IntCounterVec,
    /// [`names::CONNECTIONS_ACTIVE`].
    pub connections_active: IntGauge,
    /// [`names::CONNECTIONS_REJECTED_TOTAL`].
    pub connections_rejected: IntCounter,
    /// [`names::HEADER_MEMORY_BYTES`].
    pub header_memory: IntGauge,
    /// [`names::HEADER_MEMORY_CUTS_TOTAL`].
    pub header_memory_cuts: IntCounter,
    /// [`names::DECISION_LOG_DROPPED_TOTAL`].
    pub decision_log_dropped: IntCounter,
    /// [`names::DECISION_DURATION`].
    pub decision_duration: Histogram,
    /// [`names::RULE_MATCHES_TOTAL`].
    pub rule_matches: IntCounterVec,
    /// [`names::POLICY_RULES`].
    pub policy_rules: IntGauge,
    /// [`names::JWKS_REFRESHES_TOTAL`].
    pub jwks_refreshes: IntCounterVec,
    /// [`names::POLICY_RELOADS_TOTAL`].
    pub policy_reloads: IntCounterVec,
    /// [`names::POLICY_INFO`].
    pub policy_info: IntGaugeVec,
    /// [`names::POLICY_LAST_RELOAD_SUCCESSFUL`].
    pub policy_last_reload_successful: IntGauge,
}

/// Decision-time buckets from 1µs to 10ms: a decision is a few microseconds.
const DECISION_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.001, 0.01,
];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                names::REQUESTS_TOTAL,
                "Requests by route, decision and reason.",
            ),
            &["route", "decision", "reason"],
        )
        .expect("static metric definition is valid");
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                names::REQUEST_DURATION,
                "Time from a request's head to its response head, in seconds.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("static metric definition is valid");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                names::UPSTREAM_DURATION,
                "Time from sending a request upstream to its response head, in seconds.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )
        .expect("static metric definition is valid");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                names::UPSTREAM_ERRORS_TOTAL,
                "Upstream failures by upstream and kind.",
            ),
            &["upstream", "kind"],
        )
        .expect("static metric definition is valid");
        let connections_active =
            IntGauge::new(names::CONNECTIONS_ACTIVE, "Client connections open now.")
                .expect("static metric definition is valid");
        let connections_rejected = IntCounter::new(
            names::CONNECTIONS_REJECTED_TOTAL,
            "Client connections closed at accept because limits.max_connections was reached.",
        )
        .expect("static metric definition is valid");
        let header_memory = IntGauge::new(
            names::HEADER_MEMORY_BYTES,
            "Memory held by HTTP/1 request heads still being read, in bytes.",
        )
        .expect("static metric definition is valid");
        let header_memory_cuts = IntCounter::new(
            names::HEADER_MEMORY_CUTS_TOTAL,
            "Connections closed because their unfinished request head was the slowest when limits.header_memory ran out.",
        )
        .expect("static metric definition is valid");
        let decision_log_dropped = IntCounter::new(
            names::DECISION_LOG_DROPPED_TOTAL,
            "Decision-log lines dropped because the writer fell behind or its sink failed.",
        )
        .expect("static metric definition is valid");
        let build_info = IntGaugeVec::new(
            Opts::new(names::BUILD_INFO, "Always 1; the version is in the label."),
            &["version"],
        )
        .expect("static metric definition is valid");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let decision_duration = Histogram::with_opts(
            HistogramOpts::new(
                names::DECISION_DURATION,
                "Time the policy took to decide a request, in seconds.",
            )
            .buckets(DECISION_BUCKETS.to_vec()),
        )
        .expect("static metric definition is valid");
        let rule_matches = IntCounterVec::new(
            Opts::new(
                names::RULE_MATCHES_TOTAL,
                "Requests each rule matched, by rule, effect and mode.",
            ),
            &["rule", "effect", "mode"],
        )
        .expect("static metric definition is valid");
        let policy_rules = IntGauge::new(names::POLICY_RULES, "Rules in the loaded policy.")
            .expect("static metric definition is valid");

        let jwks_refreshes = IntCounterVec::new(
            Opts::new(
                names::JWKS_REFRESHES_TOTAL,
                "Fetches of token issuers' key sets, by issuer and result.",
            ),
            &["issuer", "result"],
        )
        .expect("static metric definition is valid");

        let policy_reloads = IntCounterVec::new(
            Opts::new(
                names::POLICY_RELOADS_TOTAL,
                "Reloads of the config and policy files, by result.",
            ),
            &["result"],
        )
        .expect("static metric definition is valid");
        for result in ["ok", "error"] {
            policy_reloads.with_label_values(&[result]);
        }
        let policy_info = IntGaugeVec::new(
            Opts::new(
                names::POLICY_INFO,
                "Always 1; the hash of the config and policy files serving now is in the label.",
            ),
            &["hash"],
        )
        .expect("static metric definition is valid");

        let policy_last_reload_successful = IntGauge::new(
            names::POLICY_LAST_RELOAD_SUCCESSFUL,
            "1 when the last reload succeeded (or none was tried), 0 while the last one failed.",
        )
        .expect("static metric definition is valid");
        policy_last_reload_successful.set(1);

        let collectors: [Box<dyn prometheus::core::Collector>; 17] = [
            Box::new(decision_log_dropped.clone()),
            Box::new(policy_last_reload_successful.clone()),
            Box::new(jwks_refreshes.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(policy_info.clone()),
            Box::new(decision_duration.clone()),
            Box::new(rule_matches.clone()),
            Box::new(policy_rules.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(connections_active.clone()),
            Box::new(connections_rejected.clone()),
            Box::new(header_memory.clone()),
            Box::new(header_memory_cuts.clone()),
            Box::new(build_info),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("each metric name is registered once");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            connections_active,
            connections_rejected,
            header_memory,
            header_memory_cuts,
            decision_log_dropped,
            decision_duration,
            rule_matches,
            policy_rules,
            jwks_refreshes,
            policy_reloads,
            policy_info,
            policy_last_reload_successful,
        }
    }

    /// Drops the series of rules, routes, upstreams and token issuers that are no longer
    /// configured (after a reload), so that dashboards stop showing them. Each name is a
    /// label value: `rules` of `rule`, `routes` of `route`, and so on.
    pub fn forget(&self, rules: &[&str], routes: &[&str], upstreams: &[&str], issuers: &[&str]) {
        forget_series(&self.rule_matches, "rule", rules);
        forget_series(&self.requests, "route", routes);
        forget_series(&self.upstream_duration, "upstream", upstreams);
        forget_series(&self.upstream_errors, "upstream", upstreams);
        forget_series(&self.jwks_refreshes, "issuer", issuers);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = Vec::new();
        // Encoding into a Vec cannot fail for I/O reasons, and our metric names are valid.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::warn!(error = %err, "encoding metrics failed");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Removes every series of `vec` whose `label` is one of `gone`.
fn forget_series<B: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<B>,
    label: &str,
    gone: &[&str],
) {
    use prometheus::core::Collector as _;
    if gone.is_empty() {
        return;
    }
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: std::collections::HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|pair| (pair.name(), pair.value()))
                .collect();
            if labels.get(label).is_some_and(|value| gone.contains(value)) {
                // The series was just listed; it can only be gone if another reload
                // removed it meanwhile.
                let _ = vec.remove(&labels);
            }
        }
    }
}

/// A new request id: 26 characters of Crockford base32 (a ULID: 48 bits of
/// milliseconds then 80 random bits), so ids sort by time and are unique across replicas.
pub fn new_request_id() -> [u8; 26] {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let random = (u128::from(next_random()) << 64 | u128::from(next_random())) & ((1 << 80) - 1);
    let value = u128::from(millis & 0xFFFF_FFFF_FFFF) << 80 | random;
    let mut id = [0u8; 26];
    for (index, slot) in id.iter_mut().enumerate() {
        let shift = 5 * (25 - index);
        *slot = ALPHABET[((value >> shift) & 0x1F) as usize];
    }
    id
}

/// A per-thread splitmix64 stream seeded from the OS-keyed `RandomState`. Request ids need
/// uniqueness, not secrecy, so a fast generator is enough.
pub(crate) fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
            );
            hasher.finish()
        });
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Whether an incoming `X-Request-Id` is safe to keep: 1 to 128 visible ASCII characters
/// from a conservative set, so it cannot inject into logs or headers.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A time as RFC 3339 in UTC with milliseconds (`2026-12-06T23:39:00.123Z`), for lines
/// written on every request: the date and time of day are worked out once a second per
/// thread.
pub struct Timestamp([u8; 24]);

impl Timestamp {
    /// `time`, formatted.
    pub fn new(time: SystemTime) -> Timestamp {
        thread_local! {
            static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
        }
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = since.as_secs();
        let (cached, mut text) = SECOND.get();
        if cached != seconds {
            let formatted = rfc3339(time);
            text.copy_from_slice(&formatted.as_bytes()[..19]);
            SECOND.set((seconds, text));
        }
        let millis = since.subsec_millis();
        let mut out = [0u8; 24];
        out[..19].copy_from_slice(&text);
        out[19] = b'.';
        out[20] = b'0' + (millis / 100) as u8;
        out[21] = b'0' + (millis / 10 % 10) as u8;
        out[22] = b'0' + (millis % 10) as u8;
        out[23] = b'Z';
        Timestamp(out)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Every byte written above is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}

/// `time` as RFC 3339 in UTC, to the second.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_well_formed() {
        let ids: std::collections::HashSet<[u8; 26]> =
            (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert!(is_valid_request_id(id));
        }
    }

    #[test]
    fn request_id_validation() {
        assert!(is_valid_request_id(b"abc-123"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"a b"));
        assert!(!is_valid_request_id(b"a\r\nb"));
        assert!(!is_valid_request_id(&[b'a'; 129]));
    }

    #[test]
    fn metrics_encode_with_names() {
        let metrics = Metrics::new();
        metrics
            .requests
            .with_label_values(&["api", "allow", "allowed"])
            .inc();
        let text = metrics.encode();
        assert!(text.contains(
            "portcullis_requests_total{decision=\"allow\",reason=\"allowed\",route=\"api\"} 1"
        ));
        assert!(text.contains("portcullis_build_info{version="));
    }

    #[test]
    fn timestamps_have_milliseconds_and_follow_the_second() {
        let at = |millis| {
            let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(millis);
            Timestamp::new(time).as_str().to_owned()
        };
        assert_eq!(at(1_795_910_399_007), "2026-11-28T23:59:59.007Z");
        assert_eq!(at(1_795_910_399_999), "2026-11-28T23:59:59.999Z");
        assert_eq!(at(1_795_910_400_120), "2026-11-29T00:00:00.120Z");
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn times_are_rfc3339() {
        let at =
            |seconds| rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_910_399), "2026-11-28T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
