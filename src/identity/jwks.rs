//! Issuers' public keys: a JWKS document read from a file with the config, or fetched
//! from a URL at start and again on an interval and when a token names a key the set
//! lacks. A failed fetch keeps the last good set; fetches are at most one per
//! `min_refresh`, however many unknown `kid`s arrive.
//!
//! This module knows key sets and how to fetch them; it knows nothing of tokens, claims
//! or requests (`jwt.rs` decides which key a token needs and whether a fetch may help).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::RemoteKeys;
use crate::key_set::KeySet;

/// The largest key set document read (IdPs publish a handful of keys, a few KiB).
const MAX_DOCUMENT: usize = 1 << 20;

/// How long one fetch may take, from connecting to the last body byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting may take, within [`FETCH_TIMEOUT`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One issuer's keys as they are now, and, for a `jwks_url`, how they are renewed.
pub struct IssuerKeys {
    issuer: String,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Counts changes of `current`, so that what was verified with older keys can tell.
    generation: AtomicU64,
    remote: Option<Remote>,
}

struct Remote {
    settings: RemoteKeys,
    /// The TLS setup for https, or why there is none (no CA certificates found).
    tls: Result<Arc<rustls::ClientConfig>, String>,
    /// When the last fetch ended; held across a fetch, so concurrent callers wait for
    /// the one in flight and then find it recent.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    /// Why the last fetch failed, until one succeeds.
    last_error: Mutex<Option<String>>,
    succeeded: IntCounter,
    failed: IntCounter,
}

impl IssuerKeys {
    /// Keys from a file, never renewed.
    pub fn fixed(issuer: &str, keys: Option<Arc<KeySet>>) -> IssuerKeys {
        IssuerKeys {
            issuer: issuer.to_owned(),
            current: RwLock::new(keys),
            generation: AtomicU64::new(0),
            remote: None,
        }
    }

    /// Keys from `settings.url`, none until the first fetch succeeds. `succeeded` and
    /// `failed` count fetches.
    pub fn remote(
        issuer: &str,
        settings: &RemoteKeys,
        succeeded: IntCounter,
        failed: IntCounter,
    ) -> IssuerKeys {
        let tls = if settings.url.scheme_str() == Some("https") {
            crate::tls::client_config(settings.ca.as_deref())
        } else {
            Err("TLS is not used for http URLs".to_owned())
        };
        IssuerKeys {
            issuer: issuer.to_owned(),
            current: RwLock::new(None),
            generation: AtomicU64::new(0),
            remote: Some(Remote {
                settings: settings.clone(),
                tls,
                last_attempt: tokio::sync::Mutex::new(None),
                last_error: Mutex::new(None),
                succeeded,
                failed,
            }),
        }
    }

