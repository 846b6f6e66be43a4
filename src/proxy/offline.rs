//! A synthetic request decided offline, for `portcullis explain` and `portcullis test`:
//! the same normalization, routing and policy as a live request, without sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, Request, Version};

use super::admit::{self, Admission, Head};
use super::normalize;
use super::respond::ProxyError;
use crate::config::cases::Actual;
use crate::config::{Config, RouteId};
use crate::geoip::{Geo, Located};
use crate::identity::Identity;
use crate::policy::{ClientCertificate, Country, Decision, Principal};
use crate::telemetry::Metrics;

/// Who the synthetic request comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// Whoever its headers' credentials say (none: anonymous).
    FromRequest,
    /// A simulated principal (`--as`), no verification.
    Simulated(Principal),
    /// This token, verified as live (`--token`).
    Token(String),
}

/// What the gateway would do with a request.
#[derive(Debug)]
pub struct Offline {
    /// The route it takes, when it gets that far.
    pub route: Option<RouteId>,
    /// The path that would be decided on and forwarded.
    pub path: Option<String>,
    /// The client address the policy would see.
    pub client_ip: IpAddr,
    /// The client's country, when a rule names countries.
    pub located: Located,
    /// The decision, or why the request is refused before one.
    pub verdict: Verdict,
}

/// A decision, or a refusal before any rule.
#[derive(Debug)]
pub enum Verdict {
    /// The policy decided.
    Decided(Decision),
    /// Refused with a 400, 404 or 405 before deciding.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The reason code.
        reason: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl Offline {
    /// The answer as `explain --json` and `POST /explain` give it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::json!({
            "route": self.route.as_ref().map(|route| route.to_string()),
            "path": self.path,
            "client_ip": self.client_ip.to_string(),
            "country": self.located.country().map(|country| country.to_string()),
        });
        match &self.verdict {
            Verdict::Refused {
                status,
                reason,
                detail,
            } => {
                out["decision"] = "refused".into();
                out["status"] = (*status).into();
                out["reason"] = (*reason).into();
                out["explanation"] = detail.as_str().into();
            }
            Verdict::Decided(decision) => {
                out["decision"] = decision.effect.as_str().into();
                out["status"] = if decision.is_allowed() {
                    200
                } else {
                    crate::proxy::respond::denial_status(&decision.reason).as_u16()
                }
                .into();
                out["reason"] = decision.reason.code().into();
                out["rule"] = decision.rule.as_ref().map(|rule| rule.to_string()).into();
                out["explanation"] = decision.reason.to_string().into();
                out["hint"] = crate::proxy::respond::hint(&decision.reason).into();
                out["trace"] = decision
                    .trace
                    .iter()
                    .map(|step| {
                        serde_json::json!({
                            "rule": step.rule.to_string(),
                            "effect": step.effect.as_str(),
                            "mode": step.mode.as_str(),
                            "outcome": step.outcome.to_string(),
                        })
                    })
                    .collect();
            }
        }
        out
    }

    /// The answer in the terms of a test case.
    pub fn actual(&self) -> Actual {
        match &self.verdict {
            Verdict::Decided(decision) => Actual {
                decision: decision.effect.as_str().to_owned(),
                reason: decision.reason.code().to_owned(),
                rule: decision.rule.as_ref().map(|rule| rule.to_string()),
            },
            Verdict::Refused { reason, .. } => Actual {
                decision: "refused".to_owned(),
                reason: (*reason).to_owned(),
                rule: None,
            },
        }
    }
}

/// The identity setup of `config` with its issuers' `jwks_url` key sets fetched once, as
/// the gateway does at start. A fetch that fails is reported on stderr; that issuer's
/// tokens are then refused, as they would be live.
pub fn identity(config: &Config) -> Identity {
    let identity = Identity::new(&config.identity, &Metrics::new(1), None);
    if identity.remote_key_sets().next().is_some() {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(identity.load_keys()),
            Err(err) => eprintln!("cannot fetch token keys: {err}"),
        }
        for problem in identity.unavailable() {
            eprintln!("warning: {problem}");
        }
    }
    identity
}

/// A synthetic request, as `explain`, a test case or `POST /explain` describes it.
pub struct Synthetic<'a> {
    /// The method.
    pub method: &'a str,
    /// The URL; one without a host is sent without one (as HTTP/1.0 may).
    pub url: &'a str,
    /// The socket peer.
    pub peer: IpAddr,
    /// The header fields.
    pub headers: &'a [(String, String)],
    /// Who calls.
    pub caller: &'a Caller,
    /// The certificate the connection would have shown.
    pub client_cert: Option<&'a ClientCertificate>,
    /// The client's country, instead of what the geo setup finds (`--country`).
    pub country: Option<Country>,
}

/// The country setup of `config` for offline decisions: its database read once. A
/// database that does not load (or covers one address family) is reported on stderr;
/// country conditions then fail closed, as they would live.
pub fn geo(config: &Config) -> Arc<Geo> {
    let geo = Geo::load(config.geoip.as_ref(), None);
    for warning in geo.warnings() {
        eprintln!("warning: {warning}");
    }
    Arc::new(geo)
}

