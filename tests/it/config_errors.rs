//! Config errors read to a person: file, line, column, YAML path, message, and a hint.
//! Each test compares the whole rendered text, so a drop in quality fails it.

use std::path::Path;

fn errors(yaml: &str) -> String {
    match portcullis::config::from_str(Path::new("gw.yaml"), yaml) {
        Ok(_) => panic!("config unexpectedly valid:\n{yaml}"),
        Err(errors) => errors.to_string(),
    }
}

const VALID_TAIL: &str =
    "upstreams: { app: { targets: [\"builtin:echo\"] } }\nroutes: [{ id: main, upstream: app }]\n";

#[test]
fn unknown_keys_name_the_key_and_the_known_ones() {
    assert_eq!(
        errors(&format!(
            "listen:\n  - addr: 127.0.0.1:0\n    tsl: {{}}\n{VALID_TAIL}"
        )),
        "gw.yaml:3:5: listen[0].tsl: unknown field `tsl`, expected one of addr, tls"
    );
    assert_eq!(
        errors(&format!("{VALID_TAIL}limits:\n  max_body: 1\n")),
        "gw.yaml:4:3: limits.max_body: unknown field `max_body`, expected one of header_read_timeout, max_header_size, max_body_size, idle_timeout, max_connections, header_memory"
    );
}

