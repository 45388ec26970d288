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
