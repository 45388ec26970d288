//! `cairn remote add|list|rm`, `cairn push`, `cairn attach`, and the
//! temporary store behind `cairn --remote URL ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_store::Store;
use cairn_store::dataset::Progress;
use cairn_store::remote::{AttachMode, PushOptions, RemoteClient, RemoteSpec, Remotes};

use crate::args::RemoteCommand;
use crate::commands::{EXIT_INTERRUPTED, Globals, interrupt_flag};
use crate::output::{self, Table};
use crate::progress::track_counting;

/// Where a remote is, from a URL and the global S3 options.
pub struct RemoteOptions {
    /// `--endpoint-url`.
    pub endpoint_url: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--path-style`.
    pub path_style: bool,
}

impl RemoteOptions {
    fn spec(&self, url: &str) -> Result<RemoteSpec> {
        Ok(RemoteSpec::new(url, self.endpoint_url.clone(), self.region.clone(), self.path_style)?)
    }
}

/// `cairn remote ...`.
pub fn remote(globals: &Globals, options: &RemoteOptions, command: RemoteCommand) -> Result<()> {
    // Remotes live beside the store; holding the writer lock keeps two
    // processes from rewriting the file at once.
    match command {
        RemoteCommand::Add { name, url, default } => {
            // A bad URL is refused before a store is made for it.
            let spec = options.spec(&url)?;
            let store = globals.open_or_create()?;
            let mut remotes = Remotes::load(store.root())?;
            if remotes.remotes.contains_key(&name) {
                anyhow::bail!("a remote named '{name}' exists already; remove it first with `cairn remote rm {name}`");
            }
            remotes.remotes.insert(name.clone(), spec.clone());
            if default {
                remotes.default = Some(name.clone());
            }
            remotes.save(store.root())?;
            let note = if default { " (default: backups push to it)" } else { "" };
            println!("remote '{name}' is {spec}{note}");
        }
        RemoteCommand::List => {
            let store = globals.open_read()?;
            let remotes = Remotes::load(store.root())?;
            if globals.json {
                return output::json(&remotes);
            }
            let mut table = Table::new(vec!["name", "url", "endpoint", "region", "path-style", "role"], vec![false; 6]);
            for (name, spec) in &remotes.remotes {
                let mut roles = Vec::new();
                if remotes.default.as_ref() == Some(name) {
                    roles.push("default");
                }
                if remotes.origin.as_ref() == Some(name) {
                    roles.push("origin");
                }
                table.row(vec![
                    name.clone(),
                    spec.url.clone(),
                    spec.endpoint_url.clone().unwrap_or_else(|| "AWS".into()),
                    spec.region.clone().unwrap_or_else(|| "-".into()),
                    if spec.path_style { "yes" } else { "no" }.into(),
                    roles.join(","),
                ]);
            }
            table.print()?;
        }
        RemoteCommand::Rm { name } => {
            let store = globals.open_write()?;
            let mut remotes = Remotes::load(store.root())?;
            remotes.get(&name)?;
            if remotes.origin.as_ref() == Some(&name) {
                anyhow::bail!(
                    "'{name}' is the remote this store was attached from, and holds containers this store reads; \
                     it cannot be removed"
                );
            }
            remotes.remotes.remove(&name);
            if remotes.default.as_ref() == Some(&name) {
                remotes.default = None;
            }
            remotes.save(store.root())?;
            println!("removed remote '{name}' (nothing on it was deleted)");
        }
    }
    Ok(())
}

/// `cairn push [NAME]`.
pub fn push(globals: &Globals, name: Option<&str>, jobs: usize) -> Result<ExitCode> {
    let store = globals.open_write()?;
    push_store(globals, &store, name, jobs, false).map(|()| ExitCode::SUCCESS).or_else(interrupted)
}

/// The remote a backup pushes to by itself: the default one, if set.
pub fn default_remote(store: &Store) -> Result<Option<String>> {
    Ok(Remotes::load(store.root())?.default)
}

/// Exit 130 with a note when Ctrl-C ended a push; other errors pass.
pub fn interrupted(error: anyhow::Error) -> Result<ExitCode> {
    match error.downcast_ref::<cairn_store::Error>() {
        Some(cairn_store::Error::Interrupted) => {
            eprintln!("cairn: push interrupted; what was uploaded stays, and the next push goes on from there");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        _ => Err(error),
    }
}

/// Pushes an open store to the remote `name` (or its default).
/// With `--json`, the report is the JSON output, unless the push follows
/// a backup (`after_backup`), whose report that is; then the summary goes
/// to standard error.
pub fn push_store(globals: &Globals, store: &Store, name: Option<&str>, jobs: usize, after_backup: bool) -> Result<()> {
    let remotes = Remotes::load(store.root())?;
    let (name, spec) = remotes.pick(name)?;
    let client = RemoteClient::new(&spec)?;
    let stop = interrupt_flag()?;
    let progress = Progress::default();
    let options = PushOptions { jobs };
    let report = track_counting(globals.progress, &format!("push to {name}"), "containers", &progress, || {
        store.push(&client, &options, &progress, &stop)
    })
    .with_context(|| format!("pushing to remote '{name}'"))?;
    if globals.json && !after_backup {
        return output::json(&report);
    }
    let say = |line: String| if globals.json { eprintln!("{line}") } else { println!("{line}") };
    say(format!(
        "pushed to {name} ({}): {} containers ({}) uploaded, {} already there; {} datasets uploaded, {} index delta{}",
        report.remote,
        report.containers_uploaded,
        output::size(report.bytes_uploaded),
        report.containers_present,
        report.datasets_uploaded,
        report.deltas_uploaded,
        if report.deltas_uploaded == 1 { "" } else { "s" },
    ));
    if report.datasets_deleted + report.containers_deleted > 0 {
        say(format!(
            "  deleted there: {} forgotten datasets, {} reclaimed containers ({})",
            report.datasets_deleted,
            report.containers_deleted,
            output::size(report.bytes_deleted)
        ));
    }
    if report.deltas_consolidated > 0 {
        say(format!("  {} index deltas consolidated into one", report.deltas_consolidated));
    }
    say(format!(
        "  in {:.2} s ({}), {} requests",
        report.seconds,
        output::rate(report.bytes_uploaded, report.seconds),
        report.requests
    ));
    Ok(())
}

/// `cairn attach URL`.
pub fn attach(globals: &Globals, options: &RemoteOptions, url: &str, name: &str) -> Result<()> {
    let spec = options.spec(url)?;
    let progress = Progress::default();
    let (_, report) = track_counting(globals.progress, "attach", "metadata containers", &progress, || {
        Store::attach(&globals.store, name, &spec, AttachMode::Full, &progress)
    })?;
    crate::commands::warn_if_open_to_others(&globals.store);
    if globals.json {
        return output::json(&report);
    }
    println!(
        "attached {} at {}: {} datasets, {} containers ({}) on the remote, {} blobs indexed",
        report.remote,
        globals.store.display(),
        report.datasets,
        report.containers,
        output::size(report.remote_bytes),
        report.blobs
    );
    println!(
        "  downloaded {} ({} index deltas, {} metadata containers) in {:.2} s, {} requests; \
         data stays on the remote until read",
        output::size(report.bytes_downloaded),
        report.deltas,
        report.metadata_containers,
        report.seconds,
        report.requests
    );
    Ok(())
}

/// For `--remote URL`: a temporary store attached for browsing, removed
/// when the returned guard drops. Returns the guard and the store's path.
pub fn browse_store(options: &RemoteOptions, url: &str, metadata: bool) -> Result<(tempfile::TempDir, PathBuf)> {
    let spec = options.spec(url)?;
    let dir = tempfile::Builder::new()
        .prefix("cairn-remote-")
        .tempdir()
        .context("making a temporary directory for --remote (set TMPDIR to a writable place)")?;
    let root = dir.path().join("store");
    Store::attach(&root, "origin", &spec, AttachMode::Browse { metadata }, &Progress::default())?;
    Ok((dir, root))
}
