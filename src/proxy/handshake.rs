//! TLS with a client, on a listener that terminates it: telling a TLS client from one
//! that speaks plain HTTP, the handshake, why one failed, and what it agreed.
//!
//! The caller bounds the whole of it by `limits.header_read_timeout`, as it bounds the
//! first request of a plain connection.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rustls::{AlertDescription, PeerIncompatible};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::respond;
use crate::policy::ClientCertificate;
use crate::tls::{ALPN_H2, ALPN_HTTP1};

/// The first byte of a TLS record that carries a handshake message (RFC 8446 §5.1).
const HANDSHAKE_RECORD: u8 = 0x16;
/// TLS 1.2's version number, which TLS 1.3 ClientHellos carry too (RFC 8446 §4.1.2).
const TLS12: u16 = 0x0303;

/// The protocol a client agreed by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2`: the connection speaks HTTP/2.
    H2,
    /// `http/1.1`: the connection speaks HTTP/1.1.
    Http1,
}

/// What a finished handshake agreed.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The protocol chosen by ALPN; `None` when the client offered none (HTTP/1.1, or
    /// HTTP/2 with prior knowledge).
    pub alpn: Option<Alpn>,
    /// The client's certificate, verified against the listener's `client_ca`.
    pub client_cert: Option<ClientCertificate>,
}

/// Why a handshake failed: the `reason` label of `portcullis_tls_handshake_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client sent a plain HTTP request; it was answered with a 400.
    PlainHttp,
    /// The first bytes were neither TLS nor HTTP.
    NotTls,
    /// The handshake did not finish within `limits.header_read_timeout`.
    Timeout,
    /// The client offers only TLS versions older than 1.2.
    ProtocolVersion,
    /// The client shares no cipher suite, key exchange group or signature scheme with us.
    NoSharedParameters,
    /// The client offered ALPN protocols, none of them `h2` or `http/1.1`.
    NoApplicationProtocol,
    /// The listener requires a client certificate and none was sent.
    NoClientCertificate,
    /// The client's certificate did not verify (unknown CA, expired, revoked, wrong use).
    BadClientCertificate,
    /// The client refused our certificate (it does not trust its CA, or the name).
    ClientRejectedCertificate,
    /// The client broke the protocol, or sent an alert.
    Protocol,
    /// The client closed the connection mid-handshake.
    Closed,
}

impl Failure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::PlainHttp => "plain_http",
            Failure::NotTls => "not_tls",
            Failure::Timeout => "timeout",
            Failure::ProtocolVersion => "protocol_version",
            Failure::NoSharedParameters => "no_shared_parameters",
            Failure::NoApplicationProtocol => "no_application_protocol",
            Failure::NoClientCertificate => "no_client_certificate",
            Failure::BadClientCertificate => "bad_client_certificate",
            Failure::ClientRejectedCertificate => "client_rejected_certificate",
            Failure::Protocol => "protocol",
            Failure::Closed => "closed",
        }
    }

    /// Every label value, so that each series exists from the start.
    pub const ALL: [Failure; 11] = [
        Failure::PlainHttp,
        Failure::NotTls,
        Failure::Timeout,
        Failure::ProtocolVersion,
        Failure::NoSharedParameters,
        Failure::NoApplicationProtocol,
        Failure::NoClientCertificate,
        Failure::BadClientCertificate,
        Failure::ClientRejectedCertificate,
        Failure::Protocol,
        Failure::Closed,
    ];

    /// The cause of `err`; `client_version` is what the ClientHello said it speaks, when
    /// its first bytes were seen: a client that offers only TLS 1.0 or 1.1 fails on the
    /// first thing it lacks (often signature algorithms), but its version is the cause.
    fn of(err: &std::io::Error, client_version: Option<u16>) -> Failure {
        let Some(tls) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return Failure::Closed;
        };
        match tls {
            rustls::Error::PeerIncompatible(
                PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled,
            ) => Failure::ProtocolVersion,
            rustls::Error::PeerIncompatible(_)
                if client_version.is_some_and(|version| version < TLS12) =>
            {
                Failure::ProtocolVersion
            }
            rustls::Error::PeerIncompatible(_) => Failure::NoSharedParameters,
            rustls::Error::NoApplicationProtocol => Failure::NoApplicationProtocol,
            rustls::Error::NoCertificatesPresented => Failure::NoClientCertificate,
            rustls::Error::InvalidCertificate(_) => Failure::BadClientCertificate,
            rustls::Error::AlertReceived(
                AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired,
            ) => Failure::ClientRejectedCertificate,
            _ => Failure::Protocol,
        }
    }
}

