//! HTTP/1.1 on client connections: request heads read (httparse) and refused when two
//! servers could read them differently, request bodies framed, responses written,
//! keep-alive, `100 Continue`, protocol switches, the head timeout and drain.
//!
//! SECURITY: this is where the gateway decides where one request ends and the next
//! begins. A head whose body length is in any doubt (both `Content-Length` and
//! `Transfer-Encoding`, differing lengths, a transfer coding other than `chunked`) or
//! whose target hides a `#fragment` is answered with a 400 and the connection closed:
//! nothing after it is ever read as a request.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::oneshot;

use super::h1::body::{
    Decoded, Decoder, Encoder, ReadError, WriteError, poll_read_body, write_body,
};
use super::h1::client::ResponseFields;
use super::h1::server::{HeadError, RequestHead, parse_request};
use super::h1::{self, FieldKind, push_decimal, write_field};
use super::handle::{handle, refuse};
use super::head_memory::{HeadCharge, HeadMemory};
use super::listener::{Activity, ActivityIo, ConnMeta, InFlight};
use super::respond::{self, ProxyError, X_REQUEST_ID};
use super::{BoxError, ProxyBody};
use crate::proxy::Live;

/// How much is read from the socket at a time.
const READ_SIZE: usize = 8 * 1024;
/// How long, and for how many bytes, a closing connection reads what the client still
/// sends (see [`close`]).
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// The interim response that tells a client waiting on `Expect: 100-continue` to send.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What the HTTP/1 side of a connection is configured with.
pub struct Settings {
    /// `limits.max_header_size`, for the 431's detail.
    pub max_header_size: usize,
    /// How much of an incomplete head is read before the request is refused with a 431
    /// (a complete head may arrive with up to one more read). Heads between
    /// `max_header_size` and this get their 431 from `handle`, on their route.
    pub max_head: usize,
    /// Idle-watchdog ticks a request head may take from its first byte (see
    /// `Activity::ticks`), rounded up so that a head is never cut off early.
    pub head_ticks: u64,
    /// The budget unfinished heads are charged to (`limits.header_memory`).
    pub head_memory: Arc<HeadMemory>,
}

/// The client's socket and what has been read from it but not used yet. Generic over the
/// socket so that tests can script one.
pub struct Wire<IO = ActivityIo> {
    pub io: IO,
    pub buf: BytesMut,
    /// The tick at which the first bytes in `buf` arrived while a request was being
    /// handled: the next head's clock starts there.
    pub next_head_since: Option<u64>,
    /// The charge for those bytes, which the next head's reading takes over.
    pub head_charge: Option<HeadCharge>,
    /// The request being answered was sent before the previous one was answered
    /// (pipelined).
    pub pipelined: bool,
    /// The client closed its sending side after pipelining requests: what it sent is
    /// answered, and nothing more is read.
    pub client_done: bool,
}

/// A request body as the proxy receives it, from either protocol.
pub enum ClientBody {
    Empty,
    Http1(Http1Body),
    Http2(Incoming, Pieces),
}

impl ClientBody {
    /// An HTTP/2 request's body, as hyper reads it.
    pub fn http2(body: Incoming) -> ClientBody {
        ClientBody::Http2(body, Pieces::default())
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Http1(body) => body.poll_frame(cx),
            ClientBody::Http2(body, pieces) => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                    && let Err(problem) = pieces.count(data.len())
                {
                    return Poll::Ready(Some(Err(problem.into())));
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Http1(body) => body.size_hint().upper() == Some(0),
            ClientBody::Http2(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Http2(body, _) => body.size_hint(),
        }
    }
}

/// An HTTP/1 request body, read from the client's socket by whatever polls it (the
/// request's own upstream exchange). It owns the socket while it lives, and gives it
/// back to its connection, with where the body stands, when it is dropped: with its
/// request, before the request's response comes back.
pub struct Http1Body<IO = ActivityIo> {
    /// The socket; `None` only once given back.
    wire: Option<Wire<IO>>,
    decoder: Decoder,
    reading: Reading,
    back: Option<oneshot::Sender<Returned<IO>>>,
    pieces: Pieces,
}

/// Pieces a request body may come in for free; beyond them, each piece must bring
/// `MIN_PIECE` bytes on average. SECURITY: every piece (a chunk, or a read) costs a frame
/// handed through the gateway. A megabyte in one-byte chunks would cost a million of
/// them, where one chunk costs a few; this keeps its cost within a small multiple.
const FREE_PIECES: u64 = 16 * 1024;
const MIN_PIECE: u64 = 64;

/// Pieces of a request body handed out (chunks or reads of HTTP/1, DATA frames of
/// HTTP/2), and their bytes: what reading it has cost.
#[derive(Debug, Default)]
pub struct Pieces {
    pieces: u64,
    received: u64,
}

impl Pieces {
    /// Counts a piece of `len` bytes; an error once the body has come in too many small
    /// pieces.
    fn count(&mut self, len: usize) -> Result<(), String> {
        self.pieces += 1;
        self.received += len as u64;
        if self.pieces > FREE_PIECES + self.received / MIN_PIECE {
            return Err(format!(
                "the request body came in too many small pieces (more than {FREE_PIECES}, averaging under {MIN_PIECE} bytes); send it in larger chunks"
            ));
        }
        Ok(())
    }
}

/// Where a request body stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// A `100 Continue` is owed before the body's first read: this many bytes of it are
    /// still to write.
    Continue(usize),
    /// Writing the `100 Continue` failed after part of it went out: nothing may follow
    /// on this connection.
    ContinueCut,
    /// The body is being read.
    Body,
    /// The body was read to its end.
    Done,
    /// The body failed; it is never read again.
    Failed,
}

