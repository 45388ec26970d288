//! `cairn check`.

use anyhow::Result;
use cairn_store::CheckOptions;

use crate::commands::Globals;

/// Verifies the store; fails (exit 1) when anything is wrong.
pub fn check(globals: &Globals, read_data: bool) -> Result<()> {
    let store = globals.open_read()?;
    let report = store.check(CheckOptions { read_data })?;
    if globals.json {
        crate::output::json(&report)?;
    } else {
        let names = crate::output::Names::stdout();
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
