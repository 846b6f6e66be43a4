//! What the gateway accepts from an upstream on the wire: every framing of a response,
//! interim responses, and the cases where a pooled connection must not be used again
//! because where the last response ended is in doubt.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// One scripted answer: the bytes written for a request, then whether to close.
struct Answer {
    bytes: Vec<u8>,
    close: bool,
}

fn answer(text: &str) -> Answer {
    Answer {
        bytes: text.as_bytes().to_vec(),
        close: false,
    }
}

fn answer_and_close(text: &str) -> Answer {
    Answer {
        bytes: text.as_bytes().to_vec(),
        close: true,
    }
}

/// An upstream that answers each request head, on whatever connection it arrives, with
/// the next scripted answer, and counts connections and requests.
struct ScriptedUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedUpstream {
    async fn start(script: Vec<Answer>) -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), heads.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, script.clone(), seen.clone()));
            }
        });
        ScriptedUpstream {
            addr,
            connections,
            heads,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Arc<Mutex<VecDeque<Answer>>>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request head (these tests send no request bodies).
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        heads
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head).into_owned());
        let Some(answer) = script.lock().unwrap().pop_front() else {
            return;
        };
        if stream.write_all(&answer.bytes).await.is_err() || answer.close {
            return;
        }
    }
}

/// Sends GETs one after another on one client connection; returns each status and body.
async fn fetch_all(gw: &TestGateway, requests: &[(&str, &str)]) -> Vec<(StatusCode, String)> {
    let client = client();
    let mut answers = Vec::new();
    for (method, path) in requests {
        let request = Request::builder()
            .method(*method)
            .uri(gw.url(path))
            .body(Full::new(bytes::Bytes::new()).boxed())
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        answers.push((status, body_text(response).await));
    }
    answers
}

#[tokio::test]
async fn every_framing_is_passed_on_over_kept_alive_connections() {
    let up = ScriptedUpstream::start(vec![
        answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsized"),
        answer(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             5;ext=1\r\nchunk\r\n6\r\ned and\r\n9\r\n trailers\r\n0\r\nx-sum: 1\r\n\r\n",
        ),
        answer("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"),
        answer("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n"),
        answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nfinally"),
        answer("HTTP/1.1 304 Not Modified\r\n\r\n"),
        answer("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nkeep-alive: timeout=5\r\ncontent-length: 4\r\n\r\nlast"),
    ])
    .await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let answers = fetch_all(
        &gw,
        &[
            ("GET", "/sized"),
            ("GET", "/chunked"),
            ("HEAD", "/head"),
            ("GET", "/no-content"),
            ("GET", "/interim"),
            ("GET", "/not-modified"),
            ("GET", "/last"),
        ],
    )
    .await;
    let expected = [
        (StatusCode::OK, "sized"),
        (StatusCode::OK, "chunked and trailers"),
        (StatusCode::OK, ""),
        (StatusCode::NO_CONTENT, ""),
        (StatusCode::OK, "finally"),
        (StatusCode::NOT_MODIFIED, ""),
        (StatusCode::OK, "last"),
    ];
    let answers: Vec<(StatusCode, &str)> = answers.iter().map(|(s, b)| (*s, b.as_str())).collect();
    assert_eq!(answers, expected);
    // Every response ended exactly; but an answer to HEAD and a 204 that announce a body
    // may be followed by it, so each closes its connection: three served all seven.
    assert_eq!(up.connections(), 3);
    let heads = up.heads();
    assert_eq!(heads.len(), 7);
    assert!(
        heads[2].starts_with("HEAD /head HTTP/1.1\r\n"),
        "{}",
        heads[2]
    );
    assert!(
        heads[2].contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{}",
        heads[2]
    );
}

