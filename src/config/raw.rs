//! The serde shape of the config file: plain structs, unknown keys rejected, no logic.
//!
//! Values that need checking (addresses, durations, sizes, references) stay strings here;
//! `build` types them and reports each problem with its YAML path.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;

use super::error::{ConfigError, ConfigErrors};
use super::source::Source;

/// The portcullis config file: listeners, upstreams, routes, policy files and limits.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Addresses the gateway accepts client traffic on (HTTP/1.1 and HTTP/2, cleartext or TLS). Default: 127.0.0.1:8080.
    #[serde(default = "default_listen")]
    pub listen: Vec<RawListen>,
    /// The admin listener: /healthz, /readyz and /metrics.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Which peers are trusted to report the client address, and header handling.
    #[serde(default)]
    pub network: RawNetwork,
    /// Named sets of servers that routes forward to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Host and path prefix to upstream; the most specific route wins.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Timeouts and sizes that protect the gateway from its clients.
    #[serde(default)]
    pub limits: RawLimits,
    /// Graceful shutdown on SIGTERM and SIGINT.
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// Threads that serve clients, each with its own listening sockets, upstream pools and
    /// metrics: `auto` (one per CPU the process may use) or a number. Restart-only.
    #[serde(default = "default_workers")]
    #[schemars(schema_with = "workers_schema")]
    pub workers: String,
    /// The policy files that decide every request.
    #[serde(default)]
    pub policy: RawPolicy,
    /// How much a 401 or 403 tells the client.
    #[serde(default)]
    pub denials: RawDenials,
    /// Who callers are: API keys (and, later, tokens), and the headers that tell the upstream.
    #[serde(default)]
    pub identity: RawIdentity,
    /// The decision log.
    #[serde(default)]
    pub log: RawLog,
}

/// The decision log: one JSON line per decided request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// Where decision lines go: `log` (stderr, beside the process log), `stdout`, a file
    /// path (appended to; reopened on reload), or `off`.
    #[serde(default = "default_decisions")]
    pub decisions: String,
    /// What a request does when the decision-log writer has fallen 4 MiB behind: `drop`
    /// its line (counted in portcullis_decision_log_dropped_total) or `block` until the
    /// writer catches up.
    #[serde(default)]
    pub on_full: RawOnFull,
    /// The share of allowed requests logged, 0 to 1; denials and errors are always logged.
    #[serde(default = "default_sample_allows")]
    pub sample_allows: f64,
    /// Path globs whose `{name}` segments hold secrets (reset tokens, invite codes): the
    /// decision log writes `{name}` in their place. "/reset/{token}", "/invites/*/{code}".
    #[serde(default)]
    pub redact_paths: Vec<String>,
    /// Request headers that rules read whose values the decision log leaves out
    /// ("x-session-hint"). Credential headers and cookies are never logged.
    #[serde(default)]
    pub redact_headers: Vec<String>,
    /// How many recent decisions the admin listener keeps for `GET /decisions` and
    /// `portcullis why`, in memory: 0 keeps none.
    #[serde(default = "default_recent")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub recent: u64,
}

impl Default for RawLog {
    fn default() -> RawLog {
        RawLog {
            decisions: default_decisions(),
            on_full: RawOnFull::default(),
            sample_allows: default_sample_allows(),
            redact_paths: Vec::new(),
            redact_headers: Vec::new(),
            recent: default_recent(),
        }
    }
}

fn default_recent() -> u64 {
    10_000
}

fn default_workers() -> String {
    "auto".to_owned()
}

/// `workers`: `auto`, or a whole number from 1 to 1024.
fn workers_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "anyOf": [
            { "const": "auto" },
            { "type": "integer", "minimum": 1, "maximum": 1024 }
        ]
    })
}

/// `log.on_full`.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawOnFull {
    /// Drop the line and count it; requests never wait for the log.
    #[default]
    Drop,
    /// Wait for the writer: no line is lost, but a stuck sink stalls requests.
    Block,
}

fn default_decisions() -> String {
    "log".to_owned()
}

fn default_sample_allows() -> f64 {
    1.0
}

