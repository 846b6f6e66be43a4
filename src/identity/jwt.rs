//! JWTs: a token found in the configured places, its issuer picked by its `iss`, its key
//! by its `kid` (or the issuer's shared secret for HS*), then verified by jsonwebtoken:
//! signature, algorithm (only the issuer's list; `none` never), `exp`/`nbf` with leeway,
//! `iss`, `aud`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

use super::jwks::IssuerKeys;
use crate::config::{JwtSettings, KeySource, TokenSource};
use crate::policy::{ClaimValue, Principal, Reason};
use crate::telemetry::Metrics;

/// The configured issuers, their keys, and the tokens they recently vouched for.
pub struct Issuers {
    issuers: Vec<Issuer>,
    /// Verified tokens, a cache per thread (threads past `CACHES` share): a worker's
    /// requests lock and read only memory that no other core writes.
    caches: Box<[Cache]>,
}

/// Caches of verified tokens, at most; threads beyond share them.
const CACHES: usize = 16;

/// One thread's verified tokens, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Cache(Mutex<HashMap<[u8; 32], Cached>>);

struct Issuer {
    settings: JwtSettings,
    keys: Arc<IssuerKeys>,
}

/// How many verified tokens each cache remembers; past this, expired ones are dropped, and
/// if none had expired, the whole cache (a flood of distinct tokens must not grow memory).
const CACHE_ENTRIES: usize = 4_096;

/// A verified token's principal, good until the token expires or its issuer's keys
/// change.
#[derive(Debug, Clone)]
struct Cached {
    principal: Arc<Principal>,
    /// The issuer that vouched for it, by position.
    issuer: usize,
    /// That issuer's key generation when the token was checked.
    generation: u64,
    /// `exp` plus the issuer's leeway, in Unix seconds.
    good_until: u64,
    /// `nbf` minus the leeway, in Unix seconds.
    good_from: u64,
}

/// Why a token was refused; becomes a 401 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRejection {
    /// The reason the denial gives.
    pub reason: Reason,
    /// The issuer (by position) whose fetched keys lack the token's key: a fetch may
    /// find it.
    pub(super) stale_keys: Option<usize>,
}

impl From<Reason> for TokenRejection {
    fn from(reason: Reason) -> TokenRejection {
        TokenRejection {
            reason,
            stale_keys: None,
        }
    }
}

impl Issuers {
    /// Issuers as configured; keys from a `jwks_url` are not fetched until
    /// [`Issuers::key_sets`]' owners ask.
    pub fn new(issuers: &[JwtSettings], metrics: &Metrics, previous: Option<&Issuers>) -> Issuers {
        let issuers = issuers
            .iter()
            .map(|settings| {
                // A reload keeps the fetched keys (and their refresh schedule) of an issuer
                // whose key source did not change.
                let kept = previous.and_then(|previous| {
                    previous
                        .issuers
                        .iter()
                        .find(|old| {
                            old.settings.id == settings.id
                                && matches!((&old.settings.keys, &settings.keys),
                                    (KeySource::Url(old), KeySource::Url(new)) if old == new)
                        })
                        .map(|old| Arc::clone(&old.keys))
                });
                if let Some(keys) = kept {
                    return Issuer {
                        settings: settings.clone(),
                        keys,
                    };
                }
                let keys = match &settings.keys {
                    KeySource::None => IssuerKeys::fixed(&settings.id, None),
                    KeySource::File(keys) => IssuerKeys::fixed(&settings.id, Some(keys.clone())),
                    KeySource::Url(remote) => {
                        let counter = |result: &str| {
                            metrics
                                .jwks_refreshes
                                .with_label_values(&[settings.id.as_str(), result])
                        };
                        IssuerKeys::remote(&settings.id, remote, counter("ok"), counter("error"))
                    }
                };
                Issuer {
                    settings: settings.clone(),
                    keys: Arc::new(keys),
                }
            })
            .collect();
        Issuers {
            issuers,
            caches: (0..CACHES).map(|_| Cache::default()).collect(),
        }
    }

    /// Every issuer's keys.
    pub fn key_sets(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.issuers.iter().map(|issuer| &issuer.keys)
    }

