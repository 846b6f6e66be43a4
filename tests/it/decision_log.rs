//! The decision log written to a file: one JSON line per decided or refused request,
//! allowed requests sampled, denials always there, the file reopened on reload.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::support::*;

const POLICY: &str = "rules:\n  - { id: allow-a, effect: allow, match: { paths: [\"/a\"] } }\n  - { id: watch-b, effect: deny, mode: audit, match: { paths: [\"/b\"] } }\n";

/// The log's lines once it has `count` (a writer thread writes them: waits at most 5 s),
/// after a moment for any line beyond them to show.
async fn lines(gw: &TestGateway, count: usize) -> Vec<serde_json::Value> {
    decision_lines(gw, count).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    decision_lines(gw, 0).await
}

#[tokio::test]
async fn denials_are_always_logged_and_allows_as_sampled() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy(
        &config(
            &[up.url()],
            "log: { decisions: decisions.log, sample_allows: 0 }\nidentity: { api_keys: { keys: [{ id: bot, sha256: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b }] } }\n",
        ),
        POLICY,
    )
    .await;
    let send = |path: &'static str, key: Option<&'static str>| {
        let url = gw.url(path);
        async move {
            let mut request = http::Request::get(url);
            if let Some(key) = key {
                request = request.header("x-api-key", key);
            }
            let request = request.body(ClientBody::default()).unwrap();
            client().request(request).await.unwrap().status()
        }
    };
    for _ in 0..3 {
        assert_eq!(send("/a", None).await, StatusCode::OK);
    }
    assert_eq!(send("/b", Some("secret")).await, StatusCode::FORBIDDEN);
    let refused = raw_exchange(
        gw.addr,
        b"delete /a HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");

    let logged = lines(&gw, 2).await;
    assert_eq!(
        logged.len(),
        2,
        "one denial, one refusal, no allow: {logged:?}"
    );
    logged.iter().for_each(assert_decision_log_fields);
    let denial = &logged[0];
    assert_eq!(denial["decision"], "deny");
    assert_eq!(denial["decision.reason"], "no_matching_allow");
    assert_eq!(denial["url.path"], "/b");
    assert_eq!(denial["route.id"], "main");
    assert_eq!(denial["principal.id"], "bot");
    assert_eq!(denial["audit"][0], "watch-b:would_deny");
    assert_eq!(denial["request.id"].as_str().unwrap().len(), 26);
    assert!(denial["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(
        denial["trace"]
            .as_array()
            .is_some_and(|trace| !trace.is_empty())
    );
    assert_eq!(logged[1]["decision"], "error");
    assert_eq!(logged[1]["decision.reason"], "bad_request");
    let text = std::fs::read_to_string(gw.file("decisions.log")).unwrap();
    assert!(!text.contains("secret"), "the key never reaches the log");

    // Every allow logged after a reload to sample_allows: 1; the file is appended to.
    gw.write(
        "gw.yaml",
        &format!(
            "{}\npolicy: {{ files: [policy.yaml], watch: false }}\n",
            config(&[up.url()], "log: { decisions: decisions.log }\n")
        ),
    );
    assert_eq!(gw.admin(Method::POST, "/reload").await.0, StatusCode::OK);
    assert_eq!(send("/a", None).await, StatusCode::OK);
    let logged = lines(&gw, 3).await;
    assert_eq!(logged.len(), 3, "{logged:?}");
    assert_eq!(logged[2]["decision"], "allow");
    assert_eq!(logged[2]["rule.id"], "allow-a");
}

#[tokio::test]
async fn a_decision_log_that_cannot_be_opened_fails_the_reload() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy(&config(&[up.url()], ""), POLICY).await;
    gw.write(
        "gw.yaml",
        &format!(
            "{}\npolicy: {{ files: [policy.yaml], watch: false }}\n",
            config(
                &[up.url()],
                "log: { decisions: no-such-dir/decisions.log }\n"
            )
        ),
    );
    let (code, body) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("cannot open the decision log"), "{body}");
    assert_eq!(
        client().request(get(&gw.url("/a"))).await.unwrap().status(),
        StatusCode::OK,
        "the old state serves on"
    );
}

