//! One function per subcommand; `run` dispatches.

mod backup;
mod browse;
mod check;
mod dedupe;
mod forget;
mod gc;
mod init;
mod log;
mod objects;
mod remote;
mod repair;
mod restore;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_store::dataset::BackupOptions;
use cairn_store::{LockWait, OpenMode, Store};

use crate::args::{Cli, Command};
use crate::output;

/// Exit code for work that finished but left some things out (a backup
/// that could not read some files, a restore that could not put back
/// some metadata); what it did is committed.
pub const EXIT_PARTIAL: u8 = 3;

/// Exit code when Ctrl-C ended the work early (128 + SIGINT, as shells do).
pub const EXIT_INTERRUPTED: u8 = 130;

/// A flag the first Ctrl-C (or SIGTERM) sets, for work that stops cleanly
/// between steps; a second one exits at once.
pub fn interrupt_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        flag::register_conditional_shutdown(signal, EXIT_INTERRUPTED.into(), stop.clone())
            .and_then(|_| flag::register(signal, stop.clone()))
            .context("installing the Ctrl-C handler")?;
    }
    Ok(stop)
}

/// Global settings every command sees.
pub struct Globals {
    /// The store directory.
    pub store: PathBuf,
    /// `--json`.
    pub json: bool,
    /// Whether progress bars may be drawn.
    pub progress: bool,
    /// `--wait`: how long a writer waits for the store lock.
    pub wait: LockWait,
}

impl Globals {
    /// Opens the store for reading.
    pub fn open_read(&self) -> Result<Store> {
        let store = Store::open(&self.store, OpenMode::ReadOnly)?;
        warn_if_open_to_others(&self.store);
        Ok(store)
    }

    /// Opens the store for writing.
    pub fn open_write(&self) -> Result<Store> {
        self.open_write_waiting(self.wait)
    }

    /// Opens the store for writing, waiting for its lock as `wait` says.
    pub fn open_write_waiting(&self, wait: LockWait) -> Result<Store> {
        let store = Store::open_waiting(&self.store, OpenMode::Write, wait, &mut say_waiting)?;
        warn_if_open_to_others(&self.store);
        Ok(store)
    }

    /// Opens the store for writing, creating it with defaults if needed.
    pub fn open_or_create(&self) -> Result<Store> {
        let store = Store::open_or_create_waiting(&self.store, self.wait, &mut say_waiting)?;
        warn_if_open_to_others(&self.store);
        Ok(store)
    }
}

/// Says, once, that a writer waits for the store lock and for whom.
pub(crate) fn say_waiting(holder: Option<&str>) {
    eprintln!("cairn: {}", output::Names::stderr().text(&waiting_message(holder)));
}

/// "waiting for the store lock held by `cairn gc` (pid 42)", from the
/// lock file's "pid 42: cairn gc".
fn waiting_message(holder: Option<&str>) -> String {
    let by = match holder.and_then(|h| h.strip_prefix("pid ")).and_then(|h| h.split_once(": ")) {
        Some((pid, command)) => format!("`{command}` (pid {pid})"),
        None => match holder {
            Some(holder) => format!("another cairn process ({holder})"),
            None => "another cairn process".to_string(),
        },
    };
    format!("waiting for the store lock held by {by}; Ctrl-C to give up")
}

/// Warns (one line on standard error) when users other than the owner may
/// enter the store directory: whoever can read the containers can read
/// every file backed up. cairn makes the directories it creates 0700 but
/// leaves an existing one as it was.
pub(crate) fn warn_if_open_to_others(root: &std::path::Path) {
    if let Some(mode) = cairn_store::open_to_others(root) {
        let root = output::Names::stderr().text(&root.display().to_string()).into_owned();
        eprintln!(
            "cairn: warning: the store directory {root} is open to other users (mode {mode:04o}); \
             run `chmod 700 {root}` so that only you can read what it holds"
        );
    }
}

/// The default store: `$XDG_DATA_HOME/cairn`.
fn default_store() -> Result<PathBuf> {
    let base = dirs::data_dir().context("cannot find a data directory (set HOME, or pass --store DIR)")?;
    Ok(base.join("cairn"))
}

/// Nanoseconds in a span measured from now (calendar units count as they
/// fall: `1mo` from January 31 is 29, 30 or 31 days). The value parsers
/// of `crate::span` have refused spans that do not fit already; this
/// checks again, since "now" has moved on since.
pub(crate) fn span_ns(span: jiff::Span) -> Result<i64> {
    crate::span::nanos_from(&jiff::Zoned::now(), span).map_err(anyhow::Error::msg)
}

