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
    assert_eq!(store.entry(&chunk.id).unwrap().flags != 0, compressible, "expected compression state");
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
