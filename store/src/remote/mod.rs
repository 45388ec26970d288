//! Remotes: S3 buckets (AWS, or any S3-compatible server) holding a copy of
//! a store, so that any machine with credentials can list, browse and
//! restore its datasets.
//!
//! Layout under `s3://BUCKET/PREFIX/` (see `docs/format.md`):
//!
//! ```text
//! config                 the store's settings and id (JSON)
//! containers/<16 hex>    sealed containers, byte for byte as on disk
//! index/<tid>-<time>     index deltas: the footer tables of the containers
//!                        one push uploaded (see `delta.rs`)
//! datasets/<16 hex>      dataset records (JSON)
//! writers/<16 hex>       writer claims: which store pushed last (`writer.rs`)
//! ```
//!
//! Only one store writes to a remote, and only one that has seen all of it:
//! every push first claims the remote with a create-only write, and is
//! refused if the newest claim there is not its own (see `writer.rs`).
//!
//! A push uploads, in this order: the index delta naming the containers it
//! is about to upload, the containers, the dataset records, and only then
//! deletes dataset records and containers the local index no longer names.
//! So every container on the remote is named by a delta that arrived before
//! it, every dataset record arrives after all the containers it uses, and a
//! container is deleted only after no dataset record on the remote can need
//! it. A reader takes a delta's entries only for containers it finds listed.
//!
//! Credentials come from the AWS SDK's standard chain and are never written
//! into the store; `remotes.json` holds only where the remote is.

mod attach;
mod client;
mod consolidate;
mod delta;
mod fetch;
mod push;
mod remote_blobs;
mod writer;

pub use attach::{AttachMode, AttachReport};
pub use client::{MAX_JSON_OBJECT, MAX_SINGLE_PUT_OBJECT, RemoteClient, RemoteObject};
#[cfg(test)]
pub(crate) use delta::sample as sample_delta;
pub use delta::{Delta, DeltaContainer};
pub use fetch::RemoteSource;
pub use push::{PushOptions, PushReport};

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::write_atomically;
use crate::dataset::DatasetId;
use crate::error::{Error, Result};
use crate::ids::{ContainerId, Tid};

/// Where a remote is: the bucket and prefix, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSpec {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); none for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// The region; none to take it from the SDK's chain (or `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style addressing (`ENDPOINT/BUCKET/KEY`), which most
    /// S3-compatible servers need.
    #[serde(default)]
    pub path_style: bool,
}

impl RemoteSpec {
    /// A spec for `url` with the given options; checks the url's shape.
    pub fn new(
        url: &str,
        endpoint_url: Option<String>,
        region: Option<String>,
        path_style: bool,
    ) -> Result<RemoteSpec> {
        let spec = RemoteSpec { url: url.trim_end_matches('/').to_string(), endpoint_url, region, path_style };
        spec.location()?;
        if let Some(endpoint) = &spec.endpoint_url
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(Error::Usage(format!(
                "--endpoint-url '{endpoint}' must start with http:// or https:// (like http://127.0.0.1:9000)"
            )));
        }
        Ok(spec)
    }

    /// The bucket and the key prefix (empty, or ending in `/`).
    pub fn location(&self) -> Result<Location> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "'{}' is not a remote: {why}; write it as s3://BUCKET or s3://BUCKET/PREFIX",
                self.url
            ))
        };
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket name is empty"));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        Ok(Location { bucket: bucket.to_string(), prefix })
    }
}

impl fmt::Display for RemoteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)?;
        if let Some(endpoint) = &self.endpoint_url {
            write!(f, " at {endpoint}")?;
        }
        Ok(())
    }
}

/// A bucket and a key prefix, and the keys of everything under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The bucket.
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

impl Location {
    /// The store's settings.
    pub fn config_key(&self) -> String {
        format!("{}config", self.prefix)
    }

    /// Where containers are listed from.
    pub fn containers_prefix(&self) -> String {
        format!("{}containers/", self.prefix)
    }

    /// One container.
    pub fn container_key(&self, id: ContainerId) -> String {
        format!("{}containers/{id}", self.prefix)
    }

