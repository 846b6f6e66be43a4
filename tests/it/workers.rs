//! Several workers, each with its own sockets, upstream pools and metrics shard: the
//! metrics summed at scrape time stay exact, and no counter ever goes down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::StatusCode;

use crate::support::*;

const REQUESTS: &str =
    "portcullis_requests_total{decision=\"allow\",reason=\"allowed\",route=\"main\"}";
const DURATIONS: &str = "portcullis_request_duration_seconds_count";

#[tokio::test]
async fn metrics_summed_over_workers_are_exact_and_never_go_down() {
    let up = TestUpstream::start("app").await;
    let gw = Arc::new(
        TestGateway::with_policy(
            &config(&[up.url()], "workers: 4\n"),
            "rules: [{ id: everyone, effect: allow }]\n",
        )
        .await,
    );
    // A scraper reads the metrics all along: every scrape sees sums at least as large
    // as the one before.
    let done = Arc::new(AtomicBool::new(false));
    let scraper = tokio::spawn({
        let (gw, done) = (gw.clone(), done.clone());
        async move {
            let mut last = (0.0, 0.0);
            let mut scrapes = 0;
            while !done.load(Ordering::Relaxed) && scrapes < 10_000 {
                let text = gw.metrics().await;
                let now = (metric(&text, REQUESTS), metric(&text, DURATIONS));
                assert!(now.0 >= last.0 && now.1 >= last.1, "{last:?} then {now:?}");
                last = now;
                scrapes += 1;
            }
            scrapes
        }
    });
    // Connections of their own: the kernel spreads them over the workers' sockets.
    const CLIENTS: usize = 32;
    const EACH: usize = 25;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let gw = gw.clone();
        clients.spawn(async move {
            let client = client();
            for index in 0..EACH {
                let response = client
                    .request(get(&gw.url(&format!("/r/{index}"))))
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                body_text(response).await;
            }
        });
    }
    while let Some(finished) = clients.join_next().await {
        finished.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(scraper.await.unwrap() > 0);

    let total = (CLIENTS * EACH) as f64;
    let text = gw.metrics().await;
    for series in [
        REQUESTS,
        DURATIONS,
        "portcullis_decision_duration_seconds_count",
        "portcullis_upstream_duration_seconds_count{upstream=\"app\"}",
        "portcullis_rule_matches_total{effect=\"allow\",mode=\"enforce\",rule=\"everyone\"}",
    ] {
        assert_eq!(metric(&text, series), total, "{series}:\n{text}");
    }
    // Each histogram's buckets are summed too: the last one holds every request.
    assert_eq!(
        metric(
            &text,
            "portcullis_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        total
    );
    assert_eq!(up.seen().len(), CLIENTS * EACH);
    // Every series appears once, however many workers have it.
    let once = text
        .lines()
        .filter(|line| line.starts_with(REQUESTS))
        .count();
    assert_eq!(once, 1, "{text}");
}
