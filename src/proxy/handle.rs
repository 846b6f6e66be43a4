//! The per-request pipeline, and the only place that orders the phases:
//! limits → normalize (host, path, client IP) → route → decide → forward | deny → observe.
//!
//! Every request gets an `X-Request-Id` (kept from a trusted proxy, otherwise ours),
//! sent upstream and returned to the client, on errors too.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::AsyncWriteExt as _;

use super::admit::{self, Admitted, Head};
use super::client_http1::{ClientBody, ClientSwitch};
use super::forward::{self, ClientFacts};
use super::listener::{self, Activity, ConnMeta, ConnectionGuard};
use super::pool::Switched;
use super::respond::{self, ProxyError, X_REQUEST_ID};
use super::{Proxy, ProxyBody, normalize};
use crate::config::{BODILESS_METHODS, RouteId};
use crate::decision_log::{Decided, Refused};
use crate::policy::{ClientCertificate, Decision, Outcome, Principal};
use crate::telemetry::{self, DecisionLabel, NO_ROUTE_LABEL};

/// Serves one request. Never fails: every error becomes a problem+json response.
pub async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<ConnMeta>,
    request: Request<ClientBody>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let trusted = proxy.is_trusted(conn.peer.ip());
    let request_id = request_id(request.headers().get(&X_REQUEST_ID), trusted);
    let version = request.version();
    let method = request.method().clone();

    let mut response = match pipeline(&proxy, &conn, trusted, &request_id, request).await {
        Ok(Answer::Forwarded { route, response }) => {
            proxy.allowed[route].inc();
            response
        }
        Ok(Answer::Denied {
            route,
            decision,
            html,
        }) => {
            proxy
                .metrics
                .requests
                .with_label_values(&[
                    &route.0,
                    DecisionLabel::Deny.as_str(),
                    decision.reason.code(),
                ])
                .inc();
            respond::denied(
                &decision,
                &proxy.policy,
                &proxy.denials,
                &proxy.identity,
                request_id.to_str().unwrap_or(""),
                html,
            )
        }
        Err(failure) => failed(
            &proxy,
            &conn,
            &request_id,
            method.as_str(),
            version,
            failure,
        ),
    };
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    proxy
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Answers a request that the HTTP/1 reader refused before it was whole (a malformed or
/// ambiguous head): counted, logged and answered like any request refused before routing.
pub fn refuse(
    proxy: &Proxy,
    conn: &ConnMeta,
    method: &str,
    error: ProxyError,
) -> Response<ProxyBody> {
    let request_id = request_id(None, false);
    let failure = Failure::early(error);
    let mut response = failed(proxy, conn, &request_id, method, Version::HTTP_11, failure);
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    response
}

/// Counts a failed request, logs it if the policy did not already, and answers it.
fn failed(
    proxy: &Proxy,
    conn: &ConnMeta,
    request_id: &HeaderValue,
    method: &str,
    version: Version,
    failure: Failure<'_>,
) -> Response<ProxyBody> {
    let Failure {
        route,
        error: err,
        decided,
    } = failure;
    let route_label = route.map_or(NO_ROUTE_LABEL, |id| &id.0);
    proxy
        .metrics
        .requests
        .with_label_values(&[route_label, DecisionLabel::Error.as_str(), err.reason()])
        .inc();
    if !decided {
        proxy.decision_log.refused(&Refused {
            request_id: request_id.to_str().unwrap_or(""),
            route: route.map(|id| &*id.0),
            method,
            peer: conn.peer.ip(),
            reason: err.reason(),
        });
    }
    let mut response = respond::error(&err, request_id);
    // After a malformed or oversized request the rest of the connection's bytes cannot
    // be trusted to start a new request.
    if err.closes_connection() && version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// How a request that got through the pipeline was answered.
enum Answer<'p> {
    /// Allowed and forwarded; `route` indexes the config's routes.
    Forwarded {
        route: usize,
        response: Response<ProxyBody>,
    },
    /// Denied by the policy; `html` when the client prefers an HTML page.
    Denied {
        route: &'p RouteId,
        decision: Decision,
        html: bool,
    },
}

/// A request that failed, on the route it took (if it got that far), and whether it was
/// decided (and so has its decision-log line already).
struct Failure<'p> {
    route: Option<&'p RouteId>,
    error: ProxyError,
    decided: bool,
}

impl Failure<'_> {
    fn early(error: ProxyError) -> Self {
        Failure {
            route: None,
            error,
            decided: false,
        }
    }
}

