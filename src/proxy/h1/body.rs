//! Bodies on the wire, either way: a decoder that finds where an arriving body ends and
//! takes its chunks apart, and an encoder with the one body writer that frames an
//! outgoing body. The writer is generic over any `AsyncWrite`; no socket is known here.

use std::future::{Future as _, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{Malformed, push_chunk_start};

/// Body data up to this size is copied behind what is buffered (a head, other small
/// pieces) into one write; larger data is written from where it is.
const COALESCE: usize = 16 * 1024;
/// The longest chunk-size line (size plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// The most bytes of trailer fields accepted (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// Where an arriving body stands, and how it ends: the decoder of requests and
/// responses alike.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoder {
    /// No body (or none left).
    Empty,
    /// This many bytes left.
    Length(u64),
    /// Chunked, at this point of a chunk.
    Chunked(Chunk),
    /// Everything until the connection closes.
    UntilClose,
}

/// The position in a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// In the trailer section, this many bytes into it.
    Trailers(usize),
    /// After the trailer section: the body has ended.
    Done,
}

/// One step of decoding a body from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds no more of the body: read more.
    NeedMore,
    /// The body has ended; what follows in the buffer is not part of it.
    End,
}

impl Decoder {
    /// Takes the next piece of the body off the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        match self {
            Decoder::Empty | Decoder::Length(0) => Ok(Decoded::End),
            Decoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                *left -= take as u64;
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Decoder::UntilClose => Ok(if buf.is_empty() {
                Decoded::NeedMore
            } else {
                Decoded::Data(buf.split().freeze())
            }),
            Decoder::Chunked(chunk) => chunk.decode(buf),
        }
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Empty | Decoder::Length(0))
    }
}

impl Chunk {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self {
                Chunk::Size => {
                    let too_long = Malformed::ChunkLineTooLong(MAX_CHUNK_LINE);
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE, too_long)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Chunk::DataEnd;
                    }
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed::ChunkOverrun);
                    }
                    buf.advance(2);
                    *self = Chunk::Size;
                }
                Chunk::Trailers(seen) => {
                    let limit = MAX_TRAILERS.saturating_sub(*seen);
                    let too_long = Malformed::TrailersTooLong(MAX_TRAILERS);
                    let Some(line) = take_line(buf, limit, too_long)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        *self = Chunk::Done;
                        return Ok(Decoded::End);
                    }
                    // Trailer fields are not passed on (the `Trailer` field that would
                    // announce them is hop-by-hop here); they only have to be well formed,
                    // as strictly as head fields: a server that reads a line here as a
                    // request line would take the rest for its next request.
                    if !is_field_line(&line) {
                        return Err(Malformed::TrailerLine);
                    }
                    *seen += line.len() + 2;
                }
                Chunk::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Takes a CRLF-terminated line (without its CRLF) off the front of `buf`, or `None`
/// when the buffer does not hold a whole one yet; `too_long` past `limit` bytes.
fn take_line(
    buf: &mut BytesMut,
    limit: usize,
    too_long: Malformed,
) -> Result<Option<Bytes>, Malformed> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > limit {
            Err(too_long)
        } else {
            Ok(None)
        };
    };
    if end > limit {
        return Err(too_long);
    }
    // SECURITY: a bare LF is not a line end; servers that disagree on that can be made
    // to see different chunk boundaries.
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(Malformed::ChunkLineLf);
    }
    let line = buf.split_to(end + 1).freeze();
    Ok(Some(line.slice(..end - 1)))
}

/// Whether a line is a well-formed field line (RFC 9112 §5): a token, a colon right after
/// it, and a value with no control character but tab. So no space before the colon, no
/// folded line and no NUL.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|b| super::is_token_char(*b))
        && value
            .iter()
            .all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f))
}

