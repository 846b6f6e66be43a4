//! The per-request pipeline, and the only place that orders the phases:
//! limits → normalize (host, path) → route → forward → respond → observe.
//!
//! Every request gets an `X-Request-Id` (kept from a trusted proxy, otherwise ours),
//! sent upstream and returned to the client, on errors too.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::forward::{self, ClientFacts};
use super::listener::{self, Activity, ConnMeta, ConnectionGuard};
use super::respond::{self, ProxyError};
use super::{Proxy, ProxyBody, normalize};
use crate::config::RouteId;
use crate::telemetry::{self, DecisionLabel, NO_ROUTE_LABEL};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Serves one request. Never fails: every error becomes a problem+json response.
pub async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<ConnMeta>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let trusted = proxy.is_trusted(conn.peer.ip());
    let request_id = request_id(request.headers().get(&X_REQUEST_ID), trusted);
    let version = request.version();

    let mut response = match pipeline(&proxy, &conn, trusted, &request_id, request).await {
        Ok((route_index, response)) => {
            proxy.allowed[route_index].inc();
            response
        }
        Err((route, err)) => {
            let route_label = route.as_ref().map_or(NO_ROUTE_LABEL, |id| &id.0);
            proxy
                .metrics
                .requests
                .with_label_values(&[route_label, DecisionLabel::Error.as_str(), err.reason()])
                .inc();
            let mut response = respond::error(&err, &request_id);
            // After a malformed or oversized request the rest of the connection's bytes
            // cannot be trusted to start a new request.
            if err.closes_connection() && version < Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    proxy
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

type Failure = (Option<RouteId>, ProxyError);

async fn pipeline(
    proxy: &Proxy,
    conn: &ConnMeta,
    trusted: bool,
    request_id: &HeaderValue,
    mut request: Request<Incoming>,
) -> Result<(usize, Response<ProxyBody>), Failure> {
    let limits = &proxy.limits;
    check_limits(&request, limits.max_header_size, limits.max_body_size)
        .map_err(|err| (None, err))?;

    // Take the client's side of a protocol switch now; the request is consumed below.
    let upgrade = requested_upgrade(&request);
    let client_upgrade: Option<OnUpgrade> =
        upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();

    let authority = normalize::authority(&parts).map_err(|err| (None, err))?;
    let path = normalize::path(parts.uri.path()).map_err(|err| (None, err))?;

    let route = proxy
        .routes
        .select(authority.host.as_deref(), &path)
        .ok_or((None, ProxyError::NoRoute))?;
    let fail = |err: ProxyError| (Some(route.id.clone()), err);
    // SECURITY: the upstream gets exactly the path that was routed on.
    if let Cow::Owned(canonical) = path {
        parts.uri = normalize::with_path(&parts.uri, &canonical).map_err(fail)?;
    }

    let client = ClientFacts {
        keep_override_headers: proxy.keep_override_headers,
        peer: &conn.peer_header,
        trusted,
        proto: "http",
        host: authority.host_header.as_ref(),
    };
    forward::request_headers(&mut parts.headers, &client, upgrade);
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    let upstream = &proxy.upstreams[route.upstream];
    let mut response = upstream
        .send(parts, body, limits.max_body_size)
        .await
        .map_err(fail)?;

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_upgrade {
        Some(client_upgrade) if switching => {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
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
    forward::response_headers(response.headers_mut(), switching);
    Ok((route.index, response))
}

/// Refuses heads over `max_header_size` (431) and declared bodies over `max_body_size`
/// (413) before any byte goes upstream. Chunked bodies are counted while they stream.
fn check_limits(
    request: &Request<Incoming>,
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

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` plus
/// `Upgrade`). `h2c` is never passed on: it would turn a checked connection into an
/// unchecked HTTP/2 tunnel to the upstream.
fn requested_upgrade(request: &Request<Incoming>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    let h2c = protocol
        .to_str()
        .map(|text| {
            text.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("h2c"))
        })
        .unwrap_or(true);
    (connection_upgrade && !h2c).then(|| protocol.clone())
}

/// Copies bytes both ways between the client and the upstream once both switched. The
/// tunnel keeps the client connection's slot (`guard`) and closes when idle.
async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    _guard: Arc<ConnectionGuard>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!(error = %err, "protocol switch failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
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
