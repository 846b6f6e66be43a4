//! Raw config → [`Config`]: values typed, references resolved, every error collected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::error::{ConfigError, ConfigErrors, did_you_mean};
use super::lint;
use super::model::{
    AdminSettings, BODILESS_METHODS, Config, HostPattern, Limits, ListenerSettings, RouteId,
    RouteSettings, Target, UpstreamName, UpstreamSettings,
};
use super::model::{
    ApiKeyEntry, ApiKeySettings, DenialSettings, Detail, ForwardHeaderNames, ForwardedHeader,
    IdentitySettings, JwtSettings, KeySource, RemoteKeys, Secret, TokenSource,
};
use super::model::{
    ClientCertIdentity, DecisionSink, GeoipSettings, ListenerTls, LogSettings, OnFull,
    ServedCertificate, UpstreamTls,
};
use super::policy::{self, PolicySummary};
use super::raw::{
    RawApiKey, RawApiKeyFile, RawClientCert, RawConfig, RawDenials, RawDetail, RawForwardedHeader,
    RawGeoip, RawIdentity, RawJwt, RawLimits, RawListenTls, RawLog, RawOnFull, RawRoute, RawSecret,
    RawUpstream, RawUpstreamTls,
};
use super::source::{Source, key_segment};
use super::units::{format_size, parse_duration, parse_size};
use crate::key_set::KeySet;
use crate::policy::Condition;
use crate::tls::{ClientCas, ClientCertMode, ServerCertificates};
use rustls::sign::CertifiedKey;

/// The longest duration any setting accepts, which keeps deadline arithmetic far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Collects errors while typing values, each placed by its YAML path.
pub(super) struct Builder {
    pub(super) source: Source,
    pub(super) errors: Vec<ConfigError>,
}

impl Builder {
    pub(super) fn error(&mut self, yaml_path: &str, message: impl Into<String>) {
        self.error_with_help(yaml_path, message, None);
    }

    pub(super) fn error_with_help(
        &mut self,
        yaml_path: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let position = self.source.locate(yaml_path);
        let error =
            ConfigError::at(self.source.path(), position, yaml_path, message).with_help(help);
        self.errors.push(error);
    }

    /// Runs `parse` on a value and records its error at `yaml_path`.
    pub(super) fn typed<T>(&mut self, yaml_path: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.error(yaml_path, message))
            .ok()
    }

    fn duration(&mut self, yaml_path: &str, text: &str) -> Option<Duration> {
        let duration = self.typed(yaml_path, parse_duration(text))?;
        if duration.is_zero() {
            self.error(yaml_path, "must be longer than 0s");
            return None;
        }
        if duration > MAX_DURATION {
            self.error(yaml_path, "must be at most 24h");
            return None;
        }
        Some(duration)
    }

    fn socket_addr(&mut self, yaml_path: &str, text: &str) -> Option<SocketAddr> {
        self.typed(
            yaml_path,
            text.parse::<SocketAddr>().map_err(|_| {
                format!("\"{text}\" is not an address with a port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"")
            }),
        )
    }
}

/// Types and cross-checks a parsed file.
pub fn build(path: &Path, text: &str, raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut builder = Builder {
        source: Source::new(path, text),
        errors: Vec::new(),
    };

    let base_dir = path.parent().unwrap_or(Path::new(""));
    let mut listeners = Vec::new();
    let mut tls_files = Vec::new();
    if raw.listen.is_empty() {
        builder.error("listen", "at least one listen address is required");
    }
    for (index, listen) in raw.listen.iter().enumerate() {
        let yaml_path = format!("listen[{index}].addr");
        let tls = listen.tls.as_ref().map(|tls| {
            build_listener_tls(
                &mut builder,
                &format!("listen[{index}].tls"),
                tls,
                base_dir,
                &mut tls_files,
            )
        });
        let Some(addr) = builder.socket_addr(&yaml_path, &listen.addr) else {
            continue;
        };
        if addr.port() != 0 && listeners.iter().any(|l: &ListenerSettings| l.addr == addr) {
            builder.error(&yaml_path, format!("address {addr} is listed twice"));
        }
        // A listener whose TLS settings failed is left out: their errors stop the load.
        if let Some(None) = tls {
            continue;
        }
        listeners.push(ListenerSettings {
            addr,
            name: listen.addr.clone(),
            tls: tls.flatten(),
        });
    }

    let admin_addr = builder.socket_addr("admin.addr", &raw.admin.addr);
    if let Some(addr) = admin_addr
        && addr.port() != 0
        && listeners.iter().any(|l| l.addr == addr)
    {
        builder.error(
            "admin.addr",
            format!("address {addr} is also a listen address"),
        );
    }

    let mut admin_hosts = Vec::new();
    for (index, text) in raw.admin.allowed_hosts.iter().enumerate() {
        let yaml_path = format!("admin.allowed_hosts[{index}]");
        if let Some(pattern) = builder.typed(&yaml_path, parse_host_pattern(text)) {
            admin_hosts.push(pattern);
        }
    }

    let mut trusted_proxies = Vec::new();
    for (index, text) in raw.network.trusted_proxies.iter().enumerate() {
        let yaml_path = format!("network.trusted_proxies[{index}]");
        if let Some(net) = builder.typed(&yaml_path, parse_network(text)) {
            trusted_proxies.push(net);
        }
    }

    let geoip = (raw.network.geoip.as_ref())
        .and_then(|geoip| build_geoip(&mut builder, geoip, base_dir, &trusted_proxies));

    let mut upstreams = Vec::new();
    if raw.upstreams.is_empty() {
        builder.error("upstreams", "at least one upstream is required");
    }
    for (name, upstream) in &raw.upstreams {
        if let Some(settings) =
            build_upstream(&mut builder, name, upstream, base_dir, &mut tls_files)
        {
            upstreams.push(settings);
        }
    }

    let routes = build_routes(&mut builder, &raw.routes, &raw.upstreams, &upstreams);
    let limits = build_limits(&mut builder, &raw.limits);
    let shutdown_grace = builder.duration("shutdown.grace_period", &raw.shutdown.grace_period);
    let workers = build_workers(&mut builder, &raw.workers);
    let denials = build_denials(&mut builder, &raw.denials);
    let mut identity_files = Vec::new();
    let identity = build_identity(&mut builder, &raw.identity, base_dir, &mut identity_files);

    if let (Some(identity), Some(header)) =
        (&identity, geoip.as_ref().and_then(|g| g.header.as_ref()))
    {
        let forward = &identity.forward;
        let owned = [
            &forward.subject,
            &forward.roles,
            &forward.scopes,
            &forward.client_cert,
        ]
        .into_iter()
        .chain(identity.api_keys.as_ref().map(|keys| &keys.header));
        for name in owned {
            if name == header {
                builder.error(
                    "network.geoip.header",
                    format!("\"{header}\" is a header identity uses; name the header your proxy sets, such as CF-IPCountry"),
                );
            }
        }
    }
    let log = build_log(&mut builder, &raw.log, base_dir);
    let mut policy_files = Vec::new();
    for (index, pattern) in raw.policy.files.iter().enumerate() {
        let yaml_path = format!("policy.files[{index}]");
        if let Some(found) = builder.typed(&yaml_path, policy::expand(base_dir, pattern)) {
            for file in found {
                if !policy_files.contains(&file) {
                    policy_files.push(file);
                }
            }
        }
    }
    let (policy_set, policy_summary, mut policy_errors) = match policy::build(&policy_files) {
        Ok((set, summary)) => (Some(set), summary, Vec::new()),
        Err(errors) => (None, PolicySummary::default(), errors),
    };
    if let (Some(set), Some(identity)) = (&policy_set, &identity)
        && identity.api_keys.is_none()
        && identity.jwt.is_empty()
        && identity.client_certs.is_empty()
    {
        for (rule, origin) in set.rules().iter().zip(&policy_summary.rule_origins) {
            if rule
                .when
                .iter()
                .any(|condition| condition.is_about_identity())
            {
                policy_errors.push(origin.problem(format!(
                    "rule \"{}\" needs an identified caller, but identity configures no credentials (identity.api_keys, identity.jwt or identity.client_certs); every request would be anonymous",
                    rule.id
                )));
            }
        }
    }

    if let Some(set) = &policy_set
        && set.uses_countries()
        && raw.network.geoip.is_none()
    {
        for (rule, origin) in set.rules().iter().zip(&policy_summary.rule_origins) {
            let names_countries = rule.when.iter().any(|condition| {
                matches!(
                    condition,
                    Condition::Countries(_) | Condition::NotCountries(_)
                )
            });
            if names_countries {
                policy_errors.push(origin.problem(format!(
                    "rule \"{}\" names countries, but the config names no country source; add network.geoip.database (a .mmdb country database) or network.geoip.header",
                    rule.id
                )));
            }
        }
    }

    match (admin_addr, limits, shutdown_grace, policy_set, identity) {
        (
            Some(admin_addr),
            Some(limits),
            Some(shutdown_grace),
            Some(policy_set),
            Some(identity),
        ) if builder.errors.is_empty() && policy_errors.is_empty() => {
            let hash = {
                use sha2::{Digest, Sha256};
                let mut digest = Sha256::new();
                policy::digest_file(&mut digest, path, text);
                digest.update(policy_summary.digest);
                // The identity files (key file, key sets, secrets, CAs) and the TLS
                // files (certificates, keys) change what is serving as much as a policy
                // edit does. Only 8 bytes of the digest show.
                for file in identity_files.iter().chain(&tls_files) {
                    let bytes = std::fs::read(file).unwrap_or_default();
                    policy::digest_file(&mut digest, file, bytes);
                }
                let digest: [u8; 32] = digest.finalize().into();
                digest[..8]
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect()
            };
            let mut config = Config {
                hash,
                policy_patterns: raw.policy.files.clone(),
                identity_files,
                tls_files,
                watch: raw.policy.watch,
                file: path.to_owned(),
                listeners,
                admin: AdminSettings {
                    addr: admin_addr,
                    allowed_hosts: admin_hosts,
                },
                trusted_proxies,
                keep_override_headers: raw.network.keep_override_headers,
                geoip,
                forwarded_header: match raw.network.forwarded_header {
                    RawForwardedHeader::XForwardedFor => ForwardedHeader::XForwardedFor,
                    RawForwardedHeader::Forwarded => ForwardedHeader::Forwarded,
                },
                upstreams,
                routes,
                limits,
                shutdown_grace,
                workers,
                policy: Arc::new(policy_set),
                policy_summary,
                denials,
                identity,
                log,
                warnings: Vec::new(),
            };
            config.warnings = lint::warnings(&config, &builder.source);
            Ok(config)
        }
        _ => {
            let mut errors = builder.errors;
            // The config file's errors in file order; those of a file it names (an API-key
            // file) after them, as they were found.
            errors.sort_by_key(|error| match error.position {
                _ if error.file != path => (1, (0, 0)),
                Some(position) => (0, position),
                None => (0, (usize::MAX, 0)),
            });
            // Policy files' errors follow the config file's, in the order the files were read.
            errors.extend(policy_errors);
            Err(ConfigErrors(errors))
        }
    }
}

