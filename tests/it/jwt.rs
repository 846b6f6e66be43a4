//! Tokens signed with real keys generated here (P-256 and Ed25519), checked against a
//! JWKS served over HTTP on loopback, through the real proxy; and `explain --token`.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

use crate::support::*;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Keys {
    ec: Vec<u8>,
    ed: Vec<u8>,
    jwks: String,
}

fn keys() -> Keys {
    let rng = SystemRandom::new();
    let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref()).unwrap();
    let point = ec_pair.public_key().as_ref();
    let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed_pair = Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap();
    let jwks = serde_json::json!({ "keys": [
        { "kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256", "use": "sig",
          "x": b64(&point[1..33]), "y": b64(&point[33..65]) },
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "alg": "EdDSA", "use": "sig",
          "x": b64(ed_pair.public_key().as_ref()) },
    ]});
    Keys {
        ec: ec.as_ref().to_vec(),
        ed: ed.as_ref().to_vec(),
        jwks: jwks.to_string(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(keys: &Keys, algorithm: Algorithm, kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    let key = match algorithm {
        Algorithm::EdDSA => EncodingKey::from_ed_der(&keys.ed),
        _ => EncodingKey::from_ec_der(&keys.ec),
    };
    encode(&header, &claims, &key).unwrap()
}

fn claims(overrides: serde_json::Value) -> serde_json::Value {
    let mut claims = serde_json::json!({
        "iss": "https://idp.example/", "aud": "orders-api", "sub": "alice",
        "exp": now() + 600, "scope": "orders:read orders:write", "roles": ["editor"],
        "tenant": "acme",
    });
    for (name, value) in overrides.as_object().unwrap() {
        claims[name] = value.clone();
    }
    claims
}

const POLICY: &str = "\
rules:
  - id: tenant-orders
    effect: allow
    match: { paths: [\"/tenants/{tenant}/orders/**\"] }
    when:
      roles: { any: [editor] }
      scopes: { all: [\"orders:write\"] }
      claims: { tenant: \"{tenant}\" }
";

/// The gateway, its upstream, and the server of its JWKS (kept while in use).
async fn gateway(keys: &Keys) -> (TestUpstream, TestGateway, KeyServer) {
    gateway_with(keys, "").await
}

async fn gateway_with(keys: &Keys, extra: &str) -> (TestUpstream, TestGateway, KeyServer) {
    let up = TestUpstream::start("app").await;
    let server = KeyServer::start(keys.jwks.clone(), None).await;
    let identity = format!(
        "identity:\n  jwt:\n    - id: corp\n      issuer: https://idp.example/\n      audiences: [orders-api]\n      jwks_url: {}\n      algorithms: [ES256, EdDSA]\n      from: [{{ header: Authorization, prefix: \"Bearer \" }}, {{ cookie: session }}]\n      leeway: 5s\n{extra}",
        server.url()
    );
    let gw = TestGateway::with_policy(&config(&[up.url()], &identity), POLICY).await;
    (up, gw, server)
}

async fn send(
    gw: &TestGateway,
    path: &str,
    header: (&str, String),
) -> (StatusCode, http::HeaderMap, String) {
    let request = Request::get(gw.url(path))
        .header(header.0, header.1)
        .body(ClientBody::default())
        .unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn tokens_from_trusted_keys_identify_callers() {
    let keys = keys();
    let (up, gw, _jwks) = gateway(&keys).await;
    for (algorithm, kid) in [(Algorithm::ES256, "ec-1"), (Algorithm::EdDSA, "ed-1")] {
        let bearer = format!(
            "Bearer {}",
            token(&keys, algorithm, kid, claims(serde_json::json!({})))
        );
        let (status, _, body) =
            send(&gw, "/tenants/acme/orders/7", ("authorization", bearer)).await;
        assert_eq!(status, StatusCode::OK, "{algorithm:?}: {body}");
    }
    let valid = token(
        &keys,
        Algorithm::ES256,
        "ec-1",
        claims(serde_json::json!({})),
    );
    // The scheme is case-insensitive.
    let lower = format!("bearer {valid}");
    let (status, _, _) = send(&gw, "/tenants/acme/orders/7", ("authorization", lower)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.seen()[0].one("x-auth-subject"), Some("alice"));
    let cookie = format!("theme=dark; session={valid}");
    let (status, _, _) = send(&gw, "/tenants/acme/orders/7", ("cookie", cookie)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) = send(
        &gw,
        "/tenants/globex/orders/7",
        (
            "authorization",
            format!(
                "Bearer {}",
                token(
                    &keys,
                    Algorithm::ES256,
                    "ec-1",
                    claims(serde_json::json!({}))
                )
            ),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-portcullis-reason"], "tenant_mismatch");
}

#[tokio::test]
async fn bad_tokens_are_401s_that_say_why() {
    let keys = keys();
    let (up, gw, _jwks) = gateway(&keys).await;
    let valid = token(
        &keys,
        Algorithm::ES256,
        "ec-1",
        claims(serde_json::json!({})),
    );
    let mut tampered = valid.clone();
    tampered.insert(valid.find('.').unwrap() + 5, 'A');
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(serde_json::json!({})).to_string().as_bytes())
    );
    for (what, token, reason, needle) in [
        (
            "expired",
            token(
                &keys,
                Algorithm::ES256,
                "ec-1",
                claims(serde_json::json!({ "exp": now() - 192 })),
            ),
            "token_expired",
            "expired 3m",
        ),
        (
            "wrong audience",
            token(
                &keys,
                Algorithm::ES256,
                "ec-1",
                claims(serde_json::json!({ "aud": "billing" })),
            ),
            "token_wrong_audience",
            "orders-api",
        ),
        (
            "wrong issuer",
            token(
                &keys,
                Algorithm::ES256,
                "ec-1",
                claims(serde_json::json!({ "iss": "https://evil.example/" })),
            ),
            "token_wrong_issuer",
            "does not trust",
        ),
        (
            "not yet valid",
            token(
                &keys,
                Algorithm::ES256,
                "ec-1",
                claims(serde_json::json!({ "nbf": now() + 600 })),
            ),
            "token_invalid",
            "not valid yet",
        ),
        (
            "unknown kid",
            token(
                &keys,
                Algorithm::ES256,
                "ec-9",
                claims(serde_json::json!({})),
            ),
            "token_invalid",
            "key is not in",
        ),
        ("alg none", none, "token_invalid", "not a well-formed"),
        (
            "no audience",
            token(&keys, Algorithm::ES256, "ec-1", {
                let mut claims = claims(serde_json::json!({}));
                claims.as_object_mut().unwrap().remove("aud");
                claims
            }),
            "token_invalid",
            "no aud claim",
        ),
        ("tampered", tampered, "token_invalid", "not valid"),
        (
            "truncated",
            valid[..valid.len() - 10].to_owned(),
            "token_invalid",
            "not valid",
        ),
    ] {
        let (status, headers, body) = send(
            &gw,
            "/tenants/acme/orders/7",
            ("authorization", format!("Bearer {token}")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(headers["x-portcullis-reason"], reason, "{what}: {body}");
        assert!(body.contains(needle), "{what}: {body}");
        assert!(!body.contains(&token), "{what}: the body echoes the token");
        assert_eq!(
            headers["www-authenticate"], "Bearer realm=\"portcullis\", error=\"invalid_token\"",
            "{what}"
        );
    }
    let (status, headers, _) =
        send(&gw, "/tenants/acme/orders/7", ("x-other", String::new())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"portcullis\"");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn authorization_is_forwarded_unless_stripped() {
    let keys = keys();
    let bearer = format!(
        "Bearer {}",
        token(
            &keys,
            Algorithm::ES256,
            "ec-1",
            claims(serde_json::json!({}))
        )
    );
    let (up, gw, _jwks) = gateway(&keys).await;
    send(
        &gw,
        "/tenants/acme/orders/1",
        ("authorization", bearer.clone()),
    )
    .await;
    assert_eq!(up.seen()[0].one("authorization"), Some(bearer.as_str()));
    let (up, gw, _jwks) = gateway_with(&keys, "  strip_authorization: true\n").await;
    let (status, _, _) = send(&gw, "/tenants/acme/orders/1", ("authorization", bearer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.seen()[0].one("authorization"), None);
    assert_eq!(up.seen()[0].one("x-auth-subject"), Some("alice"));
}

/// `explain` runs in its own process: the key server answers from this runtime's
/// workers while the test thread waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_verifies_a_token_offline() {
    let keys = keys();
    let server = KeyServer::start(keys.jwks.clone(), None).await;
    let scratch = Scratch::new();
    scratch.write("p.yaml", POLICY);
    let config = scratch.write(
        "gw.yaml",
        &format!(
            "upstreams: {{ app: {{ targets: [builtin:echo] }} }}\nroutes: [{{ id: r, upstream: app }}]\npolicy: {{ files: [p.yaml] }}\nidentity:\n  jwt:\n    - {{ id: corp, issuer: \"https://idp.example/\", audiences: [orders-api], jwks_url: \"{}\", algorithms: [ES256] }}\n",
            server.url()
        ),
    );
    let explain = |token: &str, url: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["explain", "--json", "-c"])
            .arg(&config)
            .args(["--url", url, "--token", token])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let good = token(
        &keys,
        Algorithm::ES256,
        "ec-1",
        claims(serde_json::json!({})),
    );
    let answer = explain(&good, "/tenants/acme/orders/1");
    assert_eq!(answer["decision"], "allow", "{answer}");
    let answer = explain(&good, "/tenants/globex/orders/1");
    assert_eq!(answer["reason"], "tenant_mismatch", "{answer}");
    let expired = token(
        &keys,
        Algorithm::ES256,
        "ec-1",
        claims(serde_json::json!({ "exp": now() - 3600 })),
    );
    let answer = explain(&expired, "/tenants/acme/orders/1");
    assert_eq!(answer["reason"], "token_expired", "{answer}");
    assert_eq!(answer["status"], 401);
    assert_eq!(server.fetches(), 3, "each explain fetched the key set once");
    // With the key server gone, explain says why the token cannot be checked.
    drop(server);
    let answer = explain(&good, "/tenants/acme/orders/1");
    assert_eq!(answer["reason"], "token_invalid", "{answer}");
    assert!(
        answer["explanation"]
            .as_str()
            .is_some_and(|detail| detail.contains("have not been loaded")),
        "{answer}"
    );
}
