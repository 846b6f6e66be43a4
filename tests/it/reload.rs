//! Live reload through the real gateway: `POST /reload` and `/policy`, a broken file
//! that keeps the old policy serving, changes picked up from a file written in place, a
//! file renamed over, a ConfigMap-style symlink swap, and traffic that loses nothing
//! across 50 reloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::support::*;

const ALLOW_A: &str = "rules:\n  - { id: allow-a, effect: allow, match: { paths: [\"/a\"] } }\n";
const ALLOW_B: &str = "rules:\n  - { id: allow-b, effect: allow, match: { paths: [\"/b\"] } }\n  - { id: also-c, effect: allow, match: { paths: [\"/c\"] } }\n";

async fn status(gw: &TestGateway, path: &str) -> StatusCode {
    client().request(get(&gw.url(path))).await.unwrap().status()
}

/// Waits (at most 5 s) until `path` answers `expected`.
async fn eventually(gw: &TestGateway, path: &str, expected: StatusCode) {
    for _ in 0..100 {
        if status(gw, path).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} did not answer {expected} within 5s");
}

async fn policy(gw: &TestGateway) -> serde_json::Value {
    let (code, body) = gw.admin(Method::GET, "/policy").await;
    assert_eq!(code, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn post_reload_serves_the_edited_policy_and_reports_it() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy_watching(&config(&[up.url()], ""), ALLOW_A, false).await;
    assert_eq!(status(&gw, "/a").await, StatusCode::OK);
    assert_eq!(status(&gw, "/b").await, StatusCode::FORBIDDEN);
    let before = policy(&gw).await;
    assert_eq!(before["rules"], 1);
    assert_eq!(before["reloads"]["ok"], 0);
    assert!(
        before["files"][0]
            .as_str()
            .unwrap()
            .ends_with("policy.yaml")
    );
    let old_hash = before["hash"].as_str().unwrap().to_owned();
    assert_eq!(old_hash.len(), 16);

    gw.write("policy.yaml", ALLOW_B);
    assert_eq!(
        status(&gw, "/b").await,
        StatusCode::FORBIDDEN,
        "not watching: nothing changes until asked"
    );
    let (code, body) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["result"], "ok");
    let new_hash = answer["policy"]["hash"].as_str().unwrap().to_owned();
    assert_ne!(new_hash, old_hash);
    assert_eq!(answer["policy"]["rules"], 2);
    assert_eq!(status(&gw, "/a").await, StatusCode::FORBIDDEN);
    assert_eq!(status(&gw, "/b").await, StatusCode::OK);

    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, "portcullis_policy_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "portcullis_policy_reloads_total{result=\"error\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("portcullis_policy_info{{hash=\"{new_hash}\"}}")
        ),
        1.0
    );
    assert!(
        !metrics.contains(&old_hash),
        "only the serving hash is exported"
    );
    assert_eq!(metric(&metrics, "portcullis_policy_rules"), 2.0);
    assert_eq!(
        metric(
            &metrics,
            "portcullis_rule_matches_total{effect=\"allow\",mode=\"enforce\",rule=\"allow-b\"}"
        ),
        1.0
    );
    assert!(
        !metrics.contains("rule=\"allow-a\""),
        "the removed rule's series is gone:\n{metrics}"
    );
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_policy_serving() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy_watching(&config(&[up.url()], ""), ALLOW_A, false).await;
    gw.write(
        "policy.yaml",
        "rules:\n  - { id: allow-b, effect: alow, match: { paths: [\"/b\"] } }\n",
    );
    let (code, body) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["result"], "error");
    let error = answer["error"]["errors"][0].as_str().unwrap();
    assert!(
        error.contains("policy.yaml:2:") && error.contains("rules[0].effect"),
        "{error}"
    );
    assert_eq!(
        status(&gw, "/a").await,
        StatusCode::OK,
        "the old policy serves"
    );
    assert_eq!(status(&gw, "/b").await, StatusCode::FORBIDDEN);
    let shown = policy(&gw).await;
    assert_eq!(shown["last_error"]["errors"][0], error);
    assert_eq!(shown["reloads"]["error"], 1);
    assert_eq!(
        metric(
            &gw.metrics().await,
            "portcullis_policy_reloads_total{result=\"error\"}"
        ),
        1.0
    );

    gw.write("policy.yaml", ALLOW_B);
    let (code, _) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(status(&gw, "/b").await, StatusCode::OK);
    assert!(policy(&gw).await["last_error"].is_null());
}