/// What an HTTP/1.1 client reads is the upstream's fields as they came (names in their
/// letter case, in their order, repeated ones apart) less the hop-by-hop ones, then the
/// gateway's request id and framing.
#[tokio::test]
async fn response_fields_reach_the_client_as_the_upstream_wrote_them() {
    let up = ScriptedUpstream::start(vec![
        answer(
            "HTTP/1.1 200 OK\r\nX-Mixed-Case: 1\r\nSet-Cookie: a=1\r\nConnection: X-Private\r\n\
             X-Private: secret\r\nx-request-id: upstream\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
             Keep-Alive: timeout=5\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
        ),
        answer("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"),
        answer("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"),
        answer("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
    ])
    .await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let exchange = |method: &str| {
        let request = format!("{method} /fields HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let addr = gw.addr;
        async move { raw_until_closed(addr, request.as_bytes(), Duration::from_secs(5)).await }
    };

    let answer = exchange("GET").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "ok");
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines.len(), 8, "{head}");
    assert_eq!(
        lines[..5],
        [
            "HTTP/1.1 200 OK",
            "X-Mixed-Case: 1",
            "Set-Cookie: a=1",
            "Date: Thu, 01 Jan 1970 00:00:00 GMT",
            "set-cookie: b=2",
        ]
    );
    let request_id = lines[5].strip_prefix("x-request-id: ").expect(head);
    assert_eq!(request_id.len(), 26, "{head}");
    assert_eq!(lines[6..], ["content-length: 2", "connection: close"]);

    // A HEAD and a 304 keep the length of what a GET would get; a 204 has none.
    let head_answer = exchange("HEAD").await;
    assert!(
        head_answer.contains("\r\nContent-Length: 4\r\n"),
        "{head_answer}"
    );
    assert!(head_answer.ends_with("\r\n\r\n"), "{head_answer}");
    let no_content = exchange("GET").await;
    assert!(no_content.starts_with("HTTP/1.1 204 "), "{no_content}");
    assert!(
        !no_content.to_ascii_lowercase().contains("content-length"),
        "{no_content}"
    );
    let not_modified = exchange("GET").await;
    assert!(not_modified.starts_with("HTTP/1.1 304 "), "{not_modified}");
    assert!(
        not_modified.contains("\r\nContent-Length: 9\r\n"),
        "{not_modified}"
    );
    assert!(not_modified.ends_with("\r\n\r\n"), "{not_modified}");
}

#[tokio::test]
async fn bytes_after_a_response_never_reach_the_next_client() {
    // The first answer carries a second response after its end: were the connection
    // reused, the next request would be answered with it.
    let up = ScriptedUpstream::start(vec![
        answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"),
        answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh"),
        answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"),
        answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh"),
    ])
    .await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let answers = fetch_all(
        &gw,
        &[("GET", "/1"), ("GET", "/2"), ("GET", "/3"), ("GET", "/4")],
    )
    .await;
    let bodies: Vec<&str> = answers.iter().map(|(_, body)| body.as_str()).collect();
    assert_eq!(bodies, ["ok", "fresh", "ok", "fresh"]);
    assert_eq!(up.connections(), 3);
}

#[tokio::test]
async fn a_body_that_ends_with_the_connection_is_passed_on_and_the_connection_not_reused() {
    let up = ScriptedUpstream::start(vec![
        answer_and_close("HTTP/1.1 200 OK\r\n\r\nuntil the close"),
        answer("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nclose"),
        answer("HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\n1.0!"),
        answer("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone"),
    ])
    .await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let answers = fetch_all(
        &gw,
        &[("GET", "/1"), ("GET", "/2"), ("GET", "/3"), ("GET", "/4")],
    )
    .await;
    let bodies: Vec<&str> = answers.iter().map(|(_, body)| body.as_str()).collect();
    assert_eq!(bodies, ["until the close", "close", "1.0!", "done"]);
    assert_eq!(up.connections(), 4, "none of the first three may be reused");
}

#[tokio::test]
async fn ambiguous_or_malformed_response_heads_are_a_502() {
    for head in [
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
        // No coding but `chunked` is decoded: gzip bytes would pass for plain data.
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n\x1f\x08",
        "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        // Responses without a body are framed as strictly as those with one.
        "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
        "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 0\r\n\r\n",
        "HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        expect_protocol_502(head).await;
    }
}

/// A client's GET, answered by an upstream that writes `answer_text`, gets a 502 that
/// explains itself, counted as the upstream breaking the protocol (not a connect failure).
async fn expect_protocol_502(answer_text: &str) {
    let up = ScriptedUpstream::start(vec![answer(answer_text)]).await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let response = client().request(get(&gw.url("/"))).await.unwrap();
    expect_problem(response, StatusCode::BAD_GATEWAY, "upstream_unreachable").await;
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_upstream_errors_total{kind=\"protocol\",upstream=\"app\"}"
        ),
        1.0,
        "{answer_text:?}"
    );
}