#[test]
fn bad_values_are_all_reported_with_their_place() {
    let yaml = "\
listen:
  - addr: localhost
admin: { addr: 127.0.0.1:99999 }
network: { trusted_proxies: [10.0.0.1/8, office] }
upstreams:
  app:
    targets: [\"http://127.0.0.1:1/base\", \"ftp://files:21\"]
    connect_timeout: 2
    timeout: 3 weeks
routes:
  - { id: main, upstream: app }
  - { id: main, upstream: app, path_prefix: api }
  - { id: \"bad id\", host: \"a.*.com\", upstream: missing }
limits: { max_connections: 0, max_header_size: 10MB }
shutdown: { grace_period: 0s }
";
    assert_eq!(
        errors(yaml),
        r#"gw.yaml:2:11: listen[0].addr: "localhost" is not an address with a port, e.g. "127.0.0.1:8080" or "[::1]:8080"
gw.yaml:3:16: admin.addr: "127.0.0.1:99999" is not an address with a port, e.g. "127.0.0.1:8080" or "[::1]:8080"
gw.yaml:4:30: network.trusted_proxies[0]: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?
gw.yaml:4:42: network.trusted_proxies[1]: "office" is not an IP network, e.g. "10.0.0.0/8" or "2001:db8::/32"
gw.yaml:7:15: upstreams.app.targets[0]: "http://127.0.0.1:1/base" must not have a path: routes forward the request path unchanged
gw.yaml:7:42: upstreams.app.targets[1]: "ftp://files:21" must start with http:// or https:// (or be builtin:echo)
gw.yaml:8:22: upstreams.app.connect_timeout: duration "2" needs a unit: ms, s, m or h (e.g. "2s")
gw.yaml:9:14: upstreams.app.timeout: duration "3 weeks" has unknown unit " weeks": use ms, s, m or h
gw.yaml:12:11: routes[1].id: duplicate route id "main" (first defined on line 11)
gw.yaml:12:45: routes[1].path_prefix: path prefix "api" must start with "/"
gw.yaml:13:11: routes[2].id: route id "bad id" must start with a letter or digit and use only letters, digits, '_', '-' and '.' (at most 64)
gw.yaml:13:27: routes[2].host: "a.*.com" is not a host name; write "api.example.com" or "*.example.com", without a port
gw.yaml:13:48: routes[2].upstream: unknown upstream "missing"
gw.yaml:14:28: limits.max_connections: "0" is not a whole number between 1 and 1000000
gw.yaml:14:48: limits.max_header_size: size "10MB" has unknown unit "MB": use B, KiB, MiB or GiB
gw.yaml:15:27: shutdown.grace_period: must be longer than 0s"#
    );
}

#[test]
fn a_header_memory_too_small_for_the_largest_heads_is_refused() {
    assert_eq!(
        errors(&format!(
            "{VALID_TAIL}limits: {{ max_header_size: 64KiB, header_memory: 512KiB }}\n"
        )),
        "gw.yaml:3:50: limits.header_memory: must be at least 1MiB (16 times limits.max_header_size, and 1MiB at least): each head being read may hold four times max_header_size"
    );
}

#[test]
fn syntax_errors_stop_the_file_with_a_position() {
    assert_eq!(
        errors("listen: [{ addr: 127.0.0.1:0 }\nroutes: []\n"),
        "gw.yaml:2:7: listen: illegal placement of ':' indicator"
    );
    assert_eq!(
        errors("upstreams:\n  app: { targets: [\"builtin:echo\"] }\n  app: { targets: [] }\n"),
        "gw.yaml:3:3: upstreams.app: duplicate mapping key `app` is not allowed here"
    );
}

#[test]
fn wrong_shapes_name_the_expected_one() {
    assert_eq!(
        errors(&format!("listen: 127.0.0.1:8080\n{VALID_TAIL}")),
        "gw.yaml:1:9: listen: expects a list here: write [a, b], or one \"- item\" per line"
    );
}

#[test]
fn a_newcomers_mistakes_say_what_to_write() {
    // A tab in the indentation, on the tab's own line.
    assert_eq!(
        errors(
            "upstreams:\n  app:\n\ttargets: [\"builtin:echo\"]\nroutes: [{ id: main, upstream: app }]\n"
        ),
        "gw.yaml:3:2: upstreams.app: a tab in the indentation: indent with spaces"
    );
    // Unknown keys and values get the closest known one.
    assert_eq!(
        errors(
            "upstreams: { app: { targts: [\"builtin:echo\"] } }\nroutes: [{ id: main, upstream: app }]\n"
        ),
        "gw.yaml:1:21: upstreams.app.targts: unknown field `targts`, expected one of targets, connect_timeout, timeout, failure_cooldown, keepalive_timeout, tls\n  help: did you mean \"targets\"?"
    );
    assert_eq!(
        errors(&format!("{VALID_TAIL}denials: {{ detail: verbos }}\n")),
        "gw.yaml:3:20: denials.detail: unknown variant `verbos`, expected one of minimal, standard, verbose\n  help: did you mean \"verbose\"?"
    );
}

#[test]
fn required_parts_are_named() {
    assert_eq!(
        errors("listen: []\n"),
        "gw.yaml:1:9: listen: at least one listen address is required\n\
         gw.yaml: upstreams: at least one upstream is required\n\
         gw.yaml: routes: at least one route is required"
    );
    // An empty file is an empty mapping: every section at its default.
    assert_eq!(
        errors(""),
        "gw.yaml: upstreams: at least one upstream is required\n\
         gw.yaml: routes: at least one route is required"
    );
    assert_eq!(
        errors("listen: [{ addr: \"127.0.0.1:0"),
        "gw.yaml:1:18: listen: unclosed quote"
    );
}

#[test]
fn the_shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // deploy/docker/portcullis.yaml is checked as the image lays it out, in `deploy`.
    let path = root.join("config/portcullis.yaml");
    match portcullis::config::load(&path) {
        Ok(config) => assert!(config.warnings.is_empty(), "{:?}", config.warnings),
        Err(errors) => panic!("config/portcullis.yaml is invalid:\n{errors}"),
    }
}

#[test]
fn token_issuers_need_their_keys_and_secrets() {
    let yaml = format!(
        "{VALID_TAIL}identity:
  jwt:
    - id: a
      issuer: https://a/
      audiences: [api]
      algorithms: [RS256, HS256]
      jwks_file: keys.json
      jwks_url: https://a/keys
    - id: b
      issuer: https://b/
      audiences: [api]
      algorithms: [HS384]
      secret: {{ env: PORTCULLIS_TEST_UNSET_SECRET }}
      jwks_ca: ca.pem
    - id: c
      issuer: https://c/
      audiences: [api]
      algorithms: [ES256]
      jwks_url: ftp://c/keys
      jwks_refresh: 10s
      jwks_min_refresh: 1m
      secret: {{ file: secret, env: SECRET }}
"
    );
    assert_eq!(
        errors(&yaml),
        r#"gw.yaml:8:19: identity.jwt[0].algorithms: HS256/384/512 need the shared secret: add secret: { file: PATH } or { env: NAME }
gw.yaml:10:17: identity.jwt[0].jwks_url: write jwks_file or jwks_url, not both
gw.yaml:15:15: identity.jwt[1].secret: the environment variable PORTCULLIS_TEST_UNSET_SECRET is not set
gw.yaml:16:16: identity.jwt[1].jwks_ca: jwks_ca is for an https jwks_url; this issuer has none
gw.yaml:21:17: identity.jwt[2].jwks_url: "ftp://c/keys" must start with https:// (or http://)
gw.yaml:23:25: identity.jwt[2].jwks_min_refresh: must not be longer than jwks_refresh
gw.yaml:24:15: identity.jwt[2].secret: a secret is used only for HS256/384/512, and algorithms lists none of them"#
    );
}

#[test]
fn key_set_urls_are_checked() {
    let yaml = format!(
        "{VALID_TAIL}identity:
  jwt:
    - id: a
      issuer: https://a/
      audiences: [api]
      algorithms: [RS256]
      jwks_url: http://a/keys
      jwks_ca: ca.pem
      jwks_refresh: 1s
      jwks_min_refresh: 100ms
    - id: b
      issuer: https://b/
      audiences: [api]
      algorithms: [RS256]
      jwks_file: b.json
      jwks_refresh: 1m
    - id: c
      issuer: https://c/
      audiences: [api]
      algorithms: [RS256]
      jwks_url: https://user:secret@c/keys
"
    );
    assert_eq!(
        errors(&yaml),
        r#"gw.yaml:10:16: identity.jwt[0].jwks_ca: jwks_ca is for an https jwks_url; this issuer has none
gw.yaml:11:21: identity.jwt[0].jwks_refresh: must be at least 10s
gw.yaml:12:25: identity.jwt[0].jwks_min_refresh: must be at least 1s
gw.yaml:17:18: identity.jwt[1].jwks_file: cannot read "b.json": No such file or directory (os error 2)
gw.yaml:18:21: identity.jwt[1].jwks_refresh: jwks_refresh is for a jwks_url; this issuer has none
gw.yaml:23:17: identity.jwt[2].jwks_url: "https://user:secret@c/keys" must not carry credentials (user:password@)"#
    );
}

#[test]
fn identity_headers_cannot_be_ones_that_frame_or_route_the_message() {
    assert_eq!(
        errors(&format!(
            "{VALID_TAIL}identity:\n  forward_headers: {{ subject: Transfer-Encoding, roles: host, scopes: proxy-scopes }}\n"
        )),
        format!(
            "gw.yaml:4:31: identity.forward_headers.subject: \"Transfer-Encoding\" frames, routes or controls the message, so it cannot carry identity; use a name of your own (the defaults are X-Auth-Subject, X-Auth-Roles and X-Auth-Scopes)\n\
             gw.yaml:4:57: identity.forward_headers.roles: \"host\" frames, routes or controls the message, so it cannot carry identity; use a name of your own (the defaults are X-Auth-Subject, X-Auth-Roles and X-Auth-Scopes)\n\
             gw.yaml:4:71: identity.forward_headers.scopes: \"proxy-scopes\" frames, routes or controls the message, so it cannot carry identity; use a name of your own (the defaults are X-Auth-Subject, X-Auth-Roles and X-Auth-Scopes)"
        )
    );
}

#[test]
fn allow_body_on_lists_only_methods_without_defined_content() {
    assert_eq!(
        errors(
            "upstreams: { app: { targets: [\"builtin:echo\"] } }\nroutes: [{ id: main, upstream: app, allow_body_on: [GET, POST] }]\n"
        ),
        "gw.yaml:2:58: routes[0].allow_body_on[1]: \"POST\" is not GET, HEAD, OPTIONS, DELETE or TRACE; other methods may always carry content"
    );
}

#[test]
fn upgrades_name_protocols_and_never_h2c() {
    assert_eq!(
        errors(
            "upstreams: { app: { targets: [\"builtin:echo\"] } }\nroutes: [{ id: main, upstream: app, upgrades: [websocket, H2C, \"web socket\"] }]\n"
        ),
        "gw.yaml:2:59: routes[0].upgrades[1]: \"H2C\" is never forwarded: the gateway serves HTTP/2 itself\n\
         gw.yaml:2:64: routes[0].upgrades[2]: \"web socket\" is not a protocol name such as \"websocket\" (letters, digits, '-', '.', '_')"
    );
}

#[test]
fn redacted_paths_must_capture_a_segment() {
    assert_eq!(
        errors(&format!(
            "log: {{ redact_paths: [\"/reset/*\", \"reset/{{t}}\"] }}\n{VALID_TAIL}"
        )),
        "gw.yaml:1:23: log.redact_paths[0]: path \"/reset/*\" captures no segment to leave out; write {name} where the secret is, as in /reset/{token}\n\
         gw.yaml:1:35: log.redact_paths[1]: path \"reset/{t}\" must start with \"/\""
    );
}

#[test]
fn worker_counts_are_checked() {
    for value in ["0", "2000", "many", "2.5"] {
        assert_eq!(
            errors(&format!("{VALID_TAIL}workers: {value}\n")),
            format!(
                "gw.yaml:3:10: workers: \"{value}\" is not a worker count: write auto (one per CPU) or a whole number from 1 to 1024"
            )
        );
    }
}
