//! Client certificates: what a verified one says about its holder, and the `mtls`
//! condition that names the certificates a rule accepts.

use std::fmt;

use super::rule::HostPattern;

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's common name.
    pub subject: Option<String>,
    /// Subject alternative names of the DNS kind, lower-case.
    pub dns_names: Vec<String>,
    /// Subject alternative names of the URI kind; SPIFFE IDs are those of `spiffe://`.
    pub uris: Vec<String>,
    /// The SHA-256 of the certificate, lower-case hex.
    pub fingerprint: String,
}

impl ClientCertificate {
    /// The name sentences call the holder by: its SPIFFE ID, else its first DNS name, else
    /// its subject, else its fingerprint.
    pub fn name(&self) -> &str {
        self.spiffe_ids()
            .next()
            .or(self.dns_names.first().map(String::as_str))
            .or(self.subject.as_deref())
            .unwrap_or(&self.fingerprint)
    }

    /// Its SPIFFE IDs: the URIs of the `spiffe` scheme.
    pub fn spiffe_ids(&self) -> impl Iterator<Item = &str> {
        self.uris
            .iter()
            .map(String::as_str)
            .filter(|uri| uri.starts_with(SPIFFE))
    }
}

const SPIFFE: &str = "spiffe://";

/// A SPIFFE ID a rule accepts: exactly one, or every ID under a path (`spiffe://td/ns/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffePattern {
    /// Exactly this ID.
    Exact(String),
    /// Any ID that starts with this, which ends in `/`.
    Under(String),
}

impl SpiffePattern {
    /// `spiffe://trust-domain/path`, or one ending in `/*`; an error says what is wrong.
    pub fn parse(text: &str) -> Result<SpiffePattern, String> {
        let Some(rest) = text.strip_prefix(SPIFFE) else {
            return Err(format!(
                "\"{text}\" is not a SPIFFE ID: it must start with spiffe://"
            ));
        };
        let domain = rest.split('/').next().unwrap_or_default();
        if domain.is_empty()
            || !domain.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || b".-_".contains(&byte)
            })
        {
            return Err(format!(
                "\"{text}\" has no valid trust domain: write spiffe://example.org/..., in lower case"
            ));
        }
        match text.strip_suffix('*') {
            Some(under) if under.ends_with('/') => Ok(SpiffePattern::Under(under.to_owned())),
            _ if text.contains('*') => Err(format!(
                "\"{text}\": a SPIFFE ID may end in /* (every ID under that path), and have no other *"
            )),
            _ => Ok(SpiffePattern::Exact(text.to_owned())),
        }
    }

    fn matches(&self, id: &str) -> bool {
        match self {
            SpiffePattern::Exact(exact) => exact == id,
            SpiffePattern::Under(prefix) => id.len() > prefix.len() && id.starts_with(prefix),
        }
    }
}

impl fmt::Display for SpiffePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpiffePattern::Exact(id) => f.write_str(id),
            SpiffePattern::Under(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// A SHA-256 fingerprint as written (`AB:CD:…` or `abcd…`), as [`ClientCertificate`]
/// holds it: 64 lower-case hex digits.
pub fn parse_fingerprint(text: &str) -> Result<String, String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "\"{text}\" is not a SHA-256 fingerprint: 64 hex digits, with or without colons (openssl x509 -noout -fingerprint -sha256 -in CERT)"
        ))
    }
}

/// `when.mtls`: the request came with a verified client certificate that names one of
/// these (any list, any entry); with every list empty, any verified certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MtlsCondition {
    /// Subject common names, exactly.
    pub subjects: Vec<String>,
    /// DNS names; `*.example.com` for any name under example.com.
    pub dns_names: Vec<HostPattern>,
    /// SPIFFE IDs, or paths of them.
    pub spiffe_ids: Vec<SpiffePattern>,
    /// SHA-256 fingerprints, lower-case hex without separators.
    pub fingerprints: Vec<String>,
}

