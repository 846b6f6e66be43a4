//! Integration tests: the real gateway on 127.0.0.1:0 in front of real upstream servers
//! on loopback, spoken to over real sockets.
//!
//! - `boundaries`: the policy crate's dependencies and the module graph of ARCHITECTURE.md.
//! - `support`: the harness: gateway and upstream servers that stop on drop, clients.
//! - `bypass`: a corpus of attempts to reach a denied path past the policy.
//! - `client_wire`: HTTP/1 with clients: keep-alive, pipelining, 100 Continue, HEAD,
//!   framing per client, unread bodies.
//! - `forwarding`: headers, request ids, bodies streamed both ways, HTTP/2, WebSocket.
//! - `upstreams`: round robin, passive health, 502 and 504.
//! - `upstream_wire`: response framing from upstreams, and when a connection is reused.
//! - `limits`: 431, 413, slow heads, idle connections, connection limit, 400 and 404.
//! - `lifecycle`: the binary: graceful shutdown on SIGTERM, exit codes.
//! - `policy_cli`: `portcullis test`, `explain` and `validate` on policy files.
//! - `reload`: live reload by `POST /reload` and by file changes, broken files, traffic
//!   across reloads.
//! - `config_errors`: every config error names file, line, column and YAML path.
//! - `denials`: 403s at each detail level, the HTML page, decision metrics.
//! - `decision_log`: decision lines in a file, sampled allows.
//! - `decisions`: what a line records, `GET /decisions` and `portcullis why`, and
//!   `portcullis replay` of a recorded log against candidate configs.
//! - `identity`: API keys, 401 versus 403, identity headers upstream.
//! - `jwt`: tokens against a JWKS file: every way a token is refused, `explain --token`.
//! - `jwks`: key sets over HTTP(S): RSA and HMAC, rotation, rate limit, outages.
//! - `deploy`: the Dockerfile's and Kubernetes manifests' checkable parts.
//! - `workers`: several workers: metrics summed exactly, counters never going down.
//! - `geoip`: country rules against `.mmdb` files written by `mmdb` (both record layouts),
//!   a database that fails to load, reloads, the country header, `explain --country`.
//! - `tls`: TLS listeners (versions, ALPN, SNI, plain HTTP and garbage on a TLS port,
//!   handshake deadlines, certificates renewed by reload), client certificates and mtls
//!   rules, and https upstreams (verification, resumption, upstream mTLS).

#![allow(
    clippy::unwrap_used,
    reason = "a test that meets an unexpected error should fail loudly"
)]

#[path = "../../src/testing/mmdb.rs"]
mod mmdb;

mod boundaries;
mod bypass;
mod client_wire;
mod config_errors;
mod decision_log;
mod decisions;
mod denials;
mod deploy;
mod forwarding;
mod geoip;
mod identity;
mod jwks;
mod jwt;
mod lifecycle;
mod limits;
mod policy_cli;
mod reload;
mod support;
mod tls;
mod upstream_wire;
mod upstreams;
mod workers;