    /// Fetches the keys of the issuer at `index` (rate limited). Tokens it verified with
    /// keys that changed since are checked again on their next use (see `Cached`).
    pub async fn refresh(&self, index: usize) {
        if let Some(issuer) = self.issuers.get(index) {
            issuer.keys.refresh().await;
        }
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The first token in the places any issuer reads, in order, and where it was. Two
    /// tokens in that place are an error: the gateway would verify one while the upstream
    /// might read the other.
    pub fn find_token(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<(String, TokenSource)>, SeveralTokens> {
        for source in self
            .issuers
            .iter()
            .flat_map(|issuer| issuer.settings.sources.iter())
        {
            if let Some(token) = token_in(source, headers, query)? {
                return Ok(Some((token, source.clone())));
            }
        }
        Ok(None)
    }

    /// Verifies `token` and makes it a principal. A token verified before, still within
    /// its validity, sent where its issuer reads tokens, and checked with the issuer's
    /// current keys is answered from the cache, keyed by the token's SHA-256, without
    /// another signature check.
    pub fn verify(
        &self,
        token: &str,
        source: Option<&TokenSource>,
    ) -> Result<Arc<Principal>, TokenRejection> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        let cache = &self.caches[crate::telemetry::thread_slot() % CACHES].0;
        if let Ok(cache) = cache.lock()
            && let Some(cached) = cache.get(&digest)
            && cached.good_from <= now
            && now < cached.good_until
            && let Some(issuer) = self.issuers.get(cached.issuer)
            && issuer.keys.generation() == cached.generation
            && source.is_none_or(|source| issuer.settings.sources.contains(source))
        {
            return Ok(Arc::clone(&cached.principal));
        }
        let verified = self.verify_uncached(token, source)?;
        if let Ok(mut cache) = cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.retain(|_, cached| now < cached.good_until);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(digest, verified.clone());
        }
        Ok(verified.principal)
    }

    /// How many verified tokens are cached.
    #[cfg(test)]
    fn cached(&self) -> usize {
        (self.caches.iter())
            .map(|cache| cache.0.lock().map_or(0, |cache| cache.len()))
            .sum()
    }

