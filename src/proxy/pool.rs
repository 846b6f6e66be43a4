//! Keep-alive HTTP/1.1 connections to one upstream target.
//!
//! A connection is taken from the idle stack (most recently used first, so warm
//! connections stay warm) or opened, carries one request, and goes back on the stack
//! once its response has been read to its end with nothing after it. A response cut
//! short, a body abandoned half-read, `Connection: close`, a body that ends with the
//! connection, or a request body the upstream stopped reading all close the connection
//! instead: it is reused only when we know exactly where the last response ended.
//!
//! The request's own task does the I/O, so a request costs no hand-over to a
//! connection task and back; `h1` has the wire format.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::forward::{BoxError, Progress, RequestBody};
use super::h1::Malformed;
use super::h1::body::{Decoder, Encoder, ReadError, WriteError, poll_read_body, write_body};
use super::h1::client::{self, Added, Parsed, ResponseHead};

/// How many idle connections a target keeps.
const MAX_IDLE: usize = 512;
/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// How much room each read asks for.
const READ_SIZE: usize = 16 * 1024;

/// Why a request did not get a response.
pub enum SendError {
    /// No connection could be made; the request was not sent and is handed back.
    Connect(io::Error, Box<Request<RequestBody>>),
    /// The request was (at least partly) sent, or the connection broke, or the response
    /// was malformed: counted in `upstream_errors_total{kind="protocol"}` already.
    Failed(BoxError),
    /// Reading the client's body failed: it broke off, was malformed or passed the body
    /// limit. The client's fault, not the upstream's.
    Body(BoxError),
    /// The upstream refused the TLS session after the handshake seemed done (TLS 1.3
    /// refuses a client certificate then), or broke it: why, in a few words.
    Tls(&'static str),
}

/// A response from the upstream, and the connection itself when it switched protocols.
pub struct Exchanged {
    pub response: Response<UpstreamBody>,
    pub switched: Option<Switched>,
}

/// An upstream connection after a `101 Switching Protocols`, for the tunnel.
pub struct Switched {
    pub stream: UpstreamStream,
    /// Bytes the upstream sent after the 101, already read.
    pub early: Bytes,
}

/// A connection to a target: plain TCP, or TLS over it.
pub enum UpstreamStream {
    /// An http target's.
    Plain(TcpStream),
    /// An https target's.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

streams_enum_io!(UpstreamStream { Plain, Tls });

/// How a pool reaches its target over TLS.
pub struct PoolTls {
    /// The client setup of the upstream, which holds its session cache.
    pub client: Arc<rustls::ClientConfig>,
    /// The name sent and checked.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// The connections to one target.
pub struct Pool {
    authority: http::uri::Authority,
    /// `Some` for an https target.
    tls: Option<PoolTls>,
    connect_timeout: Duration,
    /// Idle connections older than this are closed rather than reused: it should be
    /// shorter than the upstream's own keep-alive timeout, so that we never send on a
    /// connection the upstream is closing.
    keepalive_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    /// The upstream's `upstream_errors_total{kind="protocol"}`: the pool sees every way
    /// an exchange or a response body breaks the protocol.
    protocol_errors: IntCounter,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// One open connection and what has been read from it but not yet used. Generic over the
/// stream so that tests can script one.
pub struct Connection<S = UpstreamStream> {
    stream: S,
    read: BytesMut,
}

/// A stream an exchange reads and writes at once: a request body may still be going up
/// while the response comes down.
trait Duplex: AsyncRead + AsyncWrite + Unpin {
    fn halves(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_);
}

impl Duplex for TcpStream {
    fn halves(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_) {
        self.split()
    }
}

impl Duplex for UpstreamStream {
    fn halves(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_) {
        match self {
            UpstreamStream::Plain(stream) => {
                let (read, write) = stream.split();
                (Half::Plain(read), Half::Plain(write))
            }
            // A TLS stream cannot be split by borrowing: its halves share a lock.
            UpstreamStream::Tls(stream) => {
                let (read, write) = tokio::io::split(&mut **stream);
                (Half::Tls(read), Half::Tls(write))
            }
        }
    }
}

/// One half of an [`UpstreamStream`]: a TCP half borrowed, or a TLS half.
enum Half<P, T> {
    Plain(P),
    Tls(T),
}

impl<P: AsyncRead + Unpin, T: AsyncRead + Unpin> AsyncRead for Half<P, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Half::Plain(half) => Pin::new(half).poll_read(cx, buf),
            Half::Tls(half) => Pin::new(half).poll_read(cx, buf),
        }
    }
}

impl<P: AsyncWrite + Unpin, T: AsyncWrite + Unpin> AsyncWrite for Half<P, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Half::Plain(half) => Pin::new(half).poll_write(cx, buf),
            Half::Tls(half) => Pin::new(half).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Half::Plain(half) => Pin::new(half).poll_write_vectored(cx, bufs),
            Half::Tls(half) => Pin::new(half).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Half::Plain(half) => half.is_write_vectored(),
            Half::Tls(half) => half.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Half::Plain(half) => Pin::new(half).poll_flush(cx),
            Half::Tls(half) => Pin::new(half).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Half::Plain(half) => Pin::new(half).poll_shutdown(cx),
            Half::Tls(half) => Pin::new(half).poll_shutdown(cx),
        }
    }
}

