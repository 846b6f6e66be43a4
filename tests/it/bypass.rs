//! Bypass attempts: a corpus of requests that try to reach `/admin` past a policy that
//! allows `GET /public/**` and keeps `/admin/**` to the office network. Whatever the
//! gateway answers, the upstream must never receive anything a lenient server would read
//! as `/admin` — while the legitimate `/public` requests still pass.
//!
//! Every attempt runs against two gateways: an allow-list policy on a case-sensitive
//! route, and a deny-list policy (everything allowed but `/admin/**`) on a
//! case-insensitive route, where a missed spelling would let the request through.

use std::time::Duration;

use http::{Method, Request, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

const ALLOW_LIST: &str = "\
lists: { office: [203.0.113.0/24] }
rules:
  - id: public-read
    effect: allow
    match: { paths: [\"/public/**\"], methods: [GET, HEAD] }
  - id: admin-office-only
    effect: deny
    match: { paths: [\"/admin/**\"] }
    when: { not_ip: [\"@office\"] }
  - id: admin-console
    effect: allow
    match: { paths: [\"/admin/**\"] }
    when: { ip: [\"@office\"] }
";

const DENY_LIST: &str = "\
lists: { office: [203.0.113.0/24] }
rules:
  - id: everything-else
    effect: allow
  - id: admin-office-only
    effect: deny
    match: { paths: [\"/admin/**\"] }
    when: { not_ip: [\"@office\"] }
";

/// How a lenient server (IIS, Tomcat, PHP, a case-insensitive file system) might read a
/// request target: decoded three times over, backslashes as slashes, case folded,
/// `;parameters`, NUL tails and trailing dots and spaces dropped, dot segments resolved.
fn lenient(target: &str) -> String {
    let mut path = target.split(['?', '#']).next().unwrap_or("").to_owned();
    for _ in 0..3 {
        path = percent_decode(&path);
    }
    let path = path.replace('\\', "/").to_lowercase();
    let path = path.split('\0').next().unwrap_or("");
    let mut segments: Vec<String> = Vec::new();
    for segment in path.split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => {
                let trimmed = segment.trim_end_matches(['.', ' ', '\t']);
                if !trimmed.is_empty() {
                    segments.push(trimmed.to_owned());
                }
            }
        }
    }
    format!("/{}", segments.join("/"))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(hex) = bytes.get(index + 1..index + 3)
            && let Ok(byte) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
        {
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    // Overlong and invalid sequences (`%c0%ae`) read as the ASCII they imitate, as some
    // old decoders did.
    let text = String::from_utf8_lossy(&out).into_owned();
    text.replace("\u{fffd}\u{fffd}", ".")
}

/// The path part of an absolute-form target (`http://app/admin` → `/admin`).
fn origin_form(target: &str) -> &str {
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => target,
    }
}

fn reads_as_admin(target: &str) -> bool {
    let path = lenient(target);
    path == "/admin" || path.starts_with("/admin/")
}

/// Raw HTTP/1 attempts: (what it tries, the bytes).
fn raw_attempts() -> Vec<(&'static str, String)> {
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: app\r\n\r\n");
    let with = |target: &str, header: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: app\r\n{header}\r\n\r\n")
    };
    let mut attempts: Vec<(&'static str, String)> = vec![
        ("plain", get("/admin")),
        ("trailing slash", get("/admin/")),
        ("deeper", get("/admin/users")),
        ("upper case", get("/ADMIN/users")),
        ("mixed case", get("/aDmIn")),
        ("encoded letter", get("/%61dmin")),
        ("encoded upper letter", get("/%41DMIN/users")),
        ("dot-dot", get("/public/../admin")),
        ("encoded dot-dot", get("/public/%2e%2e/admin")),
        ("upper encoded dot-dot", get("/public/%2E%2E/admin")),
        ("half encoded dot-dot", get("/public/.%2e/admin")),
        ("other half encoded", get("/public/%2e./admin")),
        ("encoded slash", get("/public/..%2fadmin")),
        ("upper encoded slash", get("/public/..%2Fadmin")),
        ("all encoded", get("/public/%2e%2e%2fadmin")),
        ("encoded backslash", get("/public/..%5cadmin")),
        ("raw backslash", get("/public/..\\admin")),
        ("backslash path", get("/public\\..\\admin")),
        ("double-encoded dots", get("/public/%252e%252e/admin")),
        ("double-encoded slash", get("/public/%252e%252e%252fadmin")),
        ("double encoding assembled", get("/public/%25%32%65%25%32%65/admin")),
        ("triple encoding", get("/public/%25252e%25252e/admin")),
        ("dot-dot-semicolon", get("/public/..;/admin")),
        ("dot-dot with parameter", get("/public/..;x=1/admin")),
        ("dot-dot with encoded parameter", get("/public/..%3B/admin")),
        ("dot-dot with lower-case encoded parameter", get("/public/..%3bx/admin")),
        ("dot with encoded parameter", get("/.%3B/admin")),
        ("encoded percent before hex", get("/%2561dmin")),
        ("encoded percent before upper hex", get("/public/%252E%252E/admin")),
        ("parameter on admin", get("/admin;/users")),
        ("session parameter", get("/admin;jsessionid=1/users")),
        ("empty parameter segment", get("/;/admin")),
        ("double slash", get("//admin")),
        ("triple slash", get("///admin/users")),
        ("dot segment", get("/./admin")),
        ("dot then dot-dot", get("/public/./../admin")),
        ("trailing dot", get("/admin.")),
        ("trailing dot segment", get("/admin./users")),
        ("trailing space", get("/admin%20")),
        ("trailing space segment", get("/admin%20/users")),
        ("encoded trailing dot", get("/admin%2e")),
        ("two trailing dots", get("/admin..")),
        ("trailing tab", get("/admin%09")),
        ("NUL byte", get("/admin%00")),
        ("NUL then dot-dot", get("/public/%00/../admin")),
        ("overlong dots", get("/public/%c0%ae%c0%ae/admin")),
        ("overlong slash", get("/public/..%c0%afadmin")),
        ("IIS %u encoding", get("/%u0061dmin")),
        ("encoded slash prefix", get("/%2fadmin")),
        ("encoded slash after", get("/admin%2f")),
        ("double-encoded slash chain", get("/public/..%252f..%252fadmin")),
        ("fragment", get("/admin#/public")),
        ("fragment after public", get("/public/x#/../../admin")),
        ("query with dots", get("/public/x?/../../admin")),
        ("absolute form", "GET http://app/admin HTTP/1.1\r\nHost: app\r\n\r\n".to_owned()),
        (
            "absolute form with dots",
            "GET http://app/public/../admin HTTP/1.1\r\nHost: app\r\n\r\n".to_owned(),
        ),
        (
            "absolute form, upper-case scheme and host",
            "GET HTTP://APP/admin HTTP/1.1\r\nHost: app\r\n\r\n".to_owned(),
        ),
        (
            "absolute form disagreeing with Host",
            "GET http://admin/admin HTTP/1.1\r\nHost: app\r\n\r\n".to_owned(),
        ),
        ("path in Host", "GET /admin HTTP/1.1\r\nHost: app/public\r\n\r\n".to_owned()),
        (
            "two Host headers",
            "GET /admin HTTP/1.1\r\nHost: app\r\nHost: other\r\n\r\n".to_owned(),
        ),
        ("HTTP/1.0 without Host", "GET /admin HTTP/1.0\r\n\r\n".to_owned()),
        ("HTTP/1.0 with dots", "GET /public/../admin HTTP/1.0\r\n\r\n".to_owned()),
        ("X-Original-URL", with("/public/x", "X-Original-URL: /admin")),
        ("X-Original-URI", with("/public/x", "X-Original-URI: /admin")),
        ("X-Rewrite-URL", with("/public/x", "X-Rewrite-URL: /admin")),
        ("X-Envoy-Original-Path", with("/public/x", "X-Envoy-Original-Path: /admin")),
        ("X-Override-URL", with("/public/x", "X-Override-URL: /admin")),
        ("look-alike X.Original.URL", with("/public/x", "X.Original.URL: /admin")),
        (
            "method override",
            with("/public/x", "X-HTTP-Method-Override: DELETE"),
        ),
        ("X-Forwarded-Prefix", with("/public/x", "X-Forwarded-Prefix: /admin")),
        (
            "spoofed X-Forwarded-For",
            with("/admin", "X-Forwarded-For: 203.0.113.5"),
        ),
        ("spoofed X-Real-IP", with("/admin", "X-Real-IP: 203.0.113.5")),
        ("spoofed Forwarded", with("/admin", "Forwarded: for=203.0.113.5")),
        ("spoofed True-Client-IP", with("/admin", "True-Client-IP: 203.0.113.5")),
        (
            "underscore forwarding header",
            with("/admin", "X-Forwarded_For: 203.0.113.5"),
        ),
        ("h2c upgrade", with("/admin", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA")),
        ("websocket upgrade", with("/admin", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")),
        (
            "pipelined behind a public request",
            format!("{}{}", get("/public/x"), with("/admin", "Connection: close")),
        ),
        (
            "smuggled with Content-Length and chunked",
            "POST /public/x HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app\r\n\r\n".to_owned(),
        ),
        (
            "smuggled with obfuscated Transfer-Encoding",
            "POST /public/x HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: xchunked\r\nContent-Length: 38\r\n\r\nGET /admin HTTP/1.1\r\nHost: app\r\n\r\n".to_owned(),
        ),
        (
            "smuggled with two lengths",
            "POST /public/x HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\nGET /admin HTTP/1.1\r\nHost: app\r\n\r\n".to_owned(),
        ),
        (
            "chunked body hiding a request",
            "POST /public/x HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n26\r\nGET /admin HTTP/1.1\r\nHost: app\r\n\r\n\r\n0\r\n\r\n".to_owned(),
        ),
        ("CONNECT", "CONNECT app:80 HTTP/1.1\r\nHost: app:80\r\n\r\n".to_owned()),
        ("lower-case method", "delete /admin/users HTTP/1.1\r\nHost: app\r\n\r\n".to_owned()),
        ("lower-case GET", "get /admin HTTP/1.1\r\nHost: app\r\n\r\n".to_owned()),
        ("lower-case method on a public path", "post /public/x HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n".to_owned()),
        ("asterisk form", "OPTIONS * HTTP/1.1\r\nHost: app\r\n\r\n".to_owned()),
        ("extra spaces in request line", "GET  /admin  HTTP/1.1\r\nHost: app\r\n\r\n".to_owned()),
    ];
    attempts.push((
        "forwarding header named in Connection",
        with(
            "/admin",
            "Connection: X-Forwarded-For\r\nX-Forwarded-For: 203.0.113.5",
        ),
    ));
    attempts.push((
        "space in header name",
        "GET /public/x HTTP/1.1\r\nHost: app\r\nX-Original-URL : /admin\r\n\r\n".to_owned(),
    ));
    // Each attempt asks for the connection to close after it, so its answer is complete
    // when the gateway closes.
    for (_, bytes) in &mut attempts {
        if !bytes.contains("Connection: close") {
            let line_end = bytes.find("\r\n").unwrap_or(0) + 2;
            bytes.insert_str(line_end, "Connection: close\r\n");
        }
    }
    attempts
}

/// The legitimate requests, which must still pass: (method, path).
const LEGITIMATE: &[(&str, &str)] = &[
    ("GET", "/public/a"),
    ("GET", "/public/a/b?x=1&y=/../admin"),
    ("HEAD", "/public/readme.txt"),
    ("GET", "/public/caf%C3%A9"),
];

/// The two gateways every attempt runs against: `policy` on a route that is
/// case-insensitive or not, in front of an upstream that records what it receives.
async fn gateway(policy: &str, case_insensitive: bool) -> (TestUpstream, TestGateway) {
    let up = TestUpstream::start("app").await;
    // Upgrades are allowed, so that the policy alone decides a switch to /admin.
    let yaml = with_websocket(&config(&[up.url()], "").replace(
        "upstream: app }",
        &format!("upstream: app, case_insensitive: {case_insensitive} }}"),
    ));
    let gw = TestGateway::with_policy(&yaml, policy).await;
    (up, gw)
}

#[tokio::test]
async fn no_attempt_reaches_the_upstream_as_admin() {
    let attempts = raw_attempts();
    assert!(attempts.len() >= 60, "{} attempts", attempts.len());
    for (policy, case_insensitive) in [(ALLOW_LIST, false), (DENY_LIST, true)] {
        let (up, gw) = gateway(policy, case_insensitive).await;

        for (what, bytes) in &attempts {
            let before = up.seen().len();
            let answer = raw_until_closed(gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
            let seen = up.seen();
            for request in &seen[before..] {
                assert!(
                    !reads_as_admin(&request.target),
                    "{what}: the upstream received {:?} (policy {policy:?})\nanswer: {answer}",
                    request.target
                );
                for header in [
                    "x-original-url",
                    "x-original-uri",
                    "x-rewrite-url",
                    "x-envoy-original-path",
                    "x-override-url",
                    "x.original.url",
                    "x-http-method-override",
                    "x-forwarded-prefix",
                ] {
                    assert!(
                        request.all(header).is_empty(),
                        "{what}: {header} reached the upstream"
                    );
                }
            }
            let status_line = answer.lines().next().unwrap_or("");
            let target = bytes.split(' ').nth(1).unwrap_or("");
            if reads_as_admin(origin_form(target)) {
                assert!(
                    !status_line.contains(" 200 "),
                    "{what}: answered {status_line:?}"
                );
            }
        }

        // An office address through no trusted proxy is still not the office.
        let h2: Client<HttpConnector, ClientBody> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(HttpConnector::new());
        for path in [
            "/admin",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/ADMIN",
            "/admin.",
        ] {
            let before = up.seen().len();
            let response = h2.request(get(&gw.url(path))).await.unwrap();
            assert_eq!(response.version(), Version::HTTP_2);
            assert!(
                matches!(
                    response.status(),
                    StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN
                ),
                "HTTP/2 {path}: {}",
                response.status()
            );
            assert_eq!(
                up.seen().len(),
                before,
                "HTTP/2 {path} reached the upstream"
            );
        }

        let http1 = client();
        for (method, path) in LEGITIMATE {
            let request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(gw.url(path))
                .body(ClientBody::default())
                .unwrap();
            let response = http1.request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
            assert_eq!(up.seen().last().unwrap().target, *path);
            let response = h2.request(get(&gw.url(path))).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "HTTP/2 {path}");
        }
    }
}

#[tokio::test]
async fn a_trusted_proxy_vouches_for_the_office_address() {
    let up = TestUpstream::start("app").await;
    // The proxy itself (127.0.0.1) sits inside the office network here, the case where
    // believing the wrong hop would let anyone in.
    let policy = ALLOW_LIST.replace("[203.0.113.0/24]", "[203.0.113.0/24, 127.0.0.1]");
    let gw = TestGateway::with_policy(
        &config(&[up.url()], "network: { trusted_proxies: [127.0.0.1] }\n"),
        &policy,
    )
    .await;
    for (forwarded_for, allowed) in [
        ("203.0.113.5", true),
        ("203.0.113.5, 198.51.100.7", false),
        ("198.51.100.7, 203.0.113.5", true),
        // The client's garbage left of its real address changes nothing.
        ("not-an-address, 198.51.100.7", false),
        ("203.0.113.5, not-an-address, 198.51.100.7", false),
        ("127.0.0.1, 198.51.100.7", false),
    ] {
        let request = format!(
            "GET /admin/users HTTP/1.1\r\nHost: app\r\nConnection: close\r\nX-Forwarded-For: {forwarded_for}\r\n\r\n"
        );
        let answer = raw_until_closed(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        let ok = answer.starts_with("HTTP/1.1 200");
        assert_eq!(ok, allowed, "{forwarded_for}: {answer}");
    }

    // With `forwarded_header: forwarded`, only RFC 7239 `Forwarded` is read.
    let gw = TestGateway::with_policy(
        &config(
            &[up.url()],
            "network: { trusted_proxies: [127.0.0.1], forwarded_header: forwarded }\n",
        ),
        ALLOW_LIST,
    )
    .await;
    for (headers, allowed) in [
        ("Forwarded: for=203.0.113.5", true),
        ("Forwarded: for=203.0.113.5, for=198.51.100.7", false),
        (
            "X-Forwarded-For: 203.0.113.5\r\nForwarded: for=198.51.100.7",
            false,
        ),
    ] {
        let request = format!(
            "GET /admin/users HTTP/1.1\r\nHost: app\r\nConnection: close\r\n{headers}\r\n\r\n"
        );
        let answer = raw_until_closed(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            answer.starts_with("HTTP/1.1 200"),
            allowed,
            "{headers}: {answer}"
        );
    }
}

#[test]
fn the_lenient_reader_reads_what_lenient_servers_read() {
    for target in [
        "/admin",
        "/ADMIN.",
        "/public/..%5cadmin",
        "/public/%252e%252e/admin",
        "/admin;x/y",
        "/public/%c0%ae%c0%ae/admin",
        "/admin%00.txt",
        "/admin%20",
    ] {
        assert!(reads_as_admin(target), "{target}");
    }
    for target in ["/public/x", "/public/x?/../../admin", "/administrator"] {
        assert!(!reads_as_admin(target), "{target}");
    }
}

/// An upstream that agrees to one protocol switch and returns every byte it received
/// after the request head, until the gateway closes the connection.
async fn switching_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    switching_upstream_after(Duration::ZERO).await
}

/// [`switching_upstream`], agreeing only `delay` after the request head arrived.
async fn switching_upstream_after(
    delay: Duration,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the gateway closed before sending a head");
            received.extend_from_slice(&buffer[..read]);
        }
        tokio::time::sleep(delay).await;
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        received.drain(..head_end);
        received.extend(rest);
        received
    });
    (addr, task)
}

const UPGRADE: &str = "GET /public/ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[tokio::test]
async fn bytes_sent_before_the_switch_are_never_tunnelled() {
    let (up, upstream) = switching_upstream().await;
    let gw = TestGateway::with_policy(
        &with_websocket(&config(&[format!("http://{up}")], "")),
        ALLOW_LIST,
    )
    .await;
    let attempt = format!("{UPGRADE}GET /admin HTTP/1.1\r\nHost: app\r\n\r\n");
    let answer = raw_until_closed(gw.addr, attempt.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("before the protocol switch was answered"),
        "{answer}"
    );
    let tunnelled = upstream.await.unwrap();
    assert!(
        tunnelled.is_empty(),
        "the upstream received {:?}",
        String::from_utf8_lossy(&tunnelled)
    );
}

#[tokio::test]
async fn bytes_sent_while_the_switch_is_agreed_are_never_tunnelled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, upstream) = switching_upstream_after(Duration::from_millis(400)).await;
    let gw = TestGateway::with_policy(
        &with_websocket(&config(&[format!("http://{up}")], "")),
        ALLOW_LIST,
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    client.write_all(UPGRADE.as_bytes()).await.unwrap();
    // The head has been read alone; these bytes come while the upstream deliberates.
    tokio::time::sleep(Duration::from_millis(100)).await;
    client
        .write_all(b"GET /admin HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection")
        .unwrap_or_default();
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("101"), "no switch: {answer}");
    let tunnelled = upstream.await.unwrap();
    assert!(
        tunnelled.is_empty(),
        "the upstream received {:?}",
        String::from_utf8_lossy(&tunnelled)
    );
}

#[tokio::test]
async fn a_refused_switch_keeps_http_and_the_policy_in_force() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy(&with_websocket(&config(&[up.url()], "")), ALLOW_LIST).await;
    let attempt = format!("{UPGRADE}GET /admin HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
    let answer = raw_until_closed(gw.addr, attempt.as_bytes(), Duration::from_secs(5)).await;
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "403"], "{answer}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/public/ws");
}

/// A request as `explain` takes it.
struct Explained {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Explained {
    /// What `explain` says of it, sent from 127.0.0.1 as the tests' requests are.
    fn decide(
        &self,
        config: &portcullis::config::Config,
        identity: &portcullis::identity::Identity,
    ) -> portcullis::proxy::offline::Offline {
        use portcullis::proxy::offline::{self, Caller, Synthetic};
        offline::decide(
            config,
            identity,
            &offline::geo(config),
            &Synthetic {
                method: &self.method,
                url: &self.target,
                peer: "127.0.0.1".parse().unwrap(),
                headers: &self.headers,
                caller: &Caller::FromRequest,
                client_cert: None,
                country: None,
            },
        )
    }
}

/// One request head as `explain` takes it. None for attempts that are more than one
/// well-formed head (pipelines, bodies, heads the reader refuses), which only a socket
/// can send.
fn as_explained(bytes: &str) -> Option<Explained> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Request::new(&mut fields);
    let httparse::Status::Complete(length) = head.parse(bytes.as_bytes()).ok()? else {
        return None;
    };
    if length != bytes.len() {
        return None;
    }
    let headers = head
        .headers
        .iter()
        .map(|field| {
            Some((
                field.name.to_owned(),
                std::str::from_utf8(field.value).ok()?.to_owned(),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    // HTTP/1.0 without Host is a target without a host to explain, which it reads as such.
    Some(Explained {
        method: head.method?.to_owned(),
        target: head.path?.to_owned(),
        headers,
    })
}

/// `explain` decides through the same admission and policy as live traffic: for every
/// attempt it can express, it gives the status and reason the live gateway answered.
#[tokio::test]
async fn explain_gives_every_attempt_the_live_verdict() {
    use portcullis::proxy::offline::{self, Verdict};
    let mut compared = 0;
    let mut differ = Vec::new();
    for (policy, case_insensitive) in [(ALLOW_LIST, false), (DENY_LIST, true)] {
        let (_upstream, gw) = gateway(policy, case_insensitive).await;
        let config = portcullis::config::load(&gw.file("gw.yaml")).unwrap();
        let identity = offline::identity(&config);
        for (what, bytes) in raw_attempts() {
            let Some(explained) = as_explained(&bytes) else {
                continue;
            };
            let answer = raw_until_closed(gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
            let live_status: u16 = answer
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            let live_reason = answer
                .lines()
                .take_while(|line| !line.is_empty())
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("x-portcullis-reason")
                        .then(|| value.trim().to_owned())
                })
                .unwrap_or_else(|| "allowed".to_owned());
            let explained = explained.decide(&config, &identity);
            let (status, reason) = match &explained.verdict {
                Verdict::Refused { status, reason, .. } => (*status, (*reason).to_owned()),
                Verdict::Decided(decision) if decision.is_allowed() => (200, "allowed".to_owned()),
                Verdict::Decided(decision) => (
                    portcullis::proxy::respond::denial_status(&decision.reason).as_u16(),
                    decision.reason.code().to_owned(),
                ),
            };
            if (status, reason.as_str()) != (live_status, live_reason.as_str()) {
                differ.push(format!(
                    "{what} ({}): explain {status} {reason}, live {live_status} {live_reason}",
                    if case_insensitive {
                        "deny list"
                    } else {
                        "allow list"
                    }
                ));
            }
            compared += 1;
        }
    }
    assert!(
        differ.is_empty(),
        "explain and the live gateway differ:\n{}",
        differ.join("\n")
    );
    assert!(compared >= 100, "{compared} attempts compared");
}

/// A field the client names in `Connection` is hop-by-hop: the gateway drops it before
/// the policy looks, and `explain` must too, or a header rule would be met offline and
/// not live.
#[tokio::test]
async fn explain_drops_the_fields_connection_names_as_the_gateway_does() {
    use portcullis::proxy::offline::{self, Verdict};
    let policy = "rules:\n  - { id: staging, effect: allow, when: { headers: { x-environment: staging } } }\n";
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy(&config(&[up.url()], ""), policy).await;
    let named = "GET /x HTTP/1.1\r\nHost: app\r\nConnection: close, X-Environment\r\nX-Environment: staging\r\n\r\n";
    let answer = raw_until_closed(gw.addr, named.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let config = portcullis::config::load(&gw.file("gw.yaml")).unwrap();
    let explained = as_explained(named)
        .unwrap()
        .decide(&config, &offline::identity(&config));
    let Verdict::Decided(decision) = explained.verdict else {
        panic!("decided");
    };
    assert!(!decision.is_allowed(), "explain saw the dropped field");
    // Not named, the field counts, live and offline.
    let plain =
        "GET /x HTTP/1.1\r\nHost: app\r\nConnection: close\r\nX-Environment: staging\r\n\r\n";
    let answer = raw_until_closed(gw.addr, plain.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