    /// The signature and claim checks, and the window in which the token stays valid.
    fn verify_uncached(
        &self,
        token: &str,
        source: Option<&TokenSource>,
    ) -> Result<Cached, TokenRejection> {
        let invalid = |problem: &str| {
            TokenRejection::from(Reason::TokenInvalid {
                problem: problem.to_owned(),
            })
        };
        let header =
            decode_header(token).map_err(|_| invalid("the token is not a well-formed JWT"))?;
        // The issuer is read before the signature is checked only to pick whose keys check
        // it; nothing else is believed until then.
        let claimed_issuer =
            unverified_issuer(token).ok_or_else(|| invalid("the token has no iss claim"))?;
        let (
            index,
            Issuer {
                settings: issuer,
                keys,
            },
        ) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, issuer)| issuer.settings.issuer == claimed_issuer)
            .ok_or(TokenRejection::from(Reason::TokenWrongIssuer))?;
        // SECURITY: a token counts only where its own issuer reads tokens (a header-only
        // issuer's tokens are not taken from another issuer's cookie or query).
        if let Some(source) = source
            && !issuer.sources.contains(source)
        {
            return Err(invalid(
                "the token was sent where its issuer's tokens are not read",
            ));
        }
        if !issuer.algorithms.contains(&header.alg) {
            return Err(invalid("the token's algorithm is not accepted"));
        }
        // Read before the keys: if they change meanwhile, the cache entry is born stale.
        let generation = keys.generation();
        let key = if is_hmac(header.alg) {
            // SECURITY: an HMAC token is checked only with the configured secret, never
            // with a published key's bytes (which would let anyone sign).
            let secret = issuer
                .secret
                .as_ref()
                .ok_or_else(|| invalid("the token's algorithm is not accepted"))?;
            DecodingKey::from_secret(&secret.0)
                .map_err(|_| invalid("the issuer's secret cannot check this token"))?
        } else {
            // A fetch can only help a token that names its key, or when none were loaded.
            let stale = |problem: &str| TokenRejection {
                stale_keys: keys.is_remote().then_some(index),
                ..invalid(problem)
            };
            let set = keys
                .current()
                .ok_or_else(|| stale("the issuer's signing keys have not been loaded"))?;
            let kid = header.kid.as_deref();
            let jwk = set.find(kid, header.alg).ok_or_else(|| {
                if set.names(kid) {
                    invalid("the token's algorithm is not the one its key is for")
                } else if kid.is_some() {
                    stale("the token's key is not in the issuer's key set")
                } else {
                    invalid("the token names no key (kid) and the issuer has several")
                }
            })?;
            DecodingKey::from_jwk(jwk)
                .map_err(|_| invalid("the issuer's key cannot check this token"))?
        };
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&issuer.audiences);
        validation.leeway = issuer.leeway.as_secs();
        validation.validate_nbf = true;
        // jsonwebtoken checks `aud` only when the token has one: require it.
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = decode::<serde_json::Value>(token, &key, &validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::ExpiredSignature => Reason::TokenExpired {
                    seconds_ago: expired_ago(token),
                }
                .into(),
                ErrorKind::InvalidAudience => Reason::TokenWrongAudience {
                    expected: issuer.audiences.clone(),
                }
                .into(),
                ErrorKind::InvalidIssuer => Reason::TokenWrongIssuer.into(),
                ErrorKind::ImmatureSignature => invalid("the token is not valid yet"),
                ErrorKind::InvalidSignature => invalid("the token's signature does not verify"),
                ErrorKind::MissingRequiredClaim(claim) => Reason::TokenInvalid {
                    problem: format!("the token has no {claim} claim"),
                }
                .into(),
                _ => invalid("the token does not verify"),
            }
        })?;
        let leeway = issuer.leeway.as_secs();
        let number = |name: &str| data.claims.get(name).and_then(serde_json::Value::as_u64);
        let good_until = number("exp").unwrap_or(0).saturating_add(leeway);
        let good_from = number("nbf").unwrap_or(0).saturating_sub(leeway);
        Ok(Cached {
            principal: Arc::new(principal(issuer, &data.claims)),
            issuer: index,
            generation,
            good_from,
            good_until,
        })
    }
}

fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

/// A request with two tokens in the place a token was found first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeveralTokens;

