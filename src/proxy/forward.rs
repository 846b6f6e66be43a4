//! Sending allowed requests upstream: the pooled client per upstream, round robin with
//! passive health, one safe retry, and the header rewriting a proxy owes both sides
//! (hop-by-hop headers removed, `X-Forwarded-*` set from what we can vouch for).

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Scheme, Uri};
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::{Histogram, IntCounter};
use tokio::sync::oneshot;

use super::ProxyBody;
use super::echo;
use super::respond::ProxyError;
use crate::config::{Target, UpstreamName, UpstreamSettings};
use crate::telemetry::{Metrics, UpstreamErrorKind};

/// The error type of bodies on the data path.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One upstream: its targets, their health, and a keep-alive connection pool.
pub struct Upstream {
    name: UpstreamName,
    targets: Vec<TargetState>,
    next: AtomicUsize,
    client: Client<HttpConnector, RequestBody>,
    timeout: Duration,
    failure_cooldown: Duration,
    duration: Histogram,
    connect_errors: IntCounter,
    timeout_errors: IntCounter,
    protocol_errors: IntCounter,
}

struct TargetState {
    target: Target,
    /// Milliseconds on [`clock_ms`] until which the target is skipped; 0 when healthy.
    down_until: AtomicU64,
}

/// The outcome of one attempt on one target.
enum Attempt {
    Answered(Response<ProxyBody>),
    /// Nothing reached the target: safe to try another.
    ConnectFailed(hyper_util::client::legacy::Error),
    Failed(ProxyError),
}

