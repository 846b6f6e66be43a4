//! Key sets served by a real HTTP(S) server on loopback: RSA and HMAC tokens, rotation
//! picked up by an unknown `kid`, the rate limit on fetches, an outage after the first
//! load, a set never loaded, and https with a CA generated here.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

use crate::support::*;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA signing key and its JWK.
struct RsaKey {
    signing: EncodingKey,
    /// The public key as a PEM `PUBLIC KEY` document: what an attacker would use as an
    /// HMAC secret.
    public_pem: String,
    jwk: serde_json::Value,
}

fn rsa_key(kid: &str) -> RsaKey {
    use base64::Engine as _;
    let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
    let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    let pem = |label: &str, der: &[u8]| {
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let private = pem("PRIVATE KEY", pair.as_der().unwrap().as_ref());
    RsaKey {
        signing: EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
        public_pem: pem("PUBLIC KEY", pair.public_key().as_der().unwrap().as_ref()),
        jwk: serde_json::json!({ "kty": "RSA", "kid": kid, "use": "sig",
            "n": b64(&public.n), "e": b64(&public.e) }),
    }
}

fn jwks(keys: &[&RsaKey]) -> String {
    let keys: Vec<_> = keys.iter().map(|key| key.jwk.clone()).collect();
    serde_json::json!({ "keys": keys }).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const ISSUER: &str = "https://idp.example/";

fn sign(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, sub: &str) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    let claims = serde_json::json!({ "iss": ISSUER, "aud": "orders-api", "sub": sub,
        "exp": now() + 600 });
    encode(&header, &claims, key).unwrap()
}

/// A gateway whose issuer `corp` reads `jwks_url` with `extra` issuer keys (algorithms
/// RS256 and PS256 unless they name others), in front of an upstream, allowing
/// authenticated callers.
async fn gateway(jwks_url: &str, issuer_extra: &str) -> (TestUpstream, TestGateway) {
    let up = TestUpstream::start("app").await;
    let algorithms = if issuer_extra.contains("algorithms:") {
        ""
    } else {
        "      algorithms: [RS256, PS256]\n"
    };
    let identity = format!(
        "identity:\n  jwt:\n    - id: corp\n      issuer: {ISSUER}\n      audiences: [orders-api]\n      jwks_url: {jwks_url}\n{algorithms}{issuer_extra}"
    );
    let policy = "rules:\n  - { id: members, effect: allow, when: { authenticated: true } }\n";
    let gw = TestGateway::with_policy(&config(&[up.url()], &identity), policy).await;
    (up, gw)
}

async fn call(gw: &TestGateway, token: &str) -> (StatusCode, String) {
    let request = Request::get(gw.url("/orders"))
        .header("authorization", format!("Bearer {token}"))
        .body(ClientBody::default())
        .unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status();
    (status, body_text(response).await)
}

async fn readyz(gw: &TestGateway) -> (StatusCode, String) {
    let response = client()
        .request(get(&format!("http://{}/readyz", gw.admin)))
        .await
        .unwrap();
    let status = response.status();
    (status, body_text(response).await)
}

#[tokio::test]
async fn rsa_and_hmac_tokens_verify_and_public_keys_never_sign_hmac() {
    let rsa = rsa_key("rsa-1");
    let server = KeyServer::start(jwks(&[&rsa]), None).await;
    let scratch = Scratch::new();
    let secret = "a shared secret of forty-one bytes long.\n";
    let secret_file = scratch.write("secret", secret);
    let (up, gw) = gateway(
        &server.url(),
        &format!(
            "      algorithms: [RS256, PS256]\n    - id: partner\n      issuer: https://partner.example/\n      audiences: [orders-api]\n      algorithms: [HS256]\n      secret: {{ file: {} }}\n",
            secret_file.display()
        ),
    )
    .await;
    assert_eq!(readyz(&gw).await, (StatusCode::OK, "ready\n".to_owned()));
    for algorithm in [Algorithm::RS256, Algorithm::PS256] {
        let token = sign(algorithm, Some("rsa-1"), &rsa.signing, "alice");
        assert_eq!(call(&gw, &token).await.0, StatusCode::OK, "{algorithm:?}");
    }
    // HMAC: the partner's tokens, signed with the secret file's bytes (line break removed).
    let hmac = |iss: &str, key: &[u8]| {
        let claims = serde_json::json!({ "iss": iss, "aud": "orders-api", "sub": "bot",
            "exp": now() + 600 });
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key).unwrap(),
        )
        .unwrap()
    };
    let (status, body) = call(
        &gw,
        &hmac("https://partner.example/", secret.trim_end().as_bytes()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(up.seen().last().unwrap().one("x-auth-subject"), Some("bot"));
    let (status, body) = call(
        &gw,
        &hmac(
            "https://partner.example/",
            b"another secret of forty-one bytes long..",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("signature does not verify"), "{body}");
    // The classic confusion: HS256 keyed with the RSA issuer's public key.
    let (status, body) = call(&gw, &hmac(ISSUER, rsa.public_pem.as_bytes())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("algorithm is not accepted"), "{body}");
    assert_eq!(up.seen().len(), 3);
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_jwks_refreshes_total{issuer=\"corp\",result=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(server.fetches(), 1);

    // An issuer that takes both RSA and HMAC, whose published set even holds a symmetric
    // key: HMAC tokens are checked with its secret and nothing else.
    let symmetric = b"a symmetric key published by mistake";
    let mut document: serde_json::Value = serde_json::from_str(&jwks(&[&rsa])).unwrap();
    document["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "kty": "oct", "kid": "oct-1", "k": b64(symmetric) }));
    let mixed_server = KeyServer::start(document.to_string(), None).await;
    let (_up, mixed) = gateway(
        &mixed_server.url(),
        &format!(
            "      algorithms: [RS256, HS256]\n      secret: {{ file: {} }}\n",
            secret_file.display()
        ),
    )
    .await;
    let hmac_with_kid = |kid: Option<&str>, key: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        let claims = serde_json::json!({ "iss": ISSUER, "aud": "orders-api", "sub": "eve",
            "exp": now() + 600 });
        encode(&header, &claims, &EncodingKey::from_secret(key).unwrap()).unwrap()
    };
    for (what, token) in [
        (
            "the RSA public key",
            hmac_with_kid(Some("rsa-1"), rsa.public_pem.as_bytes()),
        ),
        (
            "the published symmetric key",
            hmac_with_kid(Some("oct-1"), symmetric),
        ),
    ] {
        let (status, body) = call(&mixed, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(body.contains("signature does not verify"), "{what}: {body}");
    }
    let token = hmac_with_kid(None, secret.trim_end().as_bytes());
    assert_eq!(
        call(&mixed, &token).await.0,
        StatusCode::OK,
        "the secret itself"
    );
    let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa.signing, "alice");
    assert_eq!(call(&mixed, &token).await.0, StatusCode::OK, "RSA still");
}

#[tokio::test]
async fn clients_that_hang_up_cannot_undo_the_rate_limit() {
    let rsa = rsa_key("rsa-1");
    let server = KeyServer::start(jwks(&[&rsa]), None).await;
    let (_up, gw) = gateway(&server.url(), "      jwks_min_refresh: 1s\n").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The key server now takes 600ms; every client gives up after 100ms, the first
    // while the fetch its token started is under way.
    server.slow_down(600);
    for n in 0..8 {
        let token = sign(
            Algorithm::RS256,
            Some(&format!("random-{n}")),
            &rsa.signing,
            "mallory",
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), call(&gw, &token)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        server.fetches(),
        2,
        "one fetch at start, one for all the abandoned requests"
    );
}

#[tokio::test]
async fn a_withdrawn_key_stops_working_at_the_next_fetch_despite_the_cache() {
    let old = rsa_key("old");
    let new = rsa_key("new");
    let server = KeyServer::start(jwks(&[&old]), None).await;
    let (_up, gw) = gateway(&server.url(), "      jwks_min_refresh: 1s\n").await;
    let cached = sign(Algorithm::RS256, Some("old"), &old.signing, "alice");
    assert_eq!(call(&gw, &cached).await.0, StatusCode::OK);
    assert_eq!(
        call(&gw, &cached).await.0,
        StatusCode::OK,
        "now from the cache"
    );
    // The IdP withdraws the old key (it leaked) and publishes a new one; the first token
    // of the new key makes the gateway fetch the set.
    server.publish(jwks(&[&new]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = sign(Algorithm::RS256, Some("new"), &new.signing, "bob");
    assert_eq!(call(&gw, &fresh).await.0, StatusCode::OK);
    let (status, body) = call(&gw, &cached).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the cached token is checked again"
    );
    assert!(
        body.contains("key is not in the issuer's key set"),
        "{body}"
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_nothing_within_min_refresh() {
    let rsa = rsa_key("rsa-1");
    let server = KeyServer::start(jwks(&[&rsa]), None).await;
    let (_up, gw) = gateway(
        &server.url(),
        "      jwks_refresh: 1h\n      jwks_min_refresh: 1h\n",
    )
    .await;
    assert_eq!(server.fetches(), 1, "fetched at start");
    for n in 0..20 {
        let token = sign(
            Algorithm::RS256,
            Some(&format!("random-{n}")),
            &rsa.signing,
            "mallory",
        );
        let (status, body) = call(&gw, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            body.contains("key is not in the issuer's key set"),
            "{body}"
        );
    }
    assert_eq!(server.fetches(), 1, "the flood fetched nothing");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_by_its_first_tokens() {
    let old = rsa_key("old");
    let new = rsa_key("new");
    let server = KeyServer::start(jwks(&[&old]), None).await;
    let (_up, gw) = gateway(
        &server.url(),
        "      jwks_refresh: 1h\n      jwks_min_refresh: 1s\n",
    )
    .await;
    // The IdP rotates in a new key; once min_refresh has passed since the fetch at start,
    // the new key's first tokens fetch the set, once, and all of them verify.
    server.publish(jwks(&[&old, &new]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..10 {
        let token = sign(
            Algorithm::RS256,
            Some("new"),
            &new.signing,
            &format!("user-{n}"),
        );
        let url = gw.url("/orders");
        calls.spawn(async move {
            let request = Request::get(url)
                .header("authorization", format!("Bearer {token}"))
                .body(ClientBody::default())
                .unwrap();
            client().request(request).await.unwrap().status()
        });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(server.fetches(), 2, "ten tokens of a new key, one fetch");
    // Tokens of the old key still verify.
    let token = sign(Algorithm::RS256, Some("old"), &old.signing, "bob");
    assert_eq!(call(&gw, &token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_last_good_keys_stay_when_the_key_server_goes_down() {
    let rsa = rsa_key("rsa-1");
    let server = KeyServer::start(jwks(&[&rsa]), None).await;
    let (_up, gw) = gateway(&server.url(), "      jwks_min_refresh: 1s\n").await;
    let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa.signing, "alice");
    assert_eq!(call(&gw, &token).await.0, StatusCode::OK);
    drop(server);
    // A token for an unknown key, past min_refresh, makes the gateway fetch: it fails.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let unknown = sign(Algorithm::RS256, Some("rsa-2"), &rsa.signing, "mallory");
    assert_eq!(call(&gw, &unknown).await.0, StatusCode::UNAUTHORIZED);
    let series = "portcullis_jwks_refreshes_total{issuer=\"corp\",result=\"error\"}";
    assert_eq!(
        metric(&gw.metrics().await, series),
        1.0,
        "the failed fetch is counted"
    );
    // A token not seen before (no cache) still verifies with the keys loaded before.
    let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa.signing, "bob");
    assert_eq!(call(&gw, &token).await.0, StatusCode::OK);
    assert_eq!(readyz(&gw).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_issuer_whose_keys_never_loaded_fails_closed_and_holds_readiness() {
    let rsa = rsa_key("rsa-1");
    let (closed, _socket) = closed_port();
    let url = format!("http://{closed}/jwks.json");
    let (up, gw) = gateway(&url, "").await;
    let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa.signing, "alice");
    let (status, body) = call(&gw, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("\"reason\":\"token_invalid\""), "{body}");
    assert!(body.contains("signing keys have not been loaded"), "{body}");
    assert!(
        !body.contains(&closed.to_string()),
        "the denial reveals no address: {body}"
    );
    let (status, text) = readyz(&gw).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        text.starts_with(&format!(
            "not ready: issuer corp: no keys loaded from {url}: cannot connect"
        )),
        "{text}"
    );
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn keys_over_https_are_trusted_through_the_configured_ca_only() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let tls = |certificate: &rcgen::Certificate, key: &rcgen::KeyPair| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        Some(Arc::new(config))
    };
    let rsa = rsa_key("rsa-1");
    let server = KeyServer::start(jwks(&[&rsa]), tls(&leaf, &leaf_key)).await;
    let scratch = Scratch::new();
    let ca_file = scratch.write("ca.pem", &ca.pem());

    let (_up, gw) = gateway(
        &server.url(),
        &format!("      jwks_ca: {}\n", ca_file.display()),
    )
    .await;
    let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa.signing, "alice");
    let (status, body) = call(&gw, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Without jwks_ca the system's CAs decide (if the system has any), and none of them
    // signed this server.
    let (_up, untrusting) = gateway(&server.url(), "").await;
    let (status, text) = readyz(&untrusting).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        text.contains("issuer corp: no keys loaded from https://"),
        "{text}"
    );
    assert!(
        text.contains("TLS handshake failed") || text.contains("no CA certificates were found"),
        "{text}"
    );
    assert_eq!(call(&untrusting, &token).await.0, StatusCode::UNAUTHORIZED);

    // A certificate from the trusted CA, for another name than the URL's.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec!["idp.example".to_owned()])
        .unwrap()
        .signed_by(&other_key, &ca)
        .unwrap();
    let misnamed = KeyServer::start(jwks(&[&rsa]), tls(&other, &other_key)).await;
    let (_up, checking) = gateway(
        &misnamed.url(),
        &format!("      jwks_ca: {}\n", ca_file.display()),
    )
    .await;
    let (status, text) = readyz(&checking).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert_eq!(
        server.fetches() + misnamed.fetches(),
        1,
        "only the trusting gateway got a set"
    );
}

#[tokio::test]
async fn two_tokens_in_one_place_are_a_bad_request() {
    let rsa = rsa_key("rsa-1");
    let server = KeyServer::start(jwks(&[&rsa]), None).await;
    let (up, gw) = gateway(
        &server.url(),
        "      from: [{ header: Authorization, prefix: \"Bearer \" }, { cookie: session }]\n",
    )
    .await;
    let alice = sign(Algorithm::RS256, Some("rsa-1"), &rsa.signing, "alice");
    let bob = sign(Algorithm::RS256, Some("rsa-1"), &rsa.signing, "bob");
    for (name, first, second) in [
        (
            "authorization",
            format!("Bearer {alice}"),
            format!("Bearer {bob}"),
        ),
        // Another scheme is still a second credential the upstream may read.
        (
            "authorization",
            format!("Bearer {alice}"),
            format!("Basic {bob}"),
        ),
        (
            "cookie",
            format!("session={alice}"),
            format!("theme=dark; session={bob}"),
        ),
        (
            "cookie",
            format!("session={alice}"),
            format!("session =\t{bob}"),
        ),
    ] {
        let request = Request::get(gw.url("/orders"))
            .header(name, first)
            .header(name, second)
            .body(ClientBody::default())
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        let body = body_text(response).await;
        assert!(body.contains("more than one token"), "{body}");
    }
    // One token in the header and another in the cookie: the header, first in `from`, decides.
    let request = Request::get(gw.url("/orders"))
        .header("authorization", format!("Bearer {alice}"))
        .header("cookie", "session=garbage")
        .body(ClientBody::default())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(up.seen().len(), 1);

    // Query parameters are compared as a form decoder reads them.
    let (_up, gw) = gateway(&server.url(), "      from: [{ query: access_token }]\n").await;
    let send = |target: String| {
        let url = gw.url(&target);
        async move { client().request(get(&url)).await.unwrap().status() }
    };
    assert_eq!(
        send(format!("/orders?access_token={alice}")).await,
        StatusCode::OK
    );
    assert_eq!(
        send(format!("/orders?access_token={alice}&access%5Ftoken={bob}")).await,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn short_secrets_and_plain_http_key_sets_are_called_out() {
    let scratch = Scratch::new();
    scratch.write("secret", "only sixteen bytes\n");
    scratch.write("policy.yaml", ALLOW_ALL);
    let base = "listen: [{ addr: 127.0.0.1:0 }]\nupstreams: { app: { targets: [\"builtin:echo\"] } }\nroutes: [{ id: main, upstream: app }]\npolicy: { files: [policy.yaml] }\n";
    let path = scratch.write(
        "short.yaml",
        &format!("{base}identity:\n  jwt:\n    - {{ id: a, issuer: https://a/, audiences: [api], algorithms: [HS512], secret: {{ file: secret }} }}\n"),
    );
    let errors = portcullis::config::load(&path).unwrap_err().to_string();
    assert!(
        errors.ends_with("identity.jwt[0].secret: the secret is 18 bytes; the algorithms listed need at least 64 (RFC 7518 §3.2)"),
        "{errors}"
    );
    let path = scratch.write(
        "http.yaml",
        &format!("{base}identity:\n  jwt:\n    - {{ id: a, issuer: https://a/, audiences: [api], algorithms: [RS256], jwks_url: \"http://idp.example/keys\" }}\n    - {{ id: b, issuer: https://b/, audiences: [api], algorithms: [RS256], jwks_url: \"http://127.0.0.1:8000/keys\" }}\n"),
    );
    let config = portcullis::config::load(&path).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("identity.jwt[0].jwks_url: the key set is fetched over plain http"),
        "{warnings:?}"
    );
}
