//! The store's settings file (`config.json`), fixed when the store is created.

use std::fs;
use std::io::Write;
use std::path::Path;

use cairn_chunker::ChunkerConfig;
use serde::{Deserialize, Serialize};

use crate::container::{Codec, FooterLayout, sync_dir_of};
use crate::content::PieceLayout;
use crate::error::{Error, Result};
use crate::ids::IdScheme;

/// The store format this code writes. Opening a store with a higher number
/// fails with a message asking for a newer cairn. Format 5 writes
/// containers with compact footer tables (`container/footer.rs`) and
/// compact content-list pieces (`content.rs`);
/// format 4 compresses data chunks in frames; format 3 names blobs by
/// keyed BLAKE3, one key per kind (`ids::IdScheme`); formats 1 (lz4 records
/// only) and 2 (zstd records too) named them by plain BLAKE3, and are read
/// but never written (see [`OLDEST_WRITABLE_FORMAT`]).
pub const STORE_FORMAT: u32 = 6;

/// The first format whose data chunks are compressed in frames
/// (`container/frame.rs`); format 3 stores go on storing one record per
/// chunk, which every cairn since format 3 reads.
pub const FRAMES_FORMAT: u32 = 4;

/// The first format whose containers have compact footer tables and
/// whose content-list pieces are compact (version 2); older stores go on
/// writing the fixed layouts, which every cairn reads, so that the cairn
/// that made them still opens them.
pub const COMPACT_LAYOUTS_FORMAT: u32 = 5;

/// The first format whose frames are 512 KiB
/// ([`WIDE_FRAME_TARGET`](crate::container::WIDE_FRAME_TARGET)), flagged
/// as such when they pass 256 KiB; older stores go on writing frames of
/// 256 KiB, so that the cairn that made them still reads every record.
pub const WIDE_FRAMES_FORMAT: u32 = 6;

/// The plaintext a store of `format` fills a frame to at most (for
/// formats that have frames, [`FRAMES_FORMAT`] on).
pub fn frame_target(format: u32) -> usize {
    if format >= WIDE_FRAMES_FORMAT { crate::container::WIDE_FRAME_TARGET } else { crate::container::FRAME_TARGET }
}

/// Stores older than this are opened for reading, and for anything that
/// names no new blob (forget, gc); a command that would store a new blob
/// in one is refused, because a plain id cannot tell a data chunk from a
/// tree or content list with the same bytes.
pub const OLDEST_WRITABLE_FORMAT: u32 = 3;

/// Default container size at which a container is sealed: 4 MiB.
pub const DEFAULT_CONTAINER_SIZE: u64 = 4 << 20;

/// Options for creating a store (`cairn init`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// How data is cut.
    pub chunker: ChunkerConfig,
    /// Size at which containers are sealed.
    pub container_size: u64,
    /// How new blobs are compressed.
    pub compression: Codec,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            chunker: ChunkerConfig::default_cdc(),
            container_size: DEFAULT_CONTAINER_SIZE,
            compression: DEFAULT_CODEC,
        }
    }
}

/// The codec of stores made without `--compression`: zstd at level 3. On a
/// backup of `/usr` it stored 2.20 GB where lz4 stored 2.83 (restic 1.97),
/// and it still backs up at more than twice restic's speed (ARCHITECTURE.md,
/// "Space"); lz4 stays a choice for the fastest backups.
pub const DEFAULT_CODEC: Codec = Codec::Zstd(crate::container::DEFAULT_ZSTD_LEVEL);

/// What `config.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreConfig {
    /// Store format version.
    pub format: u32,
    /// A random id naming this store (remotes and mirrors refer to it).
    pub store_id: String,
    /// `cdc` or `fixed`.
    pub chunker: String,
    /// Average chunk size (cdc) or block size (fixed), in bytes.
    pub chunk_size: u64,
    /// Container seal size in bytes.
    pub container_size: u64,
    /// How new blobs are compressed: `lz4`, `zstd`, `zstd:LEVEL` or `none`.
    /// Stores made before this setting existed compress with lz4.
    #[serde(default = "lz4_name")]
    pub compression: String,
}

fn lz4_name() -> String {
    Codec::Lz4.to_string()
}

impl StoreConfig {
    /// A new config from options.
    pub fn new(options: &StoreOptions) -> StoreConfig {
        StoreConfig {
            format: STORE_FORMAT,
            store_id: random_id(),
            chunker: options.chunker.kind_name().to_string(),
            chunk_size: options.chunker.avg_size() as u64,
            container_size: options.container_size,
            compression: options.compression.to_string(),
        }
    }

    /// Whether new data chunks are compressed in frames.
    pub fn frames(&self) -> bool {
        self.format >= FRAMES_FORMAT
    }

    /// The plaintext this store's writers fill a frame to at most.
    pub fn frame_target(&self) -> usize {
        frame_target(self.format)
    }

    /// The layout of the footer tables this store's new containers get.
    pub fn footer_layout(&self) -> FooterLayout {
        if self.format >= COMPACT_LAYOUTS_FORMAT { FooterLayout::Compact } else { FooterLayout::Fixed }
    }

    /// The layout of the content-list pieces this store's writers make.
    pub fn piece_layout(&self) -> PieceLayout {
        if self.format >= COMPACT_LAYOUTS_FORMAT { PieceLayout::Compact } else { PieceLayout::Fixed }
    }

    /// How this store names blobs.
    pub fn id_scheme(&self) -> IdScheme {
        IdScheme::for_format(self.format)
    }

    /// The chunker this store uses.
    pub fn chunker(&self) -> Result<ChunkerConfig> {
        match self.chunker.as_str() {
            "fixed" => Ok(ChunkerConfig::fixed(self.chunk_size)?),
            _ => Ok(ChunkerConfig::cdc(self.chunk_size)?),
        }
    }

    /// Reads `config.json` from a store directory.
    pub fn load(root: &Path) -> Result<StoreConfig> {
        let path = root.join("config.json");
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotAStore { path: root.to_path_buf() }
            } else {
                Error::io("reading store config", &path, e)
            }
        })?;
        let config: StoreConfig = serde_json::from_str(&text)
            .map_err(|e| Error::BadStore { path: root.to_path_buf(), reason: format!("config.json: {e}") })?;
        if config.format > STORE_FORMAT {
            return Err(Error::BadStore {
                path: root.to_path_buf(),
                reason: format!(
                    "store format {} is newer than this cairn understands ({STORE_FORMAT}); upgrade cairn",
                    config.format
                ),
            });
        }
        Ok(config)
    }

    /// Writes `config.json` atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("config serializes");
        write_atomically(&root.join("config.json"), text.as_bytes())
    }
}

/// Replaces a small file atomically: a temporary file beside it, fsync,
/// rename, fsync of the directory. The temporary file has a name no one
/// can guess and is created only if nothing is there (`O_EXCL`), so a
/// symlink planted in the directory never redirects the write.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut temporary = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating a temporary file in", dir, e))?;
    temporary
        .write_all(bytes)
        .and_then(|()| temporary.as_file().sync_all())
        .map_err(|e| Error::io("writing", temporary.path(), e))?;
    temporary.persist(path).map_err(|e| Error::io("writing", path, e.error))?;
    sync_dir_of(path)
}

/// 128 random-enough bits as hex: BLAKE3 of the time, the pid and an address.
pub(crate) fn random_id() -> String {
    let mut hasher = blake3::Hasher::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&(&now as *const _ as usize).to_le_bytes());
    hasher.finalize().to_hex()[..32].to_string()
}
