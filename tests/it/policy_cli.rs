//! The policy commands of the binary: `test` on the shipped cases, `explain`, and
//! `validate`'s errors and warnings for policy files.

use std::process::{Command, Output};

use crate::support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BINARY)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        status.code(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

#[test]
fn the_shipped_policy_cases_pass() {
    let mut files: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tests"))
            .unwrap()
            .map(|entry| {
                format!(
                    "config/tests/{}",
                    entry.unwrap().file_name().to_string_lossy()
                )
            })
            .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut args = vec!["test", "-c", "config/portcullis.yaml"];
    args.extend(files.iter().map(String::as_str));
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.ends_with(" 0 failed\n"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn a_failing_case_exits_1_with_a_readable_difference() {
    let scratch = Scratch::new();
    let cases = scratch.write(
        "cases.yaml",
        "cases:\n  - name: admin is open\n    request: { url: \"http://localhost/admin/x\" }\n    expect: { decision: allow, rule: admin-console }\n",
    );
    let (code, stdout, _) = run(&[
        "test",
        "-c",
        "config/portcullis.yaml",
        cases.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(
        stdout,
        format!(
            "FAIL  admin is open ({}:2)\n      GET http://localhost/admin/x from 192.0.2.1\n      decision: expected allow, got deny\n      got: deny ip_not_allowed by rule admin-console: client 192.0.2.1 does not satisfy @office\n0 passed, 1 failed\n",
            cases.display()
        )
    );
}

#[test]
fn a_bad_case_file_exits_2_naming_the_place() {
    let scratch = Scratch::new();
    let cases = scratch.write(
        "cases.yaml",
        "cases:\n  - name: x\n    request: { url: /, ip: office }\n    expect: { decision: maybe }\n",
    );
    let (code, _, stderr) = run(&[
        "test",
        "-c",
        "config/portcullis.yaml",
        cases.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    let path = cases.display();
    assert_eq!(
        stderr,
        format!(
            "{path}:3:28: cases[0].request.ip: \"office\" is not an IP address\n{path}:4:25: cases[0].expect.decision: \"maybe\" is not a decision; write allow, deny or refused (a 400 or 404 before any rule)\n"
        )
    );
}

#[test]
fn explain_prints_the_decision_and_its_trace() {
    let (code, stdout, _) = run(&[
        "explain",
        "--url",
        "http://localhost:8080/public/../admin/users",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout,
        "request:  GET http://localhost:8080/public/../admin/users from 192.0.2.1\n\
         route:    demo\n\
         path:     /admin/users\n\
         decision: deny (403 ip_not_allowed) by rule admin-console\n\
         why:      client 192.0.2.1 does not satisfy @office\n\
         client:   Your network is not allowed for this path.\n\
         trace:\n  admin-console            allow enforce condition failed: client 192.0.2.1 does not satisfy @office\n"
    );
    let (code, stdout, _) = run(&[
        "explain",
        "--json",
        "--method",
        "GET",
        "--url",
        "/admin/x",
        "--ip",
        "203.0.113.9",
    ]);
    assert_eq!(code, Some(0));
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["rule"], "admin-console");
    assert_eq!(answer["client_ip"], "203.0.113.9");
    let (_, stdout, _) = run(&["explain", "--url", "/a%2fb"]);
    assert!(
        stdout.contains("decision: refused before any rule: 400 bad_request"),
        "{stdout}"
    );
}

fn validate(policy: &str) -> (Option<i32>, String, String, Scratch) {
    let scratch = Scratch::new();
    scratch.write("rules.yaml", policy);
    scratch.write(
        "blocked.txt",
        "# block list\n198.51.100.0/24\n2001:db8:bad::/48\nnot-a-network\n",
    );
    let config = scratch.write(
        "gw.yaml",
        "upstreams: { app: { targets: [builtin:echo] } }\nroutes:\n  - { id: api, path_prefix: /api, upstream: app }\npolicy: { files: [\"rule*.yaml\"] }\n",
    );
    let (code, stdout, stderr) = run(&["validate", "-c", config.to_str().unwrap()]);
    (code, stdout, stderr, scratch)
}

#[test]
fn policy_errors_name_file_line_column_and_path() {
    let scratch = Scratch::new();
    let rules = scratch.write(
        "rules.yaml",
        "lists:\n  office: [203.0.113.0/24, 10.1.1.1/8]\nrules:\n  - id: a\n    effect: allow\n    match: { paths: [/api//x, \"/api/{}\"], methods: [get] }\n    when: { ip: [\"@ofice\"], countries: [KP, UK] }\n  - id: a\n    effect: deny\n    match: { headers: { x-tenant: \"{tenant}\" } }\n    help: ask Bob\n",
    );
    let config = scratch.write(
        "gw.yaml",
        "upstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: api, upstream: app }]\npolicy: { files: [rules.yaml, missing/*.yaml] }\n",
    );
    let (code, _, stderr) = run(&["validate", "-c", config.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    let (gw, rules) = (config.display(), rules.display());
    let dir = scratch
        .write("x", "")
        .parent()
        .unwrap()
        .display()
        .to_string();
    assert_eq!(
        stderr,
        format!(
            "{gw}:3:31: policy.files[1]: cannot list directory \"{dir}/missing\": No such file or directory (os error 2)\n\
             {rules}:2:28: lists.office[1]: \"10.1.1.1/8\" has host bits set; did you mean \"10.0.0.0/8\"?\n\
             {rules}:6:22: rules[0].match.paths[0]: path \"/api//x\" would never match: requests are matched in canonical form (no //, . or .. segments, no ;parameters, percent-encoding only where needed, upper-case hex)\n\
             {rules}:6:31: rules[0].match.paths[1]: path \"/api/{{}}\": capture \"{{}}\" needs a name of letters, digits and '_', such as {{tenant}}\n\
             {rules}:6:53: rules[0].match.methods[0]: methods are case-sensitive: \"get\" would never match; write \"GET\"\n\
             {rules}:7:18: rules[0].when.ip[0]: unknown list \"@ofice\"\n  help: did you mean \"@office\"?\n\
             {rules}:7:45: rules[0].when.countries[1]: \"UK\" is not an ISO 3166-1 alpha-2 country code; did you mean \"GB\"?\n\
             {rules}:8:9: rules[1].id: duplicate rule id \"a\" (first defined in {rules}:4)\n\
             {rules}:10:35: rules[1].match.headers.x-tenant: \"{{tenant}}\" refers to a path capture, but the rule has no paths\n\
             {rules}:11:11: rules[1].help: help must be a link (https://…, http://… or mailto:…); put prose in description\n\
             {gw}: 10 errors; nothing was started\n"
        )
    );
}

#[test]
fn validate_warns_about_rules_that_cannot_matter() {
    let (code, stdout, stderr, scratch) = validate(
        "lists:\n  blocked: { file: blocked.txt }\nrules:\n  - id: outside-api\n    effect: allow\n    match: { paths: [\"/web/**\"] }\n  - id: api-read\n    effect: allow\n    match: { paths: [\"/api/orders/*\"], methods: [GET] }\n  - id: api-frozen\n    effect: deny\n    match: { paths: [\"/api/**\"] }\n",
    );
    let rules = scratch.write("x", "").parent().unwrap().join("rules.yaml");
    let blocked = rules.with_file_name("blocked.txt");
    assert_eq!(code, Some(2), "{stdout}");
    assert_eq!(
        stderr.lines().next().unwrap(),
        format!(
            "{}:4:1: \"not-a-network\" is not an IP network, e.g. \"10.0.0.0/8\" or \"2001:db8::/32\"",
            blocked.display()
        )
    );

    std::fs::write(&blocked, "198.51.100.0/24\n").unwrap();
    let gw = rules.with_file_name("gw.yaml");
    let (code, stdout, stderr) = run(&["validate", "-c", gw.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let rules = rules.display();
    assert_eq!(
        stderr,
        format!(
            "warning: {rules}:4:5: rules[0]: rule \"outside-api\" can never match: no route accepts its hosts and paths\n\
             warning: {rules}:7:5: rules[1]: allow rule \"api-read\" never allows anything: deny rule \"api-frozen\" ({rules}:10) matches every request it does\n"
        )
    );
    assert!(
        stdout.contains("3 rules in 1 policy file; 1 list of 1 network;"),
        "{stdout}"
    );
}

#[test]
fn schema_describes_each_kind_of_file() {
    for (kind, keys) in [
        (
            "config",
            &["listen", "upstreams", "routes", "policy", "denials"][..],
        ),
        ("policy", &["lists", "roles", "rules"][..]),
        ("cases", &["cases"][..]),
    ] {
        let (code, stdout, _) = run(&["schema", kind]);
        assert_eq!(code, Some(0), "{kind}");
        let schema: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["additionalProperties"], false, "{kind}");
        for key in keys {
            assert!(
                schema["properties"].get(key).is_some(),
                "{kind} lacks {key}"
            );
        }
    }
    let (_, stdout, _) = run(&["schema", "policy"]);
    assert!(stdout.contains("\"enforce\"") && stdout.contains("\"audit\""));
    assert!(
        stdout.contains("\"countries\"") && stdout.contains("\"not_countries\""),
        "country conditions are offered"
    );
}

#[test]
fn validate_warns_about_empty_lists_and_proxies_in_allow_lists() {
    let scratch = Scratch::new();
    scratch.write(
        "rules.yaml",
        "lists: { empty: [], inside: [10.0.0.0/8] }\nrules:\n  - { id: blocked, effect: deny, when: { ip: [\"@empty\"] } }\n  - { id: cluster, effect: allow, when: { ip: [\"@inside\"] } }\n  - { id: spare, effect: deny, match: { paths: [\"/admin/**\"] }, when: { not_ip: [10.1.0.0/16] } }\n",
    );
    let config = scratch.write(
        "gw.yaml",
        "upstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: r, upstream: app }]\nnetwork: { trusted_proxies: [10.0.0.0/8] }\npolicy: { files: [rules.yaml] }\n",
    );
    let (code, _, stderr) = run(&["validate", "-c", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    for needle in [
        "lists.empty: list \"empty\" holds no networks",
        "rule \"blocked\" can never match: ip [@empty] holds no address",
        "rule \"cluster\" lets trusted proxies through by their own address",
        "rule \"spare\" lets trusted proxies through by their own address",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from\n{stderr}");
    }

    scratch.write(
        "rules.yaml",
        "rules:\n  - { id: a, effect: allow, match: { headers: {} } }\n",
    );
    let (code, _, stderr) = run(&["validate", "-c", config.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(
            "rules[0].match.headers: holds no headers; write at least one, or remove the key"
        ),
        "{stderr}"
    );
    scratch.write(
        "rules.yaml",
        "rules:\n  - id: a\n    effect: allow\n    when:\n      ip:\n",
    );
    let (code, _, stderr) = run(&["validate", "-c", config.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(":5:9: rules[0].when.ip: has no value; write one, or remove the key"),
        "{stderr}"
    );
}

#[test]
fn the_demo_key_mints_tokens_the_demo_accepts() {
    let (code, token, stderr) = run(&[
        "token",
        "--key",
        "config/keys/demo-signing-key.pem",
        "--kid",
        "demo",
        "--issuer",
        "https://demo.portcullis.local/",
        "--audience",
        "demo-api",
        "--sub",
        "alice",
        "--role",
        "editor",
        "--scope",
        "orders:write",
        "--claim",
        "tenant=acme",
        "--ttl",
        "5m",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    for (path, decision, reason) in [
        ("/tenants/acme/orders/7", "allow", "allowed"),
        ("/tenants/globex/orders/7", "deny", "tenant_mismatch"),
    ] {
        let (code, stdout, _) = run(&["explain", "--json", "--url", path, "--token", token]);
        assert_eq!(code, Some(0));
        let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(answer["decision"], decision, "{path}: {answer}");
        assert_eq!(answer["reason"], reason, "{path}: {answer}");
    }
    let (code, _, stderr) = run(&[
        "token",
        "--key",
        "config/keys/demo-jwks.json",
        "--issuer",
        "i",
        "--audience",
        "a",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("is not a PEM private key for EdDSA"),
        "{stderr}"
    );
}

#[test]
fn a_secret_file_mints_hmac_tokens_the_gateway_accepts() {
    let scratch = Scratch::new();
    let secret = scratch.write(
        "hmac.secret",
        "a shared secret of at least thirty-two bytes\n",
    );
    scratch.write(
        "p.yaml",
        "rules: [{ id: partners, effect: allow, when: { scopes: { all: [\"partner:read\"] } } }]\n",
    );
    let config = scratch.write(
        "gw.yaml",
        "upstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: r, upstream: app }]\npolicy: { files: [p.yaml] }\nidentity:\n  jwt:\n    - { id: partner, issuer: \"https://partner.example/\", audiences: [api], algorithms: [HS256], secret: { file: hmac.secret } }\n",
    );
    let (code, token, stderr) = run(&[
        "token",
        "--key",
        secret.to_str().unwrap(),
        "--algorithm",
        "HS256",
        "--issuer",
        "https://partner.example/",
        "--audience",
        "api",
        "--scope",
        "partner:read",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, _) = run(&[
        "explain",
        "--json",
        "-c",
        config.to_str().unwrap(),
        "--url",
        "/reports",
        "--token",
        token.trim(),
    ]);
    assert_eq!(code, Some(0));
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["decision"], "allow", "{answer}");
    assert_eq!(answer["rule"], "partners", "{answer}");
}

#[test]
fn explain_and_cases_take_a_client_certificate_or_its_facts() {
    let scratch = Scratch::new();
    scratch.write(
        "policy.yaml",
        "rules:\n  - { id: billing-api, effect: allow, when: { mtls: { spiffe_ids: [\"spiffe://example.org/ns/billing/*\"] } } }\n",
    );
    let config = scratch.write(
        "gw.yaml",
        "upstreams: { app: { targets: [\"builtin:echo\"] } }\nroutes: [{ id: main, upstream: app }]\npolicy: { files: [policy.yaml] }\n",
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from("spiffe://example.org/ns/billing/sa/api").unwrap(),
    ));
    let cert = scratch.write("billing.pem", &params.self_signed(&key).unwrap().pem());
    let config = config.to_str().unwrap();
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "-c", config, "--json", "--url", "/invoices"];
        args.extend(extra);
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, Some(0), "{stderr}");
        let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        (answer["decision"].clone(), answer["reason"].clone())
    };
    let allowed = (serde_json::json!("allow"), serde_json::json!("allowed"));
    assert_eq!(explain(&["--cert", cert.to_str().unwrap()]), allowed);
    assert_eq!(
        explain(&["--cert-as", "uri=spiffe://example.org/ns/billing/sa/api"]),
        allowed
    );
    let refused = (
        serde_json::json!("deny"),
        serde_json::json!("mtls_required"),
    );
    assert_eq!(
        explain(&["--cert-as", "uri=spiffe://example.org/ns/web/sa/x"]),
        refused
    );
    assert_eq!(explain(&[]), refused);
    let (code, _, stderr) = run(&[
        "explain",
        "-c",
        config,
        "--url",
        "/",
        "--cert-as",
        "colour=red",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown key \"colour\""), "{stderr}");

    let cases = scratch.write(
        "cases.yaml",
        "cases:
  - name: the billing workload's certificate
    request: { url: /invoices, client_cert: file=billing.pem }
    expect: { decision: allow, rule: billing-api }
  - name: its facts
    request: { url: /invoices, client_cert: \"uri=spiffe://example.org/ns/billing/sa/api\" }
    expect: { decision: allow }
  - name: no certificate
    request: { url: /invoices }
    expect: { decision: deny, reason: mtls_required }
",
    );
    let (code, stdout, stderr) = run(&["test", "-c", config, cases.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.ends_with("3 passed, 0 failed\n"), "{stdout}");
}
