//! HTTP/1.1 as bytes, for both sides of the gateway (RFC 9112): one codec with two roles,
//! as hyper's `Http1Transaction` has a server and a client. [`server`] reads request
//! heads; [`client`] writes request heads and reads response heads; [`body`] frames
//! bodies. No I/O here: `client_http1.rs` serves clients and `pool.rs` talks to
//! upstreams on top of it.
//!
//! SECURITY: where one message ends decides whose the next bytes are. Every message
//! whose length is in any doubt (two framings, a malformed length, bytes after its end)
//! is refused, or read to the connection's close, never guessed at.

pub mod body;
pub mod client;
pub mod server;

use std::ops::Range;

/// What was wrong with a message, one kind each, so that callers and tests tell them
/// apart by kind. Each reads as what the message had: "the request has {kind}",
/// "the upstream's response is malformed: {kind}".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// httparse refused the head.
    #[error("a malformed head ({0})")]
    Syntax(httparse::Error),
    /// A line of the head ends with a bare LF.
    #[error("a head line not ended by CRLF")]
    BareLf,
    /// More header fields than this.
    #[error("more than {0} header fields")]
    TooManyFields(usize),
    /// A response head longer than this many bytes.
    #[error("a head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The connection closed before the head ended.
    #[error("a head cut short by the connection's close")]
    HeadCut,
    #[error("a malformed method")]
    Method,
    #[error("a malformed request target")]
    Target,
    /// A `#fragment`, which no client sends and a URI parser drops silently.
    #[error("a #fragment in its request target")]
    Fragment,
    #[error("a malformed header field")]
    Field,
    #[error("no valid status code")]
    Status,
    /// SECURITY: two framings are how requests are smuggled past proxies.
    #[error("both Content-Length and Transfer-Encoding")]
    TwoFramings,
    #[error("Transfer-Encoding in HTTP/1.0")]
    CodingInHttp10,
    /// Transfer codings other than `chunked` alone; no other is accepted, either way.
    #[error(
        "a Transfer-Encoding other than `chunked` alone (no other transfer coding is accepted)"
    )]
    NotChunkedAlone,
    #[error("an invalid Content-Length")]
    Length,
    #[error("two different Content-Lengths")]
    Lengths,
    #[error("a chunk-size line longer than {0} bytes")]
    ChunkLineTooLong(usize),
    #[error("a trailer section longer than {0} bytes")]
    TrailersTooLong(usize),
    /// A chunk-size or trailer line ended by a bare LF.
    #[error("a chunk line not ended by CRLF")]
    ChunkLineLf,
    #[error("an invalid chunk size")]
    ChunkSize,
    /// Bytes where a chunk's closing CRLF should be.
    #[error("a chunk longer than its size")]
    ChunkOverrun,
    /// A trailer line that is not a well-formed field line.
    #[error("a malformed trailer field")]
    TrailerLine,
}

/// Where `part`, a slice of `buf` that a parser handed out, sits in `buf`: the head is
/// split off the read buffer afterwards, and its parts are sliced out of it, not copied.
fn offsets(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// A header field kept from a head, as ranges of the head's bytes.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
    pub kind: FieldKind,
}

