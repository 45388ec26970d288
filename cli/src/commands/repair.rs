//! `cairn repair`: rebuild the index from the containers.

use anyhow::Result;
use cairn_store::dataset::Progress;
use cairn_store::log::RepairOptions;
use cairn_store::log::repair::repair as rebuild;

use crate::commands::Globals;
use crate::output;
use crate::progress;

/// Rebuilds the index (or, with `dry_run`, says what a rebuild would change).
pub fn repair(globals: &Globals, dry_run: bool) -> Result<()> {
    if !globals.store.join("config.json").exists() {
        return Err(cairn_store::Error::NotAStore { path: globals.store.clone() }.into());
    }
    let counters = Progress::default();
    let report = progress::track_counting(globals.progress, "repair", "containers", &counters, || {
        rebuild(&globals.store, RepairOptions { dry_run }, globals.wait, &counters)
    })?;
    if globals.json {
        return output::json(&report);
    }
    let names = output::Names::stdout();
    for problem in &report.problems {
        println!("problem: {}", names.text(problem));
    }
    let list = |what: &str, items: Vec<String>| {
        if !items.is_empty() {
            println!("{what}: {}", names.text(&items.join(", ")));
        }
    };
    let verb = if dry_run { "would restore" } else { "restored" };
    list(
        &format!("datasets the old index lacked ({verb})"),
        report.datasets_restored.iter().map(u64::to_string).collect(),
    );
    list(&format!("objects the old index lacked ({verb})"), report.objects_restored.clone());
    let verb = if dry_run { "would drop" } else { "dropped" };
    list(
        &format!("datasets the log does not have ({verb})"),
        report.datasets_dropped.iter().map(u64::to_string).collect(),
    );
    list(&format!("objects the log does not have ({verb})"), report.objects_dropped.clone());
    println!(
        "{} {} datasets, {} objects and {} blobs from {} containers and {} log records, up to commit {}; {} blobs \
         nothing reaches ({}) left as dead bytes; old index {} ({:.1} s)",
        if dry_run { "would rebuild" } else { "rebuilt" },
        report.datasets,
        report.objects,
        report.blobs,
        report.containers,
        report.log_records,
        report.tid,
        report.unreachable_blobs,
        output::size(report.dead_bytes),
        report.old_index,
        report.seconds,
    );
    if let Some(aside) = &report.moved_aside {
        println!(
            "the old index was moved to {}; remove it when you are satisfied",
            names.text(&aside.display().to_string())
        );
    }
    if dry_run {
        println!("dry run: nothing was changed");
    }
    Ok(())
}
