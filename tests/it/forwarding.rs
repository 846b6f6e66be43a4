//! What the upstream sees and what the client gets back: headers, request ids, bodies
//! streamed both ways, HTTP/2 prior knowledge, WebSocket upgrades.

use std::time::Duration;

use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

#[tokio::test]
async fn hop_by_hop_and_forwarding_headers_from_an_untrusted_client() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let request = Request::get(gw.url("/orders?id=7&x=%2F"))
        .header("host", "shop.example:8080")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .header("true-client-ip", "6.6.6.6")
        .header("x-forwarded-scheme", "https")
        .header("x-forwarded_for", "6.6.6.6")
        .header("x-forwarded-port", "443")
        .header("x-request-id", "client-chosen")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-end-to-end", "kept")
        .body(Empty::new().boxed())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-upstream"], "a");
    // The upstream's own hop-by-hop header does not reach the client.
    assert!(response.headers().get("x-upstream-private").is_none());
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(request_id, "client-chosen");
    assert_eq!(request_id.len(), 26);
    assert_eq!(response.headers().get_all("x-request-id").iter().count(), 1);
    // The upstream's `Date` is passed on, and the gateway adds none of its own.
    let dates: Vec<_> = response.headers().get_all("date").iter().collect();
    assert_eq!(dates, [UPSTREAM_DATE]);
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);

    let seen = &up.seen()[0];
    assert_eq!(seen.target, "/orders?id=7&x=%2F");
    assert_eq!(seen.one("host"), Some("shop.example:8080"));
    assert_eq!(seen.one("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.one("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.one("x-forwarded-host"), Some("shop.example:8080"));
    assert_eq!(seen.one("x-request-id"), Some(request_id.as_str()));
    assert_eq!(seen.one("x-end-to-end"), Some("kept"));
    for gone in [
        "forwarded",
        "true-client-ip",
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-forwarded_for",
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert_eq!(seen.one(gone), None, "{gone} must not be forwarded");
    }
}

#[tokio::test]
async fn a_trusted_proxy_extends_the_chain_and_keeps_its_request_id() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(
        &[up.url()],
        "network: { trusted_proxies: [127.0.0.1] }\n",
    ))
    .await;
    let request = Request::get(gw.url("/"))
        .header("x-forwarded-for", "203.0.113.9, 10.1.1.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "public.example")
        .header("x-request-id", "edge-42")
        .body(Empty::new().boxed())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "edge-42");
    let seen = &up.seen()[0];
    assert_eq!(
        seen.one("x-forwarded-for"),
        Some("203.0.113.9, 10.1.1.1, 127.0.0.1")
    );
    assert_eq!(seen.one("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.one("x-forwarded-host"), Some("public.example"));
    assert_eq!(seen.one("x-request-id"), Some("edge-42"));
}

#[tokio::test]
async fn a_malformed_request_id_from_a_trusted_proxy_is_replaced() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(
        &[up.url()],
        "network: { trusted_proxies: [127.0.0.0/8] }\n",
    ))
    .await;
    let request = Request::get(gw.url("/"))
        .header("x-request-id", "has spaces and \"quotes\"")
        .body(Empty::new().boxed())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"].len(), 26);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_and_forwarded_as_http11() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let h2: Client<HttpConnector, ClientBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    for path in ["/one", "/two"] {
        let response = h2.request(get(&gw.url(path))).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        // The upstream's fields reach an HTTP/2 client too, less its hop-by-hop one, with
        // the gateway's request id in place of the upstream's.
        let headers = response.headers();
        assert_eq!(headers["x-upstream"], "a");
        assert!(headers.get("x-upstream-private").is_none());
        let request_ids: Vec<_> = headers.get_all("x-request-id").iter().collect();
        assert_eq!(request_ids.len(), 1);
        assert_eq!(request_ids[0].len(), 26);
        let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(body_text(response).await, "hello from a");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].version, Version::HTTP_11);
    assert_eq!(seen[0].one("host"), Some(gw.addr.to_string().as_str()));
    assert_eq!(seen[1].target, "/two");
}