/// `network.geoip`: a database path, a header, or both. The database itself is read by
/// the gateway (`geoip`), which keeps serving without it (fail closed) when it cannot.
fn build_geoip(
    builder: &mut Builder,
    raw: &RawGeoip,
    base_dir: &Path,
    trusted_proxies: &[IpNet],
) -> Option<GeoipSettings> {
    if raw.database.is_none() && raw.header.is_none() {
        builder.error(
            "network.geoip",
            "name a country database (database: path/to/countries.mmdb), a header trusted proxies set (header: CF-IPCountry), or both",
        );
        return None;
    }
    let header = match &raw.header {
        None => None,
        Some(name) => Some(builder.typed(
            "network.geoip.header",
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("\"{name}\" is not a header name"))
                .and_then(|header| {
                    // The gateway reads these for something else, and would remove them
                    // from every request it does not believe.
                    const OWNED: [&str; 9] = [
                        "authorization",
                        "proxy-authorization",
                        "cookie",
                        "x-forwarded-for",
                        "forwarded",
                        "x-forwarded-proto",
                        "x-forwarded-host",
                        "x-real-ip",
                        "x-request-id",
                    ];
                    if is_message_control(&header) {
                        Err(format!(
                            "\"{name}\" frames, routes or controls the message, so it cannot carry a country"
                        ))
                    } else if OWNED.contains(&header.as_str()) {
                        Err(format!(
                            "\"{name}\" carries credentials or the client's address, so it cannot carry a country; name the header your proxy sets, such as CF-IPCountry"
                        ))
                    } else {
                        Ok(header)
                    }
                }),
        )?),
    };
    let database = match &raw.database {
        Some(file) if file.trim().is_empty() => {
            builder.error(
                "network.geoip.database",
                "name a .mmdb file, or remove the key",
            );
            return None;
        }
        Some(file) => Some(base_dir.join(file)),
        None => None,
    };
    let header_from = match &raw.header_from {
        None => trusted_proxies.to_vec(),
        Some(entries) => {
            let mut networks = Vec::new();
            for (index, text) in entries.iter().enumerate() {
                let yaml_path = format!("network.geoip.header_from[{index}]");
                networks.push(builder.typed(&yaml_path, parse_network(text))?);
            }
            if header.is_none() {
                builder.error(
                    "network.geoip.header_from",
                    "names the proxies that set the country header, but no header is named; add header",
                );
            }
            networks
        }
    };
    Some(GeoipSettings {
        database,
        header,
        header_from,
        keep_untrusted_header: raw.keep_untrusted_header,
    })
}

