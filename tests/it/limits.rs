//! Limits that protect the gateway: 431, 413, slow heads, idle connections, the
//! connection limit, and the 400 and 404 answers.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// Sends `GET /` on a kept-alive connection; its answer must be a 200, within 5 s.
async fn get_ok(stream: &mut TcpStream, what: &str) {
    stream.write_all(GET).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 5s"))
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer}");
}

#[tokio::test]
async fn an_oversized_head_is_a_431() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "limits: { max_header_size: 2KiB }\n")).await;
    let request = Request::get(gw.url("/"))
        .header("cookie", "c".repeat(3000))
        .body(Empty::new().boxed())
        .unwrap();
    let response = client().request(request).await.unwrap();
    expect_problem(
        response,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "header_too_large",
    )
    .await;
    // Far past the limit the parser itself refuses, before any handler runs.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nCookie: {}\r\n\r\n",
        "c".repeat(64 * 1024)
    );
    let answer = raw_exchange(gw.addr, huge.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "limits: { max_body_size: 1KiB }\n")).await;
    // Declared too large: refused before anything goes upstream.
    let request = Request::post(gw.url("/upload"))
        .header("content-length", "2048")
        .body(Generated::new(2048).boxed())
        .unwrap();
    let response = client().request(request).await.unwrap();
    expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    assert!(up.seen().is_empty());

    // Chunked: counted while streaming.
    let chunked = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
        "x".repeat(0x800)
    );
    let answer = raw_exchange(gw.addr, chunked.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"reason\":\"body_too_large\""), "{answer}");

    // At the limit passes.
    let request = Request::post(gw.url("/upload"))
        .body(Generated::new(1024).boxed())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "1024");
}

#[tokio::test]
async fn a_slow_head_is_cut_off_but_an_idle_keep_alive_is_not() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(
        &[up.url()],
        "limits: { header_read_timeout: 400ms, idle_timeout: 30s }\n",
    ))
    .await;

    // Slowloris: half a head, then nothing. The shortest one fits in the bytes read to
    // tell HTTP/1 from HTTP/2.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let mut shortest = TcpStream::connect(gw.addr).await.unwrap();
    shortest.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();

    // A kept-alive connection that finished a request and then waits quietly.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    get_ok(&mut idle, "the first request").await;

    for stream in [&mut slow, &mut shortest] {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the slow head was not cut off");
    }

    // Well past the head timeout, the idle connection still serves its next request.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    get_ok(&mut idle, "the idle connection's next request").await;
}

#[tokio::test]
async fn a_slow_head_after_a_kept_alive_request_is_cut_off() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(
        &[up.url()],
        "limits: { header_read_timeout: 400ms, idle_timeout: 30s }\n",
    ))
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    get_ok(&mut stream, "the first request").await;
    // Quiet for a while (idleness is not a slow head), then half of the second head.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the slow second head was not cut off within 5s (idle_timeout is 30s)"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "cut off before its header_read_timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "limits: { idle_timeout: 300ms }\n")).await;
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the idle connection stayed open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_reloaded_idle_timeout_holds_for_new_connections_and_open_ones_keep_theirs() {
    let up = TestUpstream::start("a").await;
    // One worker: both connections go to the same accept loop, and so the same watchdog.
    let gw = TestGateway::start(&config(
        &[up.url()],
        "workers: 1\nlimits: { idle_timeout: 30s }\n",
    ))
    .await;
    let mut before = TcpStream::connect(gw.addr).await.unwrap();
    get_ok(&mut before, "the first request").await;

    let shorter = config(&[up.url()], "workers: 1\nlimits: { idle_timeout: 300ms }\n");
    gw.write(
        "gw.yaml",
        &format!("{shorter}\npolicy: {{ files: [policy.yaml], watch: false }}\n"),
    );
    assert_eq!(
        gw.admin(http::Method::POST, "/reload").await.0,
        StatusCode::OK
    );

    // A connection opened after the reload is closed after the new, shorter timeout
    // (with the old one, it would stay open past the 10s this waits).
    let after = raw_until_closed(gw.addr, GET, Duration::from_secs(10)).await;
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");

    // The one opened before keeps its 30s: quiet for longer than 300ms, it still serves.
    tokio::time::sleep(Duration::from_millis(600)).await;
    get_ok(
        &mut before,
        "a connection opened before the reload took the new idle timeout",
    )
    .await;
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_accept() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "limits: { max_connections: 2 }\n")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        get_ok(&mut stream, "a connection within the limit").await;
        held.push(stream);
    }
    let answer = raw_until_closed(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(answer, "", "a third connection must be closed unanswered");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, "portcullis_connections_rejected_total"),
        1.0
    );
    assert_eq!(metric(&metrics, "portcullis_connections_active"), 2.0);
    drop(held);
}

