//! Who may write to a remote: one store, and only one that has seen every
//! commit the remote holds.
//!
//! A push deletes on the remote what the store's index no longer names, so
//! a store that lacks some of the remote's history (a copy restored from an
//! older backup, an attach that was killed half way, the original of an
//! attached store, or a second store pointed at the same prefix) would
//! delete what others wrote. The `store_id` alone cannot tell: copies and
//! attached stores carry it too.
//!
//! So every push is a *claim* first: a new object `writers/<seq>` (one more
//! than the highest there) written with `If-None-Match: *`, which exactly
//! one writer wins. The claim holds a random token that the store records in
//! its index before it writes it (as pending, then as confirmed once the
//! claim is up). A push goes on only if the newest claim on the remote is
//! one this store made, or the remote holds nothing yet; otherwise it is
//! refused, before it changes anything, with a message saying what to do.
//! An attach records the newest claim it found as its own, so the attached
//! store becomes the remote's writer and its original is refused.
//!
//! A server that ignores `If-None-Match` (some S3-compatible ones) lets two
//! racing claims both succeed: a second conditional write of the same key
//! finds that out, and the push then reads its claim back after a pause
//! (300 ms), long enough for a racing claim, which lists the remote just
//! before it writes, to have overwritten it; it says so once.

use serde::{Deserialize, Serialize};

use super::RemoteClient;
use super::client::MAX_JSON_OBJECT;
use crate::error::{Error, Result};
use crate::ids::Tid;
use crate::index::cf;
use crate::store::Store;

/// One claim, as stored under `writers/<seq>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The claiming store's id.
    pub store_id: String,
    /// Random, per claim: what the claiming store remembers.
    pub token: String,
    /// The store's tid when it claimed.
    pub tid: u64,
    /// When, in ns since the epoch.
    pub time_ns: i64,
    /// The claiming machine.
    pub host: String,
}

/// What a store remembers of its claims on one remote (in `meta`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Claims {
    /// The last claim known to be on the remote.
    confirmed: Option<String>,
    /// A claim being written: it may or may not have reached the remote.
    pending: Option<String>,
    /// Whether the remote's server honours `If-None-Match` (found by the
    /// first claim); unknown until then.
    #[serde(default)]
    conditional: Option<bool>,
}

impl Claims {
    fn owns(&self, token: &str) -> bool {
        self.confirmed.as_deref() == Some(token) || self.pending.as_deref() == Some(token)
    }
}

/// The newest claim on the remote, and its sequence number.
pub(crate) fn newest_claim(client: &RemoteClient) -> Result<Option<(u64, Claim)>> {
    let location = client.location();
    let prefix = location.writers_prefix();
    let newest = client
        .list(&prefix)?
        .into_iter()
        .filter_map(|object| {
            let name = object.key.strip_prefix(&prefix)?;
            (name.len() == 16).then(|| u64::from_str_radix(name, 16).ok()).flatten()
        })
        .max();
    let Some(seq) = newest else { return Ok(None) };
    let key = location.writer_key(seq);
    let bytes =
        client.get(&key, MAX_JSON_OBJECT)?.ok_or_else(|| Error::RemoteNotFound { what: format!("reading {key}") })?;
    let claim = serde_json::from_slice(&bytes).map_err(|e| Error::Remote {
        what: format!("reading {key} on {}", client.spec()),
        reason: format!("it is not a cairn writer claim ({e}); the remote is damaged or not cairn's"),
    })?;
    Ok(Some((seq, claim)))
}

impl Store {
    /// The `meta` key of this store's claims on the remote behind `client`.
    fn claims_key(client: &RemoteClient) -> Vec<u8> {
        format!("remote-claims:{}", client.spec().url).into_bytes()
    }

