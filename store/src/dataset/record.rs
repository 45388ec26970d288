//! Dataset records: one per backup, JSON in the `datasets` column family
//! under the big-endian id (so a scan lists them oldest first), and how
//! users name them (`7`, `latest`, `latest~2`, a label).

use serde::{Deserialize, Serialize};

use super::tree::{Entry, EntryKind};
use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::ids::{BlobId, Tid};
use crate::index::{cf, meta};
use crate::objects::hex_id;
use crate::store::Store;

/// A dataset's number, allocated in commit order (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DatasetId(pub u64);

impl DatasetId {
    /// The index key.
    pub fn key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl std::fmt::Display for DatasetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the index keeps about a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Its number.
    pub id: DatasetId,
    /// When the backup started, ns since the epoch.
    pub time_ns: i64,
    /// The machine it was taken on.
    pub host: String,
    /// The paths backed up, absolute.
    pub sources: Vec<String>,
    /// A label given at backup time.
    pub label: Option<String>,
    /// Tags given at backup time.
    pub tags: Vec<String>,
    /// The tree of the top directory (hex).
    #[serde(with = "hex_id")]
    pub root: BlobId,
    /// Metadata of the top directory when one directory was backed up (a
    /// restore puts it on the target); none when the top is made up.
    pub root_meta: Option<Entry>,
    /// Regular files.
    pub files: u64,
    /// Directories (the top one not counted).
    pub dirs: u64,
    /// Symlinks, fifos and devices.
    pub others: u64,
    /// Sum of file sizes.
    pub logical_bytes: u64,
    /// Bytes this backup added to the store's containers.
    pub bytes_added: u64,
    /// Entries that could not be read and are missing from the dataset.
    pub skipped: u64,
    /// The dataset whose unchanged files this one reused without reading.
    pub parent: Option<DatasetId>,
    /// The commit that made it.
    pub tid: Tid,
    /// Seconds the backup took.
    pub seconds: f64,
    /// When `forget --expired` may drop it, ns since the epoch (`backup --expire-after`).
    #[serde(default)]
    pub expires_ns: Option<i64>,
}

impl DatasetRecord {
    /// A record naming `root`, made at `time_ns` by commit `tid`, of one
    /// source, with no counts, label, tags or parent: for records cairn
    /// makes itself, and for tests.
    pub fn bare(id: DatasetId, root: BlobId, time_ns: i64, source: &str, tid: Tid) -> DatasetRecord {
        DatasetRecord {
            id,
            time_ns,
            host: String::new(),
            sources: vec![source.into()],
            label: None,
            tags: Vec::new(),
            root,
            root_meta: None,
            files: 0,
            dirs: 0,
            others: 0,
            logical_bytes: 0,
            bytes_added: 0,
            skipped: 0,
            parent: None,
            tid,
            seconds: 0.0,
            expires_ns: None,
        }
    }

    /// The entry of the top directory, for walking.
    pub fn root_entry(&self) -> Entry {
        let mut entry = self.root_meta.clone().unwrap_or_else(|| Entry {
            mtime_ns: self.time_ns,
            atime_ns: self.time_ns,
            ctime_ns: self.time_ns,
            ..Entry::bare(b"", EntryKind::Dir, 0, None)
        });
        entry.kind = EntryKind::Dir;
        entry.blob = Some(self.root);
        entry
    }

    /// The sources as one string for tables.
    pub fn source(&self) -> String {
        self.sources.join(" ")
    }
}

pub(crate) fn decode_record(key: &[u8], bytes: &[u8]) -> Result<DatasetRecord> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadStore {
        path: "datasets".into(),
        reason: format!("dataset record {key:?} does not parse: {e}"),
    })
}

/// Allocates the next dataset id inside a commit (for everything that
/// makes datasets: backups, clones, tools and tests).
pub fn next_id(commit: &mut Commit<'_>) -> Result<DatasetId> {
    let next = commit
        .current(cf::META, meta::NEXT_DATASET)?
        .map_or(1, |bytes| u64::from_le_bytes(bytes.as_slice().try_into().unwrap_or([1, 0, 0, 0, 0, 0, 0, 0])));
    let after = next.checked_add(1).ok_or_else(|| Error::BadEntry {
        what: "meta next_dataset".into(),
        reason: format!("{next} leaves no id after it"),
    })?;
    commit.put(cf::META, meta::NEXT_DATASET, after.to_le_bytes())?;
    Ok(DatasetId(next))
}

/// Writes a new dataset record in a commit, with its reference on the root.
pub fn put_record(commit: &mut Commit<'_>, record: &DatasetRecord) -> Result<()> {
    commit.put(cf::DATASETS, record.id.key(), serde_json::to_vec(record).expect("records serialize"))
}

impl Store {
    /// Every dataset, oldest first.
    pub fn datasets(&self) -> Result<Vec<DatasetRecord>> {
        self.index()
            .scan(cf::DATASETS, b"")
            .map(|item| {
                let (key, value) = item?;
                decode_record(&key, &value)
            })
            .collect()
    }

    /// Removes the datasets `ids` in one commit, each dropping its reference
    /// on its tree; what only they used becomes garbage for the delete job.
    /// Returns their records. Fails, removing nothing, if one does not exist.
    pub fn forget(&self, ids: &[DatasetId]) -> Result<Vec<DatasetRecord>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let session = self.session()?;
        let (_, records) = session.commit(|commit| {
            let mut records = Vec::new();
            for id in &ids {
                let bytes =
                    commit.index().get(cf::DATASETS, &id.key())?.ok_or_else(|| Error::NoSuchDataset(id.to_string()))?;
                let record = decode_record(&id.key(), &bytes)?;
                commit.delete(cf::DATASETS, id.key())?;
                records.push(record);
            }
            Ok(records)
        })?;
        Ok(records)
    }

    /// The dataset `spec` names: a number, `latest`, `latest~N` (N before
    /// the latest), or a label (the newest dataset with it).
    pub fn dataset(&self, spec: &str) -> Result<DatasetRecord> {
        let no_such = || Error::NoSuchDataset(spec.to_string());
        if let Ok(number) = spec.parse::<u64>() {
            let bytes = self.index().get(cf::DATASETS, &DatasetId(number).key())?.ok_or_else(no_such)?;
            return decode_record(spec.as_bytes(), &bytes);
        }
        let all = self.datasets()?;
        let back = match spec {
            "latest" => Some(0),
            _ => spec.strip_prefix("latest~").map(|n| n.parse::<usize>().map_err(|_| no_such())).transpose()?,
        };
        match back {
            Some(back) => all.into_iter().rev().nth(back).ok_or_else(no_such),
            None => all.into_iter().rev().find(|d| d.label.as_deref() == Some(spec)).ok_or_else(no_such),
        }
    }
}