/// How callers are identified.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// API keys, stored as SHA-256 digests.
    pub api_keys: Option<RawApiKeys>,
    /// Headers that carry the verified identity upstream; copies from clients are removed.
    #[serde(default)]
    pub forward_headers: RawForwardHeaders,
    /// Token issuers; a token's `iss` picks one.
    #[serde(default)]
    pub jwt: Vec<RawJwt>,
    /// Remove `Authorization` before forwarding (the upstream then sees only the
    /// identity headers).
    #[serde(default)]
    pub strip_authorization: bool,
    /// Callers identified by their verified client certificate, when they send no token
    /// or API key: the first entry whose match fits names the caller.
    #[serde(default)]
    pub client_certs: Vec<RawClientCertIdentity>,
}

/// A caller identified by client certificate.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientCertIdentity {
    /// The certificates that are this caller (any list, any entry).
    #[serde(rename = "match")]
    pub matches: RawMtls,
    /// The caller's subject; default: the certificate's SPIFFE ID, else its first DNS
    /// name, else its subject.
    pub subject: Option<String>,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Its scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// One token issuer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// A name for logs and metrics.
    pub id: String,
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// Tokens must name one of these in `aud`.
    pub audiences: Vec<String>,
    /// A JWKS file, relative to the config file.
    pub jwks_file: Option<String>,
    /// The issuer's JWKS URL (http or https), fetched at start and refreshed.
    pub jwks_url: Option<String>,
    /// PEM file of the CAs trusted for an https `jwks_url`, instead of the system's.
    pub jwks_ca: Option<String>,
    /// How often the key set at `jwks_url` is fetched again (default 5m, at least 10s).
    pub jwks_refresh: Option<String>,
    /// The least time between two fetches of `jwks_url`: a token with an unknown `kid`
    /// triggers a fetch only this long after the last one (default 30s, at least 1s).
    pub jwks_min_refresh: Option<String>,
    /// The shared secret for HS256/384/512 tokens.
    pub secret: Option<RawSecret>,
    /// Algorithms accepted: RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512.
    pub algorithms: Vec<String>,
    /// Where tokens are read from, in order; default `Authorization: Bearer`.
    #[serde(default = "default_token_sources")]
    pub from: Vec<RawTokenSource>,
    /// The claim holding scopes: a space-separated string or an array.
    #[serde(default = "default_scopes_claim")]
    pub scopes_claim: String,
    /// The claim holding roles: an array or a string.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Allowed clock skew for exp and nbf.
    #[serde(default = "default_leeway")]
    pub leeway: String,
}

/// Where an HMAC secret is read from: `{ file: PATH }` (its bytes, trailing line breaks
/// removed) or `{ env: NAME }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// A file holding the secret, relative to the config file.
    pub file: Option<String>,
    /// An environment variable holding the secret.
    pub env: Option<String>,
}

/// One place a token may be: `{ header: Authorization, prefix: "Bearer " }`,
/// `{ cookie: session }` or `{ query: access_token }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTokenSource {
    /// A request header.
    pub header: Option<String>,
    /// The header value's prefix, which is removed.
    pub prefix: Option<String>,
    /// A cookie name.
    pub cookie: Option<String>,
    /// A query parameter name.
    pub query: Option<String>,
}

fn default_token_sources() -> Vec<RawTokenSource> {
    vec![RawTokenSource {
        header: Some("Authorization".to_owned()),
        prefix: Some("Bearer ".to_owned()),
        cookie: None,
        query: None,
    }]
}

fn default_scopes_claim() -> String {
    "scope".to_owned()
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

fn default_leeway() -> String {
    "30s".to_owned()
}

/// API keys: the header they arrive in and the keys.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    /// The request header that carries the key.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// The keys.
    #[serde(default)]
    pub keys: Vec<RawApiKey>,
    /// A YAML file of more keys (`keys: [...]`, as here), relative to this file: keeps the
    /// digests out of the config, in a secret store such as a Kubernetes Secret. A change
    /// to it reloads like a policy file.
    pub file: Option<String>,
}

/// A file of API keys (`identity.api_keys.file`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeyFile {
    /// The keys.
    pub keys: Vec<RawApiKey>,
}

fn default_api_key_header() -> String {
    "X-Api-Key".to_owned()
}

