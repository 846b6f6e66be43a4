//! The promises of every parser that reads outside input, stated once for the property
//! tests (`cargo test`) and the cargo-fuzz targets (`fuzz/`, with the `fuzzing`
//! feature). Each function takes any input: it panics only when a promise is broken.
//!
//! Whatever the input, no parser panics, and:
//! - a request head that parses whole is neither refused nor read early from a part of
//!   it, and the head the gateway writes upstream for it parses to the same framing;
//! - a chunked body decodes the same however its bytes are split;
//! - a response head that parses whole is only ever incomplete before its end;
//! - a canonical path is its own canonical form;
//! - every config or policy error names the file it is in;
//! - no token that was not signed by a configured key identifies anyone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};

use crate::config;
use crate::identity::Identity;
use crate::proxy::h1::Malformed;
use crate::proxy::h1::body::{Chunk, Decoded, Decoder, Encoder};
use crate::proxy::h1::client::{Added, Parsed, parse_response, write_request_head};
use crate::proxy::h1::server::parse_request;

/// A request head: no panic; one that parses whole parses the same from every shorter
/// prefix of it (as incomplete); and the head written upstream for it parses again, to
/// the same method, target and body framing.
pub fn request_head(bytes: &[u8]) {
    let mut kept = Vec::new();
    let mut buf = BytesMut::from(bytes);
    let Ok(Some(head)) = parse_request(&mut buf, &mut kept) else {
        return;
    };
    let length = bytes.len() - buf.len();
    for end in 0..length {
        let mut prefix = BytesMut::from(&bytes[..end]);
        assert!(
            matches!(parse_request(&mut prefix, &mut kept), Ok(None)),
            "a head that parses whole was refused or read early from its first {end} bytes"
        );
    }

    let (parts, ()) = head.request.into_parts();
    // CONNECT is read only to be answered 405; it is never written upstream.
    if parts.method == http::Method::CONNECT {
        return;
    }
    let encoder = match head.framing {
        Decoder::Empty | Decoder::Length(0) => Encoder::Empty,
        Decoder::Length(length) => Encoder::Length(length),
        Decoder::Chunked(_) | Decoder::UntilClose => Encoder::Chunked,
    };
    let mut written = Vec::new();
    write_request_head(&mut written, &parts, &Added::default(), encoder, "a");
    let mut again = BytesMut::from(&written[..]);
    let Ok(Some(reread)) = parse_request(&mut again, &mut kept) else {
        panic!(
            "the head written upstream does not parse: {:?}",
            String::from_utf8_lossy(&written)
        );
    };
    assert!(
        again.is_empty(),
        "the head written upstream has bytes after it"
    );
    assert_eq!(reread.request.method(), parts.method);
    assert_eq!(reread.request.uri().path(), parts.uri.path());
    assert_eq!(reread.request.uri().query(), parts.uri.query());
    assert_eq!(
        body_length(&reread.framing),
        body_length(&head.framing),
        "the head written upstream frames its body differently: {:?}",
        String::from_utf8_lossy(&written)
    );
}

/// How much body a framing announces: `Some(n)` for a length (none is 0), `None` for
/// chunks.
fn body_length(framing: &Decoder) -> Option<u64> {
    match framing {
        Decoder::Empty => Some(0),
        Decoder::Length(length) => Some(*length),
        Decoder::Chunked(_) | Decoder::UntilClose => None,
    }
}

/// A chunked body: no panic, and the same body, the same refusal, or the same need for
/// more, whether its bytes arrive at once, one by one, or a few at a time.
pub fn chunked_body(bytes: &[u8]) {
    let whole = decode_in_steps(Decoder::Chunked(Chunk::Size), bytes, bytes.len().max(1));
    for step in [1, 3, 16] {
        let split = decode_in_steps(Decoder::Chunked(Chunk::Size), bytes, step);
        match (&whole, &split) {
            (Ok((body, rest)), Ok((split_body, split_rest))) => {
                assert_eq!(body, split_body, "in steps of {step}");
                // What was fed past the body's end is the start of what follows it.
                assert!(rest.starts_with(split_rest), "in steps of {step}");
            }
            (whole, split) => assert_eq!(whole, split, "in steps of {step}"),
        }
    }
}