async fn pipeline<'p>(
    proxy: &'p Proxy,
    conn: &ConnMeta,
    trusted: bool,
    request_id: &HeaderValue,
    mut request: Request<ClientBody>,
) -> Result<Answer<'p>, Failure<'p>> {
    let limits = &proxy.limits;
    check_limits(&request, limits.max_header_size, limits.max_body_size).map_err(Failure::early)?;

    // The client's side of a protocol switch, which HTTP/1 heads carry; the request is
    // consumed below.
    let client_upgrade = request.extensions_mut().remove::<ClientSwitch>();
    let upgrade = client_upgrade
        .as_ref()
        .map(|switch| switch.protocol.clone());
    let (mut parts, body) = request.into_parts();

    let head = Head {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        version: parts.version,
    };
    let admitted = proxy
        .admission
        .admit(head, conn.peer.ip())
        .map_err(|refusal| Failure::early(refusal.error))?;
    if let Some(problem) = admitted.forwarding_problem {
        tracing::warn!(
            request.id = request_id.to_str().unwrap_or(""),
            client.ip = %admitted.client_ip,
            "{problem}; deciding on the peer address"
        );
    }
    proxy.count_lookup(admitted.located);
    // SECURITY: a country header the gateway did not believe must not fool the policy's
    // header conditions or the upstream either.
    if !admitted.header_believed
        && let Some(name) = proxy.admission.geo().unbelieved_header()
    {
        parts.headers.remove(name);
    }
    let route = admitted.route;
    // SECURITY: content on a method that defines none is read as the next request by an
    // upstream that ignores it: a request smuggled past the policy.
    if !body.is_end_stream()
        && BODILESS_METHODS.contains(&parts.method)
        && !route.allow_body_on.contains(&parts.method)
    {
        return Err(Failure {
            route: Some(&route.id),
            error: ProxyError::BodyNotAllowed {
                method: parts.method.clone(),
            },
            decided: false,
        });
    }
    // SECURITY: a route whose upstream can be made to answer `101` would otherwise
    // become a tunnel that no later request on it is decided for.
    if let Some(switch) = &client_upgrade
        && !route.allows_upgrade(switch.protocol.as_bytes())
    {
        return Err(Failure {
            route: Some(&route.id),
            error: ProxyError::UpgradeNotAllowed,
            decided: false,
        });
    }
    let fail = |error: ProxyError| Failure {
        route: Some(&route.id),
        error,
        decided: true,
    };

    let client_cert = conn.tls.as_ref().and_then(|tls| tls.client_cert.as_ref());
    let identified = proxy
        .identity
        .identify(&parts.headers, parts.uri.query())
        .await
        .map(|principal| principal.or_else(|| proxy.identity.identify_certificate(client_cert?)));
    proxy.identity.strip_client_claims(&mut parts.headers);
    if let Err(rejection) = &identified
        && rejection.is_malformed_request()
    {
        // Refused before deciding, such as for two credentials: logged as an error.
        return Err(Failure {
            route: Some(&route.id),
            error: ProxyError::BadRequest(rejection.to_string()),
            decided: false,
        });
    }
    let principal = identified.as_ref().ok().and_then(Option::as_deref);
    let (decision, took) = match &identified {
        Ok(_) => decide(proxy, &parts, &admitted, principal, client_cert),
        Err(rejection) => (
            Decision::unauthenticated(rejection.reason()),
            Duration::ZERO,
        ),
    };
    let decided = Decided {
        request_id,
        route: &route.id.0,
        method: parts.method.as_str(),
        host: admitted.authority.host.as_deref(),
        path: &admitted.path,
        destination: (admitted.destination.as_ref()).map(|destination| destination.path.as_str()),
        client_ip: admitted.client_ip,
        country: admitted.located.country(),
        client_cert,
        principal,
        headers: &parts.headers,
    };
    proxy.decision_log.decided(&decided, &decision, took);
    if !decision.is_allowed() {
        return Ok(Answer::Denied {
            route: &route.id,
            decision,
            html: respond::prefers_html(parts.headers.get(header::ACCEPT)),
        });
    }

    // SECURITY: the upstream gets exactly the path that was decided on.
    let Admitted {
        authority,
        path,
        destination,
        ..
    } = admitted;
    if let Cow::Owned(canonical) = path {
        parts.uri = normalize::with_path(&parts.uri, &canonical).map_err(fail)?;
    }

    let client = ClientFacts {
        keep_override_headers: proxy.keep_override_headers,
        peer: &conn.peer_header,
        trusted,
        proto: if conn.tls.is_some() { "https" } else { "http" },
        host: authority.host_header.as_ref(),
    };
    let mut added = forward::request_headers(&mut parts.headers, &client, upgrade);
    let principal = identified.ok().flatten();
    proxy.identity.forward_headers(
        &mut parts.headers,
        principal.as_deref(),
        client_cert,
        |name, value| {
            added.set(name, value);
        },
    );
    added.set(X_REQUEST_ID, request_id.clone());
    // SECURITY: a MOVE or COPY writes to exactly the destination that was decided on.
    if let Some(destination) = destination {
        added.set(admit::DESTINATION, destination.header);
    }
    let upstream = &proxy.upstreams[route.upstream];
    let forward::Forwarded { response, switched } = upstream
        .send(parts, &added, body, limits.max_body_size)
        .await
        .map_err(fail)?;

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match (client_upgrade, switched) {
        // SECURITY: bytes the client sent before the switch was agreed would go into the
        // tunnel without ever being read as HTTP; refuse the switch and close.
        (Some(client), _) if switching && client.data_followed => {
            return Err(fail(ProxyError::BadRequest(
                "the client sent data before the protocol switch was answered".into(),
            )));
        }
        (Some(client_upgrade), Some(upstream_upgrade)) if switching => {
            tokio::spawn(tunnel(
                client_upgrade,
                upstream_upgrade,
                conn.guard.clone(),
                conn.activity.clone(),
                limits.idle_timeout,
            ));
        }
        _ if switching => {
            // A 101 nobody asked for would leave both sides speaking different protocols.
            return Err(fail(ProxyError::UpstreamUnreachable {
                upstream: upstream.name().to_string(),
                source: "the upstream switched protocols without being asked".into(),
            }));
        }
        _ => {}
    }
    Ok(Answer::Forwarded {
        route: route.index,
        response,
    })
}

