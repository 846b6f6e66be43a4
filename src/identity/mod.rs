//! Credentials → [`Principal`]: who is calling, before the policy decides.
//!
//! `authenticate` does no I/O. The credentials are API keys (`api_keys.rs`) and JWTs
//! (`jwt.rs`), whose issuers' keys `jwks.rs` loads and keeps fresh; `identify` is
//! `authenticate` plus, when a token names a key its issuer's fetched set lacks, one
//! rate-limited fetch of that set and a second try. This module also owns the identity
//! headers: the ones it sets upstream are removed from every incoming request first, so a
//! client can never claim an identity.
//!
//! It knows nothing of routes, rules or responses: it says who the caller is, or why the
//! credentials are refused.

mod api_keys;
mod client_certs;
mod jwks;
mod jwt;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{ForwardHeaderNames, IdentitySettings};
use crate::policy::{ClientCertificate, Principal, Reason};
use crate::telemetry::Metrics;
use api_keys::ApiKeys;
use client_certs::ClientCerts;
use jwt::{Issuers, TokenRejection};

pub use crate::key_set::KeySet;
pub use jwks::IssuerKeys;
pub use jwt::claim_value;

/// How long a request waits for a fetch of its token's key set.
pub const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// The configured ways of identifying callers.
pub struct Identity {
    api_keys: Option<ApiKeys>,
    client_certs: ClientCerts,
    issuers: Issuers,
    forward: ForwardHeaderNames,
    challenge: Option<HeaderValue>,
    strip_authorization: bool,
}

/// Credentials that were sent but are not valid: a 401 before any rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// An API key that matches no configured key.
    #[error("the API key is not recognised")]
    UnknownApiKey,
    /// More than one API key header: a malformed request (400), not a bad credential.
    #[error("the request carries more than one API key")]
    SeveralApiKeys,
    /// Two tokens where one was expected: a malformed request (400).
    #[error("the request carries more than one token in the same place")]
    SeveralTokens,
    /// A token that does not verify.
    #[error("{}", .0.reason)]
    Token(TokenRejection),
}

impl Rejection {
    /// Whether the request itself is malformed (a 400), not its credential (a 401).
    pub fn is_malformed_request(&self) -> bool {
        matches!(self, Rejection::SeveralApiKeys | Rejection::SeveralTokens)
    }

    /// The reason a denial gives for it.
    pub fn reason(&self) -> Reason {
        match self {
            Rejection::Token(rejection) => rejection.reason.clone(),
            _ => Reason::TokenInvalid {
                problem: self.to_string(),
            },
        }
    }

    /// The issuer whose fetched keys lack the token's key: after a fetch the token may
    /// verify.
    fn stale_keys(&self) -> Option<usize> {
        match self {
            Rejection::Token(rejection) => rejection.stale_keys,
            _ => None,
        }
    }
}

impl Identity {
    /// Identity as configured. Keys at a `jwks_url` are not fetched until
    /// [`Identity::load_keys`]; on a reload, an issuer whose key source is unchanged keeps
    /// the key set of `previous`.
    pub fn new(
        settings: &IdentitySettings,
        metrics: &Metrics,
        previous: Option<&Identity>,
    ) -> Identity {
        let challenge = if settings.jwt.is_empty() {
            settings.api_keys.as_ref().and_then(|keys| {
                HeaderValue::from_str(&format!(
                    "ApiKey realm=\"portcullis\", header=\"{}\"",
                    keys.header
                ))
                .ok()
            })
        } else {
            Some(HeaderValue::from_static("Bearer realm=\"portcullis\""))
        };
        Identity {
            api_keys: settings.api_keys.as_ref().map(ApiKeys::new),
            client_certs: ClientCerts::new(&settings.client_certs),
            issuers: Issuers::new(
                &settings.jwt,
                metrics,
                previous.map(|previous| &previous.issuers),
            ),
            forward: settings.forward.clone(),
            challenge,
            strip_authorization: settings.strip_authorization,
        }
    }