/// A listener's TLS settings, every file read and checked: certificates and their keys
/// (a pair each, valid now), the client CAs and CRLs, then the rustls setup.
fn build_listener_tls(
    builder: &mut Builder,
    base: &str,
    raw: &RawListenTls,
    base_dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Option<ListenerTls> {
    let errors_before = builder.errors.len();
    let mut served = Vec::new();
    let mut named = Vec::new();
    let mut default = None;
    match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => {
            if let Some((pair, facts)) = served_pair(builder, base, (cert, key), base_dir, files) {
                let hosts = facts.holder.dns_names.clone();
                named.extend(certificate_names(&hosts, &pair));
                served.push(ServedCertificate {
                    hosts: if hosts.is_empty() {
                        vec!["default".to_owned()]
                    } else {
                        hosts
                    },
                    not_after: facts.not_after,
                });
                default = Some(pair);
            }
        }
        (Some(_), None) => builder.error(
            &format!("{base}.cert"),
            "a certificate needs its private key: add key",
        ),
        (None, Some(_)) => builder.error(
            &format!("{base}.key"),
            "a private key needs its certificate: add cert",
        ),
        (None, None) if raw.certificates.is_empty() => builder.error(
            base,
            "TLS needs a certificate: cert and key, or certificates: [{ cert, key, hosts }]",
        ),
        (None, None) => {}
    }
    for (index, certificate) in raw.certificates.iter().enumerate() {
        let base = format!("{base}.certificates[{index}]");
        let Some((pair, facts)) = served_pair(
            builder,
            &base,
            (&certificate.cert, &certificate.key),
            base_dir,
            files,
        ) else {
            continue;
        };
        let hosts = match &certificate.hosts {
            Some(hosts) => hosts
                .iter()
                .enumerate()
                .filter_map(|(at, host)| {
                    let pattern =
                        builder.typed(&format!("{base}.hosts[{at}]"), parse_host_pattern(host))?;
                    Some(pattern.to_string())
                })
                .collect(),
            None if facts.holder.dns_names.is_empty() => {
                builder.error(
                    &format!("{base}.cert"),
                    "the certificate names no DNS host: list the hosts it serves in hosts",
                );
                continue;
            }
            None => facts.holder.dns_names.clone(),
        };
        named.extend(certificate_names(&hosts, &pair));
        served.push(ServedCertificate {
            hosts,
            not_after: facts.not_after,
        });
        default.get_or_insert(pair);
    }

    let mode = match raw.client_cert {
        Some(RawClientCert::None) => ClientCertMode::None,
        Some(RawClientCert::Optional) => ClientCertMode::Optional,
        Some(RawClientCert::Required) => ClientCertMode::Required,
        None if raw.client_ca.is_some() => ClientCertMode::Optional,
        None => ClientCertMode::None,
    };
    let client_cas = match &raw.client_ca {
        Some(_) if mode == ClientCertMode::None => {
            builder.error(
                &format!("{base}.client_ca"),
                "client_ca is unused with client_cert: none; remove it, or ask clients for certificates with client_cert: optional or required",
            );
            None
        }
        Some(file) => {
            let path = base_dir.join(file);
            files.push(path.clone());
            let roots = builder.typed(
                &format!("{base}.client_ca"),
                crate::tls::read_certificates(&path),
            )?;
            let mut crls = Vec::new();
            for (index, file) in raw.crls.iter().enumerate() {
                let path = base_dir.join(file);
                files.push(path.clone());
                crls.extend(
                    builder
                        .typed(
                            &format!("{base}.crls[{index}]"),
                            crate::tls::read_crls(&path),
                        )
                        .unwrap_or_default(),
                );
            }
            Some(ClientCas { roots, crls })
        }
        None => {
            if mode != ClientCertMode::None {
                builder.error(
                    &format!("{base}.client_cert"),
                    "asking clients for certificates needs client_ca, the CAs that issue them",
                );
            }
            if !raw.crls.is_empty() {
                builder.error(
                    &format!("{base}.crls"),
                    "CRLs are checked against client certificates: they need client_ca",
                );
            }
            None
        }
    };
    let default = default?;
    if builder.errors.len() > errors_before {
        return None;
    }
    let server = builder.typed(
        base,
        crate::tls::server_config(
            ServerCertificates::new(default, named),
            mode,
            client_cas.as_ref(),
        ),
    )?;
    Some(ListenerTls {
        server,
        certificates: served,
        client_cert: mode,
    })
}