/// What the fields that frame a message and manage its connection said, gathered in one
/// pass over its head; requests and responses alike. Each role decides the framing
/// from it by its own rules.
#[derive(Default)]
pub struct FramingFields {
    /// What was wrong with a `Content-Length` matters only if the length is used.
    pub length: ContentLength,
    /// Transfer codings listed, over all `Transfer-Encoding` fields (an empty item
    /// counts: `chunked,` lists two).
    pub codings: usize,
    /// Times `chunked` was listed.
    pub chunked: usize,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Connection: upgrade`.
    pub upgrade_token: bool,
    /// The first `Upgrade` field's value.
    pub upgrade: Option<Range<usize>>,
    /// `Expect: 100-continue` (the last `Expect` field decides), read before any field
    /// is dropped: one that `Connection` names still asks for its `100 Continue`.
    pub expect_continue: bool,
}

impl FramingFields {
    /// Transfer codings were listed.
    pub fn coded(&self) -> bool {
        self.codings > 0
    }
}

/// Reads the fields of a parsed head, slices of `buf`, in one pass: notes what the
/// framing and connection fields say, and puts in `kept` the fields that `keep` accepts
/// by their kind, less those that `Connection` names (hop-by-hop too, RFC 9110 §7.6.1).
pub fn classify(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    keep: impl Fn(FieldKind) -> bool,
    kept: &mut Vec<Field>,
) -> FramingFields {
    let mut seen = FramingFields::default();
    let mut names_others = false;
    kept.clear();
    for field in fields {
        let kind = FieldKind::of(field.name);
        match kind {
            FieldKind::Connection => {
                for token in items(field.value) {
                    seen.close |= token.eq_ignore_ascii_case(b"close");
                    seen.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    seen.upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
                    names_others |= !is_standard_connection_token(token);
                }
            }
            FieldKind::ContentLength => seen.length.note(field.value),
            FieldKind::TransferEncoding => {
                for coding in items(field.value) {
                    seen.codings += 1;
                    seen.chunked += usize::from(coding.eq_ignore_ascii_case(b"chunked"));
                }
            }
            FieldKind::Upgrade => {
                seen.upgrade
                    .get_or_insert_with(|| offsets(buf, field.value));
            }
            FieldKind::Plain if field.name.eq_ignore_ascii_case("expect") => {
                seen.expect_continue = field
                    .value
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"100-continue");
            }
            FieldKind::HopByHop | FieldKind::Plain => {}
        }
        if keep(kind) {
            kept.push(Field {
                name: offsets(buf, field.name.as_bytes()),
                value: offsets(buf, field.value),
                kind,
            });
        }
    }
    if names_others {
        let named: Vec<&[u8]> = fields
            .iter()
            .filter(|field| FieldKind::of(field.name) == FieldKind::Connection)
            .flat_map(|field| named_fields(field.value))
            .collect();
        kept.retain(|field| {
            let name = buf.get(field.name.clone()).unwrap_or_default();
            !named.iter().any(|token| token.eq_ignore_ascii_case(name))
        });
    }
    seen
}

/// Whether a byte may be part of a token (RFC 9110 §5.6.2), such as a field name.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
    problem: Option<Malformed>,
}

impl ContentLength {
    /// Takes in one `Content-Length` field's value.
    pub fn note(&mut self, field_value: &[u8]) {
        for item in items(field_value) {
            let Some(parsed) = parse_length(item) else {
                self.problem = Some(Malformed::Length);
                return;
            };
            if self.value.is_some_and(|seen| seen != parsed) {
                self.problem = Some(Malformed::Lengths);
            }
            self.value = Some(parsed);
        }
    }

    /// A `Content-Length` field was present, valid or not.
    pub fn is_present(&self) -> bool {
        self.value.is_some() || self.problem.is_some()
    }

    /// The length, `None` when no field gave one, or what was wrong with the fields.
    pub fn get(&self) -> Result<Option<u64>, Malformed> {
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

/// What kind of header field a name is to the gateway, in requests and responses alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Connection,
    ContentLength,
    TransferEncoding,
    Upgrade,
    /// Another hop-by-hop field (RFC 9110 §7.6.1): `Keep-Alive`, `TE`, `Trailer`,
    /// `Proxy-*`.
    HopByHop,
    Plain,
}

impl FieldKind {
    pub fn of(name: &str) -> FieldKind {
        let name = name.as_bytes();
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        // Most names are none of these, and their first letter says so.
        match name.first().map(u8::to_ascii_lowercase) {
            Some(b'c') if is(b"connection") => FieldKind::Connection,
            Some(b'c') if is(b"content-length") => FieldKind::ContentLength,
            Some(b'k') if is(b"keep-alive") => FieldKind::HopByHop,
            Some(b't') if is(b"transfer-encoding") => FieldKind::TransferEncoding,
            Some(b't') if is(b"te") || is(b"trailer") => FieldKind::HopByHop,
            Some(b'u') if is(b"upgrade") => FieldKind::Upgrade,
            Some(b'p')
                if name
                    .get(..6)
                    .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"proxy-")) =>
            {
                FieldKind::HopByHop
            }
            _ => FieldKind::Plain,
        }
    }

    /// Whether the field describes one connection rather than the message.
    pub fn is_hop_by_hop(self) -> bool {
        !matches!(self, FieldKind::Plain | FieldKind::ContentLength)
    }
}

/// The comma-separated items of a field value, trimmed.
pub fn items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// The field names a `Connection` value lists: its tokens other than the standard ones.
/// Those fields are hop-by-hop too (RFC 9110 §7.6.1).
pub fn named_fields(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    items(value).filter(|token| !is_standard_connection_token(token))
}

/// The `Connection` tokens that name no other field.
pub fn is_standard_connection_token(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"keep-alive")
        || token.eq_ignore_ascii_case(b"close")
        || token.eq_ignore_ascii_case(b"upgrade")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
