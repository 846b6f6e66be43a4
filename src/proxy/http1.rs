//! HTTP/1.1 on upstream connections, as bytes: request heads written, response heads
//! parsed, response bodies framed (RFC 9112). No I/O here; `pool.rs` moves the bytes.
//!
//! SECURITY: a pooled connection carries many clients' requests one after another, so
//! where one response ends decides whose the next bytes are. Every response whose length
//! is in any doubt (two framings, a malformed length, bytes after its end) is either
//! refused or read to the connection's close, never guessed at.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version, request};

use super::forward::Added;

/// The most header fields an upstream response may have.
const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (size plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// The most bytes of trailer fields accepted (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// How the request body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// A body of this many bytes, sent as they are.
    Length(u64),
    /// A body of unknown length, sent in chunks.
    Chunked,
}

/// Writes the request line and header fields for the upstream: the request's own fields
/// except those `added` replaces, then `added`. The target is the origin form of the
/// (already normalized) URI; `Content-Length` and `Transfer-Encoding` are written from
/// `framing`, never copied from the client.
pub fn write_request_head(
    out: &mut Vec<u8>,
    parts: &request::Parts,
    added: &Added,
    framing: RequestFraming,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match parts.uri.path_and_query() {
        Some(target) => {
            // `path()` is `/` for an empty path, so a fragment-only target still reads `/`.
            out.extend_from_slice(target.path().as_bytes());
            if let Some(query) = target.query() {
                out.push(b'?');
                out.extend_from_slice(query.as_bytes());
            }
        }
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        // SECURITY: the body is framed one way only, ours. (Names and values cannot hold
        // CR or LF: `http` refuses them, so nothing here can start a second message.)
        if (framing != RequestFraming::Empty && *name == header::CONTENT_LENGTH)
            || *name == header::TRANSFER_ENCODING
            || added.replaces(name)
        {
            continue;
        }
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in added.iter() {
        if *name != header::CONTENT_LENGTH && *name != header::TRANSFER_ENCODING {
            write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, length);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one `name: value` field line.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, without allocating.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    push_digits(out, n, 10);
}

/// Appends the line that starts a chunk of `length` bytes, without allocating.
pub fn push_chunk_start(out: &mut Vec<u8>, length: usize) {
    push_digits(out, length as u64, 16);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in `radix` (10 or 16, lower-case digits).
fn push_digits(out: &mut Vec<u8>, n: u64, radix: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = DIGITS[(rest % radix) as usize];
        rest /= radix;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The `Content-Length` of a message, gathered over all its fields (each may hold a
/// comma-separated list): one value, or what was wrong. A problem, once seen, stays.
#[derive(Clone, Copy, Default)]
pub struct ContentLength {
    value: Option<u64>,
    problem: Option<&'static str>,
}

impl ContentLength {
    /// Takes in one `Content-Length` field's value.
    pub fn note(&mut self, field_value: &[u8]) {
        for item in items(field_value) {
            let Some(parsed) = parse_length(item) else {
                self.problem = Some("an invalid Content-Length");
                return;
            };
            if self.value.is_some_and(|seen| seen != parsed) {
                self.problem = Some("two different Content-Lengths");
            }
            self.value = Some(parsed);
        }
    }

    /// A `Content-Length` field was present, valid or not.
    pub fn is_present(&self) -> bool {
        self.value.is_some() || self.problem.is_some()
    }

    /// The length, `None` when no field gave one, or what was wrong with the fields.
    pub fn get(&self) -> Result<Option<u64>, &'static str> {
        match self.problem {
            Some(problem) => Err(problem),
            None => Ok(self.value),
        }
    }
}

/// A `Content-Length` value: decimal digits only, at most 18 of them (an exabyte).
pub fn parse_length(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 18 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        text.iter()
            .fold(0, |length, digit| length * 10 + u64::from(digit - b'0')),
    )
}

/// What the start of a read buffer holds.
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) response of this many bytes, to be skipped.
    Interim(usize),
    /// A final response head of this many bytes.
    Final(ResponseHead, usize),
}

/// A parsed final response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub fields: ResponseFields,
    pub framing: Framing,
    /// The connection may carry another request once this response has been read.
    pub keep_alive: bool,
}

