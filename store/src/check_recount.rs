//! [`Recount`]: the references `cairn check` finds by walking the store,
//! on disk (a [`ScratchMap`] under `TMPDIR`), so that a check's memory does
//! not grow with the store: in hash maps, the recount and the entries it is
//! compared with took about 200 bytes per blob.
//!
//! Each reference is written by merge under the named blob's id: a count
//! of one, what kind of blob the place asks for, and who names it. The
//! merge adds the counts and keeps, for each kind asked for, the first
//! namer (for the message if the blob is of another kind). Reading them
//! back in id order lets the check walk them beside the index's entries.

use crate::error::Result;
use crate::ids::{BlobId, BlobKind};
use crate::refs::Expected;
use crate::scratch::ScratchMap;

/// References written per batch.
const BATCH: usize = 4096;

/// Who names a blob, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Namer {
    /// A metadata blob of this kind (most references: kept small).
    Blob(BlobKind, BlobId),
    /// Anything else (an object, a dataset, the log), described.
    Text(String),
}

impl std::fmt::Display for Namer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Namer::Blob(kind, id) => write!(f, "{kind} {id}"),
            Namer::Text(text) => f.write_str(text),
        }
    }
}

/// The references found to one blob: how many, and each kind of place it
/// is named from (at most five) with the first namer of each.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) count: i64,
    pub(crate) wants: Vec<(Expected, Namer)>,
}

fn want_byte(want: Expected) -> u8 {
    match want {
        Expected::Tree => 0,
        Expected::Content => 1,
        Expected::Chunk => 2,
        Expected::Piece => 3,
        Expected::Log => 4,
    }
}

fn want_of(byte: u8) -> Option<Expected> {
    [Expected::Tree, Expected::Content, Expected::Chunk, Expected::Piece, Expected::Log].get(byte as usize).copied()
}

impl Named {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.count.to_le_bytes().to_vec();
        for (want, namer) in &self.wants {
            out.push(want_byte(*want));
            match namer {
                Namer::Blob(kind, id) => {
                    out.push(1);
                    out.push(*kind as u8);
                    out.extend_from_slice(id.as_bytes());
                }
                Namer::Text(text) => {
                    let text = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
                    out.push(0);
                    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
                    out.extend_from_slice(text);
                }
            }
        }
        out
    }

    /// Decodes what [`encode`](Named::encode) wrote; `None` for anything
    /// else (only this module writes the map, but nothing here panics).
    fn decode(bytes: &[u8]) -> Option<Named> {
        let count = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let (mut wants, mut rest) = (Vec::new(), &bytes[8..]);
        while let [want, tag, tail @ ..] = rest {
            let want = want_of(*want)?;
            let (namer, tail) = match tag {
                1 => {
                    let kind = BlobKind::from_byte(*tail.first()?)?;
                    (Namer::Blob(kind, BlobId::from_slice(tail.get(1..33)?)?), &tail[33..])
                }
                0 => {
                    let len = u16::from_le_bytes(tail.get(..2)?.try_into().ok()?) as usize;
                    let text = String::from_utf8_lossy(tail.get(2..2 + len)?).into_owned();
                    (Namer::Text(text), &tail[2 + len..])
                }
                _ => return None,
            };
            wants.push((want, namer));
            rest = tail;
        }
        rest.is_empty().then_some(Named { count, wants })
    }
}

/// Adds the counts and keeps the first namer of each kind asked for.
fn combine(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let mut total = Named { count: 0, wants: Vec::new() };
    for named in existing.into_iter().chain(operands).filter_map(Named::decode) {
        total.count = total.count.saturating_add(named.count);
        for (want, namer) in named.wants {
            if !total.wants.iter().any(|(w, _)| *w == want) {
                total.wants.push((want, namer));
            }
        }
    }
    Some(total.encode())
}

/// The references found so far (see the module's doc).
pub(crate) struct Recount {
    map: ScratchMap,
    batch: Vec<(BlobId, Vec<u8>)>,
}

impl Recount {
    pub(crate) fn new() -> Result<Recount> {
        Ok(Recount { map: ScratchMap::with_merge("making scratch space for the check", combine)?, batch: Vec::new() })
    }

    /// One reference to `id`, from a place that asks for `want`, by `namer`.
    pub(crate) fn name(&mut self, id: BlobId, want: Expected, namer: Namer) -> Result<()> {
        self.batch.push((id, Named { count: 1, wants: vec![(want, namer)] }.encode()));
        if self.batch.len() >= BATCH { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.map.merge(batch.iter().map(|(id, value)| (id.as_bytes(), value)))
    }

    /// Every blob named, in id order, with what names it.
    pub(crate) fn named(&mut self) -> Result<impl Iterator<Item = Result<(BlobId, Named)>> + '_> {
        self.flush()?;
        Ok(self.map.iter_from(&[]).filter_map(|item| match item {
            Ok((key, value)) => Some(Ok((BlobId::from_slice(&key)?, Named::decode(&value)?))),
            Err(error) => Some(Err(error)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_the_first_namer_of_each_kind_stays() {
        let mut recount = Recount::new().unwrap();
        let (a, b, parent) = (BlobId::of(b"a"), BlobId::of(b"b"), BlobId::of(b"p"));
        recount.name(b, Expected::Chunk, Namer::Blob(BlobKind::ContentList, parent)).unwrap();
        recount.name(a, Expected::Tree, Namer::Text("dataset 1".into())).unwrap();
        for _ in 0..BATCH + 3 {
            recount.name(b, Expected::Chunk, Namer::Text("later".into())).unwrap();
        }
        recount.name(b, Expected::Content, Namer::Text("object 'x'".into())).unwrap();
        let named: Vec<(BlobId, Named)> = recount.named().unwrap().map(Result::unwrap).collect();
        let want_b = Named {
            count: BATCH as i64 + 5,
            wants: vec![
                (Expected::Chunk, Namer::Blob(BlobKind::ContentList, parent)),
                (Expected::Content, Namer::Text("object 'x'".into())),
            ],
        };
        let want_a = Named { count: 1, wants: vec![(Expected::Tree, Namer::Text("dataset 1".into()))] };
        let mut want = vec![(a, want_a), (b, want_b)];
        want.sort_by_key(|(id, _)| *id);
        assert_eq!(named, want);
    }

    #[test]
    fn crafted_values_decode_to_nothing_without_a_panic() {
        for bytes in
            [&[][..], &[1, 2, 3], &[0; 8 + 1], &[0, 0, 0, 0, 0, 0, 0, 0, 9, 1], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0]]
        {
            assert_eq!(Named::decode(bytes), None, "{bytes:?}");
        }
    }
}
