//! TLS setup shared by the gateway's outgoing connections (today: fetching key sets).
//! rustls with the aws-lc-rs provider; certificates verified against the system's trust
//! store unless the config names its own CAs.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A client setup trusting `roots`, or the system's CA certificates when `None`.
pub fn client_config(
    roots: Option<&[CertificateDer<'static>]>,
) -> Result<Arc<rustls::ClientConfig>, String> {
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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot set up TLS: {err}"))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