/// One API key: never the key itself, only its SHA-256 digest.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// The principal the key stands for (logged, and forwarded as the subject).
    pub id: String,
    /// Hex SHA-256 of the key: `printf %s "$KEY" | sha256sum`.
    pub sha256: String,
    /// Roles the key grants.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes the key grants.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Header names for the verified identity.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawForwardHeaders {
    /// The principal's subject.
    #[serde(default = "default_subject_header")]
    pub subject: String,
    /// Its roles, comma-separated.
    #[serde(default = "default_roles_header")]
    pub roles: String,
    /// Its scopes, space-separated.
    #[serde(default = "default_scopes_header")]
    pub scopes: String,
    /// The verified client certificate (Hash, Subject, URI, DNS), as Envoy's
    /// X-Forwarded-Client-Cert.
    #[serde(default = "default_client_cert_header")]
    pub client_cert: String,
}

impl Default for RawForwardHeaders {
    fn default() -> Self {
        RawForwardHeaders {
            subject: default_subject_header(),
            roles: default_roles_header(),
            scopes: default_scopes_header(),
            client_cert: default_client_cert_header(),
        }
    }
}

fn default_client_cert_header() -> String {
    "X-Forwarded-Client-Cert".to_owned()
}

fn default_subject_header() -> String {
    "X-Auth-Subject".to_owned()
}

fn default_roles_header() -> String {
    "X-Auth-Roles".to_owned()
}

fn default_scopes_header() -> String {
    "X-Auth-Scopes".to_owned()
}

/// An address the gateway accepts client traffic on.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// host:port to listen on; port 0 picks a free port.
    pub addr: String,
    /// Terminate TLS here (HTTPS, and HTTP/2 by ALPN). Certificates reload without a restart;
    /// turning TLS on or off needs one.
    #[serde(default, deserialize_with = "not_null")]
    pub tls: Option<RawListenTls>,
}

fn default_listen() -> Vec<RawListen> {
    vec![RawListen {
        addr: "127.0.0.1:8080".to_owned(),
        tls: None,
    }]
}

/// TLS on a listener: its certificates, and whether clients must show one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListenTls {
    /// PEM certificate chain, leaf first: the default certificate (with `key`).
    pub cert: Option<String>,
    /// PEM private key of `cert` (PKCS#8, RSA or EC).
    pub key: Option<String>,
    /// More certificates, picked by the host name the client asks for (SNI).
    #[serde(default, deserialize_with = "not_null_value")]
    pub certificates: Vec<RawServedCertificate>,
    /// PEM file of the CAs whose client certificates are accepted.
    pub client_ca: Option<String>,
    /// Ask clients for a certificate. Default: optional with client_ca, none without.
    pub client_cert: Option<RawClientCert>,
    /// PEM files of certificate revocation lists for client certificates.
    #[serde(default, deserialize_with = "not_null_value")]
    pub crls: Vec<String>,
}

/// `listen[].tls.client_cert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawClientCert {
    /// Never ask for one.
    None,
    /// Ask; serve clients without one, verify those who send one.
    Optional,
    /// Ask; a client without a valid certificate fails the handshake.
    Required,
}

/// A certificate a TLS listener serves for some host names.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServedCertificate {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key of `cert`.
    pub key: String,
    /// The names it serves ("*.example.com" allowed). Default: its DNS names.
    #[serde(default, deserialize_with = "not_null")]
    pub hosts: Option<Vec<String>>,
}

/// The admin listener: /healthz, /readyz and /metrics.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// host:port of the admin listener; keep it off public networks.
    #[serde(default = "default_admin_addr")]
    pub addr: String,
    /// Host names admin requests may carry in `Host` besides IP addresses and
    /// "localhost", such as a Kubernetes Service's name; "*.example.com" matches any
    /// subdomain. Others are refused, so that a web page cannot read the admin listener
    /// through a name it rebinds to a local address.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            addr: default_admin_addr(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Where the admin listener listens unless `admin.addr` says otherwise.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9090";

fn default_admin_addr() -> String {
    DEFAULT_ADMIN_ADDR.to_owned()
}

/// Which peers are trusted to report the client address.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// CIDRs or addresses of proxies whose X-Forwarded-For, Forwarded and X-Request-Id are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Forward X-Original-URL, X-HTTP-Method-Override and their kin instead of stripping them.
    #[serde(default)]
    pub keep_override_headers: bool,
    /// Which header a trusted proxy reports the client address in.
    #[serde(default)]
    pub forwarded_header: RawForwardedHeader,
    /// Where the client's country comes from, for countries and not_countries conditions.
    #[serde(default, deserialize_with = "not_null")]
    pub geoip: Option<RawGeoip>,
}

