//! `cairn upgrade`: a store made by an older cairn moved to this one's
//! format, so that what it writes from then on uses what the format adds
//! (format 6: frames of 512 KiB; format 5: compact footer tables and
//! content-list pieces; format 4: frames). Nothing stored is rewritten: every cairn reads every layout
//! of its format and the ones before, and containers that compaction
//! rewrites later get the new layouts. The one cost is that a cairn older
//! than the new format refuses the store by name, which is why this is a
//! command of its own and not something a writer does when it opens a
//! store.

use serde::Serialize;

use crate::config::{OLDEST_WRITABLE_FORMAT, STORE_FORMAT, StoreConfig};
use crate::error::{Error, Result};
use crate::store::Store;

/// What an upgrade did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Upgrade {
    /// The store's format before.
    pub from: u32,
    /// Its format now (this cairn's).
    pub to: u32,
}

impl Store {
    /// Moves the store to this cairn's format ([`STORE_FORMAT`]) by
    /// rewriting `config.json` atomically; the store must be open for
    /// writing (the writer lock keeps every other writer out). A store
    /// already at the format is left as it is. A store older than
    /// [`OLDEST_WRITABLE_FORMAT`] is refused: its blob ids cannot tell a
    /// chunk from a tree of the same bytes, so no cairn adds blobs to it.
    pub fn upgrade(&self) -> Result<Upgrade> {
        if self.index().is_read_only() {
            return Err(Error::ReadOnly);
        }
        let from = self.config().format;
        if from < OLDEST_WRITABLE_FORMAT {
            return Err(Error::BadStore {
                path: self.root().to_path_buf(),
                reason: format!(
                    "store format {from} names blobs by plain BLAKE3 and cannot be upgraded; make a new store \
                     with `cairn init` and back up into it (this one stays readable)"
                ),
            });
        }
        if from < STORE_FORMAT {
            StoreConfig { format: STORE_FORMAT, ..self.config().clone() }.save(self.root())?;
            tracing::info!(from, to = STORE_FORMAT, "store upgraded");
        }
        Ok(Upgrade { from, to: STORE_FORMAT })
    }
}