/// A certificate and its key, read from `base.cert` and `base.key`: a pair, valid now.
fn served_pair(
    builder: &mut Builder,
    base: &str,
    (cert, key): (&String, &String),
    base_dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Option<(Arc<CertifiedKey>, crate::tls::CertificateFacts)> {
    let cert_path = base_dir.join(cert);
    let key_path = base_dir.join(key);
    files.push(cert_path.clone());
    files.push(key_path.clone());
    let cert_yaml = format!("{base}.cert");
    let key_yaml = format!("{base}.key");
    let chain = builder.typed(&cert_yaml, crate::tls::read_certificates(&cert_path));
    let private_key = builder.typed(&key_yaml, crate::tls::read_private_key(&key_path));
    let chain = chain?;
    let leaf = chain.first()?;
    let facts = builder.typed(
        &cert_yaml,
        crate::tls::certificate_facts(leaf)
            .map_err(|err| format!("\"{}\": {err}", cert_path.display())),
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
    if now > facts.not_after {
        builder.error(
            &cert_yaml,
            format!(
                "\"{}\" expired on {}: renew it, or point cert at the renewed file",
                cert_path.display(),
                facts.valid_until
            ),
        );
        return None;
    }
    if now < facts.not_before {
        builder.error(
            &cert_yaml,
            format!(
                "\"{}\" is not valid before {}: check this machine's clock, or the certificate's dates",
                cert_path.display(),
                facts.valid_from
            ),
        );
        return None;
    }
    let pair = builder.typed(
        &key_yaml,
        crate::tls::certified_key(chain, private_key?).map_err(|err| {
            format!(
                "\"{}\" and \"{}\": {err}",
                key_path.display(),
                cert_path.display()
            )
        }),
    )?;
    Some((pair, facts))
}

/// The names a certificate is picked by, as patterns: `*.example.com` for any host under
/// example.com, the others exactly.
fn certificate_names(
    hosts: &[String],
    pair: &Arc<CertifiedKey>,
) -> Vec<(HostPattern, Arc<CertifiedKey>)> {
    hosts
        .iter()
        .filter_map(|host| parse_host_pattern(host).ok())
        .map(|pattern| (pattern, Arc::clone(pair)))
        .collect()
}

/// The most workers a config may ask for: beyond the cores of any host, threads only
/// contend.
const MAX_WORKERS: usize = 1024;

fn build_workers(builder: &mut Builder, raw: &str) -> Option<usize> {
    if raw == "auto" {
        return None;
    }
    builder.typed(
        "workers",
        (raw.parse::<usize>().ok())
            .filter(|count| (1..=MAX_WORKERS).contains(count))
            .ok_or_else(|| {
                format!("\"{raw}\" is not a worker count: write auto (one per CPU) or a whole number from 1 to {MAX_WORKERS}")
            }),
    )
}

/// The most recent decisions `log.recent` may keep.
const MAX_RECENT: usize = 1_000_000;

fn build_log(builder: &mut Builder, raw: &RawLog, base_dir: &Path) -> LogSettings {
    let decisions = match raw.decisions.as_str() {
        "log" => DecisionSink::Log,
        "stdout" => DecisionSink::Stdout,
        "off" => DecisionSink::Off,
        "" => {
            builder.error("log.decisions", "write log, stdout, off or a file path");
            DecisionSink::Log
        }
        file => DecisionSink::File(base_dir.join(file)),
    };
    let sample_allows = raw.sample_allows;
    if !(0.0..=1.0).contains(&sample_allows) {
        builder.error(
            "log.sample_allows",
            format!("{sample_allows} is not a share between 0 and 1 (0.1 logs one allowed request in ten)"),
        );
    }
    let mut redact_paths = Vec::new();
    for (index, text) in raw.redact_paths.iter().enumerate() {
        let yaml_path = format!("log.redact_paths[{index}]");
        let glob = crate::policy::PathGlob::parse(text).and_then(|glob| {
            if glob.capture_names().next().is_none() {
                Err(format!("path \"{text}\" captures no segment to leave out; write {{name}} where the secret is, as in /reset/{{token}}"))
            } else {
                Ok(glob)
            }
        });
        if let Some(glob) = builder.typed(&yaml_path, glob) {
            redact_paths.push(glob);
        }
    }
    let mut redact_headers = Vec::new();
    for (index, name) in raw.redact_headers.iter().enumerate() {
        let yaml_path = format!("log.redact_headers[{index}]");
        let typed = http::HeaderName::from_bytes(name.as_bytes())
            .map(|name| name.as_str().to_owned())
            .map_err(|_| format!("\"{name}\" is not a header name"));
        if let Some(name) = builder.typed(&yaml_path, typed) {
            redact_headers.push(name);
        }
    }
    let recent = usize::try_from(raw.recent)
        .ok()
        .filter(|recent| *recent <= MAX_RECENT)
        .unwrap_or_else(|| {
            builder.error(
                "log.recent",
                format!("{} is more recent decisions than the {MAX_RECENT} kept at most; 10000 (the default) is plenty for looking up a request id", raw.recent),
            );
            MAX_RECENT
        });
    LogSettings {
        decisions,
        on_full: match raw.on_full {
            RawOnFull::Drop => OnFull::Drop,
            RawOnFull::Block => OnFull::Block,
        },
        sample_allows: sample_allows.clamp(0.0, 1.0),
        redact_paths,
        redact_headers,
        recent,
    }
}

/// Types `identity`, adding to `files` every file it reads (key sets, secrets, CAs, the
/// API-key file), so that a change to one reloads.
fn build_identity(
    builder: &mut Builder,
    raw: &RawIdentity,
    base_dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Option<IdentitySettings> {
    for raw_jwt in &raw.jwt {
        let named = [
            raw_jwt.jwks_file.as_ref(),
            raw_jwt.jwks_ca.as_ref(),
            raw_jwt
                .secret
                .as_ref()
                .and_then(|secret| secret.file.as_ref()),
        ];
        files.extend(named.into_iter().flatten().map(|file| base_dir.join(file)));
    }
    let mut jwt = Vec::new();
    let mut jwt_ok = true;
    for (index, raw_jwt) in raw.jwt.iter().enumerate() {
        let earlier = &raw.jwt[..index];
        if earlier.iter().any(|other| other.issuer == raw_jwt.issuer) {
            builder.error(
                &format!("identity.jwt[{index}].issuer"),
                format!(
                    "issuer \"{}\" is configured twice; a token's iss picks one entry",
                    raw_jwt.issuer
                ),
            );
        }
        if earlier.iter().any(|other| other.id == raw_jwt.id) {
            builder.error(
                &format!("identity.jwt[{index}].id"),
                format!("duplicate issuer id \"{}\"", raw_jwt.id),
            );
        }
        match build_jwt(
            builder,
            &format!("identity.jwt[{index}]"),
            raw_jwt,
            base_dir,
        ) {
            Some(settings) => jwt.push(settings),
            None => jwt_ok = false,
        }
    }
    let header = |builder: &mut Builder, yaml_path: &str, name: &str| {
        builder.typed(
            yaml_path,
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("\"{name}\" is not a header name"))
                .and_then(|header| {
                    if is_message_control(&header) {
                        Err(format!(
                            "\"{name}\" frames, routes or controls the message, so it cannot carry identity; use a name of your own (the defaults are X-Auth-Subject, X-Auth-Roles and X-Auth-Scopes)"
                        ))
                    } else {
                        // Set on every request with a caller, by every worker: a name
                        // of its own would be a reference count they all share. (A name
                        // `from_bytes` took is a valid lower-case one, as `from_static`
                        // requires.)
                        Ok(http::HeaderName::from_static(crate::policy::interned(
                            header.as_str(),
                        )))
                    }
                }),
        )
    };
    let forward = &raw.forward_headers;
    let subject = header(
        builder,
        "identity.forward_headers.subject",
        &forward.subject,
    );
    let roles = header(builder, "identity.forward_headers.roles", &forward.roles);
    let scopes = header(builder, "identity.forward_headers.scopes", &forward.scopes);
    let client_cert = header(
        builder,
        "identity.forward_headers.client_cert",
        &forward.client_cert,
    );
    let client_certs = (raw.client_certs.iter().enumerate())
        .map(|(index, entry)| {
            let base = format!("identity.client_certs[{index}]");
            ClientCertIdentity {
                matches: policy::mtls_condition(builder, &format!("{base}.match"), &entry.matches),
                subject: entry.subject.clone(),
                roles: entry.roles.clone(),
                scopes: entry.scopes.clone(),
            }
        })
        .collect();

    let api_keys = match &raw.api_keys {
        None => None,
        Some(raw_keys) => {
            let key_header = header(builder, "identity.api_keys.header", &raw_keys.header);
            let mut keys: Vec<ApiKeyEntry> = Vec::new();
            add_api_keys(builder, "identity.api_keys.keys", &raw_keys.keys, &mut keys);
            if let Some(file) = &raw_keys.file {
                let path = base_dir.join(file);
                files.push(path.clone());
                add_api_key_file(builder, &path, &mut keys);
            }
            if raw_keys.keys.is_empty() && raw_keys.file.is_none() {
                builder.error(
                    "identity.api_keys.keys",
                    "list at least one key, or remove api_keys",
                );
            }
            Some(key_header.map(|header| ApiKeySettings { header, keys }))
        }
    };
    let api_keys = match api_keys {
        None => None,
        Some(Some(settings)) => Some(settings),
        Some(None) => return None,
    };
    if !jwt_ok {
        return None;
    }
    Some(IdentitySettings {
        api_keys,
        jwt,
        strip_authorization: raw.strip_authorization,
        forward: ForwardHeaderNames {
            subject: subject?,
            roles: roles?,
            scopes: scopes?,
            client_cert: client_cert?,
        },
        client_certs,
    })
}

/// Types the API keys written at `base` (`identity.api_keys.keys`, or `keys` in a key
/// file) and adds them to `keys`, refusing an id or a key that `keys` already holds.
fn add_api_keys(builder: &mut Builder, base: &str, raw: &[RawApiKey], keys: &mut Vec<ApiKeyEntry>) {
    for (index, raw_key) in raw.iter().enumerate() {
        let base = format!("{base}[{index}]");
        builder.typed(&format!("{base}.id"), check_id("key id", &raw_key.id));
        if keys.iter().any(|key| key.id == raw_key.id) {
            builder.error(
                &format!("{base}.id"),
                format!("duplicate key id \"{}\"", raw_key.id),
            );
        }
        let Some(sha256) = builder.typed(&format!("{base}.sha256"), parse_sha256(&raw_key.sha256))
        else {
            continue;
        };
        if let Some(other) = keys.iter().find(|key| key.sha256 == sha256) {
            builder.error(
                &format!("{base}.sha256"),
                format!("the same key as \"{}\"; each key must be unique", other.id),
            );
        }
        for (field, values, comma) in [
            ("roles", &raw_key.roles, false),
            ("scopes", &raw_key.scopes, true),
        ] {
            for (at, value) in values.iter().enumerate() {
                builder.typed(&format!("{base}.{field}[{at}]"), check_token(value, comma));
            }
        }
        keys.push(ApiKeyEntry {
            id: raw_key.id.clone(),
            sha256,
            roles: raw_key.roles.clone(),
            scopes: raw_key.scopes.clone(),
        });
    }
}

/// Reads the keys of `identity.api_keys.file` into `keys`. Its problems are placed in
/// that file, and go with the config's own errors. An empty list is no error: emptying
/// the file is how every key is revoked at once (lint warns).
fn add_api_key_file(builder: &mut Builder, path: &Path, keys: &mut Vec<ApiKeyEntry>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            builder.error(
                "identity.api_keys.file",
                format!("cannot read \"{}\": {err}", path.display()),
            );
            return;
        }
    };
    let raw: RawApiKeyFile = match super::raw::parse_as(path, &text) {
        Ok(raw) => raw,
        Err(errors) => {
            builder.errors.extend(errors.0);
            return;
        }
    };
    let mut file = Builder {
        source: Source::new(path, &text),
        errors: Vec::new(),
    };
    add_api_keys(&mut file, "keys", &raw.keys, keys);
    builder.errors.extend(file.errors);
}