#[tokio::test]
async fn changed_files_reload_whether_written_in_place_or_renamed_over() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy_watching(&config(&[up.url()], ""), ALLOW_A, true).await;
    assert_eq!(status(&gw, "/b").await, StatusCode::FORBIDDEN);
    gw.write("policy.yaml", ALLOW_B);
    eventually(&gw, "/b", StatusCode::OK).await;

    // A new file renamed over the old one, written outside the watched directory so that
    // only the rename happens in it.
    let elsewhere = Scratch::new();
    let staged = elsewhere.write("policy.yaml", ALLOW_A);
    let target = gw.write("probe", "").with_file_name("policy.yaml");
    std::fs::remove_file(target.with_file_name("probe")).unwrap();
    // Let the events of the probe pass, then rename.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status(&gw, "/a").await, StatusCode::FORBIDDEN);
    std::fs::rename(&staged, &target).unwrap();
    eventually(&gw, "/a", StatusCode::OK).await;
    assert_eq!(status(&gw, "/b").await, StatusCode::FORBIDDEN);

    // A broken save is reported and the last good policy keeps serving.
    gw.write("policy.yaml", "rules: [");
    for _ in 0..100 {
        if !policy(&gw).await["last_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!policy(&gw).await["last_error"].is_null());
    assert_eq!(status(&gw, "/a").await, StatusCode::OK);
}

#[tokio::test]
async fn a_configmap_symlink_swap_reloads() {
    // The layout kubelet gives a mounted ConfigMap: the files are symlinks through
    // `..data`, itself a symlink to a timestamped directory, swapped by a rename.
    let up = TestUpstream::start("app").await;
    let scratch = Scratch::new();
    let dir = scratch.path().to_owned();
    let version = |name: &str, policy: &str| {
        let versioned = dir.join(name);
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(
            versioned.join("gw.yaml"),
            format!(
                "{}\npolicy: {{ files: [policy.yaml] }}\n",
                config(&[up.url()], "")
            ),
        )
        .unwrap();
        std::fs::write(versioned.join("policy.yaml"), policy).unwrap();
    };
    version("..2026_11_28_01", ALLOW_A);
    std::os::unix::fs::symlink("..2026_11_28_01", dir.join("..data")).unwrap();
    for file in ["gw.yaml", "policy.yaml"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file)).unwrap();
    }
    let gw = TestGateway::from_file(&dir.join("gw.yaml"), scratch).await;
    assert_eq!(status(&gw, "/a").await, StatusCode::OK);

    // Kubelet writes the new version, then swaps the link: reloads the new directory may
    // cause meanwhile still read the old version through `..data`.
    version("..2026_11_28_02", ALLOW_B);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status(&gw, "/b").await, StatusCode::FORBIDDEN);
    std::os::unix::fs::symlink("..2026_11_28_02", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    eventually(&gw, "/b", StatusCode::OK).await;
    assert_eq!(status(&gw, "/a").await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn fifty_reloads_under_traffic_lose_no_request() {
    let one = TestUpstream::start("one").await;
    let two = TestUpstream::start("two").await;
    // Several workers: each reload reaches every one of them.
    let yaml = |target: &TestUpstream| {
        format!(
            "{}\npolicy: {{ files: [policy.yaml], watch: false }}\n",
            config(&[target.url()], "workers: 4\n")
        )
    };
    let gw = Arc::new(
        TestGateway::with_policy_watching(&config(&[one.url()], "workers: 4\n"), ALLOW_ALL, false)
            .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut traffic = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (gw, stop) = (gw.clone(), stop.clone());
        traffic.spawn(async move {
            // One keep-alive client each: connections live across reloads.
            let client = client();
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) && answers.len() < 100_000 {
                let response = client.request(get(&gw.url("/orders"))).await.unwrap();
                let status = response.status();
                let upstream = response.headers().get("x-upstream").cloned();
                answers.push((status, upstream));
            }
            answers
        });
    }
    for round in 0..50 {
        let target = if round % 2 == 0 { &two } else { &one };
        gw.write("gw.yaml", &yaml(target));
        let (code, body) = gw.admin(Method::POST, "/reload").await;
        assert_eq!(code, StatusCode::OK, "round {round}: {body}");
        // Every request from now on goes to the new upstream.
        let response = client().request(get(&gw.url("/orders"))).await.unwrap();
        let expected = if round % 2 == 0 { "two" } else { "one" };
        assert_eq!(response.headers()["x-upstream"], expected, "round {round}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    while let Some(answers) = traffic.join_next().await {
        for (status, upstream) in answers.unwrap() {
            total += 1;
            assert_eq!(status, StatusCode::OK);
            let upstream = upstream.expect("answered by an upstream");
            assert!(upstream == "one" || upstream == "two", "{upstream:?}");
        }
    }
    assert!(
        total >= 50,
        "traffic flowed during the reloads ({total} requests)"
    );
    assert_eq!(policy(&gw).await["reloads"]["ok"], 50);
}

#[tokio::test]
async fn settings_that_need_a_restart_are_reported() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy_watching(&config(&[up.url()], ""), ALLOW_A, false).await;
    gw.write(
        "gw.yaml",
        &format!(
            "{}\npolicy: {{ files: [policy.yaml], watch: false }}\n",
            config(
                &[up.url()],
                "limits: { max_connections: 7, header_memory: 32MiB }\nworkers: 3\n",
            )
            .replace(
                "listen: [{ addr: 127.0.0.1:0 }]",
                "listen: [{ addr: 127.0.0.1:1 }]"
            )
        ),
    );
    let (code, body) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let restart: Vec<String> = policy(&gw).await["restart_needed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        restart,
        [
            "listen: 127.0.0.1:1 (serving on 127.0.0.1:0)",
            "limits.max_connections: 7 (enforcing 10000)",
            "limits.header_memory: 32MiB (enforcing 64MiB)",
            "workers: 3 (in force: auto)"
        ]
    );
    assert_eq!(
        status(&gw, "/a").await,
        StatusCode::OK,
        "still serving where it was"
    );
}

#[tokio::test]
async fn post_explain_decides_with_the_serving_policy() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy_watching(&config(&[up.url()], ""), ALLOW_A, false).await;
    let explain = |body: serde_json::Value| {
        let admin = gw.admin;
        async move {
            let request = http::Request::post(format!("http://{admin}/explain"))
                .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                    bytes::Bytes::from(body.to_string()),
                )))
                .unwrap();
            let response = client().request(request).await.unwrap();
            let status = response.status();
            let text = body_text(response).await;
            (
                status,
                serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            )
        }
    };
    let (code, answer) = explain(serde_json::json!({ "url": "/a" })).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(answer["decision"], "allow", "{answer}");
    assert_eq!(answer["rule"], "allow-a");
    let (_, answer) =
        explain(serde_json::json!({ "method": "DELETE", "url": "/b", "ip": "203.0.113.9" })).await;
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(answer["reason"], "no_matching_allow");
    assert_eq!(answer["client_ip"], "203.0.113.9");
    // The state it decides with is the one serving: after a reload, the new policy.
    gw.write("policy.yaml", ALLOW_B);
    assert_eq!(gw.admin(Method::POST, "/reload").await.0, StatusCode::OK);
    let (_, answer) = explain(serde_json::json!({ "url": "/b" })).await;
    assert_eq!(answer["rule"], "allow-b", "{answer}");
    let (code, answer) = explain(serde_json::json!({ "path": "/b" })).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `path`"),
        "{answer}"
    );
    // Only the admin listener answers it.
    let request = http::Request::post(gw.url("/explain"))
        .body(ClientBody::default())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the proxy decides it like any path"
    );
}

