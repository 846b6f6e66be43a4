//! The validated configuration: every value typed, every reference resolved.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::key_set::KeySet;
pub use crate::policy::HostPattern;
use crate::policy::PolicySet;

use super::error::ConfigError;
use super::policy::PolicySummary;

/// A loaded, valid config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Where the proxy accepts client traffic.
    pub listeners: Vec<ListenerSettings>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin: AdminSettings,
    /// Peers whose forwarding headers (`X-Forwarded-*`, `X-Request-Id`) are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Forward `X-Original-URL`, `X-HTTP-Method-Override` and their kin instead of
    /// stripping them (for upstreams that need them and do their own checks).
    pub keep_override_headers: bool,
    /// The header trusted proxies report the client address in.
    pub forwarded_header: ForwardedHeader,
    /// Where the client's country comes from (`network.geoip`).
    pub geoip: Option<GeoipSettings>,
    /// Upstreams in name order.
    pub upstreams: Vec<UpstreamSettings>,
    /// Routes in file order.
    pub routes: Vec<RouteSettings>,
    /// Client-facing limits and timeouts.
    pub limits: Limits,
    /// How long in-flight requests may take to finish after SIGTERM or SIGINT.
    pub shutdown_grace: Duration,
    /// `workers`: how many threads serve clients; `None` for one per CPU (`auto`).
    pub workers: Option<usize>,
    /// The compiled rules of every policy file.
    pub policy: Arc<PolicySet>,
    /// Which policy files and lists were loaded.
    pub policy_summary: PolicySummary,
    /// `policy.files` as written (globs, relative to the config file's directory).
    pub policy_patterns: Vec<String>,
    /// Files the `identity` settings were read from (API-key file, key sets, secrets,
    /// CAs); a change to one reloads, as a policy file's does.
    pub identity_files: Vec<PathBuf>,
    /// Files the listeners' TLS settings were read from (certificates, keys, client CAs,
    /// CRLs); a change to one reloads, which is how certificates are renewed.
    pub tls_files: Vec<PathBuf>,
    /// `policy.watch`: reload when a watched directory changes.
    pub watch: bool,
    /// A short hash of the config file and every policy, list and identity file, naming
    /// what is serving (`portcullis_policy_info`, `/policy`).
    pub hash: String,
    /// How much a denial tells the client.
    pub denials: DenialSettings,
    /// How callers are identified.
    pub identity: IdentitySettings,
    /// The decision log.
    pub log: LogSettings,
    /// Problems that do not stop the config from loading (rules that can never match,
    /// rules shadowed by a deny), for `portcullis validate` and the startup log.
    pub warnings: Vec<ConfigError>,
}

/// The `log` section.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// Where decision lines go.
    pub decisions: DecisionSink,
    /// What a request does when the writer has fallen behind.
    pub on_full: OnFull,
    /// The share of allowed requests logged; denials and errors are always logged.
    pub sample_allows: f64,
    /// Globs whose captured segments the decision log leaves out.
    pub redact_paths: Vec<crate::policy::PathGlob>,
    /// Header names (lower-case) whose values the decision log leaves out.
    pub redact_headers: Vec<String>,
    /// How many recent decisions the admin listener keeps.
    pub recent: usize,
}

/// Where decision lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionSink {
    /// Standard error, beside the process log, a JSON line each.
    Log,
    /// Standard output, a JSON line each.
    Stdout,
    /// A file, appended to, a JSON line each.
    File(PathBuf),
    /// No decision log.
    Off,
}

/// `log.on_full`: what a request does when the decision-log writer has fallen behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Drop the line and count it.
    Drop,
    /// Wait for the writer.
    Block,
}

/// The `identity` section.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// API keys, when configured.
    pub api_keys: Option<ApiKeySettings>,
    /// Token issuers.
    pub jwt: Vec<JwtSettings>,
    /// Remove `Authorization` before forwarding.
    pub strip_authorization: bool,
    /// Headers that carry the verified identity upstream.
    pub forward: ForwardHeaderNames,
    /// Callers identified by client certificate, in order.
    pub client_certs: Vec<ClientCertIdentity>,
}