fn build_jwt(
    builder: &mut Builder,
    base: &str,
    raw: &RawJwt,
    base_dir: &Path,
) -> Option<JwtSettings> {
    let errors_before = builder.errors.len();
    builder.typed(&format!("{base}.id"), check_id("issuer id", &raw.id));
    if raw.issuer.is_empty() {
        builder.error(
            &format!("{base}.issuer"),
            "must name the issuer, exactly as tokens carry it in iss",
        );
    }
    if raw.audiences.is_empty() {
        builder.error(&format!("{base}.audiences"), "list at least one audience");
    }
    let mut algorithms = Vec::new();
    if raw.algorithms.is_empty() {
        builder.error(
            &format!("{base}.algorithms"),
            "list the algorithms this issuer signs with, e.g. [RS256]",
        );
    }
    for (index, name) in raw.algorithms.iter().enumerate() {
        let yaml_path = format!("{base}.algorithms[{index}]");
        match name.parse::<jsonwebtoken::Algorithm>() {
            Ok(algorithm) => algorithms.push(algorithm),
            Err(_) => builder.error(&yaml_path, format!("\"{name}\" is not an algorithm: RS256/384/512, PS256/384/512, ES256/384, EdDSA or HS256/384/512")),
        }
    }
    let hmac = algorithms
        .iter()
        .filter_map(|algorithm| hmac_key_bytes(*algorithm))
        .max();
    let asymmetric = algorithms
        .iter()
        .any(|algorithm| hmac_key_bytes(*algorithm).is_none());
    let secret = match (&raw.secret, hmac) {
        (None, Some(_)) => {
            builder.error(
                &format!("{base}.algorithms"),
                "HS256/384/512 need the shared secret: add secret: { file: PATH } or { env: NAME }",
            );
            None
        }
        (Some(_), None) => {
            builder.error(
                &format!("{base}.secret"),
                "a secret is used only for HS256/384/512, and algorithms lists none of them",
            );
            None
        }
        (Some(secret), Some(least)) => builder.typed(
            &format!("{base}.secret"),
            read_secret(secret, base_dir, least),
        ),
        (None, None) => None,
    };
    let keys = build_key_source(builder, base, raw, base_dir, asymmetric);
    let mut sources = Vec::new();
    for (index, source) in raw.from.iter().enumerate() {
        let yaml_path = format!("{base}.from[{index}]");
        let parsed = match (&source.header, &source.cookie, &source.query) {
            (Some(header), None, None) => http::HeaderName::from_bytes(header.as_bytes())
                .map(|name| TokenSource::Header { name, prefix: source.prefix.clone().unwrap_or_default() })
                .map_err(|_| format!("\"{header}\" is not a header name")),
            (None, Some(cookie), None) if source.prefix.is_none() => Ok(TokenSource::Cookie(cookie.clone())),
            (None, None, Some(query)) if source.prefix.is_none() => Ok(TokenSource::Query(query.clone())),
            _ => Err("write one of { header: NAME, prefix: \"Bearer \" }, { cookie: NAME } or { query: NAME }".to_owned()),
        };
        if let Some(source) = builder.typed(&yaml_path, parsed) {
            sources.push(source);
        }
    }
    let leeway = builder.typed(
        &format!("{base}.leeway"),
        parse_duration(&raw.leeway).and_then(|leeway| {
            // A long leeway quietly turns off expiry.
            if leeway > Duration::from_secs(300) {
                Err("must be at most 5m: clock skew, not a grace period".to_owned())
            } else {
                Ok(leeway)
            }
        }),
    );
    if builder.errors.len() > errors_before {
        return None;
    }
    Some(JwtSettings {
        id: raw.id.clone(),
        issuer: raw.issuer.clone(),
        audiences: raw.audiences.clone(),
        keys: keys?,
        secret,
        algorithms,
        sources,
        scopes_claim: raw.scopes_claim.clone(),
        roles_claim: raw.roles_claim.clone(),
        leeway: leeway?,
    })
}

/// For an HMAC algorithm, the least secret length RFC 7518 §3.2 allows (the hash's size).
fn hmac_key_bytes(algorithm: jsonwebtoken::Algorithm) -> Option<usize> {
    use jsonwebtoken::Algorithm::{HS256, HS384, HS512};
    match algorithm {
        HS256 => Some(32),
        HS384 => Some(48),
        HS512 => Some(64),
        _ => None,
    }
}

/// A shared secret as read from a file or the environment: without its trailing line
/// breaks, which a secret written with `echo` or kept in a Kubernetes Secret often ends in
/// and its issuer never signed with.
pub fn secret_bytes(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes
        .last()
        .is_some_and(|byte| matches!(byte, b'\n' | b'\r'))
    {
        bytes.pop();
    }
    bytes
}

fn read_secret(raw: &RawSecret, base_dir: &Path, least: usize) -> Result<Secret, String> {
    let bytes = match (&raw.file, &raw.env) {
        (Some(file), None) => {
            let path = base_dir.join(file);
            std::fs::read(&path)
                .map_err(|err| format!("cannot read \"{}\": {err}", path.display()))?
        }
        (None, Some(name)) => std::env::var_os(name)
            .ok_or_else(|| format!("the environment variable {name} is not set"))?
            .into_encoded_bytes(),
        _ => return Err("write one of { file: PATH } or { env: NAME }".to_owned()),
    };
    let bytes = secret_bytes(bytes);
    if bytes.len() < least {
        return Err(format!(
            "the secret is {} bytes; the algorithms listed need at least {least} (RFC 7518 §3.2)",
            bytes.len()
        ));
    }
    Ok(Secret(bytes.into()))
}

