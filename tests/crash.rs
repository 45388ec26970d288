//! SIGKILL during `cairn put`, at random moments: the store opens without
//! repair, every object committed before reads back identical, nothing
//! uncommitted is visible, and the reference counts still check out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::util::{Fixture, count_files, noise, text};

/// Kills `cairn put` at 20 random moments and checks the store after each.
#[test]
fn sigkill_during_put_loses_nothing_committed() {
    let fixture = Fixture::new();
    // A small container size makes many seal points for the kills to hit.
    fixture.ok(&["init", "--container-size", "256KiB"]);
    let seed: u64 = std::env::var("CAIRN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (rerun with CAIRN_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // Time an uninterrupted put to know the window to kill in.
    let big = text(24 << 20, seed);
    let big_file = fixture.file("big", &big);
    let started = Instant::now();
    fixture.ok(&["put", "timing", &big_file]);
    let window = started.elapsed().max(Duration::from_millis(50));
    let mut committed: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    committed.insert("timing".into(), big.clone());

    for round in 0..20 {
        // Content that partly overlaps what is stored, so dedup and commit
        // resolution are exercised too.
        let mut data = big.clone();
        let at = rng.random_range(0..data.len() - 4096);
        data[at..at + 4096].copy_from_slice(&noise(4096, seed + round));
        data.extend_from_slice(&noise(rng.random_range(0..2 << 20), seed ^ round));
        let file = fixture.file("victim", &data);
        let key = format!("victim-{round}");
        let mut child = fixture.command(&["put", &key, &file]).spawn().unwrap();
        std::thread::sleep(window.mul_f64(rng.random_range(0.0..1.2)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        // A put killed after its log record was durable is redone by the
        // next writer's open (check makes one): only then is it known
        // whether it committed.
        fixture.ok(&["check"]);
        // The store opens (read-only here), and what it lists is exactly
        // what committed, byte for byte.
        let listed: serde_json::Value = serde_json::from_str(&fixture.ok(&["--json", "objects"])).unwrap();
        let keys: Vec<String> =
            listed.as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap().to_string()).collect();
        // A put that finished committed; a killed one may have committed too
        // (the kill landed after its batch was durable), and then it must be
        // whole: its bytes are checked below like every other object's.
        if status.success() || keys.contains(&key) {
            committed.insert(key.clone(), data.clone());
        }
        let expected: Vec<String> = committed.keys().cloned().collect();
        assert_eq!(keys, expected, "round {round}: listing differs from what committed");
        for (key, data) in &committed {
            assert!(fixture.get(key) == *data, "round {round}: object {key} changed");
        }
        fixture.ok(&["check"]);

        // Every few rounds a committed put in between, so later kills find a
        // store that a writer has recovered.
        if round % 4 == 3 {
            let key = format!("steady-{round}");
            let data = text(1 << 20, seed + 1000 + round);
            fixture.put(&key, &data);
            committed.insert(key, data);
        }
    }
    // A writer's open removes what interrupted sessions left behind: then
    // the container files on disk are exactly the committed containers.
    fixture.put("final", b"final");
    let stats = fixture.stats();
    let files = count_files(&fixture.store().join("containers"));
    assert_eq!(files, stats["containers"].as_u64().unwrap(), "uncommitted containers were left behind");
    fixture.ok(&["check", "--read-data"]);
}

/// A put whose commit batch reached RocksDB's log but was reported failed:
/// the put says the outcome is unknown and removes nothing, and the next
/// command finds the object whole (the log is replayed), or, had the batch
/// not landed, no trace of it.
#[test]
fn a_put_whose_index_write_has_an_unknown_outcome_loses_nothing() {
    let fixture = Fixture::new();
    fixture.ok(&["init", "--container-size", "256KiB"]);
    let data = text(3 << 20, 5);
    let file = fixture.file("data", &data);
    let output = fixture.command(&["put", "k", &file]).env("CAIRN_FAULT", "lost-ack:commit:written").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("did not confirm"), "{stderr}");
    assert_eq!(fixture.get("k"), data, "the batch was in the log: the object is there");
    fixture.ok(&["check", "--read-data"]);
    // A second put in a fresh process goes on normally.
    fixture.put("k2", &data[..1000]);
    fixture.ok(&["check", "--read-data"]);
}

/// A download that a killed attach left half done (`*.part` in a shard
/// directory) is removed by the next writer, like a container no commit
/// named.
#[test]
fn a_partial_download_left_by_a_killed_attach_is_removed() {
    let fixture = Fixture::new();
    fixture.put("k", b"some bytes");
    let shard = std::fs::read_dir(fixture.store().join("containers")).unwrap().next().unwrap().unwrap().path();
    let partial = shard.join("00000000000000ff.part");
    std::fs::write(&partial, b"half a container").unwrap();
    fixture.ok(&["objects"]);
    assert!(partial.exists(), "a reader leaves it alone");
    fixture.put("k2", b"more bytes");
    assert!(!partial.exists(), "the next writer removes it");
    fixture.ok(&["check", "--read-data"]);
}
