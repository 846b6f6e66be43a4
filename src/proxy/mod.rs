//! Everything HTTP on the data path: accept, normalize, route, forward, respond.
//!
//! `handle.rs` orders the phases; each other file owns one of them.

/// `AsyncRead` and `AsyncWrite` for an enum of streams (`Enum { Variant, … }`, each variant
/// holding one stream), each call passed to the stream of the variant at hand: one
/// connection type for plain and TLS sockets without boxing or dynamic dispatch.
macro_rules! streams_enum_io {
    ($name:ident { $($variant:ident),+ }) => {
        impl tokio::io::AsyncRead for $name {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $($name::$variant(stream) => std::pin::Pin::new(stream).poll_read(cx, buf),)+
                }
            }
        }

        impl tokio::io::AsyncWrite for $name {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $($name::$variant(stream) => std::pin::Pin::new(stream).poll_write(cx, buf),)+
                }
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $($name::$variant(stream) => {
                        std::pin::Pin::new(stream).poll_write_vectored(cx, bufs)
                    })+
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($name::$variant(stream) => stream.is_write_vectored(),)+
                }
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $($name::$variant(stream) => std::pin::Pin::new(stream).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $($name::$variant(stream) => std::pin::Pin::new(stream).poll_shutdown(cx),)+
                }
            }
        }
    };
}

mod admit;
mod client_http1;
mod echo;
mod forward;
pub(crate) mod h1;
mod handle;
mod handshake;
pub mod head_memory;
pub mod listener;
pub(crate) mod normalize;
pub mod offline;
mod pool;
pub mod respond;
mod route;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use prometheus::IntCounter;

use crate::config::{Config, DenialSettings, Limits, ListenerSettings};
use crate::decision_log::{DecisionLog, Recorded};
use crate::geoip::{Geo, Located, LookupResult};
use crate::identity::Identity;
use crate::policy::PolicySet;
use crate::telemetry::{DecisionLabel, Metrics, Shard};

use admit::Admission;
pub use forward::BoxError;
use forward::{Health, Upstream};

/// The body type of every response the proxy sends.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The state one worker serves requests with now: its `Proxy` of the load serving, swapped
/// whole on reload. Each request takes the one current when it arrives. Only this worker
/// reads it per request, so its reference count stays in this worker's cache.
pub type Live = Arc<ArcSwap<Proxy>>;

/// What one load of the config and policy files serves with, shared by every worker:
/// the config, the identity setup (issuers' keys, the verified-token cache) and the
/// decision log. Built once per load; each worker builds its [`Proxy`] from it.
pub struct Load {
    config: Arc<Config>,
    identity: Arc<Identity>,
    /// Where countries come from; its database is carried over by the next load while the
    /// file does not change.
    geo: Arc<Geo>,
    decision_log: Arc<DecisionLog>,
    /// Each upstream's targets' health, in config order.
    health: Vec<Arc<Health>>,
    /// The listeners as they serve: those bound at start, in their order, each with the
    /// TLS it serves with under this load (see [`serving_listeners`]).
    listeners: Arc<[ListenerSettings]>,
}

impl Load {
    /// Types the identity setup and opens the decision log of a validated config, with
    /// `geo` read for it ([`Geo::load`], which reads files). A reload passes the load it
    /// replaces, whose token issuers' key sets carry over where unchanged, and whose
    /// decision-log writer it keeps.
    pub fn new(
        config: &Config,
        geo: Geo,
        metrics: &Metrics,
        previous: Option<&Load>,
    ) -> Result<Load, String> {
        let decision_log = DecisionLog::open(
            &config.log,
            Recorded::of(config),
            previous.map(|previous| &*previous.decision_log),
            &metrics.decision_log_dropped,
        )?;
        Ok(Load {
            identity: Arc::new(Identity::new(
                &config.identity,
                metrics,
                previous.map(|previous| &*previous.identity),
            )),
            config: Arc::new(config.clone()),
            geo: Arc::new(geo),
            decision_log: Arc::new(decision_log),
            health: config.upstreams.iter().map(Health::new).collect(),
            listeners: serving_listeners(config, previous).into(),
        })
    }

    /// Marks this load as the one serving: in the metrics that describe it, and as the
    /// decision log's sink.
    pub fn serving(&self, metrics: &Metrics) {
        self.decision_log.serving();
        let serving = self.geo.database();
        metrics.geoip_serving(
            (self.config.geoip.as_ref())
                .and_then(|geoip| geoip.database.as_deref())
                .map(|configured| {
                    (
                        configured,
                        self.geo.problem().is_none() && serving.is_some(),
                    )
                }),
            serving.map(|database| (database.path(), database.build_epoch())),
        );
        metrics
            .policy_rules
            .set(i64::try_from(self.config.policy.rules().len()).unwrap_or(i64::MAX));
        metrics.certificates_serving(self.listeners.iter().flat_map(|listener| {
            let certificates = listener.tls.iter().flat_map(|tls| &tls.certificates);
            certificates.flat_map(|certificate| {
                (certificate.hosts.iter())
                    .map(|host| (listener.name.as_str(), host.as_str(), certificate.not_after))
            })
        }));
    }

    /// The identity setup, whose key sets the gateway keeps fresh and `/readyz` reports.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// Where countries come from, whose database `/readyz` reports.
    pub fn geo(&self) -> &Arc<Geo> {
        &self.geo
    }

    /// The config this load was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The decision log, which the gateway closes at shutdown.
    pub fn decision_log(&self) -> &DecisionLog {
        &self.decision_log
    }
}

