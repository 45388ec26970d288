//! Dataset clones, `dedupe stats`, `containers` and `dedupe assess`: each
//! figure checked against what actually happens when the store changes.

use std::fs;
use std::path::Path;

use cairn_store::{DatasetId, OpenMode, Store};
use serde_json::Value;

use crate::util::{Fixture, assert_recount_matches, noise, text};
use crate::versions::{diff_r, generate};

fn json(fixture: &Fixture, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend(args);
    serde_json::from_str(&fixture.ok(&all)).unwrap()
}

fn restore(fixture: &Fixture, dataset: &str, name: &str) -> std::path::PathBuf {
    let target = fixture.path(name);
    fixture.ok(&["restore", dataset, "--to", target.to_str().unwrap()]);
    target
}

#[test]
fn clones_share_everything_and_outlive_their_original() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    generate(&source, 300, 21);
    let original = json(&fixture, &["backup", source.to_str().unwrap()])["record"]["id"].as_u64().unwrap();
    let stored = fixture.stored_bytes();

    let whole = json(&fixture, &["clone", "latest", "--name", "copy"]);
    assert_eq!(whole["files"], 301);
    let grew = fixture.stored_bytes() - stored;
    assert!(grew < crate::util::LOG_RECORD_BOUND, "a whole clone wrote {grew} bytes, more than its log record");
    let sub = json(&fixture, &["clone", &format!("{original}:dir03"), "--name", "sub"]);
    assert_eq!(sub["files"], 12, "{sub}");
    let file = json(&fixture, &["clone", &format!("{original}:/dir03/file00003.txt"), "--name", "one"]);
    assert_eq!(file["files"], 1, "{file}");
    assert!(fixture.stored_bytes() - stored < 64 * 1024, "a file clone writes one small tree");
    let usage = fixture.run(&["clone", "latest"]);
    assert_eq!(usage.status.code(), Some(2), "clone needs DST or --name");

    {
        let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
        store.forget(&[DatasetId(original)]).unwrap();
    }
    let report = json(&fixture, &["gc", "--compact-threshold", "0.01"]);
    assert!(report["blobs_reclaimed"].as_u64().unwrap() <= 1, "only the original's record went: {report}");
    diff_r(&source, &restore(&fixture, "copy", "copy"));
    diff_r(&source.join("dir03"), &restore(&fixture, "sub", "sub"));
    let one = restore(&fixture, "one", "one");
    assert_eq!(fs::read(one.join("file00003.txt")).unwrap(), fs::read(source.join("dir03/file00003.txt")).unwrap());
    fixture.ok(&["check", "--read-data"]);
    assert_recount_matches(&Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap());
}