/// The upstream side of an upload, which tells the body's progress when the upstream
/// stops taking bytes: a timeout then is the upstream's (504), not the client's (408).
struct Watched<W> {
    inner: W,
    progress: Option<Arc<Progress>>,
}

impl<W> Watched<W> {
    fn mark<T>(&self, polled: Poll<T>) -> Poll<T> {
        if polled.is_pending()
            && let Some(progress) = &self.progress
        {
            progress.set_awaiting_client(false);
        }
        polled
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Watched<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.mark(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.mark(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.mark(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How an exchange on one connection failed.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    /// The connection closed before a byte of the response arrived.
    #[error("the upstream closed the connection without answering")]
    Closed,
    #[error("the upstream connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream's response is malformed: {0}")]
    Malformed(#[from] Malformed),
    /// Reading the client's body failed (it broke off, or passed the body limit).
    #[error(transparent)]
    Body(BoxError),
}

impl Pool {
    /// A pool for `authority` (`host:port`). Connects lazily.
    pub fn new(
        authority: http::uri::Authority,
        tls: Option<PoolTls>,
        connect_timeout: Duration,
        keepalive_timeout: Duration,
        protocol_errors: IntCounter,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            authority,
            tls,
            connect_timeout,
            keepalive_timeout,
            idle: Mutex::new(Vec::new()),
            protocol_errors,
        })
    }

    /// Sends `request` on an idle connection, or a new one. When an idle connection turns
    /// out to have been closed by the upstream before it answered, a request without a
    /// body whose method is safe (GET, HEAD, OPTIONS, TRACE) is sent once more on a new
    /// connection.
    pub async fn send(
        self: &Arc<Pool>,
        request: Request<RequestBody>,
        added: &Added,
    ) -> Result<Exchanged, SendError> {
        let (parts, mut body) = request.into_parts();
        let framing = if body.is_end_stream() {
            Encoder::Empty
        } else {
            match body.size_hint().exact() {
                Some(length) => Encoder::Length(length),
                None => Encoder::Chunked,
            }
        };
        let mut head = Vec::with_capacity(256 + 48 * parts.headers.len());
        client::write_request_head(&mut head, &parts, added, framing, self.authority.as_str());
        let exchange = Exchange {
            head: &head,
            framing,
            head_request: parts.method == http::Method::HEAD,
            upgrade: added.replaces(&http::header::UPGRADE),
            progress: body.progress(),
        };
        if let Some(connection) = self.take_idle() {
            match exchange.run(connection, &mut body).await {
                Ok((head, connection)) => {
                    return self.hand_out(head, connection, exchange.upgrade);
                }
                Err(ExchangeError::Closed)
                    if framing == Encoder::Empty && parts.method.is_safe() =>
                {
                    tracing::debug!(target = %self.authority, "idle upstream connection was closed; sending on a new one");
                }
                Err(err) => return Err(self.failed(err)),
            }
        }
        // Boxed: a new connection's TCP and TLS handshakes are rare with keep-alive, and
        // inline their state would be room every exchange keeps (see
        // `client_http1::serve`).
        let connection = match Box::pin(self.connect()).await {
            Ok(connection) => connection,
            Err(err) => {
                return Err(SendError::Connect(
                    err,
                    Box::new(Request::from_parts(parts, body)),
                ));
            }
        };
        match exchange.run(connection, &mut body).await {
            Ok((head, connection)) => self.hand_out(head, connection, exchange.upgrade),
            Err(err) => Err(self.failed(err)),
        }
    }

    /// Tells the client's faults from the upstream's, and counts the upstream's.
    fn failed(&self, err: ExchangeError) -> SendError {
        if let ExchangeError::Io(io) = &err
            && let Some(cause) = crate::tls::upstream_failure(io)
        {
            return SendError::Tls(cause);
        }
        match err {
            ExchangeError::Body(err) => SendError::Body(err),
            err => {
                self.protocol_errors.inc();
                SendError::Failed(err.into())
            }
        }
    }

    /// The most recently used idle connection that is still open.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(Idle { connection, since }) = idle.pop() {
            if since.elapsed() < self.keepalive_timeout && connection.is_quiet() {
                return Some(connection);
            }
        }
        None
    }

    /// A new connection, its TLS handshake (for an https target) included in the connect
    /// timeout.
    async fn connect(&self) -> io::Result<Connection> {
        let connecting = async {
            let stream = TcpStream::connect(self.authority.as_str()).await?;
            stream.set_nodelay(true)?;
            match &self.tls {
                None => Ok(UpstreamStream::Plain(stream)),
                Some(tls) => tokio_rustls::TlsConnector::from(Arc::clone(&tls.client))
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map(|stream| UpstreamStream::Tls(Box::new(stream))),
            }
        };
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(Connection {
            stream,
            read: BytesMut::with_capacity(READ_SIZE),
        })
    }

    /// Puts the response together. A body already in the buffer is taken at once, so the
    /// connection is back in the pool before the response leaves; a protocol switch
    /// the client asked for hands the connection to the tunnel. A body already known to
    /// be malformed or cut short fails the exchange: the client gets a 502 with a body,
    /// not a response head followed by a close.
    fn hand_out(
        self: &Arc<Pool>,
        head: ResponseHead,
        connection: Connection,
        upgrade: bool,
    ) -> Result<Exchanged, SendError> {
        let ResponseHead {
            status,
            fields,
            framing,
            keep_alive,
        } = head;
        let mut switched = None;
        let mut body = UpstreamBody {
            framing,
            connection: None,
            pool: self.clone(),
            reusable: keep_alive,
            pending: None,
            done: false,
        };
        if status == StatusCode::SWITCHING_PROTOCOLS && upgrade {
            body.done = true;
            switched = Some(Switched {
                stream: connection.stream,
                early: connection.read.freeze(),
            });
        } else {
            body.connection = Some(connection);
            body.settle().map_err(SendError::Failed)?;
        }
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response.extensions_mut().insert(fields);
        Ok(Exchanged { response, switched })
    }

    fn put(&self, connection: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The oldest connections sit at the bottom of the stack; under steady load they
        // are never popped, so close the expired ones here.
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|entry| {
                now.saturating_duration_since(entry.since) >= self.keepalive_timeout
            })
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                connection,
                since: now,
            });
        }
    }
}

