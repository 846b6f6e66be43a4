//! API keys: a header holding a secret whose SHA-256 digest is configured. The key is
//! hashed on arrival and compared with every configured digest in constant time, so
//! neither the comparison nor which key matched shows in the timing.

use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::Rejection;
use crate::config::{ApiKeyEntry, ApiKeySettings};
use crate::policy::Principal;

/// The configured API keys.
#[derive(Debug)]
pub struct ApiKeys {
    header: HeaderName,
    keys: Vec<ApiKeyEntry>,
    /// Each key's principal, built once: a request shares it.
    principals: Vec<Arc<Principal>>,
}

impl ApiKeys {
    /// The keys as configured.
    pub fn new(settings: &ApiKeySettings) -> ApiKeys {
        ApiKeys {
            header: settings.header.clone(),
            keys: settings.keys.clone(),
            principals: settings
                .keys
                .iter()
                .map(|key| {
                    Arc::new(Principal {
                        subject: key.id.clone(),
                        issuer: "api-key".to_owned(),
                        roles: key.roles.clone(),
                        scopes: key.scopes.clone(),
                        claims: Vec::new(),
                    })
                })
                .collect(),
        }
    }

    /// The header that carries a key.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The principal of the key in `headers`, `None` without a key.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Option<Arc<Principal>>, Rejection> {
        let mut values = headers.get_all(&self.header).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Rejection::SeveralApiKeys);
        }
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        // Every key is compared, and the match is selected without branching on it.
        let mut found = subtle::Choice::from(0);
        let mut index: u32 = 0;
        for (position, key) in self.keys.iter().enumerate() {
            let equal = key.sha256.ct_eq(&digest);
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            index.conditional_assign(&position, equal);
            found |= equal;
        }
        if !bool::from(found) {
            return Err(Rejection::UnknownApiKey);
        }
        let principal = self
            .principals
            .get(index as usize)
            .ok_or(Rejection::UnknownApiKey)?;
        Ok(Some(Arc::clone(principal)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        let entry = |id: &str, secret: &str| ApiKeyEntry {
            id: id.to_owned(),
            sha256: Sha256::digest(secret.as_bytes()).into(),
            roles: vec![format!("{id}-role")],
            scopes: vec!["deploy:write".to_owned()],
        };
        ApiKeys::new(&ApiKeySettings {
            header: HeaderName::from_static("x-api-key"),
            keys: vec![entry("ci-bot", "s3cret"), entry("ops", "other")],
        })
    }

    fn with(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-api-key", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn keys_name_their_principal() {
        let principal = keys().identify(&with(&["other"])).unwrap().unwrap();
        assert_eq!(principal.subject, "ops");
        assert_eq!(principal.roles, ["ops-role"]);
        assert_eq!(principal.issuer, "api-key");
        assert_eq!(keys().identify(&with(&[])), Ok(None));
        assert_eq!(
            keys().identify(&with(&["wrong"])),
            Err(Rejection::UnknownApiKey)
        );
        assert_eq!(
            keys().identify(&with(&["s3cret", "other"])),
            Err(Rejection::SeveralApiKeys)
        );
    }
}