    /// Who sent `headers`: `Ok(None)` for a request without credentials, an error for
    /// credentials that are not valid.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<Arc<Principal>>, Rejection> {
        if !self.issuers.is_empty()
            && let Some((token, source)) = self
                .issuers
                .find_token(headers, query)
                .map_err(|_| Rejection::SeveralTokens)?
        {
            return self
                .issuers
                .verify(&token, Some(&source))
                .map(Some)
                .map_err(Rejection::Token);
        }
        match &self.api_keys {
            Some(keys) => keys.identify(headers),
            None => Ok(None),
        }
    }

    /// The caller a verified client certificate names (`identity.client_certs`), for a
    /// request that carried no token or API key: those name the caller when present.
    pub fn identify_certificate(&self, certificate: &ClientCertificate) -> Option<Arc<Principal>> {
        self.client_certs.identify(certificate)
    }

    /// Verifies a token handed over directly (`explain --token`), as if it had come in a
    /// request.
    pub fn verify_token(&self, token: &str) -> Result<Arc<Principal>, Rejection> {
        if self.issuers.is_empty() {
            return Err(Rejection::Token(
                Reason::TokenInvalid {
                    problem: "no token issuer is configured (identity.jwt)".to_owned(),
                }
                .into(),
            ));
        }
        self.issuers.verify(token, None).map_err(Rejection::Token)
    }

    /// Fetches every `jwks_url` key set that has no keys yet once, all at the same time;
    /// a fetch that fails is logged and counted, and its issuer's tokens are refused until
    /// one succeeds.
    pub async fn load_keys(&self) {
        // Every fetch starts before the first is waited for.
        let fetches: Vec<_> = self
            .remote_key_sets()
            .filter(|keys| keys.current().is_none())
            .map(IssuerKeys::refresh)
            .collect();
        for fetch in fetches {
            fetch.await;
        }
    }

    /// The issuers whose keys come from a `jwks_url`, to keep fresh.
    pub fn remote_key_sets(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.issuers.key_sets().filter(|keys| keys.is_remote())
    }

    /// [`Identity::authenticate`], and for a token whose key the issuer's fetched set
    /// lacks (a rotation), one fetch of the set (at most one per `jwks_min_refresh`,
    /// however many such tokens arrive) and a second try. A request waits for the fetch
    /// at most [`REFRESH_WAIT`]; the fetch itself goes on.
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<Arc<Principal>>, Rejection> {
        let identified = self.authenticate(headers, query);
        let Some(issuer) = identified.as_ref().err().and_then(Rejection::stale_keys) else {
            return identified;
        };
        // Try again whatever this call did: the fetch it waited for may have been
        // another request's.
        let _ = tokio::time::timeout(REFRESH_WAIT, self.issuers.refresh(issuer)).await;
        self.authenticate(headers, query)
    }

    /// Why some tokens cannot be verified at all (an issuer whose keys were never
    /// loaded), for `/readyz`.
    pub fn unavailable(&self) -> Vec<String> {
        self.issuers
            .key_sets()
            .filter_map(|keys| keys.unavailable())
            .collect()
    }

    /// The `WWW-Authenticate` challenge a 401 carries: how to send credentials.
    pub fn challenge(&self) -> Option<&HeaderValue> {
        self.challenge.as_ref()
    }

    /// The challenge for an identified caller whose credential lacks scopes (RFC 6750
    /// §3.1, in the scheme of the credential it used).
    pub fn insufficient_scope(&self, needed: Option<&str>) -> Option<HeaderValue> {
        let challenge = self.challenge.as_ref()?.to_str().ok()?;
        let scope = needed
            .map(|scope| format!(", scope=\"{scope}\""))
            .unwrap_or_default();
        HeaderValue::from_str(&format!("{challenge}, error=\"insufficient_scope\"{scope}")).ok()
    }

    /// Right after `authenticate`, before anything looks at the headers: removes the
    /// client's copies of the identity headers and its credentials.
    pub fn strip_client_claims(&self, headers: &mut HeaderMap) {
        // SECURITY: only the gateway speaks for who the caller is, to the policy and to
        // the upstream alike. (A look at the few names a request has is cheaper than a
        // removal for each owned name, and finds none in nearly every request.)
        let owned = |name: &http::HeaderName| self.owned_headers().any(|own| own == name);
        if headers.keys().any(owned) {
            for name in self.owned_headers() {
                headers.remove(name);
            }
        }
    }

    /// The header names the gateway owns: the identity headers it sets, and the API key
    /// header (a secret neither the policy nor the upstream needs).
    fn owned_headers(&self) -> impl Iterator<Item = &http::HeaderName> {
        // Runs on every request: no allocation.
        [
            &self.forward.subject,
            &self.forward.roles,
            &self.forward.scopes,
            &self.forward.client_cert,
        ]
        .into_iter()
        .chain(self.api_keys.as_ref().map(ApiKeys::header))
    }

    /// Before forwarding an allowed request: sets the identity headers for `principal`
    /// and the certificate header for `client_cert`, and removes `Authorization` when
    /// configured to.
    ///
    /// The fields to set are handed to `add`, not inserted: the caller writes them after
    /// the request's own fields, in place of any of the same name.
    pub fn forward_headers(
        &self,
        headers: &mut HeaderMap,
        principal: Option<&Principal>,
        client_cert: Option<&ClientCertificate>,
        mut add: impl FnMut(HeaderName, HeaderValue),
    ) {
        if self.strip_authorization {
            headers.remove(http::header::AUTHORIZATION);
        }
        if let Some(value) = client_cert.and_then(client_certs::forwarded) {
            add(self.forward.client_cert.clone(), value);
        }
        let Some(principal) = principal else {
            return;
        };
        let pairs = [
            (&self.forward.subject, principal.subject.clone()),
            (&self.forward.roles, principal.roles.join(",")),
            (&self.forward.scopes, principal.scopes.join(" ")),
        ];
        for (name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            // Values come from config or verified credentials; one that is not a valid
            // header value is left out rather than forwarded mangled.
            if let Ok(value) = HeaderValue::from_str(&value) {
                add(name.clone(), value);
            }
        }
    }
}
