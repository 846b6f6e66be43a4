//! What the gateway does on the wire with HTTP/1 clients: keep-alive for HTTP/1.1 and
//! HTTP/1.0, pipelining, `100 Continue`, responses to HEAD, response framing for each
//! client, and a request body left unread never being read as a request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(5);

/// The responses in `answer`, split at each status line.
fn responses(answer: &str) -> Vec<&str> {
    let starts: Vec<usize> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| at)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, start)| &answer[*start..starts.get(n + 1).copied().unwrap_or(answer.len())])
        .collect()
}

/// The value of `name` in a response head, names compared without case.
fn field<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Reads from `stream` until `answer` ends with `end` or the connection closes.
async fn read_until(stream: &mut TcpStream, answer: &mut Vec<u8>, end: &[u8]) {
    let mut chunk = [0u8; 4096];
    let read = async {
        while !answer.ends_with(end) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&chunk[..read]),
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .unwrap_or_else(|_| panic!("no {end:?} within {LIMIT:?}: {answer:?}"));
}

#[tokio::test]
async fn http10_connections_stay_open_only_when_the_client_asks() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let answer = raw_until_closed(
        gw.addr,
        b"GET /1 HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\nGET /2 HTTP/1.0\r\nHost: a\r\n\r\nGET /3 HTTP/1.0\r\nHost: a\r\n\r\n",
        LIMIT,
    )
    .await;
    let answers = responses(&answer);
    assert_eq!(answers.len(), 2, "the second request closes: {answer}");
    assert_eq!(field(answers[0], "connection"), Some("keep-alive"));
    assert_eq!(field(answers[0], "content-length"), Some("12"));
    assert!(answers[0].ends_with("hello from a"), "{answer}");
    assert_eq!(field(answers[1], "connection"), Some("close"));
    let targets: Vec<String> = up.seen().into_iter().map(|seen| seen.target).collect();
    assert_eq!(targets, ["/1", "/2"]);
}

#[tokio::test]
async fn a_body_of_unknown_length_is_chunked_for_http11_and_ends_with_the_connection_for_http10() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    // The test upstream streams downloads chunked, so the gateway cannot know the length.
    let answer = raw_until_closed(
        gw.addr,
        b"GET /download/70000 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    assert_eq!(field(&answer, "transfer-encoding"), None, "{answer:.300}");
    assert_eq!(field(&answer, "connection"), Some("close"), "{answer:.300}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(body.len(), 70_000);

    let answer = raw_until_closed(
        gw.addr,
        b"GET /download/70000 HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        LIMIT,
    )
    .await;
    let answers = responses(&answer);
    assert_eq!(answers.len(), 2, "the connection is kept: {:.300}", answer);
    assert_eq!(field(answers[0], "transfer-encoding"), Some("chunked"));
    assert!(
        answers[0].ends_with("\r\n0\r\n\r\n"),
        "the last chunk ends the body"
    );
    assert!(answers[1].ends_with("hello from a"));
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let gw = TestGateway::start(&config(&["builtin:echo".to_owned()], "")).await;
    let answer = raw_until_closed(
        gw.addr,
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\nGET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        LIMIT,
    )
    .await;
    let answers = responses(&answer);
    assert_eq!(answers.len(), 4, "{answer}");
    for (n, (response, body_bytes)) in answers.iter().zip([0, 3, 2, 0]).enumerate() {
        let json: serde_json::Value =
            serde_json::from_str(response.split_once("\r\n\r\n").map_or("", |(_, body)| body))
                .unwrap_or_else(|err| panic!("{err}: {response}"));
        assert_eq!(json["path"], format!("/{}", n + 1), "{response}");
        assert_eq!(json["body_bytes"], body_bytes, "{response}");
    }
}

#[tokio::test]
async fn expect_100_continue_is_answered_only_when_the_body_is_wanted() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "limits: { max_body_size: 10 }\n")).await;

    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            b"PUT /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    read_until(&mut stream, &mut answer, b"\r\n\r\n").await;
    assert_eq!(answer, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    answer.clear();
    read_until(&mut stream, &mut answer, b"5").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Refused on its declared length: the final answer comes at once, without the
    // interim one, and the connection closes instead of waiting for a body.
    let answer = raw_until_closed(
        gw.addr,
        b"PUT /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
}

#[tokio::test]
async fn a_request_body_left_unread_is_never_read_as_a_request() {
    let up = TestUpstream::start("a").await;
    let policy = "rules:\n  - { id: public, effect: allow, match: { paths: [\"/public/**\"] } }\n";
    let gw = TestGateway::with_policy(&config(&[up.url()], ""), policy).await;
    let hidden = "GET /public/hidden HTTP/1.1\r\nHost: a\r\n\r\n";
    let denied = format!(
        "POST /private HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{hidden}",
        hidden.len()
    );
    // A body that arrived whole is skipped, and the connection carries on.
    let after = "GET /public/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = raw_until_closed(gw.addr, format!("{denied}{after}").as_bytes(), LIMIT).await;
    let answers = responses(&answer);
    assert_eq!(answers.len(), 2, "{answer}");
    assert!(answers[0].starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answers[1].ends_with("hello from a"), "{answer}");
    // A body still on its way closes the connection after the answer.
    let partial = "POST /private HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nGET /public/hidden HTTP/1.1\r\nHost: a\r\n\r\n";
    let answer = raw_until_closed(gw.addr, partial.as_bytes(), LIMIT).await;
    let answers = responses(&answer);
    assert_eq!(answers.len(), 1, "{answer}");
    assert!(answers[0].starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(field(answers[0], "connection"), Some("close"));
    let targets: Vec<String> = up.seen().into_iter().map(|seen| seen.target).collect();
    assert_eq!(
        targets,
        ["/public/after"],
        "a body is never read as a request"
    );
}

#[tokio::test]
async fn a_response_to_head_has_no_body_and_keeps_its_length() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let answer = raw_until_closed(
        gw.addr,
        b"HEAD /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        LIMIT,
    )
    .await;
    let answers = responses(&answer);
    assert_eq!(answers.len(), 2, "{answer}");
    assert_eq!(field(answers[0], "content-length"), Some("12"));
    assert!(
        answers[0].ends_with("\r\n\r\n"),
        "no body after the head: {answer}"
    );
    assert!(answers[1].ends_with("hello from a"));
}

#[tokio::test]
async fn what_the_reader_refuses_gets_a_problem_with_a_date_and_a_request_id() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "limits: { max_header_size: 1KiB }\n")).await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(4096)
    );
    for (request, status) in [
        (b"GET /a HTTP/1.1\r\nHost : a\r\n\r\n".to_vec(), "400"),
        (b"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "400"),
        (huge.into_bytes(), "431"),
    ] {
        let answer = raw_until_closed(gw.addr, &request, LIMIT).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert_eq!(
            field(&answer, "content-type"),
            Some("application/problem+json")
        );
        assert!(field(&answer, "date").is_some_and(|date| date.ends_with("GMT")));
        assert!(field(&answer, "x-request-id").is_some(), "{answer}");
        assert_eq!(field(&answer, "connection"), Some("close"));
    }
    assert!(up.seen().is_empty());
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_requests_total{decision=\"error\",reason=\"bad_request\",route=\"-\"}"
        ),
        2.0,
        "{metrics}"
    );
}

