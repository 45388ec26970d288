//! Streaming content into a session, and back out of the store, in parallel
//! with bounded memory.
//!
//! In: one thread reads and chunks (FastCDC is sequential by nature); a
//! second hashes each batch, asks the index about every chunk and compresses
//! the new ones on all cores (rayon); the caller's thread appends them to the
//! session's containers in order. Bounded channels join the stages, so at
//! most `2 * QUEUE_DEPTH + 3` batches are in memory.
//!
//! Out: one thread walks the content list and reads, decompresses and
//! verifies batches of chunks on all cores; the caller's thread writes them
//! out in order.

use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::mpsc::{SyncSender, sync_channel};

use rayon::prelude::*;

use cairn_chunker::{ChunkBatch, all_zero};

use crate::container::{EncodedBlob, encode_blob};
use crate::content::{ContentBuilder, ContentEntry, ContentReader, ContentRef};
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind};
use crate::session::WriteSession;
use crate::store::Store;

/// Bytes per batch (about 128 chunks at the default chunk size). Measured:
/// 4 MiB is no faster (the pipeline fills and drains more slowly), and
/// smaller batches pay more in thread wake-ups.
const BATCH_BYTES: usize = 1 << 20;
/// Chunks per batch when reading content back out.
const BATCH_CHUNKS: usize = 128;
/// Batches waiting between the reading thread and the processing one.
const QUEUE_DEPTH: usize = 4;
/// The same for each large file of a backup, where many files are read at
/// once (four a core): one batch ahead is enough to keep the cores busy,
/// and each batch more held 1 MiB per file. A first backup of `/usr/lib`
/// peaked at 146-159 MiB with one against 160-177 with four, in the same
/// 12.2-12.6 s (three rounds each); one 1.3 GB file took 3.57-3.61 s
/// against 3.50-3.84.
const FILE_QUEUE_DEPTH: usize = 1;

/// Counts of one ingest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Chunks read.
    pub chunks: u64,
    /// Chunks that were new to the store and written.
    pub new_chunks: u64,
    /// Raw bytes of the new chunks.
    pub new_bytes: u64,
}

/// A chunk after the parallel stage: its id, its length, and what to
/// write unless the index already had it.
struct Prepared {
    id: BlobId,
    len: u64,
    new: Option<NewChunk>,
    /// The index had no entry for it at all (not even one at refs 0).
    absent: bool,
}

/// What a new chunk is written as.
enum NewChunk {
    /// A record of its own, compressed in the parallel stage.
    Record(EncodedBlob),
    /// Its plaintext, read from the batch when it is appended to a frame
    /// (a store with frames compresses frames, not chunks): no copy of
    /// the chunk is made until the frame takes it.
    Plain,
}

