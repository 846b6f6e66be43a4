//! Accepting client connections: the accept loop, TLS on listeners that terminate it
//! (`handshake`), telling HTTP/1.1 from HTTP/2 on each connection (ALPN, or prior
//! knowledge), connection limits, idle and first-request timeouts, and drain. HTTP/1.1 is
//! served by `client_http1`, HTTP/2 by hyper.
//!
//! Knows nothing of routes or upstreams: each request is handed to `handle`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::client_http1::{self, ClientBody, Wire};
use super::forward;
use super::h1::client::ResponseFields;
use super::handle::handle;
use super::handshake::{self, Alpn, Failure, Refusal, TlsInfo};
use super::head_memory::HeadMemory;
use crate::config::Limits;
use crate::proxy::Live;

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a request knows about the connection it arrived on.
#[derive(Clone)]
pub struct ConnMeta {
    /// The socket peer: the client, or a proxy in front of us.
    pub peer: SocketAddr,
    /// The peer's IP address as an `X-Forwarded-For` value, formatted once.
    pub peer_header: http::HeaderValue,
    /// Holds the connection's slot; a tunnel that outlives the HTTP connection keeps a clone.
    pub guard: Arc<ConnectionGuard>,
    /// Byte counts on the client socket, for idle timeouts (tunnels included).
    pub activity: Arc<Activity>,
    /// What the TLS handshake agreed, on a listener that terminates TLS. Boxed: every
    /// idle plain connection would carry its room.
    pub tls: Option<Box<TlsInfo>>,
}

/// A client connection's claim on `limits.max_connections` and on the active-connections
/// gauge, released when the last holder (the connection, or its tunnel) is gone.
pub struct ConnectionGuard {
    _permit: OwnedSemaphorePermit,
    active: prometheus::IntGauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// Shared by every listener: the connection budget and the shutdown signal.
#[derive(Clone)]
pub struct Listeners {
    /// One permit per open client connection (`limits.max_connections`).
    pub connections: Arc<Semaphore>,
    /// The memory unfinished request heads may hold together (`limits.header_memory`).
    pub head_memory: Arc<HeadMemory>,
    /// Becomes `true` when the gateway starts draining.
    pub shutdown: watch::Receiver<bool>,
}

/// TLS on one listener, for one connection: the setup of the load it was accepted under,
/// and where its failures are counted.
struct Terminating {
    config: Arc<rustls::ServerConfig>,
    failures: prometheus::IntCounterVec,
    listener: String,
}

impl Terminating {
    /// Counts a failed handshake, and logs it: at `info` at most once per
    /// `HANDSHAKE_LOG_EVERY` (a scanner must not flood the log), at `debug` always.
    fn failed(&self, failure: Failure, peer: SocketAddr) {
        static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
        self.failures
            .with_label_values(&[&self.listener, failure.as_str()])
            .inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let last = LAST_LOGGED.load(Ordering::Relaxed);
        if now >= last + HANDSHAKE_LOG_EVERY
            && LAST_LOGGED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(client.addr = %peer, listener = %self.listener, reason = failure.as_str(), "TLS handshake failed; more failures in the next {HANDSHAKE_LOG_EVERY}s are counted in {} and logged at debug", crate::telemetry::names::TLS_HANDSHAKE_ERRORS_TOTAL);
        } else {
            tracing::debug!(client.addr = %peer, listener = %self.listener, reason = failure.as_str(), "TLS handshake failed");
        }
    }
}

/// Seconds between two failed handshakes logged at `info`.
const HANDSHAKE_LOG_EVERY: u64 = 10;

