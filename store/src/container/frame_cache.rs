//! Frames decoded lately, shared by every reader of a store: the members
//! of one frame are read one by one (a restore's files, `cat`'s chunks,
//! `check`'s records), and each read would otherwise decode the whole
//! frame again. Containers are never modified and their ids never reused,
//! so a decoded frame never goes stale.
//!
//! A frame is decoded once however many readers want it at the same time:
//! the first reads and decodes it, the others wait for it (a restore's
//! threads write neighbouring small files, whose chunks share frames;
//! without the wait, a local restore decoded most frames several times
//! and ran at 414 MiB/s instead of 520).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::container::frame::Frame;
use crate::error::Result;
use crate::ids::ContainerId;

/// Frames kept: 32 MiB of plaintext for a store of 512 KiB frames (16 MiB
/// for one of 256 KiB), enough for every thread of a restore working
/// through neighbouring files.
const FRAMES_KEPT: usize = 64;

/// Where a frame is: its container and its record's offset.
type Place = (ContainerId, u64);

/// The most recently decoded frames, newest last, and those being decoded.
#[derive(Default)]
pub(crate) struct FrameCache {
    state: Mutex<Frames>,
    decoded: Condvar,
    /// Frames decoded so far (`ContainerFiles::frames_decoded`).
    decodes: AtomicU64,
}

#[derive(Default)]
struct Frames {
    kept: VecDeque<(Place, Arc<Frame>)>,
    decoding: HashSet<Place>,
}

impl Frames {
    fn take(&mut self, place: Place) -> Option<Arc<Frame>> {
        let at = self.kept.iter().rposition(|(p, _)| *p == place)?;
        let found = self.kept.remove(at).expect("found above");
        let frame = found.1.clone();
        self.kept.push_back(found);
        Some(frame)
    }
}

impl FrameCache {
    /// Frames decoded so far.
    pub(crate) fn decodes(&self) -> u64 {
        self.decodes.load(Ordering::Relaxed)
    }

    /// The frame at `place`, if it was decoded lately.
    pub(crate) fn get(&self, place: Place) -> Option<Arc<Frame>> {
        self.state.lock().expect("frame cache poisoned").take(place)
    }

    /// The frame at `place`: kept, or being decoded by another reader
    /// (waited for), or decoded by `decode` here. A failed decode is not
    /// kept; a reader that waited for it tries itself.
    pub(crate) fn get_or_decode(&self, place: Place, decode: impl FnOnce() -> Result<Frame>) -> Result<Arc<Frame>> {
        let mut state = self.state.lock().expect("frame cache poisoned");
        loop {
            if let Some(frame) = state.take(place) {
                return Ok(frame);
            }
            if !state.decoding.contains(&place) {
                break;
            }
            state = self.decoded.wait(state).expect("frame cache poisoned");
        }
        state.decoding.insert(place);
        drop(state);
        self.decodes.fetch_add(1, Ordering::Relaxed);
        let decoded = decode().map(Arc::new);
        let mut state = self.state.lock().expect("frame cache poisoned");
        state.decoding.remove(&place);
        if let Ok(frame) = &decoded {
            if state.kept.len() >= FRAMES_KEPT {
                state.kept.pop_front();
            }
            state.kept.push_back((place, frame.clone()));
        }
        drop(state);
        self.decoded.notify_all();
        decoded
    }
}