/// Decides `request` as the gateway running `config` would. Credentials among its
/// headers are verified as live with `identity` (see [`identity`]), unless its caller
/// says otherwise; its country comes from `geo` (see [`geo`]) unless it names one.
pub fn decide(
    config: &Config,
    identity: &Identity,
    geo: &Arc<Geo>,
    request: &Synthetic<'_>,
) -> Offline {
    let geo = match request.country {
        Some(country) => Arc::new(Geo::fixed(country, config.geoip.as_ref())),
        None => Arc::clone(geo),
    };
    decide_admitting(config, &Admission::new(config, geo), identity, request)
}

/// Decides many synthetic requests under one config as [`decide`] does, with what
/// admission needs built once for each country named rather than once per request.
/// A request that names no country has none: no database is read.
pub struct Batch<'c> {
    config: &'c Config,
    identity: &'c Identity,
    admissions: HashMap<Option<Country>, Admission>,
}

impl<'c> Batch<'c> {
    /// A batch under `config`, whose callers are verified with `identity`.
    pub fn new(config: &'c Config, identity: &'c Identity) -> Batch<'c> {
        Batch {
            config,
            identity,
            admissions: HashMap::new(),
        }
    }

    /// Decides one request.
    pub fn decide(&mut self, request: &Synthetic<'_>) -> Offline {
        let config = self.config;
        let admission = self.admissions.entry(request.country).or_insert_with(|| {
            let geo = match request.country {
                Some(country) => Geo::fixed(country, config.geoip.as_ref()),
                None => Geo::default(),
            };
            Admission::new(config, Arc::new(geo))
        });
        decide_admitting(config, admission, self.identity, request)
    }
}

/// Decides `request` through `admission`, which is `config`'s.
fn decide_admitting(
    config: &Config,
    admission: &Admission,
    identity: &Identity,
    request: &Synthetic<'_>,
) -> Offline {
    let Synthetic {
        method,
        url,
        peer,
        headers,
        caller,
        client_cert,
        country: _,
    } = *request;
    let refused = |client_ip: IpAddr, route: Option<RouteId>, err: ProxyError| Offline {
        route,
        path: None,
        client_ip,
        located: Located::NotAsked,
        verdict: Verdict::Refused {
            status: err.status().as_u16(),
            reason: err.reason(),
            detail: err.to_string(),
        },
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return refused(
            peer,
            None,
            ProxyError::BadRequest(format!("\"{method}\" is not a method")),
        );
    };
    if let Err(err) = normalize::refuse_fragment(url.as_bytes()) {
        return refused(peer, None, err);
    }
    let mut builder = Request::builder().method(method).uri(url);
    let has_host = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"));
    if !url.starts_with("http") && !has_host {
        builder = builder.version(Version::HTTP_10);
    }
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return refused(
                peer,
                None,
                ProxyError::BadRequest(format!("header \"{name}\" is not valid")),
            );
        };
        builder = builder.header(name, value);
    }
    let mut parts = match builder.body(()) {
        Ok(request) => request.into_parts().0,
        Err(err) => {
            return refused(
                peer,
                None,
                ProxyError::BadRequest(format!("\"{url}\" is not a request target ({err})")),
            );
        }
    };
    // Hop-by-hop fields, and those `Connection` names, describe a connection: the
    // gateway leaves them out of every request it reads, and so does this one.
    super::forward::remove_hop_by_hop(&mut parts.headers);

    let head = Head {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        version: parts.version,
    };
    let admitted = match admission.admit(head, peer) {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal.client_ip, None, refusal.error),
    };
    let route = admitted.route;
    let client_ip = admitted.client_ip;
    let located = admitted.located;
    let verified = match caller {
        Caller::Simulated(principal) => Ok(Some(std::sync::Arc::new(principal.clone()))),
        Caller::Token(token) => identity.verify_token(token).map(Some),
        Caller::FromRequest => identity
            .authenticate(&parts.headers, parts.uri.query())
            .map(|principal| principal.or_else(|| identity.identify_certificate(client_cert?))),
    };
    let mut headers = parts.headers.clone();
    identity.strip_client_claims(&mut headers);
    // As live: a country header that was not believed decides nothing.
    if !admitted.header_believed
        && let Some(name) = admission.geo().unbelieved_header()
    {
        headers.remove(name);
    }
    let principal = match verified {
        Ok(principal) => principal,
        Err(rejection) if rejection.is_malformed_request() => {
            return refused(
                client_ip,
                Some(route.id.clone()),
                ProxyError::BadRequest(rejection.to_string()),
            );
        }
        Err(rejection) => {
            return Offline {
                route: Some(route.id.clone()),
                path: Some(admitted.path.into_owned()),
                client_ip,
                located,
                verdict: Verdict::Decided(Decision::unauthenticated(rejection.reason())),
            };
        }
    };
    let decision = admit::evaluate(
        &config.policy,
        &parts.method,
        &headers,
        &admitted,
        principal.as_deref(),
        client_cert,
    );
    Offline {
        route: Some(route.id.clone()),
        path: Some(admitted.path.into_owned()),
        client_ip,
        located,
        verdict: Verdict::Decided(decision),
    }
}