/// Why an upstream response was refused.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's response is malformed: {0}")]
pub struct Malformed(pub String);

fn malformed(what: impl Into<String>) -> Malformed {
    Malformed(what.into())
}

/// Parses the response head at the start of `buf`. `head_request` says the request was
/// a HEAD, whose response has no body whatever its header fields say.
pub fn parse_response(buf: &[u8], head_request: bool) -> Result<Parsed, Malformed> {
    let mut response = httparse::Response::new(&mut []);
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(malformed(format!("more than {MAX_HEADERS} header fields")));
        }
        Err(err) => return Err(malformed(format!("{err} in its head"))),
    };
    // SECURITY: httparse also ends lines at a bare LF and skips blank lines before the
    // status line; a server that does not would see other fields, or a stray response.
    if buf.first().is_some_and(|b| *b == b'\r' || *b == b'\n')
        || memchr::memchr_iter(b'\n', &buf[..length]).any(|at| at == 0 || buf[at - 1] != b'\r')
    {
        return Err(malformed("a head line not ended by CRLF"));
    }
    let code = response.code.ok_or_else(|| malformed("no status code"))?;
    let status = StatusCode::from_u16(code).map_err(|_| malformed("an invalid status code"))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Parsed::Interim(length));
    }
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let fields: &[httparse::Header<'_>] = response.headers;
    // One pass: the fields to pass on are picked and the framing fields are read.
    // Hop-by-hop fields describe this connection, not the message, so they are left out;
    // a protocol switch keeps `Upgrade` and `Connection` so the client sees it.
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut kept = Vec::with_capacity(fields.len());
    let mut seen = FramingFields::default();
    for field in fields {
        let role = Role::of(field.name);
        match role {
            Role::Connection => {
                for token in items(field.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        seen.close = true;
                    } else if !is_standard_connection_token(token) {
                        seen.names_others = true;
                    }
                }
            }
            Role::ContentLength => seen.length.note(field.value),
            Role::TransferEncoding => seen.codings(field.value),
            Role::Upgrade | Role::HopByHop | Role::Plain => {}
        }
        let passed = match role {
            Role::Plain | Role::ContentLength => true,
            Role::Connection | Role::Upgrade => switching,
            Role::TransferEncoding | Role::HopByHop => false,
        };
        if passed {
            // httparse hands out slices of `buf`: their offsets locate them in the copy.
            let at = |part: &[u8]| {
                let start = part.as_ptr() as usize - buf.as_ptr() as usize;
                start..start + part.len()
            };
            kept.push(Field {
                name: at(field.name.as_bytes()),
                value: at(field.value),
                role,
            });
        }
    }
    if seen.names_others {
        // Fields that `Connection` names are hop-by-hop too (RFC 9110 §7.6.1).
        let named: Vec<&[u8]> = fields
            .iter()
            .filter(|field| Role::of(field.name) == Role::Connection)
            .flat_map(|field| items(field.value))
            .filter(|token| !is_standard_connection_token(token))
            .collect();
        kept.retain(|field| {
            !named.iter().any(|token| {
                buf.get(field.name.clone())
                    .is_some_and(|name| token.eq_ignore_ascii_case(name))
            })
        });
    }
    let (framing, keep_alive) = response_framing(status, version, &seen, head_request)?;
    Ok(Parsed::Final(
        ResponseHead {
            status,
            fields: ResponseFields {
                head: Bytes::copy_from_slice(&buf[..length]),
                fields: kept,
            },
            framing,
            keep_alive,
        },
        length,
    ))
}

/// The header fields of an upstream response that are passed on, kept in the bytes they
/// arrived in: an HTTP/1 client gets them written back as they are, without their being
/// parsed into a map, and [`ResponseFields::into_map`] makes the map anything else needs.
/// They travel in the response's extensions; fields the gateway sets in the response's
/// own map replace those of the same name here.
///
/// httparse accepts exactly the name and value bytes that `http` does (tokens; visible
/// ASCII, space, tab and obs-text), so every field here is a valid `http` field.
#[derive(Clone, Debug, Default)]
pub struct ResponseFields {
    /// The whole head; the fields are ranges of it.
    head: Bytes,
    fields: Vec<Field>,
}

