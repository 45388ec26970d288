//! `cairn stats`.

use anyhow::Result;

use crate::commands::Globals;
use crate::output::{self, Table};

/// Prints store statistics.
pub fn stats(globals: &Globals) -> Result<()> {
    let store = globals.open_read()?;
    let stats = store.stats()?;
    if globals.json {
        return output::json(&stats);
    }
    println!("store         {}", store.root().display());
    println!("objects       {}", stats.objects);
    println!("datasets      {}", stats.datasets);
    println!("logical       {}", output::size(stats.logical_bytes));
    println!("unique data   {}", output::size(stats.unique_bytes));
    println!("stored        {}", output::size(stats.stored_bytes));
    println!("dedup         {:.2}x", stats.dedup_ratio);
    println!("compression   {:.2}x", stats.compression_ratio);
    println!(
        "containers    {} ({} metadata), dead bytes {}",
        stats.containers,
        stats.metadata_containers,
        output::size(stats.dead_bytes)
    );
    // A small store's newest entries may all be in the index's log, not
    // yet in table files, and so have no filters to show.
    let filters = match stats.index_filter_bytes {
        0 => String::new(),
        bytes => format!("filters {}, ", output::size(bytes)),
    };
    println!(
        "index         {} ({:.0} B per live blob), {filters}block cache {}",
        output::size(stats.index_bytes),
        stats.index_bytes_per_blob,
        output::size(stats.index_cache_bytes)
    );
    if let Some(mib) = stats.suggested_cache_mib() {
        println!(
            "              the filters outgrow the block cache, so each new chunk a backup looks up reads them from disk: \
             --index-cache-mib {mib} (or CAIRN_INDEX_CACHE_MIB={mib}) keeps them in memory, for about {} more",
            output::size(mib.saturating_mul(1 << 20).saturating_sub(stats.index_cache_bytes))
        );
    }
    println!();
    let mut table = Table::new(
        vec!["KIND", "BLOBS", "RAW", "STORED", "GARBAGE", "GARBAGE BYTES"],
        vec![false, true, true, true, true, true],
    );
    for kind in &stats.kinds {
        table.row(vec![
            kind.kind.clone(),
            kind.blobs.to_string(),
            output::size(kind.raw_bytes),
            output::size(kind.stored_bytes),
            kind.garbage_blobs.to_string(),
            output::size(kind.garbage_bytes),
        ]);
    }
    table.print()
}
