//! Accepting client connections: the accept loop, the HTTP/1.1 + HTTP/2 (prior knowledge)
//! server on each connection, connection limits, idle and slow-header timeouts, and drain.
//!
//! Knows nothing of routes or upstreams: each request is handed to `handle`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::Proxy;
use super::handle::handle;

/// What a request knows about the connection it arrived on.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    /// The socket peer: the client, or a proxy in front of us.
    pub peer: SocketAddr,
    /// Our address the client connected to.
    pub local: SocketAddr,
    /// The peer's IP address as an `X-Forwarded-For` value, formatted once.
    pub peer_header: http::HeaderValue,
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
pub async fn run(listener: TcpListener, proxy: Arc<Proxy>, listeners: Listeners) {
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
        let meta = ConnMeta {
            peer,
            local,
            peer_header,
        };
        tokio::spawn(serve_connection(
            stream,
            meta,
            proxy.clone(),
            listeners.shutdown.clone(),
            permit,
        ));
    }
    tracing::debug!(listener = %local, "stopped accepting");
}

/// Serves one client connection until it closes, idles out, or is drained.
async fn serve_connection(
    stream: TcpStream,
    meta: ConnMeta,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let metrics = proxy.metrics.clone();
    metrics.connections_active.inc();
    let limits = proxy.limits.clone();
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(ActivityIo {
        inner: stream,
        activity: activity.clone(),
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(HeadTimer {
            activity: activity.clone(),
            timeout: limits.header_read_timeout,
        })
        .header_read_timeout(limits.header_read_timeout)
        // Heads over our limit get a problem+json 431 from `handle`; twice the limit is
        // the parser's hard cap, past which hyper answers a bare 431 and closes.
        .max_buf_size((limits.max_header_size * 2).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size * 2).unwrap_or(u32::MAX));

    let peer = meta.peer;
    let meta = Arc::new(meta);
    let service_activity = activity.clone();
    let service = service_fn(move |request| {
        let in_flight = InFlight::start(&service_activity);
        let proxy = proxy.clone();
        let meta = meta.clone();
        async move {
            let response = handle(proxy, meta, request).await;
            drop(in_flight);
            response
        }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);

    let check_every = limits.idle_timeout / 4;
    let mut idle_checks = tokio::time::interval_at(Instant::now() + check_every, check_every);
    let mut last_seen = activity.snapshot();
    let mut quiet_checks = 0u32;
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, client.addr = %peer, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.wait_for(|draining| *draining), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = idle_checks.tick() => {
                let seen = activity.snapshot();
                if seen != last_seen || activity.in_flight.load(Ordering::Relaxed) > 0 {
                    last_seen = seen;
                    quiet_checks = 0;
                    continue;
                }
                quiet_checks += 1;
                // Four quiet checks a quarter of idle_timeout apart: idle for at least idle_timeout.
                if quiet_checks == 4 && !draining {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                } else if quiet_checks >= 8 {
                    // A client that ignores a graceful close (an HTTP/2 GOAWAY) is cut off.
                    break;
                }
            }
        }
    }
    metrics.connections_active.dec();
}

/// Byte activity and requests in flight on one connection, for the idle and head timers.
#[derive(Default)]
struct Activity {
    /// Successful reads that returned data.
    reads: AtomicU64,
    /// Successful writes.
    writes: AtomicU64,
    /// Requests whose handler has started and not yet produced a response head.
    in_flight: AtomicUsize,
}

impl Activity {
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
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that counts its reads and writes into an [`Activity`].
struct ActivityIo {
    inner: TcpStream,
    activity: Arc<Activity>,
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

/// hyper's timer for `header_read_timeout`, made to count from the head's first byte.
///
/// hyper starts the head timer as soon as it waits for a request, so on a kept-alive
/// connection plain idleness would count against the head. This timer only starts the
/// countdown once a byte has arrived; idleness is `idle_timeout`'s business.
#[derive(Clone)]
struct HeadTimer {
    activity: Arc<Activity>,
    timeout: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PlainSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, _deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let check = self.timeout / 4;
        Box::pin(HeadSleep {
            activity: self.activity.clone(),
            reads_at_start: self.activity.reads.load(Ordering::Relaxed),
            timeout: self.timeout,
            check,
            deadline: None,
            sleep: Box::pin(tokio::time::sleep(check)),
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

/// Fires `timeout` after the first byte of a request head arrived (measured to a quarter
/// of `timeout`), and never while the connection is merely idle.
struct HeadSleep {
    activity: Arc<Activity>,
    reads_at_start: u64,
    timeout: Duration,
    check: Duration,
    deadline: Option<Instant>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let now = Instant::now();
            let next = match self.deadline {
                Some(deadline) if now >= deadline => return Poll::Ready(()),
                Some(deadline) => deadline,
                None if self.activity.reads.load(Ordering::Relaxed) != self.reads_at_start => {
                    // The head's first bytes arrived since the last check.
                    let deadline = now + self.timeout;
                    self.deadline = Some(deadline);
                    deadline
                }
                None => now + self.check,
            };
            self.sleep.as_mut().reset(next);
        }
    }
}

impl hyper::rt::Sleep for HeadSleep {}
