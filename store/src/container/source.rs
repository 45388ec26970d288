//! [`ContainerSource`]: where the bytes of containers this store holds no
//! file for come from. Today that is an S3 bucket (`remote::RemoteSource`,
//! for a store attached from a remote or a `--remote` read); the store
//! server is meant to be another. `container/` knows only this trait, so
//! nothing here depends on S3 or on anything else above it.
//!
//! The contract every source keeps:
//! - **Ranges.** `read_ranges` fetches byte ranges `(container, start,
//!   len)`, as many at once as the source sees fit (a remote keeps many
//!   requests in flight), and answers in the order asked, one result per
//!   range. An `Ok` holds the bytes of that range and nothing more; it may
//!   be shorter only where the container ends (the caller checks every
//!   record it cuts from it, so a short answer is damage, never a panic).
//! - **Ranges as the receiver asks.** `read_ranges_each` starts a range
//!   only when its [`RangeSink`] says so (`next`: this one, not yet, or
//!   done), keeps at most `jobs` in flight, and hands each to `landed` as
//!   it lands, in any order, exactly once for each range started. It never
//!   lets a sink that says "not yet" stop responses in flight from
//!   landing, and asks it again within a few milliseconds: the receiver
//!   holds back requests while its memory is full, and asks at once for a
//!   range a reader waits for.
//! - **Whole reads.** `read_all` returns a whole container, bounded by the
//!   longest a container can be (a source never accepts an unbounded body).
//! - **Retries.** A source retries what is worth retrying (timeouts,
//!   throttling, server errors) itself, within its own bounds; an error it
//!   returns is final for this read.
//! - **Errors.** `Error::RemoteNotFound` when the source has no such
//!   container (the store and the source disagree: a damaged or partial
//!   copy); `Error::Remote` for anything else about reaching it, naming
//!   what was read and why. Neither is ever damage of a record: readers
//!   check every record's bytes against its id themselves.

use std::fmt;

use crate::error::Result;
use crate::ids::ContainerId;

/// Where containers missing from this store are read from. Its `Display`
/// names it for messages (`s3://bucket/prefix at http://host`).
pub trait ContainerSource: Send + Sync + fmt::Display {
    /// Byte ranges `(container, start, len)`; results in the order asked.
    fn read_ranges(&self, ranges: &[(ContainerId, u64, u64)]) -> Vec<Result<Vec<u8>>>;

    /// The same ranges, at most `jobs` requests in flight, fetched when
    /// and in the order `sink` asks ([`RangeSink::next`]), each passed to
    /// [`RangeSink::landed`] as soon as it lands (any order, exactly once
    /// for each range started). The sink never blocks the source: while it
    /// answers [`NextRange::NotYet`], responses in flight keep landing and
    /// it is asked again at least every few milliseconds.
    fn read_ranges_each(&self, ranges: &[(ContainerId, u64, u64)], jobs: usize, sink: &mut dyn RangeSink);

    /// A whole container.
    fn read_all(&self, id: ContainerId) -> Result<Vec<u8>>;
}

/// What a [`RangeSink`] wants fetched next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextRange {
    /// Start the range of this index now.
    Start(usize),
    /// Nothing for now (memory is full): ask again soon.
    NotYet,
    /// Nothing more: start no other range.
    Done,
}

/// Where ranges that [`ContainerSource::read_ranges_each`] fetches go, and
/// what it fetches next: the receiver decides, so that it can hold back
/// requests while its memory is full and still ask at once for a range a
/// reader waits for. Neither method may block: the source calls both from
/// the loop that drives the requests in flight.
pub trait RangeSink {
    /// Which range to request next.
    fn next(&mut self) -> NextRange;
    /// Range `index` landed (or failed).
    fn landed(&mut self, index: usize, result: Result<Vec<u8>>);
}