/// The listeners a load serves: at start, the config's; after a reload, those bound at
/// start, each with the new config's certificates. Adding or removing a listener, or
/// turning TLS on or off, waits for a restart (`/policy` says so): until then a listener
/// keeps the TLS it had, so that a TLS port never starts speaking plain HTTP.
fn serving_listeners(config: &Config, previous: Option<&Load>) -> Vec<ListenerSettings> {
    let Some(previous) = previous else {
        return config.listeners.clone();
    };
    (previous.listeners.iter().enumerate())
        .map(|(index, bound)| {
            let now = (config.listeners.get(index))
                .filter(|now| now.addr == bound.addr)
                .or_else(|| config.listeners.iter().find(|now| now.addr == bound.addr));
            let tls = match now {
                Some(now) if now.tls.is_some() == bound.tls.is_some() => now.tls.clone(),
                _ => bound.tls.clone(),
            };
            ListenerSettings {
                tls,
                ..bound.clone()
            }
        })
        .collect()
}

/// The state every worker serves with, swapped together on reload: the load, and each
/// worker's `Proxy` of it.
pub struct Serving {
    load: ArcSwap<Load>,
    workers: Vec<Live>,
    shards: Vec<Arc<Shard>>,
}

impl Serving {
    /// Serves `load`, with a `Proxy` of it for each of the workers `metrics` has shards for.
    pub fn new(load: Load, metrics: &Metrics) -> Serving {
        let shards = metrics.shards().to_vec();
        let workers = (shards.iter())
            .map(|shard| Arc::new(ArcSwap::from_pointee(Proxy::new(&load, shard.clone()))))
            .collect();
        Serving {
            load: ArcSwap::from_pointee(load),
            workers,
            shards,
        }
    }

    /// The load serving now.
    pub fn load(&self) -> Arc<Load> {
        self.load.load_full()
    }

    /// Worker `index`'s state.
    pub fn worker(&self, index: usize) -> Option<&Live> {
        self.workers.get(index)
    }

    /// How many workers serve.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Serves new requests with `load` on every worker. Requests already under way finish
    /// with the state they started with.
    pub fn replace(&self, load: Arc<Load>) {
        for (live, shard) in self.workers.iter().zip(&self.shards) {
            live.store(Arc::new(Proxy::new(&load, shard.clone())));
        }
        self.load.store(load);
    }
}

/// One worker's state for one load: routes, its own upstream pools and health, and its
/// own metrics shard, beside what the load shares.
pub struct Proxy {
    admission: Admission,
    upstreams: Vec<Upstream>,
    keep_override_headers: bool,
    limits: Limits,
    policy: Arc<PolicySet>,
    identity: Arc<Identity>,
    denials: DenialSettings,
    metrics: Arc<Shard>,
    /// `requests_total{route, decision="allow", reason="allowed"}` per route, resolved once
    /// so the hot path does not hash label values; indexed by `Route::index`.
    allowed: Vec<IntCounter>,
    /// `rule_matches_total{rule, effect, mode}` per rule, in the policy's rule order.
    rule_matches: Vec<IntCounter>,
    /// `geoip_lookups_total{result}`, in [`LookupResult::ALL`] order.
    geoip_lookups: Vec<IntCounter>,
    decision_log: Arc<DecisionLog>,
    /// The load's listeners, in the order they were bound.
    listeners: Arc<[ListenerSettings]>,
}

impl Proxy {
    /// Builds a worker's routes and upstream clients for `load`, counting in `metrics`.
    pub fn new(load: &Load, metrics: Arc<Shard>) -> Proxy {
        let config = &load.config;
        let upstreams = (config.upstreams.iter())
            .zip(&load.health)
            .map(|(settings, health)| Upstream::new(settings, Arc::clone(health), &metrics))
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
                    rule.id.0,
                    rule.effect.as_str(),
                    rule.mode.as_str(),
                ])
            })
            .collect();
        // Every cause of a failed handshake shows from the start, as 0.
        for listener in load
            .listeners
            .iter()
            .filter(|listener| listener.tls.is_some())
        {
            for failure in handshake::Failure::ALL {
                metrics
                    .tls_handshake_errors
                    .with_label_values(&[listener.name.as_str(), failure.as_str()]);
            }
        }
        let geoip_lookups = if config.geoip.is_some() {
            (LookupResult::ALL.iter())
                .map(|result| metrics.geoip_lookups.with_label_values(&[result.as_str()]))
                .collect()
        } else {
            Vec::new()
        };
        Proxy {
            geoip_lookups,
            listeners: Arc::clone(&load.listeners),
            decision_log: Arc::clone(&load.decision_log),
            rule_matches,
            admission: Admission::new(config, Arc::clone(&load.geo)),
            upstreams,
            keep_override_headers: config.keep_override_headers,
            limits: config.limits.clone(),
            policy: Arc::clone(&config.policy),
            identity: Arc::clone(&load.identity),
            denials: config.denials.clone(),
            metrics,
            allowed,
        }
    }

    /// Bound listener `index` as this load serves it.
    pub fn listener(&self, index: usize) -> Option<&ListenerSettings> {
        self.listeners.get(index)
    }

    /// Whether forwarding headers from this socket peer are believed.
    fn is_trusted(&self, peer: IpAddr) -> bool {
        self.admission.is_trusted(peer)
    }

    /// Counts a country lookup in `geoip_lookups_total`.
    fn count_lookup(&self, located: Located) {
        if let Some(result) = located.lookup_result()
            && let Some(counter) = self.geoip_lookups.get(result as usize)
        {
            counter.inc();
        }
    }
}
