//! Browsing datasets without restoring them: `datasets`, `ls`, `find`,
//! `stat`, `cat` and `diff`. Names are written as the bytes they are (a
//! name that is not UTF-8 comes out as it went in) to pipes and files, and
//! escaped on a terminal ([`output::Names`]), where a name holding escape
//! sequences would otherwise rewrite the screen; JSON carries them lossily
//! as strings (its own escapes keep control characters harmless).

use std::io::{self, BufWriter, Write};

use anyhow::Result;
use cairn_store::dataset::{ChangeKind, ChunkUse, DatasetRecord, Entry, EntryKind, display_path};
use globset::Glob;
use serde::Serialize;

use crate::args::FindType;
use crate::commands::Globals;
use crate::output::{self, Names, Table, local_time, mode_string};

/// Lists datasets.
pub fn datasets(globals: &Globals) -> Result<()> {
    let store = globals.open_read()?;
    let datasets = store.datasets()?;
    if globals.json {
        return output::json(&datasets);
    }
    let mut table = Table::new(
        vec!["ID", "TIME", "SOURCE", "LABEL", "FILES", "SIZE", "ADDED"],
        vec![true, false, false, false, true, true, true],
    );
    for d in &datasets {
        table.row(vec![
            d.id.to_string(),
            local_time(d.time_ns, false),
            d.source(),
            d.label.clone().unwrap_or_default(),
            d.files.to_string(),
            output::size(d.logical_bytes),
            output::size(d.bytes_added),
        ]);
    }
    table.print()?;
    if datasets.is_empty() {
        eprintln!("no datasets yet; make one with `cairn backup PATH`");
    }
    Ok(())
}

/// An entry as JSON shows it.
#[derive(Serialize)]
struct EntryView {
    path: String,
    kind: EntryKind,
    mode: String,
    uid: u32,
    gid: u32,
    user: Option<String>,
    group: Option<String>,
    size: u64,
    mtime_ns: i64,
    atime_ns: i64,
    ctime_ns: i64,
    inode: u64,
    links: u64,
    rdev: u64,
    target: Option<String>,
    xattrs: Vec<String>,
    blob: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunks: Option<ChunkUse>,
}

impl EntryView {
    fn new(path: String, e: &Entry) -> EntryView {
        EntryView {
            path,
            kind: e.kind,
            mode: format!("{:04o}", e.mode),
            uid: e.uid,
            gid: e.gid,
            user: e.user.clone(),
            group: e.group.clone(),
            size: e.size,
            mtime_ns: e.mtime_ns,
            atime_ns: e.atime_ns,
            ctime_ns: e.ctime_ns,
            inode: e.inode,
            links: e.links,
            rdev: e.rdev,
            target: (e.kind == EntryKind::Symlink).then(|| display_path(&e.target)),
            xattrs: e.xattrs.iter().map(|(name, _)| display_path(name)).collect(),
            blob: e.blob.map(|b| b.to_hex()),
            chunks: None,
        }
    }
}

