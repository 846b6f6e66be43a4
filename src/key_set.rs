//! A JWKS document's signing keys, and which key checks a token's signature. Both the
//! config (a `jwks_file`, read at load) and the key fetcher (a `jwks_url`) parse key
//! sets; this module is theirs alone, with no I/O.

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};

/// A JWKS document's signing keys.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// The signing keys in a JWKS document. Keys for encryption, symmetric keys (a
    /// shared secret has no place in a published set; HMAC takes the configured
    /// `secret` only) and keys of types this build does not know are skipped, so one odd
    /// key does not cost the issuer its whole set.
    pub fn parse(text: &str) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_str(text)
            .map_err(|err| format!("not a JWKS document ({{\"keys\": [...]}}): {err}"))?;
        let listed = document.keys.len();
        let keys: Vec<Jwk> = document
            .keys
            .into_iter()
            .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
            .filter(|key| {
                !matches!(key.common.public_key_use, Some(PublicKeyUse::Encryption))
                    && matches!(
                        key.algorithm,
                        AlgorithmParameters::RSA(_)
                            | AlgorithmParameters::EllipticCurve(_)
                            | AlgorithmParameters::OctetKeyPair(_)
                    )
            })
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "the key set holds no usable signing key ({listed} listed; RSA, EC and OKP keys for signatures are read)"
            ));
        }
        Ok(KeySet { keys })
    }

    /// The key a token's `kid` names that fits `algorithm` (its type, and its `alg` when
    /// it names one); a token without a `kid` may use a set's only key.
    pub fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<&Jwk> {
        self.named(kid).find(|key| fits(key, algorithm))
    }

    /// Whether the set holds a key `kid` names, whatever its algorithm.
    pub fn names(&self, kid: Option<&str>) -> bool {
        self.named(kid).next().is_some()
    }

    fn named<'s>(&'s self, kid: Option<&str>) -> impl Iterator<Item = &'s Jwk> {
        let only = (kid.is_none() && self.keys.len() == 1)
            .then(|| self.keys.first())
            .flatten();
        let kid = kid.map(str::to_owned);
        self.keys
            .iter()
            .filter(move |key| kid.is_some() && key.common.key_id == kid)
            .chain(only)
    }

    /// How many keys the set holds (never none).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// Whether `key` can check a signature made with `algorithm`.
fn fits(key: &Jwk, algorithm: Algorithm) -> bool {
    use Algorithm::{ES256, ES384, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512};
    // A key published for one algorithm is not used with another.
    let named = key
        .common
        .key_algorithm
        .is_none_or(|published| Algorithm::try_from(published).ok() == Some(algorithm));
    let family = match key.algorithm {
        AlgorithmParameters::RSA(_) => {
            matches!(algorithm, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
        }
        AlgorithmParameters::EllipticCurve(_) => matches!(algorithm, ES256 | ES384),
        AlgorithmParameters::OctetKeyPair(_) => algorithm == EdDSA,
        _ => false,
    };
    named && family
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signing_keys_of_known_types_are_kept() {
        let text = r#"{"keys": [
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "XYZ", "kid": "future"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "sig", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let set = KeySet::parse(text).unwrap();
        assert_eq!(set.key_count(), 1);
        assert!(set.find(Some("sig"), Algorithm::EdDSA).is_some());
        assert!(
            set.find(None, Algorithm::EdDSA).is_some(),
            "a set's only key serves kid-less tokens"
        );
        assert!(
            set.find(Some("sig"), Algorithm::ES256).is_none(),
            "wrong key type"
        );
        assert!(set.names(Some("sig")));
        assert!(!set.names(Some("secret")));
        let error = KeySet::parse(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap_err();
        assert!(error.contains("no usable signing key"), "{error}");
        assert!(KeySet::parse("[]").is_err());
    }

    #[test]
    fn a_shared_kid_picks_the_key_that_fits_the_algorithm() {
        let text = r#"{"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "dup", "alg": "ES256", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "dup", "x": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AA"}
        ]}"#;
        let set = KeySet::parse(text).unwrap();
        let kty = |algorithm| {
            set.find(Some("dup"), algorithm)
                .map(|key| matches!(key.algorithm, AlgorithmParameters::OctetKeyPair(_)))
        };
        assert_eq!(kty(Algorithm::EdDSA), Some(true));
        assert_eq!(kty(Algorithm::ES256), Some(false));
        assert_eq!(kty(Algorithm::ES384), None, "the EC key is for ES256 only");
        assert_eq!(kty(Algorithm::RS256), None);
        assert!(set.names(Some("dup")));
        assert!(
            set.find(None, Algorithm::EdDSA).is_none(),
            "no kid, several keys"
        );
    }
}
