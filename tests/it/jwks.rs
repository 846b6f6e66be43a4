//! Key sets served by a real HTTP(S) server on loopback: RSA and HMAC tokens, rotation
//! picked up by an unknown `kid`, the rate limit on fetches, an outage after the first
//! load, a set never loaded, and https with a CA generated here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use tokio::net::TcpListener;

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

/// A key set server: serves its document at `/jwks.json`, counts fetches, and stops
/// (refusing connections) when dropped.
struct KeyServer {
    addr: SocketAddr,
    https: bool,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    async fn start(document: String, tls: Option<Arc<rustls::ServerConfig>>) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let https = tls.is_some();
        let served = (document.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (document, fetches) = served.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let found = request.uri().path() == "/jwks.json";
                        if found {
                            fetches.fetch_add(1, Ordering::SeqCst);
                        }
                        let body = document.lock().unwrap().clone();
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            if !found {
                                *response.status_mut() = StatusCode::NOT_FOUND;
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        KeyServer {
            addr,
            https,
            document,
            fetches,
            task,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/jwks.json", self.addr)
    }

    fn publish(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway whose issuer `corp` reads `jwks_url` with `extra` issuer keys, in front of
/// an upstream, allowing authenticated callers.
async fn gateway(jwks_url: &str, issuer_extra: &str) -> (TestUpstream, TestGateway) {
    let up = TestUpstream::start("app").await;
    let identity = format!(
        "identity:\n  jwt:\n    - id: corp\n      issuer: {ISSUER}\n      audiences: [orders-api]\n      jwks_url: {jwks_url}\n      algorithms: [RS256, PS256]\n{issuer_extra}"
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
            "    - id: partner\n      issuer: https://partner.example/\n      audiences: [orders-api]\n      algorithms: [HS256]\n      secret: {{ file: {} }}\n",
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
    let (_up, gw) = gateway(
        &server.url(),
        "      jwks_refresh: 100ms\n      jwks_min_refresh: 100ms\n",
    )
    .await;
    let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa.signing, "alice");
    assert_eq!(call(&gw, &token).await.0, StatusCode::OK);
    drop(server);
    let series = "portcullis_jwks_refreshes_total{issuer=\"corp\",result=\"error\"}";
    let mut failed = 0.0;
    for _ in 0..100 {
        failed = metric(&gw.metrics().await, series);
        if failed >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed >= 1.0, "a refresh failed and was counted");
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
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let rsa = rsa_key("rsa-1");
    let server = KeyServer::start(jwks(&[&rsa]), Some(Arc::new(tls))).await;
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

    // Without jwks_ca the system's CAs decide, and none of them signed this server.
    let (_up, untrusting) = gateway(&server.url(), "").await;
    let (status, text) = readyz(&untrusting).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        text.contains("issuer corp: no keys loaded from https://"),
        "{text}"
    );
    assert_eq!(call(&untrusting, &token).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.fetches(), 1, "only the trusting gateway got the set");
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
        (
            "cookie",
            format!("session={alice}"),
            format!("theme=dark; session={bob}"),
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
