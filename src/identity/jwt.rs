//! JWTs: a token found in the configured places, its issuer picked by its `iss`, its key
//! by its `kid`, then verified by jsonwebtoken: signature, algorithm (only the issuer's
//! list; `none` never), `exp`/`nbf` with leeway, `iss`, `aud`.

use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

use crate::config::{JwtSettings, TokenSource};
use crate::policy::{ClaimValue, Principal, Reason};

/// The configured issuers.
#[derive(Debug)]
pub struct Issuers {
    issuers: Vec<JwtSettings>,
}

/// Why a token was refused; becomes a 401 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRejection(pub Reason);

impl Issuers {
    /// Issuers as configured.
    pub fn new(issuers: &[JwtSettings]) -> Issuers {
        Issuers {
            issuers: issuers.to_vec(),
        }
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The first token in the places any issuer reads, in order.
    pub fn find_token(&self, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        self.issuers
            .iter()
            .flat_map(|issuer| issuer.sources.iter())
            .find_map(|source| token_in(source, headers, query))
    }

    /// Verifies `token` and makes it a principal.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenRejection> {
        let invalid = |problem: &str| {
            TokenRejection(Reason::TokenInvalid {
                problem: problem.to_owned(),
            })
        };
        let header =
            decode_header(token).map_err(|_| invalid("the token is not a well-formed JWT"))?;
        // The issuer is read before the signature is checked only to pick whose keys check
        // it; nothing else is believed until then.
        let claimed_issuer =
            unverified_issuer(token).ok_or_else(|| invalid("the token has no iss claim"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|issuer| issuer.issuer == claimed_issuer)
            .ok_or(TokenRejection(Reason::TokenWrongIssuer))?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(invalid("the token's algorithm is not accepted"));
        }
        let jwk = match &header.kid {
            Some(kid) => issuer.keys.find(kid),
            None if issuer.keys.keys.len() == 1 => issuer.keys.keys.first(),
            None => None,
        }
        .ok_or_else(|| invalid("the token's key is not in the issuer's key set"))?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|_| invalid("the issuer's key cannot check this token"))?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&issuer.audiences);
        validation.leeway = issuer.leeway.as_secs();
        validation.validate_nbf = true;
        let data = decode::<serde_json::Value>(token, &key, &validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::ExpiredSignature => TokenRejection(Reason::TokenExpired {
                    seconds_ago: expired_ago(token),
                }),
                ErrorKind::InvalidAudience => TokenRejection(Reason::TokenWrongAudience {
                    expected: issuer.audiences.clone(),
                }),
                ErrorKind::InvalidIssuer => TokenRejection(Reason::TokenWrongIssuer),
                ErrorKind::ImmatureSignature => invalid("the token is not valid yet"),
                ErrorKind::InvalidSignature => invalid("the token's signature does not verify"),
                ErrorKind::MissingRequiredClaim(claim) => TokenRejection(Reason::TokenInvalid {
                    problem: format!("the token has no {claim} claim"),
                }),
                _ => invalid("the token does not verify"),
            }
        })?;
        Ok(principal(issuer, &data.claims))
    }
}

fn token_in(source: &TokenSource, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    match source {
        TokenSource::Header { name, prefix } => headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|value| value.strip_prefix(prefix.as_str()))
            .map(|token| token.trim().to_owned()),
        TokenSource::Cookie(cookie) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| name == cookie)
            .map(|(_, value)| value.to_owned()),
        TokenSource::Query(parameter) => query?
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| name == parameter)
            .map(|(_, value)| value.to_owned()),
    }
}

/// The `iss` of a token, before its signature is checked.
fn unverified_issuer(token: &str) -> Option<String> {
    let claims = unverified_claims(token)?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url(payload)?;
    serde_json::from_slice(&bytes).ok()
}

/// How long ago an expired token's `exp` passed (for "expired 3m12s ago").
fn expired_ago(token: &str) -> u64 {
    let exp = unverified_claims(token)
        .and_then(|claims| claims.get("exp")?.as_u64())
        .unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    now.saturating_sub(exp)
}

fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
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
    Principal {
        subject: claims
            .get("sub")
            .and_then(|sub| sub.as_str())
            .unwrap_or("")
            .to_owned(),
        issuer: issuer.issuer.clone(),
        roles: strings(claims.get(&issuer.roles_claim), false),
        scopes: strings(claims.get(&issuer.scopes_claim), true),
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

fn claim_value(value: &serde_json::Value) -> ClaimValue {
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
