//! Content lists as piece trees: every size round-trips, deep trees work,
//! and an edit rewrites only the pieces around it.

use std::io::Cursor;

use cairn_store::content::{ContentReader, Piece};
use cairn_store::{BlobKind, CheckOptions, ChunkerConfig, Store, StoreOptions};

use crate::util::noise;

/// Fixed 512-byte chunks: 4096 chunks (2 MiB) already make three levels.
fn small_chunk_store(dir: &tempfile::TempDir) -> Store {
    let options = StoreOptions {
        chunker: ChunkerConfig::fixed(512).unwrap(),
        container_size: 1 << 20,
        ..StoreOptions::default()
    };
    Store::create(&dir.path().join("store"), &options).unwrap()
}

fn depth(store: &Store, key: &str) -> u8 {
    let root = store.object(key).unwrap().content;
    Piece::decode(root, &store.read_blob(&root).unwrap()).unwrap().level + 1
}

#[test]
fn every_size_round_trips_through_the_piece_tree() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_chunk_store(&dir);
    for (i, len) in [0usize, 1, 511, 512, 513, 64 * 512, 100_000, 3 << 20, (16 << 20) + 77].into_iter().enumerate() {
        let data = noise(len, i as u64);
        let key = format!("size-{len}");
        store.put_object(&key, Cursor::new(data.clone()), "test", &|_| {}).unwrap();
        let mut out = Vec::new();
        assert_eq!(store.get_object(&key, &mut out, "test", &|_| {}).unwrap(), len as u64);
        assert!(out == data, "{len} bytes did not round-trip");
        // The walk yields exactly the chunks, in order, with their lengths.
        let mut reader = ContentReader::new(&store, store.object(&key).unwrap().content).unwrap();
        let mut total = 0;
        while let Some(entry) = reader.next_chunk().unwrap() {
            total += entry.len;
        }
        assert_eq!(total, len as u64);
    }
    // Content of one chunk is named by the chunk itself: no piece is stored.
    let root_kind = |key: &str| store.entry(&store.object(key).unwrap().content).unwrap().kind;
    for key in ["size-1", "size-511", "size-512"] {
        assert_eq!(root_kind(key), BlobKind::Data, "{key}");
    }
    assert_eq!(root_kind("size-513"), BlobKind::ContentList);
    // About 33,000 chunks make about 512 level-0 pieces: that they all
    // fit one level-1 piece (none of 511 entries ending one, 1 in 3,000)
    // would make a tree of two levels.
    assert!(depth(&store, "size-16777293") >= 3, "large content should make a deep tree");
    assert_eq!(depth(&store, "size-0"), 1);
    let report = store.check(CheckOptions { read_data: true }).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
}

#[test]
fn an_edit_rewrites_only_nearby_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_chunk_store(&dir);
    let data = noise(4 << 20, 7);
    store.put_object("v1", Cursor::new(data.clone()), "test", &|_| {}).unwrap();
    let pieces_before = store.stats().unwrap().kinds[1].blobs;
    let mut edited = data.clone();
    edited[2 << 20] ^= 1;
    let outcome = store.put_object("v2", Cursor::new(edited), "test", &|_| {}).unwrap();
    assert_eq!(outcome.stats.new_chunks, 1);
    let new_pieces = store.stats().unwrap().kinds[1].blobs - pieces_before;
    // One piece per level changes (the root, a middle piece, a leaf piece).
    assert!((1..=depth(&store, "v2") as u64).contains(&new_pieces), "{new_pieces} new pieces");
}
