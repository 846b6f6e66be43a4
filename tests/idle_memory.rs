//! What one idle keep-alive connection holds in the gateway, HTTP/1.1 and HTTP/2, counted
//! in heap bytes by this test binary's allocator, not read from RSS. A binary of its own,
//! and its tests take turns: nothing else allocates while one counts.

#![allow(
    clippy::unwrap_used,
    reason = "a test that meets an unexpected error should fail loudly"
)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Idle connections counted together, so that one-off allocations (a timer wheel's
/// slots, a map growing) weigh little on each.
const CONNECTIONS: usize = 300;

/// The most heap an idle HTTP/1.1 keep-alive connection may hold: issue 20's goal of 2 KB,
/// nginx's size. Idle, a connection keeps its task, its socket's registration, its shared
/// facts and its entry in the watchdog's list (about 1.1 KiB in 8 allocations); a buffer
/// or a request exchange's state kept past going idle would break this (22 KiB are held
/// when connections never go idle).
const HTTP1_CEILING_BYTES: isize = 2 * 1024;

/// The most heap an idle HTTP/2 connection may hold: issue 20's goal of 4 KB. Idle, it
/// keeps hyper's and h2's connection state (1.3 KiB), h2's stream bookkeeping, the HPACK
/// entries the client added, and what an HTTP/1.1 connection keeps: about 2.9 KiB in 14
/// allocations. h2's buffers (28 KiB) or its encoder table kept past going idle would
/// break this (36 KiB are held when they are kept).
const HTTP2_CEILING_BYTES: isize = 4 * 1024;

/// One test counts at a time.
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REQUEST: &[u8] = b"GET /idle HTTP/1.1\r\nHost: gateway.test\r\nUser-Agent: idle-memory-test\r\nAccept: */*\r\n\r\n";

/// Sends one HTTP/1.1 request on `stream` and reads its whole answer, without allocating.
fn exchange_http1(stream: &mut TcpStream) {
    stream.write_all(REQUEST).unwrap();
    let mut answer = [0u8; 16 * 1024];
    let mut read = 0;
    loop {
        let got = stream.read(&mut answer[read..]).unwrap();
        assert!(got > 0, "the gateway closed the connection");
        read += got;
        let text = std::str::from_utf8(&answer[..read]).unwrap();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        let length: usize = (text[..head_end].split("\r\n"))
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("the echo answers with a length");
        if read >= head_end + 4 + length {
            return;
        }
    }
}

/// A connection to the gateway whose reads give up after 10 s.
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A frame: its 9-byte header, then `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = length[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// Sends `GET /idle` on HTTP/2 stream `id`, after the connection preface when `id` is the
/// first stream, and reads frames until the answer ends; the answer must be a 200.
/// Allocates only what it frees again.
fn exchange_http2(stream: &mut TcpStream, id: u32) {
    const HEADERS: u8 = 0x1;
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    // :method GET, :scheme http, :path from the static table; :path /idle and
    // :authority as literals with incremental indexing, so that the client adds entries
    // to the gateway's HPACK decoder table, as browsers do.
    let mut block = vec![0x82, 0x86, 0x44, 5];
    block.extend(b"/idle");
    block.extend([0x41, 12]);
    block.extend(b"gateway.test");
    let mut out = Vec::new();
    if id == 1 {
        out.extend(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        out.extend(frame(SETTINGS, 0, 0, b""));
    }
    out.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
    stream.write_all(&out).unwrap();

    let mut read = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut status_seen = false;
    loop {
        while read.len() >= 9 {
            let length =
                usize::from(read[0]) << 16 | usize::from(read[1]) << 8 | usize::from(read[2]);
            if read.len() < 9 + length {
                break;
            }
            let (kind, flags) = (read[3], read[4]);
            let on = u32::from_be_bytes([read[5], read[6], read[7], read[8]]) & 0x7fff_ffff;
            let payload = &read[9..9 + length];
            assert_ne!(kind, GOAWAY, "the gateway sent GOAWAY");
            if kind == SETTINGS && flags & 0x1 == 0 {
                stream.write_all(&frame(SETTINGS, 0x1, 0, b"")).unwrap();
            }
            if kind == HEADERS && on == id {
                // `:status: 200` is entry 8 of the static table, after any dynamic
                // table size updates (`001xxxxx`, with a longer integer after 0x3f).
                let mut at = 0;
                while payload[at] & 0xe0 == 0x20 {
                    at += 1;
                    if payload[at - 1] == 0x3f {
                        while payload[at] & 0x80 != 0 {
                            at += 1;
                        }
                        at += 1;
                    }
                }
                assert_eq!(payload[at], 0x88, "stream {id} was not answered 200");
                status_seen = true;
            }
            let ended = on == id && flags & END_STREAM != 0 && matches!(kind, 0x0 | HEADERS);
            read.drain(..9 + length);
            if ended {
                assert!(status_seen);
                return;
            }
        }
        let got = stream.read(&mut chunk).unwrap();
        assert!(got > 0, "the gateway closed the connection");
        read.extend(&chunk[..got]);
    }
}

/// Bytes allocated and not freed since `region` began, and in how many allocations.
fn held(region: &Region<'_, std::alloc::System>) -> (isize, isize) {
    let change = region.change();
    // A reallocation's growth or shrinking is counted in the bytes allocated or freed.
    (
        change.bytes_allocated as isize - change.bytes_deallocated as isize,
        change.allocations as isize - change.deallocations as isize,
    )
}

/// Starts a gateway in front of the built-in echo, opens `CONNECTIONS` connections that
/// each get one answer with `exchange` and then stay idle, and returns the heap bytes
/// and allocations they hold. Each idle connection then gets a second answer.
async fn idle_connections_hold(
    ceiling: isize,
    exchange: fn(&mut TcpStream, u32),
) -> (isize, isize) {
    let _turn = COUNTING.lock().await;
    let dir =
        std::env::temp_dir().join(format!("portcullis-idle-{}-{ceiling}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.yaml"),
        "rules: [{ id: all, effect: allow }]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("gw.yaml"),
        "listen: [{ addr: 127.0.0.1:0 }]
admin: { addr: 127.0.0.1:0 }
workers: 1
upstreams: { echo: { targets: [builtin:echo] } }
routes: [{ id: all, upstream: echo }]
policy: { files: [policy.yaml], watch: false }
log: { decisions: off, recent: 0 }
limits: { header_read_timeout: 1s }
",
    )
    .unwrap();
    let config = portcullis::config::load(&dir.join("gw.yaml")).unwrap();
    let gateway = portcullis::app::Gateway::start(&config).await.unwrap();
    let addr: SocketAddr = gateway.listen_addrs()[0];

    let counted = tokio::task::spawn_blocking(move || {
        // Connections that came and went first: whatever a worker sets up once is set up.
        for _ in 0..20 {
            let mut stream = connect(addr);
            exchange(&mut stream, 1);
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut idle = Vec::with_capacity(CONNECTIONS);
        let region = Region::new(GLOBAL);
        for _ in 0..CONNECTIONS {
            let mut stream = connect(addr);
            exchange(&mut stream, 1);
            idle.push(stream);
        }
        // Every connection idle: an HTTP/1.1 connection goes idle at the idle
        // watchdog's first tick after its request, an HTTP/2 one at the second; a tick
        // comes every quarter of `header_read_timeout` here (250ms). Four ticks, then
        // up to 9 s more on a slow machine.
        std::thread::sleep(Duration::from_millis(1000));
        let mut counted = held(&region);
        for _ in 0..36 {
            if counted.0 / CONNECTIONS as isize <= ceiling {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
            counted = held(&region);
        }
        // Idle connections wake for their next request.
        for stream in &mut idle {
            exchange(stream, 3);
        }
        drop(idle);
        counted
    })
    .await
    .unwrap();

    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    counted
}

fn assert_within(what: &str, ceiling: isize, (bytes, allocations): (isize, isize)) {
    let each = bytes / CONNECTIONS as isize;
    let pieces = allocations as f64 / CONNECTIONS as f64;
    eprintln!("an idle {what} connection holds {each} bytes of heap in {pieces:.1} allocations");
    assert!(
        each <= ceiling,
        "an idle {what} connection holds {each} bytes of heap in {pieces:.1} allocations (at most {ceiling})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_idle_keep_alive_connection_holds_no_buffers() {
    let held = idle_connections_hold(HTTP1_CEILING_BYTES, |stream, _| exchange_http1(stream)).await;
    assert_within("HTTP/1.1", HTTP1_CEILING_BYTES, held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_idle_http2_connection_holds_no_buffers() {
    let held = idle_connections_hold(HTTP2_CEILING_BYTES, exchange_http2).await;
    assert_within("HTTP/2", HTTP2_CEILING_BYTES, held);
}