/// Now, in ns since the epoch (saturated past 2262, as no record can be
/// later than that).
fn now_ns() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let remote_options = remote::RemoteOptions {
        endpoint_url: cli.endpoint_url.clone(),
        region: cli.region.clone(),
        path_style: cli.path_style,
    };
    let mut globals = Globals {
        store: match cli.store {
            Some(path) => path,
            None => default_store()?,
        },
        json: cli.json,
        progress: !cli.no_progress,
        wait: cli.wait.unwrap_or_default(),
    };
    // `--remote URL`: read commands run on a temporary store attached for
    // browsing (index only; data comes by ranged GETs as it is read).
    let _browse = match &cli.remote {
        None => None,
        Some(url) => {
            let reads = matches!(
                cli.command,
                Command::Datasets
                    | Command::Ls { .. }
                    | Command::Find { .. }
                    | Command::Stat { .. }
                    | Command::Cat { .. }
                    | Command::Diff { .. }
                    | Command::Restore { .. }
            );
            if !reads {
                anyhow::bail!(
                    "--remote works with datasets, ls, find, stat, cat, diff and restore; \
                     to do more, make a store from the remote with `cairn --store DIR attach {url}`"
                );
            }
            // Commands that walk whole trees take the metadata containers
            // whole, up front: one request per tree would cost a round
            // trip of latency each.
            let walks = matches!(cli.command, Command::Find { .. } | Command::Diff { .. } | Command::Restore { .. });
            let (guard, root) = remote::browse_store(&remote_options, url, walks)?;
            globals.store = root;
            Some(guard)
        }
    };
    let done = |result: Result<()>| result.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Init { chunker, avg_size, container_size, compression } => {
            done(init::init(&globals, chunker, avg_size.0, container_size.0, compression))
        }
        Command::Put { key, file } => done(objects::put(&globals, &key, file)),
        Command::Get { key, file } => done(objects::get(&globals, &key, file)),
        Command::Objects { prefix } => done(objects::list(&globals, prefix.as_deref().unwrap_or(""))),
        Command::Rm { key } => done(objects::remove(&globals, &key)),
        Command::Clone { source, destination: Some(destination), name: None } => {
            done(objects::clone(&globals, &source, &destination))
        }
        Command::Clone { source, name: Some(label), .. } => backup::clone_dataset(&globals, &source, &label),
        Command::Clone { .. } => unreachable!("clap requires DST or --name, not both"),
        Command::Stats => done(stats::stats(&globals)),
        Command::Check { read_data } => done(check::check(&globals, read_data)),
        Command::Repair { dry_run } => done(repair::repair(&globals, dry_run)),
        Command::Upgrade => done(init::upgrade(&globals)),
        Command::Log { dataset } => done(log::log(&globals, dataset.as_deref())),
        Command::Backup {
            paths,
            name,
            tags,
            excludes,
            one_file_system,
            parent,
            read_all,
            expire_after,
            push,
            no_push,
        } => {
            let expire_after_ns = expire_after.map(span_ns).transpose()?;
            let push = match (push, no_push) {
                (_, true) => backup::Push::No,
                (Some(name), false) => backup::Push::To(name),
                (None, false) => backup::Push::Default,
            };
            backup::backup(
                &globals,
                BackupOptions {
                    sources: paths,
                    label: name,
                    tags,
                    excludes,
                    one_file_system,
                    parent,
                    read_all,
                    expire_after_ns,
                },
                push,
            )
        }
        Command::Remote { command } => done(remote::remote(&globals, &remote_options, command)),
        Command::Push { name, jobs } => remote::push(&globals, name.as_deref(), jobs),
        Command::Attach { url, name } => done(remote::attach(&globals, &remote_options, &url, &name)),
        Command::Datasets => done(browse::datasets(&globals)),
        Command::Ls { dataset, path, long } => done(browse::ls(&globals, &dataset, &path, long)),
        Command::Find { dataset, path, name, kind } => {
            done(browse::find(&globals, &dataset, &path, name.as_deref(), kind))
        }
        Command::Stat { dataset, path } => done(browse::stat(&globals, &dataset, &path)),
        Command::Cat { dataset, path } => done(browse::cat(&globals, &dataset, &path)),
        Command::Diff { old, new, path } => done(browse::diff(&globals, &old, &new, &path)),
        Command::Forget { datasets, dry_run, .. } if !datasets.is_empty() => {
            done(forget::forget_named(&globals, &datasets, dry_run))
        }
        Command::Forget {
            datasets: _,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_within,
            keep_tags,
            expired,
            reserve,
            group_by,
            dry_run,
        } => {
            let policy = cairn_gc::Policy {
                last: keep_last,
                hourly: keep_hourly,
                daily: keep_daily,
                weekly: keep_weekly,
                monthly: keep_monthly,
                yearly: keep_yearly,
                within: keep_within,
                tags: keep_tags,
                expired_at: expired.then(now_ns),
                reserve,
                group_by: match group_by {
                    crate::args::GroupByArg::Source => cairn_gc::GroupBy::Source,
                    crate::args::GroupByArg::Host => cairn_gc::GroupBy::Host,
                    crate::args::GroupByArg::Tags => cairn_gc::GroupBy::Tags,
                    crate::args::GroupByArg::None => cairn_gc::GroupBy::None,
                },
            };
            done(forget::forget(&globals, &policy, dry_run))
        }
        Command::Dedupe { command: crate::args::DedupeCommand::Stats } => done(dedupe::stats(&globals)),
        Command::Dedupe { command: crate::args::DedupeCommand::Assess { path } } => {
            done(dedupe::assess(&globals, &path))
        }
        Command::Containers { id } => done(dedupe::containers(&globals, id.as_deref())),
        Command::Gc { dry_run, compact_threshold, every, batch } => {
            let options = cairn_gc::GcOptions { compact_threshold, batch_blobs: batch, ..Default::default() };
            gc::gc(&globals, &options, dry_run, every)
        }
        Command::Restore {
            dataset,
            paths,
            to,
            overwrite,
            dry_run,
            no_owner,
            no_xattrs,
            no_special,
            jobs,
            memory,
            batch,
        } => {
            let leave_out = restore::LeaveOut { owners: no_owner, xattrs: no_xattrs, special: no_special };
            let pacing = restore::Pacing { jobs, memory: memory.as_u64(), batch };
            restore::restore(&globals, &dataset, &paths, &to, overwrite, dry_run, leave_out, pacing)
        }
    }
}