/// RFC 6455 §1.3's example key and the accept value it requires.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A WebSocket server that answers one handshake and echoes text frames back.
async fn websocket_echo_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        // Echo one masked client frame as an unmasked server frame.
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).await.unwrap();
        let len = (header[1] & 0x7F) as usize;
        let mut mask = [0u8; 4];
        stream.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        let mut frame = vec![0x81, len as u8];
        frame.extend_from_slice(&payload);
        stream.write_all(&frame).await.unwrap();
        head
    });
    (addr, task)
}

async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "head too long");
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    head
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_both_ways() {
    let (up, upstream_task) = websocket_echo_upstream().await;
    let gw = TestGateway::start(&with_websocket(&config(&[format!("http://{up}")], ""))).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let handshake = format!(
        "GET /chat HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let head = String::from_utf8(read_head(&mut stream).await)
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains(&format!(
            "sec-websocket-accept: {}",
            WS_ACCEPT.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(head.contains("x-request-id: "), "{head}");

    // A masked text frame "hello".
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 5];
    frame.extend_from_slice(&mask);
    frame.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
    let mut echoed = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
        .await
        .expect("echo arrives")
        .unwrap();
    assert_eq!(&echoed, b"\x81\x05hello");

    let upstream_head = String::from_utf8(upstream_task.await.unwrap())
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        upstream_head.contains("upgrade: websocket"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("connection: upgrade"),
        "{upstream_head}"
    );
    assert!(upstream_head.contains(&format!(
        "sec-websocket-key: {}",
        WS_KEY.to_ascii_lowercase()
    )));
}

/// A route that does not list a protocol in `upgrades` refuses the switch before the
/// upstream sees it, and closes: the client was about to speak another protocol.
#[tokio::test]
async fn an_upgrade_passes_only_where_its_route_allows_it() {
    let up = TestUpstream::start("a").await;
    let yaml = config(&[up.url()], "").replace(
        "  - { id: main, path_prefix: /, upstream: app }\n",
        "  - { id: main, path_prefix: /, upstream: app }\n  - { id: chat, path_prefix: /chat, upstream: app, upgrades: [WebSocket] }\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let ask = |path: &str, protocol: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n"
        )
    };
    for (path, protocol) in [("/ws", "websocket"), ("/chat", "websocket, tls/1.3")] {
        let answer = raw_until_closed(
            gw.addr,
            ask(path, protocol).as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{path} {protocol}: {answer}"
        );
        assert!(
            answer.contains("x-portcullis-reason: upgrade_not_allowed"),
            "{answer}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "the connection closes: {answer}"
        );
    }
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    // On the route that lists it, the ask reaches the upstream (which answers it as a plain
    // request: no `101`, so HTTP carries on).
    let answer = raw_exchange(
        gw.addr,
        ask("/chat", "websocket/13").as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.seen();
    assert_eq!(seen[0].target, "/chat");
    assert_eq!(seen[0].one("upgrade"), Some("websocket/13"));
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_requests_total{decision=\"error\",reason=\"upgrade_not_allowed\",route=\"main\"}"
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn h2c_upgrade_is_never_forwarded() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let answer = raw_exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = &up.seen()[0];
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(seen.one(gone), None, "{gone} must not be forwarded");
    }
}

#[tokio::test]
async fn the_echo_upstream_describes_the_forwarded_request() {
    let gw = TestGateway::start(&config(&["builtin:echo".to_owned()], "")).await;
    let request = Request::post(gw.url("/hello?x=1"))
        .header("x-forwarded-for", "6.6.6.6")
        .body(Generated::new(1000).boxed())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let echo: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/hello");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["body_bytes"], 1000);
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-request-id"], request_id.as_str());
}

#[tokio::test]
async fn every_listen_address_serves() {
    let up = TestUpstream::start("a").await;
    // Machines without IPv6 loopback (some containers) check two IPv4 listeners.
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let second = if ipv6 { "\"[::1]:0\"" } else { "127.0.0.1:0" };
    let yaml = config(&[up.url()], "").replace(
        "listen: [{ addr: 127.0.0.1:0 }]",
        &format!(
            "listen: [{{ addr: 127.0.0.1:0 }}, {{ addr: {second} }}, {{ addr: 127.0.0.1:0 }}]"
        ),
    );
    let scratch = Scratch::with_allow_all();
    let path = scratch.write(
        "gw.yaml",
        &format!("{yaml}policy: {{ files: [allow-all.yaml] }}\n"),
    );
    let config = portcullis::config::load(&path).unwrap();
    let gateway = portcullis::app::Gateway::start(&config).await.unwrap();
    assert_eq!(gateway.listen_addrs().len(), 3);
    for addr in gateway.listen_addrs() {
        let response = client()
            .request(get(&format!("http://{addr}/")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{addr}");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    if ipv6 {
        // The IPv6 client is reported as such.
        assert_eq!(seen[1].one("x-forwarded-for"), Some("::1"));
    }
}

/// SECURITY: content on a method that defines none (GET, HEAD, OPTIONS, DELETE, TRACE)
/// is read by an upstream that ignores it as the next request: `GET /public/x` carrying
/// `GET /admin` would run the second past the policy. It is refused unless the route
/// allows it.
#[tokio::test]
async fn content_on_a_get_is_refused_unless_the_route_allows_it() {
    let smuggling = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let attempts = [
        format!(
            "GET /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggling}",
            smuggling.len()
        ),
        "GET /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_owned(),
        "DELETE /item HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_owned(),
        "OPTIONS /item HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_owned(),
    ];
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    for attempt in &attempts {
        let answer = raw_exchange(gw.addr, attempt.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            answer.contains("x-portcullis-reason: body_not_allowed"),
            "{answer}"
        );
    }
    // Over HTTP/2 too.
    let h2: hyper_util::client::legacy::Client<_, ClientBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let request = Request::get(gw.url("/public/x"))
        .body(http_body_util::Full::new(bytes::Bytes::from("hidden")).boxed())
        .unwrap();
    let response = h2.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(up.seen().is_empty(), "nothing reached the upstream");
    // Without content, and with content on POST, requests pass.
    let answer = raw_exchange(
        gw.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A route that allows content on GET forwards it.
    let up = TestUpstream::start("a").await;
    let yaml =
        config(&[up.url()], "").replace("upstream: app }", "upstream: app, allow_body_on: [GET] }");
    let gw = TestGateway::start(&yaml).await;
    let answer = raw_exchange(gw.addr, attempts[1].as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n5"),
        "the upstream received 5 bytes: {answer}"
    );
}

#[tokio::test]
async fn the_upstream_receives_the_path_that_was_routed() {
    let api = TestUpstream::start("api").await;
    let web = TestUpstream::start("web").await;
    let yaml = format!(
        "listen: [{{ addr: 127.0.0.1:0 }}]\nadmin: {{ addr: 127.0.0.1:0 }}\n\
         upstreams:\n  api: {{ targets: [\"{}\"] }}\n  web: {{ targets: [\"{}\"] }}\n\
         routes:\n  - {{ id: api, path_prefix: /api, upstream: api }}\n  - {{ id: web, path_prefix: /, upstream: web }}\n",
        api.url(),
        web.url()
    );
    let gw = TestGateway::start(&yaml).await;
    for (sent, upstream, received) in [
        ("/web/../api/orders", "api", "/api/orders"),
        ("/api/%2e%2e/web", "web", "/web"),
        (
            "//api//orders/./7?q=%2F..&x=1",
            "api",
            "/api/orders/7?q=%2F..&x=1",
        ),
        ("/api;jsessionid=1/orders", "api", "/api/orders"),
        ("/%61pi/%7Euser", "api", "/api/~user"),
        ("/api/caf%c3%a9", "api", "/api/caf%C3%A9"),
    ] {
        let response = client().request(get(&gw.url(sent))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{sent}");
        assert_eq!(response.headers()["x-upstream"], upstream, "{sent}");
        let seen = if upstream == "api" {
            api.seen()
        } else {
            web.seen()
        };
        assert_eq!(seen.last().unwrap().target, received, "{sent}");
    }
    // HTTP/2 requests go through the same code.
    let h2: Client<HttpConnector, ClientBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let response = h2.request(get(&gw.url("/x/..//api/./h2"))).await.unwrap();
    assert_eq!(response.headers()["x-upstream"], "api");
    assert_eq!(api.seen().last().unwrap().target, "/api/h2");
}

#[tokio::test]
async fn ambiguous_paths_are_a_400() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    for path in [
        "/a%2fb",
        "/a%5Cb",
        "/a\\b",
        "/..",
        "/public/../../admin",
        "/public/..;/admin",
        "/%252e%252e/admin",
        "/a%00",
        "/%ff",
    ] {
        // Kept alive by the client; the gateway closes it after the 400.
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        let answer = raw_until_closed(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path} → {answer}");
        assert!(
            answer.contains("\"reason\":\"bad_request\""),
            "{path} → {answer}"
        );
        assert!(answer.contains("the path "), "{path} → {answer}");
    }
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn routing_override_headers_are_stripped_unless_kept() {
    let overrides = [
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
    ];
    let up = TestUpstream::start("a").await;
    for (extra, kept) in [
        ("", false),
        ("network: { keep_override_headers: true }\n", true),
    ] {
        let gw = TestGateway::start(&config(&[up.url()], extra)).await;
        let mut request = Request::get(gw.url("/public"));
        for (name, value) in overrides {
            request = request.header(name, value);
        }
        let response = client()
            .request(request.body(Empty::new().boxed()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let seen = up.seen().pop().unwrap();
        for (name, value) in overrides {
            let expected = kept.then_some(value);
            assert_eq!(
                seen.one(name),
                expected,
                "{name} with keep_override_headers: {kept}"
            );
        }
    }
}

#[tokio::test]
async fn ambiguous_framing_never_smuggles_a_request() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    // Both lengths, the smuggling classic, in either order, and behind a request that
    // is fine: a 400 and a closed connection, so the request hidden behind is never read.
    let fine = "GET /fine HTTP/1.1\r\nHost: a\r\n\r\n";
    for (before, framing) in [
        ("", "Content-Length: 5\r\nTransfer-Encoding: chunked"),
        ("", "Transfer-Encoding: chunked\r\nContent-Length: 5"),
        (fine, "content-length: 5\r\ntransfer-encoding: CHUNKED"),
        // hyper does not even read a length that follows Transfer-Encoding.
        ("", "Transfer-Encoding: chunked\r\nContent-Length: 5, 5"),
        ("", "Transfer-Encoding: chunked\r\nContent-Length: five"),
    ] {
        let request = format!(
            "{before}POST /upload HTTP/1.1\r\nHost: a\r\n{framing}\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let answer = raw_until_closed(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        let answers = answer.matches("HTTP/1.1 ").count();
        assert_eq!(
            answers,
            1 + usize::from(!before.is_empty()),
            "then close: {answer}"
        );
        assert!(answer.contains("HTTP/1.1 400"), "{answer}");
        assert!(
            answer.contains("both Content-Length and Transfer-Encoding"),
            "{answer}"
        );
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/fine");

    for request in [
        // Two different lengths.
        &b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        // A transfer coding that is not chunked at the end.
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let answer = raw_until_closed(gw.addr, request, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "one answer, then close: {answer}");
    }
    assert_eq!(up.seen().len(), 1, "nothing else reached the upstream");
}

#[tokio::test]
async fn a_fragment_in_the_request_target_is_a_400() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    for target in ["http://a.example#x", "/public#frag", "/a?q=1#x"] {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n");
        let answer = raw_until_closed(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
        assert!(answer.contains("#fragment"), "{answer}");
    }
    // A later request on the same connection is judged on its own.
    let answer = raw_until_closed(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\nGET /b HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert!(up.seen().iter().all(|seen| !seen.target.contains('#')));
    assert_eq!(up.seen().len(), 2);
}

/// SECURITY: a WebDAV MOVE or COPY writes to its `Destination`, a second path. It is
/// brought to canonical form and decided by the policy like the request's own path (the
/// same method must be allowed there); the upstream gets exactly that destination, and
/// requests of other methods get none.
#[tokio::test]
async fn a_move_or_copy_is_decided_at_its_destination_too() {
    let policy = "rules:\n  - { id: public-dav, effect: allow, match: { paths: [\"/public/**\"], methods: [GET, MOVE, COPY] } }\n";
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::with_policy(&config(&[up.url()], ""), policy).await;
    let send = |method: &'static str, destination: &'static str| {
        let gw_addr = gw.addr;
        async move {
            let request = format!(
                "{method} /public/a HTTP/1.1\r\nHost: app\r\nDestination: {destination}\r\nConnection: close\r\n\r\n"
            );
            raw_exchange(gw_addr, request.as_bytes(), Duration::from_secs(5)).await
        }
    };
    // Allowed at both ends: the upstream gets the destination in canonical form.
    for (method, sent, forwarded) in [
        ("MOVE", "/public/b", "/public/b"),
        ("COPY", "http://app/public/./c/../d", "http://app/public/d"),
        ("MOVE", "/public/%61", "/public/a"),
    ] {
        let before = up.seen().len();
        let answer = send(method, sent).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{method} {sent}: {answer}"
        );
        let seen = &up.seen()[before];
        assert_eq!(seen.all("destination"), [forwarded], "{method} {sent}");
    }
    // Denied at the destination, whatever spelling reaches it.
    for sent in [
        "/admin/x",
        "http://app/admin/x",
        "/public/../admin/x",
        "http://app/public/%2e%2e/admin/x",
    ] {
        let answer = send("MOVE", sent).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{sent}: {answer}");
        assert!(
            answer.contains("x-portcullis-reason: no_matching_allow"),
            "{answer}"
        );
    }
    // A destination the policy cannot see whole is refused.
    for sent in [
        "http://other.example/public/b",
        "/public/..%2fadmin",
        "ftp://app/public/b",
        "not a uri",
    ] {
        let answer = send("COPY", sent).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{sent}: {answer}");
    }
    assert_eq!(
        up.seen().len(),
        3,
        "denied and refused ones reached nothing"
    );
    // Other methods' Destination never reaches the upstream.
    let answer = send("GET", "/admin/x").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(up.seen().last().unwrap().all("destination").is_empty());

    // explain decides the destination as the gateway does.
    let config = portcullis::config::load(&gw.file("gw.yaml")).unwrap();
    let explained = portcullis::proxy::offline::decide(
        &config,
        &portcullis::proxy::offline::identity(&config),
        &portcullis::proxy::offline::geo(&config),
        &portcullis::proxy::offline::Synthetic {
            method: "MOVE",
            url: "http://app/public/a",
            peer: "192.0.2.1".parse().unwrap(),
            headers: &[("Destination".to_owned(), "/public/../admin/x".to_owned())],
            caller: &portcullis::proxy::offline::Caller::FromRequest,
            client_cert: None,
            country: None,
        },
    );
    assert_eq!(explained.actual().decision, "deny");
}

/// An encoded `%` before two hex digits is refused by default (a server that decodes
/// twice reads `/%2561dmin` as `/admin`); a route whose upstream decodes once lets it by.
#[tokio::test]
async fn an_encoded_percent_before_hex_passes_only_where_a_route_allows_it() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&[up.url()], "")).await;
    let response = client()
        .request(get(&gw.url("/reports/100%2541")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(up.seen().is_empty());
    let yaml = config(&[up.url()], "").replace(
        "upstream: app }",
        "upstream: app, allow_encoded_percent: true }",
    );
    let gw = TestGateway::start(&yaml).await;
    let response = client()
        .request(get(&gw.url("/reports/100%2541")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(up.seen()[0].target, "/reports/100%2541");
}
