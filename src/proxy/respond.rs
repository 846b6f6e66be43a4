//! Errors on the request path and the `application/problem+json` (RFC 9457) answers they
//! become. This is the one place that maps an error to a status.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, VARY, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use super::forward::BoxError;
use crate::config::{DenialSettings, Detail, format_duration};
use crate::identity::Identity;
use crate::json;
use crate::policy::{Country, Decision, Outcome, PolicySet, Reason};

/// Something went wrong with a request; says whose fault it was through its status.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something we will not interpret (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Content on a method whose content has no defined meaning, on a route that does not
    /// allow it (400).
    #[error("a {method} request with content")]
    BodyNotAllowed {
        /// The request's method.
        method: http::Method,
    },
    /// An `Upgrade` to a protocol the route does not list in `upgrades` (403).
    #[error("a switch to a protocol this route does not allow")]
    UpgradeNotAllowed,
    /// No route accepts the request's host and path (404).
    #[error("no route for this host and path")]
    NoRoute,
    /// A `CONNECT` request: the gateway is not a forward proxy (405).
    #[error("CONNECT is not supported")]
    ConnectRefused,
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
    /// The client sent its body too slowly: the upstream's `timeout` passed while the
    /// gateway waited for the next 64 KiB of it (408).
    #[error("the request body did not arrive within {}", format_duration(*.timeout))]
    BodyTimeout {
        /// The upstream's `timeout`.
        timeout: Duration,
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
    /// No TLS connection to the upstream's https target could be made: its certificate
    /// did not verify, or the handshake failed.
    #[error("the TLS handshake with upstream {upstream} ({target}) failed: {cause}")]
    UpstreamTls {
        /// The upstream's name.
        upstream: String,
        /// The target, `https://host:port`.
        target: String,
        /// Why, in a few words: `unknown CA`, `name mismatch`, `certificate expired`.
        cause: &'static str,
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
            ProxyError::BodyNotAllowed { .. } => "body_not_allowed",
            ProxyError::UpgradeNotAllowed => "upgrade_not_allowed",
            ProxyError::NoRoute => "no_route",
            ProxyError::ConnectRefused => "connect_not_allowed",
            ProxyError::HeaderTooLarge { .. } => "header_too_large",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BodyTimeout { .. } => "body_timeout",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::UpstreamTls { .. } => "upstream_tls_error",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
        }
    }

    /// Whether an HTTP/1.1 connection must close after this answer: the request's framing
    /// or size was wrong, so what follows it on the connection cannot be trusted.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::BodyNotAllowed { .. }
                | ProxyError::UpgradeNotAllowed
                | ProxyError::ConnectRefused
                | ProxyError::HeaderTooLarge { .. }
                | ProxyError::BodyTooLarge { .. }
                | ProxyError::BodyTimeout { .. }
        )
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BodyNotAllowed { .. } => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::UpgradeNotAllowed => StatusCode::FORBIDDEN,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::ConnectRefused => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::HeaderTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamTls { .. } => {
                StatusCode::BAD_GATEWAY
            }
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
            ProxyError::BodyNotAllowed { method } => format!(
                "A {method} request may not carry content here. Send it without a body, or use POST."
            ),
            ProxyError::UpgradeNotAllowed => "This route does not allow the protocol switch the request asks for in its Upgrade field. Send the request without Upgrade, or ask the gateway's operator to allow the protocol here.".to_owned(),
            ProxyError::NoRoute => "No route serves this host and path. Check the URL.".to_owned(),
            ProxyError::ConnectRefused => {
                "This gateway does not tunnel CONNECT requests; it is not a forward proxy."
                    .to_owned()
            }
            ProxyError::HeaderTooLarge { limit } => format!(
                "The request headers are larger than the {limit}-byte limit. Send fewer or smaller headers (large cookies are the usual cause)."
            ),
            ProxyError::BodyTooLarge { limit } => format!(
                "The request body is larger than the {limit}-byte limit. Send a smaller body."
            ),
            ProxyError::BodyTimeout { timeout } => format!(
                "The request body arrived too slowly: less than 64 KiB of it came within {}. Send it again on a faster connection.",
                format_duration(*timeout)
            ),
            ProxyError::UpstreamUnreachable { .. } => UNREACHABLE_DETAIL.to_owned(),
            ProxyError::UpstreamTls { cause, .. } => format!(
                "The gateway could not make a secure connection to the service behind it ({cause}). Try again later."
            ),
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
        | ProxyError::BodyNotAllowed { .. }
        | ProxyError::UpgradeNotAllowed
        | ProxyError::NoRoute
        | ProxyError::ConnectRefused
        | ProxyError::HeaderTooLarge { .. }
        | ProxyError::BodyTooLarge { .. }
        | ProxyError::BodyTimeout { .. } => {
            tracing::debug!(request.id = request_id_text, error = %ErrorChain(err), "request refused");
        }
        ProxyError::UpstreamUnreachable { .. }
        | ProxyError::UpstreamTls { .. }
        | ProxyError::UpstreamTimeout { .. } => {
            tracing::warn!(request.id = request_id_text, error = %ErrorChain(err), "upstream failed");
        }
    }
    let mut response = problem(err.status(), err.reason(), &err.detail(), request_id_text);
    if matches!(err, ProxyError::ConnectRefused) {
        // RFC 9110 §15.5.6: a 405 lists the methods that are supported.
        response.headers_mut().insert(
            http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
        );
    }
    response
}

