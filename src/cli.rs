//! The command line: `run` and `validate`, and the flags they share.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};

/// A reverse-proxy authorization gateway that explains every denial.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Least severe log level printed: error, warn, info, debug or trace.
    #[arg(long, default_value = "info", global = true)]
    pub log_level: tracing::level_filters::LevelFilter,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gateway until SIGTERM or SIGINT.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "config/portcullis.yaml")]
        config: PathBuf,
    },
    /// Check a config file and print "ok" with a summary, or every error.
    Validate {
        /// The config file.
        #[arg(short, long, default_value = "config/portcullis.yaml")]
        config: PathBuf,
    },
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Exit code for invalid config or usage.
pub const EXIT_INVALID: u8 = 2;

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let Some(config) = load_or_report(&config) else {
                return Ok(ExitCode::from(EXIT_INVALID));
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
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
            println!("ok: {}", summary(&config));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads a config, printing every error to stderr when it is invalid.
fn load_or_report(path: &std::path::Path) -> Option<Config> {
    match config::load(path) {
        Ok(config) => Some(config),
        Err(errors) => {
            eprintln!("{errors}");
            let count = errors.0.len();
            eprintln!(
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
    format!(
        "{} listening on {}; {} route{}; {} upstream{} with {} target{}; admin on {}",
        config.file.display(),
        listeners.join(", "),
        config.routes.len(),
        plural(config.routes.len()),
        config.upstreams.len(),
        plural(config.upstreams.len()),
        targets,
        plural(targets),
        config.admin.addr,
    )
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}
