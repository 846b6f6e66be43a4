//! Keep-alive connections to one upstream target, on hyper's HTTP/1 client.
//!
//! A connection is taken from the idle stack (most recently used first, so warm
//! connections stay warm) or opened, carries one request, and goes back on the stack
//! once its response body has been read to the end. A connection whose response was
//! abandoned half-read is dropped, never reused.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::forward::RequestBody;

/// How many idle connections a target keeps.
const MAX_IDLE: usize = 512;

/// Why a request did not get a response.
pub enum SendError {
    /// No connection could be made; the request was not sent and is handed back.
    Connect(std::io::Error, Box<Request<RequestBody>>),
    /// The request was (at least partly) sent, or the connection broke.
    Failed(hyper::Error),
}

/// The connections to one target.
pub struct Pool {
    authority: http::uri::Authority,
    connect_timeout: Duration,
    /// Idle connections older than this are closed rather than reused: it should be
    /// shorter than the upstream's own keep-alive timeout, so that we never send on a
    /// connection the upstream is closing.
    keepalive_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

impl Pool {
    /// A pool for `authority` (`host:port`). Connects lazily.
    pub fn new(
        authority: http::uri::Authority,
        connect_timeout: Duration,
        keepalive_timeout: Duration,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            authority,
            connect_timeout,
            keepalive_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `request` on an idle connection, or a new one. A request that an idle
    /// connection could not take (it had just closed) is sent once more on a new one.
    pub async fn send(
        self: &Arc<Pool>,
        mut request: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        if let Some(mut sender) = self.take_idle() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.hand_out(sender, response)),
                Err(mut err) => match err.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Failed(err.into_error())),
                },
            }
        }
        let mut sender = match self.connect().await {
            Ok(sender) => sender,
            Err(err) => return Err(SendError::Connect(err, Box::new(request))),
        };
        match sender.send_request(request).await {
            Ok(response) => Ok(self.hand_out(sender, response)),
            Err(err) => Err(SendError::Failed(err)),
        }
    }

    /// The most recently used idle connection that is still open and ready.
    fn take_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(Idle { sender, since }) = idle.pop() {
            if sender.is_ready() && since.elapsed() < self.keepalive_timeout {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> std::io::Result<http1::SendRequest<RequestBody>> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Wraps the response body so that the connection returns to the pool when the body
    /// has been read to its end. A protocol switch keeps the connection for the tunnel.
    fn hand_out(
        self: &Arc<Pool>,
        sender: http1::SendRequest<RequestBody>,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        let reusable = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
        let pool = self.clone();
        response.map(|inner| PooledBody {
            inner,
            finished: false,
            sender: reusable.then_some((pool, sender)),
        })
    }

    fn put(&self, sender: http1::SendRequest<RequestBody>) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The oldest connections sit at the bottom of the stack; under steady load they
        // are never popped, so close the expired ones here.
        let expired = idle
            .iter()
            .take_while(|entry| entry.since.elapsed() >= self.keepalive_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// An upstream response body that gives its connection back to the pool once finished.
pub struct PooledBody {
    inner: Incoming,
    /// The body reported its end (chunked bodies do so only by ending).
    finished: bool,
    sender: Option<(Arc<Pool>, http1::SendRequest<RequestBody>)>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            // A broken body leaves the connection in an unknown state.
            Poll::Ready(Some(Err(_))) => self.sender = None,
            Poll::Ready(None) => self.finished = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // INVARIANT: a connection is reused only after its whole response was read;
        // hyper then has it ready for the next request.
        if (self.finished || self.inner.is_end_stream())
            && let Some((pool, sender)) = self.sender.take()
        {
            pool.put(sender);
        }
    }
}
