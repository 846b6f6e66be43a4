//! Admission: what every request goes through before its caller is identified, whether
//! it arrives on a socket or is explained offline. The method, the host, the canonical
//! path, the client address and the route; then the facts the policy decides on.
//! The live handler and `offline` both call [`Admission::admit`] and [`evaluate`], so
//! `portcullis explain` decides exactly what the gateway decides.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use ipnet::IpNet;

use super::normalize::{self, Authority};
use super::respond::ProxyError;
use super::route::{Route, RouteTable};
use crate::config::{Config, ForwardedHeader};
use crate::geoip::{Geo, Located};
use crate::policy::{ClientCertificate, Decision, PolicySet, Principal, RequestFacts};

/// WebDAV's `Destination` (RFC 4918 §10.3): where a `MOVE` or `COPY` writes.
pub const DESTINATION: HeaderName = HeaderName::from_static("destination");

/// What admission reads of the serving state: the routes, whose forwarding headers
/// are believed, and where countries come from.
pub struct Admission {
    routes: RouteTable,
    trusted_proxies: Vec<IpNet>,
    forwarded_header: ForwardedHeader,
    geo: Arc<Geo>,
    /// Whether a rule names countries: only then is a request located.
    locate: bool,
}

/// A request admitted: where it goes and what the policy will see of it. `'r` is the
/// serving state's lifetime, `'u` the request target's.
pub struct Admitted<'r, 'u> {
    /// The host and the `Host` to send upstream.
    pub authority: Authority,
    /// The canonical path the policy decides on and the upstream receives.
    pub path: Cow<'u, str>,
    /// The client's address: the peer, or what a trusted proxy reports.
    pub client_ip: IpAddr,
    /// The client's country, when a rule names countries.
    pub located: Located,
    /// Whether the country header (`network.geoip.header`) was believed; one that was not
    /// is removed before forwarding.
    pub header_believed: bool,
    /// Why a trusted proxy's forwarding header was not believed, when it was not.
    pub forwarding_problem: Option<&'static str>,
    /// The route it takes.
    pub route: &'r Route,
    /// A WebDAV `MOVE` or `COPY`'s second path, which the policy decides too.
    pub destination: Option<Destination>,
}

/// The `Destination` of a WebDAV `MOVE` or `COPY` (RFC 4918 §10.3): the path the request
/// writes to, decided by the policy like its own.
pub struct Destination {
    /// The canonical path decided on (lower-cased on a `case_insensitive` route).
    pub path: String,
    /// The field the upstream gets: the client's, with that path.
    pub header: HeaderValue,
}

/// A request head as admission reads it. The target (`'u`) is borrowed for as long as
/// the admitted path, which is often a slice of it; the rest (`'h`) only during admission.
pub struct Head<'h, 'u> {
    /// The method.
    pub method: &'h Method,
    /// The request target.
    pub uri: &'u Uri,
    /// The header fields.
    pub headers: &'h HeaderMap,
    /// The HTTP version (an HTTP/1.0 request may name no host).
    pub version: Version,
}

/// A request refused before its caller is identified.
pub struct Refusal {
    /// The client's address as far as it was read (the peer before that).
    pub client_ip: IpAddr,
    /// Why.
    pub error: ProxyError,
}

impl Admission {
    /// The admission of a config's routes and trusted proxies, locating clients with `geo`.
    pub fn new(config: &Config, geo: Arc<Geo>) -> Admission {
        Admission {
            routes: RouteTable::new(&config.routes),
            trusted_proxies: config.trusted_proxies.clone(),
            forwarded_header: config.forwarded_header,
            geo,
            locate: config.policy.uses_countries(),
        }
    }

    /// Where countries come from.
    pub fn geo(&self) -> &Geo {
        &self.geo
    }

