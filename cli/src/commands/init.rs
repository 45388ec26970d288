//! `cairn init` and `cairn upgrade`: a store's settings.

use anyhow::Result;
use cairn_store::container::Codec;
use cairn_store::{ChunkerConfig, Store, StoreOptions};

use crate::args::ChunkerKind;
use crate::commands::Globals;
use crate::output;

/// Creates a store with the given settings.
pub fn init(
    globals: &Globals,
    chunker: ChunkerKind,
    avg_size: u64,
    container_size: u64,
    compression: Codec,
) -> Result<()> {
    let chunker = match chunker {
        ChunkerKind::Cdc => ChunkerConfig::cdc(avg_size)?,
        ChunkerKind::Fixed => ChunkerConfig::fixed(avg_size)?,
    };
    if !(64 * 1024..=1 << 30).contains(&container_size) {
        anyhow::bail!("container size {} is out of range: use 64 KiB to 1 GiB", output::size(container_size));
    }
    let store = Store::create(&globals.store, &StoreOptions { chunker, container_size, compression })?;
    crate::commands::warn_if_open_to_others(store.root());
    if globals.json {
        output::json(store.config())?;
    } else {
        let config = store.config();
        println!(
            "created store {} at {} ({} chunks of {}, containers of {}, {} compression)",
            config.store_id,
            store.root().display(),
            config.chunker,
            output::size(config.chunk_size),
            output::size(config.container_size),
            config.compression
        );
    }
    Ok(())
}

/// Moves the store to this cairn's format (`Store::upgrade`).
pub fn upgrade(globals: &Globals) -> Result<()> {
    let store = globals.open_write()?;
    let upgrade = store.upgrade()?;
    if globals.json {
        return output::json(&upgrade);
    }
    if upgrade.from == upgrade.to {
        println!("store {} is at format {} already: nothing to do", store.root().display(), upgrade.to);
    } else {
        println!(
            "store {} upgraded from format {} to {}: new containers get the new layouts; \
             cairns older than format {} now refuse this store",
            store.root().display(),
            upgrade.from,
            upgrade.to,
            upgrade.to
        );
    }
    Ok(())
}