/// `network.geoip`: a country database, and a header trusted proxies report the country in.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGeoip {
    /// A MaxMind DB (.mmdb) country database: GeoLite2 or GeoIP2 Country, DB-IP, ip-location-db.
    /// Read into memory; reloaded when the file changes.
    pub database: Option<String>,
    /// A header in which trusted proxies report the country (CF-IPCountry,
    /// CloudFront-Viewer-Country); believed before the database, and only from trusted_proxies.
    pub header: Option<String>,
    /// CIDRs of the proxies that set that header (a CDN's ranges): it is believed only when
    /// the proxy that took the client's connection is one of them. Default: trusted_proxies.
    #[serde(default, deserialize_with = "not_null")]
    pub header_from: Option<Vec<String>>,
    /// Forward that header when it was not believed; by default it is removed.
    #[serde(default)]
    pub keep_untrusted_header: bool,
}

/// x-forwarded-for (the default) or forwarded (RFC 7239); only this one is read.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RawForwardedHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

/// A set of interchangeable servers, keyed by its name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// http://host:port or https://host:port servers (round robin), or builtin:echo.
    pub targets: Vec<String>,
    /// How long to wait for a TCP connection to a target, e.g. "2s".
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// How long to wait for the response head after the request body, e.g. "30s".
    #[serde(default = "default_upstream_timeout")]
    pub timeout: String,
    /// How long a target that refused a connection is skipped.
    #[serde(default = "default_failure_cooldown")]
    pub failure_cooldown: String,
    /// How long an unused upstream connection is kept for reuse.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: String,
    /// How https targets are verified, and the client certificate shown to them.
    #[serde(default, deserialize_with = "not_null")]
    pub tls: Option<RawUpstreamTls>,
}

/// TLS to an upstream's https targets.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM file of the CAs that sign the targets' certificates; default: the system's.
    pub ca: Option<String>,
    /// The name sent (SNI) and checked in the targets' certificates; default: the host
    /// of each target.
    pub server_name: Option<String>,
    /// PEM certificate chain shown to targets that ask for one (upstream mTLS), with key.
    pub cert: Option<String>,
    /// PEM private key of cert.
    pub key: Option<String>,
    /// Accept any certificate from the targets. Only for tests: anyone on the path can
    /// read and change the traffic. Logged as a warning at every load.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_connect_timeout() -> String {
    "2s".to_owned()
}

fn default_upstream_timeout() -> String {
    "30s".to_owned()
}

fn default_failure_cooldown() -> String {
    "10s".to_owned()
}

fn default_keepalive_timeout() -> String {
    "4s".to_owned()
}

/// Requests for a host and path prefix go to an upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The route id, used in logs and metrics.
    pub id: String,
    /// The host this route serves: "api.example.com" or "*.example.com"; absent means any host.
    pub host: Option<String>,
    /// Whole-segment path prefix, in canonical form; "/" matches everything.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// The name of an upstream.
    pub upstream: String,
    /// Match, decide and forward the path lower-cased, for upstreams that ignore case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Methods whose requests may carry content on this route (of GET, HEAD, OPTIONS,
    /// DELETE and TRACE, which are refused with content by default), for APIs that read it.
    #[serde(default)]
    pub allow_body_on: Vec<String>,
    /// Let an encoded `%` followed by two hex digits (`%2561`) through, for an upstream
    /// that decodes its paths exactly once; refused by default, since a server that
    /// decodes twice reads `/%2561dmin` as `/admin`.
    #[serde(default)]
    pub allow_encoded_percent: bool,
    /// Protocols a request may switch to on this route with `Upgrade` ("websocket");
    /// none by default, so a route whose upstream can be made to answer `101` never
    /// becomes an unchecked tunnel by accident.
    #[serde(default)]
    pub upgrades: Vec<String>,
}

fn default_path_prefix() -> String {
    "/".to_owned()
}