/// Decodes `input` fed `step` bytes at a time: the body, and what is left after it;
/// `Err(None)` when the body needs more than the input.
pub(crate) fn decode_in_steps(
    mut framing: Decoder,
    input: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Vec<u8>), Option<Malformed>> {
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match framing.decode(&mut buf).map_err(Some)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::End => return Ok((body, buf.to_vec())),
            Decoded::NeedMore => {
                if fed == input.len() {
                    return Err(None);
                }
                let end = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
        }
    }
}

/// A response head: no panic, a head no longer than the input, and every shorter prefix
/// of a head that parses whole is incomplete.
pub fn response_head(bytes: &[u8]) {
    for head_request in [false, true] {
        let length = match parse_response(bytes, head_request) {
            Ok(Parsed::Interim(length) | Parsed::Final(_, length)) => length,
            Ok(Parsed::Partial) | Err(_) => continue,
        };
        assert!(length <= bytes.len());
        for end in 0..length {
            assert!(
                matches!(
                    parse_response(&bytes[..end], head_request),
                    Ok(Parsed::Partial)
                ),
                "a response head that parses whole was refused or read early from its first {end} bytes"
            );
        }
    }
}

/// A request path: no panic, and a canonical path is its own canonical form (so the
/// path decided on is the one forwarded, however often it is normalized).
pub fn path(text: &str) {
    if let Ok(canonical) = crate::path::canonical(text) {
        assert_eq!(
            crate::path::canonical(&canonical).as_deref(),
            Ok(&*canonical),
            "{text:?}"
        );
        let folded = crate::path::fold_case(&canonical);
        assert_eq!(crate::path::fold_case(&folded), folded, "{text:?}");
    }
}

/// A config file, read as if it sat beside the shipped one (so that the files it names
/// resolve): no panic, and every error names the file it is in (this one, or a policy,
/// list or key file it names).
pub fn config_file(text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fuzz.yaml");
    if let Err(errors) = config::from_str(&path, text) {
        assert!(!errors.0.is_empty(), "a config refused without a reason");
        for error in &errors.0 {
            assert_names_a_file(error);
        }
    }
}

/// A policy file: no panic, and every error names the file it is in (this one, or a list
/// file it names).
pub fn policy_file(text: &str) {
    let sources = [(PathBuf::from("fuzz.yaml"), text.to_owned())];
    if let Err(errors) = config::compile_policy(&sources) {
        assert!(!errors.is_empty(), "a policy refused without a reason");
        for error in &errors {
            assert_names_a_file(error);
        }
    }
}

fn assert_names_a_file(error: &config::ConfigError) {
    assert!(
        !error.file.as_os_str().is_empty(),
        "an error that names no file: {error}"
    );
}

/// A bearer token: no panic, and no token identifies anyone unless a configured key
/// signed it (none here does: the demo issuer's private key signs nothing in them).
pub fn token(text: &str) {
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {text}")) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    if let Ok(Some(principal)) = demo_identity().authenticate(&headers, None) {
        panic!("an unsigned token identified {principal:?}");
    }
}

/// The shipped demo config's identity: one EdDSA issuer with a key file, and API keys.
fn demo_identity() -> &'static Identity {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.yaml");
        let config = config::load(&path).unwrap_or_else(|errors| panic!("{errors}"));
        let metrics = Arc::new(crate::telemetry::Metrics::new(1));
        Identity::new(&config.identity, &metrics, None)
    })
}

#[cfg(test)]
mod tests {
    //! The promises above, over generated inputs: arbitrary bytes, and inputs built from
    //! the pieces that parsers disagree on. The seed is fixed so that `cargo test` gives
    //! the same answer every run; `PROPTEST_RNG_SEED=<n>` explores others.

    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;
    use crate::proxy::h1::push_chunk_start;