    /// The keys now.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.read().ok().and_then(|keys| keys.clone())
    }

    /// Which keys `current` returns: a number that changes whenever they do.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the keys come from a URL and can be fetched again.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Why tokens of this issuer cannot be verified at all, for `/readyz`: `None` once
    /// keys are loaded (or when the issuer needs none).
    pub fn unavailable(&self) -> Option<String> {
        let remote = self.remote.as_ref()?;
        if self.current().is_some() {
            return None;
        }
        let why = remote
            .last_error
            .lock()
            .ok()
            .and_then(|error| error.clone())
            .unwrap_or_else(|| "not fetched yet".to_owned());
        Some(format!(
            "issuer {}: no keys loaded from {}: {why}",
            self.issuer, remote.settings.url
        ))
    }

    /// Fetches the key set now, unless a fetch ended less than `min_refresh` ago (a
    /// caller arriving while one is in flight waits for it, then finds it recent).
    ///
    /// The fetch starts at once, as a task of its own: a caller that goes away (a request
    /// whose client hung up) does not cancel it, so it cannot undo the rate limit. The
    /// returned future waits for it.
    pub fn refresh(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let keys = Arc::clone(self);
        let task = self
            .remote
            .is_some()
            .then(|| tokio::spawn(async move { keys.refresh_now().await }));
        async move {
            if let Some(task) = task {
                // The task cannot panic short of a bug; either way the caller goes on
                // with the keys there are.
                let _ = task.await;
            }
        }
    }

    async fn refresh_now(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        let mut last_attempt = remote.last_attempt.lock().await;
        if last_attempt.is_some_and(|at| at.elapsed() < remote.settings.min_refresh) {
            return;
        }
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, fetch(remote))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())))
            .and_then(|text| KeySet::parse(&text));
        *last_attempt = Some(Instant::now());
        let stored = fetched.and_then(|keys| {
            let mut current = self
                .current
                .write()
                .map_err(|_| "the key store is unusable after a panic".to_owned())?;
            if current.as_deref() == Some(&keys) {
                return Ok(());
            }
            tracing::info!(issuer.id = %self.issuer, jwks.url = %remote.settings.url, jwks.keys = keys.key_count(), "token signing keys loaded");
            *current = Some(Arc::new(keys));
            self.generation.fetch_add(1, Ordering::AcqRel);
            Ok(())
        });
        match stored {
            Ok(()) => {
                remote.succeeded.inc();
                if let Ok(mut error) = remote.last_error.lock() {
                    *error = None;
                }
            }
            Err(error) => {
                remote.failed.inc();
                let kept = if self.current().is_some() {
                    "keeping the keys loaded before"
                } else {
                    "no keys loaded yet: this issuer's tokens are refused"
                };
                tracing::warn!(issuer.id = %self.issuer, jwks.url = %remote.settings.url, %error, "cannot fetch token signing keys; {kept}");
                if let Ok(mut last) = remote.last_error.lock() {
                    *last = Some(error);
                }
            }
        }
    }

    /// Keeps a `jwks_url` set fresh for the life of the process: every `refresh`, or every
    /// `min_refresh` while no set was ever loaded. The first fetch is the caller's.
    pub async fn keep_fresh(self: Arc<Self>) {
        let Some(remote) = &self.remote else {
            return;
        };
        loop {
            let wait = if self.current().is_some() {
                remote.settings.refresh
            } else {
                remote.settings.min_refresh
            };
            tokio::time::sleep(wait).await;
            self.refresh_now().await;
        }
    }
}

/// GETs the key set document: one request on a fresh connection, no redirects followed,
/// at most [`MAX_DOCUMENT`] bytes.
async fn fetch(remote: &Remote) -> Result<String, String> {
    let url = &remote.settings.url;
    let host = url.host().ok_or("the URL has no host")?;
    // `Uri::host` keeps an IPv6 literal's brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("cannot connect within {}s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|err| format!("cannot connect: {err}"))?;
    let authority = url.authority().map_or(host, |authority| authority.as_str());
    let request = Request::get(
        url.path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str()),
    )
    .header(http::header::HOST, authority)
    .header(
        http::header::ACCEPT,
        "application/jwk-set+json, application/json",
    )
    .header(
        http::header::USER_AGENT,
        concat!("portcullis/", env!("CARGO_PKG_VERSION")),
    )
    .body(Empty::<Bytes>::new())
    .map_err(|err| format!("cannot build the request: {err}"))?;
    if https {
        let tls = remote.tls.as_ref().map_err(Clone::clone)?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|err| format!("\"{host}\" is not a TLS server name: {err}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|err| format!("TLS handshake failed: {err}"))?;
        get(stream, request).await
    } else {
        get(tcp, request).await
    }
}

async fn get<T>(io: T, request: Request<Empty<Bytes>>) -> Result<String, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| format!("HTTP handshake failed: {err}"))?;
    // The connection ends with this exchange: the task ends when the response is read or
    // the fetch's timeout drops the future that owns `sender`.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("request failed: {err}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!(
            "answered {} (expected 200 with the key set; redirects are not followed)",
            response.status()
        ));
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|err| format!("reading the key set failed: {err}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the key set is not UTF-8 text".to_owned())
}