/// `jwks_file` or `jwks_url` (exactly one when asymmetric algorithms are listed), and the
/// settings of a URL.
fn build_key_source(
    builder: &mut Builder,
    base: &str,
    raw: &RawJwt,
    base_dir: &Path,
    asymmetric: bool,
) -> Option<KeySource> {
    let https = raw
        .jwks_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"));
    if raw.jwks_ca.is_some() && !https {
        builder.error(
            &format!("{base}.jwks_ca"),
            "jwks_ca is for an https jwks_url; this issuer has none",
        );
    }
    if raw.jwks_url.is_none() {
        for (key, value) in [
            ("jwks_refresh", &raw.jwks_refresh),
            ("jwks_min_refresh", &raw.jwks_min_refresh),
        ] {
            if value.is_some() {
                builder.error(
                    &format!("{base}.{key}"),
                    format!("{key} is for a jwks_url; this issuer has none"),
                );
            }
        }
    }
    match (&raw.jwks_file, &raw.jwks_url) {
        (Some(_), Some(_)) => {
            builder.error(
                &format!("{base}.jwks_url"),
                "write jwks_file or jwks_url, not both",
            );
            None
        }
        (None, None) if asymmetric => {
            builder.error(&format!("{base}.algorithms"), "RS*, PS*, ES* and EdDSA need the issuer's public keys: add jwks_url (fetched and refreshed) or jwks_file");
            None
        }
        (None, None) => Some(KeySource::None),
        (Some(_), None) | (None, Some(_)) if !asymmetric => {
            let key = if raw.jwks_file.is_some() {
                "jwks_file"
            } else {
                "jwks_url"
            };
            builder.error(&format!("{base}.{key}"), "public keys are used only for RS*, PS*, ES* and EdDSA, and algorithms lists none of them");
            None
        }
        (Some(file), None) => {
            let file_path = base_dir.join(file);
            let parsed = std::fs::read_to_string(&file_path)
                .map_err(|err| format!("cannot read \"{}\": {err}", file_path.display()))
                .and_then(|text| {
                    KeySet::parse(&text)
                        .map_err(|err| format!("\"{}\": {err}", file_path.display()))
                });
            builder
                .typed(&format!("{base}.jwks_file"), parsed)
                .map(|keys| KeySource::File(Arc::new(keys)))
        }
        (None, Some(url)) => {
            let url = builder.typed(&format!("{base}.jwks_url"), parse_fetch_url(url));
            let ca = match &raw.jwks_ca {
                Some(file) if https => builder
                    .typed(
                        &format!("{base}.jwks_ca"),
                        crate::tls::read_certificates(&base_dir.join(file)),
                    )
                    .map(Some),
                _ => Some(None),
            };
            // Floors keep a typo from turning the gateway against the IdP.
            let mut interval = |key: &str, value: &Option<String>, default: &str, least: u64| {
                let yaml_path = format!("{base}.{key}");
                let duration = builder.duration(&yaml_path, value.as_deref().unwrap_or(default))?;
                if duration < Duration::from_secs(least) {
                    builder.error(&yaml_path, format!("must be at least {least}s"));
                    return None;
                }
                Some(duration)
            };
            let refresh = interval("jwks_refresh", &raw.jwks_refresh, "5m", 10);
            let min_refresh = interval("jwks_min_refresh", &raw.jwks_min_refresh, "30s", 1);
            if let (Some(refresh), Some(min_refresh)) = (refresh, min_refresh)
                && min_refresh > refresh
            {
                builder.error(
                    &format!("{base}.jwks_min_refresh"),
                    "must not be longer than jwks_refresh",
                );
            }
            Some(KeySource::Url(RemoteKeys {
                url: url?,
                ca: ca?,
                refresh: refresh?,
                min_refresh: min_refresh?,
            }))
        }
    }
}

/// An absolute `http` or `https` URL with a host.
fn parse_fetch_url(text: &str) -> Result<http::Uri, String> {
    let url: http::Uri = text
        .parse()
        .map_err(|err| format!("\"{text}\" is not a URL: {err}"))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("\"{text}\" must start with https:// (or http://)")),
    }
    if url.host().is_none_or(str::is_empty) {
        return Err(format!("\"{text}\" names no host"));
    }
    // Credentials in the URL would travel in logs and on /readyz.
    if url
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
    {
        return Err(format!(
            "\"{text}\" must not carry credentials (user:password@)"
        ));
    }
    Ok(url)
}

/// A role or scope name: the characters RFC 6750 allows in a scope token (no space, `"`
/// or `\`), and for roles no `,` either, since roles are forwarded comma-separated.
pub(super) fn check_token(text: &str, comma_allowed: bool) -> Result<(), String> {
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E) && (comma_allowed || b != b','));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"{text}\" is not a valid name: printable ASCII without spaces, quotes or backslashes{}",
            if comma_allowed {
                ""
            } else {
                " (and no commas)"
            }
        ))
    }
}

/// 64 hex digits → 32 bytes.
fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let wrong = || {
        format!(
            "\"{text}\" is not a SHA-256 digest (64 hex digits); compute one with: printf %s \"$KEY\" | sha256sum"
        )
    };
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(wrong());
    }
    // SECURITY: `printf %s "$KEY" | sha256sum` with KEY unset gives this digest, and an
    // empty header would then be a valid key.
    if text.eq_ignore_ascii_case("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    {
        return Err("is the SHA-256 of an empty key (was the variable unset?)".to_owned());
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2).ok_or_else(wrong)?, 16)
            .map_err(|_| wrong())?;
    }
    Ok(digest)
}

fn build_denials(builder: &mut Builder, raw: &RawDenials) -> DenialSettings {
    if let Some(url) = &raw.help_url
        && !(url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("mailto:"))
    {
        builder.error(
            "denials.help_url",
            "must be a link (https://…, http://… or mailto:…)",
        );
    }
    DenialSettings {
        detail: match raw.detail {
            RawDetail::Minimal => Detail::Minimal,
            RawDetail::Standard => Detail::Standard,
            RawDetail::Verbose => Detail::Verbose,
        },
        help_url: raw.help_url.clone(),
    }
}

fn build_upstream(
    builder: &mut Builder,
    name: &str,
    raw: &RawUpstream,
    base_dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Option<UpstreamSettings> {
    let base = format!("upstreams.{}", key_segment(name));
    let name_ok = builder
        .typed(&base, check_id("upstream name", name))
        .is_some();
    let mut targets = Vec::new();
    if raw.targets.is_empty() {
        builder.error(
            &format!("{base}.targets"),
            "at least one target is required",
        );
    }
    for (index, text) in raw.targets.iter().enumerate() {
        let yaml_path = format!("{base}.targets[{index}]");
        if let Some(target) = builder.typed(&yaml_path, parse_target(text)) {
            targets.push(target);
        }
    }
    let connect_timeout =
        builder.duration(&format!("{base}.connect_timeout"), &raw.connect_timeout);
    let timeout = builder.duration(&format!("{base}.timeout"), &raw.timeout);
    let failure_cooldown =
        builder.duration(&format!("{base}.failure_cooldown"), &raw.failure_cooldown);
    let keepalive_timeout =
        builder.duration(&format!("{base}.keepalive_timeout"), &raw.keepalive_timeout);
    let https = targets
        .iter()
        .any(|target| matches!(target, Target::Https(_)));
    let tls = match (&raw.tls, https) {
        (Some(_), false) if targets.len() == raw.targets.len() => {
            builder.error(
                &format!("{base}.tls"),
                "tls is for https targets, and this upstream has none; remove it, or use https:// targets",
            );
            None
        }
        (raw_tls, true) => {
            if raw_tls.as_ref().is_none_or(|tls| tls.server_name.is_none()) {
                for (index, target) in targets.iter().enumerate() {
                    if let Target::Https(authority) = target
                        && tls_name(authority.host()).is_err()
                    {
                        builder.error(
                            &format!("{base}.targets[{index}]"),
                            format!("\"{}\" cannot be named in a TLS handshake; set tls.server_name to the name its certificate has", authority.host()),
                        );
                    }
                }
            }
            Some(build_upstream_tls(
                builder,
                &format!("{base}.tls"),
                raw_tls.as_ref(),
                base_dir,
                files,
            ))
        }
        _ => None,
    };
    if !name_ok || targets.len() != raw.targets.len() {
        return None;
    }
    Some(UpstreamSettings {
        name: UpstreamName(Arc::from(name)),
        targets,
        connect_timeout: connect_timeout?,
        timeout: timeout?,
        failure_cooldown: failure_cooldown?,
        keepalive_timeout: keepalive_timeout?,
        tls: match tls {
            Some(tls) => Some(tls?),
            None => None,
        },
    })
}

/// `host` as a TLS handshake names it: a DNS name (sent as SNI) or an IP address.
pub(crate) fn tls_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| format!("\"{host}\" is not a DNS name or an IP address"))
}