impl Upstream {
    /// Creates the upstream's client. No connection is made until the first request.
    pub fn new(settings: &UpstreamSettings, metrics: &Metrics) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let name: &str = &settings.name.0;
        let errors = |kind: UpstreamErrorKind| {
            metrics
                .upstream_errors
                .with_label_values(&[name, kind.as_str()])
        };
        Upstream {
            name: settings.name.clone(),
            targets: settings
                .targets
                .iter()
                .map(|target| TargetState {
                    target: target.clone(),
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            client,
            timeout: settings.timeout,
            failure_cooldown: settings.failure_cooldown,
            duration: metrics.upstream_duration.with_label_values(&[name]),
            connect_errors: errors(UpstreamErrorKind::Connect),
            timeout_errors: errors(UpstreamErrorKind::Timeout),
            protocol_errors: errors(UpstreamErrorKind::Protocol),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &UpstreamName {
        &self.name
    }

    /// Sends the request to the next healthy target. A target that cannot be connected to
    /// is skipped for `failure_cooldown`, and the request goes to one other target, but
    /// only when none of its body has been read yet.
    pub async fn send(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        body_limit: Option<u64>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(first) = self.pick(None) else {
            return Err(self.unreachable("the upstream has no targets".into()));
        };
        let can_retry = self.targets.len() > 1;
        // Keep a copy of the head only when a second attempt is possible.
        let retry_head = can_retry.then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        let (give_back, given_back) = if can_retry {
            let (sender, receiver) = oneshot::channel();
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };
        let body = RequestBody::new(body, body_limit, give_back);

        let source = match self.attempt(first, parts, body).await {
            Attempt::Answered(response) => return Ok(response),
            Attempt::Failed(err) => return Err(err),
            Attempt::ConnectFailed(source) => source,
        };
        self.mark_down(first);
        let retry = match (retry_head, given_back) {
            (Some(head), Some(mut receiver)) => receiver.try_recv().ok().map(|body| (head, body)),
            _ => None,
        };
        let Some(((method, uri, headers), body)) = retry else {
            return Err(self.unreachable(source.into()));
        };
        let Some(second) = self.pick(Some(first)) else {
            return Err(self.unreachable(source.into()));
        };
        tracing::debug!(upstream = %self.name, target = %self.targets[first].target, "connect failed; retrying on another target");
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let (parts, ()) = request.into_parts();
        match self
            .attempt(second, parts, RequestBody::new(body, body_limit, None))
            .await
        {
            Attempt::Answered(response) => Ok(response),
            Attempt::Failed(err) => Err(err),
            Attempt::ConnectFailed(source) => {
                self.mark_down(second);
                Err(self.unreachable(source.into()))
            }
        }
    }

    async fn attempt(
        &self,
        index: usize,
        mut parts: http::request::Parts,
        body: RequestBody,
    ) -> Attempt {
        let authority = match &self.targets[index].target {
            Target::Echo => {
                return match echo::respond(Request::from_parts(parts, body)).await {
                    Ok(response) => Attempt::Answered(response),
                    Err(err) => Attempt::Failed(err),
                };
            }
            Target::Http(authority) => authority,
        };
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority.clone());
        uri.path_and_query = parts.uri.path_and_query().cloned();
        parts.uri = match Uri::from_parts(uri) {
            Ok(uri) => uri,
            Err(err) => {
                return Attempt::Failed(ProxyError::BadRequest(format!(
                    "the request target cannot be forwarded ({err})"
                )));
            }
        };
        parts.version = Version::HTTP_11;

        let started = Instant::now();
        let sent = tokio::time::timeout(
            self.timeout,
            self.client.request(Request::from_parts(parts, body)),
        )
        .await;
        match sent {
            Ok(Ok(response)) => {
                self.duration.observe(started.elapsed().as_secs_f64());
                Attempt::Answered(response.map(|body| body.map_err(BoxError::from).boxed_unsync()))
            }
            Ok(Err(err)) => {
                if let Some(limit) = body_too_large(&err) {
                    return Attempt::Failed(ProxyError::BodyTooLarge { limit });
                }
                if err.is_connect() {
                    self.connect_errors.inc();
                    return Attempt::ConnectFailed(err);
                }
                self.protocol_errors.inc();
                Attempt::Failed(self.unreachable(err.into()))
            }
            Err(_elapsed) => {
                self.timeout_errors.inc();
                Attempt::Failed(ProxyError::UpstreamTimeout {
                    upstream: self.name.to_string(),
                    timeout: self.timeout,
                })
            }
        }
    }

    fn unreachable(&self, source: BoxError) -> ProxyError {
        ProxyError::UpstreamUnreachable {
            upstream: self.name.to_string(),
            source,
        }
    }

    /// The next target in round-robin order that is not cooling down and not `exclude`.
    /// When every target is cooling down, the first pick is used anyway: trying beats
    /// refusing outright. A retry (`exclude` set) only goes to a healthy target.
    fn pick(&self, exclude: Option<usize>) -> Option<usize> {
        let count = self.targets.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let now = clock_ms();
        let healthy = (0..count)
            .map(|offset| (start + offset) % count)
            .filter(|index| Some(*index) != exclude)
            .find(|index| self.targets[*index].down_until.load(Ordering::Relaxed) <= now);
        match (healthy, exclude) {
            (Some(index), _) => Some(index),
            (None, None) => Some(start),
            (None, Some(_)) => None,
        }
    }

    fn mark_down(&self, index: usize) {
        let until = clock_ms() + self.failure_cooldown.as_millis() as u64;
        self.targets[index]
            .down_until
            .store(until, Ordering::Relaxed);
        tracing::warn!(
            upstream = %self.name,
            target = %self.targets[index].target,
            cooldown = %crate::config::format_duration(self.failure_cooldown),
            "target refused the connection; skipping it for the cool-down",
        );
    }
}

/// Milliseconds since the first call, for cool-down deadlines.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The limit, when a client error was our body limit tripping mid-stream.
fn body_too_large(err: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = source {
        if let Some(too_large) = err.downcast_ref::<BodyTooLargeError>() {
            return Some(too_large.limit);
        }
        source = err.source();
    }
    None
}

/// A request body exceeded `limits.max_body_size` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than {limit} bytes")]
pub struct BodyTooLargeError {
    limit: u64,
}

impl BodyTooLargeError {
    /// The configured limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// The client's request body on its way upstream: streamed frame by frame, counted
/// against the body limit, and handed back untouched if the attempt failed before
/// reading any of it (so the request can be retried on another target).
pub struct RequestBody {
    inner: Option<Incoming>,
    polled: bool,
    received: u64,
    limit: Option<u64>,
    give_back: Option<oneshot::Sender<Incoming>>,
}

impl RequestBody {
    fn new(
        inner: Incoming,
        limit: Option<u64>,
        give_back: Option<oneshot::Sender<Incoming>>,
    ) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            polled: false,
            received: 0,
            limit,
            give_back,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        this.polled = true;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if let Some(limit) = this.limit
                        && this.received > limit
                    {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLargeError { limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => Poll::Ready(Some(Err(err.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if !self.polled
            && let (Some(sender), Some(body)) = (self.give_back.take(), self.inner.take())
        {
            // The receiver may be gone when the attempt succeeded; then nobody needs the body.
            let _ = sender.send(body);
        }
    }
}

/// What the proxy can vouch for about the client, for the forwarding headers.
pub struct ClientFacts<'a> {
    /// The socket peer's address.
    pub peer: IpAddr,
    /// Whether the peer is in `network.trusted_proxies`.
    pub trusted: bool,
    /// `http` or `https`, as the client connected to us.
    pub proto: &'static str,
    /// The `Host` the client asked for, forwarded unchanged.
    pub host: Option<&'a HeaderValue>,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Rewrites a request's headers for the upstream. `upgrade` keeps `Upgrade` and
/// `Connection: upgrade` for a protocol switch the client asked for.
pub fn request_headers(
    headers: &mut HeaderMap,
    client: &ClientFacts<'_>,
    upgrade: Option<HeaderValue>,
) {
    remove_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }

    // SECURITY: only a trusted proxy's claims about the client are passed on; anyone else
    // could claim any address, scheme or host.
    let peer = client.peer.to_canonical();
    let chain = if client.trusted {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    let forwarded_for = match chain {
        Some(chain) => format!("{chain}, {peer}"),
        None => peer.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !(client.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto));
    }
    if !(client.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match client.host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if !client.trusted {
        headers.remove(header::FORWARDED);
        headers.remove(&X_REAL_IP);
    }
    match client.host {
        Some(host) => {
            headers.insert(header::HOST, host.clone());
        }
        None => {
            headers.remove(header::HOST);
        }
    }
}

/// Rewrites an upstream response's headers for the client. A 101 keeps its `Upgrade`
/// and `Connection` so the client sees the switch.
pub fn response_headers(headers: &mut HeaderMap, switching_protocols: bool) {
    let kept = switching_protocols.then(|| {
        (
            headers.get(header::UPGRADE).cloned(),
            headers.get(header::CONNECTION).cloned(),
        )
    });
    remove_hop_by_hop(headers);
    if let Some((upgrade, connection)) = kept {
        if let Some(upgrade) = upgrade {
            headers.insert(header::UPGRADE, upgrade);
        }
        if let Some(connection) = connection {
            headers.insert(header::CONNECTION, connection);
        }
    }
}

/// Every value of a header joined by `, `, when present and readable.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?.to_owned();
    values.try_fold(first, |mut all, value| {
        all.push_str(", ");
        all.push_str(value.to_str().ok()?);
        Some(all)
    })
}

/// Removes the headers that describe one connection rather than the message
/// (RFC 9110 §7.6.1): those `Connection` names, and the standard hop-by-hop set.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn client(trusted: bool, host: Option<&HeaderValue>) -> ClientFacts<'_> {
        ClientFacts {
            peer: "192.0.2.7".parse().unwrap(),
            trusted,
            proto: "http",
            host,
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "1"),
            ("x-kept", "1"),
        ]);
        remove_hop_by_hop(&mut map);
        assert_eq!(
            map.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let host = HeaderValue::from_static("app.example");
        let mut map = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        request_headers(&mut map, &client(false, Some(&host)), None);
        assert_eq!(map["x-forwarded-for"], "192.0.2.7");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "app.example");
        assert_eq!(map["host"], "app.example");
        assert!(!map.contains_key("forwarded"));
        assert!(!map.contains_key("x-real-ip"));
    }

    #[test]
    fn trusted_forwarding_headers_are_extended() {
        let host = HeaderValue::from_static("app.example");
        let mut map = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
        ]);
        request_headers(&mut map, &client(true, Some(&host)), None);
        assert_eq!(map["x-forwarded-for"], "203.0.113.9, 10.0.0.2, 192.0.2.7");
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "public.example");
    }

    #[test]
    fn upgrade_is_kept_only_when_asked() {
        let mut map = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        request_headers(
            &mut map,
            &client(false, None),
            Some(HeaderValue::from_static("websocket")),
        );
        assert_eq!(map["connection"], "upgrade");
        assert_eq!(map["upgrade"], "websocket");
    }
}