/// Reads `source` to its end into `session` and returns its content list.
/// `what` names the source in errors; `progress` is called with the bytes
/// read after each batch.
///
/// Three stages overlap, joined by bounded channels: a thread chunks; a
/// second hashes, looks up and compresses each batch on all cores; the
/// caller's thread appends in order. A chunk the index does not know yet but
/// an earlier in-flight batch of this session wrote is compressed twice and
/// written once (`write_blob` skips what the session wrote): rare, and
/// harmless.
pub fn ingest<R: Read + Send>(
    session: &WriteSession,
    source: R,
    what: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(ContentRef, IngestStats)> {
    let chunker = session.chunker().clone();
    let mut builder = ContentBuilder::new();
    let mut stats = IngestStats::default();
    std::thread::scope(|scope| {
        let (raw_sender, raw_receiver) = sync_channel::<std::io::Result<ChunkBatch>>(QUEUE_DEPTH);
        let (prepared_sender, prepared_receiver) = sync_channel::<Result<(ChunkBatch, Vec<Prepared>)>>(QUEUE_DEPTH);
        scope.spawn(move || chunk_batches(chunker.stream(source), &raw_sender));
        scope.spawn(move || {
            for batch in raw_receiver {
                let prepared = batch
                    .map_err(|source| Error::Input { what: what.to_string(), cause: source })
                    .and_then(|batch| prepare(session, &batch).map(|prepared| (batch, prepared)));
                let failed = prepared.is_err();
                if prepared_sender.send(prepared).is_err() || failed {
                    return;
                }
            }
        });
        for prepared in prepared_receiver {
            let (batch, prepared) = prepared?;
            store_prepared(session, &mut builder, &mut stats, &batch, prepared)?;
            progress(stats.bytes_read);
        }
        Ok::<(), Error>(())
    })?;
    Ok((builder.finish(session)?, stats))
}

/// Files up to this size are read whole and chunked on the calling thread;
/// bigger ones get a chunking thread of their own, so chunking overlaps
/// hashing and compression.
const SMALL_FILE: u64 = 4 << 20;

/// Reads one file of a backup into `session`; meant to run on a rayon
/// worker, many files at once. `size` is what `lstat` said (a hint).
/// `progress` is called with the bytes of each batch as it is stored.
pub fn ingest_file<R: Read + Send>(
    session: &WriteSession,
    mut source: R,
    size: u64,
    what: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(ContentRef, IngestStats)> {
    let chunker = session.chunker().clone();
    let mut builder = ContentBuilder::new();
    let mut stats = IngestStats::default();
    let input = |cause| Error::Input { what: what.to_string(), cause };
    if size <= SMALL_FILE {
        // One byte past the expected size is enough to see that the file
        // grew (the caller then skips it as changed), and bounds memory.
        let batch_bytes = BATCH_BYTES.min(size as usize + 1);
        let mut stream = chunker.stream((&mut source).take(size + 1));
        while let Some(batch) = stream.next_batch(batch_bytes).map_err(input)? {
            store_batch(session, &mut builder, &mut stats, &batch, progress)?;
        }
    } else {
        std::thread::scope(|scope| {
            let (sender, receiver) = sync_channel::<std::io::Result<ChunkBatch>>(FILE_QUEUE_DEPTH);
            scope.spawn(move || chunk_batches(chunker.stream(source), &sender));
            for batch in receiver {
                store_batch(session, &mut builder, &mut stats, &batch.map_err(input)?, progress)?;
            }
            Ok::<(), Error>(())
        })?;
    }
    Ok((builder.finish(session)?, stats))
}

/// Prepares a batch on all cores and stores it.
fn store_batch(
    session: &WriteSession,
    builder: &mut ContentBuilder,
    stats: &mut IngestStats,
    batch: &ChunkBatch,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let before = stats.bytes_read;
    store_prepared(session, builder, stats, batch, prepare(session, batch)?)?;
    progress(stats.bytes_read - before);
    Ok(())
}

/// Sends the stream's chunks in batches of about `BATCH_BYTES` until it
/// ends, fails, or the receiver hangs up.
fn chunk_batches<R: Read>(mut stream: cairn_chunker::ChunkStream<R>, sender: &SyncSender<std::io::Result<ChunkBatch>>) {
    loop {
        let batch = match stream.next_batch(BATCH_BYTES) {
            Ok(Some(batch)) => Ok(batch),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = batch.is_err();
        if sender.send(batch).is_err() || failed {
            return;
        }
    }
}

/// Appends a prepared batch to the session and the content list, in order.
fn store_prepared(
    session: &WriteSession,
    builder: &mut ContentBuilder,
    stats: &mut IngestStats,
    batch: &ChunkBatch,
    prepared: Vec<Prepared>,
) -> Result<()> {
    for (i, chunk) in prepared.into_iter().enumerate() {
        let written = match &chunk.new {
            None => false,
            Some(NewChunk::Record(blob)) => session.write_blob_seen(blob, chunk.absent)?,
            Some(NewChunk::Plain) => session.write_plain_chunk(chunk.id, batch.chunk(i), chunk.absent)?,
        };
        if written {
            stats.new_chunks += 1;
            stats.new_bytes += chunk.len;
        }
        stats.chunks += 1;
        stats.bytes_read += chunk.len;
        builder.push(session, chunk.id, chunk.len)?;
    }
    Ok(())
}

/// Hashes a batch, asks the index about each chunk, and compresses the ones
/// it does not have with a reference (in parallel, in order). The lookups
/// are one sorted batched multi-get: several times cheaper than a get per
/// chunk, which was a tenth of put's CPU.
fn prepare(session: &WriteSession, batch: &ChunkBatch) -> Result<Vec<Prepared>> {
    let store = session.store();
    let key = store.keys_for_writing()?.key(BlobKind::Data);
    // Chunks of zeros (holes, preallocated images) come in runs of one
    // length: each length is hashed once per batch, not once per chunk.
    let zero_ids: Mutex<Vec<(usize, BlobId)>> = Mutex::new(Vec::new());
    let id_of = |data: &[u8]| {
        if !all_zero(data) {
            return BlobId::keyed(key, data);
        }
        let known =
            zero_ids.lock().expect("zero ids poisoned").iter().find(|(len, _)| *len == data.len()).map(|(_, id)| *id);
        known.unwrap_or_else(|| {
            let id = BlobId::keyed(key, data);
            zero_ids.lock().expect("zero ids poisoned").push((data.len(), id));
            id
        })
    };
    let ids: Vec<BlobId> = (0..batch.len()).into_par_iter().map(|i| id_of(batch.chunk(i))).collect();
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_unstable_by_key(|&i| ids[i]);
    let sorted: Vec<BlobId> = order.iter().map(|&i| ids[i]).collect();
    let (mut known, mut absent) = (vec![false; ids.len()], vec![false; ids.len()]);
    for (&i, (missing, none)) in order.iter().zip(session.lookup(&sorted)?) {
        known[i] = !missing;
        absent[i] = none;
    }
    // A store with frames takes new chunks as plaintext: the session
    // compresses them together (`session.rs`).
    let (frames, codec) = (store.config().frames(), store.codec());
    Ok((0..batch.len())
        .into_par_iter()
        .zip(ids)
        .zip(known)
        .zip(absent)
        .map(|(((i, id), known), absent)| {
            let data = batch.chunk(i);
            let new = match (known, frames) {
                (true, _) => None,
                (false, true) => Some(NewChunk::Plain),
                (false, false) => Some(NewChunk::Record(encode_blob(id, BlobKind::Data, data, codec))),
            };
            Prepared { id, len: data.len() as u64, new, absent }
        })
        .collect())
}

/// Writes the content under `root` to `out`, every chunk checked against its
/// id. `progress` is called with the bytes written so far.
///
/// `size` is the length the record naming the content gives: content that
/// comes to any other length is an error ([`Error::WrongLength`]), and
/// nothing past `size` is written, so a crafted content list that repeats
/// one chunk a million times costs a read, not a full disk.
pub fn extract<W: Write + ?Sized>(
    store: &Store,
    root: BlobId,
    size: u64,
    out: &mut W,
    what: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let mut written = 0u64;
    let wrong = |actual: u64, over: bool| Error::WrongLength { what: what.to_string(), expected: size, actual, over };
    std::thread::scope(|scope| {
        let (sender, receiver) = sync_channel::<Result<Vec<Vec<u8>>>>(QUEUE_DEPTH);
        scope.spawn(move || {
            let mut reader = match ContentReader::new(store, root) {
                Ok(reader) => reader,
                Err(e) => {
                    let _ = sender.send(Err(e));
                    return;
                }
            };
            loop {
                let batch = reader.next_batch(BATCH_CHUNKS).and_then(|entries| read_chunks(store, &entries));
                let stop = batch.as_ref().map_or(true, |chunks| chunks.is_empty());
                if sender.send(batch).is_err() || stop {
                    return;
                }
            }
        });
        for batch in receiver {
            for chunk in batch? {
                if written + chunk.len() as u64 > size {
                    // Dropping the receiver stops the reading thread.
                    return Err(wrong(written + chunk.len() as u64, true));
                }
                out.write_all(&chunk).map_err(|e| Error::Output { what: what.to_string(), cause: e })?;
                written += chunk.len() as u64;
            }
            progress(written);
        }
        Ok::<(), Error>(())
    })?;
    if written != size {
        return Err(wrong(written, false));
    }
    out.flush().map_err(|e| Error::Output { what: what.to_string(), cause: e })?;
    Ok(written)
}

/// A chunk's bytes, if they are as long as the content list says.
pub(crate) fn check_length<B: std::ops::Deref<Target = [u8]>>(entry: &ContentEntry, data: B) -> Result<B> {
    if data.len() as u64 != entry.len {
        return Err(Error::Malformed {
            what: "content list",
            blob: entry.id,
            reason: format!("names a {}-byte chunk that is {} bytes", entry.len, data.len()),
        });
    }
    Ok(data)
}

/// Reads chunks in parallel, checking each against its id and length.
/// Chunks of containers on a remote come in a few ranged GETs.
pub fn read_chunks(store: &Store, entries: &[ContentEntry]) -> Result<Vec<Vec<u8>>> {
    let ids: Vec<BlobId> = entries.iter().map(|e| e.id).collect();
    let located = store
        .index()
        .blobs(&ids)?
        .into_iter()
        .zip(&ids)
        .map(|(located, id)| located.filter(|e| !e.is_orphan()).ok_or(Error::MissingBlob(*id)))
        .collect::<Result<Vec<_>>>()?;
    let items: Vec<_> = located.iter().zip(&ids).map(|(entry, id)| (entry.container, entry.record(*id))).collect();
    let read = store.files().read_many(&items);
    entries
        .par_iter()
        .zip(read.into_par_iter().zip(located.into_par_iter()))
        .map(|(entry, (data, located))| {
            let data = match data {
                // Moved by a compaction since the lookup: find it again.
                Err(error) if error.is_not_found() => store.read_located(&entry.id, located)?,
                data => data?,
            };
            check_length(entry, data)
        })
        .collect()
}
