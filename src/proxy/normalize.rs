//! The request's host and path, checked once, before routing: exactly one authority, well
//! formed, agreeing between the request target and `Host`; and one canonical spelling of
//! the path, which is both what routing decides on and what the upstream receives.

use std::borrow::Cow;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{FORWARDED, HOST};

use crate::config::ForwardedHeader;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName};
use http::{HeaderValue, Uri, Version};

use super::respond::ProxyError;

/// Where the client says the request is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The host, lower-case, without port; `None` for an HTTP/1.0 request that named none.
    pub host: Option<String>,
    /// The authority to send upstream as `Host`, as the client wrote it.
    pub host_header: Option<HeaderValue>,
}

/// Reads the authority from the request target (absolute form, HTTP/2 `:authority`) and
/// the `Host` header; rejects requests where they are missing, repeated or disagree.
pub fn authority(
    uri: &Uri,
    headers: &HeaderMap,
    version: Version,
) -> Result<Authority, ProxyError> {
    let mut host_headers = headers.get_all(HOST).iter();
    let host_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(ProxyError::BadRequest(
            "the request has more than one Host header".into(),
        ));
    }
    let target_authority = uri.authority();

    let written: HeaderValue = match (target_authority, host_header) {
        (Some(target), Some(header)) => {
            // SECURITY: a request that names two different hosts could be routed by one
            // and served by the other.
            if !target
                .as_str()
                .eq_ignore_ascii_case(header.to_str().unwrap_or(""))
            {
                return Err(ProxyError::BadRequest(
                    "the Host header does not match the host in the request target".into(),
                ));
            }
            header.clone()
        }
        (Some(target), None) => HeaderValue::from_str(target.as_str())
            .map_err(|_| ProxyError::BadRequest("the request target's host is not valid".into()))?,
        (None, Some(header)) => header.clone(),
        (None, None) if version == Version::HTTP_10 || version == Version::HTTP_09 => {
            return Ok(Authority {
                host: None,
                host_header: None,
            });
        }
        (None, None) => {
            return Err(ProxyError::BadRequest(
                "the request has no Host header".into(),
            ));
        }
    };
    let host = parse_host(written.as_bytes()).ok_or_else(|| {
        ProxyError::BadRequest("the Host header is not a valid host[:port]".into())
    })?;
    Ok(Authority {
        host: Some(host),
        host_header: Some(written),
    })
}

/// Refuses a request target that carries a `#fragment`. The URI parser drops a fragment
/// silently; a client never sends one, and one that does is probing how the parts of
/// the target are split.
pub fn refuse_fragment(target: &[u8]) -> Result<(), ProxyError> {
    if target.contains(&b'#') {
        let fragment = super::h1::Malformed::Fragment;
        return Err(ProxyError::BadRequest(format!(
            "the request has {fragment}"
        )));
    }
    Ok(())
}

