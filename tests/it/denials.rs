//! Denials through the real proxy: problem+json at each detail level, the HTML page for
//! browsers, the headers, the metrics, and what never reaches the upstream.

use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::support::*;

const POLICY: &str = "\
lists: { office: [203.0.113.0/24] }
rules:
  - id: public-read
    effect: allow
    match: { paths: [\"/public/**\"], methods: [GET, HEAD] }
  - id: admin-console
    effect: allow
    match: { paths: [\"/admin/**\"] }
    when: { ip: [\"@office\"] }
    help: https://access.example.com/admin
  - id: no-internal
    effect: deny
    match: { paths: [\"/public/internal/**\"] }
  - id: staged
    effect: deny
    mode: audit
    match: { paths: [\"/public/staged\"] }
";

async fn gateway(detail: &str) -> (TestUpstream, TestGateway) {
    let up = TestUpstream::start("app").await;
    let yaml = config(
        &[up.url()],
        &format!("denials: {{ detail: {detail}, help_url: https://help.example.com/ }}\n"),
    );
    let gw = TestGateway::with_policy(&yaml, POLICY).await;
    (up, gw)
}

async fn send(request: Request<ClientBody>) -> (StatusCode, http::HeaderMap, String) {
    let response = client().request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn a_standard_denial_names_the_rule_and_what_to_do_without_networks() {
    let (up, gw) = gateway("standard").await;
    let (status, headers, body) = send(get(&gw.url("/admin/users"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["x-portcullis-reason"], "ip_not_allowed");
    assert_eq!(headers["x-portcullis-rule"], "admin-console");
    assert_eq!(headers["cache-control"], "no-store");
    let problem = json(&body);
    assert_eq!(problem["type"], "urn:portcullis:reason:ip_not_allowed");
    assert_eq!(problem["title"], "Forbidden");
    assert_eq!(problem["status"], 403);
    assert_eq!(problem["reason"], "ip_not_allowed");
    assert_eq!(problem["rule"], "admin-console");
    assert_eq!(
        problem["detail"],
        "Your network is not allowed for this path."
    );
    assert_eq!(problem["help"], "https://access.example.com/admin");
    assert_eq!(
        problem["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
    assert_eq!(
        problem["closest"],
        serde_json::json!([{"rule": "admin-console", "reason": "ip_not_allowed"}])
    );
    assert!(problem.get("trace").is_none());
    assert!(
        !body.contains("203.0.113") && !body.contains("office"),
        "{body}"
    );
    assert!(
        up.seen().is_empty(),
        "a denied request reached the upstream"
    );

    let (status, headers, body) = send(get(&gw.url("/public/internal/plan"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-portcullis-reason"], "explicit_deny");
    assert_eq!(json(&body)["help"], "https://help.example.com/");

    let (_, _, body) = send(get(&gw.url("/billing"))).await;
    let problem = json(&body);
    assert_eq!(problem["reason"], "no_matching_allow");
    assert!(problem.get("rule").is_none());

    let post = Request::post(gw.url("/public/x"))
        .body(ClientBody::default())
        .unwrap();
    let (status, _, body) = send(post).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["reason"], "method_not_allowed");
    assert_eq!(
        json(&body)["detail"],
        "POST is not allowed on this path; allowed methods: GET, HEAD."
    );
}

#[tokio::test]
async fn a_minimal_denial_says_only_the_reason() {
    let (_up, gw) = gateway("minimal").await;
    let (status, headers, body) = send(get(&gw.url("/admin/users"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-portcullis-reason"], "ip_not_allowed");
    assert!(!headers.contains_key("x-portcullis-rule"));
    let problem = json(&body);
    let mut keys: Vec<&str> = problem
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["reason", "request_id", "status", "title", "type"]);
}

#[tokio::test]
async fn a_verbose_denial_carries_the_trace() {
    let (_up, gw) = gateway("verbose").await;
    let (_, _, body) = send(get(&gw.url("/admin/users"))).await;
    let problem = json(&body);
    assert_eq!(
        problem["trace"],
        serde_json::json!([{
            "rule": "admin-console",
            "effect": "allow",
            "mode": "enforce",
            "outcome": "condition failed: client 127.0.0.1 does not satisfy @office"
        }])
    );
    // An audit rule that matched shows what it would have done.
    let request = Request::post(gw.url("/public/staged"))
        .body(ClientBody::default())
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let problem = json(&body);
    let audit: Vec<&serde_json::Value> = problem["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|step| step["mode"] == "audit")
        .collect();
    assert_eq!(audit.len(), 1, "{problem}");
    assert_eq!(audit[0]["rule"], "staged");
    assert_eq!(audit[0]["effect"], "deny");
}

#[tokio::test]
async fn browsers_get_a_plain_html_page_with_the_same_facts() {
    let (_up, gw) = gateway("standard").await;
    let request = Request::get(gw.url("/admin/users"))
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .body(ClientBody::default())
        .unwrap();
    let (status, headers, page) = send(request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["x-portcullis-reason"], "ip_not_allowed");
    let request_id = headers["x-request-id"].to_str().unwrap();
    for needle in [
        "<title>403 Forbidden</title>",
        "Your network is not allowed for this path.",
        "<code>ip_not_allowed</code>",
        "<code>admin-console</code>",
        request_id,
        "href=\"https://access.example.com/admin\"",
    ] {
        assert!(page.contains(needle), "{needle} missing from\n{page}");
    }
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("src="), "{page}");
    assert!(!page.contains("<link"), "{page}");
    assert!(!page.contains("203.0.113"), "{page}");
}

#[tokio::test]
async fn decisions_are_counted() {
    let (_up, gw) = gateway("standard").await;
    for path in ["/admin/a", "/admin/b", "/public/staged", "/public/x"] {
        send(get(&gw.url(path))).await;
    }
    let metrics = gw.metrics().await;
    for (series, value) in [
        (
            "portcullis_requests_total{decision=\"deny\",reason=\"ip_not_allowed\",route=\"main\"}",
            2.0,
        ),
        (
            "portcullis_requests_total{decision=\"allow\",reason=\"allowed\",route=\"main\"}",
            2.0,
        ),
        (
            "portcullis_rule_matches_total{effect=\"allow\",mode=\"enforce\",rule=\"public-read\"}",
            2.0,
        ),
        (
            "portcullis_rule_matches_total{effect=\"deny\",mode=\"audit\",rule=\"staged\"}",
            1.0,
        ),
        ("portcullis_decision_duration_seconds_count", 4.0),
        ("portcullis_policy_rules", 4.0),
    ] {
        assert_eq!(metric(&metrics, series), value, "{series}\n{metrics}");
    }
}

#[tokio::test]
async fn without_policy_files_everything_is_denied() {
    let up = TestUpstream::start("app").await;
    let scratch = Scratch::new();
    let path = scratch.write("gw.yaml", &config(&[up.url()], ""));
    let config = portcullis::config::load(&path).unwrap();
    assert!(
        config.warnings[0].to_string().contains("no policy files"),
        "{:?}",
        config.warnings
    );
    let gateway = portcullis::app::Gateway::start(&config).await.unwrap();
    let url = format!("http://{}/anything", gateway.listen_addrs()[0]);
    let (status, headers, _) = send(get(&url)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-portcullis-reason"], "no_matching_allow");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn connect_is_refused_with_405() {
    let (up, gw) = gateway("standard").await;
    let answer = raw_until_closed(
        gw.addr,
        b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nallow: get, head"),
        "{answer}"
    );
    assert!(answer.contains("connect_not_allowed"), "{answer}");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn case_insensitive_routes_decide_and_forward_lower_case() {
    let up = TestUpstream::start("app").await;
    let yaml = config(&[up.url()], "")
        .replace("upstream: app }", "upstream: app, case_insensitive: true }");
    let gw = TestGateway::with_policy(&yaml, POLICY).await;
    let (status, _, _) = send(get(&gw.url("/PUBLIC/ReadMe.TXT?Q=A"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.seen()[0].target, "/public/readme.txt?Q=A");
    let (status, headers, _) = send(get(&gw.url("/Admin/Users"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-portcullis-rule"], "admin-console");
}
