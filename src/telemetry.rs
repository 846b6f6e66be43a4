//! Metric names and handles, and request ids.
//!
//! Label values come only from config ids and fixed enums, never from request data,
//! so the number of series stays bounded whatever clients send.

use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
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
    /// TLS handshakes with clients that failed, by listener and cause.
    pub const TLS_HANDSHAKE_ERRORS_TOTAL: &str = "portcullis_tls_handshake_errors_total";
    /// When each certificate a TLS listener serves expires, by listener and host.
    pub const TLS_CERTIFICATE_EXPIRY: &str = "portcullis_tls_certificate_expiry_timestamp_seconds";
    /// Country lookups in the geo database, by result (`found`, `unknown`, `error`).
    pub const GEOIP_LOOKUPS_TOTAL: &str = "portcullis_geoip_lookups_total";
    /// 1 when the configured country database is the one serving, 0 when it did not load.
    pub const GEOIP_DATABASE_LOADED: &str = "portcullis_geoip_database_loaded";
    /// When the country database serving was built, by its own metadata.
    pub const GEOIP_DATABASE_BUILD_TIMESTAMP: &str =
        "portcullis_geoip_database_build_timestamp_seconds";

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
        TLS_HANDSHAKE_ERRORS_TOTAL,
        TLS_CERTIFICATE_EXPIRY,
        GEOIP_LOOKUPS_TOTAL,
        GEOIP_DATABASE_LOADED,
        GEOIP_DATABASE_BUILD_TIMESTAMP,
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
    /// The TLS handshake with an https target failed (its certificate did not verify).
    Tls,
}

impl UpstreamErrorKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Tls => "tls",
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

/// Every metric the gateway exports. Those that requests and connections change live in
/// one [`Shard`] per worker, so that no two cores write the same counter; a scrape sums
/// the shards. The rest change rarely (reloads, key fetches) and live here once.
pub struct Metrics {
    registry: Registry,
    shards: Vec<Arc<Shard>>,
    /// [`names::HEADER_MEMORY_BYTES`].
    pub header_memory: IntGauge,
    /// [`names::HEADER_MEMORY_CUTS_TOTAL`].
    pub header_memory_cuts: IntCounter,
    /// [`names::DECISION_LOG_DROPPED_TOTAL`].
    pub decision_log_dropped: IntCounter,
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
    /// [`names::TLS_CERTIFICATE_EXPIRY`].
    pub tls_certificate_expiry: IntGaugeVec,
    /// [`names::GEOIP_DATABASE_LOADED`].
    pub geoip_database_loaded: IntGaugeVec,
    /// [`names::GEOIP_DATABASE_BUILD_TIMESTAMP`].
    pub geoip_database_build: IntGaugeVec,
}

/// One worker's metrics: what its requests and connections change.
pub struct Shard {
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
    /// [`names::DECISION_DURATION`].
    pub decision_duration: Histogram,
    /// [`names::RULE_MATCHES_TOTAL`].
    pub rule_matches: IntCounterVec,
    /// [`names::TLS_HANDSHAKE_ERRORS_TOTAL`].
    pub tls_handshake_errors: IntCounterVec,
    /// [`names::GEOIP_LOOKUPS_TOTAL`].
    pub geoip_lookups: IntCounterVec,
}

/// Decision-time buckets from 1µs to 10ms: a decision is a few microseconds.
const DECISION_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.001, 0.01,
];

/// Registers `metric` in `registry` and hands it back. Our metric definitions are
/// constants, each name registered once: a failure is a bug caught by every test.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: Result<M, prometheus::Error>,
) -> M {
    let metric = metric.expect("static metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric name is registered once");
    metric
}