/// Timeouts and sizes that protect the gateway from its clients.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// A request head must arrive within this (slowloris defence).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
    /// Larger request heads get 431, e.g. "64KiB".
    #[serde(default = "default_max_header_size")]
    pub max_header_size: String,
    /// Larger request bodies get 413; unlimited when absent.
    #[serde(default)]
    pub max_body_size: Option<String>,
    /// Connections with no traffic this long are closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// Client connections open at once; more are closed at accept.
    #[serde(default = "default_max_connections")]
    #[schemars(with = "u32", range(min = 1, max = 1_000_000))]
    pub max_connections: String,
    /// Memory all unfinished HTTP/1 request heads may hold together, e.g. "64MiB"; the
    /// slowest are cut first when it runs out.
    #[serde(default = "default_header_memory")]
    pub header_memory: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            header_read_timeout: default_header_read_timeout(),
            max_header_size: default_max_header_size(),
            max_body_size: None,
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            header_memory: default_header_memory(),
        }
    }
}

fn default_header_read_timeout() -> String {
    "15s".to_owned()
}

fn default_max_header_size() -> String {
    "64KiB".to_owned()
}

fn default_idle_timeout() -> String {
    "60s".to_owned()
}

fn default_max_connections() -> String {
    "10000".to_owned()
}

fn default_header_memory() -> String {
    "64MiB".to_owned()
}

/// Graceful shutdown on SIGTERM and SIGINT.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default = "default_grace_period")]
    pub grace_period: String,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown {
            grace_period: default_grace_period(),
        }
    }
}

fn default_grace_period() -> String {
    "30s".to_owned()
}

/// The policy files that decide every request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Policy files, relative to this file; the last part of a path may use * and ? wildcards.
    #[serde(default)]
    pub files: Vec<String>,
    /// Reload when a file changes in the config file's or the policy files' directories
    /// (SIGHUP and POST /reload always work).
    #[serde(default = "default_true")]
    pub watch: bool,
}

fn default_true() -> bool {
    true
}

impl Default for RawPolicy {
    fn default() -> RawPolicy {
        RawPolicy {
            files: Vec::new(),
            watch: true,
        }
    }
}

/// How much a 401 or 403 tells the client.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDenials {
    /// minimal (reason and request id), standard (+ rule and a hint) or verbose (+ the trace).
    #[serde(default)]
    pub detail: RawDetail,
    /// Where to ask for access when the deciding rule has no help link.
    pub help_url: Option<String>,
}

/// minimal: reason and request id; standard: also the rule and a hint; verbose: also the trace.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawDetail {
    Minimal,
    #[default]
    Standard,
    Verbose,
}

/// A portcullis policy file: lists, roles and rules.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyFile {
    /// Named lists of networks, referred to as "@name" in ip and not_ip.
    #[serde(default)]
    pub lists: BTreeMap<String, RawList>,
    /// Roles and the roles they inherit.
    #[serde(default)]
    pub roles: BTreeMap<String, RawRole>,
    /// Rules: an enforced deny that matches wins, then an enforced allow; anything else is denied.
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// A named list: networks written inline, or `{ file: path }` with one CIDR per line; or
/// country codes written inline.
#[derive(Debug)]
pub enum RawList {
    Inline(Vec<String>),
    File(String),
}