impl Connection {
    /// Whether an idle connection has had nothing arrive: a close from the upstream, or
    /// bytes nobody asked for, rule it out. Asks the runtime's readiness first, so that
    /// the usual case costs no system call.
    fn is_quiet(&self) -> bool {
        let tcp = match &self.stream {
            UpstreamStream::Plain(stream) => stream,
            UpstreamStream::Tls(stream) => stream.get_ref().0,
        };
        let mut context = Context::from_waker(Waker::noop());
        match tcp.poll_read_ready(&mut context) {
            Poll::Ready(Ok(())) if matches!(self.stream, UpstreamStream::Tls(_)) => {
                // Bytes on a TLS connection cannot be peeked without reading them; a close
                // or anything else rules the connection out.
                false
            }
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be left over from the last read; a read that would block
            // settles it.
            Poll::Ready(Ok(())) => matches!(
                tcp.try_read(&mut [0u8; 1]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }
}

/// One request's trip over one connection.
struct Exchange<'a> {
    head: &'a [u8],
    framing: Encoder,
    head_request: bool,
    /// The request asks to switch protocols.
    upgrade: bool,
    /// The request body's progress, told when the upstream stops taking it.
    progress: Option<Arc<Progress>>,
}

impl Exchange<'_> {
    /// Writes the request and reads the response head. A response that arrives while the
    /// body is still being sent ends the upload, and the connection's reuse with it.
    async fn run<S: Duplex, B>(
        &self,
        mut connection: Connection<S>,
        body: &mut B,
    ) -> Result<(ResponseHead, Connection<S>), ExchangeError>
    where
        B: Body<Data = Bytes, Error = BoxError> + Unpin,
    {
        let mut reusable = true;
        let sent = if self.framing == Encoder::Empty {
            connection
                .stream
                .write_all(self.head)
                .await
                .map_err(ExchangeError::Io)
        } else {
            let Connection { stream, read } = &mut connection;
            // The halves live in this block, so that the connection is free again after it.
            let raced = {
                let (mut reader, writer) = stream.halves();
                let mut writer = Watched {
                    inner: writer,
                    progress: self.progress.clone(),
                };
                let upload = async {
                    let mut out = Vec::with_capacity(self.head.len() + 4096);
                    out.extend_from_slice(self.head);
                    // A request body never ends with the connection (see write_request_head).
                    let encoder = match self.framing {
                        Encoder::UntilClose => Encoder::Chunked,
                        framing => framing,
                    };
                    write_body(&mut writer, &mut out, body, encoder)
                        .await
                        .map_err(|err| match err {
                            WriteError::Io(err) => ExchangeError::Io(err),
                            WriteError::Body(err) | WriteError::Unsent(err) => {
                                ExchangeError::Body(err)
                            }
                            // The client's reader enforces its Content-Length; these keep a
                            // mistake there from ever writing past the length announced.
                            WriteError::Longer => ExchangeError::Body(
                                "the request body is longer than its Content-Length".into(),
                            ),
                            WriteError::Shorter => ExchangeError::Body(
                                "the request body ended before its Content-Length".into(),
                            ),
                        })
                };
                let early = read_head(&mut reader, read, self.head_request);
                tokio::select! {
                    biased;
                    sent = upload => Ok(sent),
                    head = early => Err(head),
                }
            };
            let sent = match raced {
                Ok(sent) => sent,
                Err(head) => {
                    let mut head = head?;
                    head.keep_alive = false;
                    return Ok((head, connection));
                }
            };
            if !read.is_empty() {
                // The answer began before the body was all sent: whether the upstream read
                // the rest is unknown, so the connection is not reused.
                reusable = false;
            }
            sent
        };
        let mut head = match sent {
            Ok(()) => self.read_head(&mut connection).await?,
            // The upstream may have answered before it stopped reading (a refusal of a
            // large body, say); that answer is passed on.
            Err(ExchangeError::Io(err)) => match self.read_head(&mut connection).await {
                Ok(mut head) => {
                    head.keep_alive = false;
                    head
                }
                Err(ExchangeError::Closed) => return Err(ExchangeError::Closed),
                Err(_) => return Err(ExchangeError::Io(err)),
            },
            Err(err) => return Err(err),
        };
        if head.status == StatusCode::SWITCHING_PROTOCOLS && !self.upgrade {
            // Unasked for: passed on as a plain response (which the caller refuses), and
            // the connection is not reused.
            reusable = false;
        }
        head.keep_alive &= reusable;
        Ok((head, connection))
    }

    async fn read_head<S: AsyncRead + Unpin>(
        &self,
        connection: &mut Connection<S>,
    ) -> Result<ResponseHead, ExchangeError> {
        read_head(
            &mut connection.stream,
            &mut connection.read,
            self.head_request,
        )
        .await
    }
}

/// Reads until `read` starts with a final response head, skipping interim (1xx) ones.
async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    read: &mut BytesMut,
    head_request: bool,
) -> Result<ResponseHead, ExchangeError> {
    let mut answered = !read.is_empty();
    loop {
        if !read.is_empty() {
            match client::parse_response(read, head_request)? {
                Parsed::Final(head, length) => {
                    read.advance(length);
                    return Ok(head);
                }
                Parsed::Interim(length) => {
                    read.advance(length);
                    continue;
                }
                Parsed::Partial if read.len() >= MAX_HEAD => {
                    return Err(Malformed::HeadTooLarge(MAX_HEAD).into());
                }
                Parsed::Partial => {}
            }
        }
        read.reserve(READ_SIZE);
        match reader.read_buf(read).await {
            Ok(0) if !answered => return Err(ExchangeError::Closed),
            Ok(0) => return Err(Malformed::HeadCut.into()),
            Ok(_) => answered = true,
            Err(err) if !answered && is_reset(&err) => return Err(ExchangeError::Closed),
            Err(err) => return Err(err.into()),
        }
    }
}