impl Shard {
    fn new() -> Shard {
        let registry = Registry::new();
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        Shard {
            requests: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        names::REQUESTS_TOTAL,
                        "Requests by route, decision and reason.",
                    ),
                    &["route", "decision", "reason"],
                ),
            ),
            request_duration: registered(
                &registry,
                Histogram::with_opts(latency(
                    names::REQUEST_DURATION,
                    "Time from a request's head to its response head, in seconds.",
                )),
            ),
            upstream_duration: registered(
                &registry,
                HistogramVec::new(
                    latency(
                        names::UPSTREAM_DURATION,
                        "Time from sending a request upstream to its response head, in seconds.",
                    ),
                    &["upstream"],
                ),
            ),
            upstream_errors: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        names::UPSTREAM_ERRORS_TOTAL,
                        "Upstream failures by upstream and kind.",
                    ),
                    &["upstream", "kind"],
                ),
            ),
            connections_active: registered(
                &registry,
                IntGauge::new(names::CONNECTIONS_ACTIVE, "Client connections open now."),
            ),
            connections_rejected: registered(
                &registry,
                IntCounter::new(
                    names::CONNECTIONS_REJECTED_TOTAL,
                    "Client connections closed at accept because limits.max_connections was reached.",
                ),
            ),
            decision_duration: registered(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        names::DECISION_DURATION,
                        "Time the policy took to decide a request, in seconds.",
                    )
                    .buckets(DECISION_BUCKETS.to_vec()),
                ),
            ),
            rule_matches: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        names::RULE_MATCHES_TOTAL,
                        "Requests each rule matched, by rule, effect and mode.",
                    ),
                    &["rule", "effect", "mode"],
                ),
            ),
            tls_handshake_errors: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        names::TLS_HANDSHAKE_ERRORS_TOTAL,
                        "TLS handshakes with clients that failed, by listener and cause.",
                    ),
                    &["listener", "reason"],
                ),
            ),
            geoip_lookups: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        names::GEOIP_LOOKUPS_TOTAL,
                        "Country lookups in the geo database, by result: found, unknown (XX) or error (no database loaded, or a record unreadable).",
                    ),
                    &["result"],
                ),
            ),
            registry,
        }
    }
}

