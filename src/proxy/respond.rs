//! Errors on the request path and the `application/problem+json` (RFC 9457) answers they
//! become. This is the one place that maps an error to a status.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use super::forward::BoxError;
use crate::config::format_duration;

/// Something went wrong with a request; says whose fault it was through its status.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something we will not interpret (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No route accepts the request's host and path (404).
    #[error("no route for this host and path")]
    NoRoute,
    /// The request head is larger than `limits.max_header_size` (431).
    #[error("request head is larger than {limit} bytes")]
    HeaderTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The request body is larger than `limits.max_body_size` (413).
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// No connection to any target could be made, or it broke before a response (502).
    #[error("upstream \"{upstream}\" is unreachable")]
    UpstreamUnreachable {
        /// The upstream's name.
        upstream: String,
        /// What the client library reported.
        #[source]
        source: BoxError,
    },
    /// The upstream did not send a response head in time (504).
    #[error("upstream \"{upstream}\" did not answer within {}", format_duration(*.timeout))]
    UpstreamTimeout {
        /// The upstream's name.
        upstream: String,
        /// The configured `timeout`.
        timeout: Duration,
    },
}

impl ProxyError {
    /// The stable reason code, used in the body, the `X-Portcullis-Reason` header and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::NoRoute => "no_route",
            ProxyError::HeaderTooLarge { .. } => "header_too_large",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
        }
    }

    /// Whether an HTTP/1.1 connection must close after this answer: the request's framing
    /// or size was wrong, so what follows it on the connection cannot be trusted.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::HeaderTooLarge { .. }
                | ProxyError::BodyTooLarge { .. }
        )
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::HeaderTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A whole sentence for the client: what happened and what to do. Never names
    /// upstream addresses or internal errors.
    fn detail(&self) -> String {
        match self {
            ProxyError::BadRequest(problem) => {
                format!(
                    "The request was not accepted: {problem}. Fix the request and send it again."
                )
            }
            ProxyError::NoRoute => "No route serves this host and path. Check the URL.".to_owned(),
            ProxyError::HeaderTooLarge { limit } => format!(
                "The request headers are larger than the {limit}-byte limit. Send fewer or smaller headers (large cookies are the usual cause)."
            ),
            ProxyError::BodyTooLarge { limit } => format!(
                "The request body is larger than the {limit}-byte limit. Send a smaller body."
            ),
            ProxyError::UpstreamUnreachable { .. } => {
                "The service behind this gateway could not be reached. Try again later.".to_owned()
            }
            ProxyError::UpstreamTimeout { timeout, .. } => format!(
                "The service behind this gateway did not answer within {}. Try again later.",
                format_duration(*timeout)
            ),
        }
    }
}

/// The response for a failed request. Client mistakes are logged at debug, ours and the
/// upstream's at warn, with the whole error chain.
pub fn error(err: &ProxyError, request_id: &HeaderValue) -> Response<ProxyBody> {
    let request_id_text = request_id.to_str().unwrap_or("");
    match err {
        ProxyError::BadRequest(_)
        | ProxyError::NoRoute
        | ProxyError::HeaderTooLarge { .. }
        | ProxyError::BodyTooLarge { .. } => {
            tracing::debug!(request.id = request_id_text, error = %ErrorChain(err), "request refused");
        }
        ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamTimeout { .. } => {
            tracing::warn!(request.id = request_id_text, error = %ErrorChain(err), "upstream failed");
        }
    }
    problem(err.status(), err.reason(), &err.detail(), request_id_text)
}

/// An RFC 9457 problem document with our `reason` and `request_id` members.
pub fn problem(
    status: StatusCode,
    reason: &str,
    detail: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "type": format!("urn:portcullis:reason:{reason}"),
        "title": status.canonical_reason().unwrap_or(""),
        "status": status.as_u16(),
        "reason": reason,
        "detail": detail,
        "request_id": request_id,
    });
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(reason) {
        headers.insert("x-portcullis-reason", value);
    }
    response
}

/// Displays an error and its sources joined by `: `.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}
