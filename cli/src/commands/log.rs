//! `cairn log`: the store's history, or one dataset's life.

use anyhow::Result;
use cairn_store::Store;
use cairn_store::log::{Body, Family, LogEntry};
use serde::Serialize;

use crate::commands::Globals;
use crate::output::{self, Table};

/// One commit, as `--json` prints it.
#[derive(Serialize)]
struct Commit {
    tid: u64,
    time_ns: i64,
    host: String,
    user: String,
    command: String,
    /// The log record's blob id.
    record: String,
    checkpoint: bool,
    note: String,
    changes: Vec<Change>,
    /// For `log DATASET`: what happened to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'static str>,
}

/// A record put or deleted.
#[derive(Serialize)]
struct Change {
    /// "dataset" or "object".
    kind: &'static str,
    /// The dataset number or object key.
    name: String,
    /// "put" or "deleted".
    action: &'static str,
}

/// Lists the live log, or the commits that touched one dataset.
pub fn log(globals: &Globals, dataset: Option<&str>) -> Result<()> {
    let store = globals.open_read()?;
    let entries = store.log()?;
    let mut commits: Vec<Commit> = entries.iter().map(describe).collect();
    if let Some(spec) = dataset {
        commits = life_of(&store, spec, commits)?;
    }
    if globals.json {
        return output::json(&commits);
    }
    let names = output::Names::stdout();
    let mut table = Table::new(
        vec!["TID", "TIME", "HOST", "USER", "WHAT", "COMMAND"],
        vec![true, false, false, false, false, false],
    );
    for commit in &commits {
        let mut what: Vec<String> = commit.event.iter().map(|e| e.to_string()).collect();
        what.extend(commit.changes.iter().map(|c| format!("{} {} {}", c.action, c.kind, c.name)));
        if commit.checkpoint {
            what.push("checkpoint".into());
        }
        if !commit.note.is_empty() {
            what.push(commit.note.clone());
        }
        table.row(vec![
            commit.tid.to_string(),
            output::local_time(commit.time_ns, false),
            names.text(&commit.host).into_owned(),
            names.text(&commit.user).into_owned(),
            names.text(&what.join(", ")).into_owned(),
            names.text(&commit.command).into_owned(),
        ]);
    }
    table.print()
}

fn describe(entry: &LogEntry) -> Commit {
    let record = &entry.record;
    let mut changes = Vec::new();
    let mut note = record.note.clone();
    match &record.body {
        Body::Commit { changes: list, .. } => {
            for change in list {
                let (kind, name) = match change.family {
                    Family::Datasets => ("dataset", dataset_number(&change.key).map_or("?".into(), |n| n.to_string())),
                    Family::Objects => ("object", String::from_utf8_lossy(&change.key).into_owned()),
                    Family::Meta => continue,
                };
                changes.push(Change { kind, name, action: if change.value.is_some() { "put" } else { "deleted" } });
            }
        }
        Body::Relocation { old, moved, .. } => {
            let compacted = format!("compacted {} containers ({moved} blobs moved)", old.len());
            note = if note.is_empty() { compacted } else { format!("{compacted}; {note}") };
        }
    }
    Commit {
        tid: record.tid,
        time_ns: record.time_ns,
        host: record.host.clone(),
        user: record.user.clone(),
        command: record.command.clone(),
        record: entry.id.to_string(),
        checkpoint: record.checkpoint.is_some(),
        note,
        changes,
        event: None,
    }
}

fn dataset_number(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The commits that created, replaced or forgot dataset `spec`, and the
/// delete-job runs after it was forgotten (which collected what only it
/// used).
fn life_of(store: &Store, spec: &str, commits: Vec<Commit>) -> Result<Vec<Commit>> {
    let id = match spec.parse::<u64>() {
        Ok(number) => number,
        Err(_) => store.dataset(spec)?.id.0,
    };
    let name = id.to_string();
    let mut life = Vec::new();
    let mut exists = false;
    let mut forgotten = false;
    for mut commit in commits {
        let touched = commit.changes.iter().find(|c| c.kind == "dataset" && c.name == name).map(|c| c.action);
        commit.event = match touched {
            Some("put") if exists => Some("replaced"),
            Some("put") if commit.command.contains(" clone ") => Some("cloned"),
            Some("put") => Some("created"),
            Some(_) => Some("forgotten"),
            None if forgotten && commit.note.starts_with("gc:") => Some("collected"),
            None => None,
        };
        match commit.event {
            Some("created" | "cloned" | "replaced") => exists = true,
            Some("forgotten") => (exists, forgotten) = (false, true),
            _ => {}
        }
        if commit.event.is_some() {
            commit.changes.retain(|c| c.kind == "dataset" && c.name == name);
            life.push(commit);
        }
    }
    if life.is_empty() {
        anyhow::bail!(
            "the log since its last checkpoint does not mention dataset {id}; `cairn log` lists what it holds"
        );
    }
    Ok(life)
}
