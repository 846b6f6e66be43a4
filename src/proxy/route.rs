//! Host + path → route. The most specific route wins: longest path prefix first, then an
//! exact host over a wildcard over no host, then file order.

use std::borrow::Cow;

use crate::config::{HostPattern, RouteId, RouteSettings};

/// A route ready to match.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's id.
    pub id: RouteId,
    /// Its position in the config file's `routes` list.
    pub index: usize,
    /// Index of its upstream in the proxy's upstream list.
    pub upstream: usize,
    /// Whether paths are matched, decided and forwarded lower-cased.
    pub case_insensitive: bool,
    /// Methods without defined content whose requests may carry some here.
    pub allow_body_on: Vec<http::Method>,
    /// Paths may hold an encoded `%` followed by two hex digits.
    pub allow_encoded_percent: bool,
    /// Protocol names (lower-case) a request may switch to here.
    upgrades: Vec<String>,
    host: Option<HostPattern>,
    path_prefix: String,
}

/// All routes, ordered so that the first match is the most specific.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl Route {
    /// The path the policy decides on and the upstream receives: `path` itself, or
    /// lower-cased on a case-insensitive route.
    pub fn decision_path<'p>(&self, path: Cow<'p, str>) -> Cow<'p, str> {
        match path {
            _ if !self.case_insensitive => path,
            Cow::Borrowed(text) => crate::path::fold_case(text),
            Cow::Owned(text) => Cow::Owned(crate::path::fold_case(&text).into_owned()),
        }
    }

    /// Whether every protocol an `Upgrade` field lists may be switched to here (and it
    /// lists one at least). Each item is a protocol name, with an optional `/version`
    /// that is not looked at.
    pub fn allows_upgrade(&self, upgrade: &[u8]) -> bool {
        let mut listed = 0;
        upgrade
            .split(|b| *b == b',')
            .map(|item| item.trim_ascii())
            .filter(|item| !item.is_empty())
            .all(|item| {
                listed += 1;
                let name = item.split(|b| *b == b'/').next().unwrap_or(item);
                (self.upgrades.iter()).any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(name))
            })
            && listed > 0
    }
}

impl RouteTable {
    /// Orders `routes` by specificity.
    pub fn new(settings: &[RouteSettings]) -> RouteTable {
        let mut routes: Vec<(usize, Route)> = settings
            .iter()
            .enumerate()
            .map(|(order, s)| {
                let route = Route {
                    id: s.id.clone(),
                    index: order,
                    upstream: s.upstream,
                    case_insensitive: s.case_insensitive,
                    allow_body_on: s.allow_body_on.clone(),
                    allow_encoded_percent: s.allow_encoded_percent,
                    upgrades: s.upgrades.clone(),
                    host: s.host.clone(),
                    path_prefix: s.path_prefix.clone(),
                };
                (order, route)
            })
            .collect();
        routes.sort_by_key(|(order, route)| {
            let host_rank = match &route.host {
                Some(HostPattern::Exact(_)) => (0, 0),
                Some(HostPattern::Suffix(suffix)) => (1, usize::MAX - suffix.len()),
                None => (2, 0),
            };
            (usize::MAX - route.path_prefix.len(), host_rank, *order)
        });
        RouteTable {
            routes: routes.into_iter().map(|(_, route)| route).collect(),
        }
    }

    /// The route for `host` (lower-case, without port; `None` when the request named none)
    /// and `path`, or `None` when no route accepts the request.
    pub fn select(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| {
            host_matches(route.host.as_ref(), host)
                && prefix_matches(&route.path_prefix, path, route.case_insensitive)
        })
    }
}

fn host_matches(pattern: Option<&HostPattern>, host: Option<&str>) -> bool {
    match (pattern, host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(HostPattern::Exact(exact)), Some(host)) => exact == host,
        (Some(HostPattern::Suffix(suffix)), Some(host)) => {
            host.len() > suffix.len() && host.ends_with(suffix.as_str())
        }
    }
}