/// What a request body gives back to its connection.
struct Returned<IO = ActivityIo> {
    wire: Wire<IO>,
    decoder: Decoder,
    reading: Reading,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Http1Body<IO> {
    /// The body `decoder` frames on `wire`; `back` gets the socket when it is dropped.
    fn new(
        wire: Wire<IO>,
        decoder: Decoder,
        expect_continue: bool,
        back: oneshot::Sender<Returned<IO>>,
    ) -> Http1Body<IO> {
        Http1Body {
            wire: Some(wire),
            decoder,
            reading: if expect_continue {
                Reading::Continue(CONTINUE.len())
            } else {
                Reading::Body
            },
            back: Some(back),
            pieces: Pieces::default(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (self.reading, &self.decoder) {
            (Reading::Done, _) => SizeHint::with_exact(0),
            (_, Decoder::Length(left)) => SizeHint::with_exact(*left),
            _ => SizeHint::new(),
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.reading {
            Reading::Done => return Poll::Ready(None),
            Reading::Failed | Reading::ContinueCut => {
                return Poll::Ready(Some(Err("the request body failed".into())));
            }
            Reading::Continue(_) | Reading::Body => {}
        }
        let Some(wire) = &mut self.wire else {
            return self.fail("the request body has no socket");
        };
        while let Reading::Continue(left) = self.reading {
            let from = CONTINUE.len() - left;
            let failed: BoxError = match Pin::new(&mut wire.io).poll_write(cx, &CONTINUE[from..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(written)) if written >= left => {
                    self.reading = Reading::Body;
                    continue;
                }
                Poll::Ready(Ok(written)) if written > 0 => {
                    self.reading = Reading::Continue(left - written);
                    continue;
                }
                Poll::Ready(Ok(_)) => "the client closed the connection".into(),
                Poll::Ready(Err(err)) => err.into(),
            };
            let failure = self.fail(failed);
            if left < CONTINUE.len() {
                self.reading = Reading::ContinueCut;
            }
            return failure;
        }
        match poll_read_body(
            &mut wire.io,
            &mut wire.buf,
            &mut self.decoder,
            READ_SIZE,
            cx,
        ) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(data))) => {
                if let Err(problem) = self.pieces.count(data.len()) {
                    return self.fail(problem);
                }
                if self.decoder.is_done() {
                    self.reading = Reading::Done;
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Ok(None)) => {
                self.reading = Reading::Done;
                Poll::Ready(None)
            }
            Poll::Ready(Err(ReadError::Closed)) => {
                self.fail("the client closed the connection before the body ended")
            }
            Poll::Ready(Err(ReadError::Malformed(err))) => {
                self.fail(format!("the request body is malformed: {err}"))
            }
            Poll::Ready(Err(ReadError::Io(err))) => self.fail(err),
        }
    }

    fn fail(&mut self, err: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.reading = Reading::Failed;
        Poll::Ready(Some(Err(err.into())))
    }
}

impl<IO> Drop for Http1Body<IO> {
    fn drop(&mut self) {
        if let (Some(wire), Some(back)) = (self.wire.take(), self.back.take()) {
            let decoder = std::mem::replace(&mut self.decoder, Decoder::Empty);
            // The connection may be gone already; then so is the socket.
            let _ = back.send(Returned {
                wire,
                decoder,
                reading: self.reading,
            });
        }
    }
}

impl<IO> Returned<IO> {
    /// The socket, and whether the body was read to its end so that the connection can
    /// carry another request; `None` when the connection must close without answering.
    fn settle(self) -> Option<(Wire<IO>, bool)> {
        let Returned {
            mut wire,
            mut decoder,
            reading,
        } = self;
        let done = match reading {
            Reading::Done => true,
            // A `100 Continue` cut off halfway cannot be followed by a response.
            Reading::Continue(left) if left < CONTINUE.len() => return None,
            Reading::ContinueCut => return None,
            // The rest of a body already in the buffer is skipped, so the connection can
            // carry on; a body still on its way (or owed a `100 Continue`) closes it.
            Reading::Body => skip_buffered(&mut decoder, &mut wire.buf),
            Reading::Continue(_) | Reading::Failed => false,
        };
        Some((wire, done))
    }
}

/// Locks `mutex`; nothing holding these locks can panic, but a poisoned one is no reason
/// to fail either.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request's ask to switch protocols (HTTP/1.1, `Connection: upgrade`, an `Upgrade`
/// other than `h2c`), put in its extensions; the socket follows once the `101` is written.
/// (Shared only because extensions must be `Clone`; the first to await it takes it.)
#[derive(Clone)]
pub struct ClientSwitch {
    /// The `Upgrade` field: the protocol asked for.
    pub protocol: HeaderValue,
    /// The client sent bytes past the head with it; they would reach the tunnel without
    /// ever having been read as HTTP.
    pub data_followed: bool,
    socket: Arc<Mutex<Option<oneshot::Receiver<ActivityIo>>>>,
}

impl ClientSwitch {
    /// The client's socket once the `101` has been written; `None` when the connection
    /// ended first.
    pub async fn socket(self) -> Option<ActivityIo> {
        let socket = lock(&self.socket).take()?;
        socket.await.ok()
    }
}

/// Serves HTTP/1.1 requests on `wire` until the client closes, a response or the client
/// asks to close, a head times out, the connection drains or becomes a tunnel.
///
/// A connection is busy or idle. Busy, it keeps its buffers and the state of a request
/// exchange (over 10 KiB, in a box) from one request to the next, so that a client
/// sending request after request pays for none of them again. A connection still
/// waiting for its next request when the idle watchdog next ticks goes idle: it lets go
/// of all of that, as nginx does between requests, and holds only its socket until the
/// client sends again. Gateways at the edge hold many idle connections.
pub fn serve(
    wire: Wire,
    meta: Arc<ConnMeta>,
    live: Live,
    settings: Settings,
) -> impl Future<Output = ()> + Send {
    let connection = Connection {
        out: Vec::new(),
        scratch: Vec::new(),
        date: DateCache::default(),
        meta,
        live,
        settings,
    };
    // Written out, not an `async fn`: that would keep room for its arguments, the busy
    // future's result and the connection all at once, for the connection's whole life.
    let mut busy = Some(busy(connection, wire));
    let mut waiting = None;
    poll_fn(move |cx| {
        loop {
            if let Some(serving) = &mut busy {
                let Some((mut connection, mut wire)) = ready!(serving.as_mut().poll(cx)) else {
                    return Poll::Ready(());
                };
                busy = None;
                wire.buf = BytesMut::new();
                connection.out = Vec::new();
                connection.scratch = Vec::new();
                waiting = Some((connection, wire));
            }
            let Some((connection, wire)) = &waiting else {
                return Poll::Ready(());
            };
            let activity = &connection.meta.activity;
            activity.wake_on_change(cx);
            if activity.is_draining() {
                return Poll::Ready(());
            }
            // An error or the client's close is found by the read that follows.
            ready!(wire.io.poll_read_ready(cx)).ok();
            if let Some((connection, wire)) = waiting.take() {
                busy = Some(self::busy(connection, wire));
            }
        }
    })
}

/// A connection's busy phase (see [`serve`]), built in its box: built on the stack and
/// moved in, its largest state would be copied for nothing.
fn busy(
    mut connection: Connection,
    wire: Wire,
) -> Pin<Box<impl Future<Output = Option<(Connection, Wire)>> + Send>> {
    connection.out.reserve(OUT_SIZE);
    Box::into_pin(Box::write(Box::new_uninit(), connection.run(wire)))
}

/// The response buffer a busy connection starts with.
const OUT_SIZE: usize = 1024;

struct Connection {
    /// The response head (and small body pieces) being written; kept for its capacity
    /// while the connection is busy.
    out: Vec<u8>,
    /// The fields of the head being read; kept for its capacity while the connection is
    /// busy.
    scratch: Vec<h1::Field>,
    date: DateCache,
    meta: Arc<ConnMeta>,
    live: Live,
    settings: Settings,
}

/// How a head read ended without a request.
enum NoHead {
    /// The client closed, the connection drains, or the head timed out: close quietly.
    Close,
    /// No request began before the idle watchdog's next tick: the connection goes idle.
    Idle,
    /// The bytes are not a request this gateway will read: answer, then close.
    Refuse(ProxyError, Option<Method>),
}

/// What writing a response needs to know of its request.
#[derive(Clone, Copy)]
struct Answering {
    head_request: bool,
    http10: bool,
    /// The connection may carry another request as far as the request is concerned; the
    /// response and its framing can still close it.
    keep_alive: bool,
}

/// How a response was written.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// Completely, with the connection free for another request.
    Reusable,
    /// Completely; the connection closes after it.
    Close,
}

impl Connection {
    /// Serves requests one after another while the connection is busy; the connection
    /// and its socket back once it has gone idle, `None` once it has ended.
    async fn run(mut self, mut wire: Wire) -> Option<(Connection, Wire)> {
        loop {
            let RequestHead {
                request,
                framing,
                close: client_closes,
                expect_continue,
                upgrade,
            } = match self.read_head(&mut wire).await {
                Ok(head) => head,
                Err(NoHead::Close) => return None,
                Err(NoHead::Idle) => return Some((self, wire)),
                Err(NoHead::Refuse(err, method)) => {
                    self.answer_refusal(wire, err, method).await;
                    return None;
                }
            };
            let mut request = request.map(|()| ClientBody::Empty);
            let head_request = request.method() == Method::HEAD;
            let http10 = request.version() == Version::HTTP_10;
            let has_body = framing != Decoder::Empty;
            let switch = upgrade.map(|protocol| {
                let (sender, socket) = oneshot::channel();
                request.extensions_mut().insert(ClientSwitch {
                    protocol,
                    data_followed: has_body || !wire.buf.is_empty(),
                    socket: Arc::new(Mutex::new(Some(socket))),
                });
                sender
            });

            let (response, body_done, back) = if has_body {
                // The body reads from the socket itself while the request is handled, and
                // gives it back when it is dropped with the request.
                let (sender, mut returned) = oneshot::channel();
                *request.body_mut() =
                    ClientBody::Http1(Http1Body::new(wire, framing, expect_continue, sender));
                let response = self.call(request).await;
                let Ok(returned) = returned.try_recv() else {
                    // No path keeps a request past its response; if one ever does, the
                    // connection cannot go on, and it is a bug worth hearing about.
                    tracing::error!(client.addr = %self.meta.peer, "a request body outlived its response; closing the connection unanswered");
                    return None;
                };
                let (back, done) = returned.settle()?;
                (response, done, back)
            } else {
                let Some(response) = self.call_watching(&mut wire, request).await else {
                    tracing::debug!(client.addr = %self.meta.peer, "the client closed the connection before its response; request dropped");
                    return None;
                };
                (response, true, wire)
            };
            wire = back;

            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                // `handle` answers a 101 only to a request that asked to switch (an
                // unasked one is a 502) and sent nothing after its head.
                let sender = switch?;
                // SECURITY: bytes the client sent while the switch was being agreed would
                // reach the tunnel without ever being read as HTTP.
                if !wire.buf.is_empty() || sent_more(&mut wire.io) {
                    tracing::debug!(client.addr = %self.meta.peer, "the client sent data before the protocol switch was answered; closing");
                    return None;
                }
                let answering = Answering {
                    head_request,
                    http10,
                    keep_alive: false,
                };
                if self
                    .write_response(&mut wire, response, answering)
                    .await
                    .is_ok()
                {
                    // The socket is the tunnel's now.
                    let _ = sender.send(wire.io);
                }
                return None;
            }
            let answering = Answering {
                head_request,
                http10,
                keep_alive: !client_closes && body_done && !self.meta.activity.is_draining(),
            };
            match self.write_response(&mut wire, response, answering).await {
                Ok(Written::Reusable) => {}
                Ok(Written::Close) => {
                    close(wire, !body_done).await;
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Answers a head the reader refused, then closes.
    async fn answer_refusal(&mut self, mut wire: Wire, err: ProxyError, method: Option<Method>) {
        let proxy = self.live.load_full();
        let head_request = method == Some(Method::HEAD);
        let response = refuse(
            &proxy,
            &self.meta,
            method.as_ref().map_or("", Method::as_str),
            err,
        );
        let answering = Answering {
            head_request,
            http10: false,
            keep_alive: false,
        };
        if self
            .write_response(&mut wire, response, answering)
            .await
            .is_ok()
        {
            // A body may follow the refused head.
            close(wire, true).await;
        }
    }

    /// [`Connection::call`] for a request without a body, watching the client meanwhile
    /// (see [`watch_while`]).
    async fn call_watching(
        &self,
        wire: &mut Wire,
        request: Request<ClientBody>,
    ) -> Option<Response<ProxyBody>> {
        // Pinned here and lent: the call's future is large, and moving it costs a copy.
        let call = std::pin::pin!(self.call(request));
        let limits = (self.settings.max_head, &self.settings.head_memory);
        watch_while(&self.meta.activity, wire, limits, call).await
    }

    /// Hands the request to the pipeline, counted as in flight until its response head.
    async fn call(&self, request: Request<ClientBody>) -> Response<ProxyBody> {
        let in_flight = InFlight::start(&self.meta.activity);
        let proxy = self.live.load_full();
        let response = handle(proxy, self.meta.clone(), request).await;
        drop(in_flight);
        response
    }

    /// Reads until `wire.buf` starts with a whole request head, and takes it off.
    async fn read_head(&mut self, wire: &mut Wire) -> Result<RequestHead, NoHead> {
        let activity = self.meta.activity.clone();
        // The watchdog's tick when the wait for a new request began.
        let waiting_since = activity.ticks();
        wire.pipelined = !wire.buf.is_empty() && wire.next_head_since.is_some();
        // A head's time starts with its first byte: now, for bytes already here.
        let mut started = (!wire.buf.is_empty()).then(|| {
            wire.next_head_since
                .take()
                .unwrap_or_else(|| activity.ticks())
        });
        // Charged once the head is found unfinished (or while the previous request was
        // answered); released on return.
        let mut charge = wire.head_charge.take();
        loop {
            if charge.as_ref().is_some_and(HeadCharge::is_cut) {
                tracing::debug!(client.addr = %self.meta.peer, "request head the slowest when limits.header_memory ran out; closing");
                return Err(NoHead::Close);
            }
            if !wire.buf.is_empty() {
                let max_header_size = self.settings.max_header_size;
                match parse_request(&mut wire.buf, &mut self.scratch) {
                    Ok(Some(head)) => {
                        // A head that took more than one read grew the buffer. What
                        // follows it moves to a buffer of its own size, so that the grown
                        // one goes with the head instead of staying with the connection.
                        if charge.is_some() {
                            wire.buf = BytesMut::from(&wire.buf[..]);
                        }
                        return Ok(head);
                    }
                    Ok(None) => {}
                    Err(HeadError::TooManyFields) => return Err(too_large(max_header_size)),
                    Err(HeadError::Malformed { problem, method }) => {
                        let why = format!("the request has {problem}");
                        return Err(NoHead::Refuse(ProxyError::BadRequest(why), method));
                    }
                }
                if wire.buf.len() >= self.settings.max_head {
                    return Err(too_large(max_header_size));
                }
                // SECURITY: an unfinished head holds memory for as long as its client
                // likes (up to `header_read_timeout`); every such head is charged to one
                // budget, which cuts the slowest when it runs out.
                wire.buf.reserve(READ_SIZE);
                charge
                    .get_or_insert_with(|| self.settings.head_memory.charge(&activity))
                    .hold(wire.buf.capacity(), wire.buf.len());
            }
            let head_ticks = self.settings.head_ticks;
            let peer = self.meta.peer;
            let read = poll_fn(|cx| {
                activity.wake_on_change(cx);
                // Between requests a draining connection closes; a head already begun
                // is read and answered (with `Connection: close`).
                if wire.buf.is_empty() && activity.is_draining() {
                    return Poll::Ready(None);
                }
                // SECURITY: a head trickled in byte by byte is cut off. No timer is kept
                // for it: the idle watchdog wakes the connection at every tick.
                if let Some(started) = started
                    && activity.ticks().wrapping_sub(started) >= head_ticks
                {
                    tracing::debug!(client.addr = %peer, "request head not complete within header_read_timeout; closing");
                    return Poll::Ready(None);
                }
                if charge.as_ref().is_some_and(HeadCharge::is_cut) {
                    tracing::debug!(client.addr = %peer, "request head the slowest when limits.header_memory ran out; closing");
                    return Poll::Ready(None);
                }
                match poll_read_more(wire, cx) {
                    // Nothing since a tick began: idle.
                    Poll::Pending if started.is_none() && activity.ticks() != waiting_since => {
                        Poll::Ready(Some(Err(NoHead::Idle)))
                    }
                    read => read.map(|read| Some(Ok(read))),
                }
            })
            .await;
            match read {
                Some(Err(no_head)) => return Err(no_head),
                Some(Ok(Ok(0) | Err(_))) | None => return Err(NoHead::Close),
                Some(Ok(Ok(_))) => {
                    started.get_or_insert_with(|| activity.ticks());
                }
            }
        }
    }

    /// Writes `response` to the client, framed for it, and says whether the connection
    /// may carry another request.
    async fn write_response(
        &mut self,
        wire: &mut Wire,
        response: Response<ProxyBody>,
        answering: Answering,
    ) -> io::Result<Written> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        // A response to HEAD, a 1xx, a 204 or a 304 has no body, whatever it says.
        let bodiless = answering.head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if bodiless {
            Encoder::Empty
        } else if let Some(length) = body.size_hint().exact() {
            Encoder::Length(length)
        } else if answering.http10 {
            Encoder::UntilClose
        } else {
            Encoder::Chunked
        };
        let mut keep_alive = answering.keep_alive && framing != Encoder::UntilClose;

        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut fields = FieldWriter {
            out,
            switching,
            // The length of a body that is not sent describes what a GET would get: kept
            // for HEAD and 304. Otherwise the framing below says it.
            keep_length: bodiless && status != StatusCode::NO_CONTENT && !status.is_informational(),
            has_date: false,
            close: false,
        };
        // An upstream's fields as they arrived, less those the gateway set itself.
        let set_here = |name: &[u8]| {
            (parts.headers.keys()).any(|set| set.as_str().as_bytes().eq_ignore_ascii_case(name))
        };
        if let Some(upstream) = parts.extensions.get::<ResponseFields>() {
            for (name, value, role) in upstream.iter().filter(|(name, ..)| !set_here(name)) {
                fields.write(name, value, role);
            }
        }
        for (name, value) in &parts.headers {
            fields.write(
                name.as_str().as_bytes(),
                value.as_bytes(),
                FieldKind::of(name.as_str()),
            );
        }
        keep_alive &= !fields.close;
        if !fields.has_date
            && let Some(date) = self.date.now()
        {
            write_field(out, b"date", date);
        }
        match framing {
            Encoder::Length(length) => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, length);
                out.extend_from_slice(b"\r\n");
            }
            Encoder::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Encoder::Empty | Encoder::UntilClose => {}
        }
        if !switching {
            if !keep_alive {
                out.extend_from_slice(b"connection: close\r\n");
            } else if answering.http10 {
                out.extend_from_slice(b"connection: keep-alive\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");

        let verdict = if keep_alive {
            Written::Reusable
        } else {
            Written::Close
        };
        if framing == Encoder::Empty {
            drop(body);
            wire.io.write_all(out).await?;
            return Ok(verdict);
        }
        match write_body(&mut wire.io, out, &mut body, framing).await {
            Ok(()) => Ok(verdict),
            Err(WriteError::Unsent(err)) => {
                // Nothing of the response has left: the client still gets an answer.
                let request_id = (parts.headers.get(X_REQUEST_ID).cloned())
                    .unwrap_or_else(|| HeaderValue::from_static(""));
                let failed = respond::upstream_body_failed(&err, &request_id);
                let answering = Answering {
                    keep_alive: false,
                    ..answering
                };
                Box::pin(self.write_response(wire, failed, answering)).await
            }
            // The client sees a response cut short: the connection closes.
            Err(WriteError::Io(err)) => Err(err),
            Err(err) => Err(io::Error::other(err.to_string())),
        }
    }
}

/// Writes a response's header fields, less those the framing decides.
struct FieldWriter<'a> {
    out: &'a mut Vec<u8>,
    /// The response is a `101`.
    switching: bool,
    /// A `Content-Length` is passed on (a response to HEAD, or a 304).
    keep_length: bool,
    has_date: bool,
    /// A `Connection: close` was set: the connection closes after this response.
    close: bool,
}

impl FieldWriter<'_> {
    fn write(&mut self, name: &[u8], value: &[u8], kind: FieldKind) {
        let pass = match kind {
            FieldKind::Plain => {
                self.has_date |= name.eq_ignore_ascii_case(b"date");
                true
            }
            FieldKind::ContentLength => self.keep_length,
            // A 101 carries the `Connection: upgrade` it was answered with; any other
            // response's `close` closes the connection.
            FieldKind::Connection if !self.switching => {
                self.close |= h1::items(value).any(|token| token.eq_ignore_ascii_case(b"close"));
                false
            }
            FieldKind::Connection | FieldKind::Upgrade => true,
            // The connection's own: the framing below, or nothing.
            FieldKind::TransferEncoding | FieldKind::HopByHop => false,
        };
        if pass {
            write_field(self.out, name, value);
        }
    }
}

fn too_large(max_header_size: usize) -> NoHead {
    NoHead::Refuse(
        ProxyError::HeaderTooLarge {
            limit: max_header_size,
        },
        None,
    )
}

/// Runs `call` (a request without a body) while watching the client: a client that hangs
/// up drops the call (and its upstream exchange), `None`; bytes it sends meanwhile (the
/// next request, pipelined) are kept in `wire.buf`, and the next head's clock starts
/// when they arrive. A client that closes its side with requests pipelined (unanswered in
/// `wire.buf`, or the one being answered) is not hanging up: it is done sending, and gets
/// its answers.
///
/// Only a call that outlasts a tick of the idle watchdog is watched, so a quick one
/// costs no read that would find nothing. What is read, at most `max_head` bytes, is
/// charged to `head_memory`; a client whose bytes the budget cuts is dropped like one
/// that hung up.
async fn watch_while<IO: AsyncRead + Unpin, F: Future>(
    activity: &Arc<Activity>,
    wire: &mut Wire<IO>,
    (max_head, head_memory): (usize, &Arc<HeadMemory>),
    mut call: Pin<&mut F>,
) -> Option<F::Output> {
    let started = activity.ticks();
    if !wire.buf.is_empty() {
        wire.next_head_since = Some(started);
        wire.head_charge
            .get_or_insert_with(|| head_memory.charge(activity))
            .hold(wire.buf.capacity(), wire.buf.len());
    }
    poll_fn(|cx| {
        activity.wake_on_change(cx);
        if let Poll::Ready(output) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if wire.head_charge.as_ref().is_some_and(HeadCharge::is_cut) {
            return Poll::Ready(None);
        }
        while !wire.client_done && activity.ticks() != started && wire.buf.len() < max_head {
            let was_empty = wire.buf.is_empty();
            match poll_read_more(wire, cx) {
                Poll::Ready(Ok(0)) if !wire.buf.is_empty() || wire.pipelined => {
                    wire.client_done = true;
                }
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {
                    if was_empty {
                        wire.next_head_since = Some(activity.ticks());
                    }
                    let charge = wire
                        .head_charge
                        .get_or_insert_with(|| head_memory.charge(activity));
                    charge.hold(wire.buf.capacity(), wire.buf.len());
                    if charge.is_cut() {
                        return Poll::Ready(None);
                    }
                }
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await
}

/// Reads what the client has sent into `wire.buf` (making room for `READ_SIZE` more),
/// or registers to be woken when there is something.
fn poll_read_more<IO: AsyncRead + Unpin>(
    wire: &mut Wire<IO>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    wire.buf.reserve(READ_SIZE);
    std::pin::pin!(wire.io.read_buf(&mut wire.buf)).poll(cx)
}

/// Takes what `buf` holds of a request body off it; whether that was all of the body.
fn skip_buffered(framing: &mut Decoder, buf: &mut BytesMut) -> bool {
    loop {
        match framing.decode(buf) {
            Ok(Decoded::Data(_)) => {}
            Ok(Decoded::End) => return true,
            Ok(Decoded::NeedMore) | Err(_) => return false,
        }
    }
}

/// Whether the client has sent anything more (or closed) that has not been read, found
/// without waiting.
fn sent_more<IO: AsyncRead + Unpin>(io: &mut IO) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(io).poll_read(&mut cx, &mut buf).is_ready()
}

/// Ends a connection after its last response. When the client may still be sending (a
/// body left unread, a refused head), what it sends is read and dropped for a moment
/// first: closing a socket with unread bytes makes the kernel reset the connection, and
/// the reset can destroy the response before the client has read it.
async fn close<IO: AsyncRead + AsyncWrite + Unpin>(mut wire: Wire<IO>, unread: bool) {
    if wire.io.shutdown().await.is_err() || !unread {
        return;
    }
    let _ = tokio::time::timeout(LINGER_TIME, linger(&mut wire.io, &mut wire.buf)).await;
}

/// Reads and drops what the client sends, up to `LINGER_BYTES`, until it closes.
async fn linger<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut) {
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        buf.clear();
        buf.reserve(READ_SIZE);
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => break,
            Ok(read) => dropped += read,
        }
    }
}

/// The `Date` field's value, formatted once a second. Kept in place, not on the heap:
/// an IMF-fixdate is 29 bytes long.
#[derive(Default)]
struct DateCache {
    second: u64,
    value: Option<[u8; 29]>,
}

impl DateCache {
    /// Now as an HTTP date; `None` for a clock no IMF-fixdate can show (past year 9999).
    fn now(&mut self) -> Option<&[u8]> {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if second != self.second || self.value.is_none() {
            self.second = second;
            self.value = httpdate::fmt_http_date(now).as_bytes().try_into().ok();
        }
        self.value.as_ref().map(|value| &value[..])
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_test::io::{Builder, Mock};

    use super::*;

    /// A header memory budget no test here reaches.
    fn head_memory() -> Arc<HeadMemory> {
        let in_use = prometheus::IntGauge::new("in_use", "test").unwrap();
        let cuts = prometheus::IntCounter::new("cuts", "test").unwrap();
        Arc::new(HeadMemory::new(1 << 20, in_use, cuts))
    }

    fn wire(io: Mock) -> Wire<Mock> {
        Wire {
            io,
            buf: BytesMut::new(),
            next_head_since: None,
            head_charge: None,
            pipelined: false,
            client_done: false,
        }
    }

    /// Polls `body` once.
    async fn poll_once(body: &mut Http1Body<Mock>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        poll_fn(|cx| Poll::Ready(body.poll_frame(cx))).await
    }

    #[tokio::test]
    async fn a_body_reads_its_own_bytes_and_gives_the_socket_back_with_the_rest() {
        let io = Builder::new().read(b"hel").read(b"loGET /next").build();
        let (back, returned) = oneshot::channel();
        let mut body = Http1Body::new(wire(io), Decoder::Length(5), false, back);
        let mut read = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = poll_once(&mut body).await {
            read.extend_from_slice(frame.data_ref().unwrap());
        }
        assert_eq!(read, b"hello");
        drop(body);
        let (wire, done) = returned.await.unwrap().settle().unwrap();
        assert!(done, "read to its end: the connection carries on");
        assert_eq!(&wire.buf[..], b"GET /next");
    }

    /// SECURITY: a `100 Continue` cut off halfway (the client stopped reading) cannot be
    /// followed by a response on the same stream: the connection closes without one.
    #[tokio::test(start_paused = true)]
    async fn a_half_written_100_continue_closes_without_an_answer() {
        let io = Builder::new()
            .write(&CONTINUE[..16])
            .wait(Duration::from_secs(3600))
            .build();
        let (back, returned) = oneshot::channel();
        let mut body = Http1Body::new(wire(io), Decoder::Length(5), true, back);
        assert!(poll_once(&mut body).await.is_pending());
        drop(body);
        let returned = returned.await.unwrap();
        assert_eq!(returned.reading, Reading::Continue(CONTINUE.len() - 16));
        assert!(returned.settle().is_none());
    }

    #[tokio::test]
    async fn a_100_continue_that_fails_halfway_closes_without_an_answer() {
        let io = Builder::new()
            .write(&CONTINUE[..16])
            .write_error(io::ErrorKind::BrokenPipe.into())
            .build();
        let (back, returned) = oneshot::channel();
        let mut body = Http1Body::new(wire(io), Decoder::Length(5), true, back);
        assert!(matches!(
            poll_once(&mut body).await,
            Poll::Ready(Some(Err(_)))
        ));
        drop(body);
        let returned = returned.await.unwrap();
        assert_eq!(returned.reading, Reading::ContinueCut);
        assert!(returned.settle().is_none());
    }

    #[tokio::test]
    async fn a_body_never_asked_for_or_left_on_its_way_closes_after_the_answer() {
        // Owed a whole 100 Continue, never written: the client may still send the body.
        let (back, returned) = oneshot::channel();
        drop(Http1Body::new(
            wire(Builder::new().build()),
            Decoder::Length(5),
            true,
            back,
        ));
        let (_, done) = returned.await.unwrap().settle().unwrap();
        assert!(!done);
        // Half a body read: the rest is still on its way.
        let (back, returned) = oneshot::channel();
        let mut body = Http1Body::new(
            wire(Builder::new().read(b"he").build()),
            Decoder::Length(5),
            false,
            back,
        );
        assert!(matches!(
            poll_once(&mut body).await,
            Poll::Ready(Some(Ok(_)))
        ));
        drop(body);
        let (_, done) = returned.await.unwrap().settle().unwrap();
        assert!(!done);
        // A whole body already buffered is skipped: the connection carries on.
        let mut buffered = wire(Builder::new().build());
        buffered.buf.extend_from_slice(b"helloGET /");
        let (back, returned) = oneshot::channel();
        drop(Http1Body::new(buffered, Decoder::Length(5), false, back));
        let (wire, done) = returned.await.unwrap().settle().unwrap();
        assert!(done);
        assert_eq!(&wire.buf[..], b"GET /");
    }

    /// A closing connection with bytes still coming reads and drops them first: closing a
    /// socket with unread bytes makes the kernel reset it, and the reset can destroy the
    /// response before the client has read it. (The mock fails if a read is left.)
    #[tokio::test]
    async fn a_closing_connection_reads_what_the_client_still_sends() {
        let io = Builder::new()
            .read(b"the rest of a body")
            .read(&[b'x'; 20_000])
            .build();
        close(wire(io), true).await;
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_ends_at_its_time_whatever_the_client_does() {
        let io = Builder::new()
            .read(b"slow")
            .wait(Duration::from_secs(3600))
            .build();
        let started = tokio::time::Instant::now();
        close(wire(io), true).await;
        assert_eq!(started.elapsed(), LINGER_TIME);
    }

    /// Watches a call whose upstream answers once `ticks` ticks of the watchdog have
    /// passed; what the watch gave back.
    async fn answered_after_ticks(
        activity: &Arc<Activity>,
        wire: &mut Wire<Mock>,
        ticks: usize,
    ) -> Option<&'static str> {
        let (answer, answered) = oneshot::channel();
        let ticker = activity.clone();
        let clock = tokio::spawn(async move {
            for _ in 0..ticks {
                ticker.tick();
                tokio::task::yield_now().await;
            }
            let _ = answer.send("response");
        });
        let answered = std::pin::pin!(answered);
        let memory = head_memory();
        let watched = watch_while(activity, wire, (8192, &memory), answered);
        let output = tokio::time::timeout(Duration::from_secs(10), watched)
            .await
            .unwrap();
        clock.await.unwrap();
        output.map(Result::unwrap)
    }

    #[tokio::test]
    async fn bytes_pipelined_during_a_call_are_kept_for_the_next_head() {
        let activity = Arc::new(Activity::default());
        let next = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut wire = wire(Builder::new().read(next).build());
        // A tick passes while the call waits on its upstream: now the client is read.
        let output = answered_after_ticks(&activity, &mut wire, 1).await;
        assert_eq!(output, Some("response"));
        assert_eq!(&wire.buf[..], next);
        assert_eq!(
            wire.next_head_since,
            Some(1),
            "the next head's clock started"
        );
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_during_a_call_drops_it() {
        let activity = Arc::new(Activity::default());
        activity.tick();
        let mut wire = wire(Builder::new().build());
        let never = std::future::pending::<()>();
        // Not watched before a tick passes: the quick call costs no read.
        let started = activity.ticks();
        let clock = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.tick() })
        };
        let never = std::pin::pin!(never);
        let memory = head_memory();
        let watched = watch_while(&activity, &mut wire, (8192, &memory), never);
        let watched = tokio::time::timeout(Duration::from_secs(10), watched).await;
        assert_eq!(
            watched,
            Ok(None),
            "the hang-up is seen and the call dropped"
        );
        clock.await.unwrap();
        assert!(activity.ticks() > started);
    }

    /// A client that pipelined requests and then closed its side is done sending, not
    /// gone: the last of its requests is answered even when its close is seen only while
    /// that request is being answered, and nothing more is read.
    #[tokio::test]
    async fn a_client_that_closes_after_pipelining_gets_its_last_answer() {
        let activity = Arc::new(Activity::default());
        let mut wire = wire(Builder::new().build());
        wire.pipelined = true;
        let output = answered_after_ticks(&activity, &mut wire, 2).await;
        assert_eq!(output, Some("response"));
        assert!(wire.client_done);
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let date = DateCache::default()
            .now()
            .expect("the clock is before year 10000")
            .to_vec();
        let text = String::from_utf8(date).expect("ASCII");
        assert_eq!(text.len(), 29, "{text}");
        assert!(
            text.ends_with(" GMT") && text.as_bytes()[3] == b',',
            "{text}"
        );
    }
}
