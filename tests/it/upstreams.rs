//! Choosing targets and failing well: round robin, passive health with one safe retry,
//! 502 for unreachable upstreams and 504 for slow ones; the client's own faults (a body
//! too slow or malformed) are the client's: 408 and 400.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::support::*;

async fn upstream_names(gw: &TestGateway, count: usize) -> Vec<String> {
    let client = client();
    let mut names = Vec::new();
    for _ in 0..count {
        let response = client.request(get(&gw.url("/"))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        names.push(
            response.headers()["x-upstream"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    names
}

#[tokio::test]
async fn targets_take_turns() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = TestGateway::start(&config(&[a.url(), b.url()], "")).await;
    let names = upstream_names(&gw, 6).await;
    assert_eq!(names, ["a", "b", "a", "b", "a", "b"]);
}

#[tokio::test]
async fn a_refusing_target_is_retried_elsewhere_then_skipped() {
    let (dead, _reserved) = closed_port();
    let live = TestUpstream::start("live").await;
    let gw = TestGateway::start(&config(&[format!("http://{dead}"), live.url()], "")).await;
    let upload = Request::post(gw.url("/upload"))
        .body(Generated::new(100_000).boxed())
        .unwrap();
    // The first request lands on the dead target, is refused, and is retried with its
    // untouched body on the live one.
    let response = client().request(upload).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "100000");
    // Within the cool-down every request goes straight to the live target.
    let names = upstream_names(&gw, 6).await;
    assert!(names.iter().all(|n| n == "live"), "{names:?}");

    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_upstream_errors_total{kind=\"connect\",upstream=\"app\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "portcullis_requests_total{decision=\"allow\",reason=\"allowed\",route=\"main\"}"
        ),
        7.0
    );
}

#[tokio::test]
async fn a_target_is_tried_again_after_its_cool_down() {
    let (dead, _reserved) = closed_port();
    let live = TestUpstream::start("live").await;
    let yaml = config(&[format!("http://{dead}"), live.url()], "")
        .replace("timeout: 5s", "timeout: 5s\n    failure_cooldown: 1s");
    let gw = TestGateway::start(&yaml).await;
    upstream_names(&gw, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    upstream_names(&gw, 2).await;
    let metrics = gw.metrics().await;
    // Refused once before the cool-down and once after it.
    assert_eq!(
        metric(
            &metrics,
            "portcullis_upstream_errors_total{kind=\"connect\",upstream=\"app\"}"
        ),
        2.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    let (dead, _reserved) = closed_port();
    let gw = TestGateway::start(&config(&[format!("http://{dead}")], "")).await;
    let response = client().request(get(&gw.url("/x"))).await.unwrap();
    let body = expect_problem(response, StatusCode::BAD_GATEWAY, "upstream_unreachable").await;
    // The client learns nothing about our network.
    assert!(
        !body.to_string().contains(&dead.port().to_string()),
        "{body}"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_requests_total{decision=\"error\",reason=\"upstream_unreachable\",route=\"main\"}"
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let up = TestUpstream::start("slow").await;
    let yaml = config(&[up.url()], "").replace("timeout: 5s", "timeout: 200ms");
    let gw = TestGateway::start(&yaml).await;
    let response = client().request(get(&gw.url("/slow/10000"))).await.unwrap();
    let body = expect_problem(response, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout").await;
    assert!(body["detail"].as_str().unwrap().contains("200ms"), "{body}");
    // A body that arrived whole leaves the wait to the upstream: still a 504.
    let post = Request::post(gw.url("/slow/10000"))
        .body(Full::new(Bytes::from_static(b"whole")).boxed())
        .unwrap();
    let response = client().request(post).await.unwrap();
    expect_problem(response, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout").await;
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_upstream_errors_total{kind=\"timeout\",upstream=\"app\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn upstream_latency_is_observed() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    upstream_names(&gw, 3).await;
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_upstream_duration_seconds_count{upstream=\"app\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(&metrics, "portcullis_request_duration_seconds_count"),
        3.0
    );
}

#[tokio::test]
async fn a_long_upload_is_not_cut_off_while_bytes_move() {
    const SIZE: u64 = 32 * 1024 * 1024;
    let up = TestUpstream::start("slow-reader").await;
    // The upload takes well over the 500ms timeout, but never stalls that long.
    let yaml = config(&[up.url()], "").replace("timeout: 5s", "timeout: 500ms");
    let gw = TestGateway::start(&yaml).await;
    let upload = Request::post(gw.url("/upload-slowly"))
        .body(Generated::new(SIZE).boxed())
        .unwrap();
    let response = client().request(upload).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, SIZE.to_string());
}

#[tokio::test]
async fn upstream_connections_are_reused_for_chunked_and_sized_responses() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let client = client();
    for path in ["/download/10", "/", "/download/100000", "/", "/download/0"] {
        let response = client.request(get(&gw.url(path))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        body_text(response).await;
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_stalled_body_to_the_echo_upstream_times_out() {
    let yaml = config(&["builtin:echo".to_owned()], "").replace("timeout: 5s", "timeout: 300ms");
    let gw = TestGateway::start(&yaml).await;
    let answer = raw_exchange(
        gw.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab",
        std::time::Duration::from_secs(10),
    )
    .await;
    // The client is the slow one: a 408, not the upstream's 504.
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"reason\":\"body_timeout\""), "{answer}");
    assert!(answer.contains("300ms"), "{answer}");
}

#[tokio::test]
async fn a_target_that_never_accepts_times_out_on_connect() {
    // A listener that never accepts, with the smallest backlog: once the queue is full the
    // kernel drops further SYNs, so a connect hangs until the gateway gives up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..8 {
        let attempt = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        match attempt {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    let yaml = config(&[format!("http://{addr}")], "")
        .replace("timeout: 5s", "timeout: 5s\n    connect_timeout: 300ms");
    let gw = TestGateway::start(&yaml).await;
    let response = client().request(get(&gw.url("/"))).await.unwrap();
    expect_problem(response, StatusCode::BAD_GATEWAY, "upstream_unreachable").await;
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_upstream_errors_total{kind=\"connect\",upstream=\"app\"}"
        ),
        1.0
    );
    drop(queued);
    drop(listener);
}

#[tokio::test]
async fn a_trickled_body_does_not_hold_the_upstream_forever() {
    use tokio::io::AsyncWriteExt;
    let up = TestUpstream::start("a").await;
    let yaml = config(&[up.url()], "").replace("timeout: 5s", "timeout: 500ms");
    let gw = TestGateway::start(&yaml).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n")
        .await
        .unwrap();
    // A byte every 150ms: each arrives well within the timeout, but the body as a whole
    // makes no real progress.
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        if stream.write_all(b"x").await.is_err() {
            break;
        }
    }
    let answer = read_answer(&mut stream, 5).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"reason\":\"body_timeout\""), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // The client's slowness is not the upstream's: no upstream timeout is counted.
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_upstream_errors_total{kind=\"timeout\",upstream=\"app\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "portcullis_requests_total{decision=\"error\",reason=\"body_timeout\",route=\"main\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_malformed_body_found_after_the_head_went_upstream_is_a_400() {
    use tokio::io::AsyncWriteExt;
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
    // The fault must be found after the head reached the upstream.
    for _ in 0..250 {
        if !up.seen().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(up.seen().len(), 1, "the head went upstream");
    stream.write_all(b"zz\r\n").await.unwrap();
    let answer = read_answer(&mut stream, 5).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"reason\":\"bad_request\""), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // SECURITY: no anonymous client can fire the upstream's protocol-error alert.
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_upstream_errors_total{kind=\"protocol\",upstream=\"app\"}"
        ),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "portcullis_requests_total{decision=\"error\",reason=\"bad_request\",route=\"main\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn idle_upstream_connections_expire_after_keepalive_timeout() {
    let up = TestUpstream::start("a").await;
    let yaml =
        config(&[up.url()], "").replace("timeout: 5s", "timeout: 5s\n    keepalive_timeout: 1s");
    let gw = TestGateway::start(&yaml).await;
    upstream_names(&gw, 2).await;
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::Relaxed), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    upstream_names(&gw, 1).await;
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// An upstream that stops reading the body is the slow one: `504`, counted against it,
/// even while the client still has more to send.
#[tokio::test]
async fn an_upstream_that_stops_reading_the_body_is_a_504() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        // Reads the head and a little, then holds the connection without reading.
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 1024];
        let _ = stream.read(&mut first).await;
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        drop(stream);
    });
    let yaml = config(
        &[format!("http://{addr}")],
        "limits: { max_body_size: 1GiB }\n",
    )
    .replace("timeout: 5s", "timeout: 1s");
    let gw = TestGateway::start(&yaml).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        let _ = write
            .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 536870912\r\n\r\n")
            .await;
        // Pieces smaller than the gateway gathers before writing, with pauses between:
        // the gateway finds the client idle each time, then writes upstream, and that
        // write is what blocks. Bounded: 96 MiB at most, far more than loopback buffers.
        let piece = vec![b'x'; 12 * 1024];
        for _ in 0..8192 {
            if write.write_all(&piece).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    });
    let answer = read_answer(&mut read, 10).await;
    sender.abort();
    upstream.abort();
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer:.400}");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_upstream_errors_total{kind=\"timeout\",upstream=\"app\"}"
        ),
        1.0
    );
}

/// What `stream` sends until it closes, or until `seconds` pass.
async fn read_answer(stream: &mut (impl tokio::io::AsyncRead + Unpin), seconds: u64) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(seconds), read).await;
    String::from_utf8_lossy(&answer).into_owned()
}
