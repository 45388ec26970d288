//! `cairn put`, `get`, `objects`, `rm`, `clone`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::commands::Globals;
use crate::output::{self, Table};
use crate::progress::bytes_bar;

fn is_stdio(file: &Option<PathBuf>) -> bool {
    file.as_deref().is_none_or(|path| path == Path::new("-"))
}

#[derive(Serialize)]
struct PutReport<'a> {
    key: &'a str,
    size: u64,
    content: String,
    chunks: u64,
    new_chunks: u64,
    new_bytes: u64,
    bytes_stored: u64,
    replaced: bool,
    seconds: f64,
}

/// Stores a file or standard input under `key`.
pub fn put(globals: &Globals, key: &str, file: Option<PathBuf>) -> Result<()> {
    let started = Instant::now();
    // Open the input before the store, so a bad path changes nothing.
    let (source, what, total): (Box<dyn io::Read + Send>, String, Option<u64>) = if is_stdio(&file) {
        (Box::new(io::stdin()), "standard input".into(), None)
    } else {
        let path = file.expect("checked above");
        let handle = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let meta = handle.metadata().with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            anyhow::bail!(
                "{} is a directory; `put` stores one file (backups of trees come with `cairn backup`)",
                path.display()
            );
        }
        (cairn_store::sparse::reader(handle, &meta), path.display().to_string(), Some(meta.len()))
    };
    let store = globals.open_or_create()?;
    let bar = bytes_bar(globals.progress, total, &format!("put {key}"));
    let outcome = store.put_object(key, source, &what, &|bytes| bar.set_position(bytes))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if globals.json {
        return output::json(&PutReport {
            key,
            size: outcome.object.record.size,
            content: outcome.object.record.content.to_hex(),
            chunks: outcome.stats.chunks,
            new_chunks: outcome.stats.new_chunks,
            new_bytes: outcome.stats.new_bytes,
            bytes_stored: outcome.bytes_stored,
            replaced: outcome.replaced,
            seconds,
        });
    }
    let size = outcome.object.record.size;
    println!(
        "{} {key}: {} in {seconds:.2} s ({}); {} chunks, {} new; {} added to the store",
        if outcome.replaced { "replaced" } else { "stored" },
        output::size(size),
        output::rate(size, seconds),
        outcome.stats.chunks,
        outcome.stats.new_chunks,
        output::size(outcome.bytes_stored),
    );
    Ok(())
}

/// Writes object `key` to a file (atomically: temporary file, then rename) or
/// to standard output.
pub fn get(globals: &Globals, key: &str, file: Option<PathBuf>) -> Result<()> {
    let store = globals.open_read()?;
    let record = store.object(key)?;
    let bar = bytes_bar(globals.progress && !is_stdio(&file), Some(record.size), &format!("get {key}"));
    let progress = |bytes| bar.set_position(bytes);
    if is_stdio(&file) {
        let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
        store.get_object(key, &mut out, "standard output", &progress)?;
        return Ok(());
    }
    let path = file.expect("checked above");
    let result = (|| -> Result<()> {
        // Beside the destination (so the rename stays on its filesystem),
        // under a name no one can guess, created only if nothing is there
        // (`O_EXCL`): a symlink planted in the directory cannot redirect
        // the write. Removed on failure when it drops.
        let temporary = temporary_beside(&path)?;
        let mut out = BufWriter::with_capacity(1 << 20, temporary);
        store.get_object(key, &mut out, &path.display().to_string(), &progress)?;
        let temporary =
            out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", path.display()))?;
        temporary.as_file().sync_all().with_context(|| format!("writing {}", path.display()))?;
        temporary
            .persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot rename into {}", path.display()))?;
        Ok(())
    })();
    bar.finish_and_clear();
    result
}

/// A new temporary file in the directory of `path`, with the permissions a
/// plain create would give (0666 less the umask), not tempfile's 0600.
fn temporary_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}.cairn-"))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
}

/// Lists objects.
pub fn list(globals: &Globals, prefix: &str) -> Result<()> {
    let store = globals.open_read()?;
    let objects = store.objects(prefix)?;
    if globals.json {
        return output::json(&objects);
    }
    let mut table = Table::new(vec!["KEY", "SIZE", "CONTENT", "TID"], vec![false, true, false, true]);
    for object in &objects {
        table.row(vec![
            object.key.clone(),
            output::size(object.record.size),
            format!("{:#}", object.record.content),
            object.record.tid.to_string(),
        ]);
    }
    table.print()?;
    if objects.is_empty() && !prefix.is_empty() {
        eprintln!("no objects start with '{prefix}'");
    }
    Ok(())
}

/// Removes an object.
pub fn remove(globals: &Globals, key: &str) -> Result<()> {
    let store = globals.open_write()?;
    let record = store.remove_object(key)?;
    if globals.json {
        return output::json(&serde_json::json!({ "removed": key, "size": record.size }));
    }
    println!("removed {key} ({}); its space is reclaimed by garbage collection", output::size(record.size));
    Ok(())
}

/// Clones an object in O(1).
pub fn clone(globals: &Globals, source: &str, destination: &str) -> Result<()> {
    let store = globals.open_write()?;
    let record = store.clone_object(source, destination)?;
    if globals.json {
        return output::json(&serde_json::json!({ "source": source, "destination": destination, "size": record.size }));
    }
    println!("cloned {source} to {destination} ({}, no data copied)", output::size(record.size));
    let _ = io::stdout().flush();
    Ok(())
}
