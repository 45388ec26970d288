//! Damaged bytes on disk: reads that need them fail with an error naming the
//! container and the blob; everything else still reads.

use cairn_store::content::ContentReader;
use cairn_store::{OpenMode, Store};

use crate::util::{Fixture, flip_byte_in_blob, noise, text};

/// Flips one byte in the middle of the stored bytes of `key`'s `nth` chunk
/// and returns (container id, blob id) as printed.
fn flip_byte_in_chunk(fixture: &Fixture, key: &str, nth: usize, compressible: bool) -> (String, String) {
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let record = store.object(key).unwrap();
    let mut reader = ContentReader::new(&store, record.content).unwrap();
    let chunk = reader.next_batch(nth + 1).unwrap()[nth];
    let flags = store.entry(&chunk.id).unwrap().flags & !cairn_store::container::FRAME_BITS;
    assert_eq!(flags != 0, compressible, "expected compression state");
    flip_byte_in_blob(&store, chunk.id)
}

#[test]
fn flipped_byte_names_container_and_blob_and_spares_other_objects() {
    for compressible in [false, true] {
        let fixture = Fixture::new();
        let make = |seed| if compressible { text(2 << 20, seed) } else { noise(2 << 20, seed) };
        let (victim, bystander) = (make(10), make(11));
        fixture.put("victim", &victim);
        fixture.put("bystander", &bystander);
        let (container, blob) = flip_byte_in_chunk(&fixture, "victim", 3, compressible);

        let error = fixture.fails(&["get", "victim", fixture.path("victim.out").to_str().unwrap()]);
        assert!(error.contains(&container), "error does not name container {container}: {error}");
        assert!(error.contains(&blob), "error does not name blob {blob}: {error}");
        assert!(!fixture.path("victim.out").exists(), "a failed get must not leave a partial file");
        assert_eq!(fixture.get("bystander"), bystander);

        // `check` finds it too, and says where.
        let output = fixture.run(&["check", "--read-data"]);
        assert!(!output.status.success());
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(report.contains(&container), "{report}");
    }
}

/// A trailer whose table offset is near 2^64 (it wrapped past the bounds
/// check and panicked) is a corrupt container, named, and never a panic.
#[test]
fn a_trailer_offset_near_the_top_of_u64_is_corruption_not_a_panic() {
    use std::os::unix::fs::FileExt;
    let fixture = Fixture::new();
    fixture.put("k", &noise(100_000, 5));
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let (id, record) = store.containers().unwrap()[0];
    let file = std::fs::OpenOptions::new().write(true).open(store.files().path(id)).unwrap();
    // The trailer's table offset is at end - 56 + 8.
    let at = record.stored_bytes - cairn_store::container::TRAILER_LEN as u64 + 8;
    file.write_all_at(&(u64::MAX - 100).to_le_bytes(), at).unwrap();
    drop(store);
    for args in [&["check"][..], &["check", "--read-data"]] {
        let output = fixture.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stdout.contains(&format!("container {id}")) && stdout.contains("does not fit"), "{args:?}: {stdout}");
    }
}
