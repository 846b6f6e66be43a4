//! TLS setup, with rustls and the aws-lc-rs provider: the server side of TLS listeners
//! (certificates chosen by SNI, client certificates verified against configured CAs) and
//! the client side of outgoing connections (certificates verified against the system's
//! trust store unless the config names its own CAs); PEM files and what a certificate says.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use sha2::Digest as _;

use crate::policy::{ClientCertificate, HostPattern};

/// The protocols a TLS listener offers by ALPN, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
/// HTTP/1.1's ALPN name.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A client setup trusting `roots`, or the system's CA certificates when `None`.
pub fn client_config(
    roots: Option<&[CertificateDer<'static>]>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    upstream_client_config(roots, None, false)
}

/// The client setup for an upstream's https targets: certificates verified against
/// `roots` (the system's when `None`), or not at all when `insecure`; `client_auth`
/// shown to targets that ask for a certificate. Sessions are resumed: the setup keeps a
/// cache of them, which every connection made with it shares.
pub fn upstream_client_config(
    roots: Option<&[CertificateDer<'static>]>,
    client_auth: Option<Arc<CertifiedKey>>,
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot set up TLS: {err}"))?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        builder.with_root_certificates(root_store(roots)?)
    };
    let mut config = match client_auth {
        Some(key) => builder.with_client_cert_resolver(Arc::new(ShowCertificate(key))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

fn root_store(roots: Option<&[CertificateDer<'static>]>) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Some(roots) => {
            let (_, ignored) = store.add_parsable_certificates(roots.iter().cloned());
            if store.is_empty() {
                return Err(format!(
                    "none of the {ignored} configured CA certificates can be used"
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(native.certs);
            if store.is_empty() {
                return Err(
                    "no CA certificates were found on this system; install them (the ca-certificates package) or name the CAs to trust in the config".to_owned(),
                );
            }
        }
    }
    Ok(store)
}

/// The one client certificate an upstream setup shows.
#[derive(Debug)]
struct ShowCertificate(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ShowCertificate {
    fn resolve(
        &self,
        _issuers: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `insecure_skip_verify`: any certificate chain is accepted, for any name. The
/// handshake's signatures are still checked, so the peer holds the key of the
/// certificate it showed; who that peer is, nothing says.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a TLS handshake with an upstream failed, in a few words (`unknown CA`, `name
/// mismatch`, `certificate expired`), when `err` is such a failure (tokio-rustls reports
/// them as I/O errors).
pub fn upstream_failure(err: &std::io::Error) -> Option<&'static str> {
    use rustls::CertificateError;
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer => "unknown CA",
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "name mismatch"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not yet valid"
            }
            CertificateError::Revoked => "certificate revoked",
            _ => "invalid certificate",
        },
        rustls::Error::AlertReceived(_) => "handshake refused by the upstream",
        _ => "TLS handshake failed",
    })
}

/// The certificates in a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("cannot read \"{}\": {err}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            format!(
                "\"{}\" is not a PEM certificate file: {err}",
                path.display()
            )
        })?;
    if certificates.is_empty() {
        return Err(format!("\"{}\" holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

/// The private key in a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text =
        std::fs::read(path).map_err(|err| format!("cannot read \"{}\": {err}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "\"{}\" holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        ),
        err => format!(
            "\"{}\" is not a PEM private key file: {err}",
            path.display()
        ),
    })
}

/// The certificate revocation lists in a PEM file.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|err| format!("cannot read \"{}\": {err}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("\"{}\" is not a PEM CRL file: {err}", path.display()))?;
    if crls.is_empty() {
        return Err(format!("\"{}\" holds no PEM X509 CRL", path.display()));
    }
    Ok(crls)
}

/// A certificate chain (leaf first) with its private key, checked to be a pair.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|err| format!("the private key cannot be used: {err}"))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
            "the private key does not belong to the certificate: check that the two files are a pair".to_owned(),
        ),
        Err(err) => Err(format!("the certificate and key cannot be checked: {err}")),
    }
}

/// What a certificate says: who holds it (for choosing server certificates by name and
/// for the policy's `mtls` conditions), and when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Its holder's names and its fingerprint.
    pub holder: ClientCertificate,
    /// Valid from, in seconds since the Unix epoch.
    pub not_before: i64,
    /// Valid until, in seconds since the Unix epoch.
    pub not_after: i64,
    /// `not_before` as people read it (`2026-12-07 02:50 UTC`).
    pub valid_from: String,
    /// `not_after` as people read it.
    pub valid_until: String,
}

/// Reads what `certificate` says; an error if it is not a well-formed X.509 certificate.
pub fn certificate_facts(certificate: &CertificateDer<'_>) -> Result<CertificateFacts, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|err| format!("not an X.509 certificate: {err}"))?;
    let subject = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .map(str::to_owned);
    let mut dns_names = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(names)) = parsed.subject_alternative_name() {
        for name in &names.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    dns_names.push(dns.to_ascii_lowercase());
                }
                x509_parser::extensions::GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    let validity = parsed.validity();
    Ok(CertificateFacts {
        holder: ClientCertificate {
            subject,
            dns_names,
            uris,
            fingerprint: hex(&sha2::Sha256::digest(certificate.as_ref())),
        },
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        valid_from: readable(&validity.not_before),
        valid_until: readable(&validity.not_after),
    })
}