/// The request's id, on every request sent upstream and every response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const UNREACHABLE_DETAIL: &str =
    "The service behind this gateway could not be reached. Try again later.";

/// The answer when an upstream's body failed before any of its response had been written:
/// the client gets a 502 that explains itself, not a closed connection. (The pool counted
/// the failure.)
pub fn upstream_body_failed(err: &BoxError, request_id: &HeaderValue) -> Response<ProxyBody> {
    let request_id_text = request_id.to_str().unwrap_or("");
    tracing::warn!(request.id = request_id_text, error = %ErrorChain(err.as_ref()), "upstream failed before its response began");
    let mut response = problem(
        StatusCode::BAD_GATEWAY,
        "upstream_unreachable",
        UNREACHABLE_DETAIL,
        request_id_text,
    );
    response
        .headers_mut()
        .insert(X_REQUEST_ID, request_id.clone());
    response
}

/// An RFC 9457 problem document with our `reason` and `request_id` members.
pub fn problem(
    status: StatusCode,
    reason: &str,
    detail: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let body = problem_document(status, reason, detail, request_id);
    let mut response = Response::new(
        Full::new(Bytes::from(body))
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
        headers.insert(X_PORTCULLIS_REASON, value);
    }
    response
}

/// The text of [`problem`]'s document, for answers written without hyper.
pub fn problem_document(
    status: StatusCode,
    reason: &str,
    detail: &str,
    request_id: &str,
) -> String {
    let mut body = String::with_capacity(256);
    let mut object = problem_fields(&mut body, status, reason);
    object.str("detail", detail).str("request_id", request_id);
    object.finish();
    body
}

/// Opens a problem document (RFC 9457) in `out` with the fields every one starts with.
fn problem_fields<'a>(out: &'a mut String, status: StatusCode, reason: &str) -> json::Object<'a> {
    let mut object = json::Object::new(out);
    object
        .str_parts("type", &["urn:portcullis:reason:", reason])
        .str("title", status.canonical_reason().unwrap_or(""))
        .u64("status", u64::from(status.as_u16()))
        .str("reason", reason);
    object
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

/// The status of a denial: 401 when the caller must identify itself, 403 when it is
/// identified (or need not be) and still may not.
pub fn denial_status(reason: &Reason) -> StatusCode {
    if reason.is_authentication() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::FORBIDDEN
    }
}