#[tokio::test]
async fn an_answer_to_head_with_ambiguous_lengths_is_a_502() {
    for head in [
        "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 5x\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        let up = ScriptedUpstream::start(vec![answer(head)]).await;
        let gw = TestGateway::start(&config(&[up.url()], "")).await;
        let request = Request::head(gw.url("/"))
            .body(Full::new(bytes::Bytes::new()).boxed())
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{head:?}");
        assert_eq!(
            response.headers()["x-portcullis-reason"],
            "upstream_unreachable"
        );
    }
}

#[tokio::test]
async fn the_upstream_gets_the_gateways_own_framing_and_a_host() {
    let script = (0..3)
        .map(|_| answer("HTTP/1.1 204 No Content\r\n\r\n"))
        .collect();
    let up = ScriptedUpstream::start(script).await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    for request in [
        "GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\nConnection: close\r\n\r\n",
        "DELETE /b HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 0\r\nConnection: close\r\n\r\n",
        // HTTP/1.0 allows a request without a host; HTTP/1.1, which the upstream gets,
        // does not.
        "GET /c HTTP/1.0\r\n\r\n",
    ] {
        let answer = raw_until_closed(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 204"), "{request:?}: {answer}");
    }
    let heads = up.heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    for head in &heads[..2] {
        let lengths: Vec<&str> = head
            .lines()
            .filter(|line| line.to_ascii_lowercase().starts_with("content-length"))
            .collect();
        assert_eq!(lengths, ["content-length: 0"], "{head}");
    }
    assert!(
        heads[2].contains(&format!("\r\nhost: {}\r\n", up.addr)),
        "{}",
        heads[2]
    );
}

#[tokio::test]
async fn a_body_malformed_before_its_first_byte_is_a_502_with_a_body() {
    for answer_text in [
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        // A bad size line followed by well-formed chunks: decoding must not resume.
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n3\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        // Trailer fields are parsed as strictly as head fields.
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-sum : 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-sum: \x00\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nHTTP/1.1 200 OK\r\n\r\n",
    ] {
        // The fault arrived with the head, so nothing of the response has left: the client
        // gets an answer that explains itself, not a connection closed without one.
        expect_protocol_502(answer_text).await;
    }
}

#[tokio::test]
async fn a_body_cut_short_or_malformed_fails_the_client_response() {
    for answer_text in [
        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
    ] {
        let up = ScriptedUpstream::start(vec![answer_and_close(answer_text)]).await;
        let gw = TestGateway::start(&config(&[up.url()], "")).await;
        // Whether the head left before the fault was seen depends on when the close
        // arrives; either way the client gets an answer (never a bare close), and never
        // a body that simply ends.
        let response = client().request(get(&gw.url("/"))).await.unwrap();
        if response.status() == StatusCode::BAD_GATEWAY {
            expect_problem(response, StatusCode::BAD_GATEWAY, "upstream_unreachable").await;
            continue;
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.into_body().collect().await.is_err(),
            "{answer_text:?}: the client must see the body fail, not end"
        );
    }
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_replaced() {
    // The upstream answers with keep-alive and then closes anyway, as servers do when
    // their own idle timeout is shorter than ours.
    let up = ScriptedUpstream::start(vec![
        answer_and_close("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"),
        answer("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"),
    ])
    .await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let first = fetch_all(&gw, &[("GET", "/1")]).await;
    // Let the close arrive before the next request. A POST is never sent twice, so only
    // noticing the close before sending (not the retry of safe methods) can answer it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = fetch_all(&gw, &[("POST", "/2")]).await;
    assert_eq!(first[0], (StatusCode::OK, "first".to_owned()));
    assert_eq!(second[0], (StatusCode::OK, "second".to_owned()));
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn an_answer_before_the_upload_ends_is_passed_on() {
    // The upstream refuses on seeing the head and never reads the body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the head arrives");
            head.extend_from_slice(&chunk[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!")
            .await
            .unwrap();
        // Hold the connection without reading, as a server busy elsewhere would.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let gw = TestGateway::start(&config(&[format!("http://{addr}")], "")).await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    let size = 32 * 1024 * 1024;
    let head = format!("POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: {size}\r\n\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    // Feed the body until the gateway stops taking it; the answer must come regardless.
    let feeder = tokio::spawn(async move {
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..size / block.len() {
            if writer.write_all(&block).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(4), async {
        while !String::from_utf8_lossy(&answer).contains("too big!") {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer within 4s: {answer:?}");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with("too big!"), "{answer}");
    feeder.abort();
    upstream.abort();
}

/// An upstream like Python's `http.server` with `do_HEAD = do_GET`: it answers HEAD, 204
/// and 304 with a head that announces a body, and writes that body anyway, in a later
/// segment. Here the late bytes are a whole forged response naming the bodiless request,
/// so a pooled connection reused before they arrive would hand them to another client.
/// Every other request is answered with its own path.
async fn late_bytes_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let mut words = head.split(' ');
                    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    let own = |path: &str| {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                            path.len()
                        )
                    };
                    let bodiless = if method == "HEAD" {
                        Some("HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n".to_owned())
                    } else if path.starts_with("/204") {
                        Some("HTTP/1.1 204 No Content\r\ncontent-length: 40\r\n\r\n".to_owned())
                    } else if path.starts_with("/304") {
                        Some(
                            "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"
                                .to_owned(),
                        )
                    } else {
                        None
                    };
                    let Some(bodiless) = bodiless else {
                        if stream.write_all(own(path).as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    if stream.write_all(bodiless.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if stream.write_all(own(path).as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// SECURITY: under concurrent load, a response a bodiless answer's late bytes forged never
/// reaches a client: a pooled connection goes back to the pool only when nothing more can
/// belong to the response it carried.
#[tokio::test]
async fn late_bytes_after_bodiless_responses_never_reach_another_client() {
    let (addr, upstream) = late_bytes_upstream().await;
    let gw = TestGateway::start(&config(&[format!("http://{addr}")], "")).await;
    let mut clients = tokio::task::JoinSet::new();
    for client_no in 0..8 {
        let url = gw.url("");
        clients.spawn(async move {
            let client = client();
            let mut wrong = Vec::new();
            for round in 0..25 {
                let bodiless = match round % 3 {
                    0 => ("HEAD", format!("/head-{client_no}-{round}")),
                    1 => ("GET", format!("/204-{client_no}-{round}")),
                    _ => ("GET", format!("/304-{client_no}-{round}")),
                };
                let own = format!("/own-{client_no}-{round}");
                for (method, path) in [(bodiless.0, bodiless.1.as_str()), ("GET", own.as_str())] {
                    let request = Request::builder()
                        .method(method)
                        .uri(format!("{url}{path}"))
                        .body(Full::new(bytes::Bytes::new()).boxed())
                        .unwrap();
                    let response = client.request(request).await.unwrap();
                    let status = response.status();
                    let body = body_text(response).await;
                    let expected = if path.starts_with("/own") { path } else { "" };
                    if body != expected || (path.starts_with("/own") && status != StatusCode::OK) {
                        wrong.push(format!("{method} {path}: {status} {body:?}"));
                    }
                }
            }
            wrong
        });
    }
    let mut wrong = Vec::new();
    while let Some(done) = clients.join_next().await {
        wrong.extend(done.unwrap());
    }
    upstream.abort();
    assert!(
        wrong.is_empty(),
        "{} answers went wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// An idle pooled connection on which bytes arrive that nobody asked for is closed, not
/// reused: the next request goes on a new connection.
#[tokio::test]
async fn an_idle_connection_that_turns_readable_is_not_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let mut held = Vec::new();
        for answer in ["ok", "fresh"] {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await.unwrap() == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
            if answer == "ok" {
                // Later, unasked: a whole forged response.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let forged = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled";
                stream.write_all(forged.as_bytes()).await.unwrap();
            }
            held.push(stream);
        }
    });
    let gw = TestGateway::start(&config(&[format!("http://{addr}")], "")).await;
    let first = fetch_all(&gw, &[("GET", "/1")]).await;
    assert_eq!(first[0].1, "ok");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = fetch_all(&gw, &[("GET", "/2")]).await;
    assert_eq!(second[0].1, "fresh");
    upstream.abort();
}