    fn settings(cases: u32) -> ProptestConfig {
        let mut config = ProptestConfig::with_cases(cases);
        if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
            config.rng_seed = RngSeed::Fixed(15);
        }
        config.failure_persistence = None;
        config
    }

    /// One of `pieces`, as bytes.
    fn one_of(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::sample::select(pieces).prop_map(str::to_owned)
    }

    /// Mostly one of `common`, sometimes one of `rare`.
    fn mostly(
        common: &'static [&'static str],
        rare: &'static [&'static str],
    ) -> impl Strategy<Value = String> {
        prop_oneof![6 => one_of(common), 1 => one_of(rare)]
    }

    /// `text`, and in one case of four, with a byte or two overwritten by any byte.
    fn mutated(text: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
        let changes = prop_oneof![
            3 => Just(Vec::new()),
            1 => proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..3),
        ];
        (text, changes).prop_map(|(text, changes)| {
            let mut bytes = text.into_bytes();
            for (at, byte) in changes {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            bytes
        })
    }

    fn request_heads() -> impl Strategy<Value = String> {
        let line = (
            mostly(
                &["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH"],
                &["get", "M-SEARCH", "G(ET"],
            ),
            mostly(&[" "], &["  ", "\t"]),
            prop_oneof![
                6 => "/[a-zA-Z0-9/%.;?=&~-]{0,24}",
                1 => one_of(&["*", "http://a/b?c", "//x", "/a#b", "/a\\b", "http://a"]),
            ],
            mostly(
                &["HTTP/1.1", "HTTP/1.0"],
                &["HTTP/1.2", "HTTP/2.0", "http/1.1"],
            ),
        );
        let field = prop_oneof![
            one_of(&[
                "Host: a",
                "Host: a",
                "Host:",
                "Host: a:8080",
                "Host: a b",
                "Content-Length: 5",
                "Content-Length: 0",
                "Content-Length: 00",
                "Content-Length: 5, 5",
                "Content-Length: 5,6",
                "Content-Length: +5",
                "Content-Length: 99999999999999999999",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: gzip, chunked",
                "Transfer-Encoding: chunked, identity",
                "Transfer-Encoding:  chunked ",
                "Connection: close",
                "Connection: keep-alive",
                "Connection: upgrade",
                "Upgrade: websocket",
                "Upgrade: h2c",
                "Expect: 100-continue",
                "X-Forwarded-For: 1.2.3.4",
                "Te: trailers",
                "X-A : 1",
                " folded",
                "X_A: 1",
                "X-A: \u{e9}",
            ]),
            "[A-Za-z-]{1,8}: [ -~]{0,12}",
        ];
        (
            line,
            proptest::collection::vec(field, 0..6),
            mostly(&["\r\n"], &["\n"]),
            "[a-z0-9\r\n]{0,12}",
        )
            .prop_map(|((method, sep, target, version), fields, eol, after)| {
                let mut head = format!("{method}{sep}{target}{sep}{version}{eol}");
                for field in fields {
                    head.push_str(&field);
                    head.push_str(eol.as_str());
                }
                head.push_str(eol.as_str());
                head.push_str(&after);
                head
            })
    }

    fn chunked_bodies() -> impl Strategy<Value = String> {
        let chunk = (
            prop_oneof![Just(0usize), 1usize..20],
            one_of(&[
                "", "", "", ";e", ";e=v", ";e=\"q\"", " ", " ;e", "\t", "x", ";\u{0}",
            ]),
            prop_oneof![Just(0i8), Just(0i8), Just(1i8), Just(-1i8)],
            one_of(&["\r\n", "\r\n", "\r\n", "\n", "", "xx"]),
        )
            .prop_map(|(size, extension, off, end)| {
                let data = "d".repeat(size.saturating_add_signed(off.into()));
                format!("{size:x}{extension}\r\n{data}{end}")
            });
        (
            proptest::collection::vec(chunk, 0..5),
            one_of(&["0", "0", "00", "0;e", "0 "]),
            one_of(&[
                "",
                "",
                "x-t: 1\r\n",
                "x-t : 1\r\n",
                "x-t: \u{0}\r\n",
                "GET / HTTP/1.1\r\n",
            ]),
            one_of(&["\r\n", "\r\n", "\n", ""]),
            "[A-Z ]{0,6}",
        )
            .prop_map(|(chunks, last, trailer, end, after)| {
                format!("{}{last}\r\n{trailer}{end}{after}", chunks.concat())
            })
    }

    fn response_heads() -> impl Strategy<Value = String> {
        (
            one_of(&["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2", "http/1.1"]),
            one_of(&[
                " 200 OK",
                " 100 Continue",
                " 204",
                " 304 Not Modified",
                " 101 Switching",
                " 99 x",
                " 2000 x",
                " 200",
            ]),
            proptest::collection::vec(
                one_of(&[
                    "Content-Length: 5",
                    "Content-Length: 5, 6",
                    "Content-Length: -1",
                    "Transfer-Encoding: chunked",
                    "Transfer-Encoding: gzip",
                    "Connection: close",
                    "Connection: keep-alive",
                    "Keep-Alive: timeout=5",
                    "Set-Cookie: a=b",
                    "X-A : 1",
                    " folded",
                    "X-A: \u{0}",
                ]),
                0..5,
            ),
            one_of(&["\r\n", "\r\n", "\n"]),
            "[a-z\r\n]{0,8}",
        )
            .prop_map(|(version, status, fields, eol, after)| {
                let mut head = format!("{version}{status}{eol}");
                for field in fields {
                    head.push_str(&field);
                    head.push_str(eol.as_str());
                }
                format!("{head}{eol}{after}")
            })
    }

    /// Paths from pieces that decode into one another: escapes of `%`, of hex digits and
    /// of dots and slashes, parameters, and plain characters.
    fn paths() -> impl Strategy<Value = String> {
        let tricky = one_of(&[
            "/", ".", "%25", "%32", "%35", "e", "f", "c", "%65", "%66", "%63", "%2e", ";", "a", "%",
        ]);
        let broad = one_of(&[
            "/", "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%25", "%252e", "%2561", "%3b",
            ";x", "a", "A", "~", "%61", "%7E", "%00", "%g1", "é", "?", "//", " ", "%20", "%41",
        ]);
        prop_oneof![
            proptest::collection::vec(tricky, 0..16),
            proptest::collection::vec(broad, 0..16),
        ]
        .prop_map(|pieces| pieces.concat())
    }

    /// `text` with a few spans replaced by pieces that YAML and the config model care about.
    fn edited(text: String) -> impl Strategy<Value = String> {
        let edit = (
            any::<prop::sample::Index>(),
            0usize..12,
            one_of(&[
                "",
                ":",
                "- ",
                "{",
                "}",
                "[",
                "]",
                "\"",
                "'",
                "\n",
                "\n  ",
                "#",
                "&a",
                "*a",
                "!!str ",
                "0",
                "-1",
                "1e9",
                "99999999999999999999",
                "true",
                "null",
                "~",
                "0s",
                "1MiB",
                "10MB",
                "/",
                "*.yaml",
                "../",
                "127.0.0.1:0",
                "[::1]:0",
                "http://",
                "id: x",
                "\t",
                "é",
                "\u{0}",
            ]),
        );
        proptest::collection::vec(edit, 1..4).prop_map(move |edits| {
            let mut text = text.clone();
            for (at, length, piece) in edits {
                let mut start = at.index(text.len() + 1);
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = (start + length).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(start..end, &piece);
            }
            text
        })
    }

    fn shipped(path: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn tokens() -> impl Strategy<Value = String> {
        let header = one_of(&[
            r#"{"alg":"EdDSA","kid":"demo"}"#,
            r#"{"alg":"EdDSA"}"#,
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS256","kid":"demo"}"#,
            r#"{"alg":"RS256","kid":"demo"}"#,
            r#"{"alg":"EdDSA","kid":"demo","crit":["x"]}"#,
            r#"{"alg":"EdDSA","jku":"http://a"}"#,
            r#"{"alg":"EdDSA","kid":"../demo"}"#,
            "{",
            "[]",
            "",
        ]);
        let claims = one_of(&[
            r#"{"iss":"https://demo.portcullis.local/","aud":"demo-api","sub":"x","exp":9999999999}"#,
            r#"{"iss":"https://demo.portcullis.local/","aud":["demo-api"],"sub":"x","exp":9999999999,"roles":["admin"]}"#,
            r#"{"iss":"https://demo.portcullis.local/","aud":"demo-api","exp":1}"#,
            r#"{"iss":"https://demo.portcullis.local/"}"#,
            r#"{"iss":1}"#,
            "{}",
            "null",
            "",
        ]);
        let signature = proptest::collection::vec(any::<u8>(), 0..80);
        prop_oneof![
            (header, claims, signature).prop_map(|(header, claims, signature)| format!(
                "{}.{}.{}",
                b64(header.as_bytes()),
                b64(claims.as_bytes()),
                b64(&signature)
            )),
            "[A-Za-z0-9_.=+/-]{0,120}",
        ]
    }

    proptest! {
        #![proptest_config(settings(512))]

        #[test]
        fn request_heads_keep_their_promises(head in mutated(request_heads())) {
            request_head(&head);
        }

        #[test]
        fn any_bytes_as_a_request_head(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            request_head(&bytes);
        }

        #[test]
        fn chunked_bodies_keep_their_promises(body in mutated(chunked_bodies())) {
            chunked_body(&body);
        }

        #[test]
        fn chunks_we_write_decode_to_their_data(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..8),
            step in 1usize..32,
        ) {
            let mut written = Vec::new();
            for piece in &pieces {
                push_chunk_start(&mut written, piece.len());
                written.extend_from_slice(piece);
                written.extend_from_slice(b"\r\n");
            }
            written.extend_from_slice(b"0\r\n\r\n");
            let decoded = decode_in_steps(Decoder::Chunked(Chunk::Size), &written, step);
            prop_assert_eq!(decoded, Ok((pieces.concat(), Vec::new())));
        }

        #[test]
        fn response_heads_keep_their_promises(head in mutated(response_heads())) {
            response_head(&head);
        }

    }

    proptest! {
        // Paths are cheap, and the pieces that make a double encoding are several.
        #![proptest_config(settings(4096))]

        #[test]
        fn paths_keep_their_promises(raw in paths()) {
            path(&raw);
        }
    }

    proptest! {
        #![proptest_config(settings(128))]

        #[test]
        fn edited_configs_keep_their_promises(text in edited(shipped("config/portcullis.yaml"))) {
            config_file(&text);
        }

        #[test]
        fn edited_policies_keep_their_promises(text in edited(shipped("config/policies/demo.yaml"))) {
            policy_file(&text);
        }

        #[test]
        fn tokens_keep_their_promises(token_text in tokens()) {
            token(&token_text);
        }
    }

    /// The edits start from files that load where `config_file` and `policy_file` put
    /// them, so that most edited files get past the first error.
    #[test]
    fn the_files_edited_load_unedited() {
        let text = shipped("config/portcullis.yaml");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fuzz.yaml");
        config::from_str(&path, &text).unwrap_or_else(|errors| panic!("{errors}"));
        let sources = [(
            PathBuf::from("fuzz.yaml"),
            shipped("config/policies/demo.yaml"),
        )];
        if let Err(errors) = config::compile_policy(&sources) {
            panic!("{errors:?}");
        }
    }
}
