//! The server role of the HTTP/1.1 codec, on client connections: request heads parsed
//! (httparse) and refused when two servers could read them differently, and what they
//! say about the body and the connection.
//!
//! SECURITY: a head whose body length is in any doubt (both `Content-Length` and
//! `Transfer-Encoding`, differing lengths, a transfer coding other than `chunked`) or
//! whose target hides a `#fragment` is refused: nothing after it is ever read as a
//! request.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use super::body::{Chunk, Decoder};
use super::{Field, FramingFields, Malformed, classify, items, offsets};
use crate::proxy::normalize;

/// The most header fields a request head may have.
pub const MAX_HEADERS: usize = 200;

/// Why a request head is not read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// More than [`MAX_HEADERS`] header fields: a 431.
    TooManyFields,
    /// Not a head this gateway reads: a 400. `method` when it was read, for the answer
    /// (one to HEAD has no body).
    Malformed {
        problem: Malformed,
        method: Option<Method>,
    },
}

/// A request head, and what it says about its body and the connection.
pub struct RequestHead {
    pub request: Request<()>,
    pub framing: Decoder,
    /// The client asked to close after this request (or did not ask to keep an HTTP/1.0
    /// connection).
    pub close: bool,
    pub expect_continue: bool,
    /// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` and an
    /// `Upgrade` field). SECURITY: never `h2c`, which would turn a checked connection into
    /// an unchecked HTTP/2 tunnel to the upstream.
    pub upgrade: Option<HeaderValue>,
}

/// Parses the request head at the start of `buf` and takes it off; `None` while the head
/// is incomplete. `kept` is only kept for its capacity.
pub fn parse_request(
    buf: &mut BytesMut,
    kept: &mut Vec<Field>,
) -> Result<Option<RequestHead>, HeadError> {
    let malformed = |problem| HeadError::Malformed {
        problem,
        method: None,
    };
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let length = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(err) => return Err(malformed(Malformed::Syntax(err))),
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(malformed(Malformed::Syntax(httparse::Error::Token)));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| malformed(Malformed::Method))?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where the target and each field sit in the buffer, to slice them out of it once
    // the head is split off (no copies). Hop-by-hop fields describe this connection, not
    // the request: they are read and left out of it (one list with responses).
    let target_at = offsets(buf, target.as_bytes());
    let seen = classify(buf, parsed.headers, |kind| !kind.is_hop_by_hop(), kept);
    let head = buf.split_to(length).freeze();

    let refuse = |problem| HeadError::Malformed {
        problem,
        method: Some(method.clone()),
    };
    let target = head.slice(target_at);
    normalize::refuse_fragment(&target).map_err(|_| refuse(Malformed::Fragment))?;
    let uri = Uri::from_maybe_shared(target).map_err(|_| refuse(Malformed::Target))?;
    // SECURITY: authority-form (`host:port`) is only for CONNECT, which admission answers
    // 405. On any other method its path reads as empty here, and would be decided as ""
    // and sent upstream as "/" (found by the `request_head` fuzz target).
    if uri.scheme().is_none() && uri.authority().is_some() && method != Method::CONNECT {
        return Err(refuse(Malformed::Target));
    }
    let framing = request_framing(&seen, version).map_err(refuse)?;

    let mut headers = HeaderMap::with_capacity(kept.len());
    for field in kept.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[field.name.clone()]),
            HeaderValue::from_maybe_shared(head.slice(field.value.clone())),
        ) else {
            return Err(refuse(Malformed::Field));
        };
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let close = if version == Version::HTTP_10 {
        seen.close || !seen.keep_alive
    } else {
        seen.close
    };
    let upgrade = match seen.upgrade {
        Some(at)
            if version == Version::HTTP_11
                && seen.upgrade_token
                && !items(&head[at.clone()]).any(|p| p.eq_ignore_ascii_case(b"h2c")) =>
        {
            HeaderValue::from_maybe_shared(head.slice(at)).ok()
        }
        _ => None,
    };
    Ok(Some(RequestHead {
        request,
        expect_continue: seen.expect_continue && version == Version::HTTP_11,
        upgrade,
        framing,
        close,
    }))
}

