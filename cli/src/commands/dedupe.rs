//! `cairn dedupe stats`, `cairn dedupe assess PATH`, `cairn containers [ID]`.

use std::path::Path;

use anyhow::{Context, Result};
use cairn_store::ContainerId;

use crate::commands::Globals;
use crate::output::{self, Table, local_time};
use crate::progress;

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "-".into() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

/// `dedupe stats`.
pub fn stats(globals: &Globals) -> Result<()> {
    let store = globals.open_read()?;
    let stats = cairn_gc::dedupe_stats(&store)?;
    if globals.json {
        return output::json(&stats);
    }
    println!("logical        {}", output::size(stats.logical_bytes));
    println!("after dedupe   {}  ({:.2}x)", output::size(stats.unique_bytes), stats.dedup_ratio);
    println!("stored         {}  (compression {:.2}x)", output::size(stats.stored_bytes), stats.compression_ratio);
    println!(
        "saved          {}  ({})",
        output::size(stats.saved_bytes),
        percent(stats.saved_bytes, stats.logical_bytes)
    );
    println!();
    let mut table = Table::new(
        vec!["DATASET", "TIME", "LABEL", "LOGICAL", "ALONE", "SHARED"],
        vec![true, false, false, true, true, true],
    );
    for d in &stats.datasets {
        table.row(vec![
            d.id.to_string(),
            local_time(d.time_ns, false),
            d.label.clone().unwrap_or_default(),
            output::size(d.logical_bytes),
            output::size(d.alone_bytes),
            output::size(d.shared_bytes),
        ]);
    }
    table.print()?;
    println!("ALONE: stored bytes only this dataset names (what forgetting it frees)");
    println!();
    let mut table = Table::new(vec!["REFERENCES", "BLOBS", "STORED"], vec![true, true, true]);
    for bucket in &stats.refs {
        let range = if bucket.refs_from == bucket.refs_to {
            bucket.refs_from.to_string()
        } else {
            format!("{}–{}", bucket.refs_from, bucket.refs_to)
        };
        table.row(vec![range, bucket.blobs.to_string(), output::size(bucket.stored_bytes)]);
    }
    table.print()?;
    for (title, buckets) in [("FILL", &stats.fill), ("DEAD SHARE", &stats.dead)] {
        println!();
        let mut table = Table::new(vec![title, "CONTAINERS", "STORED", "DEAD"], vec![false, true, true, true]);
        for bucket in buckets.iter().filter(|b| b.containers > 0) {
            table.row(vec![
                bucket.range.clone(),
                bucket.containers.to_string(),
                output::size(bucket.stored_bytes),
                output::size(bucket.dead_bytes),
            ]);
        }
        table.print()?;
    }
    Ok(())
}

/// `dedupe assess PATH`.
pub fn assess(globals: &Globals, path: &Path) -> Result<()> {
    // The store, when there is one, gives the chunker and what it holds.
    let store = if globals.store.join("config.json").exists() { Some(globals.open_read()?) } else { None };
    let bar = progress::bytes_bar(globals.progress, None, "assessing");
    let report = cairn_gc::assess(path, store.as_ref(), &|bytes| bar.set_position(bytes))?;
    bar.finish_and_clear();
    if globals.json {
        return output::json(&report);
    }
    println!("files          {}", report.files);
    println!("logical        {}", output::size(report.logical_bytes));
    println!(
        "after dedupe   {}  ({:.2}x, {} of {} chunks distinct)",
        output::size(report.unique_bytes),
        report.dedup_ratio,
        report.unique_chunks,
        report.chunks
    );
    println!("compressed     {}  ({:.2}x)", output::size(report.compressed_bytes), report.compression_ratio);
    println!(
        "saving         {}",
        percent(report.logical_bytes.saturating_sub(report.compressed_bytes), report.logical_bytes)
    );
    if store.is_some() {
        println!(
            "in the store   {} already; a backup would add about {}",
            output::size(report.already_stored_bytes),
            output::size(report.compressed_bytes - report.already_stored_bytes)
        );
    }
    let names = output::Names::stderr();
    for problem in &report.unreadable {
        eprintln!("cairn: could not read {}", names.text(problem));
    }
    Ok(())
}

/// `containers [ID]`.
pub fn containers(globals: &Globals, id: Option<&str>) -> Result<()> {
    let store = globals.open_read()?;
    let Some(id) = id else {
        let list = store.containers()?;
        if globals.json {
            let rows: Vec<_> = list
                .iter()
                .map(|(id, r)| {
                    serde_json::json!({
                        "id": id.to_string(), "kind": r.kind.name(), "blobs": r.n_blobs,
                        "stored_bytes": r.stored_bytes, "dead_bytes": r.dead_bytes,
                        "dead_share": r.dead_share(), "committed_tid": r.committed_tid.0, "uploaded": r.uploaded,
                    })
                })
                .collect();
            return output::json(&rows);
        }
        let mut table = Table::new(
            vec!["ID", "KIND", "BLOBS", "SIZE", "DEAD", "DEAD %", "TID", "PUSHED"],
            vec![false, false, true, true, true, true, true, false],
        );
        for (id, r) in &list {
            table.row(vec![
                id.to_string(),
                r.kind.name().to_string(),
                r.n_blobs.to_string(),
                output::size(r.stored_bytes),
                output::size(r.dead_bytes),
                format!("{:.1}%", r.dead_share() * 100.0),
                r.committed_tid.to_string(),
                if r.uploaded { "yes" } else { "no" }.to_string(),
            ]);
        }
        table.print()?;
        let (stored, dead): (u64, u64) =
            list.iter().fold((0, 0), |(s, d), (_, r)| (s + r.stored_bytes, d + r.dead_bytes));
        println!("{} containers, {}, of which {} dead", list.len(), output::size(stored), output::size(dead));
        return Ok(());
    };
    let id = ContainerId(
        u64::from_str_radix(id, 16)
            .with_context(|| format!("'{id}' is not a container id; `cairn containers` lists them"))?,
    );
    let usage = store.container_usage(id)?;
    if globals.json {
        let blobs: Vec<_> = usage
            .blobs
            .iter()
            .map(|(t, e)| {
                serde_json::json!({
                    "offset": t.offset, "id": t.id.to_string(), "kind": t.kind.name(),
                    "raw_len": t.raw_len, "stored_len": t.stored_len, "refs": e.map(|e| e.refs),
                })
            })
            .collect();
        return output::json(&serde_json::json!({
            "id": id.to_string(), "kind": usage.record.kind.name(), "stored_bytes": usage.record.stored_bytes,
            "dead_bytes": usage.record.dead_bytes, "live_bytes": usage.live_bytes(), "blobs": blobs,
        }));
    }
    println!(
        "container {id} ({}): {} blobs, {}, {} live, {} dead",
        usage.record.kind.name(),
        usage.blobs.len(),
        output::size(usage.record.stored_bytes),
        output::size(usage.live_bytes()),
        output::size(usage.record.dead_bytes)
    );
    let mut table =
        Table::new(vec!["OFFSET", "BLOB", "KIND", "RAW", "STORED", "REFS"], vec![true, false, false, true, true, true]);
    for (t, e) in &usage.blobs {
        table.row(vec![
            t.offset.to_string(),
            t.id.to_string(),
            t.kind.name().to_string(),
            output::size(t.raw_len as u64),
            output::size(t.stored_len as u64),
            e.map_or("dead".to_string(), |e| e.refs.to_string()),
        ]);
    }
    table.print()
}
