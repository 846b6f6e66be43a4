//! The command line: `run`, `validate`, `explain`, `test` and `schema`, and the flags
//! they share.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::proxy::offline::{self, Caller, Offline, Synthetic, Verdict};

/// Writes a line to stdout. A closed pipe (`portcullis schema | head`) is not an error
/// worth a panic: the reader has all it wanted.
macro_rules! out_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Writes to stdout without a newline; see [`out_line`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Writes a line to stderr, ignoring a closed stream.
macro_rules! err_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// The config file every command reads unless `-c` names another; with no command at
/// all, `portcullis` serves it (so `cargo run --release` serves the demo).
pub const DEFAULT_CONFIG: &str = "config/portcullis.yaml";

/// A reverse-proxy authorization gateway that explains every denial.
///
/// With no command, serves config/portcullis.yaml, as `portcullis run` does.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Least severe log level printed: error, warn, info, debug or trace.
    #[arg(long, default_value = "info", global = true)]
    pub log_level: tracing::level_filters::LevelFilter,
    /// What to do; with none, `run` with its defaults.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gateway until SIGTERM or SIGINT.
    Run {
        /// The config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a config file and its policies; print "ok" with a summary and any warnings,
    /// or every error.
    Validate {
        /// The config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Decide a synthetic request offline and print the decision with its trace.
    Explain {
        /// The config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request URL, such as http://app.example/admin/users (or just a path).
        #[arg(long)]
        url: String,
        /// The address the request comes from (the socket peer).
        #[arg(long, default_value = crate::config::cases::DEFAULT_CASE_IP)]
        ip: std::net::IpAddr,
        /// A request header, `Name: value`; repeat for several.
        #[arg(long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// Decide as this simulated caller instead of verifying credentials:
        /// `sub=alice,roles=editor,scopes=orders:read,claims.tenant=acme`.
        #[arg(long = "as", value_name = "CALLER", conflicts_with = "token")]
        principal: Option<String>,
        /// Decide as the caller this token stands for, verified with the configured
        /// issuers' keys.
        #[arg(long, value_name = "JWT")]
        token: Option<String>,
        /// The client certificate the connection shows (PEM), taken as verified.
        #[arg(long, value_name = "FILE", conflicts_with = "cert_as")]
        cert: Option<PathBuf>,
        /// The client certificate's facts instead of a file:
        /// `uri=spiffe://example.org/ns/a/sa/b,dns=a.example.org,subject=a,fingerprint=…`.
        #[arg(long, value_name = "FACTS")]
        cert_as: Option<String>,
        /// The client's country (ISO 3166-1 alpha-2, XX for unknown), instead of what the
        /// geo database says of --ip.
        #[arg(long, value_name = "CODE")]
        country: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running gateway whether it is ready (GET /readyz on its admin listener); exit
    /// 0 if it is, 1 if not or if it does not answer. For container health checks.
    Healthcheck {
        /// The admin listener's host:port; 0.0.0.0 (every interface) is asked on loopback.
        #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_ADMIN_ADDR)]
        admin: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s")]
        timeout: String,
    },
    /// Explain a decision the gateway made, from its request id (a response's
    /// X-Request-Id, or the id in a denial): asks the admin listener's recent decisions.
    Why {
        /// The request id.
        request_id: String,
        /// The admin listener's host:port; 0.0.0.0 (every interface) is asked on loopback.
        #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_ADMIN_ADDR)]
        admin: String,
        /// Print the decision-log line (JSON) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mint a signed token (for trying policies: the demo's key is in config/keys).
    Token(TokenArgs),
    /// Print the JSON Schema of a kind of file (or of a decision-log line), for editors
    /// and schema checkers.
    Schema {
        /// Which file.
        #[arg(value_enum, default_value_t = SchemaKind::Config)]
        kind: SchemaKind,
    },
    /// Decide the requests of decision-log lines again under a candidate config, and
    /// print what would change.
    Replay {
        /// The candidate config.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Decision-log files; none, or `-`, reads standard input.
        logs: Vec<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
        format: ReplayFormat,
        /// Exit 1 when a change of this kind is found (for CI gates), or when lines could
        /// not be decided again or read, or none was decided again.
        #[arg(long, value_enum, default_value_t = FailOn::Never)]
        fail_on: FailOn,
    },
    /// Run policy test cases; exit 1 if any fails.
    Test {
        /// The config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Case files.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
    },
}

/// The files `portcullis schema` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// The config file.
    Config,
    /// A policy file.
    Policy,
    /// A `portcullis test` case file.
    Cases,
    /// An API-key file (`identity.api_keys.file`).
    ApiKeys,
    /// A decision-log line (`log.decisions`, `GET /decisions`, `portcullis replay`).
    DecisionLog,
}

/// `portcullis replay --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    /// For a person.
    Text,
    /// One JSON document, for tools.
    Json,
}

/// `portcullis replay --fail-on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Exit 0 whatever changes.
    Never,
    /// Exit 1 when a request allowed before would be denied.
    AllowToDeny,
    /// Exit 1 when any decision would change.
    Any,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether process logs are coloured: only for a person at a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (no-color.org). Escape codes in a
/// file, a pipe or a log collector are noise that every reader has to strip.
pub fn log_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// How long `why` waits for the admin listener.
const WHY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Exit code for invalid config or usage.
pub const EXIT_INVALID: u8 = 2;

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or_else(|| Command::Run {
        config: PathBuf::from(DEFAULT_CONFIG),
    });
    match command {
        Command::Run { config } => {
            let Some(config) = load_or_report(&config) else {
                return Ok(ExitCode::from(EXIT_INVALID));
            };
            // The main thread's runtime runs signals, reloads, key fetches and the admin
            // listener; clients are served by the workers' runtimes (`app`).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)?;
            runtime.block_on(crate::app::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config } => {
            let Some(config) = load_or_report(&config) else {
                return Ok(ExitCode::from(EXIT_INVALID));
            };
            for warning in &config.warnings {
                err_line!("warning: {warning}");
            }
            // The gateway starts without its country database (country rules fail closed
            // until it loads), so this is a warning too; reading it warns on stderr.
            offline::geo(&config);
            out_line!("ok: {}", summary(&config));
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            config,
            method,
            url,
            ip,
            headers,
            principal,
            token,
            cert,
            cert_as,
            country,
            json,
        } => {
            let Some(config) = load_or_report(&config) else {
                return Ok(ExitCode::from(EXIT_INVALID));
            };
            let spec = match (cert, cert_as) {
                (Some(file), _) => Some(format!("file={}", file.display())),
                (None, facts) => facts,
            };
            let client_cert = match spec
                .as_deref()
                .map(|spec| config::cases::parse_client_cert(spec, Some(Path::new(""))))
            {
                None => None,
                Some(Ok(certificate)) => Some(certificate),
                Some(Err(problem)) => {
                    err_line!("--cert: {problem}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let mut pairs = Vec::new();
            for header in &headers {
                let Some((name, value)) = header.split_once(':') else {
                    err_line!("--header \"{header}\" must be written Name: value");
                    return Ok(ExitCode::from(EXIT_INVALID));
                };
                pairs.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            let caller = match (
                principal.as_deref().map(config::cases::parse_principal),
                token,
            ) {
                (Some(Err(problem)), _) => {
                    err_line!("--as: {problem}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
                (Some(Ok(principal)), _) => Caller::Simulated(principal),
                (None, Some(token)) => Caller::Token(token),
                (None, None) => Caller::FromRequest,
            };
            let country = match country.as_deref().map(crate::policy::Country::parse) {
                None => None,
                Some(Ok(country)) => Some(country),
                Some(Err(problem)) => {
                    err_line!("--country: {problem}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let identity = offline::identity(&config);
            let geo = match country {
                // A country given needs no database.
                Some(_) => std::sync::Arc::default(),
                None => offline::geo(&config),
            };
            let offline = offline::decide(
                &config,
                &identity,
                &geo,
                &Synthetic {
                    method: &method,
                    url: &url,
                    peer: ip,
                    headers: &pairs,
                    caller: &caller,
                    client_cert: client_cert.as_ref(),
                    country,
                },
            );
            if json {
                out_line!("{}", offline.to_json());
            } else {
                out!("{}", explain_text(&method, &url, &offline));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { admin, timeout } => {
            let timeout = match config::parse_duration(&timeout) {
                Ok(timeout) if timeout.is_zero() => {
                    err_line!("--timeout: must be longer than 0s");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
                Ok(timeout) => timeout,
                Err(problem) => {
                    err_line!("--timeout: {problem}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            match crate::admin_client::ready(&admin, timeout) {
                Ok(answer) => {
                    out_line!("{answer}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(problem) => {
                    err_line!("{problem}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Why {
            request_id,
            admin,
            json,
        } => match crate::admin_client::decision(&admin, &request_id, WHY_TIMEOUT) {
            Ok(line) => match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(_) if json => {
                    out_line!("{}", line.trim_end());
                    Ok(ExitCode::SUCCESS)
                }
                Ok(decision) => {
                    out!("{}", why_text(&decision));
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    err_line!(
                        "the admin listener at {admin} answered with a line that is not JSON: {err}"
                    );
                    Ok(ExitCode::FAILURE)
                }
            },
            Err(problem) => {
                err_line!("{problem}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Token(request) => {
            let minted = mint(&request);
            match minted {
                Ok(token) => {
                    out_line!("{token}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(problem) => {
                    err_line!("{problem}");
                    Ok(ExitCode::from(EXIT_INVALID))
                }
            }
        }
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::Config => config::schema(config::FileKind::Config),
                SchemaKind::Policy => config::schema(config::FileKind::Policy),
                SchemaKind::Cases => config::schema(config::FileKind::Cases),
                SchemaKind::ApiKeys => config::schema(config::FileKind::ApiKeys),
                SchemaKind::DecisionLog => crate::decision_log::schema(),
            };
            out_line!("{schema:#}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            config,
            logs,
            format,
            fail_on,
        } => {
            let Some(candidate) = load_or_report(&config) else {
                return Ok(ExitCode::from(EXIT_INVALID));
            };
            // Callers come from the log; only a certificate's is identified again.
            let identity = crate::identity::Identity::new(
                &candidate.identity,
                &crate::telemetry::Metrics::new(1),
                None,
            );
            let mut replay = crate::replay::Replay::new(&candidate, &identity);
            let stdin = PathBuf::from("-");
            let inputs = if logs.is_empty() {
                std::slice::from_ref(&stdin)
            } else {
                &logs[..]
            };
            for input in inputs {
                let read = if input == &stdin {
                    replay.read(std::io::stdin().lock(), "standard input")
                } else {
                    match std::fs::File::open(input) {
                        Ok(file) => replay.read(
                            std::io::BufReader::with_capacity(256 * 1024, file),
                            &input.display().to_string(),
                        ),
                        Err(err) => Err(format!("cannot read {}: {err}", input.display())),
                    }
                };
                if let Err(problem) = read {
                    err_line!("{problem}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            }
            let report = replay.finish();
            let name = config.display().to_string();
            match format {
                ReplayFormat::Text => out!("{}", crate::replay::text(&report, &name)),
                ReplayFormat::Json => out_line!("{:#}", crate::replay::json(&report, &name)),
            }
            use crate::replay::Change;
            let failed = match fail_on {
                FailOn::Never => false,
                FailOn::AllowToDeny => report.changed(Change::AllowToDeny) > 0,
                FailOn::Any => report.replayed > report.unchanged,
            };
            // A gate fails closed: what the replay could not judge might have changed.
            let doubt = (fail_on != FailOn::Never).then(|| report.doubt()).flatten();
            if let Some(doubt) = &doubt {
                err_line!("replay: failing: {doubt}");
            }
            let failed = failed || doubt.is_some();
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Test { config, cases } => {
            let Some(config) = load_or_report(&config) else {
                return Ok(ExitCode::from(EXIT_INVALID));
            };
            let mut all = Vec::new();
            for file in &cases {
                match config::cases::load(file) {
                    Ok(found) => all.extend(found),
                    Err(errors) => {
                        err_line!("{errors}");
                        return Ok(ExitCode::from(EXIT_INVALID));
                    }
                }
            }
            let (report, failed) = run_cases(&config, &all);
            out!("{report}");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// What `portcullis token` signs.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The PEM private key to sign with (Ed25519 for EdDSA, P-256 for ES256, RSA for
    /// RS256), or for HS256/384/512 the secret file, read as `secret: { file }` reads it.
    #[arg(long)]
    key: PathBuf,
    /// The signing algorithm.
    #[arg(long, default_value = "EdDSA")]
    algorithm: String,
    /// The key id (`kid`) the verifier's key set knows the key by.
    #[arg(long)]
    kid: Option<String>,
    /// `iss`.
    #[arg(long)]
    issuer: String,
    /// `aud`.
    #[arg(long)]
    audience: String,
    /// `sub`.
    #[arg(long, default_value = "demo-user")]
    sub: String,
    /// A role (repeat for several).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// A scope (repeat for several).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Another claim, `name=value` (repeat for several).
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// How long the token is valid, e.g. 1h.
    #[arg(long, default_value = "1h")]
    ttl: String,
}

/// Signs a token for trying policies.
fn mint(request: &TokenArgs) -> Result<String, String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let algorithm: Algorithm = request
        .algorithm
        .parse()
        .map_err(|_| format!("\"{}\" is not an algorithm", request.algorithm))?;
    let pem = std::fs::read(&request.key)
        .map_err(|err| format!("cannot read {}: {err}", request.key.display()))?;
    let key = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(&config::secret_bytes(pem.clone()))
        }
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .map_err(|err| {
        format!(
            "{} is not a PEM private key for {}: {err}",
            request.key.display(),
            request.algorithm
        )
    })?;
    let ttl = config::parse_duration(&request.ttl)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let mut claims = serde_json::json!({
        "iss": request.issuer,
        "aud": request.audience,
        "sub": request.sub,
        "iat": now,
        "exp": now + ttl.as_secs(),
    });
    if !request.roles.is_empty() {
        claims["roles"] = request.roles.clone().into();
    }
    if !request.scopes.is_empty() {
        claims["scope"] = request.scopes.join(" ").into();
    }
    for claim in &request.claims {
        let (name, value) = claim
            .split_once('=')
            .ok_or_else(|| format!("--claim \"{claim}\" must be name=value"))?;
        claims[name] = value.into();
    }
    let mut header = Header::new(algorithm);
    header.kid = request.kid.clone();
    jsonwebtoken::encode(&header, &claims, &key).map_err(|err| format!("signing failed: {err}"))
}

/// Runs `cases` against `config`: a line per case, the differences under each failure,
/// then a count. Returns the report and how many failed.
pub fn run_cases(config: &Config, cases: &[config::cases::Case]) -> (String, usize) {
    let mut report = String::new();
    let mut failed = 0;
    let identity = offline::identity(config);
    let geo = offline::geo(config);
    for case in cases {
        let request = &case.request;
        let caller = (request.principal.clone()).map_or(Caller::FromRequest, Caller::Simulated);
        let offline = offline::decide(
            config,
            &identity,
            &geo,
            &Synthetic {
                method: &request.method,
                url: &request.url,
                peer: request.ip,
                headers: &request.headers,
                caller: &caller,
                client_cert: request.client_cert.as_ref(),
                country: request.country,
            },
        );
        let differences = case.expect.differences(&offline.actual());
        if differences.is_empty() {
            report.push_str(&format!("ok    {}\n", case.name));
        } else {
            failed += 1;
            report.push_str(&format!("FAIL  {} ({})\n", case.name, case.origin));
            report.push_str(&format!(
                "      {} {} from {}\n",
                request.method, request.url, request.ip
            ));
            for difference in differences {
                report.push_str(&format!("      {difference}\n"));
            }
            report.push_str(&format!("      got: {}\n", got(&offline)));
        }
    }
    report.push_str(&format!(
        "{} passed, {failed} failed\n",
        cases.len() - failed
    ));
    (report, failed)
}

/// What a case got, whole: the decision, the reason, the rule and why, so that a failure
/// says what to change without a second command.
fn got(offline: &Offline) -> String {
    match &offline.verdict {
        Verdict::Decided(decision) => format!(
            "{} {} by {}: {}",
            decision.effect.as_str(),
            decision.reason.code(),
            (decision.rule.as_ref()).map_or("no rule".to_owned(), |rule| format!("rule {rule}")),
            decision.reason
        ),
        Verdict::Refused { reason, detail, .. } => format!("refused {reason}: {detail}"),
    }
}

/// The human form of `portcullis explain`.
fn explain_text(method: &str, url: &str, offline: &Offline) -> String {
    let mut text = format!("request:  {method} {url} from {}\n", offline.client_ip);
    if let Some(route) = &offline.route {
        text.push_str(&format!("route:    {route}\n"));
    }
    if let Some(path) = &offline.path {
        text.push_str(&format!("path:     {path}\n"));
    }
    match &offline.verdict {
        Verdict::Refused {
            status,
            reason,
            detail,
        } => {
            text.push_str(&format!(
                "decision: refused before any rule: {status} {reason}\n"
            ));
            text.push_str(&format!("why:      {detail}\n"));
        }
        Verdict::Decided(decision) => {
            let status = if decision.is_allowed() {
                "forwarded".to_owned()
            } else {
                format!(
                    "{} {}",
                    crate::proxy::respond::denial_status(&decision.reason).as_u16(),
                    decision.reason.code()
                )
            };
            let rule = decision
                .rule
                .as_ref()
                .map_or_else(|| "no rule".to_owned(), |rule| format!("rule {rule}"));
            text.push_str(&format!(
                "decision: {} ({status}) by {rule}\n",
                decision.effect.as_str()
            ));
            text.push_str(&format!("why:      {}\n", decision.reason));
            if !decision.is_allowed() {
                text.push_str(&format!(
                    "client:   {}\n",
                    crate::proxy::respond::hint(&decision.reason)
                ));
            }
            if decision.trace.is_empty() {
                text.push_str("trace:    no rule fits this host and path\n");
            } else {
                text.push_str("trace:\n");
                for step in &decision.trace {
                    text.push_str(&trace_line(
                        step.rule.0,
                        step.effect.as_str(),
                        step.mode.as_str(),
                        &step.outcome.to_string(),
                    ));
                }
            }
        }
    }
    text
}

/// One rule of a trace, in columns.
fn trace_line(rule: &str, effect: &str, mode: &str, outcome: &str) -> String {
    format!("  {rule:<24} {effect:<5} {mode:<7} {outcome}\n")
}

/// The human form of `portcullis why`: a decision-log line, read as `explain` prints.
fn why_text(line: &serde_json::Value) -> String {
    let field = |key: &str| line[key].as_str().unwrap_or_default();
    let texts = |key: &str| -> Vec<&str> {
        (line[key].as_array().into_iter().flatten())
            .filter_map(serde_json::Value::as_str)
            .collect()
    };
    let mut text = format!(
        "request:  {} {}{} from {}",
        field("http.method"),
        field("url.domain"),
        line["url.path"].as_str().unwrap_or("(path not read)"),
        field("client.ip"),
    );
    if let Some(country) = line["client.geo.country_iso_code"].as_str() {
        text.push_str(&format!(" ({country})"));
    }
    text.push('\n');
    text.push_str(&format!(
        "id:       {} at {}\n",
        field("request.id"),
        field("timestamp")
    ));
    if let Some(route) = line["route.id"].as_str() {
        text.push_str(&format!("route:    {route}\n"));
    }
    match line["principal.id"].as_str() {
        Some(subject) => {
            let mut caller = format!("caller:   {subject} from {}", field("principal.issuer"));
            for (what, key) in [("roles", "principal.roles"), ("scopes", "principal.scopes")] {
                let items = texts(key);
                if !items.is_empty() {
                    caller.push_str(&format!("; {what} {}", items.join(", ")));
                }
            }
            text.push_str(&caller);
            text.push('\n');
        }
        None => text.push_str("caller:   anonymous\n"),
    }
    let reason = field("decision.reason");
    match field("decision") {
        "error" => {
            text.push_str(&format!("decision: refused before any rule: {reason}\n"));
        }
        effect => {
            let status = match effect {
                "allow" => "forwarded".to_owned(),
                _ if crate::policy::AUTHENTICATION_CODES.contains(&reason) => {
                    format!("401 {reason}")
                }
                _ => format!("403 {reason}"),
            };
            let rule = line["rule.id"]
                .as_str()
                .map_or_else(|| "no rule".to_owned(), |rule| format!("rule {rule}"));
            text.push_str(&format!("decision: {effect} ({status}) by {rule}\n"));
            text.push_str(&format!("why:      {}\n", field("decision.explanation")));
        }
    }
    let audit = texts("audit");
    if !audit.is_empty() {
        text.push_str(&format!("audit:    {}\n", audit.join(", ")));
    }
    let trace = line["trace"].as_array().map_or(&[][..], Vec::as_slice);
    if trace.is_empty() {
        if crate::policy::REFUSED_CREDENTIAL_CODES.contains(&reason) {
            text.push_str("trace:    none: the credentials were refused before any rule\n");
        } else if field("decision") != "error" {
            text.push_str("trace:    no rule fits this host and path\n");
        }
    } else {
        text.push_str("trace:\n");
        for step in trace {
            let step_field = |key: &str| step[key].as_str().unwrap_or_default();
            text.push_str(&trace_line(
                step_field("rule"),
                step_field("effect"),
                step_field("mode"),
                step_field("outcome"),
            ));
        }
    }
    text
}

/// Loads a config, printing every error to stderr when it is invalid.
fn load_or_report(path: &std::path::Path) -> Option<Config> {
    match config::load(path) {
        Ok(config) => Some(config),
        Err(errors) => {
            err_line!("{errors}");
            let count = errors.0.len();
            err_line!(
                "{}: {count} error{}; nothing was started",
                path.display(),
                if count == 1 { "" } else { "s" }
            );
            None
        }
    }
}

/// One line describing a valid config.
pub fn summary(config: &Config) -> String {
    let targets: usize = config.upstreams.iter().map(|u| u.targets.len()).sum();
    let listeners: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.addr.to_string())
        .collect();
    let rules = config.policy.rules().len();
    let files = config.policy_summary.files.len();
    let prefixes: usize = config.policy_summary.lists.iter().map(|(_, n)| n).sum();
    let lists = config.policy_summary.lists.len();
    format!(
        "{} listening on {}; {} route{}; {} upstream{} with {} target{}; {rules} rule{} in {files} policy file{}; {lists} list{} of {prefixes} network{}; admin on {}",
        config.file.display(),
        listeners.join(", "),
        config.routes.len(),
        plural(config.routes.len()),
        config.upstreams.len(),
        plural(config.upstreams.len()),
        targets,
        plural(targets),
        plural(rules),
        plural(files),
        plural(lists),
        plural(prefixes),
        config.admin.addr,
    )
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    #[test]
    fn logs_are_coloured_only_at_a_terminal_without_no_color() {
        use super::log_colour;
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some("".into())));
        assert!(!log_colour(true, Some("1".into())));
        assert!(!log_colour(false, None));
        assert!(!log_colour(false, Some("".into())));
    }
}
