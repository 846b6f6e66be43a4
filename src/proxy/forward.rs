//! Sending allowed requests upstream: the pooled client per upstream, round robin with
//! passive health, one safe retry, and the request header rewriting a proxy owes the
//! upstream (hop-by-hop headers removed, `X-Forwarded-*` set from what we can vouch for).
//! Responses lose their hop-by-hop headers as they are parsed (`h1::client`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus::{Histogram, IntCounter};

use super::ProxyBody;
use super::client_http1::ClientBody;
use super::echo;
use super::h1;
use super::h1::client::Added;
use super::pool::{Exchanged, Pool, PoolTls, SendError, Switched};
use super::respond::ProxyError;
use crate::config::{Target, UpstreamName, UpstreamSettings, UpstreamTls};
use crate::telemetry::{Shard, UpstreamErrorKind};

/// The error type of bodies on the data path.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One upstream as one worker uses it: its targets, a keep-alive pool per target, and
/// the targets' health, which every worker shares.
pub struct Upstream {
    name: UpstreamName,
    targets: Vec<TargetState>,
    health: Arc<Health>,
    next: AtomicUsize,
    timeout: Duration,
    failure_cooldown: Duration,
    duration: Histogram,
    connect_errors: IntCounter,
    tls_errors: IntCounter,
    timeout_errors: IntCounter,
}

struct TargetState {
    target: Target,
    /// Connections to an HTTP target; `None` for the built-in echo.
    pool: Option<Arc<Pool>>,
}

/// Which targets of one upstream are skipped, shared by every worker's [`Upstream`] of one
/// load: a failed connect on one worker spares the others the attempt. Requests only read
/// it; a failure writes it.
pub struct Health {
    /// Per target, milliseconds on [`clock_ms`] until which it is skipped; 0 when healthy.
    down_until: Box<[AtomicU64]>,
}

impl Health {
    /// Every target of `settings` healthy.
    pub fn new(settings: &UpstreamSettings) -> Arc<Health> {
        Arc::new(Health {
            down_until: settings.targets.iter().map(|_| AtomicU64::new(0)).collect(),
        })
    }
}

