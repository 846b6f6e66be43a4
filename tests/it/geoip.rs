//! Country rules: `.mmdb` databases written by the test (both record layouts), the
//! client address after trusted proxies, `XX`, a database that fails to load, reloads,
//! and a country header from trusted and untrusted peers.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::mmdb;
use crate::support::*;

/// When the test databases were built.
const EPOCH: u64 = 1_765_000_000;

/// `lists` and rules that every test here decides with: an embargo, an EU-only area,
/// an area closed to one country, and a public one.
const POLICY: &str = "\
lists:
  eu: [DE, FR, IT]
rules:
  - { id: embargo, effect: deny, when: { countries: [KP, IR] } }
  - { id: eu-only, effect: allow, match: { paths: [\"/eu/**\"] }, when: { countries: [\"@eu\"] } }
  - { id: not-gb, effect: allow, match: { paths: [\"/intl/**\"] }, when: { not_countries: [GB] } }
  - { id: public, effect: allow, match: { paths: [\"/public/**\"] } }
";

/// A database in the GeoLite2 layout (`country.iso_code`) or the flat ip-location-db one.
fn database(flat: bool, networks: &[(&str, &str)]) -> Vec<u8> {
    let records: Vec<(&str, mmdb::Value)> = (networks.iter())
        .map(|(network, code)| {
            let record = if flat {
                mmdb::flat_country(code)
            } else {
                mmdb::maxmind_country(Some(code), Some(code))
            };
            (*network, record)
        })
        .collect();
    let kind = if flat {
        "geo-whois-asn-country"
    } else {
        "GeoLite2-Country"
    };
    mmdb::database(&records, kind, EPOCH, false)
}

/// The usual networks: GB, DE (IPv6), KP, and Google's IPv6 block (US), which the
/// gateway probes to tell a one-family database.
fn world(flat: bool) -> Vec<u8> {
    database(
        flat,
        &[
            ("81.2.69.0/24", "GB"),
            ("2001:db8::/32", "DE"),
            ("175.45.176.0/22", "KP"),
            ("2001:4860::/32", "US"),
        ],
    )
}

/// A gateway deciding with [`POLICY`] and `countries.mmdb` holding `bytes`, with `extra`
/// config (its `network` section).
async fn gateway(up: &TestUpstream, bytes: &[u8], network: &str) -> TestGateway {
    let scratch = Scratch::new();
    std::fs::write(scratch.path().join("countries.mmdb"), bytes).unwrap();
    scratch.write("policy.yaml", POLICY);
    let path = scratch.write(
        "gw.yaml",
        &format!(
            "{}policy: {{ files: [policy.yaml], watch: true }}\n",
            config(
                &[up.url()],
                &format!("{network}\nlog: {{ decisions: decisions.log }}\n")
            )
        ),
    );
    TestGateway::from_file(&path, scratch).await
}

/// The value of the country-database series `name` for the file `database`.
fn database_metric(metrics: &str, name: &str, database: &str) -> f64 {
    metric(metrics, &format!("{name}{{database=\"{database}\"}}"))
}

/// `GET path` with `headers`: its status, reason and body.
async fn send(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let response = send_request(http::Method::GET, &gw.url(path), headers).await;
    let status = response.status().as_u16();
    let reason = (response.headers().get("x-portcullis-reason"))
        .map_or("allowed", |value| value.to_str().unwrap())
        .to_owned();
    (status, reason, body_text(response).await)
}

/// `GET path` as the client `ip`, reported by the trusted proxy the test is.
async fn from(gw: &TestGateway, ip: &str, path: &str) -> (u16, String, String) {
    send(gw, path, &[("x-forwarded-for", ip)]).await
}

const TRUSTED: &str =
    "network:\n  trusted_proxies: [127.0.0.1]\n  geoip: { database: countries.mmdb }";

#[tokio::test]
async fn countries_are_looked_up_for_the_client_address_in_both_layouts() {
    let up = TestUpstream::start("app").await;
    for flat in [false, true] {
        let gw = gateway(&up, &world(flat), TRUSTED).await;
        for (ip, path, status, reason) in [
            // IPv6, an EU country.
            ("2001:db8::7", "/eu/a", 200, "allowed"),
            // IPv4, and IPv4-mapped IPv6, which is looked up as IPv4.
            ("81.2.69.142", "/eu/a", 403, "country_denied"),
            ("::ffff:81.2.69.142", "/eu/a", 403, "country_denied"),
            ("81.2.69.142", "/intl/a", 403, "country_denied"),
            ("2001:db8::7", "/intl/a", 200, "allowed"),
            // The embargo applies everywhere.
            ("175.45.177.1", "/public/a", 403, "country_denied"),
            ("2001:db8::7", "/public/a", 200, "allowed"),
            // Addresses the database does not know are XX: no embargo, no EU.
            ("10.1.2.3", "/public/a", 200, "allowed"),
            ("2001:db9::1", "/eu/a", 403, "country_denied"),
            ("10.1.2.3", "/intl/a", 200, "allowed"),
        ] {
            let (got, why, _) = from(&gw, ip, path).await;
            assert_eq!(
                (got, why.as_str()),
                (status, reason),
                "{ip} {path} flat={flat}"
            );
        }

        // The detail says which country was seen; the rule is the one that decided.
        let (_, _, body) = from(&gw, "81.2.69.142", "/eu/a").await;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["rule"], "eu-only");
        assert_eq!(
            body["detail"],
            "Requests from country GB are not allowed here."
        );
        let (_, _, body) = from(&gw, "175.45.177.1", "/public/a").await;
        assert!(body.contains("\"rule\":\"embargo\""), "{body}");
        let (_, _, body) = from(&gw, "10.9.9.9", "/eu/a").await;
        assert!(body.contains("unknown location (XX)"), "{body}");

        // Lookups are counted by result; the database's build time is exported.
        let metrics = gw.metrics().await;
        assert_eq!(
            metric(&metrics, "portcullis_geoip_lookups_total{result=\"found\"}"),
            9.0,
            "{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                "portcullis_geoip_lookups_total{result=\"unknown\"}"
            ),
            4.0
        );
        assert_eq!(
            metric(&metrics, "portcullis_geoip_lookups_total{result=\"error\"}"),
            0.0
        );
        let database = gw.file("countries.mmdb").display().to_string();
        assert_eq!(
            database_metric(
                &metrics,
                "portcullis_geoip_database_build_timestamp_seconds",
                &database
            ),
            EPOCH as f64
        );
        assert_eq!(
            database_metric(&metrics, "portcullis_geoip_database_loaded", &database),
            1.0
        );
        // No series per country.
        assert!(!metrics.contains("country=\""), "{metrics}");
        assert_eq!(gw.admin(Method::GET, "/readyz").await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_minimal_denial_does_not_say_the_country() {
    let up = TestUpstream::start("app").await;
    let minimal = format!("{TRUSTED}\ndenials: {{ detail: minimal }}");
    let gw = gateway(&up, &world(false), &minimal).await;
    let (status, reason, body) = from(&gw, "81.2.69.142", "/eu/a").await;
    assert_eq!((status, reason.as_str()), (403, "country_denied"));
    let mut body: serde_json::Value = serde_json::from_str(&body).unwrap();
    // The request id is random letters and digits, which may spell GB.
    body.as_object_mut().unwrap().remove("request_id");
    let body = body.to_string();
    assert!(!body.contains("GB") && !body.contains("detail"), "{body}");
}

#[tokio::test]
async fn the_decision_log_and_the_trace_carry_the_country() {
    let up = TestUpstream::start("app").await;
    let gw = gateway(&up, &world(false), TRUSTED).await;
    assert_eq!(from(&gw, "81.2.69.142", "/eu/a").await.0, 403);
    assert_eq!(from(&gw, "10.1.2.3", "/public/a").await.0, 200);
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(gw.file("decisions.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_decision_log_fields(line);
    }
    assert_eq!(lines[0]["client.geo.country_iso_code"], "GB");
    assert_eq!(lines[0]["decision.reason"], "country_denied");
    assert_eq!(
        lines[0]["trace"][0]["outcome"],
        "condition failed: country GB does not satisfy KP, IR"
    );
    assert_eq!(
        lines[0]["trace"][1]["outcome"],
        "condition failed: country GB does not satisfy @eu"
    );
    assert_eq!(lines[1]["client.geo.country_iso_code"], "XX");
}

#[tokio::test]
async fn a_database_that_does_not_load_fails_closed_until_one_does() {
    let up = TestUpstream::start("app").await;
    let gw = gateway(&up, b"not a country database", TRUSTED).await;
    let (code, body) = gw.admin(Method::GET, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("geo database") && body.contains("did not load"),
        "{body}"
    );
    // Allow rules fail, deny rules hold: the embargo now stops everyone.
    for path in ["/eu/a", "/public/a"] {
        let (status, reason, body) = from(&gw, "2001:db8::7", path).await;
        assert_eq!((status, reason.as_str()), (403, "country_denied"), "{path}");
        assert!(body.contains("\"rule\":\"embargo\""), "{body}");
        assert!(body.contains("could not be determined"), "{body}");
    }
    let metrics = gw.metrics().await;
    let database = gw.file("countries.mmdb").display().to_string();
    assert_eq!(
        database_metric(&metrics, "portcullis_geoip_database_loaded", &database),
        0.0
    );
    assert!(
        !metrics.contains("portcullis_geoip_database_build_timestamp_seconds{"),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "portcullis_geoip_lookups_total{result=\"error\"}"),
        2.0
    );

    // A good file in its place is picked up, and the gateway becomes ready.
    let next = gw.file("countries.mmdb.new");
    std::fs::write(&next, world(true)).unwrap();
    std::fs::rename(&next, gw.file("countries.mmdb")).unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if gw.admin(Method::GET, "/readyz").await.0 == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the new database was not picked up within 5 s");
    assert_eq!(from(&gw, "2001:db8::7", "/eu/a").await.0, 200);
    assert_eq!(from(&gw, "2001:db8::7", "/public/a").await.0, 200);
}

#[tokio::test]
async fn a_changed_database_is_reloaded_and_a_broken_one_keeps_the_last_good_one() {
    let up = TestUpstream::start("app").await;
    let gw = gateway(&up, &world(false), TRUSTED).await;
    assert_eq!(from(&gw, "81.2.69.142", "/eu/a").await.0, 403);

    // The provider now places that network in France.
    let replace = |bytes: Vec<u8>| {
        let next = gw.file("countries.mmdb.new");
        std::fs::write(&next, bytes).unwrap();
        std::fs::rename(&next, gw.file("countries.mmdb")).unwrap();
    };
    replace(database(false, &[("81.2.69.0/24", "FR")]));
    let mut moved = false;
    for _ in 0..100 {
        if from(&gw, "81.2.69.142", "/eu/a").await.0 == 200 {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(moved, "the changed database was not reloaded within 5 s");

    // A truncated download keeps the last good database serving, and the gateway ready.
    let good = database(false, &[("81.2.69.0/24", "GB")]);
    replace(good[..good.len() / 2].to_vec());
    let (code, _) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(from(&gw, "81.2.69.142", "/eu/a").await.0, 200);
    assert_eq!(gw.admin(Method::GET, "/readyz").await.0, StatusCode::OK);
    // The metrics say the configured file did not load, and which database serves.
    let metrics = gw.metrics().await;
    let database = gw.file("countries.mmdb").display().to_string();
    assert_eq!(
        database_metric(&metrics, "portcullis_geoip_database_loaded", &database),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        database_metric(
            &metrics,
            "portcullis_geoip_database_build_timestamp_seconds",
            &database
        ),
        EPOCH as f64
    );
    // /policy says which file serves and why the new one does not.
    let (_, body) = gw.admin(Method::GET, "/policy").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["geoip"]["database"], database.as_str());
    assert_eq!(status["geoip"]["serving"], database.as_str());
    assert_eq!(status["geoip"]["build_epoch"], EPOCH);
    assert!(
        (status["geoip"]["problem"].as_str())
            .is_some_and(|problem| problem.contains("did not load")),
        "{status}"
    );
}

#[tokio::test]
async fn the_country_header_is_believed_only_from_trusted_proxies() {
    let up = TestUpstream::start("app").await;
    // The test's own address is in France, by the database.
    let france = database(true, &[("127.0.0.0/8", "FR")]);

    // From a trusted proxy, the header decides and goes upstream as it came.
    let trusted = "network:\n  trusted_proxies: [127.0.0.1]\n  geoip: { database: countries.mmdb, header: CF-IPCountry }";
    let gw = gateway(&up, &france, trusted).await;
    let (status, reason, _) = send(&gw, "/public/a", &[("cf-ipcountry", "KP")]).await;
    assert_eq!((status, reason.as_str()), (403, "country_denied"));
    assert_eq!(send(&gw, "/eu/a", &[("cf-ipcountry", "de")]).await.0, 200);
    assert_eq!(up.seen().last().unwrap().one("cf-ipcountry"), Some("de"));
    // A value that is not a country is not believed: the database decides, and the
    // upstream does not get it either.
    assert_eq!(send(&gw, "/eu/a", &[("cf-ipcountry", "GBR")]).await.0, 200);
    assert_eq!(up.seen().last().unwrap().one("cf-ipcountry"), None);
    let two = [("cf-ipcountry", "KP"), ("cf-ipcountry", "DE")];
    assert_eq!(send(&gw, "/public/a", &two).await.0, 200);
    assert!(up.seen().last().unwrap().all("cf-ipcountry").is_empty());
    assert_eq!(send(&gw, "/eu/a", &[]).await.0, 200);
    // Tor exits, as Cloudflare reports them.
    assert_eq!(send(&gw, "/intl/a", &[("cf-ipcountry", "T1")]).await.0, 200);
    drop(gw);

    // From anyone else, it is ignored, and removed before forwarding.
    let untrusted = "network:\n  geoip: { database: countries.mmdb, header: CF-IPCountry }";
    let gw = gateway(&up, &france, untrusted).await;
    assert_eq!(
        send(&gw, "/public/a", &[("cf-ipcountry", "KP")]).await.0,
        200
    );
    assert_eq!(up.seen().last().unwrap().one("cf-ipcountry"), None);
    assert_eq!(send(&gw, "/intl/a", &[("cf-ipcountry", "GB")]).await.0, 200);
    drop(gw);

    // A CDN (127.0.0.2) in front of a load balancer (the peer, 127.0.0.1): the header is
    // believed only when the CDN took the client's connection, not when a client went to
    // the load balancer itself.
    let chain = "network:\n  trusted_proxies: [127.0.0.0/8]\n  geoip: { database: countries.mmdb, header: CF-IPCountry, header_from: [127.0.0.2] }";
    let gw = gateway(&up, &france, chain).await;
    let via_cdn = [
        ("x-forwarded-for", "203.0.113.9, 127.0.0.2"),
        ("cf-ipcountry", "KP"),
    ];
    assert_eq!(send(&gw, "/public/a", &via_cdn).await.0, 403);
    let around_it = [("x-forwarded-for", "203.0.113.9"), ("cf-ipcountry", "KP")];
    assert_eq!(send(&gw, "/public/a", &around_it).await.0, 200);
    assert_eq!(up.seen().last().unwrap().one("cf-ipcountry"), None);
    drop(gw);

    // Unless the config keeps it for the upstream; it still decides no country.
    let kept = "network:\n  geoip: { database: countries.mmdb, header: CF-IPCountry, keep_untrusted_header: true }";
    let gw = gateway(&up, &france, kept).await;
    assert_eq!(
        send(&gw, "/public/a", &[("cf-ipcountry", "KP")]).await.0,
        200
    );
    assert_eq!(up.seen().last().unwrap().one("cf-ipcountry"), Some("KP"));
}

#[test]
fn country_settings_are_checked_at_load() {
    let scratch = Scratch::new();
    scratch.write(
        "policy.yaml",
        "lists: { eu: [DE, FR], office: [10.0.0.0/8] }\nrules:\n  - { id: eu, effect: allow, when: { countries: [\"@eu\"] } }\n",
    );
    let load = |network: &str| {
        let path = scratch.write(
            "gw.yaml",
            &format!(
                "upstreams: {{ app: {{ targets: [builtin:echo] }} }}\nroutes: [{{ id: main, upstream: app }}]\npolicy: {{ files: [policy.yaml] }}\n{network}\n"
            ),
        );
        portcullis::config::load(&path)
            .map(drop)
            .map_err(|errors| errors.to_string())
    };
    assert_eq!(
        load("network: { geoip: { database: countries.mmdb } }"),
        Ok(())
    );
    assert_eq!(load("network: { geoip: { header: CF-IPCountry } }"), Ok(()));
    let header_only = scratch.write(
        "gw.yaml",
        "upstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: main, upstream: app }]\npolicy: { files: [policy.yaml] }\nnetwork: { geoip: { header: CF-IPCountry } }\n",
    );
    let warnings = portcullis::config::load(&header_only).unwrap().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.to_string().contains("no request's country is known")),
        "{warnings:?}"
    );
    for (network, needle) in [
        (
            "",
            "rule \"eu\" names countries, but the config names no country source",
        ),
        (
            "network: { geoip: {} }",
            "network.geoip: name a country database",
        ),
        (
            "network: { geoip: { header: \"bad header\" } }",
            "network.geoip.header: \"bad header\" is not a header name",
        ),
        (
            "network: { geoip: { header: Content-Length } }",
            "cannot carry a country",
        ),
        (
            "network: { geoip: { header: Authorization } }",
            "carries credentials or the client's address",
        ),
        (
            "network: { geoip: { header: X-Auth-Subject } }",
            "is a header identity uses",
        ),
        (
            "network: { geoip: { database: countries.mmdb, header_from: [10.0.0.0/8] } }",
            "no header is named",
        ),
        (
            "network: { geoip: { header: CF-IPCountry, header_from: [cdn] } }",
            "network.geoip.header_from[0]",
        ),
    ] {
        let err = load(network).unwrap_err();
        assert!(err.contains(needle), "{network}: {err}");
    }
    for (rules, needle) in [
        (
            "  - { id: a, effect: allow, when: { countries: [\"@office\"] } }\n",
            "list \"@office\" holds networks; name it in ip or not_ip",
        ),
        (
            "  - { id: a, effect: allow, when: { ip: [\"@eu\"] } }\n",
            "list \"@eu\" holds countries; name it in countries or not_countries",
        ),
        (
            "  - { id: a, effect: allow, when: { countries: [\"@eux\"] } }\n",
            "help: did you mean \"@eu\"?",
        ),
        (
            "  - { id: a, effect: allow, when: { ip: [DE] } }\n",
            "\"DE\" is a country code; name countries in countries or not_countries",
        ),
        (
            "  - { id: a, effect: allow, when: { not_countries: [] } }\n",
            "an empty list matches no request",
        ),
        (
            "  - { id: a, effect: deny, when: { countries: [deu] } }\n",
            "did you mean \"DE\"?",
        ),
    ] {
        scratch.write(
            "policy.yaml",
            &format!("lists: {{ eu: [DE, FR], office: [10.0.0.0/8], mixed: [DE, 10.0.0.0/8] }}\nrules:\n{rules}"),
        );
        let err = load("network: { geoip: { database: countries.mmdb } }").unwrap_err();
        assert!(err.contains(needle), "{rules}: {err}");
        assert!(
            err.contains("lists.mixed[1]: \"10.0.0.0/8\" is not a country code, and this list holds countries"),
            "{err}"
        );
    }
}

#[test]
fn explain_and_policy_tests_use_the_database_or_the_country_given() {
    let scratch = Scratch::new();
    std::fs::write(scratch.path().join("countries.mmdb"), world(false)).unwrap();
    scratch.write("policy.yaml", POLICY);
    let config = scratch.write(
        "gw.yaml",
        "upstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: main, upstream: app }]\npolicy: { files: [policy.yaml] }\nnetwork: { geoip: { database: countries.mmdb } }\n",
    );
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let config = config.to_str().unwrap();
    let (code, stdout, stderr) = run(&["validate", "-c", config]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""), "{stdout}");
    // A database that is not there is worth a warning, not a refusal: the gateway
    // starts without it, failing closed.
    let missing = scratch.write(
        "missing.yaml",
        "upstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: main, upstream: app }]\npolicy: { files: [policy.yaml] }\nnetwork: { geoip: { database: gone.mmdb } }\n",
    );
    let (code, _, stderr) = run(&["validate", "-c", missing.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: geo database") && stderr.contains("gone.mmdb did not load"),
        "{stderr}"
    );
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "-c",
            config,
            "--url",
            "http://app/eu/a",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, Some(0), "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let by_ip = explain(&["--ip", "81.2.69.142"]);
    assert_eq!(by_ip["country"], "GB");
    assert_eq!(by_ip["reason"], "country_denied");
    assert_eq!(by_ip["explanation"], "country GB does not satisfy @eu");
    let given = explain(&["--ip", "81.2.69.142", "--country", "FR"]);
    assert_eq!(
        (given["country"].as_str(), given["decision"].as_str()),
        (Some("FR"), Some("allow"))
    );
    let unknown = explain(&["--ip", "10.0.0.1"]);
    assert_eq!(unknown["country"], "XX");
    let (code, _, stderr) = run(&[
        "explain",
        "-c",
        config,
        "--url",
        "http://app/eu/a",
        "--country",
        "UK",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(
            "--country: \"UK\" is not an ISO 3166-1 alpha-2 country code; did you mean \"GB\"?"
        ),
        "{stderr}"
    );

    // A country header that is not believed is gone before the policy looks, as live.
    scratch.write(
        "header-policy.yaml",
        "rules:\n  - { id: de-by-header, effect: allow, match: { paths: [\"/hdr/**\"] }, when: { headers: { cf-ipcountry: DE } } }\n",
    );
    let with_header = scratch.write(
        "header.yaml",
        "upstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: main, upstream: app }]\npolicy: { files: [header-policy.yaml] }\nnetwork: { trusted_proxies: [10.0.0.0/8], geoip: { header: CF-IPCountry } }\n",
    );
    for (peer, decision) in [("203.0.113.7", "deny"), ("10.0.0.1", "allow")] {
        let (code, stdout, stderr) = run(&[
            "explain",
            "-c",
            with_header.to_str().unwrap(),
            "--url",
            "http://app/hdr/a",
            "--ip",
            peer,
            "--header",
            "CF-IPCountry: DE",
            "--json",
        ]);
        assert_eq!(code, Some(0), "{stderr}");
        let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(answer["decision"], decision, "from {peer}: {answer}");
    }

    let cases = scratch.write(
        "cases.yaml",
        "cases:\n  - name: from Germany by the database\n    request: { url: http://app/eu/a, ip: \"2001:db8::1\" }\n    expect: { decision: allow, rule: eu-only }\n  - name: from North Korea as given\n    request: { url: http://app/public/a, country: KP }\n    expect: { decision: deny, reason: country_denied, rule: embargo }\n  - name: unknown address\n    request: { url: http://app/eu/a, ip: 10.0.0.1 }\n    expect: { decision: deny, reason: country_denied }\n",
    );
    let (code, stdout, stderr) = run(&["test", "-c", config, cases.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
    let bad = scratch.write(
        "bad.yaml",
        "cases:\n  - name: a\n    request: { url: /, country: Germany }\n    expect: { decision: allow }\n",
    );
    let (code, _, stderr) = run(&["test", "-c", config, bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(
            "cases[0].request.country: \"Germany\" is not an ISO 3166-1 alpha-2 country code"
        ),
        "{stderr}"
    );
}