/// Runs the policy on the admitted request and counts what it did.
fn decide(
    proxy: &Proxy,
    parts: &http::request::Parts,
    admitted: &Admitted<'_, '_>,
    principal: Option<&Principal>,
    client_cert: Option<&ClientCertificate>,
) -> (Decision, Duration) {
    let started = Instant::now();
    let decision = admit::evaluate(
        &proxy.policy,
        &parts.method,
        &parts.headers,
        admitted,
        principal,
        client_cert,
    );
    let took = started.elapsed();
    proxy.metrics.decision_duration.observe(took.as_secs_f64());
    for step in &decision.trace {
        if step.outcome == Outcome::Matched
            && let Some(counter) = proxy.rule_matches.get(step.position)
        {
            counter.inc();
        }
    }
    (decision, took)
}

/// Refuses heads over `max_header_size` (431) and declared bodies over `max_body_size`
/// (413) before any byte goes upstream. Chunked bodies are counted while they stream.
fn check_limits(
    request: &Request<ClientBody>,
    max_header_size: usize,
    max_body_size: Option<u64>,
) -> Result<(), ProxyError> {
    // The head as it was on the wire: request line, then `name: value\r\n` per field.
    let uri = request.uri();
    let target_size = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri
            .authority()
            .map_or(0, |a| a.as_str().len() + "http://".len());
    let head_size = request.method().as_str().len()
        + target_size
        + " HTTP/1.1\r\n".len()
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head_size > max_header_size {
        return Err(ProxyError::HeaderTooLarge {
            limit: max_header_size,
        });
    }
    if let Some(limit) = max_body_size
        && request.body().size_hint().lower() > limit
    {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    Ok(())
}

/// Copies bytes both ways between the client and the upstream once both switched. The
/// tunnel keeps the client connection's slot (`guard`) and closes when idle.
async fn tunnel(
    client: ClientSwitch,
    upstream: Switched,
    _guard: Arc<ConnectionGuard>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
) {
    let Some(mut client) = client.socket().await else {
        tracing::debug!("the connection ended before the protocol switch was answered");
        return;
    };
    let Switched {
        stream: mut upstream,
        early,
    } = upstream;
    let copy = async {
        // What the upstream sent right after its 101 is the first of the new protocol.
        client.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
    };
    tokio::select! {
        copied = copy => {
            if let Err(err) = copied {
                tracing::debug!(error = %err, "tunnel closed with an error");
            }
        }
        () = listener::idle(&activity, idle_timeout) => {
            tracing::debug!("tunnel idle; closing it");
        }
    }
}

/// The request's id: a trusted proxy's well-formed `X-Request-Id`, otherwise a new one.
fn request_id(incoming: Option<&HeaderValue>, trusted: bool) -> HeaderValue {
    if trusted
        && let Some(value) = incoming
        && telemetry::is_valid_request_id(value.as_bytes())
    {
        return value.clone();
    }
    HeaderValue::from_bytes(&telemetry::new_request_id())
        .expect("generated request ids are ASCII alphanumerics")
}