/// How a pool for the https target at `authority` connects: the upstream's setup, and
/// `tls.server_name` or the target's host as the name sent and checked. `None` leaves
/// the target without a pool, whose requests fail (never in plain text).
fn pool_tls(tls: Option<&UpstreamTls>, authority: &http::uri::Authority) -> Option<PoolTls> {
    let tls = tls?;
    let server_name = match &tls.server_name {
        Some(name) => name.clone(),
        // An IP address in brackets loses them to parse.
        None => rustls::pki_types::ServerName::try_from(
            authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .ok()?,
    };
    Some(PoolTls {
        client: Arc::clone(&tls.client),
        server_name,
    })
}

/// What the upstream answered, and its connection when it switched protocols.
pub struct Forwarded {
    pub response: Response<ProxyBody>,
    pub switched: Option<Switched>,
}

/// Who the request was waiting on when its time ran out.
enum Stalled {
    /// The upstream: to read the request, or to answer it.
    Upstream,
    /// The client: for the next part of its body.
    Client,
}

/// The outcome of one attempt on one target.
enum Attempt {
    Answered(Forwarded),
    /// Nothing reached the target: the request is handed back to try another.
    ConnectFailed(std::io::Error, Box<Request<RequestBody>>),
    Failed(ProxyError),
}

impl Upstream {
    /// Creates the upstream, with the targets' health of the load. No connection is made
    /// until the first request.
    pub fn new(settings: &UpstreamSettings, health: Arc<Health>, metrics: &Shard) -> Upstream {
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
                    pool: match target {
                        Target::Http(authority) => Some(Pool::new(
                            authority.clone(),
                            None,
                            settings.connect_timeout,
                            settings.keepalive_timeout,
                            errors(UpstreamErrorKind::Protocol),
                        )),
                        Target::Https(authority) => {
                            pool_tls(settings.tls.as_ref(), authority).map(|tls| {
                                Pool::new(
                                    authority.clone(),
                                    Some(tls),
                                    settings.connect_timeout,
                                    settings.keepalive_timeout,
                                    errors(UpstreamErrorKind::Protocol),
                                )
                            })
                        }
                        Target::Echo => None,
                    },
                })
                .collect(),
            health,
            next: AtomicUsize::new(0),
            timeout: settings.timeout,
            failure_cooldown: settings.failure_cooldown,
            duration: metrics.upstream_duration.with_label_values(&[name]),
            connect_errors: errors(UpstreamErrorKind::Connect),
            tls_errors: errors(UpstreamErrorKind::Tls),
            timeout_errors: errors(UpstreamErrorKind::Timeout),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &UpstreamName {
        &self.name
    }

    /// Sends the request to the next healthy target. A target that cannot be connected to
    /// is skipped for `failure_cooldown`, and the request, which did not leave the
    /// gateway, goes to one other target.
    pub async fn send(
        &self,
        parts: http::request::Parts,
        added: &Added,
        body: ClientBody,
        body_limit: Option<u64>,
    ) -> Result<Forwarded, ProxyError> {
        let Some(first) = self.pick(None) else {
            return Err(self.unreachable("the upstream has no targets".into()));
        };
        let request = Request::from_parts(parts, RequestBody::new(body, body_limit));
        let (error, request) = match self.attempt(first, request, added).await {
            Attempt::Answered(response) => return Ok(response),
            Attempt::Failed(err) => return Err(err),
            Attempt::ConnectFailed(error, request) => (error, request),
        };
        self.mark_down(first, &error);
        let Some(second) = self.pick(Some(first)) else {
            return Err(self.not_connected(first, error));
        };
        tracing::debug!(upstream = %self.name, target = %self.targets[second].target, "retrying on another target");
        match self.attempt(second, *request, added).await {
            Attempt::Answered(response) => Ok(response),
            Attempt::Failed(err) => Err(err),
            Attempt::ConnectFailed(error, _) => {
                self.mark_down(second, &error);
                Err(self.not_connected(second, error))
            }
        }
    }

    /// The answer when no connection to target `index` could be made: a TLS handshake
    /// that failed says why, anything else is unreachable.
    fn not_connected(&self, index: usize, error: std::io::Error) -> ProxyError {
        match crate::tls::upstream_failure(&error) {
            Some(cause) => ProxyError::UpstreamTls {
                upstream: self.name.to_string(),
                target: self.targets[index].target.to_string(),
                cause,
            },
            None => self.unreachable(error.into()),
        }
    }

    async fn attempt(
        &self,
        index: usize,
        mut request: Request<RequestBody>,
        added: &Added,
    ) -> Attempt {
        let target = &self.targets[index];
        let progress = request.body().progress.clone();
        let started = Instant::now();
        let pool = match (&target.target, &target.pool) {
            (Target::Echo, _) => None,
            (_, Some(pool)) => Some(pool),
            // SECURITY: an https target never goes out in plain text. (Config checks
            // that each one has a name for the handshake, so this does not happen.)
            (_, None) => {
                self.tls_errors.inc();
                return Attempt::Failed(ProxyError::UpstreamTls {
                    upstream: self.name.to_string(),
                    target: target.target.to_string(),
                    cause: "no TLS setup for the target",
                });
            }
        };
        let Some(pool) = pool else {
            added.apply_to(request.headers_mut());
            return match self
                .answered_in_time(started, progress.as_deref(), echo::respond(request))
                .await
            {
                Ok(Ok(response)) => Attempt::Answered(Forwarded {
                    response,
                    switched: None,
                }),
                Ok(Err(err)) => Attempt::Failed(err),
                Err(stalled) => Attempt::Failed(self.timed_out(stalled)),
            };
        };
        match self
            .answered_in_time(started, progress.as_deref(), pool.send(request, added))
            .await
        {
            Ok(Ok(Exchanged { response, switched })) => {
                self.duration.observe(started.elapsed().as_secs_f64());
                Attempt::Answered(Forwarded {
                    response: response.map(BodyExt::boxed_unsync),
                    switched,
                })
            }
            Ok(Err(SendError::Connect(error, request))) => {
                if crate::tls::upstream_failure(&error).is_some() {
                    self.tls_errors.inc();
                } else {
                    self.connect_errors.inc();
                }
                Attempt::ConnectFailed(error, request)
            }
            Ok(Err(SendError::Failed(err))) => Attempt::Failed(self.unreachable(err)),
            Ok(Err(SendError::Tls(cause))) => {
                self.tls_errors.inc();
                // Not retried: the request may have gone out. The next ones go elsewhere.
                self.mark_down(index, &std::io::Error::other(cause));
                Attempt::Failed(ProxyError::UpstreamTls {
                    upstream: self.name.to_string(),
                    target: target.target.to_string(),
                    cause,
                })
            }
            // SECURITY: the client's own faults are never counted against the upstream,
            // so that no anonymous client can fire the upstream's alerts.
            Ok(Err(SendError::Body(err))) => Attempt::Failed(match body_too_large(err.as_ref()) {
                Some(limit) => ProxyError::BodyTooLarge { limit },
                None => ProxyError::BadRequest(err.to_string()),
            }),
            Err(stalled) => Attempt::Failed(self.timed_out(stalled)),
        }
    }

    /// Runs `answer` until it completes or the upstream's `timeout` passes without the
    /// request making progress: the clock starts at `started`, when the request is sent,
    /// and while the body is still streaming each chunk restarts it, so a large upload to
    /// a slow reader is not cut off while bytes move.
    async fn answered_in_time<F: Future>(
        &self,
        started: Instant,
        progress: Option<&Progress>,
        answer: F,
    ) -> Result<F::Output, Stalled> {
        tokio::pin!(answer);
        let sleep = tokio::time::sleep_until((started + self.timeout).into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                output = &mut answer => return Ok(output),
                () = &mut sleep => {
                    // Without a body, the request was sent when the clock started.
                    let Some(progress) = progress else {
                        return Err(Stalled::Upstream);
                    };
                    let deadline = progress.last_ms() + self.timeout.as_millis() as u64;
                    let now = clock_ms();
                    if deadline <= now {
                        return Err(if progress.awaits_client() {
                            Stalled::Client
                        } else {
                            Stalled::Upstream
                        });
                    }
                    sleep.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(deadline - now));
                }
            }
        }
    }

    fn timed_out(&self, stalled: Stalled) -> ProxyError {
        match stalled {
            Stalled::Upstream => {
                self.timeout_errors.inc();
                ProxyError::UpstreamTimeout {
                    upstream: self.name.to_string(),
                    timeout: self.timeout,
                }
            }
            Stalled::Client => ProxyError::BodyTimeout {
                timeout: self.timeout,
            },
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
        // A target that was never down needs no clock (reading it costs more than the
        // rest of the pick).
        let mut now = None;
        let healthy = (0..count)
            .map(|offset| (start + offset) % count)
            .filter(|index| Some(*index) != exclude)
            .find(
                |index| match self.health.down_until[*index].load(Ordering::Relaxed) {
                    0 => true,
                    until => until <= *now.get_or_insert_with(clock_ms),
                },
            );
        match (healthy, exclude) {
            (Some(index), _) => Some(index),
            (None, None) => Some(start),
            (None, Some(_)) => None,
        }
    }

    fn mark_down(&self, index: usize, error: &std::io::Error) {
        let until = clock_ms().saturating_add(self.failure_cooldown.as_millis() as u64);
        self.health.down_until[index].store(until, Ordering::Relaxed);
        tracing::warn!(
            upstream = %self.name,
            target = %self.targets[index].target,
            error = %error,
            cooldown = %crate::config::format_duration(self.failure_cooldown),
            "cannot connect to target; skipping it for the cool-down",
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

/// The client's request body on its way upstream: streamed frame by frame and counted
/// against the body limit.
pub struct RequestBody {
    inner: ClientBody,
    received: u64,
    limit: Option<u64>,
    /// When the body last made progress, shared with the attempt's timeout; `None` for
    /// a request without a body.
    progress: Option<Arc<Progress>>,
    /// Bytes forwarded since `progress` was last stamped.
    unstamped: u64,
}

/// How many body bytes count as progress. SECURITY: a client that trickles a byte at a
/// time must not keep the upstream timeout from ever running out.
const PROGRESS_STEP: u64 = 64 * 1024;

impl RequestBody {
    /// The body's progress, shared with the attempt's timeout; `None` without a body.
    pub(super) fn progress(&self) -> Option<Arc<Progress>> {
        self.progress.clone()
    }

    pub(super) fn new(inner: ClientBody, limit: Option<u64>) -> RequestBody {
        let progress = (!inner.is_end_stream()).then(|| {
            Arc::new(Progress {
                last_ms: AtomicU64::new(clock_ms()),
                awaiting_client: AtomicBool::new(false),
            })
        });
        RequestBody {
            inner,
            received: 0,
            limit,
            progress,
            unstamped: 0,
        }
    }
}

/// When a request body last made progress (another `PROGRESS_STEP` bytes forwarded, or
/// its end), and whether it is waiting on the client.
pub struct Progress {
    last_ms: AtomicU64,
    /// The body's last read found nothing from the client yet. (While the gateway writes
    /// upstream, the body is not read, and this is false.)
    awaiting_client: AtomicBool,
}

impl Progress {
    fn last_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    fn awaits_client(&self) -> bool {
        self.awaiting_client.load(Ordering::Relaxed)
    }

    pub(super) fn set_awaiting_client(&self, awaiting: bool) {
        self.awaiting_client.store(awaiting, Ordering::Relaxed);
    }

    fn touch(&self) {
        self.last_ms.store(clock_ms(), Ordering::Relaxed);
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(progress) = &this.progress {
            progress.set_awaiting_client(polled.is_pending());
        }
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    this.unstamped += data.len() as u64;
                    if this.unstamped >= PROGRESS_STEP {
                        this.unstamped = 0;
                        if let Some(progress) = &this.progress {
                            progress.touch();
                        }
                    }
                    if let Some(limit) = this.limit
                        && this.received > limit
                    {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLargeError { limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => Poll::Ready(Some(Err(err))),
            None => {
                if let Some(progress) = &this.progress {
                    progress.touch();
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the proxy can vouch for about the client, for the forwarding headers.
pub struct ClientFacts<'a> {
    /// Pass request-routing override headers on (`network.keep_override_headers`).
    pub keep_override_headers: bool,
    /// The socket peer's address as a header value, formatted once per connection.
    pub peer: &'a HeaderValue,
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
/// Headers through which clients or CDNs claim an address, scheme, host, port or path
/// prefix; only a trusted proxy's are passed on. Every `X-Forwarded-*` header counts too.
const CLIENT_CLAIMS: [HeaderName; 9] = [
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("x-original-host"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("x-http-host-override"),
];

/// Headers some servers, frameworks and proxies obey to rewrite the path or method after
/// the gateway has decided on them: IIS and Symfony (`X-Original-URL`, `X-Rewrite-URL`),
/// nginx, Traefik and Istio (`X-Original-URI`, `X-Replaced-Path`), Envoy
/// (`X-Envoy-Original-Path`, `-URL`), Tomcat's and other connectors (`X-Request-URI`,
/// `-URL`), custom rewrite modules (`X-Rewrite-Path`, `X-Real-URL`, `-URI`,
/// `X-Override-URL`, `X-Original-Path`), and the method overrides of ASP.NET, Google APIs,
/// Express and Laravel. (`X-Forwarded-Uri`, `-Path`, `-Prefix` are client claims below.)
const OVERRIDES: [HeaderName; 16] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-original-path"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-rewrite-path"),
    HeaderName::from_static("x-override-url"),
    HeaderName::from_static("x-replaced-path"),
    HeaderName::from_static("x-envoy-original-path"),
    HeaderName::from_static("x-envoy-original-url"),
    HeaderName::from_static("x-request-uri"),
    HeaderName::from_static("x-request-url"),
    HeaderName::from_static("x-real-url"),
    HeaderName::from_static("x-real-uri"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-http-method"),
];

/// Whether a client's header must not reach the upstream.
fn is_dropped(name: &HeaderName, client: &ClientFacts<'_>) -> bool {
    // SECURITY: CGI-style servers (PHP, WSGI, Rack) read `X-Forwarded_For` as
    // `X-Forwarded-For`, and others fold `.` or `~` the same way, so a name with any
    // character but letters, digits and `-` could smuggle a header past the checks below
    // (`X-Auth.Subject`, `X.Original.URL`). Such names are dropped, as nginx's
    // `ignore_invalid_headers` does.
    !name
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        // SECURITY: the upstream must act on the path and method the gateway decided on,
        // not on a header that rewrites them afterwards.
        || (!client.keep_override_headers && OVERRIDES.contains(name))
        // SECURITY: only a trusted proxy's claims about the client are passed on; anyone
        // else could claim any address, scheme or host.
        || (!client.trusted && is_client_claim(name))
        // SECURITY: a WebDAV `Destination` is a second path to write to. A MOVE or COPY
        // gets the one the policy decided on, set anew (see `admit`); other methods none.
        || *name == super::admit::DESTINATION
}

fn is_client_claim(name: &HeaderName) -> bool {
    CLIENT_CLAIMS.contains(name) || name.as_str().starts_with("x-forwarded-")
}

/// Rewrites a request's headers for the upstream: removes what must not pass in place,
/// and returns the fields to set. `upgrade` sets `Upgrade` and `Connection: upgrade` for a
/// protocol switch the client asked for. The request comes without hop-by-hop fields
/// (see [`remove_hop_by_hop`]).
pub fn request_headers(
    headers: &mut HeaderMap,
    client: &ClientFacts<'_>,
    upgrade: Option<HeaderValue>,
) -> Added {
    // One look at the names in the common case, where nothing has to go.
    if headers.keys().any(|name| is_dropped(name, client)) {
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_dropped(name, client))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }
    // The names set here are distinct: each is pushed without looking for an earlier one.
    let mut added = Added::with_capacity(8);
    if let Some(protocol) = upgrade {
        added.push_new(header::CONNECTION, HeaderValue::from_static("upgrade"));
        added.push_new(header::UPGRADE, protocol);
    }

    let chain = if client.trusted {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    let forwarded_for = match chain {
        Some(chain) => {
            let peer = client.peer.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{chain}, {peer}"))
                .unwrap_or_else(|_| client.peer.clone())
        }
        None => client.peer.clone(),
    };
    added.push_new(X_FORWARDED_FOR, forwarded_for);
    if !(client.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        added.push_new(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto));
    }
    if !(client.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match client.host {
            Some(host) => added.push_new(X_FORWARDED_HOST, host.clone()),
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    match client.host {
        Some(host) => added.push_new(header::HOST, host.clone()),
        None => {
            headers.remove(header::HOST);
        }
    }
    added
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

/// Whether a header describes one connection rather than the message (RFC 9110 §7.6.1);
/// one list for requests and responses, `h1::FieldKind`.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    h1::FieldKind::of(name.as_str()).is_hop_by_hop()
}

/// Removes hop-by-hop headers: the standard set, every `Proxy-*` header, and the headers
/// that `Connection` names. For HTTP/2 requests; the HTTP/1 reader leaves them out as it
/// reads the head.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named by `Connection` first, while it is still there. The usual tokens
    // (keep-alive, close, upgrade) name nothing beyond the standard set.
    let named = || {
        (headers.get_all(header::CONNECTION).iter())
            .flat_map(|value| h1::named_fields(value.as_bytes()))
    };
    if named().next().is_some() {
        let named: Vec<HeaderName> = named()
            .filter_map(|token| HeaderName::from_bytes(token).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // Most messages carry one hop-by-hop header or none: find it without allocating; only
    // several need a list.
    let mut found = headers.keys().filter(|name| is_hop_by_hop(name));
    match (found.next().cloned(), found.next().is_some()) {
        (None, _) => {}
        (Some(only), false) => {
            headers.remove(only);
        }
        (Some(_), true) => {
            let doomed: Vec<HeaderName> = headers
                .keys()
                .filter(|name| is_hop_by_hop(name))
                .cloned()
                .collect();
            for name in doomed {
                headers.remove(name);
            }
        }
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

    static PEER: HeaderValue = HeaderValue::from_static("192.0.2.7");

    fn client(trusted: bool, host: Option<&HeaderValue>) -> ClientFacts<'_> {
        ClientFacts {
            keep_override_headers: false,
            peer: &PEER,
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
            ("true-client-ip", "6.6.6.6"),
            ("x-client-ip", "6.6.6.6"),
            ("cf-connecting-ip", "6.6.6.6"),
            ("x-cluster-client-ip", "6.6.6.6"),
            ("x-original-host", "evil.example"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-scheme", "https"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded_for", "6.6.6.6"),
            ("x_original_url", "/admin"),
            ("x-host", "evil.example"),
            ("x-http-host-override", "evil.example"),
            ("x-kept", "1"),
        ]);
        request_headers(&mut map, &client(false, Some(&host)), None).apply_to(&mut map);
        let mut names: Vec<&str> = map.keys().map(|name| name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-kept"
            ]
        );
        assert_eq!(map["x-forwarded-for"], "192.0.2.7");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "app.example");
        assert_eq!(map["host"], "app.example");
    }

    #[test]
    fn override_and_look_alike_headers_never_reach_the_upstream() {
        let overrides = [
            "x-original-url",
            "x-original-uri",
            "x-original-path",
            "x-rewrite-url",
            "x-rewrite-path",
            "x-override-url",
            "x-replaced-path",
            "x-envoy-original-path",
            "x-envoy-original-url",
            "x-request-uri",
            "x-request-url",
            "x-real-url",
            "x-real-uri",
            "x-http-method-override",
            "x-method-override",
            "x-http-method",
        ];
        let look_alikes = [
            "x-auth.subject",
            "x.original.url",
            "x-auth~roles",
            "x-auth_scopes",
        ];
        let sent: Vec<(&str, &str)> = (overrides.iter().chain(&look_alikes))
            .map(|name| (*name, "/admin"))
            .chain([("x-kept", "1")])
            .collect();
        // A trusted proxy's requests lose them too: they rewrite what was decided.
        for trusted in [false, true] {
            let mut map = headers(&sent);
            request_headers(&mut map, &client(trusted, None), None).apply_to(&mut map);
            let kept: Vec<&str> = map
                .keys()
                .map(|name| name.as_str())
                .filter(|name| !name.starts_with("x-forwarded-"))
                .collect();
            assert_eq!(kept, ["x-kept"], "trusted: {trusted}");
        }
        // Unless the upstream needs them and does its own checks.
        let mut map = headers(&sent);
        let mut keeping = client(false, None);
        keeping.keep_override_headers = true;
        request_headers(&mut map, &keeping, None).apply_to(&mut map);
        for name in overrides {
            assert!(map.contains_key(name), "{name}");
        }
        for name in look_alikes {
            assert!(!map.contains_key(name), "{name}");
        }
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
        request_headers(&mut map, &client(true, Some(&host)), None).apply_to(&mut map);
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
        )
        .apply_to(&mut map);
        assert_eq!(map["connection"], "upgrade");
        assert_eq!(map["upgrade"], "websocket");

        // Requests come without hop-by-hop fields: the reader (or, for HTTP/2, the
        // service) removes them first.
        let mut map = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        remove_hop_by_hop(&mut map);
        let added = request_headers(&mut map, &client(false, None), None);
        assert!(!added.replaces(&header::UPGRADE) && !added.replaces(&header::CONNECTION));
        added.apply_to(&mut map);
        assert!(map.get("connection").is_none() && map.get("upgrade").is_none());
    }
}
