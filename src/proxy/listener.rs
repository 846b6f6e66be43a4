//! Accepting client connections: the accept loop, the HTTP/1.1 + HTTP/2 (prior knowledge)
//! server on each connection, connection limits, idle and slow-header timeouts, and drain.
//!
//! Knows nothing of routes or upstreams: each request is handed to `handle`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::framing::FramingWatch;
use super::handle::handle;
use crate::config::Limits;
use crate::reload::Live;

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
    /// Becomes `true` when the gateway starts draining.
    pub shutdown: watch::Receiver<bool>,
}

/// Accepts connections on `listener` until shutdown, serving each on its own task.
pub async fn run(listener: TcpListener, live: Live, listeners: Listeners) {
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            tracing::error!(error = %err, "listener has no local address");
            return;
        }
    };
    let mut shutdown = listeners.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|draining| *draining) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %err, listener = %local, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
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
        };
        tokio::spawn(serve_connection(
            stream,
            meta,
            proxy.limits.clone(),
            live.clone(),
            listeners.shutdown.clone(),
        ));
    }
    tracing::debug!(listener = %local, "stopped accepting");
}

/// Serves one client connection until it closes, idles out, or is drained.
async fn serve_connection(
    stream: TcpStream,
    meta: ConnMeta,
    limits: Limits,
    live: Live,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = meta.activity.clone();
    // SECURITY: a connection must start its first request within header_read_timeout of
    // opening, whatever it sends meanwhile (nothing, half a preface, HTTP/2 pings).
    let first_request_due = Instant::now() + limits.header_read_timeout;
    // Heads over our limit get a problem+json 431 from `handle`; twice the limit is the
    // parser's hard cap, past which hyper answers a bare 431 and closes. The framing
    // watch follows heads as large as hyper reads.
    let head_buffer = (limits.max_header_size * 2).max(8192);
    let io = TokioIo::new(ActivityIo {
        inner: stream,
        activity: activity.clone(),
        framing: FramingWatch::new(head_buffer),
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(HeadTimer {
            activity: activity.clone(),
            timeout: limits.header_read_timeout,
            first_request_due,
        })
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(head_buffer);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size * 2).unwrap_or(u32::MAX));

    let peer = meta.peer;
    let meta = Arc::new(meta);
    let service = service_fn(move |request| {
        let in_flight = InFlight::start(&meta.activity);
        let proxy = live.load_full();
        let meta = meta.clone();
        async move {
            let response = handle(proxy, meta, request).await;
            drop(in_flight);
            response
        }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);

    // The HTTP/1 head timer (`HeadSleep`) keeps no timer of its own, which would cost a
    // timer-wheel entry per request: the idle watchdog's checks wake the connection often
    // enough for it to look at the clock.
    let check_every = limits.idle_timeout.min(limits.header_read_timeout) / 4;
    let idle = idle_checked(&activity, limits.idle_timeout, check_every);
    tokio::pin!(idle);
    let first_request = tokio::time::sleep_until(first_request_due);
    tokio::pin!(first_request);
    let mut first_request_checked = false;
    let mut closing = false;
    loop {
        tokio::select! {
            () = &mut first_request, if !first_request_checked => {
                first_request_checked = true;
                if activity.requests.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(client.addr = %peer, "no request within header_read_timeout; closing");
                    break;
                }
            }
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, client.addr = %peer, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.wait_for(|draining| *draining), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = &mut idle => {
                if closing {
                    break;
                }
                closing = true;
                connection.as_mut().graceful_shutdown();
                // A client that ignores a graceful close (an HTTP/2 GOAWAY) gets one more
                // idle period, then is cut off.
                idle.set(idle_checked(&activity, limits.idle_timeout, check_every));
            }
        }
    }
}

/// Resolves once the connection has had no bytes in either direction and no request
/// waiting for its response head for at least `timeout` (at most 1.25 × `timeout`).
pub async fn idle(activity: &Activity, timeout: Duration) {
    idle_checked(activity, timeout, timeout / 4).await;
}