/// `/api` matches `/api` and `/api/x` but not `/apiary`; `/api/` matches anything under it.
/// A case-insensitive route's prefix is lower-case already.
fn prefix_matches(prefix: &str, path: &str, case_insensitive: bool) -> bool {
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = if case_insensitive {
        head.eq_ignore_ascii_case(prefix)
    } else {
        head == prefix
    };
    let rest = &path[prefix.len()..];
    same && (prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn route(id: &str, host: Option<HostPattern>, prefix: &str) -> RouteSettings {
        RouteSettings {
            id: RouteId(Arc::from(id)),
            host,
            path_prefix: prefix.to_owned(),
            upstream: 0,
            case_insensitive: false,
            allow_body_on: Vec::new(),
            allow_encoded_percent: false,
            upgrades: Vec::new(),
        }
    }

    #[test]
    fn upgrades_pass_only_to_the_protocols_a_route_lists() {
        let mut settings = route("ws", None, "/");
        let closed = RouteTable::new(std::slice::from_ref(&settings));
        settings.upgrades = vec!["websocket".to_owned()];
        let open = RouteTable::new(&[settings]);
        let (closed, open) = (&closed.routes[0], &open.routes[0]);
        assert!(!closed.allows_upgrade(b"websocket"));
        assert!(open.allows_upgrade(b"websocket"));
        assert!(open.allows_upgrade(b"WebSocket/13"));
        for refused in [
            &b"websocket, tls/1.3"[..],
            b"foo",
            b"",
            b" , ",
            b"websockets",
        ] {
            assert!(!open.allows_upgrade(refused), "{refused:?}");
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route("root", None, "/"),
            route("api", None, "/api"),
            route("api-v2", None, "/api/v2/"),
            route(
                "exact",
                Some(HostPattern::Exact("admin.example.com".into())),
                "/",
            ),
            route(
                "wild",
                Some(HostPattern::Suffix(".example.com".into())),
                "/",
            ),
            route(
                "deep-wild",
                Some(HostPattern::Suffix(".eu.example.com".into())),
                "/",
            ),
        ])
    }

    fn selected(host: Option<&str>, path: &str) -> Option<String> {
        table().select(host, path).map(|r| r.id.to_string())
    }

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(selected(None, "/api/v2/orders").as_deref(), Some("api-v2"));
        assert_eq!(selected(None, "/api/v1").as_deref(), Some("api"));
        assert_eq!(selected(None, "/api").as_deref(), Some("api"));
        assert_eq!(selected(None, "/apiary").as_deref(), Some("root"));
        assert_eq!(selected(None, "/api/v2").as_deref(), Some("api"));
    }

    #[test]
    fn host_specificity_breaks_ties() {
        assert_eq!(
            selected(Some("admin.example.com"), "/x").as_deref(),
            Some("exact")
        );
        assert_eq!(
            selected(Some("shop.example.com"), "/x").as_deref(),
            Some("wild")
        );
        assert_eq!(
            selected(Some("a.eu.example.com"), "/x").as_deref(),
            Some("deep-wild")
        );
        assert_eq!(selected(Some("example.com"), "/x").as_deref(), Some("root"));
        assert_eq!(selected(Some("other.org"), "/x").as_deref(), Some("root"));
    }

    #[test]
    fn case_insensitive_routes_ignore_case() {
        let mut legacy = route("legacy", None, "/legacy");
        legacy.case_insensitive = true;
        let table = RouteTable::new(&[legacy, route("root", None, "/")]);
        assert_eq!(
            table.select(None, "/LEGACY/x").unwrap().id.to_string(),
            "legacy"
        );
        assert_eq!(
            table.select(None, "/Legacy").unwrap().id.to_string(),
            "legacy"
        );
        assert_eq!(
            table.select(None, "/legacyx").unwrap().id.to_string(),
            "root"
        );
    }

    #[test]
    fn no_route() {
        let table = RouteTable::new(&[route(
            "api",
            Some(HostPattern::Exact("a.com".into())),
            "/api",
        )]);
        assert!(table.select(Some("a.com"), "/").is_none());
        assert!(table.select(None, "/api").is_none());
    }
}