/// How a connection that did not become TLS ended.
pub enum Refusal {
    /// It sent a plain HTTP request: the caller answers it with [`refuse_plain_http`].
    PlainHttp(TcpStream),
    /// The handshake failed.
    Failed(Failure),
}

impl From<Failure> for Refusal {
    fn from(failure: Failure) -> Refusal {
        Refusal::Failed(failure)
    }
}

/// Takes a TLS handshake with the client on `stream`. A plain HTTP request is handed
/// back, to be answered with a 400 that says to use `https://`, as nginx does.
pub async fn accept(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<(TlsStream<TcpStream>, TlsInfo), Refusal> {
    // The record header (5 bytes), the handshake header (4), the ClientHello's version (2).
    let mut first = [0u8; 11];
    let seen = match stream.peek(&mut first).await {
        Ok(0) | Err(_) => return Err(Failure::Closed.into()),
        Ok(seen) => seen,
    };
    let client_version = (seen == first.len()).then(|| u16::from_be_bytes([first[9], first[10]]));
    if first[0] != HANDSHAKE_RECORD {
        if first[0].is_ascii_uppercase() {
            return Err(Refusal::PlainHttp(stream));
        }
        return Err(Failure::NotTls.into());
    }
    let stream = tokio_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await
        .map_err(|err| Failure::of(&err, client_version))?;
    let session = stream.get_ref().1;
    let alpn = match session.alpn_protocol() {
        Some(ALPN_H2) => Some(Alpn::H2),
        Some(ALPN_HTTP1) => Some(Alpn::Http1),
        _ => None,
    };
    // Only a verified certificate reaches here. One that verified but cannot be read
    // (which webpki would not pass) counts as none: mtls conditions then fail closed.
    let client_cert = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::tls::certificate_facts(leaf).ok())
        .map(|facts| facts.holder);
    Ok((stream, TlsInfo { alpn, client_cert }))
}

/// The most of a plain HTTP request read before answering it.
const PLAIN_HEAD_LIMIT: usize = 16 * 1024;
/// How long reading waits for more of it, and for the client to close after the answer.
const PLAIN_LINGER: Duration = Duration::from_secs(1);

/// Answers a plain HTTP request on a TLS port with a 400 and closes. The head is read
/// first, and the connection drained for a moment after, so that the close does not
/// reset the connection before the client has read the answer. The caller bounds it.
pub async fn refuse_plain_http(mut stream: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    while head.len() < PLAIN_HEAD_LIMIT && memchr::memmem::find(&head, b"\r\n\r\n").is_none() {
        match tokio::time::timeout(PLAIN_LINGER, stream.read(&mut chunk)).await {
            Ok(Ok(read)) if read > 0 => head.extend_from_slice(&chunk[..read]),
            _ => break,
        }
    }
    let id = crate::telemetry::new_request_id();
    let id = std::str::from_utf8(&id).unwrap_or_default();
    let status = StatusCode::BAD_REQUEST;
    let body = respond::problem_document(
        status,
        "tls_required",
        "This port takes HTTPS only, and the request came as plain HTTP. Send it again with https:// and the same host and port.",
        id,
    );
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncache-control: no-store\r\nx-portcullis-reason: tls_required\r\nx-request-id: {id}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let linger = async {
        let mut drained = 0;
        while drained < PLAIN_HEAD_LIMIT * 4 {
            match stream.read(&mut chunk).await {
                Ok(read) if read > 0 => drained += read,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(PLAIN_LINGER, linger).await;
}
