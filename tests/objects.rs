//! Objects end to end through the binary: dedup, insertion, fixed blocks,
//! clone, rm, listings and statistics.

use crate::util::{Fixture, noise, text};

#[test]
fn same_content_under_a_second_key_costs_almost_nothing() {
    let fixture = Fixture::new();
    let data = noise(24 << 20, 1);
    fixture.put("first", &data);
    let after_first = fixture.stored_bytes();
    assert!(after_first >= data.len() as u64, "random data does not shrink");
    fixture.put("second", &data);
    let growth = fixture.stored_bytes() - after_first;
    assert!(growth < 64 * 1024, "second copy grew the store by {growth} bytes");
    assert_eq!(fixture.get("first"), data);
    assert_eq!(fixture.get("second"), data);
}

#[test]
fn one_inserted_byte_near_the_start_stores_little() {
    let fixture = Fixture::new();
    let data = noise(24 << 20, 2);
    fixture.put("original", &data);
    let before = fixture.stored_bytes();
    let mut edited = data.clone();
    edited.insert(100, 0x42);
    fixture.put("edited", &edited);
    let growth = fixture.stored_bytes() - before;
    assert!(growth < data.len() as u64 / 50, "insertion grew the store by {growth} bytes");
    assert_eq!(fixture.get("original"), data);
    assert_eq!(fixture.get("edited"), edited);
}

#[test]
fn fixed_chunker_stores_one_changed_block_only() {
    let fixture = Fixture::new();
    fixture.ok(&["init", "--chunker", "fixed"]);
    let image = noise(32 << 20, 3);
    fixture.put("image", &image);
    let before = fixture.stored_bytes();
    let mut changed = image.clone();
    let block = 1234 * 8192;
    changed[block..block + 8192].copy_from_slice(&noise(8192, 99));
    fixture.put("image-v2", &changed);
    let growth = fixture.stored_bytes() - before;
    assert!(growth < 64 * 1024, "one changed block grew the store by {growth} bytes");
    assert_eq!(fixture.get("image-v2"), changed);
}

#[test]
fn clone_copies_nothing_and_survives_removal_of_the_source() {
    let fixture = Fixture::new();
    let data = text(6 << 20, 4);
    fixture.put("source", &data);
    let before = fixture.stored_bytes();
    fixture.ok(&["clone", "source", "copy"]);
    let grew = fixture.stored_bytes() - before;
    assert!(grew < crate::util::LOG_RECORD_BOUND, "clone wrote {grew} container bytes, more than its log record");
    let error = fixture.fails(&["clone", "source", "copy"]);
    assert!(error.contains("exists already"), "{error}");
    fixture.ok(&["rm", "source"]);
    assert_eq!(fixture.get("copy"), data);
    let error = fixture.fails(&["get", "source", "-"]);
    assert!(error.contains("no object named 'source'"), "{error}");
    fixture.ok(&["check", "--read-data"]);
}

