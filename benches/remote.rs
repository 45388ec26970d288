//! S3 transfer: push, restore straight from S3 (`--remote`), attach and
//! restore from the attached store, beside a local restore of the same
//! dataset measured in the same run, and restic backing up to and
//! restoring from the same S3 server when it is installed.
//!
//! The server is the tests' in-process S3 (`tests/s3.rs`: s3s over local
//! files, SigV4 on), so the numbers are cairn's and the SDK's costs
//! without network latency; against real S3 the request count matters
//! more, and it is printed too. Also printed: how many bytes a restore
//! from S3 downloads beside the dataset's stored bytes.
//!
//! `cargo bench --bench remote` (CAIRN_BENCH_MB=200 by default). Under
//! `cargo test` it runs on a small tree as a smoke test.

mod common;
#[path = "../tests/s3.rs"]
#[allow(dead_code)]
mod s3;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Instant;

use common::tools::{du, generate, installed};
use s3::{BUCKET, S3Server, credentials};

fn aimed(mut command: Command) -> Command {
    credentials(&mut command).env("RESTIC_PASSWORD", "bench");
    command
}

/// Runs `cairn --endpoint-url E --path-style ARGS` on `store`; seconds.
fn cairn(store: &Path, server: &S3Server, args: &[&str]) -> f64 {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.arg("--store").arg(store).arg("--no-progress").args(["--endpoint-url", &server.endpoint(), "--path-style"]);
    command.args(args);
    timed(aimed(command))
}

fn timed(mut command: Command) -> f64 {
    let started = Instant::now();
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    started.elapsed().as_secs_f64()
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mb: usize =
        if benchmarking { std::env::var("CAIRN_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(200) } else { 4 };
    let work = common::work_dir();
    let server = S3Server::start(&work.path().join("s3"));
    let tree = work.path().join("tree");
    let files = generate(&tree, mb << 20);
    let store = work.path().join("store");
    let url = format!("s3://{BUCKET}/cairn");
    let backup = cairn(&store, &server, &["backup", tree.to_str().unwrap()]);
    cairn(&store, &server, &["remote", "add", "bench", &url]);
    let stored = du(&store.join("containers"));
    let push = cairn(&store, &server, &["push"]);
    let local = cairn(&store, &server, &["restore", "latest", "--to", work.path().join("local").to_str().unwrap()]);
    server.seen.reset();
    let direct = cairn(
        &work.path().join("none"),
        &server,
        &["--remote", &url, "restore", "latest", "--to", work.path().join("direct").to_str().unwrap()],
    );
    let direct_bytes = server.seen.downloaded.load(Ordering::SeqCst);
    let direct_gets = server.seen.gets.load(Ordering::SeqCst);
    let attached = work.path().join("attached");
    let attach = cairn(&attached, &server, &["attach", &url]);
    let from_attached =
        cairn(&attached, &server, &["restore", "latest", "--to", work.path().join("from-attached").to_str().unwrap()]);

    let mib = mb as f64;
    println!("tree: {files} files, {mb} MiB, stored {:.1} MiB; {} cores", stored as f64 / 1048576.0, num_cpus());
    println!("cairn backup (local)              {:8.1} MiB/s", mib / backup);
    println!("cairn push                        {:8.1} MiB/s of stored bytes", stored as f64 / 1048576.0 / push);
    println!("cairn restore, local store        {:8.1} MiB/s", mib / local);
    println!(
        "cairn restore --remote (S3)       {:8.1} MiB/s  ({:.2}x local; {direct_gets} GETs, downloaded {:+.1}% of stored)",
        mib / direct,
        local / direct,
        (direct_bytes as f64 / stored as f64 - 1.0) * 100.0
    );
    println!("cairn attach                      {:8.2} s", attach);
    println!(
        "cairn restore, attached store     {:8.1} MiB/s  ({:.2}x local)",
        mib / from_attached,
        local / from_attached
    );

    if benchmarking && installed("restic") {
        // restic speaks S3 itself: back up to and restore from the same server.
        let repo = format!("s3:{}/{BUCKET}/restic", server.endpoint());
        let restic = |args: &[&str]| {
            let mut command = Command::new("restic");
            command.args(["--repo", &repo, "--quiet"]).args(args);
            timed(aimed(command))
        };
        restic(&["init"]);
        let restic_backup = restic(&["backup", tree.to_str().unwrap()]);
        let restore = restic(&["restore", "latest", "--target", work.path().join("restic").to_str().unwrap()]);
        println!(
            "restic backup to S3               {:8.1} MiB/s  (cairn backup + push: {:.2}x faster)",
            mib / restic_backup,
            restic_backup / (backup + push)
        );
        println!(
            "restic restore from S3            {:8.1} MiB/s  (cairn --remote: {:.2}x faster)",
            mib / restore,
            restore / direct
        );
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