/// A caller identified by client certificate (`identity.client_certs[]`).
#[derive(Debug, Clone)]
pub struct ClientCertIdentity {
    /// The certificates that are this caller.
    pub matches: crate::policy::MtlsCondition,
    /// The subject; `None`: the certificate's own name.
    pub subject: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
}

/// One token issuer (`identity.jwt[]`).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// A name for logs.
    pub id: String,
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Tokens must name one of these in `aud`.
    pub audiences: Vec<String>,
    /// Where its public keys come from.
    pub keys: KeySource,
    /// The shared secret for HS256/384/512, when configured.
    pub secret: Option<Secret>,
    /// Accepted algorithms.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// Where tokens are read from, in order.
    pub sources: Vec<TokenSource>,
    /// The claim with scopes.
    pub scopes_claim: String,
    /// The claim with roles.
    pub roles_claim: String,
    /// Allowed clock skew.
    pub leeway: Duration,
}

/// Where an issuer's public keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// None: the issuer signs only with its shared secret.
    None,
    /// A JWKS file, read with the config.
    File(Arc<KeySet>),
    /// A JWKS URL, fetched at start and refreshed.
    Url(RemoteKeys),
}

/// `jwks_url` and how it is kept fresh.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteKeys {
    /// An absolute http or https URL.
    pub url: http::Uri,
    /// The CAs trusted for https, instead of the system's.
    pub ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    /// How often the key set is fetched again.
    pub refresh: Duration,
    /// The least time between two fetches.
    pub min_refresh: Duration,
}

/// A shared secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(pub Arc<[u8]>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Where a token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A header, after a prefix (`Bearer `).
    Header {
        /// The header.
        name: http::HeaderName,
        /// Removed from the front of the value; a value without it is not a token.
        prefix: String,
    },
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    Query(String),
}

/// `identity.api_keys`.
#[derive(Debug, Clone)]
pub struct ApiKeySettings {
    /// The request header that carries a key.
    pub header: http::HeaderName,
    /// The keys.
    pub keys: Vec<ApiKeyEntry>,
}

/// One API key, known only by its digest.
#[derive(Debug, Clone)]
pub struct ApiKeyEntry {
    /// The principal it stands for.
    pub id: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// Roles it grants.
    pub roles: Vec<String>,
    /// Scopes it grants.
    pub scopes: Vec<String>,
}

/// `identity.forward_headers`.
#[derive(Debug, Clone)]
pub struct ForwardHeaderNames {
    /// The principal's subject.
    pub subject: http::HeaderName,
    /// Its roles, comma-separated.
    pub roles: http::HeaderName,
    /// Its scopes, space-separated.
    pub scopes: http::HeaderName,
    /// The verified client certificate.
    pub client_cert: http::HeaderName,
}

/// The header a trusted proxy reports the client address in (`network.forwarded_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`: a comma-separated list of addresses.
    XForwardedFor,
    /// RFC 7239 `Forwarded`: the `for=` parameter of each element.
    Forwarded,
}

/// How much a 401 or 403 tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Status, reason code and request id.
    Minimal,
    /// Also the deciding rule and a hint that reveals nothing about networks, other
    /// callers or rule internals.
    Standard,
    /// Also the trace of every rule considered; for trusted callers and staging only.
    Verbose,
}

/// `network.geoip`: where the client's country comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoipSettings {
    /// The country database (`.mmdb`), resolved against the config file's directory.
    pub database: Option<PathBuf>,
    /// The header trusted proxies report the country in.
    pub header: Option<http::HeaderName>,
    /// The proxies whose word in that header is believed: `header_from`, or else
    /// `trusted_proxies`.
    pub header_from: Vec<IpNet>,
    /// Forward that header when it was not believed, instead of removing it.
    pub keep_untrusted_header: bool,
}

/// The `denials` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialSettings {
    /// How much a denial says.
    pub detail: Detail,
    /// Where to ask for access when the deciding rule has no `help` of its own.
    pub help_url: Option<String>,
}

/// One client-facing listener.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// The address to bind; port 0 picks a free port.
    pub addr: SocketAddr,
    /// `addr` as written, the `listener` label of its metrics.
    pub name: String,
    /// TLS terminated here.
    pub tls: Option<ListenerTls>,
}