/// The size on a chunk-size line: hex digits, then nothing or chunk extensions.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(Malformed::ChunkSize);
    }
    // Extensions follow the size at once; spaces or tabs may only end the line. RFC 9112
    // allows them before a `;` too, but not every parser does (h11 refuses them), and a
    // line two parsers read differently is a chunk boundary in doubt.
    let rest = &line[digits..];
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    if !(rest.starts_with(b";") || rest.iter().all(blank))
        || rest
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        return Err(Malformed::ChunkSize);
    }
    Ok(line[..digits].iter().fold(0u64, |size, digit| {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => digit - b'A' + 10,
        };
        size * 16 + u64::from(value)
    }))
}

/// Why an arriving body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Its framing is broken (a bad chunk line, bytes where a CRLF should be).
    #[error("the body is malformed: {0}")]
    Malformed(Malformed),
    /// The connection closed before the body ended.
    #[error("the connection closed before the body ended")]
    Closed,
    /// The connection failed.
    #[error(transparent)]
    Io(io::Error),
}

/// The one body reader: takes the next piece of a body off the front of `buf`, reading
/// from `io` (asking for room for `read_size` more bytes) when `buf` holds none of it.
/// `None` once the body has ended; a body framed until the close ends with the
/// connection. After an error the body must not be read again: bytes past a bad chunk
/// line would be taken for body.
pub fn poll_read_body<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    framing: &mut Decoder,
    read_size: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Bytes>, ReadError>> {
    loop {
        match framing.decode(buf) {
            Ok(Decoded::Data(data)) => return Poll::Ready(Ok(Some(data))),
            Ok(Decoded::End) => return Poll::Ready(Ok(None)),
            Ok(Decoded::NeedMore) => {}
            Err(err) => return Poll::Ready(Err(ReadError::Malformed(err))),
        }
        buf.reserve(read_size);
        let read = std::pin::pin!(io.read_buf(buf)).poll(cx);
        match read {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) if *framing == Decoder::UntilClose => {
                *framing = Decoder::Empty;
                return Poll::Ready(Ok(None));
            }
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(ReadError::Closed)),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(err)) => return Poll::Ready(Err(ReadError::Io(err))),
        }
    }
}

/// How an outgoing body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// No body.
    Empty,
    /// Exactly this many bytes, as they are.
    Length(u64),
    /// In chunks, ended by a last chunk.
    Chunked,
    /// As they are, ended by closing the connection (for an HTTP/1.0 client).
    UntilClose,
}

/// Why an outgoing body was not written whole.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The connection failed.
    #[error(transparent)]
    Io(io::Error),
    /// The body failed after part of it was written.
    #[error(transparent)]
    Body(E),
    /// The body failed before anything was written: `out` still holds all it was given,
    /// and the caller can answer otherwise.
    #[error(transparent)]
    Unsent(E),
    /// The body had more bytes than its length said.
    #[error("the body is longer than its length")]
    Longer,
    /// The body ended before its length.
    #[error("the body ended before its length")]
    Shorter,
}

