//! `cairn backup`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_store::dataset::{BackupOptions, Progress};

use crate::commands::{EXIT_PARTIAL, Globals, remote};
use crate::output;
use crate::progress::track;

/// Whether a backup pushes afterwards.
pub enum Push {
    /// To the default remote, if one is set.
    Default,
    /// To this remote.
    To(String),
    /// Not at all (`--no-push`).
    No,
}

/// Backs up `options.sources`, then pushes; exits [`EXIT_PARTIAL`] when
/// entries were skipped.
pub fn backup(globals: &Globals, options: BackupOptions, push: Push) -> Result<ExitCode> {
    // A missing source is an error before the store is created or locked.
    for source in &options.sources {
        if let Err(e) = std::fs::symlink_metadata(source) {
            anyhow::bail!("cannot back up {}: {e}; check the path", source.display());
        }
    }
    let store = globals.open_or_create()?;
    let progress = Progress::default();
    let report = track(globals.progress, "backup", &progress, || store.backup(&options, &progress))?;
    let record = &report.record;
    if globals.json {
        output::json(&report)?;
    } else {
        let names = output::Names::stdout();
        let label = record.label.as_deref().map(|l| format!(" '{}'", names.text(l))).unwrap_or_default();
        println!(
            "dataset {}{label} of {}: {} files, {} dirs, {} others, {}",
            record.id,
            names.text(&record.source()),
            record.files,
            record.dirs,
            record.others,
            output::size(record.logical_bytes)
        );
        let parent = record.parent.map(|p| format!(" (compared with dataset {p})")).unwrap_or_default();
        println!(
            "  files: {} new, {} changed, {} unchanged{parent}",
            report.files_new, report.files_changed, report.files_unchanged
        );
        println!(
            "  read {} ({}), added {} to the store, in {:.2} s ({:.0} files/s)",
            output::size(report.bytes_read),
            output::rate(report.bytes_read, record.seconds),
            output::size(record.bytes_added),
            record.seconds,
            record.files as f64 / record.seconds.max(0.001),
        );
        if report.sockets > 0 {
            println!("  {} sockets left out (they cannot be restored)", report.sockets);
        }
        // Names from the tree backed up: anyone who could name a file
        // there chose them.
        let names = output::Names::stderr();
        for skipped in &report.skipped {
            eprintln!("skipped {}: {}", names.text(&skipped.path), names.text(&skipped.reason));
        }
    }
    let remote = match push {
        Push::Default => remote::default_remote(&store)?,
        Push::To(name) => Some(name),
        Push::No => None,
    };
    if let Some(remote) = remote {
        let pushed = remote::push_store(globals, &store, Some(remote.as_str()), 4, true)
            .with_context(|| format!("dataset {} is committed here, but the push failed", record.id));
        if let Err(error) = pushed {
            return remote::interrupted(error);
        }
    }
    if report.skipped.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "cairn: backup is partial: {} entries could not be read and are missing from dataset {}; \
         everything else is in it",
        report.skipped.len(),
        record.id
    );
    Ok(ExitCode::from(EXIT_PARTIAL))
}

/// `cairn clone DATASET[:PATH] --name LABEL`: a new dataset sharing the tree.
pub fn clone_dataset(globals: &Globals, source: &str, label: &str) -> Result<ExitCode> {
    let (spec, path) = source.split_once(':').unwrap_or((source, ""));
    let store = globals.open_write()?;
    let record = store.clone_dataset(spec, path, label)?;
    if globals.json {
        output::json(&record)?;
    } else {
        println!(
            "dataset {} ({label}) cloned from {source}: {} files, {}, no data copied",
            record.id,
            record.files,
            output::size(record.logical_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