impl JsonSchema for RawList {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "List".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Networks (CIDRs or addresses), or { file: path } naming a file with one per line; or country codes (ISO 3166-1 alpha-2).",
            "oneOf": [
                { "type": "array", "items": { "type": "string" } },
                {
                    "type": "object",
                    "properties": { "file": { "type": "string" } },
                    "required": ["file"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for RawList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of networks, or { file: path }")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawList, A::Error> {
                let mut networks = Vec::new();
                while let Some(network) = seq.next_element::<String>()? {
                    networks.push(network);
                }
                Ok(RawList::Inline(networks))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawList, A::Error> {
                let mut file = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "file" {
                        return Err(serde::de::Error::unknown_field(&key, &["file"]));
                    }
                    file = Some(map.next_value::<String>()?);
                }
                file.map(RawList::File)
                    .ok_or_else(|| serde::de::Error::missing_field("file"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A role and the roles it inherits.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    /// Roles whose permissions this role also has.
    #[serde(default)]
    pub inherits: Vec<String>,
}

/// A rule: which requests it is about (match), what the caller must satisfy (when), and its effect.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique across all policy files; shown in denials, logs and metrics.
    pub id: String,
    /// What the rule is for.
    pub description: Option<String>,
    /// allow or deny.
    pub effect: RawEffect,
    /// enforce (default) or audit (evaluated and counted, never enforced).
    #[serde(default)]
    pub mode: RawMode,
    /// Which requests the rule is about; absent means every request.
    #[serde(default, rename = "match", deserialize_with = "not_null_value")]
    pub matches: RawMatch,
    /// What the caller must satisfy; absent means every caller.
    #[serde(default, deserialize_with = "not_null_value")]
    pub when: RawWhen,
    /// A link where a denied caller can ask for access.
    pub help: Option<String>,
}

/// allow lets matching requests through; deny stops them, and beats any allow.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawEffect {
    Allow,
    Deny,
}

/// enforce: the rule decides; audit: it is evaluated, logged and counted, never enforced.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    #[default]
    Enforce,
    Audit,
}

/// Which requests a rule is about; every key present must fit.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Hosts: "api.example.com" or "*.example.com".
    #[serde(default, deserialize_with = "not_null")]
    pub hosts: Option<Vec<String>>,
    /// Path globs on the canonical path: * one segment, ** any number, {name} one segment captured.
    #[serde(default, deserialize_with = "not_null")]
    pub paths: Option<Vec<String>>,
    /// Methods, case-sensitive (GET, POST, ...).
    #[serde(default, deserialize_with = "not_null")]
    pub methods: Option<Vec<String>>,
    /// Header name to a value or list of values; "*" means any value, "{name}" a path capture.
    #[serde(default, deserialize_with = "not_null_value")]
    pub headers: BTreeMap<String, OneOrMany>,
}

/// What the caller must satisfy for a rule to match; every key present must hold.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWhen {
    /// true: the caller must be identified.
    #[serde(default, deserialize_with = "not_null")]
    pub authenticated: Option<bool>,
    /// The caller's roles (inherited ones included): any of, and all of.
    #[serde(default, deserialize_with = "not_null")]
    pub roles: Option<RawAnyAll>,
    /// The caller's scopes: any of, and all of.
    #[serde(default, deserialize_with = "not_null")]
    pub scopes: Option<RawAnyAll>,
    /// Claim name to the value it must have (or hold, for an array claim); "{name}" is a path capture.
    #[serde(default, deserialize_with = "not_null")]
    pub claims: Option<BTreeMap<String, RawClaim>>,
    /// The client address must be in one of these: CIDRs, addresses or "@list".
    #[serde(default, deserialize_with = "not_null")]
    pub ip: Option<Vec<String>>,
    /// The client address must not be in any of these.
    #[serde(default, deserialize_with = "not_null")]
    pub not_ip: Option<Vec<String>>,
    /// The client's country must be one of these: ISO 3166-1 alpha-2 codes (XX: unknown) or
    /// "@list". Needs network.geoip.
    #[serde(default, deserialize_with = "not_null")]
    pub countries: Option<Vec<String>>,
    /// The client's country must not be one of these.
    #[serde(default, deserialize_with = "not_null")]
    pub not_countries: Option<Vec<String>>,
    /// Header name to a value or list of values the request must carry.
    #[serde(default, deserialize_with = "not_null_value")]
    pub headers: BTreeMap<String, OneOrMany>,
    /// The connection must have shown a verified client certificate naming one of these
    /// (any list); {} accepts any verified certificate.
    #[serde(default, deserialize_with = "not_null")]
    pub mtls: Option<RawMtls>,
}

/// `when.mtls`: the client certificates a rule accepts.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    /// Subject common names, exactly.
    #[serde(default, deserialize_with = "not_null")]
    pub subjects: Option<Vec<String>>,
    /// DNS names (subject alternative names); "*.example.com" for any name under it.
    #[serde(default, deserialize_with = "not_null")]
    pub dns_names: Option<Vec<String>>,
    /// SPIFFE IDs (URI subject alternative names); one ending in /* for every ID under it.
    #[serde(default, deserialize_with = "not_null")]
    pub spiffe_ids: Option<Vec<String>>,
    /// SHA-256 fingerprints of certificates, hex, with or without colons.
    #[serde(default, deserialize_with = "not_null")]
    pub fingerprints: Option<Vec<String>>,
}

/// For keys whose absence means "every request" or "every caller": an explicit empty
/// value (`ip:` with nothing after it, `~`, or every entry commented out) is refused,
/// because reading it as absent would silently widen the rule.
fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    not_null_value(deserializer).map(Some)
}

/// [`not_null`] for keys with a default value.
fn not_null_value<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)?
        .ok_or_else(|| serde::de::Error::custom("has no value; write one, or remove the key"))
}