/// Writes what `out` holds (a head, usually), then `body` framed by `encoder`, in as few
/// writes as the body's pace allows: what the body has ready is gathered, and written
/// before waiting for more. Trailer fields are not passed on. `out` is left empty, except
/// after [`WriteError::Unsent`].
pub async fn write_body<W, B>(
    io: &mut W,
    out: &mut Vec<u8>,
    body: &mut B,
    encoder: Encoder,
) -> Result<(), WriteError<B::Error>>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
{
    let chunked = encoder == Encoder::Chunked;
    let mut sent = 0u64;
    let mut written = false;
    if encoder == Encoder::Empty {
        io.write_all(out).await.map_err(WriteError::Io)?;
        out.clear();
        return Ok(());
    }
    loop {
        // Take what the body has ready; write what is buffered before waiting.
        let polled = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(polled) => polled,
            Poll::Pending => {
                if !out.is_empty() {
                    written = true;
                    io.write_all(out).await.map_err(WriteError::Io)?;
                    out.clear();
                }
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match polled {
            None => break,
            Some(Err(err)) if written => return Err(WriteError::Body(err)),
            Some(Err(err)) => return Err(WriteError::Unsent(err)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers are not passed on; an empty chunk would end the body.
                _ => continue,
            },
        };
        sent += data.len() as u64;
        if let Encoder::Length(length) = encoder
            && sent > length
        {
            return Err(WriteError::Longer);
        }
        if chunked {
            push_chunk_start(out, data.len());
        }
        if data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            written = true;
            write_two(io, out, &data).await.map_err(WriteError::Io)?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= COALESCE {
            written = true;
            io.write_all(out).await.map_err(WriteError::Io)?;
            out.clear();
        }
    }
    if let Encoder::Length(length) = encoder
        && sent < length
    {
        return Err(WriteError::Shorter);
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    io.write_all(out).await.map_err(WriteError::Io)?;
    out.clear();
    Ok(())
}

/// Writes all of `first`, then all of `second`, in as few system calls as the socket
/// allows, and empties `first`.
async fn write_two<W: AsyncWrite + Unpin>(
    io: &mut W,
    first: &mut Vec<u8>,
    second: &[u8],
) -> io::Result<()> {
    let (mut a, mut b) = (0, 0);
    while a < first.len() || b < second.len() {
        let parts = [IoSlice::new(&first[a..]), IoSlice::new(&second[b..])];
        let written = io.write_vectored(&parts).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_first = written.min(first.len() - a);
        a += from_first;
        b += written - from_first;
    }
    first.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::decode_in_steps;

    #[test]
    fn chunked_bodies_decode_however_they_are_split() {
        let input = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-checksum: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64] {
            let (body, rest) = decode_in_steps(Decoder::Chunked(Chunk::Size), input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
            // Bytes after the body stay in the buffer (and keep the connection from reuse).
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
        }
        // Whitespace may end a size line.
        let (body, _) = decode_in_steps(
            Decoder::Chunked(Chunk::Size),
            b"5 \r\nhello\r\n0\t\r\n\r\n",
            3,
        )
        .unwrap();
        assert_eq!(body, b"hello");
        let (body, _) = decode_in_steps(Decoder::Length(5), b"hello, more", 2).unwrap();
        assert_eq!(body, b"hello");
    }

    #[test]
    fn malformed_chunks_are_refused() {
        use Malformed::{ChunkLineLf, ChunkOverrun, ChunkSize, TrailerLine};
        for (input, why) in [
            (&b"5\r\nhello!\r\n0\r\n\r\n"[..], ChunkOverrun),
            (b"5\nhello\r\n0\r\n\r\n", ChunkLineLf),
            (b"5\r\nhello\n0\r\n\r\n", ChunkOverrun),
            (b"x\r\n", ChunkSize),
            (b"-5\r\n", ChunkSize),
            (b"5 x\r\n", ChunkSize),
            // Whitespace before extensions, which h11 refuses.
            (b"5 ;e\r\nhello\r\n0\r\n\r\n", ChunkSize),
            (b"5\t;e=v\r\nhello\r\n0\r\n\r\n", ChunkSize),
            (b"ffffffffffffffff\r\n", ChunkSize),
            (b"0\r\nno colon\r\n\r\n", TrailerLine),
            (b"0\r\nx-sum : 1\r\n\r\n", TrailerLine),
            (b"0\r\n: 1\r\n\r\n", TrailerLine),
            (b"0\r\nx-sum: 1\x00\r\n\r\n", TrailerLine),
            (b"0\r\nx-sum: 1\r\n folded\r\n\r\n", TrailerLine),
            // A request line where the final CRLF should be.
            (b"0\r\nGET http://a/admin HTTP/1.1\r\n\r\n", TrailerLine),
            (b"5\r\r\nhello\r\n0\r\n\r\n", ChunkSize),
            (b"5;\x00\r\nhello\r\n0\r\n\r\n", ChunkSize),
        ] {
            assert_eq!(
                decode_in_steps(Decoder::Chunked(Chunk::Size), input, 64),
                Err(Some(why)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_line = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert_eq!(
            decode_in_steps(Decoder::Chunked(Chunk::Size), long_line.as_bytes(), 64),
            Err(Some(Malformed::ChunkLineTooLong(MAX_CHUNK_LINE)))
        );
    }

    #[tokio::test]
    async fn two_buffers_are_written_whole_and_in_order() {
        let mut sink = Vec::new();
        let mut first = b"head\r\n".to_vec();
        let second = vec![7u8; 100_000];
        write_two(&mut sink, &mut first, &second)
            .await
            .expect("a Vec takes everything");
        assert!(first.is_empty());
        assert_eq!(&sink[..6], b"head\r\n");
        assert_eq!(sink.len(), 100_006);
    }

    /// A body of ready pieces.
    struct Pieces(std::collections::VecDeque<&'static str>);

    impl Body for Pieces {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            let piece = self.0.pop_front();
            Poll::Ready(
                piece.map(|piece| Ok(http_body::Frame::data(Bytes::from_static(piece.as_bytes())))),
            )
        }
    }

    /// `write_body` of `pieces` under `encoder`, after a head: what reached the wire.
    async fn written(
        encoder: Encoder,
        pieces: &[&'static str],
    ) -> Result<String, WriteError<std::convert::Infallible>> {
        let mut body = Pieces(pieces.iter().copied().collect());
        let mut sink = Vec::new();
        let mut out = b"HEAD\r\n".to_vec();
        write_body(&mut sink, &mut out, &mut body, encoder).await?;
        assert!(out.is_empty());
        Ok(String::from_utf8(sink).unwrap())
    }

    #[tokio::test]
    async fn bodies_are_framed_as_their_encoder_says() {
        assert_eq!(
            written(Encoder::Chunked, &["ab", "", "cde"]).await.unwrap(),
            "HEAD\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );
        assert_eq!(
            written(Encoder::Length(5), &["ab", "cde"]).await.unwrap(),
            "HEAD\r\nabcde"
        );
        assert_eq!(
            written(Encoder::UntilClose, &["ab"]).await.unwrap(),
            "HEAD\r\nab"
        );
        assert_eq!(written(Encoder::Empty, &["ab"]).await.unwrap(), "HEAD\r\n");
        assert!(matches!(
            written(Encoder::Length(4), &["ab", "cde"]).await,
            Err(WriteError::Longer)
        ));
        assert!(matches!(
            written(Encoder::Length(6), &["ab", "cde"]).await,
            Err(WriteError::Shorter)
        ));
    }

    /// A body that plays a script: `Some(Ok)` data, `Some(Err)` a failure, `None` a pause.
    struct Script(std::collections::VecDeque<Option<Result<&'static str, &'static str>>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Some(step)) => {
                    Poll::Ready(Some(step.map(|data| {
                        http_body::Frame::data(Bytes::from_static(data.as_bytes()))
                    })))
                }
            }
        }
    }

    /// A failure before any write leaves everything unsent, so the caller can answer
    /// otherwise; after a write, the failure cuts what has begun.
    #[tokio::test]
    async fn a_body_failure_says_whether_anything_was_written() {
        let mut sink = Vec::new();
        let mut out = b"HEAD\r\n".to_vec();
        let mut body = Script([Some(Ok("ab")), Some(Err("cut"))].into());
        let failed = write_body(&mut sink, &mut out, &mut body, Encoder::Chunked).await;
        assert!(matches!(failed, Err(WriteError::Unsent("cut"))));
        assert!(sink.is_empty());
        assert_eq!(out, b"HEAD\r\n2\r\nab\r\n");

        let mut sink = Vec::new();
        let mut out = b"HEAD\r\n".to_vec();
        let mut body = Script([Some(Ok("ab")), None, Some(Err("cut"))].into());
        let failed = write_body(&mut sink, &mut out, &mut body, Encoder::Chunked).await;
        assert!(matches!(failed, Err(WriteError::Body("cut"))));
        assert_eq!(sink, b"HEAD\r\n2\r\nab\r\n");
    }
}