/// The TLS setup for an upstream's https targets (`base` is `upstreams.NAME.tls`, which
/// may be absent: the system's CAs, no client certificate).
fn build_upstream_tls(
    builder: &mut Builder,
    base: &str,
    raw: Option<&RawUpstreamTls>,
    base_dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Option<UpstreamTls> {
    let errors_before = builder.errors.len();
    let default = RawUpstreamTls {
        ca: None,
        server_name: None,
        cert: None,
        key: None,
        insecure_skip_verify: false,
    };
    let raw = raw.unwrap_or(&default);
    let roots = raw.ca.as_ref().and_then(|file| {
        let path = base_dir.join(file);
        files.push(path.clone());
        builder.typed(&format!("{base}.ca"), crate::tls::read_certificates(&path))
    });
    let server_name = (raw.server_name.as_ref())
        .and_then(|name| builder.typed(&format!("{base}.server_name"), tls_name(name)));
    let client_auth = match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => {
            let cert_path = base_dir.join(cert);
            let key_path = base_dir.join(key);
            files.push(cert_path.clone());
            files.push(key_path.clone());
            let chain = builder.typed(
                &format!("{base}.cert"),
                crate::tls::read_certificates(&cert_path),
            );
            let private_key = builder.typed(
                &format!("{base}.key"),
                crate::tls::read_private_key(&key_path),
            );
            match (chain, private_key) {
                (Some(chain), Some(private_key)) => builder.typed(
                    &format!("{base}.key"),
                    crate::tls::certified_key(chain, private_key).map_err(|err| {
                        format!(
                            "\"{}\" and \"{}\": {err}",
                            key_path.display(),
                            cert_path.display()
                        )
                    }),
                ),
                _ => None,
            }
        }
        (Some(_), None) => {
            builder.error(
                &format!("{base}.cert"),
                "a certificate needs its private key: add key",
            );
            None
        }
        (None, Some(_)) => {
            builder.error(
                &format!("{base}.key"),
                "a private key needs its certificate: add cert",
            );
            None
        }
        (None, None) => None,
    };
    if raw.insecure_skip_verify && raw.ca.is_some() {
        builder.error(
            &format!("{base}.insecure_skip_verify"),
            "ca names the CAs to verify against, and insecure_skip_verify turns verification off; keep one",
        );
    }
    if builder.errors.len() > errors_before {
        return None;
    }
    let client = builder.typed(
        base,
        crate::tls::upstream_client_config(roots.as_deref(), client_auth, raw.insecure_skip_verify),
    )?;
    Some(UpstreamTls {
        client,
        server_name,
        insecure: raw.insecure_skip_verify,
    })
}

fn build_routes(
    builder: &mut Builder,
    raw_routes: &[RawRoute],
    raw_upstreams: &std::collections::BTreeMap<String, RawUpstream>,
    upstreams: &[UpstreamSettings],
) -> Vec<RouteSettings> {
    if raw_routes.is_empty() {
        builder.error("routes", "at least one route is required");
    }
    let mut first_line_of: HashMap<&str, Option<usize>> = HashMap::new();
    let mut routes = Vec::new();
    for (index, raw) in raw_routes.iter().enumerate() {
        let base = format!("routes[{index}]");
        let id_path = format!("{base}.id");
        let id_ok = builder
            .typed(&id_path, check_id("route id", &raw.id))
            .is_some();
        if let Some(first_line) = first_line_of.get(raw.id.as_str()) {
            let first = first_line
                .map(|line| format!(" (first defined on line {line})"))
                .unwrap_or_default();
            builder.error(
                &id_path,
                format!("duplicate route id \"{}\"{first}", raw.id),
            );
        } else {
            let line = builder.source.locate(&id_path).map(|(line, _)| line);
            first_line_of.insert(&raw.id, line);
        }

        let host = match &raw.host {
            None => Some(None),
            Some(text) => builder
                .typed(&format!("{base}.host"), parse_host_pattern(text))
                .map(Some),
        };

        let prefix_path = format!("{base}.path_prefix");
        let prefix_ok = builder
            .typed(&prefix_path, check_path_prefix(&raw.path_prefix))
            .is_some();

        let upstream = upstreams.iter().position(|u| *u.name.0 == *raw.upstream);
        if upstream.is_none() && !raw_upstreams.contains_key(&raw.upstream) {
            // An upstream that exists but failed to build has its own error already.
            let help = did_you_mean(&raw.upstream, raw_upstreams.keys().map(String::as_str));
            builder.error_with_help(
                &format!("{base}.upstream"),
                format!("unknown upstream \"{}\"", raw.upstream),
                help,
            );
        }

        let mut allow_body_on = Vec::new();
        for (at, method) in raw.allow_body_on.iter().enumerate() {
            match BODILESS_METHODS.iter().find(|known| known.as_str() == method) {
                Some(known) => allow_body_on.push(known.clone()),
                None => builder.error(
                    &format!("{base}.allow_body_on[{at}]"),
                    format!("\"{method}\" is not GET, HEAD, OPTIONS, DELETE or TRACE; other methods may always carry content"),
                ),
            }
        }

        let mut upgrades = Vec::new();
        for (at, protocol) in raw.upgrades.iter().enumerate() {
            let path = format!("{base}.upgrades[{at}]");
            if protocol.eq_ignore_ascii_case("h2c") {
                builder.error(
                    &path,
                    format!("\"{protocol}\" is never forwarded: the gateway serves HTTP/2 itself"),
                );
            } else if protocol.is_empty()
                || !protocol
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                builder.error(
                    &path,
                    format!("\"{protocol}\" is not a protocol name such as \"websocket\" (letters, digits, '-', '.', '_')"),
                );
            } else {
                upgrades.push(protocol.to_ascii_lowercase());
            }
        }

        if let (true, Some(host), true, Some(upstream)) = (id_ok, host, prefix_ok, upstream) {
            routes.push(RouteSettings {
                id: RouteId(Arc::from(raw.id.as_str())),
                host,
                // The path is lower-cased before it meets the prefix on such routes.
                path_prefix: if raw.case_insensitive {
                    raw.path_prefix.to_ascii_lowercase()
                } else {
                    raw.path_prefix.clone()
                },
                upstream,
                case_insensitive: raw.case_insensitive,
                allow_body_on,
                allow_encoded_percent: raw.allow_encoded_percent,
                upgrades,
            });
        }
    }
    routes
}

