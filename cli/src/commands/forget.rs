//! `cairn forget`.

use anyhow::Result;
use cairn_gc::Policy;
use cairn_store::DatasetId;
use serde::Serialize;

use crate::commands::Globals;
use crate::output::{self, Table, local_time};

#[derive(Serialize)]
struct ForgetReport<'a> {
    dry_run: bool,
    decisions: &'a [cairn_gc::Decision],
}

/// Forgets the datasets named (or, with `dry_run`, says which it would).
/// All names are resolved before anything is forgotten, so a typo forgets
/// nothing.
pub fn forget_named(globals: &Globals, names: &[String], dry_run: bool) -> Result<()> {
    let store = if dry_run { globals.open_read()? } else { globals.open_write()? };
    let records = names.iter().map(|name| store.dataset(name)).collect::<Result<Vec<_>, _>>()?;
    let mut ids: Vec<DatasetId> = records.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    if !dry_run {
        store.forget(&ids)?;
    }
    if globals.json {
        return output::json(&serde_json::json!({ "dry_run": dry_run, "forgotten": ids }));
    }
    let verb = if dry_run { "would forget" } else { "forgot" };
    let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    println!("{verb} {} datasets ({}); their space is reclaimed by garbage collection", ids.len(), list.join(", "));
    Ok(())
}

/// Applies `policy` and forgets what it does not keep (or, with `dry_run`,
/// only says what it would do).
pub fn forget(globals: &Globals, policy: &Policy, dry_run: bool) -> Result<()> {
    if policy.is_empty() {
        anyhow::bail!(
            "no --keep-* rule given: that would forget every dataset; say what to keep \
             (for example --keep-daily 7 --keep-weekly 4 --keep-monthly 12)"
        );
    }
    let store = if dry_run { globals.open_read()? } else { globals.open_write()? };
    let decisions = policy.apply(&store.datasets()?, &jiff::tz::TimeZone::system());
    let doomed: Vec<DatasetId> = decisions.iter().filter(|d| !d.keep).map(|d| d.dataset.id).collect();
    if !dry_run && !doomed.is_empty() {
        store.forget(&doomed)?;
    }
    if globals.json {
        return output::json(&ForgetReport { dry_run, decisions: &decisions });
    }
    let mut table =
        Table::new(vec!["ID", "TIME", "SOURCE", "ACTION", "KEPT BY"], vec![true, false, false, false, false]);
    for d in &decisions {
        table.row(vec![
            d.dataset.id.to_string(),
            local_time(d.dataset.time_ns, false),
            d.dataset.source(),
            if d.keep {
                "keep".into()
            } else if dry_run {
                "would remove".into()
            } else {
                "removed".into()
            },
            d.reasons.join(", "),
        ]);
    }
    table.print()?;
    let verb = if dry_run { "would forget" } else { "forgot" };
    println!("{verb} {} of {} datasets; their space is reclaimed by garbage collection", doomed.len(), decisions.len());
    Ok(())
}