#[tokio::test]
async fn a_request_in_flight_finishes_under_the_state_it_started_with() {
    let up = TestUpstream::start("app").await;
    let allow_slow = "rules:\n  - { id: slow, effect: allow, match: { paths: [\"/slow/**\"] } }\n";
    let gw = Arc::new(
        TestGateway::with_policy_watching(&config(&[up.url()], ""), allow_slow, false).await,
    );
    let in_flight = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let response = client().request(get(&gw.url("/slow/800"))).await.unwrap();
            (response.status(), body_text(response).await)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.write("policy.yaml", ALLOW_A);
    assert_eq!(gw.admin(Method::POST, "/reload").await.0, StatusCode::OK);
    assert_eq!(
        status(&gw, "/slow/1").await,
        StatusCode::FORBIDDEN,
        "new requests: new policy"
    );
    let (code, body) = in_flight.await.unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body, "slept 800ms");
}

#[tokio::test]
async fn a_changed_list_file_reloads() {
    let up = TestUpstream::start("app").await;
    let policy = "lists:\n  office: { file: office.txt }\nrules:\n  - { id: office, effect: allow, when: { ip: [\"@office\"] } }\n";
    let scratch = Scratch::new();
    scratch.write("office.txt", "203.0.113.0/24\n");
    scratch.write("policy.yaml", policy);
    let path = scratch.write(
        "gw.yaml",
        &format!(
            "{}\npolicy: {{ files: [policy.yaml] }}\n",
            config(&[up.url()], "")
        ),
    );
    let gw = TestGateway::from_file(&path, scratch).await;
    assert_eq!(status(&gw, "/").await, StatusCode::FORBIDDEN);
    gw.write("office.txt", "203.0.113.0/24\n127.0.0.1/32\n");
    eventually(&gw, "/", StatusCode::OK).await;
}