/// [`idle`], looking every `check_every` (at most a quarter of `timeout`): each check
/// also wakes the connection's task.
async fn idle_checked(activity: &Activity, timeout: Duration, check_every: Duration) {
    // A floor keeps an absurdly short timeout from waking the connection thousands of
    // times a second.
    let check_every = check_every.max(Duration::from_millis(10));
    // Enough quiet checks in a row to span `timeout`.
    let needed = u32::try_from(timeout.as_nanos().div_ceil(check_every.as_nanos()))
        .unwrap_or(u32::MAX)
        .max(1);
    let mut checks = tokio::time::interval_at(Instant::now() + check_every, check_every);
    let mut last_seen = activity.snapshot();
    let mut quiet_checks = 0u32;
    loop {
        checks.tick().await;
        let seen = activity.snapshot();
        if seen != last_seen || activity.in_flight.load(Ordering::Relaxed) > 0 {
            last_seen = seen;
            quiet_checks = 0;
        } else {
            quiet_checks += 1;
            // Quiet checks spanning the timeout: idle for at least the timeout.
            if quiet_checks >= needed {
                return;
            }
        }
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
    /// The number of the first HTTP/1 request head with both `Content-Length` and
    /// `Transfer-Encoding`, or 0.
    ambiguous_head: AtomicU64,
    /// The number of the latest HTTP/1 request head whose target had a `#fragment`, or 0.
    fragment_head: AtomicU64,
    /// Set once the connection is a tunnel: its bytes are no longer HTTP.
    tunnelled: AtomicBool,
    /// Bytes read from the client so far.
    bytes_read: AtomicU64,
    /// The number of the latest HTTP/1 head that asked for a protocol switch, or 0.
    upgrade_head: AtomicU64,
    /// Where in the byte stream that head ends.
    upgrade_head_end: AtomicU64,
}

impl Activity {
    /// Whether the request being handled (the latest started) had both
    /// `Content-Length` and `Transfer-Encoding` in its head.
    pub fn has_ambiguous_framing(&self) -> bool {
        let head = self.ambiguous_head.load(Ordering::Relaxed);
        head != 0 && head == self.requests.load(Ordering::Relaxed)
    }

    /// Whether the request being handled asked for a protocol switch and the client has
    /// sent nothing past its head: only then may the connection become a tunnel.
    pub fn may_switch_protocols(&self) -> bool {
        let head = self.upgrade_head.load(Ordering::Relaxed);
        head != 0
            && head == self.requests.load(Ordering::Relaxed)
            && self.bytes_read.load(Ordering::Relaxed)
                == self.upgrade_head_end.load(Ordering::Relaxed)
    }

    /// Whether the request being handled had a `#fragment` in its request target, which
    /// the URI parser drops silently.
    pub fn has_fragment(&self) -> bool {
        let head = self.fragment_head.load(Ordering::Relaxed);
        head != 0 && head == self.requests.load(Ordering::Relaxed)
    }

    /// Marks the connection as a tunnel.
    pub fn tunnel_started(&self) {
        self.tunnelled.store(true, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
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

/// The most header fields a request head may have.
const MAX_HEADERS: usize = 200;

/// A socket that counts its reads and writes into an [`Activity`].
struct ActivityIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    framing: FramingWatch,
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
            let this = &mut *self;
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
            if this.activity.tunnelled.load(Ordering::Relaxed) {
                this.framing.stop();
            }
            if let Some(head) = this.framing.feed(&buf.filled()[before..]) {
                this.activity.ambiguous_head.store(head, Ordering::Relaxed);
            }
            if let Some(head) = this.framing.fragment() {
                this.activity.fragment_head.store(head, Ordering::Relaxed);
            }
            if let Some((head, end)) = this.framing.upgrade() {
                this.activity.upgrade_head.store(head, Ordering::Relaxed);
                this.activity.upgrade_head_end.store(end, Ordering::Relaxed);
            }
            this.activity
                .bytes_read
                .store(this.framing.fed(), Ordering::Relaxed);
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

/// hyper's timer for `header_read_timeout`, made to count from the head's first byte.
///
/// hyper starts the head timer as soon as it waits for a request, so on a kept-alive
/// connection plain idleness would count against the head. This timer only starts the
/// countdown once a byte has arrived; idleness is `idle_timeout`'s business.
#[derive(Clone)]
struct HeadTimer {
    activity: Arc<Activity>,
    timeout: Duration,
    /// When the connection's first request must have begun (accept + `timeout`).
    first_request_due: Instant,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PlainSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, _deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // SECURITY: the first head's bytes may already have been read (HTTP/2 detection
        // peeks at the start of the connection), so the first head's deadline is fixed at
        // accept time. Later heads start counting at their first byte.
        let first_head = self.activity.requests.load(Ordering::Relaxed) == 0;
        Box::pin(HeadSleep {
            activity: self.activity.clone(),
            reads_at_start: self.activity.reads.load(Ordering::Relaxed),
            timeout: self.timeout,
            deadline: first_head.then_some(self.first_request_due),
        })
    }
}

/// A plain tokio sleep, for any other timer hyper may ask for.
struct PlainSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for PlainSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for PlainSleep {}

/// Fires `timeout` after the first byte of a request head arrived, and never while a
/// kept-alive connection is merely idle. A partial head that arrived together with the
/// previous request is covered by `idle_timeout` instead.
///
/// It looks at the clock whenever it is polled and registers no waker: hyper polls it each
/// time a read of the head finds nothing more (so the first bytes are noticed as they
/// arrive), and the idle watchdog's checks in `serve_connection` wake the connection at
/// least every quarter of `timeout`, so it fires at most a quarter late.
struct HeadSleep {
    activity: Arc<Activity>,
    reads_at_start: u64,
    timeout: Duration,
    deadline: Option<Instant>,
}

impl Future for HeadSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        match self.deadline {
            Some(deadline) if now >= deadline => Poll::Ready(()),
            Some(_) => Poll::Pending,
            None => {
                if self.activity.reads.load(Ordering::Relaxed) != self.reads_at_start {
                    // The head's first bytes arrived since the timer started.
                    self.deadline = Some(now + self.timeout);
                }
                Poll::Pending
            }
        }
    }
}

impl hyper::rt::Sleep for HeadSleep {}