#[test]
fn dedupe_stats_predict_what_forgetting_frees() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    generate(&source, 200, 22);
    json(&fixture, &["backup", source.to_str().unwrap()]);
    fs::write(source.join("unique.bin"), noise(1 << 20, 23)).unwrap();
    json(&fixture, &["backup", source.to_str().unwrap()]);

    let stats = json(&fixture, &["dedupe", "stats"]);
    let datasets = stats["datasets"].as_array().unwrap();
    let (first, second) = (&datasets[0], &datasets[1]);
    let alone = second["alone_bytes"].as_u64().unwrap();
    // The noise is stored raw, in frames; a frame member accounts for its
    // share of the frame at the full frame size, and a frame closed short
    // of it leaves its slack to no member (`container::frame_slack`): up to
    // a tenth here, where chunks are up to 64 KiB.
    assert!((900 << 10..(1 << 20) + (64 << 10)).contains(&alone), "the second alone holds the noise: {second}");
    assert!(first["alone_bytes"].as_u64().unwrap() < 16 << 10, "the first shares all but its top tree: {first}");
    assert!(stats["dedup_ratio"].as_f64().unwrap() > 1.8, "two near-identical datasets: {stats}");
    let live: u64 = stats["refs"].as_array().unwrap().iter().map(|b| b["blobs"].as_u64().unwrap()).sum();
    let kinds = fixture.stats()["kinds"].as_array().unwrap().iter().map(|k| k["blobs"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(live, kinds, "the histogram covers every live blob");
    let human = fixture.ok(&["dedupe", "stats"]);
    assert!(human.contains("ALONE") && human.contains("REFERENCES"), "{human}");

    {
        let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
        store.forget(&[DatasetId(second["id"].as_u64().unwrap())]).unwrap();
    }
    let report = json(&fixture, &["gc"]);
    assert_eq!(report["bytes_reclaimed"].as_u64().unwrap(), alone, "forgetting freed what stats predicted: {report}");
}

#[test]
fn containers_list_and_show_their_blobs() {
    let fixture = Fixture::new();
    fixture.ok(&["init", "--container-size", "256KiB"]);
    // b shares a's first half, so a's containers end up partly dead.
    let a = text(1 << 20, 24);
    let mut b = a[..512 << 10].to_vec();
    b.extend_from_slice(&text(512 << 10, 25));
    fixture.put("a", &a);
    fixture.put("b", &b);
    fixture.ok(&["rm", "a"]);
    fixture.ok(&["gc", "--compact-threshold", "1"]);
    let list = json(&fixture, &["containers"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len() as u64, fixture.stats()["containers"].as_u64().unwrap());
    let dead: Vec<&Value> = list.iter().filter(|c| c["dead_bytes"].as_u64().unwrap() > 0).collect();
    assert!(!dead.is_empty(), "a's containers are partly dead, so not compacted at threshold 1");
    let id = dead[0]["id"].as_str().unwrap();
    let shown = json(&fixture, &["containers", id]);
    let blobs = shown["blobs"].as_array().unwrap();
    assert_eq!(blobs.len() as u64, dead[0]["blobs"].as_u64().unwrap());
    assert!(blobs.iter().any(|b| b["refs"].is_null()), "dead blobs are shown as such");
    let human = fixture.ok(&["containers", id]);
    assert!(human.contains("dead"), "{human}");
    let bad = fixture.fails(&["containers", "zz"]);
    assert!(bad.contains("not a container id"), "{bad}");
}

#[test]
fn assess_estimates_what_a_backup_stores() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir(&source).unwrap();
    let same = noise(2 << 20, 26);
    fs::write(source.join("a.bin"), &same).unwrap();
    fs::write(source.join("b.bin"), &same).unwrap();
    fs::write(source.join("text.txt"), text(2 << 20, 27)).unwrap();
    let before = json(&fixture, &["dedupe", "assess", source.to_str().unwrap()]);
    assert!(!fixture.store().exists(), "assessing creates no store");
    assert_eq!(before["files"], 3);
    let ratio = before["dedup_ratio"].as_f64().unwrap();
    assert!((1.45..1.55).contains(&ratio), "one of three files is a copy: {before}");
    assert!(before["compression_ratio"].as_f64().unwrap() > 1.2, "{before}");

    let backup = json(&fixture, &["backup", source.to_str().unwrap()]);
    let added = backup["record"]["bytes_added"].as_u64().unwrap();
    let estimate = before["compressed_bytes"].as_u64().unwrap();
    assert!(estimate <= added && (added as f64) < estimate as f64 * 1.05, "estimate {estimate}, backup added {added}");
    let after = json(&fixture, &["dedupe", "assess", source.to_str().unwrap()]);
    assert_eq!(after["already_stored_bytes"], after["compressed_bytes"], "everything is in the store now");
    let missing = fixture.fails(&["dedupe", "assess", Path::new("/nonexistent/x").to_str().unwrap()]);
    assert!(missing.contains("/nonexistent/x"), "{missing}");
}

/// More files than one batch of the walk, a file of more chunks than one
/// write to the scratch map, and more distinct chunks than one lookup in
/// the store's index: every chunk counted once, and after a backup every
/// one found in the store.
#[test]
fn assess_counts_every_chunk_once_across_batches() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir(&source).unwrap();
    // Small files are one chunk each; 300 of them are copies of others.
    for i in 0..600u64 {
        let bytes = noise(1024, 1000 + i);
        fs::write(source.join(format!("f{i:04}")), &bytes).unwrap();
        if i % 2 == 0 {
            fs::write(source.join(format!("copy{i:04}")), &bytes).unwrap();
        }
    }
    fs::write(source.join("big.bin"), noise(96 << 20, 7)).unwrap();
    let before = json(&fixture, &["dedupe", "assess", source.to_str().unwrap()]);
    assert_eq!(before["files"], 901, "{before}");
    let (chunks, unique) = (before["chunks"].as_u64().unwrap(), before["unique_chunks"].as_u64().unwrap());
    assert!(unique > 8192 + 600, "the big file alone is more than one write: {before}");
    assert_eq!(chunks, unique + 300, "only the copies repeat: {before}");
    assert_eq!(before["logical_bytes"], (96 << 20) + 900 * 1024, "{before}");
    json(&fixture, &["backup", source.to_str().unwrap()]);
    let after = json(&fixture, &["dedupe", "assess", source.to_str().unwrap()]);
    assert_eq!(after["unique_chunks"], before["unique_chunks"], "{after}");
    assert_eq!(after["already_stored_bytes"], after["compressed_bytes"], "everything is in the store now: {after}");
}
