//! Callers identified by their verified client certificate (`identity.client_certs`),
//! and the header that tells the upstream which certificate the client showed.

use std::sync::Arc;

use http::HeaderValue;

use crate::config::ClientCertIdentity;
use crate::policy::{ClientCertificate, MtlsCondition, Principal};

/// The `issuer` of a principal a client certificate names.
pub const ISSUER: &str = "client_cert";

/// The configured certificate callers, in order.
pub struct ClientCerts {
    callers: Vec<Caller>,
}

struct Caller {
    matches: MtlsCondition,
    /// Built once when the config names the subject; else each request names it.
    principal: Option<Arc<Principal>>,
    roles: Vec<String>,
    scopes: Vec<String>,
}

impl ClientCerts {
    pub fn new(settings: &[ClientCertIdentity]) -> ClientCerts {
        let callers = (settings.iter())
            .map(|caller| Caller {
                matches: caller.matches.clone(),
                principal: caller.subject.as_ref().map(|subject| {
                    Arc::new(Principal {
                        subject: subject.clone(),
                        issuer: ISSUER.to_owned(),
                        roles: caller.roles.clone(),
                        scopes: caller.scopes.clone(),
                        claims: Vec::new(),
                    })
                }),
                roles: caller.roles.clone(),
                scopes: caller.scopes.clone(),
            })
            .collect();
        ClientCerts { callers }
    }

    /// The caller `certificate` names: the first entry whose match fits it.
    pub fn identify(&self, certificate: &ClientCertificate) -> Option<Arc<Principal>> {
        let caller = (self.callers.iter()).find(|caller| caller.matches.accepts(certificate))?;
        Some(match &caller.principal {
            Some(principal) => Arc::clone(principal),
            None => Arc::new(Principal {
                subject: certificate.name().to_owned(),
                issuer: ISSUER.to_owned(),
                roles: caller.roles.clone(),
                scopes: caller.scopes.clone(),
                claims: Vec::new(),
            }),
        })
    }
}

/// The certificate as Envoy's `X-Forwarded-Client-Cert` writes it:
/// `Hash=…;Subject="CN=…";URI=…;DNS=…`. A subject that is not plain ASCII is left out.
pub fn forwarded(certificate: &ClientCertificate) -> Option<HeaderValue> {
    let mut text = format!("Hash={}", certificate.fingerprint);
    if let Some(subject) = &certificate.subject
        && subject
            .bytes()
            .all(|byte| byte == b' ' || byte.is_ascii_graphic())
    {
        text.push_str(";Subject=");
        push_quoted(&mut text, &format!("CN={subject}"));
    }
    for (key, values) in [("URI", &certificate.uris), ("DNS", &certificate.dns_names)] {
        for value in values {
            text.push(';');
            text.push_str(key);
            text.push('=');
            if value.contains([';', ',', '=', '"']) {
                push_quoted(&mut text, value);
            } else {
                text.push_str(value);
            }
        }
    }
    // The names come from a verified certificate, but nothing checked them for bytes a
    // header cannot hold: then the header is left out.
    HeaderValue::from_str(&text).ok()
}

/// `value` in double quotes, `"` and `\` escaped, as XFCC quotes a value.
fn push_quoted(text: &mut String, value: &str) {
    text.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            text.push('\\');
        }
        text.push(c);
    }
    text.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate() -> ClientCertificate {
        ClientCertificate {
            subject: Some("billing \"api\"".to_owned()),
            dns_names: vec!["billing.svc".to_owned()],
            uris: vec!["spiffe://example.org/ns/billing/sa/api".to_owned()],
            fingerprint: "ab".repeat(32),
        }
    }

    #[test]
    fn certificates_name_their_caller() {
        let named = ClientCertIdentity {
            matches: MtlsCondition {
                dns_names: vec![crate::policy::HostPattern::Exact("billing.svc".to_owned())],
                ..MtlsCondition::default()
            },
            subject: Some("billing".to_owned()),
            roles: vec!["service".to_owned()],
            scopes: vec!["orders:read".to_owned()],
        };
        let anyone = ClientCertIdentity {
            matches: MtlsCondition::default(),
            subject: None,
            roles: Vec::new(),
            scopes: Vec::new(),
        };
        let callers = ClientCerts::new(&[named, anyone]);
        let billing = callers.identify(&certificate()).unwrap();
        assert_eq!(billing.subject, "billing");
        assert_eq!(billing.roles, ["service"]);
        assert_eq!(billing.issuer, ISSUER);
        let other = ClientCertificate {
            dns_names: vec!["web.svc".to_owned()],
            ..certificate()
        };
        let named_by_itself = callers.identify(&other).unwrap();
        assert_eq!(
            named_by_itself.subject,
            "spiffe://example.org/ns/billing/sa/api"
        );
        assert!(named_by_itself.roles.is_empty());
        assert!(ClientCerts::new(&[]).identify(&certificate()).is_none());
    }

    #[test]
    fn the_forwarded_header_reads_as_envoys() {
        let value = forwarded(&certificate()).unwrap();
        assert_eq!(
            value.to_str().unwrap(),
            format!(
                "Hash={};Subject=\"CN=billing \\\"api\\\"\";URI=spiffe://example.org/ns/billing/sa/api;DNS=billing.svc",
                "ab".repeat(32)
            )
        );
        let foreign = ClientCertificate {
            subject: Some("caf\u{e9}".to_owned()),
            uris: vec!["urn:a;b=c".to_owned()],
            ..certificate()
        };
        assert_eq!(
            forwarded(&foreign).unwrap().to_str().unwrap(),
            format!("Hash={};URI=\"urn:a;b=c\";DNS=billing.svc", "ab".repeat(32))
        );
        assert!(
            !forwarded(&foreign)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Subject")
        );
    }
}