    /// Whether forwarding headers from this socket peer are believed.
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// Admits a request head from `peer`, or says why it is refused: a method in another
    /// case, `CONNECT`, a missing or doubled host, an ambiguous path, or no route.
    pub fn admit<'r, 'u>(
        &'r self,
        head: Head<'_, 'u>,
        peer: IpAddr,
    ) -> Result<Admitted<'r, 'u>, Refusal> {
        let refuse = |client_ip: IpAddr| move |error: ProxyError| Refusal { client_ip, error };
        normalize::method(head.method).map_err(refuse(peer))?;
        if head.method == Method::CONNECT {
            return Err(refuse(peer)(ProxyError::ConnectRefused));
        }
        let client = normalize::client_ip(head.headers, peer, self.forwarded_header, |ip| {
            self.is_trusted(ip)
        });
        let (client_ip, forwarding_problem) = (client.ip, client.problem);
        let authority = normalize::authority(head.uri, head.headers, head.version)
            .map_err(refuse(client_ip))?;
        let path = normalize::path(head.uri.path()).map_err(refuse(client_ip))?;
        let route = self
            .routes
            .select(authority.host.as_deref(), &path)
            .ok_or(ProxyError::NoRoute)
            .map_err(refuse(client_ip))?;
        // SECURITY: a server that decodes twice reads `/%2561dmin` as `/admin`.
        if !route.allow_encoded_percent && crate::path::has_encoded_percent_escape(&path) {
            return Err(refuse(client_ip)(ProxyError::BadRequest(
                "the path is double-encoded (%25 followed by two hex digits)".into(),
            )));
        }
        let path = route.decision_path(path);
        let destination = self
            .destination(&head, authority.host.as_deref(), route)
            .map_err(refuse(client_ip))?;
        let reported = self.geo.reported(head.headers, client.accepted_by);
        let located = if self.locate {
            self.geo.locate(client_ip, reported)
        } else {
            Located::NotAsked
        };
        Ok(Admitted {
            authority,
            path,
            client_ip,
            located,
            header_believed: reported.is_some(),
            forwarding_problem,
            route,
            destination,
        })
    }

    /// The second path of a WebDAV `MOVE` or `COPY`, in canonical form. It must name the
    /// request's own host (or none) and take the same route: a write the policy cannot
    /// see whole is refused. Other methods have none (their `Destination` is removed
    /// before forwarding).
    fn destination(
        &self,
        head: &Head<'_, '_>,
        host: Option<&str>,
        route: &Route,
    ) -> Result<Option<Destination>, ProxyError> {
        let writes_elsewhere = head.method.as_str() == "MOVE" || head.method.as_str() == "COPY";
        if !writes_elsewhere {
            return Ok(None);
        }
        let bad = |why: &str| ProxyError::BadRequest(format!("the Destination {why}"));
        let mut fields = head.headers.get_all(DESTINATION).iter();
        let Some(value) = fields.next() else {
            // The upstream refuses a MOVE or COPY without one; nothing to decide.
            return Ok(None);
        };
        if fields.next().is_some() {
            return Err(bad("field is repeated"));
        }
        let uri: Uri = value
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| bad("is not a URI"))?;
        if let Some(authority) = uri.authority() {
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return Err(bad("is not an http or https URI"));
            }
            let named = normalize::parse_host(authority.as_str().as_bytes());
            if named.is_none() || named.as_deref() != host {
                return Err(bad("names another host"));
            }
        }
        let path = normalize::path(uri.path())?;
        if !route.allow_encoded_percent && crate::path::has_encoded_percent_escape(&path) {
            return Err(bad("is double-encoded (%25 followed by two hex digits)"));
        }
        let same_route = self
            .routes
            .select(host, &path)
            .is_some_and(|taken| taken.index == route.index);
        if !same_route {
            return Err(bad("is served by another route"));
        }
        let path = route.decision_path(path).into_owned();
        let written = match (uri.authority(), uri.query()) {
            (Some(authority), query) => format!(
                "{}://{authority}{path}{}{}",
                uri.scheme_str().unwrap_or("http"),
                if query.is_some() { "?" } else { "" },
                query.unwrap_or("")
            ),
            (None, Some(query)) => format!("{path}?{query}"),
            (None, None) => path.clone(),
        };
        let header = HeaderValue::try_from(written).map_err(|_| bad("is not a URI"))?;
        Ok(Some(Destination { path, header }))
    }
}

/// Decides an admitted request for `principal` (`None`: anonymous), which came with
/// `client_cert` (verified in the TLS handshake). `headers` are the
/// request's once the identity headers a client sent are removed; the policy sees those
/// it refers to.
pub fn evaluate(
    policy: &PolicySet,
    method: &Method,
    headers: &HeaderMap,
    admitted: &Admitted<'_, '_>,
    principal: Option<&Principal>,
    client_cert: Option<&ClientCertificate>,
) -> Decision {
    let headers = normalize::policy_headers(policy.header_names(), headers);
    let facts = |path| RequestFacts {
        method: method.as_str(),
        host: admitted.authority.host.as_deref(),
        path,
        client_ip: admitted.client_ip,
        headers: &headers,
        principal,
        client_cert,
        country: admitted.located.country(),
    };
    let decision = policy.evaluate(&facts(&admitted.path));
    match &admitted.destination {
        // A MOVE or COPY writes to its destination too: the same method must be allowed
        // there, and a denial there is the answer.
        Some(destination) if decision.is_allowed() => {
            let there = policy.evaluate(&facts(&destination.path));
            if there.is_allowed() { decision } else { there }
        }
        _ => decision,
    }
}
