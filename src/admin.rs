//! The admin listener: `/healthz`, `/readyz` and `/metrics`, on its own address
//! (loopback by default) so that clients of the proxy can never reach it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::identity::Identity;
use crate::telemetry::Metrics;

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
    /// Whose token keys `/readyz` checks.
    pub identity: Arc<Identity>,
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
                async move { Ok::<_, Infallible>(serve(&state, &request)) }
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

fn serve(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here\n",
        );
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
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
                let unavailable = state.identity.unavailable();
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
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.metrics.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves /healthz, /readyz and /metrics\n",
        ),
    }
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