#[tokio::test]
async fn admin_changes_are_refused_from_browsers() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy_watching(&config(&[up.url()], ""), ALLOW_A, false).await;
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let request = http::Request::post(format!("http://{}/reload", gw.admin))
            .header(name, value)
            .body(ClientBody::default())
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}");
    }
    assert_eq!(policy(&gw).await["reloads"]["ok"], 0);
}

/// DNS rebinding: a page whose name resolves to the admin address sends its own name in
/// `Host`; only IP addresses, `localhost` and `admin.allowed_hosts` are answered.
#[tokio::test]
async fn admin_requests_must_name_the_admin_listener() {
    let up = TestUpstream::start("app").await;
    let yaml = config(&[up.url()], "").replace(
        "admin: { addr: 127.0.0.1:0 }",
        "admin: { addr: 127.0.0.1:0, allowed_hosts: [portcullis-admin.ops, \"*.svc.cluster.local\"] }",
    );
    let gw = TestGateway::start(&yaml).await;
    let port = gw.admin.port();
    for (host, expected) in [
        (format!("127.0.0.1:{port}"), StatusCode::OK),
        (format!("localhost:{port}"), StatusCode::OK),
        (format!("[::1]:{port}"), StatusCode::OK),
        ("portcullis-admin.ops".to_owned(), StatusCode::OK),
        (format!("gw.ops.svc.cluster.local:{port}"), StatusCode::OK),
        (format!("evil.example:{port}"), StatusCode::FORBIDDEN),
        ("localhost.evil.example".to_owned(), StatusCode::FORBIDDEN),
        ("svc.cluster.local".to_owned(), StatusCode::FORBIDDEN),
        ("a b".to_owned(), StatusCode::FORBIDDEN),
    ] {
        for path in ["/metrics", "/policy"] {
            let answer = raw_exchange(
                gw.admin,
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
                Duration::from_secs(5),
            )
            .await;
            let status = answer.split(' ').nth(1).unwrap_or_default();
            assert_eq!(status, expected.as_str(), "{host} {path}: {answer:.200}");
        }
    }
    // Two hosts are one too many.
    let answer = raw_exchange(
        gw.admin,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
}
