//! `cairn gc`: the delete job, once or every SPAN until interrupted.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use cairn_gc::{GcOptions, GcReport, Phase};
use cairn_store::{LockWait, OpenMode, Store};

use crate::commands::{EXIT_INTERRUPTED, EXIT_PARTIAL, Globals, interrupt_flag, say_waiting, span_ns};
use crate::output;
use crate::progress;

/// Runs the delete job (see `cairn_gc::job`).
pub fn gc(globals: &Globals, options: &GcOptions, dry_run: bool, every: Option<jiff::Span>) -> Result<ExitCode> {
    if dry_run {
        let store = globals.open_read()?;
        let report = cairn_gc::dry_run(&store, options)?;
        print(globals, &report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = Some(globals.open_write()?);
    // The job checks `stop` between commits; a second Ctrl-C exits at
    // once, which is safe too: every step is a commit, and the next run
    // finishes what was cut.
    let stop = interrupt_flag()?;
    // `crate::span::period` let only positive spans through; a zero
    // period would run the job back to back without end.
    let period = match every.map(span_ns).transpose()? {
        None => None,
        Some(ns) if ns > 0 => Some(Duration::from_nanos(ns.unsigned_abs())),
        Some(ns) => anyhow::bail!("--every must be a positive span of time, not {ns} ns"),
    };
    let mut problems = false;
    loop {
        let started = Instant::now();
        let store = match store.take() {
            Some(store) => store,
            None => match reopen(globals, &stop)? {
                Some(store) => store,
                None => return Ok(ExitCode::from(EXIT_INTERRUPTED)),
            },
        };
        let bar = progress::bytes_bar(globals.progress, None, "gc");
        let report = cairn_gc::collect(&store, options, &stop, &|phase| match phase {
            Phase::Cascade(blobs) => bar.set_message(format!("gc: {blobs} blobs collected")),
            Phase::Compact(done, total) => bar.set_message(format!("gc: compacting, {done}/{total} containers")),
        })?;
        bar.finish_and_clear();
        // Between runs the store is let go of, so backups can take it.
        drop(store);
        print(globals, &report)?;
        problems |= !report.problems.is_empty();
        if report.interrupted {
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
        let Some(period) = period else { break };
        let Some(next) = started.checked_add(period) else {
            anyhow::bail!("--every {:#} is longer than this system's clock can count", every.expect("period is set"));
        };
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
            std::thread::sleep(Duration::from_millis(100).min(next.saturating_duration_since(Instant::now())));
        }
    }
    Ok(if problems { ExitCode::from(EXIT_PARTIAL) } else { ExitCode::SUCCESS })
}

/// Opens the store for the next run of `gc --every`, waiting as long as
/// another writer (a backup) holds it; `None` when Ctrl-C came first.
fn reopen(globals: &Globals, stop: &AtomicBool) -> Result<Option<Store>> {
    let mut told = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut waiting = |holder: Option<&str>| {
            if !std::mem::replace(&mut told, true) {
                say_waiting(holder);
            }
        };
        let wait = LockWait::For(Duration::from_millis(200));
        match Store::open_waiting(&globals.store, OpenMode::Write, wait, &mut waiting) {
            Err(cairn_store::Error::LockTimeout { .. }) => {}
            result => return Ok(Some(result?)),
        }
    }
}

fn print(globals: &Globals, report: &GcReport) -> Result<()> {
    if globals.json {
        return output::json(report);
    }
    if report.dry_run {
        println!("dry run, nothing changed; gc would do this:");
    }
    println!(
        "reclaimed     {} blobs ({} metadata), {}",
        report.blobs_reclaimed,
        report.metadata_blobs,
        output::size(report.bytes_reclaimed)
    );
    if report.protected > 0 {
        println!("kept for now  {} blobs a running backup may still name", report.protected);
    }
    println!(
        "containers    {} deleted, {} rewritten into {}",
        report.compaction.containers_deleted,
        report.compaction.containers_rewritten,
        if report.dry_run { "new ones".to_string() } else { report.compaction.containers_written.to_string() }
    );
    let about = if report.dry_run { "about " } else { "" };
    println!("space freed   {about}{}", output::size(report.compaction.bytes_freed()));
    println!("duration      {:.2} s", report.seconds);
    if report.interrupted {
        println!("interrupted: what was done is committed; run `cairn gc` again to finish");
    }
    let names = output::Names::stderr();
    for problem in &report.problems {
        eprintln!("cairn: gc: {}", names.text(problem));
    }
    Ok(())
}