/// A whole sentence for the client that says what to do, revealing no networks, other
/// callers or rule internals.
pub fn hint(reason: &Reason) -> String {
    match reason {
        Reason::Allowed => "The request is allowed.".to_owned(),
        Reason::ExplicitDeny => "A rule denies this request.".to_owned(),
        Reason::NoMatchingAllow { unmet: None } => {
            "No rule allows this request; paths without a rule are denied by default.".to_owned()
        }
        Reason::NoMatchingAllow { unmet: Some(_) } => {
            "The request does not carry what the rule for this path requires.".to_owned()
        }
        Reason::MethodNotAllowed { method, allowed } => format!(
            "{method} is not allowed on this path; allowed methods: {}.",
            allowed.join(", ")
        ),
        Reason::IpNotAllowed { .. } => "Your network is not allowed for this path.".to_owned(),
        Reason::IpDenied { .. } => "Requests from your network are blocked.".to_owned(),
        Reason::CountryDenied {
            country: Some(country),
            ..
        } if *country == Country::UNKNOWN => {
            "Requests from an unknown location (XX) are not allowed here.".to_owned()
        }
        Reason::CountryDenied {
            country: Some(country),
            ..
        } => format!("Requests from country {country} are not allowed here."),
        Reason::CountryDenied { country: None, .. } => {
            "Where this request comes from could not be determined, and access here depends on it; try again later.".to_owned()
        }
        Reason::CredentialsMissing => {
            "This request needs credentials: send a token or an API key.".to_owned()
        }
        Reason::TokenInvalid { problem } => {
            format!("The credentials sent are not valid: {problem}. Send valid ones.")
        }
        Reason::TokenExpired { seconds_ago } => format!(
            "The token expired {} ago; get a new one.",
            crate::policy::elapsed(*seconds_ago)
        ),
        Reason::TokenWrongAudience { expected } => format!(
            "The token is for another audience; this service accepts {}.",
            expected.join(" or ")
        ),
        Reason::TokenWrongIssuer => {
            "The token comes from an issuer this service does not trust.".to_owned()
        }
        Reason::MissingRole {
            required, one_of, ..
        } => format!(
            "This request needs {}.",
            crate::policy::needs("role", required, *one_of)
        ),
        Reason::MissingScope {
            required, one_of, ..
        } => format!(
            "This request needs {}.",
            crate::policy::needs("scope", required, *one_of)
        ),
        Reason::TenantMismatch { .. } => {
            "This resource belongs to another tenant or owner.".to_owned()
        }
        Reason::MtlsRequired {
            presented: None, ..
        } => "This request needs a client certificate: connect with one over TLS.".to_owned(),
        Reason::MtlsRequired {
            presented: Some(_), ..
        } => "The client certificate sent is not one accepted for this request.".to_owned(),
    }
}

