//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/policy`, `/decisions`,
//! `POST /reload` and `POST /explain`, on its own address (loopback by default) so that clients of the
//! proxy can never reach it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::HostPattern;
use crate::config::cases::{parse_client_cert, parse_principal};
use crate::policy::Country;
use crate::proxy::offline::{self, Caller, Synthetic};
use crate::proxy::{Serving, normalize};
use crate::reload::Reloader;
use crate::telemetry::Metrics;

/// Answers `200` while the process runs (a liveness probe).
pub const LIVE_PATH: &str = "/healthz";
/// Answers `200` when the gateway should get traffic, `503` with the reason when not (a
/// readiness probe, and what `portcullis healthcheck` asks).
pub const READY_PATH: &str = "/readyz";

/// The Prometheus text format.
pub const METRICS_PATH: &str = "/metrics";

/// Recent decisions: `/decisions/{request_id}`, and `/decisions?reason=…` to list them.
pub const DECISIONS_PATH: &str = "/decisions";

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Every client listener is bound and accepting.
    pub listeners_bound: AtomicBool,
    /// Shutdown has begun; load balancers should stop sending traffic.
    pub draining: AtomicBool,
}

/// What the admin endpoints read.
pub struct AdminState {
    /// The metrics `/metrics` exports.
    pub metrics: Arc<Metrics>,
    /// The state `/readyz` reports.
    pub readiness: Arc<Readiness>,
    /// The serving state, whose token keys `/readyz` checks.
    pub serving: Arc<Serving>,
    /// What `/policy` reports and `POST /reload` runs.
    pub reloader: Arc<Reloader>,
    /// Names `Host` may carry besides IP addresses and `localhost` (`admin.allowed_hosts`).
    pub allowed_hosts: Vec<HostPattern>,
}

/// Whether an admin request's `Host` names the admin listener: an IP address,
/// `localhost`, or an allowed name. None at all (HTTP/1.0) is let through: browsers
/// always send one.
///
/// SECURITY: DNS rebinding. A web page at `evil.example` can have its name resolve to
/// 127.0.0.1 and then read this listener as its own origin; its requests still carry
/// `Host: evil.example`.
fn host_allowed(request: &Request<Incoming>, allowed: &[HostPattern]) -> bool {
    let mut hosts = request.headers().get_all(HOST).iter();
    let Some(value) = hosts.next() else {
        return true;
    };
    if hosts.next().is_some() {
        return false;
    }
    let Some(host) = normalize::parse_host(value.as_bytes()) else {
        return false;
    };
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || literal.parse::<std::net::IpAddr>().is_ok()
        || allowed.iter().any(|pattern| pattern.matches(&host))
}

/// Admin connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 128;

/// Serves admin requests for the life of the process, through the drain too, so that
/// `/readyz` can say "shutting down" and `/healthz` keeps answering.
pub async fn run(listener: TcpListener, state: Arc<AdminState>) {
    // HTTP/1.1 only, and hyper's own head timer, which also runs while a connection waits
    // for its first or next request: a silent connection cannot hold a slot for long.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(serve(&state, request).await) }
            });
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
}

async fn serve(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !host_allowed(&request, &state.allowed_hosts) {
        return text(
            StatusCode::FORBIDDEN,
            "admin requests must name this listener in Host: an IP address, localhost, or a name in admin.allowed_hosts\n",
        );
    }
    if request.method() == Method::POST {
        // SECURITY: a web page can make a browser POST to a loopback address without
        // asking (a "simple" cross-site request). Browsers mark their requests; tools such
        // as curl do not. Admin changes are for tools.
        let from_browser = ["origin", "sec-fetch-site", "sec-fetch-mode"]
            .iter()
            .any(|name| request.headers().contains_key(*name));
        if from_browser {
            return text(
                StatusCode::FORBIDDEN,
                "admin POSTs are not accepted from browsers; use curl or another tool\n",
            );
        }
        return match request.uri().path() {
            "/reload" => match state.reloader.reload("POST /reload").await {
                Ok(status) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "result": "ok", "policy": status }),
                ),
                Err(failure) => json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({ "result": "error", "error": failure,
                        "policy": state.reloader.status() }),
                ),
            },
            "/explain" => explain(state, request).await,
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: POST is served at /reload and /explain\n",
            ),
        };
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET, HEAD and POST are served here\n",
        );
    }
    match request.uri().path() {
        "/policy" => json(StatusCode::OK, &state.reloader.status()),
        LIVE_PATH => text(StatusCode::OK, "ok\n"),
        READY_PATH => {
            let readiness = &state.readiness;
            if readiness.draining.load(Ordering::Relaxed) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: shutting down\n",
                )
            } else if !readiness.listeners_bound.load(Ordering::Relaxed) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: listeners are not bound yet\n",
                )
            } else {
                let load = state.serving.load();
                let mut unavailable = load.identity().unavailable();
                unavailable.extend(load.geo().unavailable().map(str::to_owned));
                if unavailable.is_empty() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {}\n", unavailable.join("; ")),
                    )
                }
            }
        }
        METRICS_PATH => {
            let mut response = text(StatusCode::OK, state.metrics.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        DECISIONS_PATH => decisions(state, request.uri().query().unwrap_or("")),
        path => match path
            .strip_prefix(DECISIONS_PATH)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            Some(id) => decision(state, id),
            None => text(
                StatusCode::NOT_FOUND,
                "not found: the admin listener serves /healthz, /readyz, /metrics, /policy, /decisions, POST /reload and POST /explain\n",
            ),
        },
    }
}

