//! A watch on the framing of HTTP/1 requests, read from a client connection's raw bytes.
//!
//! hyper accepts a request head that carries both `Content-Length` and
//! `Transfer-Encoding`: it drops the length, reads the chunked body and closes the
//! connection afterwards, as RFC 9112 §6.1 allows. We refuse such a request with a 400
//! instead, and hyper leaves no trace of the dropped length, so this watch follows the
//! byte stream the way hyper frames it (heads, sized and chunked bodies) and records the
//! number of the first head that had both. Anything it cannot follow (HTTP/2, a malformed
//! head, a tunnel) ends the watch; it never guesses.
//!
//! It also notes where the latest head that asks for a protocol switch ends, so that a
//! switch can be refused when the client sent bytes past that head before the upstream
//! agreed to it (they would otherwise go into the tunnel unchecked).

/// Follows one connection's request framing.
#[derive(Debug)]
pub struct FramingWatch {
    state: State,
    /// Bytes of a head that arrived in pieces.
    partial_head: Vec<u8>,
    /// The largest head worth following; past it hyper refuses the request anyway.
    max_head: usize,
    /// Heads seen so far.
    heads: u64,
    /// Bytes fed so far.
    fed: u64,
    /// The number of the latest head with an `Upgrade` field, and the offset where it ends.
    upgrade: Option<(u64, u64)>,
    /// The number of the first head whose request target has a `#fragment`, which the
    /// URI parser drops without a trace (that request's 400 closes the connection).
    fragment: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Inside a body of known length: this many bytes left.
    Sized(u64),
    /// The chunked states below are hyper's (`proto/h1/decode.rs`), byte for byte, so
    /// both agree on where a chunked body ends. First, the chunk size's first digit.
    ChunkStart,
    /// More size digits, so far this value.
    ChunkSize(u64),
    /// Blanks after the size.
    ChunkSizeBlank(u64),
    /// A chunk extension, up to CR.
    ChunkExtension(u64),
    /// The LF that ends the size line.
    ChunkSizeLf(u64),
    /// Inside chunk data: this many bytes left.
    ChunkData(u64),
    /// The CR after chunk data.
    ChunkDataCr,
    /// The LF after chunk data.
    ChunkDataLf,
    /// After the last chunk: CR ends the body, anything else starts a trailer line.
    EndCr,
    /// Inside a trailer line, up to CR.
    Trailer,
    /// The LF that ends a trailer line.
    TrailerLf,
    /// The LF that ends the body.
    EndLf,
    /// Stopped following this connection.
    Done,
}

impl FramingWatch {
    /// A watch for a new connection whose heads may be up to `max_head` bytes.
    pub fn new(max_head: usize) -> FramingWatch {
        FramingWatch {
            state: State::Head,
            partial_head: Vec::new(),
            max_head,
            heads: 0,
            fed: 0,
            upgrade: None,
            fragment: None,
        }
    }

    /// Stops following the connection (it became a tunnel).
    pub fn stop(&mut self) {
        self.state = State::Done;
        self.partial_head = Vec::new();
    }

    /// Follows `bytes`, the next bytes read from the client. Returns the number (from 1)
    /// of a head that had both `Content-Length` and `Transfer-Encoding`; the watch stops
    /// there, since hyper closes the connection after that request.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<u64> {
        let start = self.fed;
        self.fed += bytes.len() as u64;
        self.follow(start, bytes)
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// The number of the latest head that asked for a protocol switch, and the offset in
    /// the byte stream where that head ends.
    pub fn upgrade(&self) -> Option<(u64, u64)> {
        self.upgrade
    }

    /// The number of the first head whose request target had a `#fragment`.
    pub fn fragment(&self) -> Option<u64> {
        self.fragment
    }