#[tokio::test]
async fn no_route_is_a_404() {
    let up = TestUpstream::start("a").await;
    let yaml = config(&[up.url()], "").replace(
        "routes:\n  - { id: main, path_prefix: /, upstream: app }",
        "routes:\n  - { id: main, host: api.example, path_prefix: /api, upstream: app }",
    );
    let gw = TestGateway::start(&yaml).await;
    for (host, path) in [
        ("api.example", "/web"),
        ("other.example", "/api"),
        ("api.example", "/apiary"),
    ] {
        let request = Request::get(gw.url(path))
            .header("host", host)
            .body(Empty::new().boxed())
            .unwrap();
        let response = client().request(request).await.unwrap();
        expect_problem(response, StatusCode::NOT_FOUND, "no_route").await;
    }
    let request = Request::get(gw.url("/api/v1"))
        .header("host", "API.example:443")
        .body(Empty::new().boxed())
        .unwrap();
    assert_eq!(
        client().request(request).await.unwrap().status(),
        StatusCode::OK
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_requests_total{decision=\"error\",reason=\"no_route\",route=\"-\"}"
        ),
        3.0
    );
}

#[tokio::test]
async fn ambiguous_hosts_are_a_400() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    for request in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a..b:99999999\r\n\r\n",
    ] {
        let answer = raw_exchange(gw.addr, request.as_bytes(), Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{request:?} → {answer}");
        assert!(
            answer.contains("\"reason\":\"bad_request\""),
            "{request:?} → {answer}"
        );
    }
    assert!(up.seen().is_empty());
    // HTTP/1.0 may omit Host; a route without a host pattern serves it.
    let answer = raw_exchange(gw.addr, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(2)).await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}

#[tokio::test]
async fn garbage_bytes_get_an_answer_or_a_close_never_a_hang() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(
        &[up.url()],
        "limits: { header_read_timeout: 1s }\n",
    ))
    .await;
    for bytes in [
        &b"\x00\x01\x02\xff\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        b"\r\n\r\n\r\n",
    ] {
        let answer = raw_until_closed(gw.addr, bytes, Duration::from_secs(10)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{bytes:?} → {answer}"
        );
    }
    // Still serving.
    assert_eq!(
        client().request(get(&gw.url("/"))).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_websocket_tunnel_keeps_its_connection_slot() {
    let (up, _upstream) = switching_upstream().await;
    let gw = TestGateway::start(&with_websocket(&config(
        &[format!("http://{up}")],
        "limits: { max_connections: 1 }\n",
    )))
    .await;
    let mut tunnel = TcpStream::connect(gw.addr).await.unwrap();
    tunnel
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tunnel.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"));

    let answer = raw_until_closed(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        answer, "",
        "the tunnel still holds the only connection slot"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, "portcullis_connections_active"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "portcullis_connections_rejected_total"),
        1.0
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_head_timeout() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(
        &[up.url()],
        "limits: { header_read_timeout: 300ms, idle_timeout: 60s }\n",
    ))
    .await;
    // Nothing at all, and half an HTTP/2 preface: both closed long before idle_timeout.
    for bytes in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let answer = raw_until_closed(gw.addr, bytes, Duration::from_secs(10)).await;
        assert_eq!(answer, "", "{bytes:?}");
    }
}

