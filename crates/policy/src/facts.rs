//! What the policy knows about a request. Built by the proxy (or by `explain` and `test`)
//! from a request that has already been normalized; the policy never sees raw bytes.

use std::net::IpAddr;

use super::country::Country;
use super::mtls::ClientCertificate;
use super::principal::Principal;

/// One request, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The method as sent (methods are case-sensitive).
    pub method: &'a str,
    /// The host, lower-case, without port; `None` for an HTTP/1.0 request that named none.
    pub host: Option<&'a str>,
    /// The canonical path (see `crate::path::canonical`), without the query; lower-cased
    /// when the route is case-insensitive.
    pub path: &'a str,
    /// The client's address: the socket peer, or what a trusted proxy reported.
    pub client_ip: IpAddr,
    /// The request headers the policy refers to ([`crate::PolicySet::header_names`]),
    /// names lower-case, one pair per field line.
    pub headers: &'a [(&'a str, &'a str)],
    /// The identified caller, or `None` for an anonymous request.
    pub principal: Option<&'a Principal>,
    /// The client certificate verified in the TLS handshake, if any.
    pub client_cert: Option<&'a ClientCertificate>,
    /// The client's country ([`Country::UNKNOWN`] when the database does not know the
    /// address); `None` when it could not be found out (no database loaded), or was not
    /// needed ([`crate::PolicySet::uses_countries`]).
    pub country: Option<Country>,
}

impl RequestFacts<'_> {
    /// The values of header `name` (lower-case), in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |(header, _)| *header == name)
            .map(|(_, value)| *value)
    }
}
