//! `cairn check`.

use anyhow::Result;
use cairn_store::{CheckOptions, Error, OpenMode, Store};

use crate::commands::Globals;

/// Verifies the store; fails (exit 1) when anything is wrong.
pub fn check(globals: &Globals, read_data: bool) -> Result<()> {
    let redone = finish_interrupted(globals)?;
    let store = globals.open_read()?;
    let mut report = store.check(CheckOptions { read_data })?;
    report.redone = redone;
    if globals.json {
        crate::output::json(&report)?;
    } else {
        let names = crate::output::Names::stdout();
        for line in &report.redone {
            println!("redone: {}", names.text(line));
        }
        for problem in &report.problems {
            println!("problem: {}", names.text(problem));
        }
        println!(
            "checked {} containers and {} blobs{}: {} problems, {} blobs awaiting garbage collection",
            report.containers,
            report.blobs,
            if read_data { " (all data read)" } else { "" },
            report.problems.len(),
            report.garbage
        );
    }
    if !report.is_clean() {
        anyhow::bail!("the store has {} problems (listed above)", report.problems.len());
    }
    Ok(())
}

/// Opens the store for writing for a moment, when no one else is, so that
/// commits whose log record is durable but which the index lacks are redone
/// (any writer's open does that) and the check sees them. The check itself
/// runs as a reader, beside backups. Returns the commits redone.
fn finish_interrupted(globals: &Globals) -> Result<Vec<String>> {
    match Store::open(&globals.store, OpenMode::Write) {
        Ok(store) => Ok(store.redone()),
        // A writer holds it: its own open finished what was interrupted.
        Err(Error::InUse { .. }) => Ok(Vec::new()),
        // A store we may not write (permissions, a read-only mount).
        Err(Error::Io { .. }) => Ok(Vec::new()),
        Err(error) => Err(error.into()),
    }
}