impl Metrics {
    /// Creates and registers every metric, with a shard for each of `workers`.
    pub fn new(workers: usize) -> Metrics {
        let registry = Registry::new();
        let build_info = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(names::BUILD_INFO, "Always 1; the version is in the label."),
                &["version"],
            ),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let policy_reloads = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    names::POLICY_RELOADS_TOTAL,
                    "Reloads of the config and policy files, by result.",
                ),
                &["result"],
            ),
        );
        for result in ["ok", "error"] {
            policy_reloads.with_label_values(&[result]);
        }
        let policy_last_reload_successful = registered(
            &registry,
            IntGauge::new(
                names::POLICY_LAST_RELOAD_SUCCESSFUL,
                "1 when the last reload succeeded (or none was tried), 0 while the last one failed.",
            ),
        );
        policy_last_reload_successful.set(1);
        Metrics {
            shards: (0..workers.max(1))
                .map(|_| Arc::new(Shard::new()))
                .collect(),
            header_memory: registered(
                &registry,
                IntGauge::new(
                    names::HEADER_MEMORY_BYTES,
                    "Memory held by HTTP/1 request heads still being read, in bytes.",
                ),
            ),
            header_memory_cuts: registered(
                &registry,
                IntCounter::new(
                    names::HEADER_MEMORY_CUTS_TOTAL,
                    "Connections closed because their unfinished request head was the slowest when limits.header_memory ran out.",
                ),
            ),
            decision_log_dropped: registered(
                &registry,
                IntCounter::new(
                    names::DECISION_LOG_DROPPED_TOTAL,
                    "Decision-log lines dropped because the writer fell behind or its sink failed.",
                ),
            ),
            policy_rules: registered(
                &registry,
                IntGauge::new(names::POLICY_RULES, "Rules in the loaded policy."),
            ),
            jwks_refreshes: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        names::JWKS_REFRESHES_TOTAL,
                        "Fetches of token issuers' key sets, by issuer and result.",
                    ),
                    &["issuer", "result"],
                ),
            ),
            policy_reloads,
            policy_info: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        names::POLICY_INFO,
                        "Always 1; the hash of the config and policy files serving now is in the label.",
                    ),
                    &["hash"],
                ),
            ),
            policy_last_reload_successful,
            tls_certificate_expiry: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        names::TLS_CERTIFICATE_EXPIRY,
                        "When each certificate a TLS listener serves expires, in seconds since the Unix epoch, by listener and host.",
                    ),
                    &["listener", "host"],
                ),
            ),
            geoip_database_loaded: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        names::GEOIP_DATABASE_LOADED,
                        "1 when the configured country database is the one serving lookups, 0 when it did not load (the last good one serves, or none: country conditions fail closed).",
                    ),
                    &["database"],
                ),
            ),
            geoip_database_build: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        names::GEOIP_DATABASE_BUILD_TIMESTAMP,
                        "When the country database serving lookups was built, in seconds since the Unix epoch (from its metadata), by its file.",
                    ),
                    &["database"],
                ),
            ),
            registry,
        }
    }

    /// Sets the country-database series: `configured` is the configured file and whether
    /// it is the one serving; `serving` is the file serving lookups and its build time.
    /// Series of files no longer named go, after the new ones are set.
    pub fn geoip_serving(
        &self,
        configured: Option<(&std::path::Path, bool)>,
        serving: Option<(&std::path::Path, u64)>,
    ) {
        let configured_label = configured.map(|(path, loaded)| {
            let label = path.display().to_string();
            self.geoip_database_loaded
                .with_label_values(&[label.as_str()])
                .set(i64::from(loaded));
            label
        });
        let serving_label = serving.map(|(path, epoch)| {
            let label = path.display().to_string();
            self.geoip_database_build
                .with_label_values(&[label.as_str()])
                .set(i64::try_from(epoch).unwrap_or(i64::MAX));
            label
        });
        keep_only(
            &self.geoip_database_loaded,
            "database",
            configured_label.as_deref(),
        );
        keep_only(
            &self.geoip_database_build,
            "database",
            serving_label.as_deref(),
        );
    }

    /// Sets the expiry series to `certificates` (listener, host, expiry), and only those.
    /// The new ones are set before the old ones go, so that no scrape finds none.
    pub fn certificates_serving<'a>(
        &self,
        certificates: impl IntoIterator<Item = (&'a str, &'a str, i64)>,
    ) {
        use prometheus::core::Collector as _;
        let mut serving = std::collections::BTreeSet::new();
        for (listener, host, not_after) in certificates {
            self.tls_certificate_expiry
                .with_label_values(&[listener, host])
                .set(not_after);
            serving.insert((listener.to_owned(), host.to_owned()));
        }
        for family in self.tls_certificate_expiry.collect() {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    (metric.get_label().iter())
                        .find(|pair| pair.name() == name)
                        .map_or("", |pair| pair.value())
                        .to_owned()
                };
                let series = (label("listener"), label("host"));
                if !serving.contains(&series) {
                    let _ = self
                        .tls_certificate_expiry
                        .remove_label_values(&[&series.0, &series.1]);
                }
            }
        }
    }

    /// The workers' shards, one each.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    /// Drops the series of rules, routes, upstreams and token issuers that are no longer
    /// configured (after a reload), so that dashboards stop showing them. Each name is a
    /// label value: `rules` of `rule`, `routes` of `route`, and so on.
    pub fn forget(&self, rules: &[&str], routes: &[&str], upstreams: &[&str], issuers: &[&str]) {
        for shard in &self.shards {
            forget_series(&shard.rule_matches, "rule", rules);
            forget_series(&shard.requests, "route", routes);
            forget_series(&shard.upstream_duration, "upstream", upstreams);
            forget_series(&shard.upstream_errors, "upstream", upstreams);
        }
        forget_series(&self.jwks_refreshes, "issuer", issuers);
    }

    /// The Prometheus text exposition of every metric, the shards summed.
    pub fn encode(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(sum_shards(
            self.shards.iter().map(|shard| shard.registry.gather()),
        ));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut text = Vec::new();
        // Encoding into a Vec cannot fail for I/O reasons, and our metric names are valid.
        if let Err(err) = TextEncoder::new().encode(&families, &mut text) {
            tracing::warn!(error = %err, "encoding metrics failed");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

/// The shards' metric families as one: each series (a name and its label values) is the
/// sum of that series in every shard. Counters only grow in each shard, so their sums only
/// grow; a series any shard has is there.
fn sum_shards(
    shards: impl Iterator<Item = Vec<prometheus::proto::MetricFamily>>,
) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::proto::{Bucket, MetricFamily, MetricType};
    use std::collections::BTreeMap;
    let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
    for gathered in shards {
        for mut family in gathered {
            let Some(summed) = families.get_mut(family.name()) else {
                families.insert(family.name().to_owned(), family);
                continue;
            };
            let kind = family.get_field_type();
            for metric in family.take_metric() {
                let same = summed
                    .mut_metric()
                    .iter_mut()
                    .find(|known| known.get_label() == metric.get_label());
                let Some(known) = same else {
                    summed.mut_metric().push(metric);
                    continue;
                };
                match kind {
                    MetricType::COUNTER => {
                        let mut counter = known.get_counter().clone();
                        counter.set_value(counter.get_value() + metric.get_counter().get_value());
                        known.set_counter(counter);
                    }
                    MetricType::GAUGE => {
                        let mut gauge = known.get_gauge().clone();
                        gauge.set_value(gauge.get_value() + metric.get_gauge().get_value());
                        known.set_gauge(gauge);
                    }
                    MetricType::HISTOGRAM => {
                        let mut histogram = known.get_histogram().clone();
                        let more = metric.get_histogram();
                        histogram.set_sample_count(
                            histogram.get_sample_count() + more.get_sample_count(),
                        );
                        histogram
                            .set_sample_sum(histogram.get_sample_sum() + more.get_sample_sum());
                        // Every shard's histogram has the same buckets, in the same order.
                        let buckets: Vec<Bucket> = (histogram.get_bucket().iter())
                            .zip(more.get_bucket())
                            .map(|(bucket, other)| {
                                let mut sum = bucket.clone();
                                sum.set_cumulative_count(
                                    bucket.cumulative_count() + other.cumulative_count(),
                                );
                                sum
                            })
                            .collect();
                        histogram.set_bucket(buckets);
                        known.set_histogram(histogram);
                    }
                    // The shards hold counters, gauges and histograms only.
                    _ => {}
                }
            }
        }
    }
    families.into_values().collect()
}

/// Removes every series of `gauges` whose `label` is not `keep`.
fn keep_only(gauges: &IntGaugeVec, label: &str, keep: Option<&str>) {
    use prometheus::core::Collector as _;
    for family in gauges.collect() {
        for metric in family.get_metric() {
            let value = (metric.get_label().iter())
                .find(|pair| pair.name() == label)
                .map_or("", |pair| pair.value());
            if Some(value) != keep {
                let _ = gauges.remove_label_values(&[value]);
            }
        }
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

/// This thread's number, 0 for the first thread to ask, then 1, 2, …: for state kept per
/// thread (decision-log batches, verified-token caches), so that each worker writes memory
/// no other core writes.
pub fn thread_slot() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    SLOT.with(|slot| *slot)
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

/// Appends `time` as RFC 3339 in UTC with milliseconds (`2026-12-06T23:39:00.123Z`), for
/// lines written on every request: the date and time of day are worked out once a second
/// per thread.
pub fn push_timestamp(out: &mut String, time: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            *text = rfc3339(time);
            // Without its `Z`: the milliseconds come first.
            text.pop();
            *cached = seconds;
        }
        out.push_str(text);
    });
    let millis = since.subsec_millis();
    let digit = |value: u32| char::from(b'0' + (value % 10) as u8);
    out.push('.');
    out.push(digit(millis / 100));
    out.push(digit(millis / 10));
    out.push(digit(millis));
    out.push('Z');
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
        let metrics = Metrics::new(1);
        metrics.shards()[0]
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
    fn shards_are_summed_series_by_series() {
        let metrics = Metrics::new(3);
        let [one, two, three] = metrics.shards() else {
            panic!("three shards");
        };
        one.requests
            .with_label_values(&["api", "allow", "allowed"])
            .inc_by(2);
        two.requests
            .with_label_values(&["api", "allow", "allowed"])
            .inc_by(3);
        three
            .requests
            .with_label_values(&["web", "deny", "missing_role"])
            .inc();
        one.connections_active.set(4);
        two.connections_active.set(1);
        one.request_duration.observe(0.00002);
        three.request_duration.observe(0.2);
        let text = metrics.encode();
        for (series, value) in [
            (
                "portcullis_requests_total{decision=\"allow\",reason=\"allowed\",route=\"api\"}",
                "5",
            ),
            (
                "portcullis_requests_total{decision=\"deny\",reason=\"missing_role\",route=\"web\"}",
                "1",
            ),
            ("portcullis_connections_active", "5"),
            (
                "portcullis_request_duration_seconds_bucket{le=\"0.000025\"}",
                "1",
            ),
            (
                "portcullis_request_duration_seconds_bucket{le=\"0.25\"}",
                "2",
            ),
            ("portcullis_request_duration_seconds_count", "2"),
        ] {
            let line = format!("{series} {value}");
            assert!(text.lines().any(|found| found == line), "{line}\n{text}");
        }
        assert_eq!(text.matches("# TYPE portcullis_requests_total").count(), 1);
    }

    #[test]
    fn certificate_expiry_series_follow_the_certificates_serving() {
        let metrics = Metrics::new(1);
        metrics
            .certificates_serving([("0.0.0.0:443", "a.test", 10), ("0.0.0.0:443", "b.test", 20)]);
        metrics
            .certificates_serving([("0.0.0.0:443", "b.test", 30), ("0.0.0.0:443", "c.test", 40)]);
        let text = metrics.encode();
        let series = |host: &str| {
            format!(
                "{}{{host=\"{host}\",listener=\"0.0.0.0:443\"}}",
                names::TLS_CERTIFICATE_EXPIRY
            )
        };
        assert!(!text.contains(&series("a.test")), "{text}");
        assert!(text.contains(&format!("{} 30", series("b.test"))), "{text}");
        assert!(text.contains(&format!("{} 40", series("c.test"))), "{text}");
    }

    #[test]
    fn timestamps_have_milliseconds_and_follow_the_second() {
        let at = |millis| {
            let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(millis);
            let mut text = String::from(">");
            push_timestamp(&mut text, time);
            text.split_off(1)
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