#[tokio::test]
async fn a_decision_log_beside_the_config_does_not_trigger_reloads() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy_watching(
        &config(&[up.url()], "log: { decisions: decisions.log }\n"),
        POLICY,
        true,
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            client().request(get(&gw.url("/a"))).await.unwrap().status(),
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines(&gw, 5).await.len(), 5);
    // Past the watcher's gathering time: any reload the appends caused has happened.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, body) = gw.admin(Method::GET, "/policy").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reloads"]["ok"], 0, "{status}");
    // An edit beside it still does.
    gw.write("policy.yaml", "rules: [{ id: allow-all, effect: allow }]\n");
    for _ in 0..100 {
        let (_, body) = gw.admin(Method::GET, "/policy").await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status["reloads"]["ok"] == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the policy edit was not reloaded");
}

/// Secrets in paths stay out of the log where `log.redact_paths` says they are; the
/// upstream still gets the whole path.
#[tokio::test]
async fn redacted_path_segments_never_reach_the_log() {
    let up = TestUpstream::start("app").await;
    let policy =
        "rules:\n  - { id: resets, effect: allow, match: { paths: [\"/reset/*\", \"/a\"] } }\n";
    let gw = TestGateway::with_policy(
        &config(
            &[up.url()],
            "log: { decisions: decisions.log, redact_paths: [\"/reset/{token}\"] }\n",
        ),
        policy,
    )
    .await;
    for path in ["/reset/s3cr3t-t0ken", "/a"] {
        let status = client().request(get(&gw.url(path))).await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let logged = lines(&gw, 2).await;
    let paths: Vec<&str> = logged
        .iter()
        .filter_map(|line| line["url.path"].as_str())
        .collect();
    assert_eq!(paths, ["/reset/{token}", "/a"]);
    let text = std::fs::read_to_string(gw.file("decisions.log")).unwrap();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert_eq!(up.seen()[0].target, "/reset/s3cr3t-t0ken");
}

/// Lines wait in their thread's batch for at most 100 ms; a graceful shutdown writes them
/// all before it returns.
#[tokio::test]
async fn a_graceful_shutdown_writes_every_line_before_it_returns() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy(
        &config(&[up.url()], "log: { decisions: decisions.log }\n"),
        POLICY,
    )
    .await;
    const REQUESTS: usize = 40;
    for _ in 0..REQUESTS {
        let status = client().request(get(&gw.url("/a"))).await.unwrap().status();
        assert_eq!(status, StatusCode::OK);
    }
    let log = gw.file("decisions.log");
    let (drained, _scratch) = gw.shutdown().await;
    assert_eq!(drained, portcullis::app::Drained::Clean);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), REQUESTS, "{text}");
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(line["decision"], "allow");
    }
}

/// A sink that takes nothing (a FIFO whose reader never reads) never holds a request up:
/// once 4 MiB of lines wait, further lines are dropped and counted.
#[tokio::test]
async fn lines_are_dropped_and_counted_when_the_sink_blocks() {
    let up = TestUpstream::start("app").await;
    let scratch = Scratch::new();
    let fifo = scratch.path().join("decisions.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|status| status.success()), "mkfifo");
    // Opening a FIFO blocks until its other end is opened: the reader opens in a thread
    // of its own, then holds the FIFO open without reading.
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::File::open(fifo).expect("the FIFO opens for reading")
    });
    // Forty rules in each denial's trace: lines of a few KiB fill the queue sooner.
    let mut policy = String::from("rules:\n");
    for index in 0..40 {
        policy.push_str(&format!(
            "  - {{ id: office-{index}, effect: allow, when: {{ ip: [10.{index}.0.0/16] }} }}\n"
        ));
    }
    scratch.write("policy.yaml", &policy);
    let path = scratch.write(
        "gw.yaml",
        &format!(
            "{}policy: {{ files: [policy.yaml], watch: false }}\n",
            config(&[up.url()], "log: { decisions: decisions.fifo }\n")
        ),
    );
    let gw = TestGateway::from_file(&path, scratch).await;
    let _reader = reader.join().unwrap();

    let mut answered = 0;
    for round in 0..60 {
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..50 {
            requests.spawn(client().request(get(&gw.url("/denied"))));
        }
        while let Some(response) = requests.join_next().await {
            assert_eq!(response.unwrap().unwrap().status(), StatusCode::FORBIDDEN);
            answered += 1;
        }
        let dropped = metric(&gw.metrics().await, "portcullis_decision_log_dropped_total");
        if dropped > 0.0 {
            assert!(round > 0, "nothing is dropped before the queue is full");
            return;
        }
    }
    panic!("{answered} denials answered, no line counted as dropped");
}