#[tokio::test]
async fn an_idle_websocket_tunnel_is_closed() {
    let (up, _upstream) = switching_upstream().await;
    let gw = TestGateway::start(&with_websocket(&config(
        &[format!("http://{up}")],
        "limits: { idle_timeout: 300ms }\n",
    )))
    .await;
    let answer = raw_until_closed(
        gw.addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let metrics = gw.metrics().await;
    assert_eq!(
        settled_metric(&gw, "portcullis_connections_active", 0.0).await,
        0.0,
        "{metrics}"
    );
}

/// An upstream that answers one upgrade request with 101 and then holds the tunnel open
/// without sending anything.
async fn switching_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = vec![0u8; 4096];
        let _ = stream.read(&mut head).await.unwrap();
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    (addr, task)
}

/// Every piece of a body costs a frame through the gateway: a megabyte in one-byte chunks
/// is refused once its pieces pass what their bytes pay for, long before a million.
#[tokio::test]
async fn a_body_in_too_many_tiny_chunks_is_refused() {
    let gw = TestGateway::start(&config(&["builtin:echo".to_owned()], "")).await;
    let chunked = |count: usize, size: usize| {
        let mut request =
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        let chunk = format!("{size:x}\r\n{}\r\n", "x".repeat(size));
        for _ in 0..count {
            request.extend_from_slice(chunk.as_bytes());
        }
        request.extend_from_slice(b"0\r\n\r\n");
        request
    };
    // Within the free pieces, and large chunks: both read whole.
    for (count, size) in [(10_000, 1), (100, 10 * 1024)] {
        let answer =
            raw_until_closed(gw.addr, &chunked(count, size), Duration::from_secs(10)).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{count}×{size}: {answer:.300}"
        );
        assert!(
            answer.contains(&format!("\"body_bytes\": {}", count * size)),
            "{answer}"
        );
    }
    let answer = raw_until_closed(gw.addr, &chunked(1 << 20, 1), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.300}");
    assert!(answer.contains("too many small pieces"), "{answer}");
}

/// A body of `count` one-byte DATA frames, for HTTP/2.
struct TinyFrames(usize);

impl http_body::Body for TinyFrames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"x",
        )))))
    }
}

/// HTTP/2 bodies are held to the same rule, counting DATA frames as pieces. (The h2
/// library also ends a connection whose peer buffers a flood of small frames faster than
/// they are read, but whether it does depends on timing.)
#[tokio::test]
async fn an_http2_body_in_a_flood_of_tiny_frames_is_refused() {
    let gw = TestGateway::start(&config(&["builtin:echo".to_owned()], "")).await;
    let h2: hyper_util::client::legacy::Client<_, ClientBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let post = |frames: usize| {
        Request::post(gw.url("/upload"))
            .body(TinyFrames(frames).boxed())
            .unwrap()
    };
    let response = h2.request(post(1_000)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_text(response).await.contains("\"body_bytes\": 1000"));
    // Refused with a 400 that says why, or (when h2 saw the flood first) a reset.
    if let Ok(response) = h2.request(post(100_000)).await {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_text(response).await;
        assert!(body.contains("too many small pieces"), "{body}");
    }
}

