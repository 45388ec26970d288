//! The `cairn` command line: parses arguments, opens the store, runs one
//! command, prints human tables (or JSON with `--json`) and maps errors to
//! exit codes. All real work happens in the library crates.

mod arenas;
mod args;
mod commands;
mod output;
mod progress;
mod span;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

/// Exit code for a command that failed.
const EXIT_ERROR: u8 = 1;

fn main() -> ExitCode {
    // Before any thread starts: see `arenas`.
    let arenas = arenas::limit();
    let cli = Cli::parse();
    cairn_store::index::set_cache_mib(cli.index_cache_mib as usize);
    // Log records name the command that made each commit.
    let mut command: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    if let Some(name) = command.first_mut() {
        *name = std::path::Path::new(name.as_str())
            .file_name()
            .map_or("cairn".into(), |n| n.to_string_lossy().into_owned());
    }
    cairn_store::log::set_command(command.join(" "));
    let asked = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG");
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match asked {
        // Diagnostics asked for: each line says when, from the start.
        Ok(filter) => logs.with_env_filter(filter).with_timer(tracing_subscriber::fmt::time::uptime()).init(),
        // The S3 SDK's providers warn about every source of a region or of
        // credentials that is not there (the EC2 metadata service on any
        // machine that is not on EC2: six lines before every `--remote`
        // command); what matters reaches the user as cairn's own error
        // (no credentials, no such bucket), with what to do.
        Err(_) => {
            logs.with_env_filter(tracing_subscriber::EnvFilter::new("warn,aws_config=error")).without_time().init()
        }
    }
    if let Some(arenas) = arenas {
        tracing::debug!(arenas, "malloc arenas limited");
    }
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // Errors name paths and keys, which can hold any character.
            eprintln!("cairn: error: {}", output::Names::stderr().text(&format!("{error:#}")));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `cairn get KEY | head` closes the pipe early; that is not a failure.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<cairn_store::Error>().is_some_and(|e| e.is_broken_pipe())
            || cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