fn readable(time: &x509_parser::time::ASN1Time) -> String {
    let time = time.to_datetime();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute()
    )
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|byte| {
            [
                DIGITS[usize::from(byte >> 4)],
                DIGITS[usize::from(byte & 0xf)],
            ]
        })
        .map(char::from)
        .collect()
}

/// The certificates a TLS listener serves: the one whose names fit the name the client
/// asked for (SNI), exact names before wildcards, else the default.
#[derive(Debug)]
pub struct ServerCertificates {
    /// Names and the certificate each picks, exact names first, then in config order.
    by_name: Vec<(HostPattern, Arc<CertifiedKey>)>,
    /// For clients that name no host, or one no certificate has.
    default: Arc<CertifiedKey>,
}

impl ServerCertificates {
    /// `default` for every name, and `named` for theirs.
    pub fn new(
        default: Arc<CertifiedKey>,
        named: Vec<(HostPattern, Arc<CertifiedKey>)>,
    ) -> ServerCertificates {
        let mut by_name = named;
        by_name.sort_by_key(|(pattern, _)| matches!(pattern, HostPattern::Suffix(_)));
        ServerCertificates { by_name, default }
    }

    /// The certificate for `server_name` (lower-case), or the default.
    pub fn pick(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        server_name
            .and_then(|name| {
                let name = name.trim_end_matches('.');
                self.by_name
                    .iter()
                    .find(|(pattern, _)| pattern.matches(name))
            })
            .map_or(&self.default, |(_, key)| key)
    }
}

impl ResolvesServerCert for ServerCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.pick(hello.server_name())))
    }
}

/// Whether a listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    /// Never asks.
    None,
    /// Asks; a client without one is served, and a certificate it sends must verify.
    Optional,
    /// Asks; a client without a valid one fails the handshake.
    Required,
}

/// Clients' certificates: the CAs that issue them and the revocation lists to check.
pub struct ClientCas {
    /// The trusted CA certificates.
    pub roots: Vec<CertificateDer<'static>>,
    /// Revoked certificates, checked for the whole chain.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

/// The server setup of a TLS listener: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, and
/// client certificates as `mode` says. Sessions resume on any worker, with tickets and a
/// cache of this setup's own.
///
/// SECURITY: a resumed session keeps the client certificate of its first handshake,
/// unchecked. So sessions never cross listeners (whose CAs and modes differ) or loads (a
/// reload may have revoked the certificate): each setup has its own ticket keys.
pub fn server_config(
    certificates: ServerCertificates,
    mode: ClientCertMode,
    client_cas: Option<&ClientCas>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot set up TLS: {err}"))?;
    let builder = match (mode, client_cas) {
        (ClientCertMode::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(cas)) => {
            let mut roots = rustls::RootCertStore::empty();
            let (_, ignored) = roots.add_parsable_certificates(cas.roots.iter().cloned());
            if roots.is_empty() {
                return Err(format!(
                    "none of the {ignored} CA certificates can be used to verify clients"
                ));
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .with_crls(cas.crls.iter().cloned());
            if mode == ClientCertMode::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|err| format!("cannot verify client certificates: {err}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(certificates));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|err| format!("cannot make session-ticket keys: {err}"))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn keys_in_every_pem_form_pair_with_their_certificates() {
        for (cert, key) in [
            ("rsa.pem", "rsa-pkcs1.key"),
            ("ec.pem", "ec-sec1.key"),
            ("ec.pem", "ec-pkcs8.key"),
        ] {
            let chain = read_certificates(&fixture(cert)).unwrap();
            let private = read_private_key(&fixture(key)).unwrap();
            assert!(certified_key(chain, private).is_ok(), "{cert} with {key}");
        }
        let rsa = read_certificates(&fixture("rsa.pem")).unwrap();
        let ec_key = read_private_key(&fixture("ec-sec1.key")).unwrap();
        let mismatch = certified_key(rsa, ec_key).unwrap_err();
        assert!(mismatch.contains("does not belong"), "{mismatch}");
        let not_a_key = read_private_key(&fixture("rsa.pem")).unwrap_err();
        assert!(
            not_a_key.contains("holds no PEM private key"),
            "{not_a_key}"
        );
    }

    #[test]
    fn a_certificate_says_its_names_fingerprint_and_dates() {
        let chain = read_certificates(&fixture("ec.pem")).unwrap();
        let facts = certificate_facts(&chain[0]).unwrap();
        assert_eq!(facts.holder.subject.as_deref(), Some("ec.test"));
        assert_eq!(facts.holder.dns_names, ["ec.test"]);
        assert_eq!(facts.holder.fingerprint.len(), 64);
        assert!(facts.not_after > facts.not_before);
        assert!(facts.valid_until.ends_with(" UTC"), "{}", facts.valid_until);
    }
}