/// `GET /decisions/{request_id}`: the request's decision-log line, while the ring of
/// recent decisions (`log.recent`) still holds it.
fn decision(state: &AdminState, id: &str) -> Response<Full<Bytes>> {
    let load = state.serving.load();
    let log = load.decision_log();
    // Request ids are letters, digits and `-_.:`: nothing in one is escaped in a path.
    if let Some(line) = log.find(id) {
        let mut body = line.into_bytes();
        body.push(b'\n');
        return json_text(StatusCode::OK, body);
    }
    let (kept, recent) = log.recent_kept();
    let why = if recent == 0 {
        "log.recent is 0, so no decisions are kept".to_owned()
    } else {
        format!(
            "it is not among the {kept} most recent decisions kept (log.recent: {recent}): it is older, it is an allowed request that log.sample_allows left out, or no request had that id"
        )
    };
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({ "error": format!("no decision for request id \"{id}\": {why}"),
            "kept": kept, "recent": recent }),
    )
}

/// `GET /decisions?decision=&reason=&rule=&limit=`: recent decision-log lines, newest
/// first, those whose fields equal the ones given.
fn decisions(state: &AdminState, query: &str) -> Response<Full<Bytes>> {
    /// Lines listed when `limit` is not given.
    const DEFAULT_LIMIT: usize = 100;
    /// The most lines one answer lists: about 2 MiB.
    const MAX_LIMIT: usize = 1000;
    let mut filter = crate::decision_log::recent::Filter::default();
    let mut limit = DEFAULT_LIMIT;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = crate::path::form_decoded(value).into_owned();
        match key {
            "decision" => filter.decision = Some(value),
            "reason" => filter.reason = Some(value),
            "rule" => filter.rule = Some(value),
            "limit" => match value.parse::<usize>() {
                Ok(asked) if (1..=MAX_LIMIT).contains(&asked) => limit = asked,
                _ => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({ "error": format!("limit \"{value}\" is not a whole number from 1 to {MAX_LIMIT}") }),
                    );
                }
            },
            other => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": format!("\"{other}\" is not a filter: use decision, reason, rule and limit, as in /decisions?reason=missing_scope&limit=20") }),
                );
            }
        }
    }
    let load = state.serving.load();
    let log = load.decision_log();
    let (kept, recent) = log.recent_kept();
    let lines = log.select(&filter, limit.min(recent.max(1)));
    // The lines are JSON already: written as they are, not parsed and written again.
    let mut body = String::from("{\"decisions\":[");
    body.push_str(&lines.join(","));
    body.push_str(&format!(
        "],\"count\":{},\"kept\":{kept},\"recent\":{recent}}}\n",
        lines.len()
    ));
    json_text(StatusCode::OK, body.into_bytes())
}

/// `POST /explain`: what `portcullis explain --json` answers, for a request described in
/// JSON, decided by the serving state (its policy, and its token keys as loaded).
async fn explain(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    /// The largest description read.
    const MAX_BODY: usize = 64 * 1024;
    /// How long the description may take to arrive: a trickled body must not hold one
    /// of the admin listener's few connections.
    const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Explain {
        #[serde(default = "default_method")]
        method: String,
        url: String,
        ip: Option<std::net::IpAddr>,
        #[serde(default)]
        headers: std::collections::BTreeMap<String, String>,
        #[serde(rename = "as")]
        principal: Option<String>,
        token: Option<String>,
        client_cert: Option<String>,
        country: Option<String>,
    }
    fn default_method() -> String {
        "GET".to_owned()
    }

    let bad = |problem: String| {
        json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": problem,
                "expected": { "method": "GET", "url": "https://host/path", "ip": "203.0.113.7",
                    "headers": { "X-Api-Key": "..." }, "as": "sub=alice,roles=editor", "token": "JWT",
                    "client_cert": "uri=spiffe://example.org/ns/a/sa/b", "country": "DE" } }),
        )
    };
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        http_body_util::Limited::new(request.into_body(), MAX_BODY).collect(),
    )
    .await;
    let body = match read {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(err)) => return bad(format!("cannot read the body: {err}")),
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time\n",
            );
        }
    };
    let asked: Explain = match serde_json::from_slice(&body) {
        Ok(asked) => asked,
        Err(err) => return bad(format!("not a request description: {err}")),
    };
    let caller = match (asked.principal.as_deref().map(parse_principal), asked.token) {
        (Some(_), Some(_)) => return bad("give as or token, not both".to_owned()),
        (Some(Err(problem)), None) => return bad(format!("as: {problem}")),
        (Some(Ok(principal)), None) => Caller::Simulated(principal),
        (None, Some(token)) => Caller::Token(token),
        (None, None) => Caller::FromRequest,
    };
    let ip = match asked.ip {
        Some(ip) => ip,
        None => match crate::config::cases::DEFAULT_CASE_IP.parse() {
            Ok(ip) => ip,
            Err(_) => return bad("no ip given".to_owned()),
        },
    };
    let client_cert = match asked
        .client_cert
        .as_deref()
        .map(|spec| parse_client_cert(spec, None))
    {
        None => None,
        Some(Ok(certificate)) => Some(certificate),
        Some(Err(problem)) => return bad(format!("client_cert: {problem}")),
    };
    let country = match asked.country.as_deref().map(Country::parse) {
        None => None,
        Some(Ok(country)) => Some(country),
        Some(Err(problem)) => return bad(format!("country: {problem}")),
    };
    let headers: Vec<(String, String)> = asked.headers.into_iter().collect();
    let load = state.serving.load();
    let answer = offline::decide(
        load.config(),
        load.identity(),
        load.geo(),
        &Synthetic {
            method: &asked.method,
            url: &asked.url,
            peer: ip,
            headers: &headers,
            caller: &caller,
            client_cert: client_cert.as_ref(),
            country,
        },
    );
    json(StatusCode::OK, &answer.to_json())
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    json_text(status, body)
}

/// A body that is JSON text already.
fn json_text(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = text(status, body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