/// Whether the upstream went away: a reset, or (on TLS) a close without `close_notify`.
fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// An upstream response body. It gives its connection back to the pool once read to
/// the end with nothing left over, and closes it otherwise.
pub struct UpstreamBody {
    framing: Decoder,
    /// The connection while the body is still arriving on it.
    connection: Option<Connection>,
    /// Where the connection goes afterwards, if `reusable`.
    pool: Arc<Pool>,
    reusable: bool,
    /// Body bytes taken off the connection and not yet handed out.
    pending: Option<Bytes>,
    done: bool,
}

impl UpstreamBody {
    /// Takes what has arrived of the body, without waiting for more; when that is all of
    /// it, the connection is released at once. Fails when what has arrived is malformed,
    /// or the upstream closed before the body's end.
    fn settle(&mut self) -> Result<(), BoxError> {
        let mut context = Context::from_waker(Waker::noop());
        match Pin::new(&mut *self).poll_frame(&mut context) {
            Poll::Pending | Poll::Ready(None) => Ok(()),
            Poll::Ready(Some(Ok(frame))) => {
                self.pending = frame.into_data().ok().filter(|data| !data.is_empty());
                Ok(())
            }
            Poll::Ready(Some(Err(err))) => Err(err),
        }
    }

    /// The body has ended: the connection goes back to the pool if it may be reused and
    /// nothing follows the body, and is closed otherwise.
    fn finish(&mut self) {
        self.done = true;
        if let Some(connection) = self.connection.take()
            && connection.read.is_empty()
            && self.reusable
        {
            self.pool.put(connection);
        }
    }