/// How a request body is framed, or why the head is refused.
fn request_framing(seen: &FramingFields, version: Version) -> Result<Decoder, Malformed> {
    // SECURITY: a head with two framings is how requests are smuggled past proxies.
    if seen.coded() && seen.length.is_present() {
        return Err(Malformed::TwoFramings);
    }
    if seen.coded() {
        if version == Version::HTTP_10 {
            return Err(Malformed::CodingInHttp10);
        }
        if seen.codings != 1 || seen.chunked != 1 {
            return Err(Malformed::NotChunkedAlone);
        }
        return Ok(Decoder::Chunked(Chunk::Size));
    }
    match seen.length.get()? {
        None | Some(0) => Ok(Decoder::Empty),
        Some(length) => Ok(Decoder::Length(length)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text`, which must be a whole head: the head, or why it is refused.
    fn parse(text: &str) -> Result<RequestHead, HeadError> {
        let mut buf = BytesMut::from(text.as_bytes());
        let parsed = parse_request(&mut buf, &mut Vec::new())?;
        Ok(parsed.unwrap_or_else(|| panic!("{text:?} is a whole head")))
    }

    /// What was wrong with a refused head.
    fn problem(text: &str) -> Option<Malformed> {
        match parse(text) {
            Err(HeadError::Malformed { problem, .. }) => Some(problem),
            _ => None,
        }
    }

    fn post(fields: &str) -> String {
        format!("POST /upload HTTP/1.1\r\nHost: a\r\n{fields}\r\n\r\n")
    }

    #[test]
    fn a_body_is_framed_by_one_field_or_the_head_is_refused() {
        for (fields, framing) in [
            ("Content-Length: 5", Decoder::Length(5)),
            ("Content-Length: 5\r\nContent-Length: 5", Decoder::Length(5)),
            ("Content-Length: 5, 5", Decoder::Length(5)),
            ("Content-Length: 0", Decoder::Empty),
            ("X-Nothing: here", Decoder::Empty),
            ("Transfer-Encoding: chunked", Decoder::Chunked(Chunk::Size)),
            ("Transfer-Encoding: CHUNKED", Decoder::Chunked(Chunk::Size)),
        ] {
            let head = parse(&post(fields)).unwrap_or_else(|err| panic!("{fields}: {err:?}"));
            assert_eq!(head.framing, framing, "{fields}");
        }
        use Malformed::{Length, Lengths, NotChunkedAlone, TwoFramings};
        for (fields, why) in [
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked",
                TwoFramings,
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5",
                TwoFramings,
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: five",
                TwoFramings,
            ),
            ("Transfer-Encoding: chunked, identity", NotChunkedAlone),
            ("Transfer-Encoding: gzip, chunked", NotChunkedAlone),
            ("Transfer-Encoding: xchunked", NotChunkedAlone),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                NotChunkedAlone,
            ),
            ("Transfer-Encoding: chunked,", NotChunkedAlone),
            ("Content-Length: 5\r\nContent-Length: 6", Lengths),
            ("Content-Length: 5, 6", Lengths),
            ("Content-Length: +5", Length),
            ("Content-Length: -1", Length),
            ("Content-Length: 0x10", Length),
            ("Content-Length: ", Length),
            ("Content-Length: 1234567890123456789", Length),
        ] {
            assert_eq!(problem(&post(fields)), Some(why), "{fields}");
        }
        assert_eq!(
            problem("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Malformed::CodingInHttp10)
        );
    }

    #[test]
    fn malformed_heads_are_a_400_and_crowded_ones_a_431() {
        for text in [
            "GET  /a HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET /a HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
            "GET /a HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
            "GET /a HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n",
            "GET /a HTTP/2.0\r\nHost: a\r\n\r\n",
            "G(T /a HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(problem(text), Some(Malformed::Syntax(_))),
                "{text:?}: {:?}",
                problem(text)
            );
        }
        for text in [
            "GET /a#x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/#x HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(problem(text), Some(Malformed::Fragment), "{text:?}");
        }
        for text in [
            "GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            "yV *V HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(problem(text), Some(Malformed::Target), "{text:?}");
        }
        for (text, path) in [
            ("GET http://a HTTP/1.1\r\nHost: a\r\n\r\n", "/"),
            ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "*"),
            // Read, so that admission can answer it 405.
            ("CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", ""),
        ] {
            let head = parse(text).unwrap_or_else(|err| panic!("{text:?}: {err:?}"));
            assert_eq!(head.request.uri().path(), path, "{text:?}");
        }
        // The method is known by then: a refusal of HEAD must have no body.
        assert_eq!(
            parse("HEAD /#x HTTP/1.1\r\n\r\n").err(),
            Some(HeadError::Malformed {
                problem: Malformed::Fragment,
                method: Some(Method::HEAD)
            })
        );
        let fields: String = (0..=MAX_HEADERS).map(|n| format!("X-{n}: v\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\n{fields}\r\n")).err(),
            Some(HeadError::TooManyFields)
        );
    }

    #[test]
    fn a_head_is_taken_off_whole_and_what_follows_stays() {
        let text = b"POST /a?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b";
        let head_end = text.len() - "abcGET /b".len();
        let mut scratch = Vec::new();
        for cut in 1..head_end {
            let mut buf = BytesMut::from(&text[..cut]);
            assert!(
                matches!(parse_request(&mut buf, &mut scratch), Ok(None)),
                "{cut}"
            );
            assert_eq!(buf.len(), cut, "nothing is taken off a partial head");
        }
        let mut buf = BytesMut::from(&text[..]);
        let Ok(Some(head)) = parse_request(&mut buf, &mut scratch) else {
            panic!("a whole head");
        };
        assert_eq!(&buf[..], b"abcGET /b");
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri(), "/a?q=1");
        assert_eq!(head.request.headers()["host"], "a");
        assert_eq!(head.framing, Decoder::Length(3));
        // Blank lines before a request line are skipped (RFC 9112 §2.2).
        let head = parse("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            head.map(|head| head.request.uri().clone()),
            Ok(Uri::from_static("/"))
        );
    }

    #[test]
    fn connection_fields_decide_keep_alive_and_switches() {
        let head = |text: &str| parse(text).unwrap_or_else(|err| panic!("{text}: {err:?}"));
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").close);
        assert!(head("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").close);
        assert!(head("GET / HTTP/1.0\r\n\r\n").close);
        assert!(!head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").close);
        let websocket = "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(
            head(websocket).upgrade.as_ref().map(|p| p.as_bytes()),
            Some(&b"websocket"[..])
        );
        for asks_nothing in [
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            // SECURITY: h2c would make the connection an unchecked HTTP/2 tunnel.
            "GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket, H2C\r\n\r\n",
        ] {
            assert_eq!(head(asks_nothing).upgrade, None, "{asks_nothing}");
        }
        let expect = |version: &str| {
            head(&format!(
                "PUT / HTTP/{version}\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
            ))
            .expect_continue
        };
        assert!(expect("1.1"));
        // An `Expect` that `Connection` names is dropped, and still asks for its answer.
        assert!(
            head("PUT / HTTP/1.1\r\nConnection: expect\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        assert!(
            !expect("1.0"),
            "an HTTP/1.0 client does not know 100 Continue"
        );
    }

    #[test]
    fn hop_by_hop_fields_are_left_out_of_the_request() {
        let head = parse(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private, Upgrade\r\n\
             X-Private: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: x\r\n\
             Upgrade: websocket\r\nProxy-Authorization: Basic eA==\r\nProxy-Foo: 1\r\n\
             Content-Length: 0\r\nX-Kept: 1\r\n\r\n",
        )
        .unwrap_or_else(|err| panic!("{err:?}"));
        let mut names: Vec<&str> = head.request.headers().keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "host", "x-kept"]);
        // What they said is still read: the upgrade ask and keep-alive.
        assert_eq!(
            head.upgrade.as_ref().map(|p| p.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert!(!head.close);
    }

    #[test]
    fn field_values_keep_every_byte_http_allows() {
        let text = b"GET / HTTP/1.1\r\nX-Text: \t!~ \x80\xff\r\n\r\n";
        let mut buf = BytesMut::from(&text[..]);
        let Ok(Some(head)) = parse_request(&mut buf, &mut Vec::new()) else {
            panic!("obs-text is allowed in values");
        };
        assert_eq!(head.request.headers()["x-text"].as_bytes(), b"!~ \x80\xff");
        // Every other control byte is refused, never passed on.
        for byte in (0u8..0x20)
            .filter(|b| *b != b'\t' && *b != b'\r' && *b != b'\n')
            .chain([0x7f])
        {
            let text = format!("GET / HTTP/1.1\r\nX-Text: a{}b\r\n\r\n", byte as char);
            let mut buf = BytesMut::from(text.as_bytes());
            assert!(
                matches!(
                    parse_request(&mut buf, &mut Vec::new()),
                    Err(HeadError::Malformed { .. })
                ),
                "{byte:#x}"
            );
        }
    }
}