fn build_limits(builder: &mut Builder, raw: &RawLimits) -> Option<Limits> {
    let header_read_timeout =
        builder.duration("limits.header_read_timeout", &raw.header_read_timeout);
    let idle_timeout = builder.duration("limits.idle_timeout", &raw.idle_timeout);

    let max_header_size = builder.typed("limits.max_header_size", parse_size(&raw.max_header_size));
    let max_header_size = match max_header_size {
        Some(size) if !(1024..=(1 << 20)).contains(&size) => {
            builder.error("limits.max_header_size", "must be between 1KiB and 1MiB");
            None
        }
        other => other,
    };

    let max_body_size = match &raw.max_body_size {
        None => Some(None),
        Some(text) => builder
            .typed("limits.max_body_size", parse_size(text))
            .map(Some),
    };

    let max_connections = builder.typed(
        "limits.max_connections",
        raw.max_connections
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                format!(
                    "\"{}\" is not a whole number between 1 and 1000000",
                    raw.max_connections
                )
            }),
    );

    // Each unfinished head may hold up to four times max_header_size (and a read's 8KiB
    // more) while it is read; a budget for fewer than a few of the largest would cut
    // ordinary slow clients.
    let header_memory = builder.typed("limits.header_memory", parse_size(&raw.header_memory));
    let header_memory = match (header_memory, max_header_size) {
        (Some(memory), Some(largest)) if memory < (16 * largest).max(1 << 20) => {
            builder.error(
                "limits.header_memory",
                format!(
                    "must be at least {} (16 times limits.max_header_size, and 1MiB at least): each head being read may hold four times max_header_size",
                    format_size((16 * largest).max(1 << 20))
                ),
            );
            None
        }
        (memory, _) => memory.and_then(|memory| usize::try_from(memory).ok()),
    };

    Some(Limits {
        header_read_timeout: header_read_timeout?,
        max_header_size: usize::try_from(max_header_size?).ok()?,
        max_body_size: max_body_size?,
        idle_timeout: idle_timeout?,
        max_connections: max_connections?,
        header_memory: header_memory?,
    })
}

/// A route prefix is matched against canonical request paths, so it must be canonical
/// itself, or it could never match.
fn check_path_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("path prefix \"{prefix}\" must start with \"/\""));
    }
    match crate::path::canonical(prefix) {
        Ok(canonical) if canonical == prefix => Ok(()),
        Ok(canonical) => Err(format!(
            "path prefix \"{prefix}\" would never match: requests are matched in canonical form; write \"{canonical}\""
        )),
        Err(err) => Err(format!("path prefix \"{prefix}\": {err}")),
    }
}

/// Ids and names: a letter or digit, then letters, digits, `_`, `-` or `.`.
pub(super) fn check_id(what: &str, text: &str) -> Result<(), String> {
    let mut chars = text.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && text.len() <= 64
    {
        Ok(())
    } else {
        Err(format!(
            "{what} \"{text}\" must start with a letter or digit and use only letters, digits, '_', '-' and '.' (at most 64)"
        ))
    }
}

/// A CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`, meaning /32 or /128).
pub(super) fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "\"{text}\" has host bits set; did you mean \"{}\"?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| {
            format!("\"{text}\" is not an IP network, e.g. \"10.0.0.0/8\" or \"2001:db8::/32\"")
        })
}

/// `builtin:echo` or `http://host[:port]`.
fn parse_target(text: &str) -> Result<Target, String> {
    if text == "builtin:echo" {
        return Ok(Target::Echo);
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a target URL such as \"http://127.0.0.1:8081\""))?;
    let (https, default_port) = match uri.scheme_str() {
        Some("http") => (false, 80),
        Some("https") => (true, 443),
        _ => {
            return Err(format!(
                "\"{text}\" must start with http:// or https:// (or be builtin:echo)"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("\"{text}\" has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("\"{text}\" must not carry credentials"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!(
            "\"{text}\" must not have a path: routes forward the request path unchanged"
        ));
    }
    let authority = if authority.port().is_some() {
        authority.clone()
    } else {
        format!("{}:{default_port}", authority.host())
            .parse()
            .map_err(|_| format!("\"{text}\" has an invalid host"))?
    };
    Ok(if https {
        Target::Https(authority)
    } else {
        Target::Http(authority)
    })
}

/// `api.example.com` or `*.example.com`; lower-cased, no port.
pub(super) fn parse_host_pattern(text: &str) -> Result<HostPattern, String> {
    let lower = text.to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(format!(
            "\"{text}\" is not a host name; write \"api.example.com\" or \"*.example.com\", without a port"
        ));
    }
    Ok(if wildcard {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

/// Header fields the gateway writes or removes itself for framing, routing and the
/// connection: identity must not travel in them.
fn is_message_control(name: &http::HeaderName) -> bool {
    use http::header;
    [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::HOST,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ]
    .contains(name)
        || name == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("builtin:echo"), Ok(Target::Echo));
        assert_eq!(
            parse_target("http://127.0.0.1:8081"),
            Ok(Target::Http("127.0.0.1:8081".parse().unwrap()))
        );
        assert_eq!(
            parse_target("http://app.internal"),
            Ok(Target::Http("app.internal:80".parse().unwrap()))
        );
        assert_eq!(
            parse_target("https://a:1"),
            Ok(Target::Https("a:1".parse().unwrap()))
        );
        assert_eq!(
            parse_target("https://api.internal"),
            Ok(Target::Https("api.internal:443".parse().unwrap()))
        );
        assert!(
            parse_target("http://a:1/base")
                .unwrap_err()
                .contains("path")
        );
        assert!(parse_target("ftp://a").is_err());
        assert!(parse_target("http://u:p@a:1").is_err());
        assert!(parse_target("127.0.0.1:80").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host_pattern("API.example.com"),
            Ok(HostPattern::Exact("api.example.com".into()))
        );
        assert_eq!(
            parse_host_pattern("*.example.com"),
            Ok(HostPattern::Suffix(".example.com".into()))
        );
        assert!(parse_host_pattern("a.*.com").is_err());
        assert!(parse_host_pattern("a.com:80").is_err());
        assert!(parse_host_pattern("*").is_err());
    }

    #[test]
    fn networks() {
        assert_eq!(
            parse_network("10.0.0.0/8"),
            Ok("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_network("10.1.2.3"),
            Ok("10.1.2.3/32".parse().unwrap())
        );
        assert_eq!(parse_network("::1"), Ok("::1/128".parse().unwrap()));
        assert!(
            parse_network("10.0.0.1/8")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert!(parse_network("office").is_err());
    }

    #[test]
    fn path_prefixes() {
        assert!(check_path_prefix("/api/v2").is_ok());
        assert!(check_path_prefix("/").is_ok());
        assert!(check_path_prefix("/files/").is_ok());
        assert_eq!(
            check_path_prefix("/caf\u{e9}"),
            Err("path prefix \"/caf\u{e9}\" would never match: requests are matched in canonical form; write \"/caf%C3%A9\"".to_owned())
        );
        assert!(
            check_path_prefix("/a//b")
                .unwrap_err()
                .contains("write \"/a/b\"")
        );
        assert!(
            check_path_prefix("/a;b")
                .unwrap_err()
                .contains("write \"/a\"")
        );
        assert_eq!(
            check_path_prefix("/a%2fb"),
            Err("path prefix \"/a%2fb\": the path contains an encoded slash or backslash (%2F, %5C)".to_owned())
        );
        assert!(check_path_prefix("api").is_err());
    }

    #[test]
    fn ids() {
        assert!(check_id("route id", "api-v2.public").is_ok());
        assert!(check_id("route id", "-x").is_err());
        assert!(check_id("route id", "").is_err());
        assert!(check_id("route id", "a b").is_err());
    }
}
