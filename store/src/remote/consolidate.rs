//! Consolidating index deltas. Every push that uploads containers adds one
//! delta, and `attach` reads them all, so on a remote pushed to every hour
//! they pile up into thousands of GETs. Past [`CONSOLIDATE_DELTAS`], a push
//! replaces them with one delta naming every container the remote holds.
//!
//! Safe at any cut: the new delta is written first, then the old ones are
//! deleted. A cut in between leaves both, which readers merge (a container
//! named twice is the same container). Only a push makes this change, under
//! its claim on the remote (`writer.rs`), so no other writer adds a delta
//! meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;

use super::client::MAX_SINGLE_PUT_OBJECT;
use super::push::parallel;
use super::{Delta, DeltaContainer, RemoteClient};
use crate::error::{Error, Result};
use crate::ids::{ContainerId, Tid};

/// Deltas on a remote past which a push consolidates them.
pub const CONSOLIDATE_DELTAS: usize = 32;

/// Replaces the deltas `keys` with one naming each container of `live`
/// (id and length: what the remote holds after this push) that they name.
/// Returns how many deltas it replaced.
pub fn consolidate(client: &RemoteClient, keys: &[String], live: &HashMap<ContainerId, u64>, tid: Tid) -> Result<u64> {
    let never = AtomicBool::new(false);
    let mut read: Vec<(String, Delta)> = Vec::new();
    for result in parallel(8, keys, &never, |key| {
        let bytes = client
            .get(key, MAX_SINGLE_PUT_OBJECT)?
            .ok_or_else(|| Error::RemoteNotFound { what: format!("reading {key}") })?;
        Ok((key.clone(), Delta::decode(key, &bytes)?))
    }) {
        read.push(result?);
    }
    // In key order (tid, then time), so a container named again by a
    // later delta takes the later table.
    read.sort_by(|a, b| a.0.cmp(&b.0));
    let mut containers: BTreeMap<ContainerId, DeltaContainer> = BTreeMap::new();
    for (_, delta) in read {
        for container in delta.containers {
            if live.get(&container.id) == Some(&container.len) {
                containers.insert(container.id, container);
            }
        }
    }
    let merged = Delta { containers: containers.into_values().collect() };
    let location = client.location();
    client.put(&location.delta_key(tid, crate::clock::now_ns_unsigned()), merged.encode())?;
    client.delete(keys)?;
    Ok(keys.len() as u64)
}