#[derive(Clone, Debug)]
struct Field {
    name: Range<usize>,
    value: Range<usize>,
    role: Role,
}

impl ResponseFields {
    /// Name, value and role of each field, in the order they arrived.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], Role)> {
        // The ranges were taken from this head; `get` keeps a slip from becoming a panic.
        let part = |range: &Range<usize>| self.head.get(range.clone()).unwrap_or_default();
        (self.fields.iter()).map(move |field| (part(&field.name), part(&field.value), field.role))
    }

    /// These fields as a map, with `set` (the fields the gateway set) replacing any of
    /// the same name.
    pub fn into_map(self, set: HeaderMap) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len() + set.len());
        for (name, value, _) in self.iter() {
            match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                (Ok(name), Ok(value)) => {
                    map.append(name, value);
                }
                // Not reached: httparse refuses what `http` refuses (see the tests).
                _ => tracing::warn!(
                    field = %String::from_utf8_lossy(name),
                    "an upstream response field `http` cannot hold was left out"
                ),
            }
        }
        // The first value of each name replaces what the map held under it.
        map.extend(set);
        map
    }
}

/// What a header field is to the gateway, in requests and responses alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Connection,
    ContentLength,
    TransferEncoding,
    Upgrade,
    /// Another hop-by-hop field (RFC 9110 §7.6.1): `Keep-Alive`, `TE`, `Trailer`,
    /// `Proxy-*`.
    HopByHop,
    Plain,
}

impl Role {
    pub fn of(name: &str) -> Role {
        let name = name.as_bytes();
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        // Most names are none of these, and their first letter says so.
        match name.first().map(u8::to_ascii_lowercase) {
            Some(b'c') if is(b"connection") => Role::Connection,
            Some(b'c') if is(b"content-length") => Role::ContentLength,
            Some(b'k') if is(b"keep-alive") => Role::HopByHop,
            Some(b't') if is(b"transfer-encoding") => Role::TransferEncoding,
            Some(b't') if is(b"te") || is(b"trailer") => Role::HopByHop,
            Some(b'u') if is(b"upgrade") => Role::Upgrade,
            Some(b'p')
                if name
                    .get(..6)
                    .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"proxy-")) =>
            {
                Role::HopByHop
            }
            _ => Role::Plain,
        }
    }

    /// Whether the field describes one connection rather than the message.
    pub fn is_hop_by_hop(self) -> bool {
        !matches!(self, Role::Plain | Role::ContentLength)
    }
}

/// What the fields that frame a response said, gathered in one pass.
#[derive(Default)]
struct FramingFields {
    /// `Connection: close`.
    close: bool,
    /// `Connection` names other fields.
    names_others: bool,
    /// A `Transfer-Encoding` field is present.
    coded: bool,
    /// The last transfer coding so far is `chunked`.
    chunked_last: bool,
    /// A coding came after `chunked`.
    chunked_not_last: bool,
    /// What was wrong with a `Content-Length` matters only if the length is used.
    length: ContentLength,
}

impl FramingFields {
    fn codings(&mut self, value: &[u8]) {
        for coding in items(value) {
            self.coded = true;
            self.chunked_not_last |= self.chunked_last;
            self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
        }
    }
}

/// Where the body of a response ends (RFC 9112 §6.3), and whether the connection can be
/// used again after it.
fn response_framing(
    status: StatusCode,
    version: Version,
    seen: &FramingFields,
    head_request: bool,
) -> Result<(Framing, bool), Malformed> {
    let keep_alive = version == Version::HTTP_11 && !seen.close;
    if head_request
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::SWITCHING_PROTOCOLS
    {
        return Ok((Framing::Empty, keep_alive));
    }
    if seen.coded {
        if seen.length.is_present() {
            return Err(malformed("both Transfer-Encoding and Content-Length"));
        }
        if version != Version::HTTP_11 {
            return Err(malformed("Transfer-Encoding in an HTTP/1.0 response"));
        }
        return if seen.chunked_not_last {
            Err(malformed("chunked is not the last transfer coding"))
        } else if seen.chunked_last {
            Ok((Framing::Chunked(Chunk::Size), keep_alive))
        } else {
            // Another coding last: the body ends with the connection.
            Ok((Framing::UntilClose, false))
        };
    }
    Ok(match seen.length.get().map_err(malformed)? {
        Some(length) => (Framing::Length(length), keep_alive),
        None => (Framing::UntilClose, false),
    })
}