#[test]
fn listing_stats_and_stdin_round_trip() {
    let fixture = Fixture::new();
    let data = text(3 << 20, 5);
    let mut child = fixture
        .command(&["put", "docs/a"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&data).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    fixture.put("docs/b", &data[..1000]);
    fixture.put("other", b"");

    let listed: serde_json::Value = serde_json::from_str(&fixture.ok(&["--json", "objects", "docs/"])).unwrap();
    let keys: Vec<&str> = listed.as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["docs/a", "docs/b"]);
    assert_eq!(listed[0]["size"], data.len() as u64);
    let table = fixture.ok(&["objects"]);
    assert!(table.starts_with("KEY"), "{table}");
    assert!(table.contains("3.0 MiB"), "{table}");

    let stats = fixture.stats();
    assert_eq!(stats["objects"], 3);
    assert_eq!(stats["logical_bytes"], data.len() as u64 + 1000);
    let compression = stats["compression_ratio"].as_f64().unwrap();
    assert!(compression > 1.5, "text should compress: {compression}");
    assert!(stats["dedup_ratio"].as_f64().unwrap() >= 1.0);
    // The index's filters (about ten bits for each of the ~400 blobs, once
    // the puts' entries are in table files) and the cache they are read
    // through, which `--index-cache-mib` sets; far from full here, so no
    // advice to raise it.
    let filters = stats["index_filter_bytes"].as_u64().unwrap();
    assert!((100..10_000).contains(&filters), "{filters} bytes of filters");
    let cached = fixture.command(&["--index-cache-mib", "96", "--json", "stats"]).output().unwrap();
    let cached: serde_json::Value = serde_json::from_slice(&cached.stdout).unwrap();
    assert_eq!(cached["index_cache_bytes"], 96u64 << 20);
    let human = fixture.ok(&["stats"]);
    assert!(human.contains("filters") && human.contains("block cache 64.0 MiB"), "{human}");
    assert!(!human.contains("--index-cache-mib"), "{human}");

    let out = fixture.command(&["get", "docs/a"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, data);
    assert_eq!(fixture.get("other"), b"");
    fixture.ok(&["check", "--read-data"]);
}

#[test]
fn replacing_and_removing_objects_keeps_counts_exact() {
    let fixture = Fixture::new();
    let a = text(2 << 20, 6);
    let b = text(2 << 20, 7);
    fixture.put("key", &a);
    fixture.put("key", &b);
    fixture.put("again", &b);
    fixture.ok(&["check"]);
    assert_eq!(fixture.get("key"), b);
    fixture.ok(&["rm", "key"]);
    fixture.ok(&["rm", "again"]);
    let stats = fixture.stats();
    assert_eq!(stats["objects"], 0);
    // The content-list roots are garbage, queued for the delete job; their
    // children stay counted until the job's cascade removes them.
    assert!(stats["kinds"][1]["garbage_blobs"].as_u64().unwrap() >= 2, "{stats}");
    fixture.ok(&["check"]);
}

/// A writer that leaves megabytes of write-ahead log writes the index's
/// memtables out when it closes: otherwise its entries live only in the
/// log, and every later reader's open (each `ls`, `stats`, restore)
/// replays the log into memory.
#[test]
fn a_large_put_leaves_its_index_entries_in_table_files_not_only_in_the_log() {
    let fixture = Fixture::new();
    // About 20,000 chunks: over 1 MiB of log.
    fixture.put("big", &noise(160 << 20, 3));
    let (mut log_bytes, mut tables) = (0, 0);
    for file in std::fs::read_dir(fixture.store().join("index")).unwrap() {
        let file = file.unwrap();
        let name = file.file_name().into_string().unwrap();
        if name.ends_with(".log") {
            log_bytes += file.metadata().unwrap().len();
        } else if name.ends_with(".sst") {
            tables += 1;
        }
    }
    assert!(tables > 0, "no table file: the entries are only in the log");
    assert!(log_bytes < 1 << 20, "the write-ahead log still holds {log_bytes} bytes");
    assert_eq!(fixture.get("big"), noise(160 << 20, 3));
}

/// `put` of a sparse file (read without its holes) stores the same
/// chunks as `put` of a dense copy, and `get` gives the bytes back.
#[test]
fn a_sparse_file_puts_as_its_dense_copy() {
    let fixture = Fixture::new();
    let sparse = fixture.path("sparse");
    let file = std::fs::File::create(&sparse).unwrap();
    file.set_len(24 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &noise(200_000, 50), 5 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &noise(100_000, 51), (20 << 20) + 1).unwrap();
    drop(file);
    let bytes = std::fs::read(&sparse).unwrap();
    let dense = fixture.file("dense", &bytes);
    fixture.ok(&["put", "sparse", sparse.to_str().unwrap()]);
    let after_sparse = fixture.stored_bytes();
    fixture.ok(&["put", "dense", &dense]);
    let growth = fixture.stored_bytes() - after_sparse;
    assert!(growth < 16 << 10, "the dense copy added {growth} bytes");
    assert!(fixture.get("sparse") == bytes, "the sparse object reads back different bytes");
}