/// TLS on a listener, ready to serve: certificates read and checked, CAs loaded.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The rustls server setup, built at load.
    pub server: Arc<rustls::ServerConfig>,
    /// Each certificate served, for the expiry metric.
    pub certificates: Vec<ServedCertificate>,
    /// Whether clients are asked for a certificate.
    pub client_cert: crate::tls::ClientCertMode,
}

/// A certificate a TLS listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCertificate {
    /// The names it is served for (`hosts`, or its DNS names), or `default` for the
    /// default certificate when it has none.
    pub hosts: Vec<String>,
    /// When it expires, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// The address to bind; loopback by default.
    pub addr: SocketAddr,
    /// Names admin requests may carry in `Host` besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<HostPattern>,
}

/// The name of an upstream, as written under `upstreams`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamName(pub Arc<str>);

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a route, as written in `routes[].id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub Arc<str>);

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of interchangeable servers that routes forward to.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The upstream's name.
    pub name: UpstreamName,
    /// Its targets, tried round robin.
    pub targets: Vec<Target>,
    /// How long to wait for a TCP connection to a target.
    pub connect_timeout: Duration,
    /// How long to wait for the response head once the request body is sent (while the
    /// body streams, the time since its last bytes).
    pub timeout: Duration,
    /// How long a target that refused a connection is skipped.
    pub failure_cooldown: Duration,
    /// How long an unused connection to a target is kept for reuse.
    pub keepalive_timeout: Duration,
    /// TLS to its https targets; `Some` when it has one.
    pub tls: Option<UpstreamTls>,
}

/// TLS to an upstream's https targets, ready to connect with.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The rustls client setup: trusted CAs, the client certificate, the session cache
    /// that resumes sessions (shared by every worker).
    pub client: Arc<rustls::ClientConfig>,
    /// The name sent and checked instead of each target's host.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
    /// Certificates are not verified (`insecure_skip_verify`).
    pub insecure: bool,
}

/// One server behind an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A plain-HTTP server at `host:port`.
    Http(http::uri::Authority),
    /// An HTTPS server at `host:port`.
    Https(http::uri::Authority),
    /// The built-in echo server, which answers with the request it saw as JSON.
    Echo,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Http(authority) => write!(f, "http://{authority}"),
            Target::Https(authority) => write!(f, "https://{authority}"),
            Target::Echo => f.write_str("builtin:echo"),
        }
    }
}

/// One route: requests for a host and path prefix go to an upstream.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// The route's id, used in logs and metrics.
    pub id: RouteId,
    /// The hosts it accepts; `None` accepts any host.
    pub host: Option<HostPattern>,
    /// The path prefix, matched on whole segments unless it ends in `/`.
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Match the path prefix and policy paths ignoring ASCII case (for upstreams that
    /// ignore case); the path is lower-cased before routing, deciding and forwarding.
    pub case_insensitive: bool,
    /// Methods without defined content whose requests may carry some here anyway.
    pub allow_body_on: Vec<http::Method>,
    /// Paths may hold an encoded `%` followed by two hex digits.
    pub allow_encoded_percent: bool,
    /// Protocol names (lower-case) a request may switch to here with `Upgrade`.
    pub upgrades: Vec<String>,
}

/// The methods whose request content has no defined meaning (RFC 9110 §9.3): a request of
/// one of them with content is refused unless its route allows it, since an upstream that
/// ignores the content would read it as the next request.
pub const BODILESS_METHODS: [http::Method; 5] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::OPTIONS,
    http::Method::DELETE,
    http::Method::TRACE,
];

/// Limits that protect the gateway from slow, large or numerous clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed for a client to send a complete request head (slowloris defence).
    pub header_read_timeout: Duration,
    /// The largest request head accepted, in bytes; larger is answered 431.
    pub max_header_size: usize,
    /// The largest request body accepted, in bytes; larger is answered 413.
    pub max_body_size: Option<u64>,
    /// A connection with no bytes in either direction and no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Client connections open at once; further connections are closed at accept.
    pub max_connections: usize,
    /// Memory all unfinished HTTP/1 request heads may hold together, in bytes.
    pub header_memory: usize,
}
