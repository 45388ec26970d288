//! [`RemoteSource`]: where a store attached from a remote reads the
//! containers it does not hold locally, with ranged GETs of just the
//! records it needs. The client is made on first use, so a store that
//! never misses a container never touches the network.

use std::sync::{Arc, OnceLock};

use super::{RemoteClient, RemoteSpec};
use crate::container::{ContainerSource, NextRange, RangeSink};
use crate::error::{Error, Result};
use crate::ids::ContainerId;

/// Longest container read whole from a remote. `cairn init` refuses a
/// container size above 1 GiB, and a container passes its size by at most
/// one record (a tree, at most 256 MiB); 4 GiB leaves room for stores made
/// through the library with larger ones.
pub const MAX_CONTAINER_LEN: u64 = 4 << 30;

/// Reads containers from a remote, on demand.
pub struct RemoteSource {
    spec: RemoteSpec,
    client: OnceLock<std::result::Result<Arc<RemoteClient>, String>>,
}

impl RemoteSource {
    /// A source for `spec`; connects on first use.
    pub fn new(spec: RemoteSpec) -> RemoteSource {
        RemoteSource { spec, client: OnceLock::new() }
    }

    fn client(&self) -> Result<&RemoteClient> {
        match self.client.get_or_init(|| RemoteClient::new(&self.spec).map(Arc::new).map_err(|e| e.to_string())) {
            Ok(client) => Ok(client),
            Err(reason) => Err(Error::Remote { what: format!("connecting to {}", self.spec), reason: reason.clone() }),
        }
    }
}

impl std::fmt::Display for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

/// Ranged GETs, many in flight, each accepting exactly its range; the
/// client retries with backoff (`CAIRN_S3_MAX_ATTEMPTS`).
impl ContainerSource for RemoteSource {
    /// Byte ranges `(container, start, len)` of containers, fetched
    /// concurrently; results in the order asked.
    fn read_ranges(&self, ranges: &[(ContainerId, u64, u64)]) -> Vec<Result<Vec<u8>>> {
        let client = match self.client() {
            Ok(client) => client,
            Err(_) => return ranges.iter().map(|_| self.client().map(|_| Vec::new())).collect(),
        };
        let keyed: Vec<(String, u64, u64)> =
            ranges.iter().map(|&(id, start, len)| (client.location().container_key(id), start, len)).collect();
        client.get_ranges(&keyed)
    }

    fn read_ranges_each(&self, ranges: &[(ContainerId, u64, u64)], jobs: usize, sink: &mut dyn RangeSink) {
        let client = match self.client() {
            Ok(client) => client,
            Err(_) => {
                // Every range the sink asks for fails alike.
                while let NextRange::Start(i) = sink.next() {
                    sink.landed(i, self.client().map(|_| Vec::new()));
                }
                return;
            }
        };
        let keyed: Vec<(String, u64, u64)> =
            ranges.iter().map(|&(id, start, len)| (client.location().container_key(id), start, len)).collect();
        client.get_ranges_each(&keyed, jobs, sink)
    }

    /// A whole container, at most [`MAX_CONTAINER_LEN`].
    fn read_all(&self, id: ContainerId) -> Result<Vec<u8>> {
        let client = self.client()?;
        let key = client.location().container_key(id);
        client
            .get(&key, MAX_CONTAINER_LEN)?
            .ok_or_else(|| Error::RemoteNotFound { what: format!("reading container {id} from {}", self.spec) })
    }
}