/// The comma-separated items of a field value, trimmed.
pub fn items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// The `Connection` tokens that name no other field.
pub fn is_standard_connection_token(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"keep-alive")
        || token.eq_ignore_ascii_case(b"close")
        || token.eq_ignore_ascii_case(b"upgrade")
}

/// Where a response body stands, and how it ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
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

impl Framing {
    /// Takes the next piece of the body off the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        match self {
            Framing::Empty | Framing::Length(0) => Ok(Decoded::End),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                *left -= take as u64;
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Framing::UntilClose => Ok(if buf.is_empty() {
                Decoded::NeedMore
            } else {
                Decoded::Data(buf.split().freeze())
            }),
            Framing::Chunked(chunk) => chunk.decode(buf),
        }
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        matches!(self, Framing::Empty | Framing::Length(0))
    }
}

impl Chunk {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self {
                Chunk::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE, "chunk-size line")? else {
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
                        return Err(malformed("a chunk longer than its size"));
                    }
                    buf.advance(2);
                    *self = Chunk::Size;
                }
                Chunk::Trailers(seen) => {
                    let limit = MAX_TRAILERS.saturating_sub(*seen);
                    let Some(line) = take_line(buf, limit, "trailer section")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        *self = Chunk::Done;
                        return Ok(Decoded::End);
                    }
                    // Trailer fields are not passed on (the `Trailer` field that would
                    // announce them is hop-by-hop here); they only have to be well formed.
                    if !line.contains(&b':') {
                        return Err(malformed("a trailer line without a colon"));
                    }
                    *seen += line.len() + 2;
                }
                Chunk::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Takes a CRLF-terminated line (without its CRLF) off the front of `buf`, or `None`
/// when the buffer does not hold a whole one yet.
fn take_line(buf: &mut BytesMut, limit: usize, what: &str) -> Result<Option<Bytes>, Malformed> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > limit {
            Err(malformed(format!("a {what} longer than {limit} bytes")))
        } else {
            Ok(None)
        };
    };
    if end > limit {
        return Err(malformed(format!("a {what} longer than {limit} bytes")));
    }
    // SECURITY: a bare LF is not a line end; servers that disagree on that can be made
    // to see different chunk boundaries.
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(malformed(format!("a {what} not ended by CRLF")));
    }
    let line = buf.split_to(end + 1).freeze();
    Ok(Some(line.slice(..end - 1)))
}

