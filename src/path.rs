//! Canonical request paths: one spelling for every way of writing the same path, and a
//! refusal for paths that servers read in different ways.
//!
//! Also the form decoding of a query component, for the few query parameters the
//! gateway reads itself (a token's, the admin listener's filters).
//!
//! Pure string work, shared by the proxy (which routes on and forwards the canonical path),
//! config (route prefixes must already be canonical) and, later, policy path globs.

use std::borrow::Cow;
use std::fmt;

/// Why a path has no canonical spelling; reads as "the path ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathError(&'static str);

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the path {}", self.0)
    }
}

impl std::error::Error for PathError {}

/// The canonical form of a request path (RFC 3986 §6.2.2, plus refusals).
///
/// - Percent-encoded unreserved characters are decoded (`%61` → `a`, `%2e` → `.`); other
///   encodings are kept, with upper-case hex; characters a path may not hold raw (and any
///   non-ASCII byte) are encoded.
/// - `.` and `..` segments are resolved and repeated slashes merged.
/// - A segment's `;parameters` are dropped, the way Java servers read them.
///
/// Refused, because servers disagree about what they mean: an encoded `/` or `\`,
/// a raw `\`, an encoded control character, bytes that are not UTF-8 once decoded, a `..`
/// above the root, `.` or `..` with parameters (`..;`), and double-encoded dots, slashes
/// and backslashes (`%252e`). Paths that are already canonical are returned borrowed.
pub fn canonical(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw.is_empty() || raw == "*" || is_canonical(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    if raw.contains('\\') {
        return Err(PathError("contains a backslash"));
    }
    if is_double_encoded(raw.as_bytes()) {
        return Err(PathError(
            "is double-encoded (%25 followed by 2E, 2F or 5C)",
        ));
    }

    let mut out = String::with_capacity(raw.len());
    // Where each output segment starts, so that `..` can drop the last one.
    let mut starts: Vec<usize> = Vec::new();
    let mut trailing_slash = false;
    let raw_segments = raw.strip_prefix('/').unwrap_or(raw).split('/');
    for raw_segment in raw_segments {
        let (name, has_parameters) = match raw_segment.split_once(';') {
            Some((name, _parameters)) => (name, true),
            None => (raw_segment, false),
        };
        let segment = canonical_segment(name).map_err(PathError)?;
        // A server that decodes `%3B` before it splits parameters off reads `..%3B` as
        // `..;`, that is `..`.
        let encoded_parameters = segment
            .split_once("%3B")
            .is_some_and(|(before, _)| before == "." || before == "..");
        trailing_slash = false;
        match segment.as_str() {
            _ if encoded_parameters => {
                return Err(PathError("has a dot segment with parameters (such as ..;)"));
            }
            "." | ".." if has_parameters => {
                return Err(PathError("has a dot segment with parameters (such as ..;)"));
            }
            "" | "." => trailing_slash = true,
            ".." => {
                let Some(start) = starts.pop() else {
                    return Err(PathError("climbs above the root with .."));
                };
                out.truncate(start);
                trailing_slash = true;
            }
            // SECURITY: Windows servers drop trailing dots and spaces, so `/admin.` and
            // `/admin%20` are `/admin` there, past any rule written for `/admin`.
            _ if segment.ends_with('.') || segment.ends_with("%20") => {
                return Err(PathError(
                    "has a segment ending in a dot or a space, which some servers ignore",
                ));
            }
            _ => {
                starts.push(out.len());
                out.push('/');
                out.push_str(&segment);
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    // Decoding can assemble what the raw check could not see (`%25%32%65` → `%2e`).
    if is_double_encoded(out.as_bytes()) {
        return Err(PathError(
            "is double-encoded (%25 followed by 2E, 2F or 5C)",
        ));
    }
    if out == raw {
        Ok(Cow::Borrowed(raw))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// Whether a path needs no work: plain characters only, no dot segments, no empty ones
/// (a trailing slash is fine). One pass, since nearly every request takes this way.
fn is_canonical(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut segment_start = 1;
    for (index, &byte) in bytes.iter().enumerate().skip(1) {
        if byte == b'/' {
            let segment = &bytes[segment_start..index];
            // Empty segments merge; `.`, `..` and a trailing dot need the slow path.
            if segment.is_empty() || segment.ends_with(b".") {
                return false;
            }
            segment_start = index + 1;
        } else if !(is_unreserved(byte) || (is_raw_pchar(byte) && byte != b';')) {
            return false;
        }
    }
    !bytes[segment_start..].ends_with(b".")
}

/// The path with ASCII letters lower-cased, except the hex digits of percent-encodings,
/// which stay upper-case so the result is still canonical. For case-insensitive routes.
pub fn fold_case(path: &str) -> Cow<'_, str> {
    let mut out = Vec::with_capacity(path.len());
    let mut hex_left = 0;
    for byte in path.bytes() {
        if hex_left > 0 {
            hex_left -= 1;
            out.push(byte);
        } else if byte == b'%' {
            hex_left = 2;
            out.push(byte);
        } else {
            out.push(byte.to_ascii_lowercase());
        }
    }
    if out == path.as_bytes() {
        return Cow::Borrowed(path);
    }
    // Only ASCII letters changed, so the bytes are as valid UTF-8 as the input.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| path.to_owned()))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Sub-delimiters, `:` and `@`: what RFC 3986 lets a path segment hold without encoding.
fn is_raw_pchar(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

/// Whether a canonical path holds an encoded `%` followed by two hex digits (`%2561`),
/// which a server that decodes twice reads as another character (`/%2561dmin` as
/// `/admin`). Canonical paths keep `%25` encoded, so this looks for it alone.
pub fn has_encoded_percent_escape(path: &str) -> bool {
    let bytes = path.as_bytes();
    memchr::memmem::find_iter(bytes, b"%25").any(|at| {
        bytes
            .get(at + 3..at + 5)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

fn is_double_encoded(bytes: &[u8]) -> bool {
    bytes.windows(5).any(|w| {
        w[0] == b'%'
            && w[1] == b'2'
            && w[2] == b'5'
            && matches!(
                (w[3], w[4].to_ascii_lowercase()),
                // `%2525` is the same trick one level deeper.
                (b'2', b'e' | b'f' | b'5') | (b'5', b'c')
            )
    })
}

/// One segment's canonical spelling, or what is wrong with it.
fn canonical_segment(raw: &str) -> Result<String, &'static str> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    // Every byte the segment stands for, to check that it is UTF-8.
    let mut decoded = Vec::with_capacity(raw.len());
    let mut index = 0;
    while index < bytes.len() {
        let (byte, was_encoded) = if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .ok_or("has a malformed percent-encoding")?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err("has a malformed percent-encoding");
            }
            let text = std::str::from_utf8(hex).map_err(|_| "has a malformed percent-encoding")?;
            let byte =
                u8::from_str_radix(text, 16).map_err(|_| "has a malformed percent-encoding")?;
            index += 3;
            (byte, true)
        } else {
            index += 1;
            (bytes[index - 1], false)
        };
        match byte {
            b'/' | b'\\' if was_encoded => {
                return Err("contains an encoded slash or backslash (%2F, %5C)");
            }
            0x00..=0x1F | 0x7F => return Err("contains a control character"),
            _ => {}
        }
        decoded.push(byte);
        if is_unreserved(byte) || (!was_encoded && is_raw_pchar(byte)) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err("is not valid UTF-8 once decoded");
    }
    Ok(out)
}

/// A query component as a form decoder reads it: `%XX` escapes decoded, `+` a space.
/// Invalid escapes stay as written, and bytes that do not make UTF-8 are replaced.
pub fn form_decoded(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |offset: usize| {
            bytes
                .get(at + offset)
                .and_then(|byte| (*byte as char).to_digit(16))
        };
        match bytes[at] {
            b'%' if let (Some(high), Some(low)) = (hex(1), hex(2)) => {
                // Two hex digits make at most 255.
                decoded.push(u8::try_from(high * 16 + low).unwrap_or(b'%'));
                at += 3;
            }
            b'+' => {
                decoded.push(b' ');
                at += 1;
            }
            byte => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&decoded).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_reads_escapes_and_pluses_and_keeps_the_rest() {
        assert_eq!(form_decoded("missing_scope"), "missing_scope");
        assert_eq!(form_decoded("a+b%2Fc%3d"), "a b/c=");
        assert_eq!(form_decoded("100%"), "100%");
        assert_eq!(form_decoded("%zz%4"), "%zz%4");
        assert_eq!(form_decoded("%ff"), "\u{fffd}");
    }

    fn canonical_of(raw: &str) -> String {
        canonical(raw)
            .unwrap_or_else(|err| panic!("{raw}: {err}"))
            .into_owned()
    }

    fn refused(raw: &str) -> String {
        match canonical(raw) {
            Ok(p) => panic!("{raw} was accepted as {p}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn an_encoded_semicolon_after_a_dot_segment_is_a_parameter_too() {
        for raw in [
            "/public/..%3B/admin",
            "/public/..%3bx/admin",
            "/.%3B/a",
            "/a/..%3B",
        ] {
            assert_eq!(
                refused(raw),
                "the path has a dot segment with parameters (such as ..;)",
                "{raw}"
            );
        }
        assert_eq!(canonical_of("/a..%3B/b"), "/a..%3B/b");
        assert_eq!(canonical_of("/a/b%3Bc"), "/a/b%3Bc");
    }

    #[test]
    fn an_encoded_percent_before_hex_digits_is_found() {
        for (path, found) in [
            ("/%2561dmin", true),
            ("/a%25FF", true),
            ("/a%25", false),
            ("/a%252", false),
            ("/a%25zz", false),
            ("/100%25", false),
            ("/plain", false),
        ] {
            assert_eq!(has_encoded_percent_escape(path), found, "{path}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for raw in ["/", "/public/a.txt", "/a-b_c~d/e:f@g!$&'()*+,=", "*", ""] {
            assert!(
                matches!(canonical(raw), Ok(Cow::Borrowed(p)) if p == raw),
                "{raw}"
            );
        }
    }

    #[test]
    fn normalizes() {
        for (raw, want) in [
            ("/a//b///c", "/a/b/c"),
            ("//a", "/a"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("/a/", "/a/"),
            ("/%61%62c", "/abc"),
            ("/x/%2e%2E/y", "/y"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/a/%2e/b", "/a/b"),
            ("/a%3ab%3Ac", "/a%3Ab%3Ac"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/q\"x\"", "/q%22x%22"),
            ("/a{b}|c^", "/a%7Bb%7D%7Cc%5E"),
            ("/admin;jsessionid=1/x", "/admin/x"),
            ("/a;p/b;q=1", "/a/b"),
            ("/%7euser", "/~user"),
            ("/.well-known/x", "/.well-known/x"),
        ] {
            assert_eq!(canonical_of(raw), want, "{raw}");
        }
    }

    #[test]
    fn canonical_forms_are_fixed_points() {
        for raw in [
            "/a//b/./c/../d;x",
            "/%61%2e%2Eb/%7e/%3b%3B",
            "/caf%c3%a9/é/\"{}|",
            "/x/%2e%2e/y/",
            "/a%25b",
        ] {
            let once = canonical_of(raw);
            assert_eq!(canonical_of(&once), once, "{raw}");
        }
    }

    #[test]
    fn folds_case_but_not_hex() {
        assert_eq!(fold_case("/Admin/%C3%A9X"), "/admin/%C3%A9x");
        assert!(matches!(fold_case("/a/%C3%A9"), Cow::Borrowed(_)));
    }

    #[test]
    fn refuses_what_servers_read_differently() {
        for (raw, problem) in [
            ("/a%2fb", "encoded slash"),
            ("/a%2Fb", "encoded slash"),
            ("/a%5cb", "encoded slash or backslash"),
            ("/a\\b", "backslash"),
            ("/a%00b", "control character"),
            ("/a%0d%0ab", "control character"),
            ("/a%7f", "control character"),
            ("/%c3%28", "not valid UTF-8"),
            ("/%ff", "not valid UTF-8"),
            ("/..", "above the root"),
            ("/a/../..", "above the root"),
            ("/%2e%2e/x", "above the root"),
            ("/public/..;/admin", "parameters"),
            ("/public/.;x/admin", "parameters"),
            ("/%252e%252e/admin", "double-encoded"),
            ("/a%252Fb", "double-encoded"),
            ("/a%255cb", "double-encoded"),
            ("/public/%25%32%65%25%32%65/admin", "double-encoded"),
            ("/%252%45", "double-encoded"),
            ("/%25%35%63", "double-encoded"),
            ("/%25252e", "double-encoded"),
            ("/a%+1", "malformed"),
            ("/a%2", "malformed"),
            ("/a%zz", "malformed"),
            ("/admin.", "ending in a dot"),
            ("/admin./x", "ending in a dot"),
            ("/admin%2e", "ending in a dot"),
            ("/admin%20", "or a space"),
            ("/admin%20/x", "or a space"),
            ("/admin...", "ending in a dot"),
        ] {
            let message = refused(raw);
            assert!(message.contains(problem), "{raw}: {message}");
        }
    }

    /// Random paths from an alphabet rich in the characters that matter: whatever comes
    /// in, canonical() answers without panicking, its answers are fixed points, and they
    /// hold no dot segments, empty segments or encodings of `/`.
    #[test]
    fn random_paths_never_panic_and_canonical_forms_are_stable() {
        const PIECES: [&str; 22] = [
            "/", "a", "B", ".", "..", "%2e", "%2E", "%2f", "%25", "%32", "%65", ";", "=", "\\",
            "%5c", "%00", "%c3", "%a9", "~", " ", "é", "%",
        ];
        let mut random = crate::testing::Xorshift::new(0x853c_49e6_748f_ea9b);
        let mut next = |bound: usize| random.below(bound);
        for _ in 0..20_000 {
            let length = 1 + next(12);
            let raw: String = std::iter::once("/")
                .chain((0..length).map(|_| PIECES[next(PIECES.len())]))
                .collect();
            if let Ok(once) = canonical(&raw) {
                let twice = canonical(&once).unwrap_or_else(|err| panic!("{raw} → {once}: {err}"));
                assert_eq!(twice, once, "{raw}");
                assert!(once.starts_with('/'), "{raw} → {once}");
                assert!(!once.contains("//"), "{raw} → {once}");
                let lower = once.to_ascii_lowercase();
                assert!(
                    !lower.contains("%2f") && !lower.contains("%5c"),
                    "{raw} → {once}"
                );
                for segment in once.split('/') {
                    assert!(segment != "." && segment != "..", "{raw} → {once}");
                }
            }
        }
    }
}