/// `{ any: [...], all: [...] }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAnyAll {
    /// At least one of these.
    #[serde(default, deserialize_with = "not_null")]
    pub any: Option<Vec<String>>,
    /// Every one of these.
    #[serde(default, deserialize_with = "not_null")]
    pub all: Option<Vec<String>>,
}

/// A claim value: a string, number or boolean.
#[derive(Debug, Clone)]
pub enum RawClaim {
    String(String),
    Number(f64),
    Bool(bool),
}

impl JsonSchema for RawClaim {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Claim".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

impl<'de> Deserialize<'de> for RawClaim {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawClaim;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawClaim, E> {
                Ok(RawClaim::String(value.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<RawClaim, E> {
                Ok(RawClaim::Bool(value))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<RawClaim, E> {
                Ok(RawClaim::Number(value as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<RawClaim, E> {
                Ok(RawClaim::Number(value as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<RawClaim, E> {
                Ok(RawClaim::Number(value))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A value or a list of values; scalars of any YAML type are read as their text.
#[derive(Debug)]
pub struct OneOrMany(pub Vec<String>);

impl JsonSchema for OneOrMany {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OneOrMany".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                { "type": ["string", "number", "boolean"] },
                { "type": "array", "items": { "type": "string" } }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_owned()]))
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_string()]))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_string()]))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_string()]))
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![value.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<String>()? {
                    values.push(value);
                }
                Ok(OneOrMany(values))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses a policy file's text; like [`parse`], a syntax or shape error stops the file.
pub fn parse_policy(path: &Path, text: &str) -> Result<RawPolicyFile, ConfigErrors> {
    // A file of nothing but comments is an empty policy, not a syntax error.
    let blank = text
        .lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#') || line == "---");
    if blank {
        return Ok(RawPolicyFile::default());
    }
    parse_as(path, text)
}

/// Parses the file text. A syntax or shape error stops this file and is returned alone.
pub fn parse(path: &Path, text: &str) -> Result<RawConfig, ConfigErrors> {
    parse_as(path, text)
}

pub(super) fn parse_as<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigErrors> {
    serde_saphyr::from_str::<T>(text).map_err(|err| {
        let location = err.location();
        let (message, help) = for_a_newcomer(serde_message(&err));
        let source = Source::new(path, text);
        let position = location.map(|l| (l.line() as usize, l.column() as usize));
        let yaml_path = position
            .and_then(|(line, column)| source.path_at(line, column))
            .unwrap_or_default();
        ConfigErrors::from(ConfigError::at(path, position, yaml_path, message).with_help(help))
    })
}

/// The parser's message in the words of someone who has just met YAML: a tab says to
/// indent with spaces, a scalar where a list belongs says to write `[...]`, and an
/// unknown key or value gets the closest known one as help.
fn for_a_newcomer(message: String) -> (String, Option<String>) {
    if message.contains("tabs disallowed") {
        return (
            "a tab in the indentation: indent with spaces".to_owned(),
            None,
        );
    }
    if message.contains("expected sequence start") {
        return (
            "expects a list here: write [a, b], or one \"- item\" per line".to_owned(),
            None,
        );
    }
    for kind in ["unknown field `", "unknown variant `"] {
        let Some(rest) = message.split_once(kind).map(|(_, rest)| rest) else {
            continue;
        };
        let Some((unknown, rest)) = rest.split_once('`') else {
            continue;
        };
        let expected = (rest.split_once("expected one of "))
            .or_else(|| rest.split_once("expected "))
            .map(|(_, list)| list);
        let known: Vec<&str> = (expected.into_iter())
            .flat_map(|list| list.split([',', ' ']))
            .map(|name| name.trim_matches('`'))
            .filter(|name| !name.is_empty() && *name != "or")
            .collect();
        let help = super::error::did_you_mean(unknown, known);
        return (message, help);
    }
    (message, None)
}

/// The parser's message without its own location suffix, which we print in front instead.
fn serde_message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter as _;
    let inner = err.without_snippet();
    if matches!(inner, serde_saphyr::Error::Eof { .. }) {
        return "the file is empty or ends too early".to_owned();
    }
    let message = serde_saphyr::UserMessageFormatter.format_message(inner);
    // The formatter leaves control characters to its renderer; we render, so we neutralise them.
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