    fn fail(&mut self, err: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.connection = None;
        self.pool.protocol_errors.inc();
        Poll::Ready(Some(Err(err.into())))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(data) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let Some(Connection { stream, read }) = &mut this.connection else {
            this.done = true;
            return Poll::Ready(None);
        };
        let until_close = this.framing == Decoder::UntilClose;
        match poll_read_body(stream, read, &mut this.framing, READ_SIZE, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(data))) => {
                if this.framing.is_done() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Ok(None)) => {
                if until_close {
                    // The end of the connection ended this body: it is never reused.
                    this.reusable = false;
                }
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Err(ReadError::Closed)) => {
                this.fail("the upstream closed the connection before the body ended")
            }
            Poll::Ready(Err(ReadError::Malformed(err))) => {
                this.fail(format!("the upstream's response is malformed: {err}"))
            }
            Poll::Ready(Err(ReadError::Io(err))) => this.fail(err),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let pending = self.pending.as_ref().map_or(0, |data| data.len() as u64);
        match (&self.framing, self.done) {
            (_, true) | (Decoder::Empty, _) => SizeHint::with_exact(pending),
            (Decoder::Length(left), false) => SizeHint::with_exact(pending + left),
            _ => {
                let mut hint = SizeHint::new();
                hint.set_lower(pending);
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;
    use tokio_test::io::{Builder, Mock};

    use super::*;
    use crate::proxy::client_http1::ClientBody;

    impl Duplex for Mock {
        fn halves(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_) {
            tokio::io::split(self)
        }
    }

    /// A request body that has `pieces` ready, then waits for ever.
    struct Uploading(VecDeque<&'static [u8]>);

    impl Body for Uploading {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.0.pop_front() {
                Some(piece) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(piece))))),
                None => Poll::Pending,
            }
        }
    }

    fn connection(stream: Mock) -> Connection<Mock> {
        Connection {
            stream,
            read: BytesMut::new(),
        }
    }

    const HEAD: &[u8] = b"POST /upload HTTP/1.1\r\ncontent-length: 10\r\n\r\n";

    fn exchange(framing: Encoder) -> Exchange<'static> {
        Exchange {
            head: HEAD,
            framing,
            head_request: false,
            upgrade: false,
            progress: None,
        }
    }

    /// Uploads `ready` (then waits for ever) on `stream`, which answers while the upload
    /// is unfinished: the response head, bounded in time so that a regression fails.
    async fn answered_mid_upload(stream: Mock, ready: &[&'static [u8]]) -> ResponseHead {
        let mut body = Uploading(ready.iter().copied().collect());
        let exchange = exchange(Encoder::Length(10));
        let ran = exchange.run(connection(stream), &mut body);
        let (head, _) = tokio::time::timeout(Duration::from_secs(10), ran)
            .await
            .expect("the answer ends the exchange")
            .unwrap();
        head
    }

    /// An upstream that refuses an upload before it has all of it: its answer is passed
    /// on, and the connection, whose next bytes nobody can place, is not reused.
    #[tokio::test]
    async fn an_answer_before_the_upload_ends_is_passed_on_and_not_reused() {
        let mut sent = HEAD.to_vec();
        sent.extend_from_slice(b"hello");
        let stream = Builder::new()
            .write(&sent)
            .read(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\n\r\n")
            .build();
        let head = answered_mid_upload(stream, &[b"hello"]).await;
        assert_eq!(head.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!head.keep_alive);
    }

    /// The head goes up at once, before a body that is not ready yet: an upstream may
    /// answer on the head alone.
    #[tokio::test]
    async fn the_head_goes_up_before_a_body_that_is_not_ready() {
        let stream = Builder::new()
            .write(HEAD)
            .read(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
            .build();
        let head = answered_mid_upload(stream, &[]).await;
        assert_eq!(head.status, StatusCode::UNAUTHORIZED);
        assert!(!head.keep_alive);
    }

    /// How a reused connection that the upstream closed is told apart from one that broke
    /// mid-answer: only the first may be retried.
    #[tokio::test]
    async fn a_close_before_any_answer_is_told_from_a_broken_answer() {
        let exchange = exchange(Encoder::Empty);
        let mut body = Uploading(VecDeque::new());
        let closed = Builder::new().write(HEAD).build();
        assert!(matches!(
            exchange.run(connection(closed), &mut body).await,
            Err(ExchangeError::Closed)
        ));
        let reset = Builder::new()
            .write(HEAD)
            .read_error(io::ErrorKind::ConnectionReset.into())
            .build();
        assert!(matches!(
            exchange.run(connection(reset), &mut body).await,
            Err(ExchangeError::Closed)
        ));
        let cut = Builder::new()
            .write(HEAD)
            .read(b"HTTP/1.1 200 OK\r\n")
            .build();
        assert!(matches!(
            exchange.run(connection(cut), &mut body).await,
            Err(ExchangeError::Malformed(_))
        ));
        let answered = Builder::new()
            .write(HEAD)
            .read(b"HTTP/1.1 204 No Content\r\n\r\n")
            .build();
        let (head, _) = exchange.run(connection(answered), &mut body).await.unwrap();
        assert_eq!(head.status, StatusCode::NO_CONTENT);
        assert!(head.keep_alive);
    }

    /// A safe request without a body that meets an idle connection the upstream closed
    /// is sent once more, on a new connection (real sockets: the pool connects).
    #[tokio::test]
    async fn a_stale_idle_connection_is_retried_on_a_new_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Reads one request head (the requests here have no body).
        async fn request(stream: &mut TcpStream) {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "a whole head");
                head.push(byte[0]);
            }
        }
        let upstream = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            request(&mut first).await;
            first
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
                .await
                .unwrap();
            // The second request arrives on the kept connection, which closes unanswered.
            request(&mut first).await;
            drop(first);
            let (mut fresh, _) = listener.accept().await.unwrap();
            request(&mut fresh).await;
            fresh
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh")
                .await
                .unwrap();
        });
        let pool = Pool::new(
            addr.to_string().parse().unwrap(),
            None,
            Duration::from_secs(5),
            Duration::from_secs(60),
            IntCounter::new("protocol_errors", "test").unwrap(),
        );
        let get = |path: &str| {
            Request::get(path)
                .body(RequestBody::new(ClientBody::Empty, None))
                .unwrap()
        };
        for (path, expected) in [("/one", "first"), ("/two", "fresh")] {
            let Ok(exchanged) = pool.send(get(path), &Added::default()).await else {
                panic!("{path} got no response");
            };
            let body = exchanged.response.into_body().collect().await.unwrap();
            assert_eq!(body.to_bytes(), expected, "{path}");
        }
        tokio::time::timeout(Duration::from_secs(10), upstream)
            .await
            .unwrap()
            .unwrap();
    }
}
