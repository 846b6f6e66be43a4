//! The client role of the HTTP/1.1 codec, on upstream connections: request heads
//! written, response heads parsed, and what they say about the response body.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version, request};

use super::body::{Chunk, Decoder, Encoder};
use super::{Field, FieldKind, FramingFields, Malformed, classify, push_decimal, write_field};

/// The most header fields an upstream response may have.
const MAX_HEADERS: usize = 128;

/// Header fields the gateway sets on a request for the upstream. Each replaces every
/// field of its name that the request carries, and they are written after the request's
/// own: collecting them costs no insertion into (and no growth of) the request's map.
#[derive(Debug, Default)]
pub struct Added(Vec<(HeaderName, HeaderValue)>);

impl Added {
    /// No fields yet, with room for `capacity`.
    pub fn with_capacity(capacity: usize) -> Added {
        Added(Vec::with_capacity(capacity))
    }

    /// Adds a field whose name is not set here yet, without looking for it.
    pub fn push_new(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.push((name, value));
    }

    /// Sets `name`, replacing a value set before.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        match self.0.iter_mut().find(|(set, _)| *set == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Whether `name` is set here, so the request's own fields of that name are not sent.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        self.0.iter().any(|(set, _)| set == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.0.iter()
    }

    /// Puts the fields into `headers`, for the echo upstream, which describes the request
    /// as an upstream would receive it.
    pub fn apply_to(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Writes the request line and header fields for the upstream: the request's own fields
/// except those `added` replaces, then `added`. The target is the origin form of the
/// (already normalized) URI; `Content-Length` and `Transfer-Encoding` are written from
/// `framing`, never copied from the client. A request that names no host (HTTP/1.0)
/// gets `authority`, the target's `host:port`, as HTTP/1.1 requires one.
pub fn write_request_head(
    out: &mut Vec<u8>,
    parts: &request::Parts,
    added: &Added,
    framing: Encoder,
    authority: &str,
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
    let mut announced_length = false;
    let mut host = added.replaces(&header::HOST);
    for (name, value) in &parts.headers {
        // SECURITY: the body is framed one way only, ours, even when it is empty:
        // `Content-Length: 00` or `0, 0` read differently elsewhere. (Names and values
        // cannot hold CR or LF: `http` refuses them, so nothing here can start a second
        // message.)
        if *name == header::CONTENT_LENGTH {
            announced_length = true;
            continue;
        }
        if *name == header::TRANSFER_ENCODING || added.replaces(name) {
            continue;
        }
        host |= *name == header::HOST;
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in added.iter() {
        if *name != header::CONTENT_LENGTH && *name != header::TRANSFER_ENCODING {
            write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !host {
        write_field(out, b"host", authority.as_bytes());
    }
    match framing {
        // An empty body is announced when the client announced one, or the method
        // defines content: some servers answer such a request without a length `411`.
        Encoder::Empty => {
            if announced_length
                || matches!(
                    parts.method,
                    http::Method::POST | http::Method::PUT | http::Method::PATCH
                )
            {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Encoder::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, length);
            out.extend_from_slice(b"\r\n");
        }
        // SECURITY: a request body cannot end with the connection: without a framing field
        // the upstream would read it as the next request. One of unknown length goes in
        // chunks (the pool never asks for anything else; see `Exchange::run`).
        Encoder::Chunked | Encoder::UntilClose => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
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
    pub framing: Decoder,
    /// The connection may carry another request once this response has been read.
    pub keep_alive: bool,
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
            return Err(Malformed::TooManyFields(MAX_HEADERS));
        }
        Err(err) => return Err(Malformed::Syntax(err)),
    };
    // SECURITY: httparse also ends lines at a bare LF and skips blank lines before the
    // status line; a server that does not would see other fields, or a stray response.
    if buf.first().is_some_and(|b| *b == b'\r' || *b == b'\n')
        || memchr::memchr_iter(b'\n', &buf[..length]).any(|at| at == 0 || buf[at - 1] != b'\r')
    {
        return Err(Malformed::BareLf);
    }
    let code = response.code.ok_or(Malformed::Status)?;
    let status = StatusCode::from_u16(code).map_err(|_| Malformed::Status)?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Parsed::Interim(length));
    }
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    // Hop-by-hop fields describe this connection, not the message, so they are left out;
    // a protocol switch keeps `Upgrade` and `Connection` so the client sees it.
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut kept = Vec::with_capacity(response.headers.len());
    let seen = classify(
        buf,
        response.headers,
        |kind| match kind {
            FieldKind::Plain | FieldKind::ContentLength => true,
            FieldKind::Connection | FieldKind::Upgrade => switching,
            FieldKind::TransferEncoding | FieldKind::HopByHop => false,
        },
        &mut kept,
    );
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

impl ResponseFields {
    /// Name, value and role of each field, in the order they arrived.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], FieldKind)> {
        // The ranges were taken from this head; `get` keeps a slip from becoming a panic.
        let part =
            |range: &std::ops::Range<usize>| self.head.get(range.clone()).unwrap_or_default();
        (self.fields.iter()).map(move |field| (part(&field.name), part(&field.value), field.kind))
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

/// Where the body of a response ends (RFC 9112 §6.3), and whether the connection can be
/// used again after it.
fn response_framing(
    status: StatusCode,
    version: Version,
    seen: &FramingFields,
    head_request: bool,
) -> Result<(Decoder, bool), Malformed> {
    let keep_alive = version == Version::HTTP_11 && !seen.close;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok((Decoder::Empty, keep_alive));
    }
    // SECURITY: the framing fields are checked whether or not a body follows: a head the
    // gateway cannot frame one way only is refused, not passed on for the client to guess.
    if seen.coded() {
        if seen.length.is_present() {
            return Err(Malformed::TwoFramings);
        }
        if version != Version::HTTP_11 {
            return Err(Malformed::CodingInHttp10);
        }
        // No other coding is decoded: `gzip` bytes would reach the client as plain data.
        if seen.codings != 1 || seen.chunked != 1 {
            return Err(Malformed::NotChunkedAlone);
        }
    }
    let length = seen.length.get()?;
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        // SECURITY: no body follows, whatever the head says; but a server that says one
        // does may write it anyway (`do_HEAD = do_GET`), in a later segment, where the
        // next request on a reused connection would take it for its response. A head
        // that announces a body closes the connection after it.
        let announces_body = seen.coded() || !matches!(length, None | Some(0));
        return Ok((Decoder::Empty, keep_alive && !announces_body));
    }
    Ok(match (seen.coded(), length) {
        (true, _) => (Decoder::Chunked(Chunk::Size), keep_alive),
        (false, Some(length)) => (Decoder::Length(length), keep_alive),
        (false, None) => (Decoder::UntilClose, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Parsed, Malformed> {
        parse_response(text.as_bytes(), false)
    }

    /// The framing and reuse of a whole final head, or why it is refused.
    fn framing_of(text: &str) -> Result<(Decoder, bool), Malformed> {
        match head(text)? {
            Parsed::Final(head, length) => {
                assert_eq!(length, text.len());
                Ok((head.framing, head.keep_alive))
            }
            Parsed::Partial | Parsed::Interim(_) => panic!("{text:?} is a whole final head"),
        }
    }

    #[test]
    fn lengths_and_codings_decide_the_framing() {
        let ok = |text: &str| framing_of(text).unwrap();
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            (Decoder::Length(5), true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n"),
            (Decoder::Length(5), true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n"),
            (Decoder::Chunked(Chunk::Size), true)
        );
        assert_eq!(ok("HTTP/1.1 200 OK\r\n\r\n"), (Decoder::UntilClose, false));
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n"),
            (Decoder::Length(0), false)
        );
        assert_eq!(
            ok("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n"),
            (Decoder::Length(3), false)
        );
        // No body follows a 204, a 304 or an answer to HEAD; one that says otherwise
        // may write it anyway, so its connection is not reused.
        for (text, reusable) in [
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", true),
            ("HTTP/1.1 204 No Content\r\n\r\n", true),
            (
                "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", true),
        ] {
            assert_eq!(ok(text), (Decoder::Empty, reusable), "{text:?}");
        }
        let text = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n";
        match parse_response(text.as_bytes(), true) {
            Ok(Parsed::Final(head, _)) => {
                assert_eq!((head.framing, head.keep_alive), (Decoder::Empty, false));
            }
            _ => panic!("a HEAD response parses"),
        }
    }

    #[test]
    fn ambiguous_lengths_are_refused() {
        use Malformed::{
            BareLf, CodingInHttp10, Length, Lengths, NotChunkedAlone, Syntax, TwoFramings,
        };
        for (text, why) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                TwoFramings,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                Lengths,
            ),
            ("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n", Lengths),
            ("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n", Length),
            ("HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n", Length),
            ("HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n", Length),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
                Length,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                NotChunkedAlone,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
                NotChunkedAlone,
            ),
            // No coding but `chunked` is decoded: gzip bytes would pass for plain data.
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                NotChunkedAlone,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                NotChunkedAlone,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,\r\n\r\n",
                NotChunkedAlone,
            ),
            (
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                CodingInHttp10,
            ),
            // A response without a body is framed as strictly as one with a body.
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 5, 6\r\n\r\n",
                Lengths,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: -1\r\n\r\n",
                Length,
            ),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n",
                TwoFramings,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: gzip\r\n\r\n",
                NotChunkedAlone,
            ),
            (
                "HTTP/1.1 200 OK\r\nx-a: 1\ntransfer-encoding: chunked\r\n\r\n",
                BareLf,
            ),
            ("HTTP/1.1 200 OK\ncontent-length: 0\r\n\r\n", BareLf),
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\n", BareLf),
            ("\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", BareLf),
        ] {
            assert_eq!(framing_of(text), Err(why), "{text:?}");
        }
        // An answer to HEAD has no body, and its lengths are checked all the same.
        for (text, why) in [
            ("HTTP/1.1 200 OK\r\ncontent-length: 9, 10\r\n\r\n", Lengths),
            ("HTTP/1.1 200 OK\r\ncontent-length: 9x\r\n\r\n", Length),
        ] {
            assert!(
                matches!(parse_response(text.as_bytes(), true), Err(found) if found == why),
                "{text:?}"
            );
        }
        for text in [
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(
                matches!(framing_of(text), Err(Syntax(_))),
                "{text:?}: {:?}",
                framing_of(text)
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
        let fields: Vec<(String, String, FieldKind)> = head
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
                field("X-Request-Id", "upstream", FieldKind::Plain),
                field("Set-Cookie", "a=1", FieldKind::Plain),
                field("Server", "nginx", FieldKind::Plain),
                field("set-cookie", "b=2", FieldKind::Plain),
                field("content-length", "0", FieldKind::ContentLength),
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
        write_request_head(&mut out, &parts, &added, Encoder::Chunked, "t");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a%20b/c?q=1&r HTTP/1.1\r\nx-two: 1\r\nx-two: 2\r\nhost: set.example\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &parts,
            &Added::default(),
            Encoder::Length(11),
            "t",
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("x-two: 2\r\ncontent-length: 11\r\n\r\n")
        );
        // An empty body: the gateway's own length, whatever the client wrote; a request
        // without a host gets the target's.
        for (method, length, written) in [
            ("GET", None, ""),
            ("GET", Some("00"), "content-length: 0\r\n"),
            ("DELETE", Some("0, 0"), "content-length: 0\r\n"),
            ("POST", None, "content-length: 0\r\n"),
        ] {
            let mut request = http::Request::builder().method(method).uri("/");
            if let Some(length) = length {
                request = request.header("content-length", length);
            }
            let (parts, ()) = request.body(()).unwrap().into_parts();
            let mut out = Vec::new();
            write_request_head(
                &mut out,
                &parts,
                &Added::default(),
                Encoder::Empty,
                "10.0.0.1:80",
            );
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{method} / HTTP/1.1\r\nhost: 10.0.0.1:80\r\n{written}\r\n")
            );
        }
    }
}