impl MtlsCondition {
    /// Whether `certificate` is one the condition accepts.
    pub fn accepts(&self, certificate: &ClientCertificate) -> bool {
        let any_listed = !(self.subjects.is_empty()
            && self.dns_names.is_empty()
            && self.spiffe_ids.is_empty()
            && self.fingerprints.is_empty());
        !any_listed
            || certificate
                .subject
                .as_ref()
                .is_some_and(|subject| self.subjects.contains(subject))
            || (certificate.dns_names.iter())
                .any(|name| self.dns_names.iter().any(|pattern| pattern.matches(name)))
            || (certificate.spiffe_ids())
                .any(|id| self.spiffe_ids.iter().any(|pattern| pattern.matches(id)))
            || self.fingerprints.contains(&certificate.fingerprint)
    }

    /// The certificates it accepts, as an operator reads them.
    pub fn describe(&self) -> String {
        let mut accepted: Vec<String> = Vec::new();
        accepted.extend(self.spiffe_ids.iter().map(ToString::to_string));
        accepted.extend(self.dns_names.iter().map(|name| format!("DNS:{name}")));
        accepted.extend(self.subjects.iter().map(|subject| format!("CN={subject}")));
        accepted.extend(
            self.fingerprints
                .iter()
                .map(|hash| format!("SHA256:{hash}")),
        );
        if accepted.is_empty() {
            "any verified client certificate".to_owned()
        } else {
            accepted.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(uris: &[&str], dns: &[&str], subject: Option<&str>) -> ClientCertificate {
        ClientCertificate {
            subject: subject.map(str::to_owned),
            dns_names: dns.iter().map(|name| (*name).to_owned()).collect(),
            uris: uris.iter().map(|uri| (*uri).to_owned()).collect(),
            fingerprint: "ab".repeat(32),
        }
    }

    #[test]
    fn fingerprints() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&colons).unwrap(), "ab".repeat(32));
        assert!(parse_fingerprint("ab").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn spiffe_patterns() {
        let under = SpiffePattern::parse("spiffe://example.org/ns/billing/*").unwrap();
        assert!(under.matches("spiffe://example.org/ns/billing/sa/api"));
        assert!(!under.matches("spiffe://example.org/ns/billing/"));
        assert!(!under.matches("spiffe://example.org/ns/billing-2/sa/api"));
        let exact = SpiffePattern::parse("spiffe://example.org/ns/a/sa/b").unwrap();
        assert!(exact.matches("spiffe://example.org/ns/a/sa/b"));
        assert!(!exact.matches("spiffe://example.org/ns/a/sa/bc"));
        for bad in [
            "https://example.org/x",
            "spiffe:///x",
            "spiffe://Example.org/x",
            "spiffe://example.org/*/x",
            "spiffe://example.org/x*",
        ] {
            assert!(SpiffePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn any_listed_identity_is_accepted() {
        let condition = MtlsCondition {
            subjects: vec!["billing".to_owned()],
            dns_names: vec![HostPattern::Suffix(".svc.example.org".to_owned())],
            spiffe_ids: vec![SpiffePattern::parse("spiffe://example.org/ns/a/*").unwrap()],
            fingerprints: vec!["cd".repeat(32)],
        };
        assert!(condition.accepts(&certificate(&["spiffe://example.org/ns/a/sa/x"], &[], None)));
        assert!(condition.accepts(&certificate(&[], &["api.svc.example.org"], None)));
        assert!(condition.accepts(&certificate(&[], &[], Some("billing"))));
        let mut pinned = certificate(&[], &[], None);
        pinned.fingerprint = "cd".repeat(32);
        assert!(condition.accepts(&pinned));
        assert!(!condition.accepts(&certificate(
            &[
                "spiffe://example.org/ns/b/sa/x",
                "https://example.org/ns/a/sa/x"
            ],
            &["svc.example.org"],
            Some("billing-2"),
        )));
        // A URI that only looks like the SPIFFE ID is not one.
        assert!(!condition.accepts(&certificate(&["SPIFFE://example.org/ns/a/sa/x"], &[], None)));
        assert!(MtlsCondition::default().accepts(&certificate(&[], &[], None)));
    }

    #[test]
    fn holders_are_named_by_their_most_specific_name() {
        let cert = certificate(&["https://x", "spiffe://td/a"], &["a.test"], Some("a"));
        assert_eq!(cert.name(), "spiffe://td/a");
        assert_eq!(certificate(&[], &["a.test"], Some("a")).name(), "a.test");
        assert_eq!(certificate(&[], &[], Some("a")).name(), "a");
        assert_eq!(certificate(&[], &[], None).name(), "ab".repeat(32));
    }
}
