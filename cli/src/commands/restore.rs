//! `cairn restore`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use cairn_store::dataset::{Overwrite, Progress, RestoreOptions};

use crate::args::OverwriteArg;
use crate::commands::{EXIT_PARTIAL, Globals};
use crate::output;
use crate::progress::track;

/// What `--no-owner`, `--no-xattrs` and `--no-special` leave out.
pub struct LeaveOut {
    /// `--no-owner`.
    pub owners: bool,
    /// `--no-xattrs`.
    pub xattrs: bool,
    /// `--no-special`.
    pub special: bool,
}

/// How a restore goes: `--jobs` and `--memory` (how a remote is
/// fetched), and `--batch`.
pub struct Pacing {
    /// Requests in flight at once.
    pub jobs: usize,
    /// Bytes fetched ahead held in memory at most.
    pub memory: u64,
    /// Entries planned and restored at a time.
    pub batch: usize,
}

/// Restores `paths` of `dataset` under `to`; exits [`EXIT_PARTIAL`] when
/// something could not be put back.
pub fn restore(
    globals: &Globals,
    dataset: &str,
    paths: &[String],
    to: &Path,
    overwrite: OverwriteArg,
    dry_run: bool,
    leave_out: LeaveOut,
    pacing: Pacing,
) -> Result<ExitCode> {
    let started = Instant::now();
    let store = globals.open_read()?;
    let record = store.dataset(dataset)?;
    let options = RestoreOptions {
        overwrite: match overwrite {
            OverwriteArg::Never => Overwrite::Never,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Always => Overwrite::Always,
        },
        dry_run,
        owners: nix::unistd::geteuid().is_root() && !leave_out.owners,
        xattrs: !leave_out.xattrs,
        special: !leave_out.special,
        on_warning: Some(|warning| eprintln!("cairn: warning: {warning}")),
        jobs: pacing.jobs.max(1),
        memory: usize::try_from(pacing.memory).unwrap_or(usize::MAX),
        batch: pacing.batch,
    };
    let progress = Progress::default();
    let report = track(globals.progress && !dry_run, "restore", &progress, || {
        store.restore(&record, paths, to, &options, &progress)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    if globals.json {
        output::json(&report)?;
    } else {
        let verb = if dry_run { "would restore" } else { "restored" };
        println!(
            "{verb} dataset {} to {}: {} files ({}), {} dirs, {} hard links, {} others",
            record.id,
            to.display(),
            report.files_written,
            output::size(report.bytes_written),
            report.dirs,
            report.hardlinks,
            report.others,
        );
        if report.files_unchanged > 0 || report.skipped_existing > 0 {
            println!(
                "  {} files already identical, {} existing paths left alone (see --overwrite)",
                report.files_unchanged, report.skipped_existing
            );
        }
        if report.devices_skipped > 0 {
            println!("  {} device nodes left out (--no-special)", report.devices_skipped);
        }
        if !dry_run {
            println!(
                "  in {seconds:.2} s ({}, {:.0} files/s)",
                output::rate(report.bytes_written, seconds),
                report.files_written as f64 / seconds.max(0.001)
            );
        }
    }
    // One line each, as cairn's own messages (also under --json, where
    // the report lists them too: stderr is for people), with control
    // characters in names escaped on a terminal.
    let names = output::Names::stderr();
    for problem in &report.problems {
        eprintln!("cairn: {}", names.text(problem));
    }
    if report.files_failed > 0 {
        anyhow::bail!(
            "{} files could not be restored because blobs they need are damaged (listed above); \
             everything else was restored; run `cairn check --read-data` to see what else is affected",
            report.files_failed
        );
    }
    if report.problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "cairn: restore is partial: {} problems (listed above); everything else was restored",
        report.problems.len()
    );
    Ok(ExitCode::from(EXIT_PARTIAL))
}