    /// Where dataset records are listed from.
    pub fn datasets_prefix(&self) -> String {
        format!("{}datasets/", self.prefix)
    }

    /// One dataset record.
    pub fn dataset_key(&self, id: DatasetId) -> String {
        format!("{}datasets/{:016x}", self.prefix, id.0)
    }

    /// Where writer claims are listed from (`writer.rs`).
    pub fn writers_prefix(&self) -> String {
        format!("{}writers/", self.prefix)
    }

    /// Writer claim number `seq`.
    pub fn writer_key(&self, seq: u64) -> String {
        format!("{}writers/{seq:016x}", self.prefix)
    }

    /// Where index deltas are listed from.
    pub fn deltas_prefix(&self) -> String {
        format!("{}index/", self.prefix)
    }

    /// A new index delta: ordered by the store's tid, then by time, so two
    /// pushes at the same tid (a resumed one) never overwrite each other.
    pub fn delta_key(&self, tid: Tid, time_ns: u64) -> String {
        format!("{}index/{:016x}-{time_ns:016x}", self.prefix, tid.0)
    }

    /// The container a listed key names, if it names one.
    pub fn container_of(&self, key: &str) -> Option<ContainerId> {
        let name = key.strip_prefix(&self.containers_prefix())?;
        (name.len() == 16).then(|| u64::from_str_radix(name, 16).ok().map(ContainerId)).flatten()
    }

    /// The dataset a listed key names, if it names one.
    pub fn dataset_of(&self, key: &str) -> Option<DatasetId> {
        let name = key.strip_prefix(&self.datasets_prefix())?;
        (name.len() == 16).then(|| u64::from_str_radix(name, 16).ok().map(DatasetId)).flatten()
    }
}

/// `remotes.json` in the store directory: the remotes by name, which one
/// `backup` pushes to by itself, and which one this store was attached from
/// (containers missing locally are read from it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remotes {
    /// Remotes by name.
    pub remotes: BTreeMap<String, RemoteSpec>,
    /// Pushed to after every backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The remote this store was attached from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

const REMOTES_FILE: &str = "remotes.json";

impl Remotes {
    /// Reads `remotes.json` (none is an empty set).
    pub fn load(root: &Path) -> Result<Remotes> {
        let path = root.join(REMOTES_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::BadStore {
                path: root.to_path_buf(),
                reason: format!("{REMOTES_FILE} does not parse ({e}); fix or remove it and add the remotes again"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Remotes::default()),
            Err(e) => Err(Error::io("reading", path, e)),
        }
    }

    /// Writes `remotes.json` atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("remotes serialize");
        write_atomically(&root.join(REMOTES_FILE), &json)
    }

    /// The remote named `name`.
    pub fn get(&self, name: &str) -> Result<&RemoteSpec> {
        self.remotes.get(name).ok_or_else(|| {
            Error::Usage(format!(
                "no remote named '{name}'; list them with `cairn remote list`, add one with `cairn remote add`"
            ))
        })
    }

    /// The remote a `push` without a name goes to: the default, or the
    /// only one.
    pub fn pick(&self, name: Option<&str>) -> Result<(String, RemoteSpec)> {
        let name = match (name, &self.default) {
            (Some(name), _) => name.to_string(),
            (None, Some(default)) => default.clone(),
            (None, None) if self.remotes.len() == 1 => self.remotes.keys().next().expect("one").clone(),
            (None, None) if self.remotes.is_empty() => {
                return Err(Error::Usage(
                    "this store has no remote; add one with `cairn remote add NAME s3://BUCKET/PREFIX`".into(),
                ));
            }
            (None, None) => {
                return Err(Error::Usage(
                    "this store has several remotes and no default: name one (`cairn push NAME`)".into(),
                ));
            }
        };
        let spec = self.get(&name)?.clone();
        Ok((name, spec))
    }
}

/// What the remote's `config` object holds: enough to make a store that
/// reads its containers and keeps deduplicating against them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConfig {
    /// The store's settings.
    pub store: crate::config::StoreConfig,
}
