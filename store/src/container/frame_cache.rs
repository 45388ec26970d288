//! Frames decoded lately, shared by every reader of a store: the members
//! of one frame are read one by one (a restore's files, `cat`'s chunks,
//! `check`'s records), and each read would otherwise decode the whole
//! frame again. Containers are never modified and their ids never reused,
//! so a decoded frame never goes stale.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::container::frame::Frame;
use crate::ids::ContainerId;

/// Frames kept: 16 MiB of plaintext at the default frame size, enough for
/// every thread of a restore working through neighbouring files.
const FRAMES_KEPT: usize = 64;

/// Where a frame is: its container and its record's offset.
type Place = (ContainerId, u64);

/// The most recently decoded frames, newest last.
#[derive(Default)]
pub(crate) struct FrameCache {
    frames: Mutex<VecDeque<(Place, Arc<Frame>)>>,
}

impl FrameCache {
    /// The frame at `place`, if it was decoded lately.
    pub(crate) fn get(&self, place: Place) -> Option<Arc<Frame>> {
        let mut frames = self.frames.lock().expect("frame cache poisoned");
        let at = frames.iter().rposition(|(p, _)| *p == place)?;
        let found = frames.remove(at).expect("found above");
        let frame = found.1.clone();
        frames.push_back(found);
        Some(frame)
    }

    /// Keeps `frame`, decoded from `place`, forgetting the oldest.
    pub(crate) fn insert(&self, place: Place, frame: Arc<Frame>) {
        let mut frames = self.frames.lock().expect("frame cache poisoned");
        if frames.iter().any(|(p, _)| *p == place) {
            return;
        }
        if frames.len() >= FRAMES_KEPT {
            frames.pop_front();
        }
        frames.push_back((place, frame));
    }
}