/// Accepts connections on `listener`, bound listener `index` of the config, until
/// shutdown, serving each on its own task; watches them (its [`Watchdog`]) until they
/// have all ended.
pub async fn run(listener: TcpListener, index: usize, live: Live, listeners: Listeners) {
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            tracing::error!(error = %err, "listener has no local address");
            return;
        }
    };
    let mut shutdown = listeners.shutdown.clone();
    let mut watchdog = Watchdog::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|draining| *draining) => break,
            () = watchdog.checked() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning. Checks
                // go on meanwhile: closing idle connections is what frees descriptors.
                tracing::warn!(error = %err, listener = %local, "accept failed");
                let back_off = tokio::time::sleep(Duration::from_millis(50));
                tokio::pin!(back_off);
                loop {
                    tokio::select! {
                        () = &mut back_off => break,
                        () = watchdog.checked() => {}
                    }
                }
                continue;
            }
        };
        // The state serving now: its limits hold for this connection; each request takes
        // the state current when it arrives.
        let proxy = live.load_full();
        let Ok(permit) = listeners.connections.clone().try_acquire_owned() else {
            proxy.metrics.connections_rejected.inc();
            tracing::debug!(client.addr = %peer, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        let peer_header = http::HeaderValue::from_str(&peer.ip().to_canonical().to_string())
            .expect("an IP address is a valid header value");
        proxy.metrics.connections_active.inc();
        let guard = Arc::new(ConnectionGuard {
            _permit: permit,
            active: proxy.metrics.connections_active.clone(),
        });
        let meta = ConnMeta {
            peer,
            peer_header,
            guard,
            activity: Arc::new(Activity::default()),
            tls: None,
        };
        // SECURITY: a socket the serving state does not know is closed, never served
        // in plain text (loads keep every bound listener, so this does not happen).
        let Some(settings) = proxy.listener(index) else {
            tracing::error!(listener = %local, "no settings for this listener; closing the connection");
            continue;
        };
        let tls = settings.tls.as_ref().map(|tls| Terminating {
            config: Arc::clone(&tls.server),
            failures: proxy.metrics.tls_handshake_errors.clone(),
            listener: settings.name.clone(),
        });
        let limits = &proxy.limits;
        // The head timer keeps no timer of its own, which would cost a timer-wheel entry
        // per request: the watchdog ticks every `check_every` and wakes the connection,
        // which then counts the ticks.
        let check_every = watchdog_period(limits.idle_timeout.min(limits.header_read_timeout) / 4);
        // SECURITY: a connection must finish its TLS handshake and start its first request
        // within header_read_timeout of opening, whatever it sends meanwhile (nothing, half
        // a ClientHello, half a preface, HTTP/2 pings).
        let first_request_by = Instant::now() + limits.header_read_timeout;
        let activity = meta.activity.clone();
        let opening = Opening {
            stream,
            tls,
            meta,
            head_memory: listeners.head_memory.clone(),
            live: live.clone(),
            check_every,
            limits: limits.clone(),
            first_request_by,
            shutdown: listeners.shutdown.clone(),
        };
        let task = tokio::spawn(serve_connection(opening));
        watchdog.watch(
            check_every,
            Watched {
                activity,
                task: task.abort_handle(),
                peer,
                quiet: QuietChecks::new(limits.idle_timeout, check_every, None),
                first_request_by: Some(first_request_by),
                closing: false,
            },
        );
    }
    drop(listener);
    tracing::debug!(listener = %local, "stopped accepting");
    // The connections accepted here are watched until they end: draining, then cut off
    // if they stay idle (see `Watched::check`).
    watchdog.drain();
    while !watchdog.is_empty() {
        watchdog.checked().await;
    }
}

/// Serves one client connection until it closes or is drained; the accept loop's
/// [`Watchdog`] aborts it when it idles out.
///
/// The opening (TLS, the protocol's detection) and the protocol run boxed, each freed
/// when done, so an idle connection's task holds little more than the protocol's box.
fn serve_connection(opening: Opening) -> impl Future<Output = ()> + Send + 'static {
    // Written out, not an `async fn`: that would keep room for the opening's state for
    // the connection's whole life.
    let mut opening = Some(Box::pin(opening.serve()));
    let mut served: Option<Served> = None;
    std::future::poll_fn(move |cx| {
        if let Some(open) = &mut opening {
            served = ready!(open.as_mut().poll(cx));
            opening = None;
        }
        match &mut served {
            Some(protocol) => protocol.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    })
}

/// The idle watchdog of one accept loop (one per listener and worker): it checks every
/// connection the loop accepted, at each tick of their period. A connection then costs
/// an entry here, not a task and a timer of its own, which matters most for the many
/// idle connections a gateway at the edge holds.
#[derive(Default)]
struct Watchdog {
    /// One per check period in use: a reload can change the period for new connections,
    /// and connections already open keep theirs.
    schedules: Vec<Schedule>,
}

/// The connections checked every `check_every`.
struct Schedule {
    check_every: Duration,
    ticks: tokio::time::Interval,
    watched: Vec<Watched>,
}

/// One connection, as the watchdog sees it.
struct Watched {
    activity: Arc<Activity>,
    task: tokio::task::AbortHandle,
    peer: SocketAddr,
    /// Its idle timeout, counted in checks. The first check after the connection opened
    /// counts as activity: the time before it may be less than a period, and quiet
    /// checks must span the whole timeout.
    quiet: QuietChecks,
    /// The first request's deadline, until a request started.
    first_request_by: Option<Instant>,
    /// Asked to close (drained, or idle once): the next idle timeout cuts it off.
    closing: bool,
}