/// `host[:port]` → lower-case host, or `None` when it is not a reg-name, IPv4 or `[IPv6]`.
pub fn parse_host(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']')?;
        let literal = &rest[..end];
        literal.parse::<std::net::Ipv6Addr>().ok()?;
        (&text[..end + 2], &rest[end + 1..])
    } else {
        match text.rfind(':') {
            Some(colon) => (&text[..colon], &text[colon..]),
            None => (text, ""),
        }
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let reg_name_ok = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    // A fully qualified name's trailing dot names the same host: `api.example.com.`
    // must meet the same route as `api.example.com`.
    let host = host.strip_suffix('.').unwrap_or(host);
    (reg_name_ok && !host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Where a request comes from, as far as the trusted proxies say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client's address.
    pub ip: IpAddr,
    /// The trusted proxy that took the client's connection (the peer, when the client
    /// reached the gateway itself): the only hop that saw the client, and so the only
    /// one whose word about it (a country header) can be believed.
    pub accepted_by: IpAddr,
    /// Why a trusted proxy's forwarding header was not believed, when it was not.
    pub problem: Option<&'static str>,
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the
/// rightmost address in `header` that is not itself a trusted proxy. The chain is read
/// from the right, where the trusted proxies wrote, and reading stops at the first
/// address that is not theirs: everything left of it was written by the client. A
/// malformed entry met before that is not believed: the peer is the client then, and
/// the problem is returned for the log.
pub fn client_ip(
    headers: &HeaderMap,
    peer: IpAddr,
    header: ForwardedHeader,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> ClientAddress {
    let peer = peer.to_canonical();
    let direct = |problem| ClientAddress {
        ip: peer,
        accepted_by: peer,
        problem,
    };
    if !is_trusted(peer) {
        return direct(None);
    }
    let name = match header {
        ForwardedHeader::XForwardedFor => X_FORWARDED_FOR,
        ForwardedHeader::Forwarded => FORWARDED,
    };
    let lines: Vec<&HeaderValue> = headers.get_all(&name).iter().collect();
    // The hop read last, and the one right of it: the proxy that took its connection.
    let mut hop = direct(None);
    for line in lines.iter().rev() {
        // Entries are read one at a time from the right, so bytes a client put left of
        // its real address (even ones that are not text) are never looked at.
        for entry in line.as_bytes().rsplit(|&b| b == b',') {
            let Ok(entry) = std::str::from_utf8(entry) else {
                return direct(Some(MALFORMED));
            };
            let address = match header {
                ForwardedHeader::XForwardedFor => node_address(entry.trim()),
                ForwardedHeader::Forwarded => forwarded_for(entry),
            };
            let Some(ip) = address else {
                return direct(Some(MALFORMED));
            };
            hop = ClientAddress {
                ip,
                accepted_by: hop.ip,
                problem: None,
            };
            // SECURITY: the first address that is not one of our proxies is the
            // client; whatever lies left of it is the client's own claim.
            if !is_trusted(ip) {
                return hop;
            }
        }
    }
    // Every hop was a trusted proxy: the first of them is the client.
    hop
}

const MALFORMED: &str = "malformed forwarding header from a trusted proxy";

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The `for=` address of one `Forwarded` element; `None` when it is missing, obfuscated,
/// `unknown` or malformed, since the hop it stands for cannot be placed.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let node = element
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
        .map(|(_, value)| value.trim())?;
    let node = match node.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => node,
    };
    node_address(node)
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn node_address(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (literal, port) = rest.split_once(']')?;
        if !(port.is_empty() || valid_port(port.strip_prefix(':')?)) {
            return None;
        }
        return literal
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (address, port) = text.rsplit_once(':')?;
    if !valid_port(port) {
        return None;
    }
    address.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn valid_port(digits: &str) -> bool {
    !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The request headers the policy looks at, as `(name, value)` text pairs.
pub fn policy_headers<'h>(names: &'h [String], headers: &'h HeaderMap) -> Vec<(&'h str, &'h str)> {
    let mut pairs = Vec::new();
    for name in names {
        for value in headers.get_all(name.as_str()) {
            let text = value.to_str().unwrap_or(crate::policy::NOT_TEXT);
            pairs.push((name.as_str(), text));
        }
    }
    pairs
}

/// Refuses a standard method written in another case (`delete`): methods are
/// case-sensitive, so rules for `DELETE` would not apply, yet some servers upper-case the
/// method and run their `DELETE` handler.
pub fn method(method: &http::Method) -> Result<(), ProxyError> {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    let text = method.as_str();
    match STANDARD
        .iter()
        .find(|standard| standard.eq_ignore_ascii_case(text))
    {
        Some(standard) if *standard != text => Err(ProxyError::BadRequest(format!(
            "the method \"{text}\" must be written \"{standard}\" (methods are case-sensitive)"
        ))),
        _ => Ok(()),
    }
}

/// The canonical spelling of the request path (see [`crate::path::canonical`]); a path
/// servers would read in different ways is a 400.
pub fn path(raw: &str) -> Result<Cow<'_, str>, ProxyError> {
    crate::path::canonical(raw).map_err(|err| ProxyError::BadRequest(err.to_string()))
}

/// `uri` with its path replaced by `path` and its query kept as it was.
pub fn with_path(uri: &Uri, path: &str) -> Result<Uri, ProxyError> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).map_err(|err| {
        ProxyError::BadRequest(format!(
            "the normalized path is not a valid request target ({err})"
        ))
    })?);
    Uri::from_parts(parts).map_err(|err| {
        ProxyError::BadRequest(format!(
            "the normalized path is not a valid request target ({err})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority_of(version: Version, uri: &str, hosts: &[&str]) -> Result<Authority, ProxyError> {
        let mut builder = http::Request::builder().version(version).uri(uri);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        let parts = builder.body(()).unwrap().into_parts().0;
        authority(&parts.uri, &parts.headers, parts.version)
    }

    #[test]
    fn host_header_is_lowercased_without_port() {
        let found = authority_of(Version::HTTP_11, "/x", &["API.Example.com:8080"]).unwrap();
        assert_eq!(found.host.as_deref(), Some("api.example.com"));
        assert_eq!(found.host_header.unwrap(), "API.Example.com:8080");
    }

    #[test]
    fn a_trailing_dot_names_the_same_host() {
        let found = authority_of(Version::HTTP_11, "/x", &["API.example.com.:80"]).unwrap();
        assert_eq!(found.host.as_deref(), Some("api.example.com"));
    }

    #[test]
    fn ipv6_literal() {
        let found = authority_of(Version::HTTP_11, "/x", &["[::1]:8080"]).unwrap();
        assert_eq!(found.host.as_deref(), Some("[::1]"));
    }

    #[test]
    fn http2_authority_stands_for_host() {
        let found = authority_of(Version::HTTP_2, "http://a.example/x", &[]).unwrap();
        assert_eq!(found.host.as_deref(), Some("a.example"));
        assert_eq!(found.host_header.unwrap(), "a.example");
    }

    #[test]
    fn rejects_ambiguity() {
        for (version, uri, hosts) in [
            (Version::HTTP_11, "/x", vec![]),
            (Version::HTTP_11, "/x", vec!["a", "b"]),
            (Version::HTTP_11, "http://a/x", vec!["b"]),
            (Version::HTTP_11, "/x", vec!["a b"]),
            (Version::HTTP_11, "/x", vec!["a:80:80"]),
            (Version::HTTP_11, "/x", vec!["a:"]),
            (Version::HTTP_11, "/x", vec!["[zz]"]),
        ] {
            assert!(
                authority_of(version, uri, &hosts).is_err(),
                "{uri} {hosts:?}"
            );
        }
    }

    fn client(pairs: &[(&str, &str)], peer: &str) -> (String, bool) {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        let header = if pairs.iter().any(|(name, _)| *name == "forwarded") {
            ForwardedHeader::Forwarded
        } else {
            ForwardedHeader::XForwardedFor
        };
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let client = client_ip(&headers, peer.parse().unwrap(), header, |ip| {
            trusted.iter().any(|net| net.contains(&ip))
        });
        (client.ip.to_string(), client.problem.is_some())
    }

    #[test]
    fn the_proxy_that_took_the_clients_connection_is_known() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let accepted_by = |value: Option<&str>, peer: &str| {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
            }
            let client = client_ip(
                &headers,
                peer.parse().unwrap(),
                ForwardedHeader::XForwardedFor,
                |ip| trusted.iter().any(|net| net.contains(&ip)),
            );
            (client.ip.to_string(), client.accepted_by.to_string())
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        // A CDN (10.0.0.2) behind a load balancer (the peer).
        assert_eq!(
            accepted_by(Some("203.0.113.9, 10.0.0.2"), "10.0.0.1"),
            pair("203.0.113.9", "10.0.0.2")
        );
        // Straight to the load balancer.
        assert_eq!(
            accepted_by(Some("6.6.6.6, 203.0.113.9"), "10.0.0.1"),
            pair("203.0.113.9", "10.0.0.1")
        );
        assert_eq!(accepted_by(None, "10.0.0.1"), pair("10.0.0.1", "10.0.0.1"));
        assert_eq!(
            accepted_by(Some("203.0.113.9"), "192.0.2.1"),
            pair("192.0.2.1", "192.0.2.1")
        );
        assert_eq!(
            accepted_by(Some("10.0.0.3, 10.0.0.2"), "10.0.0.1"),
            pair("10.0.0.3", "10.0.0.2")
        );
    }

    #[test]
    fn client_ip_from_trusted_proxies_only() {
        for (pairs, peer, want, malformed) in [
            (
                vec![("x-forwarded-for", "6.6.6.6")],
                "192.0.2.1",
                "192.0.2.1",
                false,
            ),
            (
                vec![("x-forwarded-for", "203.0.113.9")],
                "10.0.0.1",
                "203.0.113.9",
                false,
            ),
            (
                vec![("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2")],
                "10.0.0.1",
                "203.0.113.9",
                false,
            ),
            (
                vec![
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9"),
                ],
                "10.0.0.1",
                "203.0.113.9",
                false,
            ),
            (
                vec![("x-forwarded-for", "10.0.0.3, 10.0.0.2")],
                "10.0.0.1",
                "10.0.0.3",
                false,
            ),
            (
                vec![("x-forwarded-for", "203.0.113.9:4711")],
                "10.0.0.1",
                "203.0.113.9",
                false,
            ),
            (
                vec![("x-forwarded-for", "[2001:db8::1]:80")],
                "10.0.0.1",
                "2001:db8::1",
                false,
            ),
            (
                vec![("x-forwarded-for", "::ffff:203.0.113.9")],
                "10.0.0.1",
                "203.0.113.9",
                false,
            ),
            // The client's own garbage left of the real address does not matter.
            (
                vec![("x-forwarded-for", "nonsense, 6.6.6.6")],
                "10.0.0.1",
                "6.6.6.6",
                false,
            ),
            (
                vec![("x-forwarded-for", "10.1.1.1, x, 6.6.6.6")],
                "10.0.0.1",
                "6.6.6.6",
                false,
            ),
            (
                vec![("x-forwarded-for", "caf\u{e9}, 6.6.6.6")],
                "10.0.0.1",
                "6.6.6.6",
                false,
            ),
            // A malformed hop where our proxies wrote is not believed.
            (
                vec![("x-forwarded-for", "6.6.6.6, nonsense")],
                "10.0.0.1",
                "10.0.0.1",
                true,
            ),
            (
                vec![("x-forwarded-for", "6.6.6.6, 10.0.0.9, x")],
                "10.0.0.1",
                "10.0.0.1",
                true,
            ),
            (vec![("x-forwarded-for", "")], "10.0.0.1", "10.0.0.1", true),
            (
                vec![("forwarded", "for=203.0.113.9;proto=https")],
                "10.0.0.1",
                "203.0.113.9",
                false,
            ),
            (
                vec![(
                    "forwarded",
                    "for=6.6.6.6, for=\"[2001:db8::7]:1\", for=10.0.0.5",
                )],
                "10.0.0.1",
                "2001:db8::7",
                false,
            ),
            (
                vec![("forwarded", "for=unknown")],
                "10.0.0.1",
                "10.0.0.1",
                true,
            ),
            (
                vec![("forwarded", "for=_hidden")],
                "10.0.0.1",
                "10.0.0.1",
                true,
            ),
            (
                vec![("forwarded", "proto=https")],
                "10.0.0.1",
                "10.0.0.1",
                true,
            ),
            // Only the configured header is read.
            (
                vec![
                    ("x-forwarded-for", "6.6.6.6"),
                    ("forwarded", "for=203.0.113.9"),
                ],
                "10.0.0.1",
                "203.0.113.9",
                false,
            ),
            (
                vec![("forwarded", "for=6.6.6.6")],
                "192.0.2.1",
                "192.0.2.1",
                false,
            ),
            (vec![], "10.0.0.1", "10.0.0.1", false),
            (vec![], "::ffff:192.0.2.1", "192.0.2.1", false),
        ] {
            assert_eq!(
                client(&pairs, peer),
                (want.to_owned(), malformed),
                "{pairs:?} via {peer}"
            );
        }
    }

    #[test]
    fn policy_headers_keep_values_that_are_not_text() {
        let mut headers = HeaderMap::new();
        headers.append("x-debug", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        headers.append("x-env", HeaderValue::from_static("staging"));
        headers.append("x-other", HeaderValue::from_static("ignored"));
        let names = vec!["x-debug".to_owned(), "x-env".to_owned()];
        assert_eq!(
            policy_headers(&names, &headers),
            [("x-debug", crate::policy::NOT_TEXT), ("x-env", "staging")]
        );
    }

    #[test]
    fn methods_are_case_sensitive() {
        for (method, ok) in [
            ("GET", true),
            ("PURGE", true),
            ("purge", true),
            ("get", false),
            ("Delete", false),
        ] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(super::method(&method).is_ok(), ok, "{method}");
        }
    }

    #[test]
    fn http10_may_omit_host() {
        let found = authority_of(Version::HTTP_10, "/x", &[]).unwrap();
        assert_eq!(
            found,
            Authority {
                host: None,
                host_header: None
            }
        );
    }
}