/// `path` inside a dataset as users write it: `/a/b`.
fn in_dataset(parent: &str, name: &[u8]) -> Vec<u8> {
    let mut path = parent.trim_end_matches('/').as_bytes().to_vec();
    if !path.starts_with(b"/") {
        path.insert(0, b'/');
    }
    if path.len() > 1 {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// The walk's path (`.` or `a/b`) as `/` or `/a/b`.
fn walked(path: &[u8]) -> Vec<u8> {
    let rest = path.strip_prefix(b".").unwrap_or(path);
    let rest = rest.strip_prefix(b"/").unwrap_or(rest);
    let mut out = vec![b'/'];
    out.extend_from_slice(rest);
    out
}

/// One `ls -l` line (without the newline).
fn long_line(e: &Entry, name: &[u8]) -> Vec<u8> {
    let owner = e.user.clone().unwrap_or_else(|| e.uid.to_string());
    let group = e.group.clone().unwrap_or_else(|| e.gid.to_string());
    let size = match e.kind {
        EntryKind::CharDevice | EntryKind::BlockDevice => format!("{},{}", e.rdev >> 8 & 0xfff, e.rdev & 0xff),
        _ => e.size.to_string(),
    };
    let mut line = format!(
        "{} {:>3} {:<8} {:<8} {:>10} {} ",
        mode_string(e.kind, e.mode),
        e.links,
        owner,
        group,
        size,
        local_time(e.mtime_ns, false)
    )
    .into_bytes();
    line.extend_from_slice(name);
    if e.kind == EntryKind::Symlink {
        line.extend_from_slice(b" -> ");
        line.extend_from_slice(&e.target);
    }
    line
}

/// Lists a directory of a dataset.
pub fn ls(globals: &Globals, dataset: &str, path: &str, long: bool) -> Result<()> {
    let store = globals.open_read()?;
    let record = store.dataset(dataset)?;
    let entry = store.lookup(&record, path)?;
    let entries = store.list(&record, path)?;
    let is_dir = entry.kind == EntryKind::Dir;
    let path_of = |e: &Entry| {
        if is_dir { in_dataset(path, &e.name) } else { in_dataset("/", path.trim_start_matches('/').as_bytes()) }
    };
    if globals.json {
        let views: Vec<EntryView> = entries.iter().map(|e| EntryView::new(display_path(&path_of(e)), e)).collect();
        return output::json(&views);
    }
    let names = Names::stdout();
    let mut out = BufWriter::new(io::stdout().lock());
    for e in &entries {
        let name = if is_dir { e.name.clone() } else { path_of(e) };
        let mut line = if long { long_line(e, &name) } else { name };
        if !long && e.kind == EntryKind::Dir {
            line.push(b'/');
        }
        // The whole line: owner and group names come from the tree too.
        out.write_all(&names.bytes(&line))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Lists everything under `path`, filtered by name glob and kind.
pub fn find(globals: &Globals, dataset: &str, path: &str, name: Option<&str>, kind: Option<FindType>) -> Result<()> {
    let store = globals.open_read()?;
    let record = store.dataset(dataset)?;
    let glob = name
        .map(|g| Glob::new(g).map(|g| g.compile_matcher()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("bad --name pattern: {e}"))?;
    let names = Names::stdout();
    let mut json = globals.json.then(|| output::JsonArray::new(BufWriter::new(io::stdout().lock()))).transpose()?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut matched = 0u64;
    store.walk(&record, path, &mut |at, entry| {
        if kind.is_some_and(|k| k.letter() != entry.kind.letter()) {
            return Ok(());
        }
        if let Some(glob) = &glob {
            let name = std::ffi::OsStr::new(std::str::from_utf8(&entry.name).unwrap_or(""));
            if entry.name.is_empty() || !glob.is_match(name) {
                return Ok(());
            }
        }
        matched += 1;
        let full = walked(at);
        if let Some(array) = json.as_mut() {
            return array.push(&EntryView::new(display_path(&full), entry)).map_err(output::stdout_error);
        }
        out.write_all(&names.bytes(&full)).and_then(|()| out.write_all(b"\n")).map_err(output::stdout_error)
    })?;
    if let Some(array) = json {
        array.finish()?;
        return Ok(());
    }
    out.flush()?;
    if matched == 0 {
        eprintln!("nothing matched");
    }
    Ok(())
}

/// Shows all metadata of one path, and how its chunks are shared.
pub fn stat(globals: &Globals, dataset: &str, path: &str) -> Result<()> {
    let store = globals.open_read()?;
    let record = store.dataset(dataset)?;
    let entry = store.lookup(&record, path)?;
    let chunks = store.chunk_use(&entry)?;
    let full = display_path(&in_dataset("/", path.trim_start_matches('/').as_bytes()));
    if globals.json {
        let mut view = EntryView::new(full, &entry);
        view.chunks = (entry.kind == EntryKind::File).then_some(chunks);
        return output::json(&view);
    }
    let mut text = String::new();
    stat_lines(&mut text, Names::stdout(), &record, &full, &entry, chunks)?;
    io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// `stat`'s lines; path, target, xattr names, owner and group come from
/// the tree, so they are written as `names` says.
fn stat_lines(
    out: &mut String,
    names: Names,
    record: &DatasetRecord,
    path: &str,
    e: &Entry,
    chunks: ChunkUse,
) -> std::fmt::Result {
    use std::fmt::Write as _;
    let name_or =
        |name: &Option<String>, id: u32| name.as_ref().map_or(id.to_string(), |n| format!("{} ({id})", names.text(n)));
    writeln!(out, "dataset   {} ({})", record.id, local_time(record.time_ns, false))?;
    writeln!(out, "path      {}", names.text(path))?;
    writeln!(out, "kind      {}", format!("{:?}", e.kind).to_lowercase())?;
    writeln!(out, "mode      {:04o} ({})", e.mode, mode_string(e.kind, e.mode))?;
    writeln!(out, "owner     {}", name_or(&e.user, e.uid))?;
    writeln!(out, "group     {}", name_or(&e.group, e.gid))?;
    writeln!(out, "size      {} ({})", e.size, output::size(e.size))?;
    writeln!(out, "mtime     {}", local_time(e.mtime_ns, true))?;
    writeln!(out, "atime     {}", local_time(e.atime_ns, true))?;
    writeln!(out, "ctime     {}", local_time(e.ctime_ns, true))?;
    writeln!(out, "inode     {} (device {}, {} links)", e.inode, e.dev, e.links)?;
    if matches!(e.kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
        writeln!(out, "rdev      {},{}", e.rdev >> 8 & 0xfff, e.rdev & 0xff)?;
    }
    if e.kind == EntryKind::Symlink {
        writeln!(out, "target    {}", names.text(&display_path(&e.target)))?;
    }
    for (name, value) in &e.xattrs {
        writeln!(out, "xattr     {} ({} bytes)", names.text(&display_path(name)), value.len())?;
    }
    if let Some(blob) = e.blob {
        writeln!(out, "blob      {}", blob.to_hex())?;
    }
    if e.kind == EntryKind::File {
        let share = if chunks.chunks == 0 { 0.0 } else { 100.0 * chunks.shared as f64 / chunks.chunks as f64 };
        writeln!(
            out,
            "chunks    {} ({} shared with other files or versions, {share:.0}%), in {} content-list pieces",
            chunks.chunks, chunks.shared, chunks.pieces
        )?;
    }
    Ok(())
}

/// Writes a file of a dataset to standard output.
pub fn cat(globals: &Globals, dataset: &str, path: &str) -> Result<()> {
    let store = globals.open_read()?;
    let record = store.dataset(dataset)?;
    let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
    store.cat(&record, path, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Lists what changed between two datasets.
pub fn diff(globals: &Globals, old: &str, new: &str, path: &str) -> Result<()> {
    let store = globals.open_read()?;
    let (old, new) = (store.dataset(old)?, store.dataset(new)?);
    let mut out = BufWriter::new(io::stdout().lock());
    if globals.json {
        let mut array = output::JsonArray::new(out)?;
        store.diff_each(&old, &new, path, &mut |change| array.push(&change).map_err(output::stdout_error))?;
        array.finish()?;
        return Ok(());
    }
    let mut counts = [0u64; 4];
    let names = Names::stdout();
    store.diff_each(&old, &new, path, &mut |c| {
        let (mark, slot) = match c.change {
            ChangeKind::Added => ('+', 0),
            ChangeKind::Removed => ('-', 1),
            ChangeKind::Modified => ('M', 2),
            ChangeKind::Metadata => ('m', 3),
        };
        counts[slot] += 1;
        let sizes = match (c.old_size, c.new_size) {
            (Some(a), Some(b)) if a != b => {
                let delta =
                    if b > a { format!("+{}", output::size(b - a)) } else { format!("-{}", output::size(a - b)) };
                format!("  {} -> {} ({delta})", output::size(a), output::size(b))
            }
            (_, Some(b)) | (Some(b), None) => format!("  {}", output::size(b)),
            (None, None) => String::new(),
        };
        writeln!(out, "{mark} {}{sizes}", names.text(&c.path)).map_err(output::stdout_error)
    })?;
    out.flush()?;
    eprintln!(
        "{} added, {} removed, {} modified, {} metadata only (dataset {} -> {})",
        counts[0], counts[1], counts[2], counts[3], old.id, new.id
    );
    Ok(())
}