    fn follow(&mut self, start: u64, mut bytes: &[u8]) -> Option<u64> {
        let total = bytes.len();
        while !bytes.is_empty() {
            match self.state {
                State::Done => return None,
                State::Head => {
                    let (used, head) = self.head(bytes);
                    bytes = &bytes[used..];
                    match head {
                        Some((Head::Ambiguous, _)) => {
                            self.stop();
                            return Some(self.heads);
                        }
                        Some((Head::Body(state), seen)) => {
                            self.state = state;
                            if seen.fragment && self.fragment.is_none() {
                                self.fragment = Some(self.heads);
                            }
                            if seen.upgrade {
                                let end = start + (total - bytes.len()) as u64;
                                self.upgrade = Some((self.heads, end));
                            }
                        }
                        None => {}
                    }
                }
                State::Sized(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.state = if take == left {
                        State::Head
                    } else {
                        State::Sized(left - take)
                    };
                }
                State::ChunkData(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.state = if take == left {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData(left - take)
                    };
                }
                state => {
                    let byte = bytes[0];
                    bytes = &bytes[1..];
                    self.state = chunked_step(state, byte);
                }
            }
        }
        None
    }

    /// Reads head bytes: how many of `bytes` were used, and the framing that follows the
    /// head once it is complete.
    fn head(&mut self, bytes: &[u8]) -> (usize, Option<(Head, Seen)>) {
        // Most heads arrive whole in one read: parse them in place.
        if self.partial_head.is_empty() {
            match parse(bytes) {
                Parsed::Complete(length, head, seen) => {
                    self.heads += 1;
                    return (length, Some((head, seen)));
                }
                Parsed::Partial if bytes.len() <= self.max_head => {
                    self.partial_head.extend_from_slice(bytes);
                    return (bytes.len(), None);
                }
                Parsed::Partial | Parsed::Invalid => {
                    self.stop();
                    return (bytes.len(), None);
                }
            }
        }
        let before = self.partial_head.len();
        self.partial_head.extend_from_slice(bytes);
        match parse(&self.partial_head) {
            Parsed::Complete(length, head, seen) => {
                self.heads += 1;
                self.partial_head.clear();
                (length - before, Some((head, seen)))
            }
            Parsed::Partial if self.partial_head.len() <= self.max_head => (bytes.len(), None),
            Parsed::Partial | Parsed::Invalid => {
                self.stop();
                (bytes.len(), None)
            }
        }
    }
}

/// One byte of chunked framing, as hyper's decoder takes it; anything hyper refuses
/// (it then closes the connection) ends the watch.
fn chunked_step(state: State, byte: u8) -> State {
    let digit = char::from(byte).to_digit(16).map(u64::from);
    let grow = |value: u64, digit: u64| {
        value
            .checked_mul(16)
            .and_then(|value| value.checked_add(digit))
            .map_or(State::Done, State::ChunkSize)
    };
    match (state, byte) {
        (State::ChunkStart, _) => digit.map_or(State::Done, |digit| grow(0, digit)),
        (State::ChunkSize(value), _) if digit.is_some() => grow(value, digit.unwrap_or(0)),
        (State::ChunkSize(value) | State::ChunkSizeBlank(value), b'\t' | b' ') => {
            State::ChunkSizeBlank(value)
        }
        (State::ChunkSize(value) | State::ChunkSizeBlank(value), b';') => {
            State::ChunkExtension(value)
        }
        (
            State::ChunkSize(value) | State::ChunkSizeBlank(value) | State::ChunkExtension(value),
            b'\r',
        ) => State::ChunkSizeLf(value),
        (State::ChunkExtension(_), b'\n') => State::Done,
        (State::ChunkExtension(value), _) => State::ChunkExtension(value),
        (State::ChunkSizeLf(0), b'\n') => State::EndCr,
        (State::ChunkSizeLf(value), b'\n') => State::ChunkData(value),
        (State::ChunkDataCr, b'\r') => State::ChunkDataLf,
        (State::ChunkDataLf, b'\n') => State::ChunkStart,
        (State::EndCr, b'\r') => State::EndLf,
        (State::Trailer, b'\r') => State::TrailerLf,
        (State::EndCr | State::Trailer, _) => State::Trailer,
        (State::TrailerLf, b'\n') => State::EndCr,
        (State::EndLf, b'\n') => State::Head,
        _ => State::Done,
    }
}

/// What a complete head means for the bytes after it.
enum Head {
    /// Both `Content-Length` and `Transfer-Encoding`.
    Ambiguous,
    /// The body's framing (`Head` again when there is no body).
    Body(State),
}

/// What else a head showed.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// An `Upgrade` field: the head asks for a protocol switch.
    upgrade: bool,
    /// A `#` in the request target.
    fragment: bool,
}

enum Parsed {
    /// The head's length, its framing, and what else it showed.
    Complete(usize, Head, Seen),
    Partial,
    Invalid,
}