/// A gateway whose watchdog, which also watches clients during long requests, ticks
/// every 100ms (a quarter of the shorter timeout), and a client that has sent `requests`.
async fn watched_client(requests: &[u8]) -> (TestUpstream, TestGateway, TcpStream) {
    let up = TestUpstream::start("a").await;
    let limits = "limits: { header_read_timeout: 400ms }\n";
    let gw = TestGateway::start(&config(&[up.url()], limits)).await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client.write_all(requests).await.unwrap();
    (up, gw, client)
}

#[tokio::test]
async fn a_client_that_hangs_up_drops_its_request() {
    let (up, gw, client) = watched_client(b"GET /slow/4000 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);
    // The connection (and its request to the upstream) goes long before the upstream
    // would have answered.
    let active = settled_metric(&gw, "portcullis_connections_active", 0.0).await;
    assert_eq!(active, 0.0, "the connection is still open");
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn a_client_that_closes_after_pipelining_still_gets_its_answers() {
    let (_up, _gw, mut client) = watched_client(
        b"GET /slow/300 HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    // Done sending: the write side closes while the first request is at the upstream.
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, client.read_to_end(&mut answer))
        .await
        .expect("the gateway closes after the answers")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let answers = responses(&answer);
    assert_eq!(answers.len(), 2, "{answer}");
    assert!(answers[0].ends_with("slept 300ms"), "{answer}");
    assert!(answers[1].ends_with("hello from a"), "{answer}");
}

#[tokio::test]
async fn request_trailer_fields_are_parsed_as_strictly_as_head_fields() {
    let gw = TestGateway::start(&config(&["builtin:echo".to_owned()], "")).await;
    let chunked = |trailer: &str| {
        format!(
            "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n{trailer}\r\n"
        )
    };
    let answer = raw_until_closed(
        gw.addr,
        format!(
            "{}GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            chunked("x-sum: 1\r\n")
        )
        .as_bytes(),
        LIMIT,
    )
    .await;
    let answers = responses(&answer);
    assert_eq!(answers.len(), 2, "{answer}");
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{answer}");
    // A space before the colon, a NUL, or a request line where the last CRLF should be.
    for trailer in [
        "x-sum : 1\r\n",
        "x-sum: 1\0\r\n",
        "GET /admin HTTP/1.1\r\nHost: a\r\n",
    ] {
        let answer = raw_until_closed(gw.addr, chunked(trailer).as_bytes(), LIMIT).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{trailer:?}: {answer}");
        assert_eq!(field(&answer, "connection"), Some("close"));
        assert_eq!(responses(&answer).len(), 1, "{answer}");
    }
}
