//! Callers identified by API keys through the real proxy: 401 versus 403, the challenge
//! headers, role inheritance, and the identity headers the upstream gets (and that a
//! client can never set).

use http::StatusCode;
use http_body_util::BodyExt;

use crate::support::*;

const IDENTITY: &str = "\
identity:
  api_keys:
    header: X-Api-Key
    keys:
      - { id: ci-bot, sha256: f82da6e2b2e51c046a2eaf10964ef184b69c0aee9892f10a2a7b657477d407e6, roles: [deployer], scopes: [\"deploy:write\"] }
      - { id: ops, sha256: 32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f, roles: [admin], scopes: [\"deploy:read\"] }
";

const POLICY: &str = "\
roles:
  deployer: {}
  admin: { inherits: [deployer] }
rules:
  - id: public
    effect: allow
    match: { paths: [\"/public/**\"] }
  - id: deploys
    effect: allow
    match: { paths: [\"/deploys/**\"] }
    when: { roles: { any: [deployer] }, scopes: { all: [\"deploy:write\"] } }
  - id: whoami
    effect: allow
    match: { paths: [\"/whoami\"] }
    when: { authenticated: true }
";

async fn gateway() -> (TestUpstream, TestGateway) {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::with_policy(&config(&[up.url()], IDENTITY), POLICY).await;
    (up, gw)
}

async fn send(url: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, String) {
    let response = send_request(http::Method::GET, url, headers).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_valid_key_identifies_the_caller_to_the_upstream() {
    let (up, gw) = gateway().await;
    let (status, _, _) = send(
        &gw.url("/deploys/42"),
        &[
            ("x-api-key", "ci-secret"),
            ("x-auth-subject", "admin"),
            ("x-auth-roles", "admin"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = &up.seen()[0];
    assert_eq!(seen.one("x-auth-subject"), Some("ci-bot"));
    assert_eq!(seen.one("x-auth-roles"), Some("deployer"));
    assert_eq!(seen.one("x-auth-scopes"), Some("deploy:write"));
    assert_eq!(seen.one("x-api-key"), None, "the key is not forwarded");

    // An anonymous request to a public path: the client's identity headers are dropped.
    let (status, _, _) = send(
        &gw.url("/public/x"),
        &[
            ("x-auth-subject", "admin"),
            ("x-auth-scopes", "deploy:write"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = &up.seen()[1];
    assert_eq!(seen.one("x-auth-subject"), None);
    assert_eq!(seen.one("x-auth-scopes"), None);
}

#[tokio::test]
async fn no_credentials_is_a_401_with_a_challenge() {
    let (up, gw) = gateway().await;
    let (status, headers, body) = send(&gw.url("/deploys/42"), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers["www-authenticate"],
        "ApiKey realm=\"portcullis\", header=\"x-api-key\""
    );
    assert_eq!(headers["x-portcullis-reason"], "credentials_missing");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 401);
    assert_eq!(problem["title"], "Unauthorized");
    assert_eq!(problem["rule"], "deploys");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn a_wrong_key_is_a_401_that_never_echoes_it() {
    let (up, gw) = gateway().await;
    for path in ["/deploys/42", "/public/x"] {
        let (status, headers, body) =
            send(&gw.url(path), &[("x-api-key", "guessed-secret-value")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(headers["x-portcullis-reason"], "token_invalid");
        assert_eq!(
            headers["www-authenticate"],
            "ApiKey realm=\"portcullis\", header=\"x-api-key\", error=\"invalid_token\""
        );
        assert!(!body.contains("guessed-secret-value"), "{body}");
        assert!(body.contains("not recognised"), "{body}");
    }
    let (status, _, body) = send(
        &gw.url("/public/x"),
        &[("x-api-key", "ci-secret"), ("x-api-key", "ops-secret")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("more than one API key"), "{body}");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn an_identified_caller_lacking_a_scope_or_role_is_a_403() {
    let (_up, gw) = gateway().await;
    // ops is an admin, which inherits deployer, but holds only deploy:read.
    let (status, headers, body) =
        send(&gw.url("/deploys/42"), &[("x-api-key", "ops-secret")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-portcullis-reason"], "missing_scope");
    assert_eq!(
        headers["www-authenticate"],
        "ApiKey realm=\"portcullis\", header=\"x-api-key\", error=\"insufficient_scope\", scope=\"deploy:write\""
    );
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["detail"], "This request needs scope deploy:write.");

    let (status, _, _) = send(&gw.url("/whoami"), &[("x-api-key", "ops-secret")]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) = send(&gw.url("/whoami"), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["x-portcullis-reason"], "credentials_missing");
}

#[tokio::test]
async fn role_inheritance_and_missing_roles() {
    let up = TestUpstream::start("app").await;
    let policy = POLICY.replace(
        "when: { roles: { any: [deployer] }, scopes: { all: [\"deploy:write\"] } }",
        "when: { roles: { any: [deployer] }, scopes: { any: [\"deploy:write\", \"deploy:read\"] } }",
    );
    let gw = TestGateway::with_policy(&config(&[up.url()], IDENTITY), &policy).await;
    let (status, _, _) = send(&gw.url("/deploys/1"), &[("x-api-key", "ops-secret")]).await;
    assert_eq!(status, StatusCode::OK, "admin inherits deployer");

    let narrower = policy.replace(
        "roles: { any: [deployer] }",
        "roles: { all: [deployer, auditor] }",
    );
    let gw = TestGateway::with_policy(&config(&[up.url()], IDENTITY), &narrower).await;
    let (status, headers, body) = send(&gw.url("/deploys/1"), &[("x-api-key", "ops-secret")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-portcullis-reason"], "missing_role");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["detail"], "This request needs role auditor.");
}

#[tokio::test]
async fn rules_never_see_identity_headers_a_client_sent() {
    let up = TestUpstream::start("app").await;
    let policy = "rules:\n  - { id: by-header, effect: allow, when: { headers: { x-auth-roles: admin } } }\n";
    let gw = TestGateway::with_policy(&config(&[up.url()], IDENTITY), policy).await;
    let (status, headers, _) = send(&gw.url("/anything"), &[("x-auth-roles", "admin")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-portcullis-reason"], "no_matching_allow");
    assert!(up.seen().is_empty());
}

#[test]
fn key_configuration_mistakes_are_errors() {
    let scratch = Scratch::new();
    scratch.write(
        "p.yaml",
        "rules: [{ id: a, effect: allow, when: { authenticated: true } }]\n",
    );
    let with = |identity: &str| {
        let path = scratch.write(
            "gw.yaml",
            &format!("upstreams: {{ app: {{ targets: [builtin:echo] }} }}\nroutes: [{{ id: r, upstream: app }}]\npolicy: {{ files: [p.yaml] }}\n{identity}"),
        );
        match portcullis::config::load(&path) {
            Ok(_) => String::new(),
            Err(errors) => errors.to_string(),
        }
    };
    assert!(
        with("").contains("needs an identified caller, but identity configures no credentials")
    );
    let empty = with(
        "identity: { api_keys: { keys: [{ id: k, sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 }] } }\n",
    );
    assert!(empty.contains("is the SHA-256 of an empty key"), "{empty}");
    let bad_role = with(
        "identity: { api_keys: { keys: [{ id: k, sha256: f82da6e2b2e51c046a2eaf10964ef184b69c0aee9892f10a2a7b657477d407e6, roles: [\"a,b\"] }] } }\n",
    );
    assert!(
        bad_role.contains("keys[0].roles[0]: \"a,b\" is not a valid name"),
        "{bad_role}"
    );
    let jwt = with(
        "identity: { jwt: [{ id: corp, issuer: \"https://idp/\", audiences: [api], algorithms: [HS256, XY9, ES256], jwks_file: missing.json }] }\n",
    );
    assert!(
        jwt.contains("algorithms: HS256/384/512 need the shared secret"),
        "{jwt}"
    );
    assert!(
        jwt.contains("algorithms[1]: \"XY9\" is not an algorithm"),
        "{jwt}"
    );
    assert!(jwt.contains("jwks_file: cannot read"), "{jwt}");
}

/// Keys kept out of the config, in a directory laid out as kubelet mounts a Secret: the
/// file is a symlink through `..data`, which a rename swaps to a new version.
#[tokio::test]
async fn keys_from_a_key_file_identify_callers_and_reload_when_it_changes() {
    let up = TestUpstream::start("app").await;
    let scratch = Scratch::new();
    let secret = scratch.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    // Writes a version of the Secret holding `keys` and swaps it in as kubelet does.
    let publish = |version: &str, keys: &str| {
        std::fs::create_dir(secret.join(version)).unwrap();
        std::fs::write(secret.join(version).join("api-keys.yaml"), keys).unwrap();
        std::os::unix::fs::symlink(version, secret.join("..data_tmp")).unwrap();
        std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    };
    let key = |id: &str, sha256: &str| {
        format!(
            "keys:\n  - {{ id: {id}, sha256: {sha256}, roles: [deployer], scopes: [\"deploy:write\"] }}\n"
        )
    };
    // The digests of "ci-secret" and "rotated-secret".
    let ci = "f82da6e2b2e51c046a2eaf10964ef184b69c0aee9892f10a2a7b657477d407e6";
    let rotated = "a26fa50cba5c8fefa46af3f7d9fa9a00f01eea2bcf5e3db253aa7e6e39c4b388";
    publish("..2026_12_04_01", &key("ci-bot", ci));
    std::os::unix::fs::symlink("..data/api-keys.yaml", secret.join("api-keys.yaml")).unwrap();
    scratch.write("policy.yaml", POLICY);
    let path = scratch.write(
        "gw.yaml",
        &format!(
            "{}identity:\n  api_keys: {{ file: secret/api-keys.yaml }}\npolicy: {{ files: [policy.yaml], watch: true }}\n",
            config(&[up.url()], "")
        ),
    );
    let gw = TestGateway::from_file(&path, scratch).await;
    let deploy = |key: &'static str| {
        let url = gw.url("/deploys/42");
        async move { send(&url, &[("x-api-key", key)]).await.0 }
    };
    // Whether `key` is answered `status` within 5s.
    let eventually = |key: &'static str, status: StatusCode| async move {
        for _ in 0..100 {
            if deploy(key).await == status {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    };
    let hash = || async {
        let (_, body) = gw.admin(http::Method::GET, "/policy").await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["hash"].clone()
    };

    assert_eq!(deploy("ci-secret").await, StatusCode::OK);
    assert_eq!(up.seen()[0].one("x-auth-subject"), Some("ci-bot"));
    assert_eq!(deploy("rotated-secret").await, StatusCode::UNAUTHORIZED);
    let before = hash().await;

    publish("..2026_12_04_02", &key("ci-bot-2", rotated));
    assert!(
        eventually("rotated-secret", StatusCode::OK).await,
        "the new key works within 5s of the swap"
    );
    assert_eq!(deploy("ci-secret").await, StatusCode::UNAUTHORIZED);
    assert_ne!(
        hash().await,
        before,
        "/policy's hash names the new key file"
    );

    // An emptied file revokes every key (a failed reload would keep the old ones).
    publish("..2026_12_04_03", "keys: []\n");
    assert!(
        eventually("rotated-secret", StatusCode::UNAUTHORIZED).await,
        "an emptied key file revokes the key within 5s"
    );
}

#[test]
fn key_file_mistakes_are_placed_in_the_key_file() {
    let scratch = Scratch::new();
    scratch.write(
        "p.yaml",
        "rules: [{ id: a, effect: allow, when: { authenticated: true } }]\n",
    );
    let dir = scratch.path().display().to_string();
    let with = |keys_file: &str| {
        scratch.write("keys.yaml", keys_file);
        let path = scratch.write(
            "gw.yaml",
            "upstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: r, upstream: app }]\npolicy: { files: [p.yaml] }\nidentity:\n  api_keys:\n    keys: [{ id: ci-bot, sha256: f82da6e2b2e51c046a2eaf10964ef184b69c0aee9892f10a2a7b657477d407e6 }]\n    file: keys.yaml\n",
        );
        match portcullis::config::load(&path) {
            Ok(_) => String::new(),
            Err(errors) => errors.to_string(),
        }
    };
    assert_eq!(
        with(
            "keys:\n  - { id: other, sha256: 32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f }\n"
        ),
        ""
    );
    assert_eq!(
        with(
            "keys:\n  - { id: ci-bot, sha256: 32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f }\n  - { id: short, sha256: abc }\n"
        ),
        format!(
            "{dir}/keys.yaml:2:11: keys[0].id: duplicate key id \"ci-bot\"\n{dir}/keys.yaml:3:26: keys[1].sha256: \"abc\" is not a SHA-256 digest (64 hex digits); compute one with: printf %s \"$KEY\" | sha256sum"
        )
    );
    // Emptying the file revokes the keys it held: it loads, and alone it is a warning.
    assert_eq!(with("keys: []\n"), "");
    let alone = scratch.write(
        "alone.yaml",
        "upstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: r, upstream: app }]\npolicy: { files: [p.yaml] }\nidentity: { api_keys: { file: keys.yaml } }\n",
    );
    let warnings: Vec<String> = portcullis::config::load(&alone)
        .unwrap()
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        warnings,
        [format!(
            "{dir}/alone.yaml:4:31: identity.api_keys.file: the key file lists no keys: every API key is refused"
        )]
    );
    assert_eq!(
        with("keys:\n  - { id: x, sha265: abc }\n"),
        format!(
            "{dir}/keys.yaml:2:14: keys[0].sha265: unknown field `sha265`, expected one of id, sha256, roles, scopes\n  help: did you mean \"sha256\"?"
        )
    );
    std::fs::remove_file(scratch.path().join("keys.yaml")).unwrap();
    let path = scratch.path().join("gw.yaml");
    let missing = portcullis::config::load(&path).unwrap_err().to_string();
    assert!(
        missing.starts_with(&format!(
            "{dir}/gw.yaml:7:11: identity.api_keys.file: cannot read \"{dir}/keys.yaml\": "
        )),
        "{missing}"
    );
}

#[test]
fn a_role_nothing_grants_is_a_warning() {
    let scratch = Scratch::new();
    scratch.write(
        "p.yaml",
        "rules: [{ id: no-banned, effect: deny, when: { roles: { any: [baned] } } }, { id: ok, effect: allow, when: { roles: { any: [deployer] } } }]\n",
    );
    let path = scratch.write(
        "gw.yaml",
        &format!("upstreams: {{ app: {{ targets: [builtin:echo] }} }}\nroutes: [{{ id: r, upstream: app }}]\npolicy: {{ files: [p.yaml] }}\n{IDENTITY}"),
    );
    let config = portcullis::config::load(&path).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("rule \"no-banned\" names role \"baned\", which no policy file declares and no API key grants"),
        "{warnings:?}"
    );
}