impl Watchdog {
    fn watch(&mut self, check_every: Duration, watched: Watched) {
        if let Some(schedule) = self
            .schedules
            .iter_mut()
            .find(|schedule| schedule.check_every == check_every)
        {
            schedule.watched.push(watched);
            return;
        }
        let mut ticks = tokio::time::interval_at(Instant::now() + check_every, check_every);
        // SECURITY: a late check is taken as late, never made up with a burst of checks that
        // would count quiet time that did not pass (for the idle and the head timeouts alike).
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.schedules.push(Schedule {
            check_every,
            ticks,
            watched: vec![watched],
        });
    }

    /// Waits for the next tick of a schedule, and checks its connections.
    async fn checked(&mut self) {
        std::future::poll_fn(|cx| {
            let mut checked = false;
            for schedule in &mut self.schedules {
                if schedule.ticks.poll_tick(cx).is_ready() {
                    schedule.check();
                    checked = true;
                }
            }
            self.schedules
                .retain(|schedule| !schedule.watched.is_empty());
            if checked {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Asks every connection to close once its current request is answered.
    fn drain(&mut self) {
        for watched in self.schedules.iter_mut().flat_map(|s| s.watched.iter_mut()) {
            watched.closing = true;
            watched.activity.drain();
        }
    }

    fn is_empty(&self) -> bool {
        self.schedules.is_empty()
    }
}

impl Schedule {
    fn check(&mut self) {
        let now = Instant::now();
        self.watched.retain_mut(|watched| watched.check(now));
        // A burst of connections leaves no large list behind.
        if self.watched.len() < self.watched.capacity() / 4 {
            self.watched.shrink_to(self.watched.len() * 2);
        }
    }
}

impl Watched {
    /// One check: counts a tick in the connection's `Activity` and wakes its task; cuts
    /// it off when no request started by the deadline, or when it stayed idle after being
    /// asked to close. Whether the connection is still watched.
    fn check(&mut self, now: Instant) -> bool {
        if self.task.is_finished() {
            return false;
        }
        let activity = &*self.activity;
        if !activity.opened.load(Ordering::Relaxed) {
            return true;
        }
        activity.tick();
        if let Some(by) = self.first_request_by
            && now >= by
        {
            if activity.requests.load(Ordering::Relaxed) == 0 {
                tracing::debug!(client.addr = %self.peer, "no request within header_read_timeout; closing");
                self.task.abort();
                return false;
            }
            self.first_request_by = None;
        }
        if !self.quiet.check(activity) {
            return true;
        }
        if self.closing {
            self.task.abort();
            return false;
        }
        // Idle for the timeout: asked to close (an HTTP/2 GOAWAY, or a close after the
        // current response). A client that ignores that gets one more idle period, then
        // is cut off.
        self.closing = true;
        activity.drain();
        self.quiet.checks = 0;
        true
    }
}

/// A connection's protocol, served: HTTP/1.1 or HTTP/2.
type Served = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A connection just accepted: what it takes to start serving it.
struct Opening {
    stream: TcpStream,
    tls: Option<Terminating>,
    meta: ConnMeta,
    head_memory: Arc<HeadMemory>,
    live: Live,
    check_every: Duration,
    limits: Limits,
    first_request_by: Instant,
    shutdown: watch::Receiver<bool>,
}

impl Opening {
    /// The TLS handshake on a TLS listener, then the protocol told apart (ALPN, or the
    /// HTTP/2 preface): the connection's protocol future, or `None` when the connection
    /// ended first (a failed handshake, the first request's time up, a drain).
    async fn serve(self) -> Option<Served> {
        let Opening {
            stream,
            tls,
            mut meta,
            head_memory,
            live,
            check_every,
            limits,
            first_request_by,
            mut shutdown,
        } = self;
        let limits = &limits;
        let first_request = tokio::time::sleep_until(first_request_by);
        tokio::pin!(first_request);
        let activity = meta.activity.clone();
        let peer = meta.peer;
        let (stream, alpn) = match tls {
            None => (ClientStream::Plain(stream), None),
            Some(tls) => {
                let accepted = tokio::select! {
                    accepted = handshake::accept(stream, Arc::clone(&tls.config)) => accepted,
                    () = &mut first_request => Err(Refusal::Failed(Failure::Timeout)),
                    _ = shutdown.wait_for(|draining| *draining) => return None,
                };
                match accepted {
                    Ok((stream, info)) => {
                        let alpn = info.alpn;
                        meta.tls = Some(Box::new(info));
                        (ClientStream::Tls(Box::new(stream)), alpn)
                    }
                    Err(Refusal::PlainHttp(stream)) => {
                        tls.failed(Failure::PlainHttp, peer);
                        // Within what is left of the first request's time.
                        tokio::select! {
                            () = handshake::refuse_plain_http(stream) => {}
                            () = &mut first_request => {}
                        }
                        return None;
                    }
                    Err(Refusal::Failed(failure)) => {
                        tls.failed(failure, peer);
                        return None;
                    }
                }
            }
        };
        let meta = Arc::new(meta);
        let mut io = ActivityIo {
            inner: stream,
            activity: activity.clone(),
        };

        // ALPN names the protocol; without it, an HTTP/2 client with prior knowledge opens
        // with the preface.
        let mut buf = BytesMut::new();
        let detect = async {
            match alpn {
                Some(Alpn::H2) => return Some(true),
                Some(Alpn::Http1) => return Some(false),
                None => {}
            }
            while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
                buf.reserve(4096);
                if io.read_buf(&mut buf).await.ok()? == 0 {
                    return None;
                }
            }
            Some(buf.starts_with(H2_PREFACE))
        };
        let h2 = tokio::select! {
            h2 = detect => h2,
            () = &mut first_request => None,
            _ = shutdown.wait_for(|draining| *draining) => None,
        }?;

        activity.opened.store(true, Ordering::Relaxed);
        if h2 {
            return Some(serve_http2(io, buf, meta, live, limits));
        }
        // Heads over the limit get a problem+json 431 from `handle`, on the route they
        // asked for; twice the limit is where reading stops (a 431 without a route).
        let settings = client_http1::Settings {
            max_header_size: limits.max_header_size,
            max_head: (limits.max_header_size * 2).max(8192),
            head_ticks: u64::try_from(
                limits
                    .header_read_timeout
                    .as_nanos()
                    .div_ceil(check_every.as_nanos()),
            )
            .unwrap_or(u64::MAX)
            .saturating_add(1),
            head_memory,
        };
        let wire = Wire {
            io,
            buf,
            next_head_since: None,
            head_charge: None,
            pipelined: false,
            client_done: false,
        };
        Some(Box::pin(client_http1::serve(wire, meta, live, settings)))
    }
}

/// Serves an HTTP/2 connection (its preface already in `read`) with hyper, draining it
/// with a GOAWAY once the connection's `Activity` says so.
fn serve_http2(
    io: ActivityIo,
    read: BytesMut,
    meta: Arc<ConnMeta>,
    live: Live,
    limits: &Limits,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let activity = meta.activity.clone();
    let peer = meta.peer;
    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        // Requests reach `handle` without hop-by-hop fields, whichever protocol brought
        // them (HTTP/2 forbids most, not `TE` or `Proxy-*`).
        forward::remove_hop_by_hop(request.headers_mut());
        let in_flight = InFlight::start(&meta.activity);
        let proxy = live.load_full();
        let meta = meta.clone();
        async move {
            let mut response = handle(proxy, meta, request.map(ClientBody::http2)).await;
            drop(in_flight);
            // An HTTP/1 upstream's fields become a map only here; the HTTP/1 writer
            // passes them on as they came.
            if let Some(fields) = response.extensions_mut().remove::<ResponseFields>() {
                let set = std::mem::take(response.headers_mut());
                *response.headers_mut() = fields.into_map(set);
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size * 2).unwrap_or(u32::MAX))
        .serve_connection(TokioIo::new(Rewound { read, io }), service);
    // A poll_fn, not an async block: an async block keeps the connection it captures
    // beside the pinned copy it polls, doubling the largest thing an idle HTTP/2
    // connection holds (1.6 KiB).
    let mut draining = false;
    Box::pin(std::future::poll_fn(move |cx| {
        activity.wake_on_change(cx);
        if !draining && activity.is_draining() {
            draining = true;
            Pin::new(&mut connection).graceful_shutdown();
        }
        if let Err(err) = std::task::ready!(Pin::new(&mut connection).poll(cx)) {
            tracing::debug!(error = %err, client.addr = %peer, "connection ended with an error");
        }
        Poll::Ready(())
    }))
}

/// A socket whose first bytes were already read (to tell the protocol): they are read
/// again first.
struct Rewound {
    read: BytesMut,
    io: ActivityIo,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let take = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..take]);
        self.read.advance(take);
        if self.read.is_empty() {
            // Not kept for the connection's life.
            self.read = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Resolves once the connection has had no bytes in either direction and no request
/// waiting for its response head for at least `timeout` (at most 1.25 × `timeout`).
/// A tunnel's own watch: the accept loop's [`Watchdog`] lets go of a connection once it
/// becomes a tunnel.
pub async fn idle(activity: &Activity, timeout: Duration) {
    let check_every = watchdog_period(timeout / 4);
    let mut quiet = QuietChecks::new(timeout, check_every, Some(activity.snapshot()));
    let mut checks = tokio::time::interval_at(Instant::now() + check_every, check_every);
    // SECURITY: as in `Watchdog::watch`, a late check is never made up with a burst.
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        checks.tick().await;
        activity.tick();
        if quiet.check(activity) {
            return;
        }
    }
}

/// How often the idle watchdog looks: every `wanted`, but at most every 10ms, so that an
/// absurdly short timeout cannot wake a connection thousands of times a second.
fn watchdog_period(wanted: Duration) -> Duration {
    wanted.max(Duration::from_millis(10))
}

/// An idle timeout counted in checks `check_every` apart: a connection is idle once
/// enough checks in a row found no bytes either way and no request waiting for its
/// response head.
struct QuietChecks {
    /// Quiet checks in a row that span the timeout.
    needed: u32,
    checks: u32,
    /// The read and write counts at the last check; `None` counts the first check as
    /// activity.
    last_seen: Option<(u64, u64)>,
}

impl QuietChecks {
    fn new(timeout: Duration, check_every: Duration, last_seen: Option<(u64, u64)>) -> Self {
        let needed = u32::try_from(timeout.as_nanos().div_ceil(check_every.as_nanos()))
            .unwrap_or(u32::MAX)
            .max(1);
        QuietChecks {
            needed,
            checks: 0,
            last_seen,
        }
    }

    /// One check; whether the connection has now been quiet for the whole timeout.
    fn check(&mut self, activity: &Activity) -> bool {
        let seen = activity.snapshot();
        if self.last_seen != Some(seen) || activity.in_flight.load(Ordering::Relaxed) > 0 {
            self.last_seen = Some(seen);
            self.checks = 0;
            return false;
        }
        self.checks += 1;
        self.checks >= self.needed
    }
}

/// Byte activity and requests in flight on one connection, for the idle and head timers.
#[derive(Default)]
pub struct Activity {
    /// Successful reads that returned data.
    reads: AtomicU64,
    /// Successful writes.
    writes: AtomicU64,
    /// Requests whose handler has started and not yet produced a response head.
    in_flight: AtomicUsize,
    /// Requests started on this connection so far.
    requests: AtomicU64,
    /// The idle watchdog's checks so far: the clock request heads are timed by.
    ticks: AtomicU64,
    /// Set when the connection is to close once its current request is answered.
    draining: AtomicBool,
    /// Set once the opening (TLS, the protocol's detection) is done: the watchdog
    /// watches the connection from then on, the opening having a timer of its own.
    opened: AtomicBool,
    /// The connection's task, to wake at each tick and when it is to drain.
    waker: std::sync::Mutex<Option<Waker>>,
}

impl Activity {
    /// The idle watchdog's checks so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Whether the connection closes once its current request is answered.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.wake();
    }

    /// Counts a check of the idle watchdog, and wakes the connection's task to see it.
    pub(super) fn tick(&self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        self.wake();
    }

    /// Has the connection's task woken at the next tick and when it is to drain.
    pub fn wake_on_change(&self, cx: &Context<'_>) {
        let mut waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        match &*waker {
            Some(known) if known.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
    }

    pub(super) fn wake(&self) {
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn snapshot(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
}

/// Counts a request as in flight until dropped.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client's socket: plain TCP, or TLS over it.
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, the handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

streams_enum_io!(ClientStream { Plain, Tls });

/// A client socket that counts its reads and writes into an [`Activity`].
pub struct ActivityIo {
    inner: ClientStream,
    activity: Arc<Activity>,
}

impl ActivityIo {
    /// Ready once the socket has something to read, an error, or the client's close.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &self.inner {
            ClientStream::Plain(stream) => stream.poll_read_ready(cx),
            // A connection goes idle only once its reads found nothing: TLS holds no
            // decrypted bytes then, and what comes next arrives on the socket.
            ClientStream::Tls(stream) => stream.get_ref().0.poll_read_ready(cx),
        }
    }
}

impl AsyncRead for ActivityIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = ready!(Pin::new(&mut self.inner).poll_write(cx, buf));
        self.activity.writes.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs));
        self.activity.writes.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