/// The token in one place, if any. A second candidate there makes the request
/// ambiguous, and candidates are counted loosely on purpose: any second value of the
/// header (whatever its scheme or encoding), any second cookie or query parameter of the
/// name (bytes compared; query names percent-decoded), since the upstream may read
/// whichever the gateway did not.
fn token_in(
    source: &TokenSource,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<String>, SeveralTokens> {
    fn only<T>(mut found: impl Iterator<Item = T>) -> Result<Option<T>, SeveralTokens> {
        let first = found.next();
        if first.is_some() && found.next().is_some() {
            return Err(SeveralTokens);
        }
        Ok(first)
    }
    match source {
        TokenSource::Header { name, prefix } => {
            let values = headers.get_all(name);
            let token = values.iter().find_map(|value| {
                let value = value.to_str().ok()?;
                // The scheme in a prefix (`Bearer `) is case-insensitive (RFC 9110 §11.1).
                let head = value.get(..prefix.len())?;
                head.eq_ignore_ascii_case(prefix)
                    .then(|| value[prefix.len()..].trim().to_owned())
            });
            if token.is_some() && values.iter().nth(1).is_some() {
                return Err(SeveralTokens);
            }
            Ok(token)
        }
        TokenSource::Cookie(cookie) => only(
            headers
                .get_all(http::header::COOKIE)
                .iter()
                .flat_map(|value| value.as_bytes().split(|byte| *byte == b';'))
                .filter_map(|pair| {
                    let at = pair.iter().position(|byte| *byte == b'=')?;
                    (pair[..at].trim_ascii() == cookie.as_bytes()).then(|| &pair[at + 1..])
                }),
        )
        .map(|value| value.map(|value| String::from_utf8_lossy(value.trim_ascii()).into_owned())),
        TokenSource::Query(parameter) => only(
            query
                .unwrap_or("")
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .filter(|(name, _)| crate::path::form_decoded(name) == parameter.as_str())
                .map(|(_, value)| crate::path::form_decoded(value).into_owned()),
        ),
    }
}

/// The `iss` of a token, before its signature is checked.
fn unverified_issuer(token: &str) -> Option<String> {
    let claims = unverified_claims(token)?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    jsonwebtoken::dangerous::insecure_decode_claims(token).ok()
}

/// How long ago an expired token's `exp` passed (for "expired 3m12s ago").
fn expired_ago(token: &str) -> u64 {
    let exp = unverified_claims(token)
        .and_then(|claims| claims.get("exp")?.as_u64())
        .unwrap_or(0);
    unix_now().saturating_sub(exp)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn principal(issuer: &JwtSettings, claims: &serde_json::Value) -> Principal {
    let strings = |value: Option<&serde_json::Value>, split_spaces: bool| -> Vec<String> {
        match value {
            Some(serde_json::Value::String(text)) if split_spaces => {
                text.split_whitespace().map(str::to_owned).collect()
            }
            Some(serde_json::Value::String(text)) => vec![text.clone()],
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    // Roles travel upstream comma-separated and scopes space-separated: a value that
    // holds the separator would read as several there, so it is dropped.
    let roles = strings(claims.get(&issuer.roles_claim), false)
        .into_iter()
        .filter(|role| !role.contains(',') && !role.contains(char::is_whitespace))
        .collect();
    let scopes = strings(claims.get(&issuer.scopes_claim), true)
        .into_iter()
        .filter(|scope| !scope.contains(char::is_whitespace))
        .collect();
    Principal {
        subject: claims
            .get("sub")
            .and_then(|sub| sub.as_str())
            .unwrap_or("")
            .to_owned(),
        issuer: issuer.issuer.clone(),
        roles,
        scopes,
        claims: claims
            .as_object()
            .map(|object| {
                object
                    .iter()
                    .map(|(name, value)| (name.clone(), claim_value(value)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A claim's JSON as the policy compares it; an object or `null` equals nothing. The same
/// for a verified token's claims and for those a decision-log line records.
pub fn claim_value(value: &serde_json::Value) -> ClaimValue {
    match value {
        serde_json::Value::String(text) => ClaimValue::String(text.clone()),
        serde_json::Value::Number(number) => number
            .as_f64()
            .map_or(ClaimValue::Other, ClaimValue::Number),
        serde_json::Value::Bool(value) => ClaimValue::Bool(*value),
        serde_json::Value::Array(items) => {
            ClaimValue::List(items.iter().map(claim_value).collect())
        }
        _ => ClaimValue::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn verified_tokens_are_cached_until_they_expire() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwks = serde_json::json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "kid": "k",
            "x": b64(pair.public_key().as_ref()) }] });
        let keys = crate::identity::KeySet::parse(&jwks.to_string()).unwrap();
        let issuers = Issuers::new(
            &[JwtSettings {
                id: "corp".into(),
                issuer: "https://idp/".into(),
                audiences: vec!["api".into()],
                keys: KeySource::File(Arc::new(keys)),
                secret: None,
                algorithms: vec![Algorithm::EdDSA],
                sources: Vec::new(),
                scopes_claim: "scope".into(),
                roles_claim: "roles".into(),
                leeway: Duration::from_secs(0),
            }],
            &Metrics::new(1),
            None,
        );
        let sign = |exp: u64| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some("k".into());
            let claims = serde_json::json!({ "iss": "https://idp/", "aud": "api", "sub": "alice",
                "exp": exp, "scope": "a b" });
            encode(&header, &claims, &EncodingKey::from_ed_der(pkcs8.as_ref())).unwrap()
        };
        let token = sign(unix_now() + 600);
        let first = issuers.verify(&token, None).unwrap();
        assert_eq!(issuers.cached(), 1);
        let second = issuers.verify(&token, None).unwrap();
        assert_eq!(first, second);
        assert_eq!(second.scopes, ["a", "b"]);
        assert!(issuers.verify(&sign(unix_now() - 10), None).is_err());
        assert_eq!(issuers.cached(), 1, "refused tokens are not cached");
        let mut tampered = token.clone();
        tampered.push('A');
        assert!(
            issuers.verify(&tampered, None).is_err(),
            "a different token misses the cache"
        );
    }
}