    fn claims(&self, client: &RemoteClient) -> Result<Claims> {
        match self.index().get(cf::META, &Store::claims_key(client))? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::BadEntry {
                what: String::from_utf8_lossy(&Store::claims_key(client)).into_owned(),
                reason: e.to_string(),
            }),
            None => Ok(Claims::default()),
        }
    }

    fn save_claims(&self, client: &RemoteClient, claims: &Claims) -> Result<()> {
        let _commit = self.inner.lock_commits();
        let mut batch = rocksdb::WriteBatch::default();
        let json = serde_json::to_vec(claims).expect("claims serialize");
        batch.put_cf(self.index().cf(cf::META), Store::claims_key(client), json);
        self.index().write(batch, true)
    }

    /// Records `claim` (read from the remote by an attach) as this store's
    /// own: the attached store has seen everything up to it.
    pub(crate) fn adopt_claim(&self, client: &RemoteClient, claim: Option<&Claim>) -> Result<()> {
        let claims = Claims { confirmed: claim.map(|c| c.token.clone()), pending: None, conditional: None };
        self.save_claims(client, &claims)
    }

    /// Whether this store may push to the remote: the sequence number its
    /// claim would take, or the reason it may not (see the module
    /// documentation). Reads only.
    pub(crate) fn may_push(&self, client: &RemoteClient) -> Result<u64> {
        let spec = client.spec();
        let location = client.location();
        let claims = self.claims(client)?;
        let newest = newest_claim(client)?;
        let seq = match &newest {
            None => {
                let legacy = client.get(&location.config_key(), MAX_JSON_OBJECT)?.is_some()
                    || !client.list(&location.containers_prefix())?.is_empty();
                if legacy {
                    return Err(Error::Remote {
                        what: format!("pushing to {spec}"),
                        reason: "it holds a store but no writer claim (an older cairn wrote it, or something \
                                 else did): push to another prefix; attach it to read it"
                            .into(),
                    });
                }
                1
            }
            Some((_, claim)) if claim.store_id != self.config().store_id => {
                return Err(Error::Remote {
                    what: format!("pushing to {spec}"),
                    reason: format!(
                        "it holds another store ({}, this one is {}); push to another prefix, or `cairn attach` \
                         it to work with that store",
                        claim.store_id,
                        self.config().store_id
                    ),
                });
            }
            Some((_, claim)) if !claims.owns(&claim.token) => {
                return Err(Error::Remote {
                    what: format!("pushing to {spec}"),
                    reason: format!(
                        "the remote holds commits this store has never seen (the last push there was from {} \
                         at its tid {}): another copy of this store pushed to it, or this store was restored \
                         from an older copy. To go on from the remote, `cairn attach` it into a new \
                         directory; to keep this store's history, push it to another prefix",
                        claim.host, claim.tid
                    ),
                });
            }
            Some((seq, _)) => seq.checked_add(1).ok_or_else(|| Error::Remote {
                what: format!("pushing to {spec}"),
                reason: format!(
                    "its newest writer claim is number {seq}, after which none can follow; the remote is damaged"
                ),
            })?,
        };
        Ok(seq)
    }

    /// Claims the remote for a push as number `seq` (from [`Store::may_push`]),
    /// before anything there changes; fails if another writer took it.
    pub(crate) fn claim_for_push(&self, client: &RemoteClient, seq: u64, tid: Tid) -> Result<()> {
        let spec = client.spec();
        let location = client.location();
        let mut claims = self.claims(client)?;
        let claim = Claim {
            store_id: self.config().store_id.clone(),
            token: crate::config::random_id(),
            tid: tid.0,
            time_ns: now_ns(),
            host: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        // Pending first: if the claim reaches the remote and this process
        // dies before confirming it, the next push still knows it.
        claims.pending = Some(claim.token.clone());
        self.save_claims(client, &claims)?;
        let key = location.writer_key(seq);
        let body = serde_json::to_vec_pretty(&claim).expect("claims serialize");
        let lost = || Error::Remote {
            what: format!("pushing to {spec}"),
            reason: "another push claimed the remote at the same moment; only one store may write to a prefix: \
                     if that was another copy of this store, `cairn attach` the remote into a new directory"
                .into(),
        };
        if !client.put_if_absent(&key, body.clone())? {
            return Err(lost());
        }
        // A server that honours If-None-Match refuses this second write;
        // asked once per remote.
        let conditional = match claims.conditional {
            Some(known) => known,
            None => !client.put_if_absent(&key, body)?,
        };
        claims.conditional = Some(conditional);
        if !conditional {
            warn_unconditional(spec);
            // A racing claim listed the remote before ours went up, so it
            // writes within moments of ours: after a pause, the claim that
            // stays is the last one written, and only its writer goes on.
            std::thread::sleep(std::time::Duration::from_millis(300));
            let back =
                client.get(&key, MAX_JSON_OBJECT)?.and_then(|bytes| serde_json::from_slice::<Claim>(&bytes).ok());
            if back.as_ref().map(|c| &c.token) != Some(&claim.token) {
                return Err(lost());
            }
        }
        claims.confirmed = Some(claim.token);
        claims.pending = None;
        self.save_claims(client, &claims)
    }
}

/// Deletes claims older than the last few before `seq` (at the end of a
/// push, after its uploads): only the newest matters, the rest is history.
pub(crate) fn prune_claims(client: &RemoteClient, seq: u64) -> Result<()> {
    const KEEP: u64 = 8;
    if seq <= KEEP {
        return Ok(());
    }
    let location = client.location();
    let old: Vec<String> = (seq.saturating_sub(64).max(1)..seq - KEEP).map(|s| location.writer_key(s)).collect();
    client.delete(&old)
}

/// Says once per process that the server ignores conditional writes.
fn warn_unconditional(spec: &super::RemoteSpec) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            remote = %spec,
            "this S3 server ignores If-None-Match: cairn reads its claims back instead, which does not stop \
             two pushes from two stores that start within milliseconds of each other"
        );
    });
}

fn now_ns() -> i64 {
    crate::clock::now_ns()
}
