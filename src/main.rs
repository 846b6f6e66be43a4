//! The `portcullis` binary: parse the command line, set up logging, run the command,
//! print the error chain, pick the exit code. No logic of its own.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use portcullis::cli::{self, Cli, LogFormat};

/// A request allocates a few dozen small objects (header maps, bodies, futures) that die
/// with it; jemalloc's thread caches serve that pattern in fewer instructions per proxied
/// request than glibc's malloc, and its background threads give memory back after a
/// burst of connections (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let colour = cli::log_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // A closed stderr leaves nowhere to say more; the exit code still tells.
            let _ = writeln!(std::io::stderr().lock(), "error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
