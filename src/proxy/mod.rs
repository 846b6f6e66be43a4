//! Everything HTTP on the data path: accept, normalize, route, forward, respond.
//!
//! `handle.rs` orders the phases; each other file owns one of them.

mod admit;
mod client_http1;
mod echo;
mod forward;
pub(crate) mod h1;
mod handle;
pub mod head_memory;
pub mod listener;
pub(crate) mod normalize;
pub mod offline;
mod pool;
pub mod respond;
mod route;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use prometheus::IntCounter;

use crate::config::{Config, DenialSettings, Limits};
use crate::decision_log::DecisionLog;
use crate::identity::Identity;
use crate::policy::PolicySet;
use crate::telemetry::{DecisionLabel, Metrics};

use admit::Admission;
pub use forward::BoxError;
use forward::Upstream;

/// The body type of every response the proxy sends.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The state requests are served with now: one `Proxy` of one load, swapped whole on
/// reload. Each request takes the one current when it arrives.
pub type Live = std::sync::Arc<arc_swap::ArcSwap<Proxy>>;

/// The compiled state a request is served with: routes, upstream clients, limits.
pub struct Proxy {
    admission: Admission,
    upstreams: Vec<Upstream>,
    keep_override_headers: bool,
    limits: Limits,
    policy: Arc<PolicySet>,
    identity: Arc<Identity>,
    denials: DenialSettings,
    metrics: Arc<Metrics>,
    /// `requests_total{route, decision="allow", reason="allowed"}` per route, resolved once
    /// so the hot path does not hash label values; indexed by `Route::index`.
    allowed: Vec<IntCounter>,
    /// `rule_matches_total{rule, effect, mode}` per rule, in the policy's rule order.
    rule_matches: Vec<IntCounter>,
    /// The config this state was built from (for `/explain` and reloads).
    config: Arc<Config>,
    decision_log: DecisionLog,
}

impl Proxy {
    /// Builds routes and upstream clients from a validated config, and opens its decision
    /// log. A reload passes the state it replaces, whose token issuers' key sets carry
    /// over where unchanged.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        previous: Option<&Proxy>,
    ) -> Result<Proxy, String> {
        let decision_log = DecisionLog::open(
            &config.log,
            previous.map(|previous| &previous.decision_log),
            &metrics.decision_log_dropped,
        )?;
        let upstreams = config
            .upstreams
            .iter()
            .map(|settings| Upstream::new(settings, &metrics))
            .collect();
        let allowed = config
            .routes
            .iter()
            .map(|route| {
                metrics.requests.with_label_values(&[
                    &route.id.0,
                    DecisionLabel::Allow.as_str(),
                    "allowed",
                ])
            })
            .collect();
        let rule_matches = config
            .policy
            .rules()
            .iter()
            .map(|rule| {
                metrics.rule_matches.with_label_values(&[
                    &rule.id.0,
                    rule.effect.as_str(),
                    rule.mode.as_str(),
                ])
            })
            .collect();
        Ok(Proxy {
            decision_log,
            rule_matches,
            admission: Admission::new(config),
            upstreams,
            keep_override_headers: config.keep_override_headers,
            limits: config.limits.clone(),
            policy: Arc::clone(&config.policy),
            identity: Arc::new(Identity::new(
                &config.identity,
                &metrics,
                previous.map(|previous| &*previous.identity),
            )),
            config: Arc::new(config.clone()),
            denials: config.denials.clone(),
            metrics,
            allowed,
        })
    }

    /// Marks this state as the one serving, in the metrics that describe it and the
    /// decision log's sink.
    pub fn serving(&self) {
        self.decision_log.serving();
        self.metrics
            .policy_rules
            .set(i64::try_from(self.config.policy.rules().len()).unwrap_or(i64::MAX));
    }

    /// The identity setup, whose key sets the gateway keeps fresh and `/readyz` reports.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The decision log, which the gateway closes at shutdown.
    pub fn decision_log(&self) -> &DecisionLog {
        &self.decision_log
    }

    /// The config this state was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Whether forwarding headers from this socket peer are believed.
    fn is_trusted(&self, peer: IpAddr) -> bool {
        self.admission.is_trusted(peer)
    }
}
