//! Damaged bytes on disk: reads that need them fail with an error naming the
//! container and the blob; everything else still reads.

use std::os::unix::fs::FileExt;

use cairn_store::container::RECORD_HEADER_LEN;
use cairn_store::content::ContentReader;
use cairn_store::{OpenMode, Store};

use crate::util::{Fixture, noise, text};

/// Flips one byte in the middle of the stored bytes of `key`'s `nth` chunk
/// and returns (container id, blob id) as printed.
fn flip_byte_in_chunk(fixture: &Fixture, key: &str, nth: usize, compressible: bool) -> (String, String) {
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let record = store.object(key).unwrap();
    let mut reader = ContentReader::new(&store, record.content).unwrap();
    let chunk = reader.next_batch(nth + 1).unwrap()[nth];
    let entry = store.entry(&chunk.id).unwrap();
    assert_eq!(entry.flags != 0, compressible, "expected compression state");
    let path = store.files().path(entry.container);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let at = entry.offset + RECORD_HEADER_LEN as u64 + entry.stored_len as u64 / 2;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5a], at).unwrap();
    (entry.container.to_string(), chunk.id.to_string())
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