/// The 403 for a denied request: problem+json, or an HTML page for clients that prefer
/// `text/html`, telling as much as `denials.detail` allows.
pub fn denied(
    decision: &Decision,
    policy: &PolicySet,
    settings: &DenialSettings,
    identity: &Identity,
    request_id: &str,
    html: bool,
) -> Response<ProxyBody> {
    let status = denial_status(&decision.reason);
    let reason = decision.reason.code();
    let detail = settings.detail;
    let shows_rule = detail != Detail::Minimal;
    let rule = decision.rule.as_ref().filter(|_| shows_rule).map(|id| id.0);
    let help = shows_rule
        .then(|| {
            decision
                .rule
                .as_ref()
                .and_then(|id| policy.rule(id))
                .and_then(|rule| rule.help.as_deref())
                .or(settings.help_url.as_deref())
        })
        .flatten();
    let hint = shows_rule.then(|| self::hint(&decision.reason));
    let closest: Vec<(&str, &str)> = if shows_rule {
        decision
            .closest()
            .filter_map(|step| match &step.outcome {
                Outcome::NotApplicable(reason) | Outcome::ConditionFailed(reason) => {
                    Some((step.rule.0, reason.code()))
                }
                Outcome::Matched => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    let trace: Vec<(String, &'static str, &'static str, String)> = if detail == Detail::Verbose {
        decision
            .trace
            .iter()
            .map(|step| {
                (
                    step.rule.to_string(),
                    step.effect.as_str(),
                    step.mode.as_str(),
                    step.outcome.to_string(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };

    let (content_type, body) = if html {
        let page = DenialPage {
            status,
            reason,
            rule,
            hint,
            help,
            request_id,
            closest: &closest,
            trace: &trace,
            verbose: detail == Detail::Verbose,
        };
        ("text/html; charset=utf-8", page.render())
    } else {
        let mut body = String::with_capacity(512);
        let mut object = problem_fields(&mut body, status, reason);
        object
            .some_str("rule", rule)
            .some_str("detail", hint.as_deref())
            .some_str("help", help)
            .str("request_id", request_id);
        if !closest.is_empty() {
            object.objects("closest", &closest, |item, (rule, reason)| {
                item.str("rule", rule).str("reason", reason);
            });
        }
        if detail == Detail::Verbose {
            object.objects("trace", &trace, |item, (rule, effect, mode, outcome)| {
                item.str("rule", rule)
                    .str("effect", effect)
                    .str("mode", mode)
                    .str("outcome", outcome);
            });
        }
        object.finish();
        ("application/problem+json", body)
    };

    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(VARY, HeaderValue::from_static("accept"));
    headers.insert(X_PORTCULLIS_REASON, HeaderValue::from_static(reason));
    // RFC 9110 §15.5.2: a 401 says how to authenticate; RFC 6750 §3.1: a token that lacks
    // a scope gets a 403 naming the scope it needs.
    let challenge = identity.challenge();
    match &decision.reason {
        Reason::CredentialsMissing => {
            if let Some(challenge) = challenge {
                headers.insert(WWW_AUTHENTICATE, challenge.clone());
            }
        }
        // Every other 401 is a credential that was refused.
        reason if reason.is_authentication() => {
            if let Some(challenge) = challenge
                && let Ok(text) = challenge.to_str()
                && let Ok(value) =
                    HeaderValue::from_str(&format!("{text}, error=\"invalid_token\""))
            {
                headers.insert(WWW_AUTHENTICATE, value);
            }
        }
        Reason::MissingScope {
            required, one_of, ..
        } => {
            // The scope attribute lists what is needed; for one of several, that is none
            // in particular.
            let needed = (!*one_of).then(|| required.join(" "));
            if let Some(value) = identity.insufficient_scope(needed.as_deref()) {
                headers.insert(WWW_AUTHENTICATE, value);
            }
        }
        _ => {}
    }
    if let Some(rule) = rule
        && let Ok(value) = HeaderValue::from_str(rule)
    {
        headers.insert(X_PORTCULLIS_RULE, value);
    }
    response
}

const X_PORTCULLIS_REASON: HeaderName = HeaderName::from_static("x-portcullis-reason");
const X_PORTCULLIS_RULE: HeaderName = HeaderName::from_static("x-portcullis-rule");

/// Whether the client's `Accept` ranks `text/html` above JSON (browsers do; API clients
/// and `*/*` do not). Ties go to JSON.
pub fn prefers_html(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let mut html = 0.0f32;
    let mut json = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|param| param.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(quality),
            "application/json" | "application/problem+json" => json = json.max(quality),
            "text/*" => html = html.max(quality * 0.99),
            "application/*" | "*/*" => {
                json = json.max(quality * 0.99);
                html = html.max(quality * 0.98);
            }
            _ => {}
        }
    }
    html > json
}

/// The HTML denial page: plain, accessible, no script and no external asset.
struct DenialPage<'a> {
    status: StatusCode,
    reason: &'a str,
    rule: Option<&'a str>,
    hint: Option<String>,
    help: Option<&'a str>,
    request_id: &'a str,
    closest: &'a [(&'a str, &'a str)],
    trace: &'a [(String, &'static str, &'static str, String)],
    verbose: bool,
}

impl DenialPage<'_> {
    fn render(&self) -> String {
        let title = format!(
            "{} {}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("")
        );
        let mut page = String::with_capacity(2048);
        page.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        page.push_str(&format!("<title>{}</title>\n", escape(&title)));
        page.push_str(PAGE_STYLE);
        page.push_str("</head>\n<body>\n<main>\n");
        page.push_str(&format!("<h1>{}</h1>\n", escape(&title)));
        let hint = self
            .hint
            .as_deref()
            .unwrap_or("Access to this page was denied.");
        page.push_str(&format!("<p class=\"hint\">{}</p>\n", escape(hint)));
        page.push_str("<dl>\n");
        page.push_str(&format!(
            "<dt>Reason</dt><dd><code>{}</code></dd>\n",
            escape(self.reason)
        ));
        if let Some(rule) = self.rule {
            page.push_str(&format!(
                "<dt>Rule</dt><dd><code>{}</code></dd>\n",
                escape(rule)
            ));
        }
        page.push_str(&format!(
            "<dt>Request ID</dt><dd><code>{}</code></dd>\n",
            escape(self.request_id)
        ));
        page.push_str("</dl>\n");
        if let Some(help) = self.help {
            page.push_str(&format!(
                "<p><a href=\"{}\">How to request access</a></p>\n",
                escape(help)
            ));
        }
        page.push_str(
            "<p class=\"note\">Quote the request ID when you ask for help: it finds this decision in the gateway's log.</p>\n",
        );
        if !self.closest.is_empty() {
            page.push_str("<h2>Closest rules</h2>\n<ul>\n");
            for (rule, reason) in self.closest {
                page.push_str(&format!(
                    "<li><code>{}</code>: <code>{}</code></li>\n",
                    escape(rule),
                    escape(reason)
                ));
            }
            page.push_str("</ul>\n");
        }
        if self.verbose {
            page.push_str("<h2>Trace</h2>\n<table>\n<thead><tr><th scope=\"col\">Rule</th><th scope=\"col\">Effect</th><th scope=\"col\">Mode</th><th scope=\"col\">Outcome</th></tr></thead>\n<tbody>\n");
            for (rule, effect, mode, outcome) in self.trace {
                page.push_str(&format!(
                    "<tr><td><code>{}</code></td><td>{effect}</td><td>{mode}</td><td>{}</td></tr>\n",
                    escape(rule),
                    escape(outcome)
                ));
            }
            page.push_str("</tbody>\n</table>\n");
        }
        page.push_str("</main>\n</body>\n</html>\n");
        page
    }
}

const PAGE_STYLE: &str = "<style>\n\
body{font-family:system-ui,sans-serif;margin:0;padding:2rem 1rem;color:#1a1a1a;background:#fafafa;line-height:1.5}\n\
main{max-width:40rem;margin:0 auto;background:#fff;border:1px solid #ddd;border-radius:6px;padding:1.5rem 2rem}\n\
h1{font-size:1.6rem;margin-top:0}h2{font-size:1.1rem}\n\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0}\n\
code{font-family:ui-monospace,monospace;background:#f0f0f0;padding:0 .2rem;border-radius:3px}\n\
a{color:#0645ad}.note{color:#555;font-size:.9rem}\n\
table{border-collapse:collapse;width:100%}th,td{text-align:left;border-bottom:1px solid #ddd;padding:.25rem .5rem}\n\
</style>\n";

/// Escapes text for HTML element content and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_say_what_to_do_and_401_only_for_missing_or_refused_credentials() {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        let cases = [
            (
                Reason::IpNotAllowed {
                    ip: "192.0.2.1".parse().unwrap(),
                    networks: "10.0.0.0/8",
                },
                403,
                "Your network is not allowed for this path.",
            ),
            (
                Reason::MethodNotAllowed {
                    method: "GET".to_owned(),
                    allowed: strings(&["POST", "PUT"]),
                },
                403,
                "GET is not allowed on this path; allowed methods: POST, PUT.",
            ),
            (
                Reason::MissingScope {
                    required: strings(&["orders:write"]),
                    one_of: false,
                    present: strings(&["orders:read"]),
                },
                403,
                "This request needs scope orders:write.",
            ),
            (
                Reason::MissingRole {
                    required: strings(&["editor", "admin"]),
                    one_of: true,
                    present: Vec::new(),
                },
                403,
                "This request needs one of the roles editor or admin.",
            ),
            (
                Reason::TenantMismatch {
                    claim: "tenant".to_owned(),
                    expected: "{tenant}".to_owned(),
                    found: "acme".to_owned(),
                },
                403,
                "This resource belongs to another tenant or owner.",
            ),
            (
                Reason::CredentialsMissing,
                401,
                "This request needs credentials: send a token or an API key.",
            ),
            (
                Reason::TokenExpired { seconds_ago: 200 },
                401,
                "The token expired 3m20s ago; get a new one.",
            ),
        ];
        for (reason, status, text) in cases {
            assert_eq!(denial_status(&reason).as_u16(), status, "{reason:?}");
            assert_eq!(hint(&reason), text);
        }
    }

    #[test]
    fn browsers_get_html_and_api_clients_json() {
        let html = |accept: &str| prefers_html(Some(&HeaderValue::from_str(accept).unwrap()));
        assert!(html(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!html("*/*"));
        assert!(!html("application/json"));
        assert!(!html("application/json, text/html;q=0.5"));
        assert!(html("text/html"));
        assert!(!html("text/html;q=0, */*"));
        assert!(!prefers_html(None));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