/// Reads one request head the way hyper's parser frames it: lines end in LF or CRLF,
/// empty lines before the request line are skipped, an empty line ends the head. Only
/// the three fields that decide framing are looked at; a head the parser would refuse
/// ends the connection anyway, so it does not need to be recognised here.
fn parse(bytes: &[u8]) -> Parsed {
    let Some(start) = bytes.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return Parsed::Partial;
    };
    let mut content_length: Option<u64> = None;
    // A length hyper skips unread because Transfer-Encoding came first still counts.
    let mut length_field = false;
    let mut length_invalid = false;
    let mut chunked = None;
    let mut seen = Seen::default();
    let mut line_start = start;
    let mut request_line = true;
    // Every head passes through here, so lines are found with memchr and only lines that
    // can start one of the three names are looked at closely.
    let length = loop {
        let Some(newline) = memchr::memchr(b'\n', &bytes[line_start..]) else {
            return Parsed::Partial;
        };
        let line_end = line_start + newline;
        let line = &bytes[line_start..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line_start = line_end + 1;
        if request_line {
            // HTTP/2's preface and anything else that is not HTTP/1 end the watch.
            if !(line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")) {
                return Parsed::Invalid;
            }
            // The target lies between the first and the last space (a method may hold `#`).
            let target_start = memchr::memchr(b' ', line).map_or(0, |at| at + 1);
            let target_end = memchr::memrchr(b' ', line).unwrap_or(line.len());
            seen.fragment = target_start <= target_end
                && memchr::memchr(b'#', &line[target_start..target_end]).is_some();
            request_line = false;
            continue;
        }
        match line.first() {
            None => break line_start,
            Some(b'c' | b'C' | b't' | b'T' | b'u' | b'U') => {}
            Some(_) => continue,
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Parsed::Invalid;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            length_field = true;
            match std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
            {
                Some(length) => content_length = Some(length),
                None => length_invalid = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // As hyper reads it: the last field line decides whether it ends in chunked.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or(&[]);
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            seen.upgrade = true;
        }
    };
    if length_field && chunked.is_some() {
        return Parsed::Complete(length, Head::Ambiguous, seen);
    }
    if length_invalid {
        return Parsed::Invalid;
    }
    let head = match (content_length, chunked) {
        (Some(_), Some(_)) => Head::Ambiguous,
        // A body hyper will not read as chunked is a request it refuses.
        (None, Some(false)) => return Parsed::Invalid,
        (None, Some(true)) => Head::Body(State::ChunkStart),
        (Some(0) | None, None) => Head::Body(State::Head),
        (Some(length), None) => Head::Body(State::Sized(length)),
    };
    // After a protocol switch the bytes are not HTTP: the tunnel stops the watch. A
    // refused switch leaves a plain request, so the watch goes on until told.
    Parsed::Complete(length, head, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> Option<u64> {
        let mut watch = FramingWatch::new(64 * 1024);
        chunks.iter().find_map(|chunk| watch.feed(chunk))
    }

    fn one_byte_at_a_time(bytes: &[u8]) -> Option<u64> {
        let mut watch = FramingWatch::new(64 * 1024);
        bytes.chunks(1).find_map(|byte| watch.feed(byte))
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const SIZED: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
    const CHUNKED: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n";
    const AMBIGUOUS: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    const AMBIGUOUS_TE_FIRST: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n";

    #[test]
    fn finds_the_ambiguous_head_by_number() {
        assert_eq!(feed_all(&[AMBIGUOUS]), Some(1));
        assert_eq!(feed_all(&[AMBIGUOUS_TE_FIRST]), Some(1));
        let unreadable_length =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4, 4\r\n\r\n0\r\n\r\n";
        assert_eq!(feed_all(&[unreadable_length]), Some(1));
        let stream = [GET, SIZED, CHUNKED, AMBIGUOUS].concat();
        assert_eq!(feed_all(&[&stream]), Some(4));
        assert_eq!(one_byte_at_a_time(&stream), Some(4));
    }

    #[test]
    fn bodies_that_look_like_heads_are_skipped() {
        let inner: &[u8] =
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let sized = [
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                inner.len()
            )
            .as_bytes(),
            inner,
        ]
        .concat();
        assert_eq!(feed_all(&[&sized]), None);
        assert_eq!(one_byte_at_a_time(&sized), None);
        let chunked = [
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                inner.len()
            )
            .as_bytes(),
            inner,
            b"\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(one_byte_at_a_time(&chunked), None);
        assert_eq!(feed_all(&[&chunked, &sized, AMBIGUOUS]), Some(3));
    }

    #[test]
    fn notes_where_an_upgrade_head_ends() {
        let upgrade =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let mut watch = FramingWatch::new(1024);
        watch.feed(GET);
        watch.feed(&upgrade[..10]);
        watch.feed(&upgrade[10..]);
        let end = (GET.len() + upgrade.len()) as u64;
        assert_eq!(watch.upgrade(), Some((2, end)));
        assert_eq!(watch.fed(), end);
        watch.feed(b"GET /admin HTTP/1.1\r\n");
        assert_eq!(watch.upgrade(), Some((2, end)));
        assert!(watch.fed() > end);
    }

    #[test]
    fn notes_heads_with_a_fragment() {
        let mut watch = FramingWatch::new(1024);
        watch.feed(GET);
        assert_eq!(watch.fragment(), None);
        watch.feed(b"GET /admin#/public HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(watch.fragment(), Some(2));
        watch.feed(b"GET /b#y HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(watch.fragment(), Some(2), "the first one counts");
        let mut method = FramingWatch::new(1024);
        method.feed(b"GE#T / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(method.fragment(), None);
    }

    #[test]
    fn chunked_bodies_end_where_hyper_ends_them() {
        // A bare LF does not end a trailer line for hyper, so this is one request.
        let trailer_lf = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\nGET /x HTTP/1.1\r\n\r\n";
        let mut watch = FramingWatch::new(1024);
        watch.feed(trailer_lf);
        assert_eq!(watch.heads, 1);
        // Leading zeros in a chunk size are fine however many there are.
        let zeros = [
            &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000005\r\nhello\r\n0\r\n\r\n"[..],
            AMBIGUOUS,
        ]
        .concat();
        assert_eq!(feed_all(&[&zeros]), Some(2));
        // A size line must end in CRLF.
        let mut bare = FramingWatch::new(1024);
        bare.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello");
        assert_eq!(bare.state, State::Done);
    }

    #[test]
    fn gives_up_on_what_it_cannot_follow() {
        assert_eq!(
            feed_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", AMBIGUOUS]),
            None
        );
        assert_eq!(feed_all(&[b"\x16\x03\x01garbage\r\n\r\n", AMBIGUOUS]), None);
        let mut watch = FramingWatch::new(64);
        assert_eq!(watch.feed(&[b'a'; 100]), None);
        assert_eq!(watch.feed(AMBIGUOUS), None);
        let mut tunnel = FramingWatch::new(1024);
        tunnel.feed(GET);
        tunnel.stop();
        assert_eq!(tunnel.feed(AMBIGUOUS), None);
    }

    /// Random bytes shaped like requests: the watch never panics, never grows its buffer
    /// past the limit, and stops for good once it gives up.
    #[test]
    fn random_input_never_panics() {
        const PIECES: [&[u8]; 16] = [
            b"GET / HTTP/1.1\r\n",
            b"POST /x HTTP/1.1\r\n",
            b"Host: a\r\n",
            b"Content-Length: 3\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Upgrade: websocket\r\n",
            b"\r\n",
            b"\n",
            b"abc",
            b"0\r\n",
            b"5;x\r\n",
            b"ffffffffffffffffff\r\n",
            b"#",
            b"\r",
            b"\x00\xff",
            b"PRI * HTTP/2.0\r\n",
        ];
        let mut random = crate::testing::Xorshift::new(0x2545_f491_4f6c_dd1d);
        let mut next = |bound: usize| random.below(bound);
        for _ in 0..5_000 {
            let mut watch = FramingWatch::new(256);
            for _ in 0..(1 + next(40)) {
                let piece = PIECES[next(PIECES.len())];
                let cut = next(piece.len() + 1);
                let _ = watch.feed(&piece[..cut]);
                let _ = watch.feed(&piece[cut..]);
                assert!(watch.partial_head.len() <= 256 + piece.len());
                if watch.state == State::Done {
                    assert!(watch.partial_head.is_empty());
                    assert_eq!(watch.feed(AMBIGUOUS), None);
                    break;
                }
            }
        }
    }
}
