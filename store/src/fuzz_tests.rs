//! Property tests that feed every decoder of bytes from disk or a remote
//! arbitrary bytes and mutations of valid encodings: each must answer
//! `Ok` or `Err`, never panic, and (where a length field is read) refuse
//! before allocating what the bytes merely claim.
//!
//! Fixed seed and a bounded number of cases, so a run takes seconds and a
//! failure reproduces; `cargo test fuzz_` runs them all.

use proptest::prelude::*;
use proptest::sample::Index as At;
use proptest::test_runner::{RngSeed, TestRunner};

use crate::container::{
    Codec, ContainerFiles, ContainerKind, ContainerWriter, FooterLayout, TableEntry, container_path, decode_blob,
    encode_blob, parse_table, verify_container,
};
use crate::content::{ContentEntry, MAX_ENTRIES, Piece, PieceLayout};
use crate::dataset::tree::{Entry, EntryKind, Tree};
use crate::ids::{BlobId, BlobKind, ContainerId, IdScheme, Tid};
use crate::index::entry::{ContainerRecord, IndexEntry};
use crate::remote::Delta;

/// A runner with a fixed seed, no failure files, and `cases` cases.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x1515_1515),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// Arbitrary bytes, up to `max` of them.
fn arbitrary(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// `valid` with a few bytes overwritten (with any value: the interesting
/// ones are 0x00 and 0xff in length fields), then cut short or extended.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let changes = prop::collection::vec((any::<At>(), any::<u8>()), 0..6);
    (changes, any::<At>(), any::<bool>(), arbitrary(24)).prop_map(move |(changes, cut, truncate, tail)| {
        let mut bytes = valid.clone();
        if !bytes.is_empty() {
            for (at, byte) in changes {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        } else {
            bytes.extend(tail);
        }
        bytes
    })
}

/// Either arbitrary bytes or a mutation of one of `samples`.
fn inputs(samples: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutations = prop::strategy::Union::new(samples.into_iter().map(mutated));
    prop_oneof![arbitrary(256), mutations]
}

fn entry(name: &[u8], kind: EntryKind, blob: Option<BlobId>) -> Entry {
    Entry {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        user: Some("ann".into()),
        group: None,
        size: 12,
        mtime_ns: 1_700_000_000_000_000_000,
        atime_ns: -1,
        ctime_ns: 3,
        inode: 77,
        dev: 2049,
        links: 1,
        rdev: 0,
        xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
        target: Vec::new(),
        blob,
    }
}

fn sample_tree() -> Vec<u8> {
    Tree {
        entries: vec![
            entry(b"a", EntryKind::File, Some(BlobId::of(b"a"))),
            entry(b"d", EntryKind::Dir, Some(BlobId::of(b"d"))),
            entry(b"l", EntryKind::Symlink, None),
        ],
    }
    .encode()
}

fn sample_piece() -> Vec<u8> {
    let entries = (0..3u8).map(|i| ContentEntry { id: BlobId::of(&[i]), len: 8192 }).collect();
    Piece { level: 1, entries }.encode()
}

/// A sealed metadata container holding a tree and a piece, in `dir`, its
/// footer in `layout`.
fn sample_container(dir: &std::path::Path, id: ContainerId, layout: FooterLayout) -> Vec<u8> {
    let mut writer = ContainerWriter::create(dir, id, ContainerKind::Metadata, layout).unwrap();
    for (kind, bytes) in [(BlobKind::Tree, sample_tree()), (BlobKind::ContentList, sample_piece())] {
        writer.append(&encode_blob(BlobId::of(&bytes), kind, &bytes, Codec::Lz4)).unwrap();
    }
    writer.seal().unwrap();
    std::fs::read(container_path(dir, id)).unwrap()
}

#[test]
fn fuzz_trees() {
    runner(1024)
        .run(&inputs(vec![sample_tree(), vec![1, 0]]), |bytes| {
            if let Ok(tree) = Tree::decode(BlobId::of(&bytes), &bytes) {
                prop_assert!(tree.entries.windows(2).all(|w| w[0].name < w[1].name));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_content_pieces() {
    let fixed = Piece::decode(BlobId::of(b""), &sample_piece()).unwrap().encode_as(PieceLayout::Fixed);
    let samples = vec![sample_piece(), fixed, Piece { level: 0, entries: Vec::new() }.encode()];
    runner(2048)
        .run(&inputs(samples), |bytes| {
            // Each layout has one encoding of a piece, so what decodes
            // encodes back to the same bytes in its layout, but for the two
            // reserved ones (written 0, not read).
            if let Ok(piece) = Piece::decode(BlobId::of(&bytes), &bytes) {
                let mut expected = bytes.clone();
                expected[2..4].fill(0);
                prop_assert_eq!(piece.encode_as(Piece::layout_of(&bytes).unwrap()), expected);
                prop_assert!(piece.entries.len() <= MAX_ENTRIES);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_record_headers_and_footer_entries() {
    let entry = TableEntry {
        id: BlobId::of(b"x"),
        kind: BlobKind::Tree,
        flags: 1,
        offset: 32,
        raw_len: 900,
        stored_len: 300,
        member: 0,
    };
    let mut footer = Vec::new();
    entry.encode_footer(&mut footer);
    runner(1024)
        .run(&inputs(vec![entry.encode_record_header().to_vec(), footer]), |bytes| {
            let _ = TableEntry::decode_record_header(&bytes, 32);
            let _ = TableEntry::decode_footer(&bytes);
            Ok(())
        })
        .unwrap();
}

/// A sealed data container `id` in `dir` holding one frame of four
/// members, its footer in `layout`: its members and their entries.
fn frame_container(dir: &std::path::Path, id: ContainerId, layout: FooterLayout) -> (Vec<Vec<u8>>, Vec<TableEntry>) {
    use crate::container::FrameBuilder;
    let mut writer = ContainerWriter::create(dir, id, ContainerKind::Data, layout).unwrap();
    let mut frame = FrameBuilder::default();
    let members: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 700 + i as usize]).collect();
    for member in &members {
        frame.push(member);
    }
    let (flags, stored) = frame.encode(Codec::Zstd(3));
    let ids: Vec<(BlobId, u32)> = members.iter().map(|m| (BlobId::of(m), m.len() as u32)).collect();
    let real = writer.append_frame(flags, &stored, &ids, crate::container::FRAME_TARGET).unwrap();
    writer.seal().unwrap();
    (members, real)
}

/// The trailer and table of whole containers (a metadata one and one of
/// a frame, in either footer layout), read as `read_table` does.
#[test]
fn fuzz_container_footers() {
    let dir = tempfile::tempdir().unwrap();
    let mut samples = Vec::new();
    for (n, layout) in [FooterLayout::Fixed, FooterLayout::Compact].into_iter().enumerate() {
        samples.push(sample_container(dir.path(), ContainerId(1 + n as u64), layout));
        frame_container(dir.path(), ContainerId(3 + n as u64), layout);
        samples.push(std::fs::read(container_path(dir.path(), ContainerId(3 + n as u64))).unwrap());
    }
    let path = dir.path().join("c");
    let seeds = samples.into_iter().map(mutated).collect::<Vec<_>>();
    runner(2048)
        .run(&proptest::strategy::Union::new(seeds), |bytes| {
            let read_at = |offset: u64, len: usize| {
                let start = usize::try_from(offset).unwrap();
                Ok(bytes[start..start + len].to_vec())
            };
            if let Ok(table) = parse_table(ContainerId(1), &path, bytes.len() as u64, read_at) {
                // Every record the table names lies inside the file.
                for entry in table {
                    prop_assert!(entry.offset + entry.record_len() <= bytes.len() as u64);
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Whole containers (header, records, codecs, table, trailer, checksum)
/// through `verify_container`, which `attach` runs on downloads.
#[test]
fn fuzz_whole_containers() {
    let dir = tempfile::tempdir().unwrap();
    let valid = sample_container(dir.path(), ContainerId(1), FooterLayout::Compact);
    let files = ContainerFiles::new(dir.path().to_path_buf(), IdScheme::Plain);
    let id = ContainerId(2);
    let path = container_path(dir.path(), id);
    runner(256)
        .run(&mutated(valid), |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            let _ = verify_container(&files, id);
            Ok(())
        })
        .unwrap();
}

/// Index entries naming any place, lengths and flags in a real container:
/// the reads refuse them, naming the blob, without panicking or allocating
/// what they claim.
#[test]
fn fuzz_reads_through_crafted_index_entries() {
    let dir = tempfile::tempdir().unwrap();
    let valid = sample_container(dir.path(), ContainerId(1), FooterLayout::Compact);
    let files = ContainerFiles::new(dir.path().to_path_buf(), IdScheme::Plain);
    let len = valid.len() as u64;
    let offsets = prop_oneof![0..len + 64, Just(u64::MAX), (u64::MAX - 100)..=u64::MAX, any::<u64>()];
    let lengths = prop_oneof![0..512u32, Just(u32::MAX), any::<u32>()];
    let strategy = (offsets, lengths.clone(), lengths, 0..3u8, 0..4u8);
    runner(1024)
        .run(&strategy, |(offset, raw_len, stored_len, kind, flags)| {
            let kind = BlobKind::from_byte(kind).unwrap();
            let entry = TableEntry { id: BlobId::of(b"x"), kind, flags, offset, raw_len, stored_len, member: 0 };
            prop_assert!(files.read_blob(ContainerId(1), &entry).is_err());
            prop_assert!(files.read_encoded(ContainerId(1), &[entry]).is_err());
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_decode_blob() {
    let text: Vec<u8> = (0..2000u32).flat_map(|i| (i % 13).to_le_bytes()).collect();
    let samples: Vec<Vec<u8>> = [Codec::Lz4, Codec::Zstd(3)]
        .into_iter()
        .map(|codec| encode_blob(BlobId::of(&text), BlobKind::Data, &text, codec).bytes)
        .collect();
    let raw_lens = prop_oneof![0..10_000u32, Just(u32::MAX), any::<u32>()];
    runner(1024)
        .run(&(0..3u8, 0..4u8, raw_lens, inputs(samples)), |(kind, flags, raw_len, stored)| {
            let kind = BlobKind::from_byte(kind).unwrap();
            if let Ok(plain) = decode_blob(kind, flags, raw_len, &stored) {
                prop_assert_eq!(plain.len(), raw_len as usize);
                prop_assert!(plain.len() <= kind.max_len());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_index_values() {
    let entry = IndexEntry {
        container: ContainerId(7),
        offset: 99,
        stored_len: 5,
        raw_len: 8,
        kind: BlobKind::Tree,
        flags: 1,
        member: 0,
        refs: 3,
    };
    let record = ContainerRecord {
        kind: ContainerKind::Data,
        committed_tid: Tid(4),
        n_blobs: 10,
        stored_bytes: 4096,
        dead_bytes: 100,
        uploaded: false,
        slack_bytes: 0,
        table_bytes: 345,
    };
    runner(1024)
        .run(&inputs(vec![entry.encode().to_vec(), record.encode().to_vec()]), |bytes| {
            let _ = IndexEntry::decode(&bytes).map(|e| e.record_len());
            if let Some(record) = ContainerRecord::decode(&bytes) {
                let _ = (record.record_bytes(), record.live_bytes(), record.dead_share());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_index_deltas() {
    let valid = crate::remote::sample_delta().encode();
    // Mutations break the checksum, so most stop there; these re-seal them
    // so the parser behind it is exercised too.
    let resealed = mutated(valid[..valid.len() - 32].to_vec()).prop_map(|mut body| {
        let hash = blake3::hash(&body);
        body.extend_from_slice(hash.as_bytes());
        body
    });
    runner(1024)
        .run(&prop_oneof![inputs(vec![valid]), resealed], |bytes| {
            if let Ok(delta) = Delta::decode("index/fuzz", &bytes) {
                let entries: usize = delta.containers.iter().map(|c| c.table.len()).sum();
                // Everything decoded took its bytes: nothing claimed was allocated.
                prop_assert!(entries * 50 + delta.containers.len() * 24 <= bytes.len());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_json_records() {
    let dataset = br#"{"id":7,"time_ns":1,"host":"h","sources":["/s"],"label":null,"tags":[],
        "root":"0000000000000000000000000000000000000000000000000000000000000000","root_meta":null,
        "files":1,"dirs":0,"others":0,"logical_bytes":5,"bytes_added":5,"skipped":0,"parent":null,
        "tid":3,"seconds":0.5}"#;
    let object = br#"{"content":"0000000000000000000000000000000000000000000000000000000000000000",
        "size":5,"created_ns":1,"tid":3}"#;
    assert!(crate::dataset::record::decode_record(b"k", dataset).is_ok());
    assert!(crate::objects::decode_record("k", object).is_ok());
    runner(1024)
        .run(&inputs(vec![dataset.to_vec(), object.to_vec()]), |bytes| {
            let _ = crate::dataset::record::decode_record(b"k", &bytes);
            let _ = crate::objects::decode_record("k", &bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_log_blobs() {
    use crate::log::record::{Body, Change, Family, LogBlob, LogRecord, Piece};
    let change = |key: &[u8], value: Option<&[u8]>| Change {
        family: Family::Objects,
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
    };
    let record = LogBlob::Record(LogRecord {
        tid: 7,
        time_ns: 1,
        host: "h".into(),
        user: "u".into(),
        command: "cairn put k -".into(),
        prev: Some([3; 32]),
        checkpoint: Some(vec![[4; 32]]),
        note: String::new(),
        body: Body::Commit { containers: vec![1, 2], changes: vec![change(b"k", Some(b"v")), change(b"old", None)] },
    });
    let relocation = LogBlob::Record(LogRecord {
        tid: 8,
        time_ns: 2,
        host: "h".into(),
        user: "u".into(),
        command: "cairn gc".into(),
        prev: None,
        checkpoint: None,
        note: "gc".into(),
        body: Body::Relocation { containers: vec![5], old: vec![1, 2], moved: 9 },
    });
    let piece = LogBlob::Piece(Piece { records: vec![change(b"k", Some(b"v"))] });
    let id = BlobId::of(b"log");
    for blob in [&record, &relocation, &piece] {
        assert_eq!(&LogBlob::decode(id, &blob.encode()).unwrap(), blob);
    }
    runner(2048)
        .run(&inputs(vec![record.encode(), relocation.encode(), piece.encode()]), |bytes| {
            if let Ok(blob) = LogBlob::decode(id, &bytes) {
                // Whatever parses names no more than its bytes could hold.
                prop_assert!(blob.children().len() * 32 <= bytes.len());
                if let LogBlob::Record(record) = &blob {
                    prop_assert!(record.containers().len() <= bytes.len());
                }
            }
            Ok(())
        })
        .unwrap();
}

/// A frame's stored bytes: every member length and payload the decoder
/// accepts adds up, and nothing panics or allocates a claim.
#[test]
fn fuzz_frames() {
    use crate::container::{FrameBuilder, MAX_FRAME_RAW, decode_frame};
    let samples: Vec<Vec<u8>> = [Codec::None, Codec::Lz4, Codec::Zstd(3)]
        .into_iter()
        .map(|codec| {
            let mut frame = FrameBuilder::default();
            for i in 0..5u32 {
                frame.push(&(0..300 + i * 40).flat_map(|j| (j % 11).to_le_bytes()).collect::<Vec<u8>>());
            }
            frame.encode(codec).1
        })
        .collect();
    runner(1024)
        .run(&(0..3u8, inputs(samples)), |(flags, stored)| {
            if let Ok(frame) = decode_frame(flags, &stored) {
                prop_assert!(frame.raw_len() <= MAX_FRAME_RAW);
                let total: usize = (0..frame.members()).map(|i| frame.member(i).unwrap().len()).sum();
                prop_assert_eq!(total, frame.raw_len());
            }
            Ok(())
        })
        .unwrap();
}

/// Member entries naming any frame place, member, lengths and flags in a
/// real data container holding a frame: a read either refuses the entry
/// or returns exactly the bytes of the blob it names (a frame decoded
/// lately serves any entry whose member hashes to its id), and never
/// panics.
#[test]
fn fuzz_reads_of_crafted_frame_members() {
    use crate::container::FLAG_FRAME;
    let dir = tempfile::tempdir().unwrap();
    let (members, real) = frame_container(dir.path(), ContainerId(1), FooterLayout::Compact);
    let files = ContainerFiles::new(dir.path().to_path_buf(), IdScheme::Plain);
    for (entry, member) in real.iter().zip(&members) {
        assert_eq!(&files.read_blob(ContainerId(1), entry).unwrap(), member);
    }
    let strategy = (0..4usize, 0..80u64, prop_oneof![0..2000u32, any::<u32>()], any::<u16>(), any::<u8>(), 0..3u8);
    runner(1024)
        .run(&strategy, |(which, offset, length, member, flags, field)| {
            let mut entry = real[which];
            match field {
                0 => entry.offset = offset,
                1 => entry.raw_len = length,
                _ => entry.stored_len = length,
            }
            entry.member = if flags % 2 == 0 { member % 6 } else { entry.member };
            entry.flags = if flags % 3 == 0 { flags | FLAG_FRAME } else { entry.flags };
            if let Ok(bytes) = files.read_blob(ContainerId(1), &entry) {
                prop_assert_eq!(&bytes, &members[which], "{:?}", entry);
            }
            let _ = files.read_encoded(ContainerId(1), &[entry]);
            Ok(())
        })
        .unwrap();
}