/// The size on a chunk-size line: hex digits, then nothing or chunk extensions.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(malformed("an invalid chunk size"));
    }
    // Only spaces or tabs may come before the extensions, and nothing in the line may be
    // a control character.
    let rest = &line[digits..];
    let extensions = &rest[rest
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count()..];
    if !(extensions.is_empty() || extensions.starts_with(b";"))
        || rest
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        return Err(malformed("an invalid chunk size"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Parsed, Malformed> {
        parse_response(text.as_bytes(), false)
    }

    fn framing_of(text: &str) -> Result<(Framing, bool), String> {
        match head(text) {
            Ok(Parsed::Final(head, length)) => {
                assert_eq!(length, text.len());
                Ok((head.framing, head.keep_alive))
            }
            Ok(Parsed::Partial) => Err("partial".into()),
            Ok(Parsed::Interim(_)) => Err("interim".into()),
            Err(err) => Err(err.0),
        }
    }

    #[test]
    fn numbers_are_written_in_decimal_and_chunk_sizes_in_hex() {
        let written = |push: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            push(&mut out);
            String::from_utf8(out).unwrap()
        };
        let decimal = |n: u64| written(&|out| push_decimal(out, n));
        let chunk = |n: usize| written(&|out| push_chunk_start(out, n));
        assert_eq!(decimal(0), "0");
        assert_eq!(decimal(24), "24");
        assert_eq!(decimal(u64::MAX), u64::MAX.to_string());
        assert_eq!(chunk(0), "0\r\n");
        assert_eq!(chunk(255), "ff\r\n");
        assert_eq!(chunk(70_000), "11170\r\n");
        assert_eq!(parse_length(b"123"), Some(123));
        assert_eq!(
            parse_length(b"999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        for refused in [&b""[..], b"1234567890123456789", b"+1", b"1 2", b"0x1"] {
            assert_eq!(parse_length(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn lengths_and_codings_decide_the_framing() {
        let ok = |text: &str| framing_of(text).unwrap();
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n"),
            (Framing::Chunked(Chunk::Size), true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        assert_eq!(ok("HTTP/1.1 200 OK\r\n\r\n"), (Framing::UntilClose, false));
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n"),
            (Framing::Length(0), false)
        );
        assert_eq!(
            ok("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n"),
            (Framing::Length(3), false)
        );
        assert_eq!(
            ok("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n"),
            (Framing::Empty, true)
        );
        assert_eq!(
            ok("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
            (Framing::Empty, true)
        );
        let text = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n";
        match parse_response(text.as_bytes(), true) {
            Ok(Parsed::Final(head, _)) => assert_eq!(head.framing, Framing::Empty),
            _ => panic!("a HEAD response parses"),
        }
    }

    #[test]
    fn ambiguous_lengths_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx-a: 1\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\n",
            "\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert!(
                framing_of(text).is_err_and(|err| err != "partial"),
                "{text:?} must be refused"
            );
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        assert!(matches!(
            head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
            Ok(Parsed::Interim(25))
        ));
        assert!(matches!(
            head("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"),
            Ok(Parsed::Interim(_))
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\ncontent-len"),
            Ok(Parsed::Partial)
        ));
        assert!(matches!(
            head("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"),
            Ok(Parsed::Final(
                ResponseHead {
                    status: StatusCode::SWITCHING_PROTOCOLS,
                    ..
                },
                _
            ))
        ));
    }

    #[test]
    fn hop_by_hop_fields_are_left_out_of_the_response() {
        let names = |text: &str| match parse_response(text.as_bytes(), false) {
            Ok(Parsed::Final(head, _)) => {
                let mut names: Vec<String> = head
                    .fields
                    .iter()
                    .map(|(name, _, _)| String::from_utf8_lossy(name).to_ascii_lowercase())
                    .collect();
                names.sort();
                names
            }
            _ => panic!("{text:?} parses"),
        };
        assert_eq!(
            names(
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\n\
                 Proxy-Thing: 1\r\nTE: trailers\r\nTrailer: x-sum\r\nUpgrade: h2c\r\nX-Kept: 1\r\ncontent-length: 0\r\n\r\n"
            ),
            ["content-length", "x-kept"]
        );
        assert_eq!(
            names(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nKeep-Alive: 5\r\n\r\n"
            ),
            ["connection", "upgrade"]
        );
    }

    #[test]
    fn fields_are_passed_on_as_they_came_and_mapped_with_the_gateways_winning() {
        let text = "HTTP/1.1 200 OK\r\nX-Request-Id: upstream\r\nSet-Cookie: a=1\r\nServer:  nginx  \r\n\
                    Connection: close\r\nset-cookie: b=2\r\ncontent-length: 0\r\n\r\n";
        let Ok(Parsed::Final(head, _)) = parse_response(text.as_bytes(), false) else {
            panic!("parses");
        };
        let fields: Vec<(String, String, Role)> = head
            .fields
            .iter()
            .map(|(name, value, role)| {
                let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
                (text(name), text(value), role)
            })
            .collect();
        let field = |name: &str, value: &str, role| (name.to_owned(), value.to_owned(), role);
        assert_eq!(
            fields,
            [
                field("X-Request-Id", "upstream", Role::Plain),
                field("Set-Cookie", "a=1", Role::Plain),
                field("Server", "nginx", Role::Plain),
                field("set-cookie", "b=2", Role::Plain),
                field("content-length", "0", Role::ContentLength),
            ]
        );

        let mut set = HeaderMap::new();
        set.insert("x-request-id", HeaderValue::from_static("gateway"));
        let map = head.fields.into_map(set);
        assert_eq!(
            map.get_all("x-request-id").iter().collect::<Vec<_>>(),
            ["gateway"]
        );
        assert_eq!(
            map.get_all("set-cookie").iter().collect::<Vec<_>>(),
            ["a=1", "b=2"]
        );
        assert_eq!(map["server"], "nginx");
        assert_eq!(map.len(), 5);
    }

    /// `ResponseFields` keeps what httparse accepted and maps it without looking again:
    /// every byte httparse lets into a name or a value, `http` must take too.
    #[test]
    fn every_byte_httparse_accepts_in_a_field_http_takes() {
        let mut accepted = [0usize; 2];
        for byte in 0..=255u8 {
            let name = [b'x', byte, b'y'];
            let value = [b'v', byte, b'w'];
            let mut with_name = b"HTTP/1.1 204 No Content\r\n".to_vec();
            with_name.extend_from_slice(&name);
            with_name.extend_from_slice(b": v\r\n\r\n");
            let mut with_value = b"HTTP/1.1 204 No Content\r\nx: ".to_vec();
            with_value.extend_from_slice(&value);
            with_value.extend_from_slice(b"\r\n\r\n");
            for (case, (text, name, value)) in [
                (with_name, &name[..], &b"v"[..]),
                (with_value, &b"x"[..], &value[..]),
            ]
            .into_iter()
            .enumerate()
            {
                // A colon in a name ends it: that is another field, not this case.
                let Ok(Parsed::Final(head, _)) = parse_response(&text, false) else {
                    continue;
                };
                if case == 0 && byte == b':' {
                    continue;
                }
                accepted[case] += 1;
                let map = head.fields.into_map(HeaderMap::new());
                let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
                assert_eq!(map.len(), 1, "byte {byte:#04x} in the {lower} field");
                assert_eq!(
                    map.get(lower.as_str()).map(HeaderValue::as_bytes),
                    Some(value),
                    "byte {byte:#04x}"
                );
            }
        }
        // Tokens in names (77 bytes); in values, tab and everything but controls.
        assert_eq!(accepted, [77, 1 + 95 + 128]);
    }

    /// Decodes `input` fed `step` bytes at a time: the body, and what is left after it.
    fn decode_in_steps(
        mut framing: Framing,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match framing.decode(&mut buf).map_err(|err| err.0)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => return Ok((body, buf.to_vec())),
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err("needs more than the input".into());
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_however_they_are_split() {
        let input = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-checksum: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64] {
            let (body, rest) = decode_in_steps(Framing::Chunked(Chunk::Size), input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
            // Bytes after the body stay in the buffer (and keep the connection from reuse).
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
        }
        let (body, _) = decode_in_steps(Framing::Length(5), b"hello, more", 2).unwrap();
        assert_eq!(body, b"hello");
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for input in [
            &b"5\r\nhello!\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"x\r\n",
            b"-5\r\n",
            b"5 x\r\n",
            b"ffffffffffffffff\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"5;\x00\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_in_steps(Framing::Chunked(Chunk::Size), input, 64)
                    .is_err_and(|err| !err.starts_with("needs")),
                "{:?} must be refused",
                String::from_utf8_lossy(input)
            );
        }
        let long_line = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert!(decode_in_steps(Framing::Chunked(Chunk::Size), long_line.as_bytes(), 64).is_err());
    }

    #[test]
    fn request_heads_carry_one_framing() {
        let request = http::Request::post("http://ignored/a%20b/c?q=1&r")
            .header("host", "app.example")
            .header("content-length", "11")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let mut added = Added::default();
        added.set(header::HOST, HeaderValue::from_static("set.example"));
        let mut out = Vec::new();
        write_request_head(&mut out, &parts, &added, RequestFraming::Chunked);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a%20b/c?q=1&r HTTP/1.1\r\nx-two: 1\r\nx-two: 2\r\nhost: set.example\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &parts,
            &Added::default(),
            RequestFraming::Length(11),
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("x-two: 2\r\ncontent-length: 11\r\n\r\n")
        );
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let mut out = Vec::new();
        write_request_head(&mut out, &parts, &Added::default(), RequestFraming::Empty);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }
}
