//! Identification cost per request: verifying a JWT (RS256, ES256, EdDSA) the first time (a
//! cache miss: signature and claim checks) and again (a cache hit), and an API key.
//!
//!     cargo bench --bench identify

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark whose fixed inputs do not work should stop loudly"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use portcullis::config::{
    ApiKeyEntry, ApiKeySettings, ForwardHeaderNames, IdentitySettings, JwtSettings, KeySource,
};
use portcullis::identity::{Identity, KeySet};
use portcullis::telemetry::Metrics;
use sha2::{Digest, Sha256};

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn settings(jwks: serde_json::Value, algorithm: Algorithm) -> IdentitySettings {
    let keys = (0..100)
        .map(|n| ApiKeyEntry {
            id: format!("key-{n}"),
            sha256: Sha256::digest(format!("secret-{n}").as_bytes()).into(),
            roles: vec!["reader".into()],
            scopes: vec!["read".into()],
        })
        .collect();
    IdentitySettings {
        api_keys: Some(ApiKeySettings {
            header: HeaderName::from_static("x-api-key"),
            keys,
        }),
        jwt: vec![JwtSettings {
            id: "corp".into(),
            issuer: "https://idp/".into(),
            audiences: vec!["api".into()],
            keys: KeySource::File(Arc::new(KeySet::parse(&jwks.to_string()).unwrap())),
            secret: None,
            algorithms: vec![algorithm],
            sources: Vec::new(),
            scopes_claim: "scope".into(),
            roles_claim: "roles".into(),
            leeway: Duration::from_secs(30),
        }],
        strip_authorization: false,
        forward: ForwardHeaderNames {
            subject: HeaderName::from_static("x-auth-subject"),
            roles: HeaderName::from_static("x-auth-roles"),
            scopes: HeaderName::from_static("x-auth-scopes"),
            client_cert: HeaderName::from_static("x-forwarded-client-cert"),
        },
        client_certs: Vec::new(),
    }
}

fn token(algorithm: Algorithm, key: &EncodingKey) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut header = Header::new(algorithm);
    header.kid = Some("k".into());
    let claims = serde_json::json!({ "iss": "https://idp/", "aud": "api", "sub": "alice",
        "exp": exp, "scope": "orders:read orders:write", "roles": ["editor"], "tenant": "acme" });
    encode(&header, &claims, key).unwrap()
}

fn identify(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref()).unwrap();
    let point = ec_pair.public_key().as_ref().to_vec();
    let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed_pair = Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap();
    let rsa = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
    let rsa_public = PublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
    let rsa_pem = {
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD.encode(rsa.as_der().unwrap().as_ref());
        format!("-----BEGIN PRIVATE KEY-----\n{der}\n-----END PRIVATE KEY-----\n")
    };
    let cases = [
        (
            "RS256",
            Algorithm::RS256,
            serde_json::json!({ "keys": [{ "kty": "RSA", "kid": "k",
                "n": b64(&rsa_public.n), "e": b64(&rsa_public.e) }] }),
            EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).unwrap(),
        ),
        (
            "ES256",
            Algorithm::ES256,
            serde_json::json!({ "keys": [{ "kty": "EC", "crv": "P-256", "kid": "k",
                "x": b64(&point[1..33]), "y": b64(&point[33..65]) }] }),
            EncodingKey::from_ec_der(ec.as_ref()),
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            serde_json::json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "kid": "k",
                "x": b64(ed_pair.public_key().as_ref()) }] }),
            EncodingKey::from_ed_der(ed.as_ref()),
        ),
    ];
    let mut group = c.benchmark_group("identify");
    for (name, algorithm, jwks, key) in cases {
        let settings = settings(jwks, algorithm);
        let token = token(algorithm, &key);
        let metrics = Metrics::new(1);
        let identity = Identity::new(&settings, &metrics, None);
        identity.verify_token(&token).unwrap();
        group.bench_function(format!("{name}/cache-hit"), |b| {
            b.iter(|| identity.verify_token(black_box(&token)).unwrap())
        });
        group.bench_function(format!("{name}/cache-miss"), |b| {
            b.iter_batched(
                || Identity::new(&settings, &metrics, None),
                |fresh| fresh.verify_token(black_box(&token)).unwrap(),
                BatchSize::SmallInput,
            )
        });
        if name == "ES256" {
            let mut headers = HeaderMap::new();
            headers.insert("x-api-key", "secret-57".parse().unwrap());
            group.bench_function("api-key/100-keys", |b| {
                b.iter(|| identity.authenticate(black_box(&headers), None).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, identify);
criterion_main!(benches);
