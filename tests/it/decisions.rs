//! Decisions after the fact: what a decision-log line records (enough to decide the
//! request again, never a credential), the recent decisions on the admin listener and
//! `portcullis why`, and `portcullis replay` of a recorded log against candidate configs.

use std::process::{Command, Stdio};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use http::{Method, StatusCode};

use crate::support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

/// The API key "secret", as `bot` with role viewer and scope orders:read.
const API_KEY: &str = "{ id: bot, sha256: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b, roles: [viewer], scopes: [\"orders:read\"] }";

const POLICY: &str = "\
rules:
  - id: public-read
    effect: allow
    match: { paths: [\"/public/**\"], methods: [GET] }
  - id: orders-read
    effect: allow
    match: { paths: [\"/tenants/{tenant}/orders/**\"], methods: [GET] }
    when: { roles: { any: [viewer, editor] }, claims: { tenant: \"{tenant}\" } }
  - id: orders-write
    effect: allow
    match: { paths: [\"/tenants/{tenant}/orders/**\"], methods: [POST] }
    when: { scopes: { all: [\"orders:write\"] }, claims: { tenant: \"{tenant}\" } }
  - id: staging-api
    effect: allow
    match: { paths: [\"/api/**\"] }
    when: { headers: { x-env: staging, x-session-hint: \"*\" } }
  - id: bots
    effect: allow
    match: { paths: [\"/bots/**\"] }
    when: { headers: { cookie: \"*\" } }
  - id: credential-readers
    effect: allow
    match: { paths: [\"/never/**\"] }
    when: { headers: { authorization: \"*\", x-api-key: \"*\", proxy-authorization: \"*\" } }
";

/// A token issuer whose Ed25519 key is generated here; its JWKS is a file beside the
/// config.
struct Issuer {
    pkcs8: Vec<u8>,
    jwks: String,
}

impl Issuer {
    fn new() -> Issuer {
        use base64::Engine as _;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key());
        Issuer {
            pkcs8: pkcs8.as_ref().to_vec(),
            jwks: serde_json::json!({ "keys": [
                { "kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "x": x }
            ]})
            .to_string(),
        }
    }

    /// A token for `sub` with these roles, scopes and tenant, and a claim no rule reads.
    fn token(&self, sub: &str, roles: &[&str], scope: &str, tenant: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "iss": "https://idp.example/", "aud": "orders-api", "sub": sub,
            "exp": now + 600, "scope": scope, "roles": roles, "tenant": tenant,
            "email": "unread@example.com",
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("k1".to_owned());
        let key = jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

/// The config text of the gateway under test, with `log` as its log section.
fn gateway_config(upstream: &str, log: &str) -> String {
    config(
        &[upstream.to_owned()],
        &format!(
            "log: {log}\nidentity:\n  api_keys: {{ keys: [{API_KEY}] }}\n  jwt:\n    - {{ id: corp, issuer: \"https://idp.example/\", audiences: [orders-api], jwks_file: jwks.json, algorithms: [EdDSA] }}\n"
        ),
    )
}

/// Starts the gateway with `log` as its log section.
async fn start(issuer: &Issuer, log: &str) -> (TestUpstream, TestGateway) {
    let up = TestUpstream::start("app").await;
    let scratch = Scratch::new();
    scratch.write("jwks.json", &issuer.jwks);
    scratch.write("policy.yaml", POLICY);
    let path = scratch.write(
        "gw.yaml",
        &format!(
            "{}policy: {{ files: [policy.yaml], watch: false }}\n",
            gateway_config(&up.url(), log)
        ),
    );
    (up, TestGateway::from_file(&path, scratch).await)
}

/// Sends a request; its status and request id.
async fn send(
    gw: &TestGateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let response = send_request(method, &gw.url(path), headers).await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.status(), id)
}

/// The line of `id` among `lines`.
fn line_of<'l>(lines: &'l [serde_json::Value], id: &str) -> &'l serde_json::Value {
    lines
        .iter()
        .find(|line| line["request.id"] == id)
        .unwrap_or_else(|| panic!("no line for {id}: {lines:#?}"))
}

#[tokio::test]
async fn a_line_holds_what_deciding_again_needs_and_never_a_credential() {
    let issuer = Issuer::new();
    let (_up, gw) = start(
        &issuer,
        "{ decisions: decisions.log, redact_headers: [X-Session-Hint] }",
    )
    .await;
    let token = issuer.token("alice", &["editor"], "orders:read", "acme");
    let bearer = format!("Bearer {token}");
    let (status, read) = send(
        &gw,
        Method::GET,
        "/tenants/acme/orders/7",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, write) = send(
        &gw,
        Method::POST,
        "/tenants/acme/orders/7",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, staging) = send(
        &gw,
        Method::GET,
        "/api/x",
        &[
            ("x-env", "prod"),
            ("x-env", "staging"),
            ("x-session-hint", "hint-s3cret"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, bot) = send(
        &gw,
        Method::GET,
        "/bots/x",
        &[("x-api-key", "secret"), ("cookie", "session=c00kie")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&gw, Method::GET, "/a%2fb", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let lines = decision_lines(&gw, 5).await;
    assert_eq!(lines.len(), 5, "{lines:#?}");
    lines.iter().for_each(assert_decision_log_fields);

    let read = line_of(&lines, &read);
    assert_eq!(read["url.domain"], "127.0.0.1");
    assert_eq!(read["url.path"], "/tenants/acme/orders/7");
    assert_eq!(read["principal.id"], "alice");
    assert_eq!(read["principal.issuer"], "https://idp.example/");
    assert_eq!(read["principal.roles"], serde_json::json!(["editor"]));
    assert_eq!(read["principal.scopes"], serde_json::json!(["orders:read"]));
    // Only the claims that rules compare.
    assert_eq!(
        read["principal.claims"],
        serde_json::json!({ "tenant": "acme" })
    );
    // Every header rules read, but credentials and log.redact_headers.
    assert_eq!(
        read["http.request.headers"],
        serde_json::json!({ "x-env": [] })
    );
    assert_eq!(read["decision.explanation"], "allowed");

    let write = line_of(&lines, &write);
    assert_eq!(write["decision.reason"], "missing_scope");
    assert_eq!(write["rule.id"], "orders-write");
    assert_eq!(
        write["decision.explanation"],
        "requires scope orders:write; caller has orders:read"
    );

    let staging = line_of(&lines, &staging);
    assert_eq!(
        staging["http.request.headers"],
        serde_json::json!({ "x-env": ["prod", "staging"] })
    );
    let bot = line_of(&lines, &bot);
    // Rules read Cookie, Authorization, Proxy-Authorization and the API-key header: none
    // of them is recorded.
    assert_eq!(
        bot["http.request.headers"],
        serde_json::json!({ "x-env": [] })
    );
    assert_eq!(bot["principal.id"], "bot");
    assert_eq!(bot["principal.issuer"], "api-key");
    assert_eq!(
        bot["principal.claims"],
        serde_json::json!({ "tenant": null })
    );

    let text = std::fs::read_to_string(gw.file("decisions.log")).unwrap();
    for secret in [
        &token[..],
        "secret\"",
        "hint-s3cret",
        "c00kie",
        "unread@example.com",
    ] {
        assert!(!text.contains(secret), "{secret} is in the log:\n{text}");
    }
}

#[tokio::test]
async fn recent_decisions_are_looked_up_by_id_until_they_roll_out() {
    let issuer = Issuer::new();
    // The ring works with the sink off.
    let (_up, gw) = start(&issuer, "{ decisions: off, recent: 40 }").await;
    let (status, denied) = send(&gw, Method::POST, "/public/x", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // At once: found whether still in its thread's batch or written to the ring.
    let (status, body) = gw.admin(Method::GET, &format!("/decisions/{denied}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let line: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_decision_log_fields(&line);
    assert_eq!(line["decision.reason"], "method_not_allowed");

    // `why` against the live gateway, as a support engineer runs it.
    let admin = gw.admin.to_string();
    let why = {
        let denied = denied.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(BINARY)
                .args(["why", &denied, "--admin", &admin])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(why.status.success(), "{why:?}");
    let text = String::from_utf8(why.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "request:  POST 127.0.0.1/public/x from 127.0.0.1\nid:       {denied} at "
        )),
        "{text}"
    );
    let trace = format!(
        "\n  {:<24} allow enforce not applicable: method POST is not one of GET\n",
        "public-read"
    );
    for expected in [
        "\nroute:    main\n",
        "\ncaller:   anonymous\n",
        "\ndecision: deny (403 method_not_allowed) by rule public-read\n",
        "\nwhy:      method POST is not one of GET\n",
        &trace,
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }

    let (status, body) = gw.admin(Method::GET, "/decisions/NO-SUCH-ID").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("no decision for request id \\\"NO-SUCH-ID\\\""),
        "{body}"
    );
    let admin = gw.admin.to_string();
    let unknown = tokio::task::spawn_blocking(move || {
        Command::new(BINARY)
            .args(["why", "NO-SUCH-ID", "--admin", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let said = String::from_utf8(unknown.stderr).unwrap();
    assert!(
        said.contains("answered 404: no decision for request id"),
        "{said}"
    );

    // A flood of 400 requests: the ring keeps about the last 40, never all of them.
    let mut last = String::new();
    for index in 0..400 {
        let (status, id) = send(&gw, Method::GET, &format!("/public/{index}"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        last = id;
    }
    let (status, body) = gw.admin(Method::GET, "/decisions?limit=1001").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "at most 1000: {body}");
    let (status, body) = gw.admin(Method::GET, "/decisions?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let count = listed["count"].as_u64().unwrap();
    // Whole batches go: the newest may hold more than 40, and lines not yet written are
    // listed too (each at most 64 KiB, about 100 of these lines).
    assert!((40..=240).contains(&count), "{count} kept");
    assert_eq!(listed["recent"], 40);
    let (status, _) = gw.admin(Method::GET, &format!("/decisions/{denied}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "rolled out");
    let (status, _) = gw.admin(Method::GET, &format!("/decisions/{last}")).await;
    assert_eq!(status, StatusCode::OK);

    // Selection by reason and rule, newest first.
    send(&gw, Method::DELETE, "/public/a", &[]).await;
    // Lines are ordered by their time, to the millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    send(&gw, Method::PUT, "/public/b", &[]).await;
    let (status, body) = gw
        .admin(
            Method::GET,
            "/decisions?reason=method_not_allowed&rule=public-read&limit=1",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["count"], 1, "{listed:#}");
    assert_eq!(listed["decisions"][0]["http.method"], "PUT");
    let (status, body) = gw.admin(Method::GET, "/decisions?reasn=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("\\\"reasn\\\" is not a filter"), "{body}");
}

#[tokio::test]
async fn no_decisions_are_kept_at_recent_zero() {
    let issuer = Issuer::new();
    let (_up, gw) = start(&issuer, "{ decisions: off, recent: 0 }").await;
    let (_, id) = send(&gw, Method::POST, "/public/x", &[]).await;
    let (status, body) = gw.admin(Method::GET, &format!("/decisions/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("log.recent is 0"), "{body}");
}

/// Runs `portcullis replay` with `args`, `input` on its stdin: exit code, stdout, stderr.
async fn replay(args: Vec<String>, input: impl Into<Vec<u8>>) -> (Option<i32>, String, String) {
    let input = input.into();
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = Command::new(BINARY)
            .arg("replay")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&input).unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn replay_says_what_a_policy_change_would_change() {
    let issuer = Issuer::new();
    let (up, gw) = start(
        &issuer,
        "{ decisions: decisions.log, redact_paths: [\"/public/reset/{token}\"] }",
    )
    .await;
    let alice = format!(
        "Bearer {}",
        issuer.token("alice", &["editor"], "orders:read orders:write", "acme")
    );
    let mut sent = 0;
    for index in 0..4 {
        let (status, _) = send(&gw, Method::GET, &format!("/public/{index}"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        sent += 1;
    }
    for _ in 0..3 {
        let (status, _) = send(&gw, Method::POST, "/public/form", &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        sent += 1;
    }
    for path in ["/tenants/acme/orders/1", "/tenants/acme/orders/2"] {
        let (status, _) = send(&gw, Method::GET, path, &[("authorization", &alice)]).await;
        assert_eq!(status, StatusCode::OK);
        sent += 1;
    }
    let (status, _) = send(
        &gw,
        Method::GET,
        "/tenants/acme/orders/3",
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&gw, Method::GET, "/a%2fb", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(&gw, Method::GET, "/public/reset/s3cret", &[]).await;
    assert_eq!(status, StatusCode::OK);
    sent += 3;
    let lines = decision_lines(&gw, sent).await;
    assert_eq!(lines.len(), sent);
    let written = std::fs::read_to_string(gw.file("decisions.log")).unwrap();
    assert!(written.contains("\"/public/reset/{token}\""), "{written}");
    // A process log line among them, as on a shared stderr; without the redacted line.
    let recorded = format!(
        "2026-12-07T07:09:14.823133Z  INFO portcullis::app: portcullis started\n{}",
        (written.lines())
            .filter(|line| !line.contains("/public/reset/"))
            .map(|line| format!("{line}\n"))
            .collect::<String>()
    );

    // Candidates beside the live config, reading the same key set.
    let candidate = |name: &str, policy: &str| -> String {
        let policy_file = format!("{name}.policy.yaml");
        gw.write(&policy_file, policy);
        gw.write(
            &format!("{name}.yaml"),
            &format!(
                "{}policy: {{ files: [{policy_file}], watch: false }}\n",
                gateway_config(&up.url(), "{ decisions: off }")
            ),
        )
        .display()
        .to_string()
    };
    let unchanged = candidate("unchanged", POLICY);
    let tightened = candidate(
        "tightened",
        &POLICY.replace(
            "[\"/public/**\"], methods: [GET]",
            "[\"/public/docs/**\"], methods: [GET]",
        ),
    );
    let loosened = candidate(
        "loosened",
        &POLICY.replace(
            "methods: [GET] }\n  - id: orders-read",
            "methods: [GET, POST] }\n  - id: orders-read",
        ),
    );
    let reads_header = candidate(
        "reads-header",
        &POLICY.replace(
            "[\"/public/**\"], methods: [GET] }",
            "[\"/public/**\"], methods: [GET] }\n    when: { headers: { x-new: \"*\" } }",
        ),
    );
    // A country rule that applies everywhere, the country taken from a CDN's header.
    let names_countries = {
        let policy_file = "countries.policy.yaml";
        gw.write(
            policy_file,
            &format!("{POLICY}  - {{ id: embargo, effect: deny, when: {{ countries: [KP] }} }}\n"),
        );
        gw.write(
            "countries.yaml",
            &format!(
                "{}policy: {{ files: [{policy_file}], watch: false }}\nnetwork: {{ trusted_proxies: [127.0.0.1], geoip: {{ header: CF-IPCountry }} }}\n",
                gateway_config(&up.url(), "{ decisions: off }")
            ),
        )
        .display()
        .to_string()
    };
    let reads_org = candidate(
        "reads-org",
        &POLICY.replace(
            "claims: { tenant: \"{tenant}\" } }\n  - id: orders-write",
            "claims: { tenant: \"{tenant}\", org: acme } }\n  - id: orders-write",
        ),
    );
    let json = |config: &str, fail_on: &str| {
        ["-c", config, "--format", "json", "--fail-on", fail_on]
            .map(str::to_owned)
            .to_vec()
    };
    let report = |stdout: &str| -> serde_json::Value { serde_json::from_str(stdout).unwrap() };

    let (code, stdout, stderr) = replay(json(&unchanged, "any"), recorded.clone()).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let found = report(&stdout);
    assert_eq!(found["lines"], sent);
    assert_eq!(found["replayed"], 9);
    assert_eq!(found["unchanged"], 9);
    assert_eq!(found["not_replayed"]["refused_before_deciding"], 1);
    assert_eq!(found["not_replayed"]["credentials_refused"], 1);
    assert_eq!(found["not_replayed"]["not_decision_lines"], 1);
    assert_eq!(found["not_replayed"]["unreadable"], 0);
    assert_eq!(found["undecidable"]["count"], 0);

    // A path log.redact_paths cut is not guessed at; a gate fails on it.
    let (code, stdout, stderr) = replay(json(&unchanged, "never"), written.clone()).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let found = report(&stdout);
    assert_eq!(found["replayed"], 9);
    assert_eq!(
        found["undecidable"]["why"]["log.redact_paths left part of the path out"], 1,
        "{found:#}"
    );
    let (code, _, stderr) = replay(json(&unchanged, "allow-to-deny"), written.clone()).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("replay: failing: 1 line could not be decided again"),
        "{stderr}"
    );

    // Lines that look like decisions but do not read as one are counted, never replayed.
    let mut damaged = recorded.clone().into_bytes();
    damaged
        .extend_from_slice(b"{\"decision.reason\":\"allowed\"}\n{\"decision.reason\":\"\xff\"}\n");
    let (code, stdout, stderr) = replay(json(&unchanged, "any"), damaged).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(report(&stdout)["not_replayed"]["unreadable"], 2);
    assert!(stderr.contains("2 lines could not be read"), "{stderr}");

    let (code, stdout, _) = replay(json(&tightened, "allow-to-deny"), recorded.clone()).await;
    assert_eq!(code, Some(1), "{stdout}");
    let found = report(&stdout);
    assert_eq!(found["changed"]["allow_to_deny"], 4, "{found:#}");
    assert_eq!(found["changed"]["deny_to_allow"], 0);
    // The POSTs are still denied, now with no rule close.
    assert_eq!(found["changed"]["reason_or_rule"], 3);
    let group = &found["groups"][0];
    assert_eq!(group["change"], "allow_to_deny");
    assert_eq!(group["route"], "main");
    assert_eq!(group["from"]["rule"], "public-read");
    assert_eq!(group["to"]["reason"], "no_matching_allow");
    assert_eq!(group["examples"].as_array().unwrap().len(), 3);

    let (code, stdout, _) = replay(json(&loosened, "allow-to-deny"), recorded.clone()).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(report(&stdout)["changed"]["deny_to_allow"], 3);
    let (code, _, _) = replay(json(&loosened, "any"), recorded.clone()).await;
    assert_eq!(code, Some(1));

    let (code, stdout, stderr) = replay(json(&reads_org, "any"), recorded.clone()).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stderr.contains("2 lines could not be decided again"),
        "{stderr}"
    );
    let found = report(&stdout);
    assert_eq!(found["undecidable"]["count"], 2, "{found:#}");
    assert_eq!(
        found["undecidable"]["why"]["the log has no value for claim org (no rule read it then)"],
        2
    );
    assert_eq!(found["replayed"], 7);

    let (_, stdout, _) = replay(json(&reads_header, "never"), recorded.clone()).await;
    let found = report(&stdout);
    assert_eq!(found["undecidable"]["count"], 7, "{found:#}");
    assert_eq!(
        found["undecidable"]["why"]["the log has no value for header x-new (a credential, or in log.redact_headers, or no rule read it then)"],
        7
    );
    assert_eq!(found["replayed"], 2);

    let (_, stdout, stderr) = replay(json(&names_countries, "never"), recorded.clone()).await;
    let found = report(&stdout);
    assert_eq!(
        found["undecidable"]["why"]["the log has no country (no rule named countries then)"], 9,
        "{found:#}{stderr}"
    );
    assert_eq!(found["replayed"], 0);

    // Text for a person, from a file.
    let log = gw.file("decisions.log").display().to_string();
    let (code, stdout, _) = replay(vec!["-c".into(), tightened, log], String::new()).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("9 decisions decided again under "),
        "{stdout}"
    );
    assert!(
        stdout.contains("allow → deny (4):\n       4  route main: allow by public-read → deny no_matching_allow\n          e.g. "),
        "{stdout}"
    );
    assert!(
        stdout.contains("       1  credentials refused: identity is not replayed\n"),
        "{stdout}"
    );
}