/// Unfinished heads share one memory budget: when it runs out, the slowest heads are cut,
/// their connections closed, and memory held never passes the budget.
#[tokio::test]
async fn unfinished_heads_past_header_memory_are_cut_slowest_first() {
    const BUDGET: f64 = 1024.0 * 1024.0;
    let gw = TestGateway::start(&config(
        &["builtin:echo".to_owned()],
        "limits: { header_memory: 1MiB, header_read_timeout: 60s, idle_timeout: 60s }\n",
    ))
    .await;
    let held = async || metric(&gw.metrics().await, "portcullis_header_memory_bytes");

    // Four trickling heads, each holding at least a read's worth of memory (8 KiB).
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let mut charged = false;
    for _ in 0..250 {
        if held().await >= 4.0 * 8192.0 {
            charged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(charged, "the four slow heads were never charged");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Heads that arrive fast, 60 KB at once, sixteen of them: far past the budget.
    let part = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Fill: {}\r\n",
        "x".repeat(60_000)
    );
    let mut fast = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        // One cut while it is still being written is counted with the closed ones.
        let _ = stream.write_all(part.as_bytes()).await;
        fast.push(stream);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The slow heads went first.
    for stream in &mut slow {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a slow head outlived the budget");
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    // The newest head, the fastest, finishes and is answered.
    let mut newest = fast.pop().unwrap();
    newest
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), newest.read_to_end(&mut answer))
        .await
        .expect("the newest head is answered")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));

    // Every cut is a closed connection, and what stays is inside the budget.
    let metrics = gw.metrics().await;
    let cuts = metric(&metrics, "portcullis_header_memory_cuts_total");
    assert!(cuts > 4.0, "{metrics}");
    let mut closed = 0;
    for _ in 0..100 {
        closed = 0;
        for stream in &fast {
            let mut byte = [0u8; 1];
            if matches!(stream.try_read(&mut byte), Ok(0)) {
                closed += 1;
            }
        }
        if f64::from(closed) + 4.0 >= cuts {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f64::from(closed) + 4.0, cuts);
    let in_use = metric(&metrics, "portcullis_header_memory_bytes");
    assert!(in_use > 0.0 && in_use <= BUDGET, "{in_use} bytes held");
}

/// Bytes of the next head that arrive while a request is answered count against the
/// budget from then on, not only once the head is read.
#[tokio::test]
async fn a_pipelined_head_is_charged_while_the_request_before_it_is_answered() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(
        &[up.url()],
        "limits: { header_read_timeout: 4s, idle_timeout: 60s }\n",
    ))
    .await;
    let held = async || metric(&gw.metrics().await, "portcullis_header_memory_bytes");
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            b"GET /slow/3000 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX-Next: ",
        )
        .await
        .unwrap();
    // The watchdog ticks every second here; the call is watched from its first tick.
    let mut answer = vec![0u8; 4096];
    let mut charged_during_the_call = false;
    let first = loop {
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut answer)).await {
            Ok(read) => break read.unwrap(),
            Err(_) => charged_during_the_call |= held().await > 0.0,
        }
    };
    assert!(String::from_utf8_lossy(&answer[..first]).starts_with("HTTP/1.1 200"));
    assert!(
        charged_during_the_call,
        "the pipelined bytes were never charged"
    );
    stream.write_all(b"1\r\n\r\n").await.unwrap();
    let second = stream.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..second]).starts_with("HTTP/1.1 200"));
    assert_eq!(held().await, 0.0, "a head read whole gives its memory back");
}

/// An HTTP/2 connection quiet for two watchdog ticks frees its buffers and empties its
/// HPACK encoder table (vendor/h2/PATCHES.md). Its next requests are answered in full:
/// the client's decoder follows the table's size updates, and the upstream's fields
/// arrive intact each time.
#[tokio::test]
async fn an_http2_connection_that_went_idle_serves_its_next_requests_in_full() {
    let up = TestUpstream::start("a").await;
    // Ticks every 250ms.
    let gw = TestGateway::start(&config(
        &[up.url()],
        "limits: { header_read_timeout: 1s }\n",
    ))
    .await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    for round in ["/one", "/two", "/three"] {
        let request = Request::get(gw.url(round))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
            .await
            .unwrap_or_else(|_| panic!("{round}: no answer within 5s"))
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{round}");
        let headers = response.headers();
        assert_eq!(headers["x-upstream"], "a", "{round}");
        assert_eq!(headers["x-request-id"].len(), 26, "{round}");
        let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "{round}");
        assert_eq!(body_text(response).await, "hello from a", "{round}");
        // Past two ticks with nothing sent: the connection is idle.
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert!(!connection.is_finished(), "the connection stayed open");
    let targets: Vec<_> = up.seen().iter().map(|seen| seen.target.clone()).collect();
    assert_eq!(targets, ["/one", "/two", "/three"]);
}
