//! S3 transfer: push, restore straight from S3 (`--remote`), attach and
//! restore from the attached store, beside a local restore of the same
//! dataset measured in the same run, and restic backing up to and
//! restoring from the same S3 server when it is installed.
//!
//! The server is the tests' in-process S3 (`tests/s3.rs`: s3s over local
//! files, SigV4 on) with a real S3's time to first byte injected before
//! every request (CAIRN_BENCH_LATENCY_MS, 15 by default), so request
//! counts cost what they would. Printed for a full restore, one directory
//! and one file straight from S3: time, GETs (and per GiB), and bytes
//! fetched beside what was needed.
//!
//! After one of each that is not counted, local and remote full restores
//! take turns (ABBA, CAIRN_BENCH_ROUNDS, 3 by default) and their medians
//! are compared; the CPU seconds and peak RSS of cairn and the CPU
//! seconds of the server are printed beside them.
//!
//! Where restores write matters more than anything cairn does: on this
//! disk's ext4 a restore right after another's files were deleted spends
//! most of its time in the kernel skipping recently deleted inodes, and
//! ratios between identical runs range from 0.5 to 3.6. So
//! CAIRN_BENCH_RESTORE_FS=ext4 (as root) gives every restore, cairn's and
//! restic's, a fresh ext4 file system of its own on a loop device backed
//! by memory: the real cost of making files, the same for each.
//! CAIRN_BENCH_RESTORE_DIR instead puts the restores in a directory (a
//! tmpfs takes the file system's cost out of the comparison).
//!
//! CAIRN_BENCH_RESTORE_MEMORY sets the restores' `--memory`.
//! CAIRN_BENCH_ORDER (for example RRRRLLLL) first runs local (L) and
//! remote (R) full restores in that order, printing each one's time: to
//! tell a restore's own variance from what one step leaves to the next.
//!
//! `cargo bench --bench remote` (CAIRN_BENCH_MB=200 by default; the issue's
//! figures use 1024). Under `cargo test` it runs on a small tree as a
//! smoke test.

mod common;
#[path = "../tests/s3.rs"]
#[allow(dead_code)]
mod s3;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use common::tools::{du, generate, installed};
use nix::sys::resource::{UsageWho, getrusage};
use s3::{BUCKET, S3Server, credentials};

/// Where one restore writes (see the module's doc), removed when dropped.
struct Target {
    path: PathBuf,
    /// The mount point and the image of its own file system, if it has one.
    own_fs: Option<(tempfile::TempDir, PathBuf)>,
}

impl Target {
    /// `name` under `dir`, or, with CAIRN_BENCH_RESTORE_FS=ext4, inside a
    /// fresh ext4 file system big enough for `bytes`.
    fn new(dir: &Path, name: &str, bytes: u64) -> Target {
        if std::env::var("CAIRN_BENCH_RESTORE_FS").as_deref() != Ok("ext4") {
            return Target { path: dir.join(name), own_fs: None };
        }
        let image = Path::new("/dev/shm").join(format!("cairn-bench-{}-{name}.img", std::process::id()));
        let size = (bytes * 2).max(256 << 20);
        std::fs::File::create(&image).unwrap().set_len(size).unwrap();
        let ok = |command: &mut Command| assert!(command.status().unwrap().success(), "{command:?}");
        ok(Command::new("mkfs.ext4").args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]).arg(&image));
        let mount = tempfile::tempdir().unwrap();
        ok(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(mount.path()));
        Target { path: mount.path().join(name), own_fs: Some((mount, image)) }
    }

    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        match &self.own_fs {
            Some((mount, image)) => {
                let _ = Command::new("umount").arg(mount.path()).status();
                let _ = std::fs::remove_file(image);
            }
            None => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }
}

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

std::thread_local! {
    /// CPU seconds of the last timed step: the command's own, and this
    /// process's (the in-process S3 server's).
    static LAST_CPU: std::cell::Cell<(f64, f64)> = const { std::cell::Cell::new((0.0, 0.0)) };
    /// Peak RSS of the last timed command, in bytes.
    static LAST_PEAK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// User + system CPU seconds of `who`.
fn cpu(who: UsageWho) -> f64 {
    let usage = getrusage(who).unwrap();
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    seconds(usage.user_time()) + seconds(usage.system_time())
}

fn timed(mut command: Command) -> f64 {
    // The previous step's gigabyte still being written back would slow
    // this one by however much of it is left: start each from a clean slate.
    let _ = Command::new("sync").status();
    let (child, own) = (cpu(UsageWho::RUSAGE_CHILDREN), cpu(UsageWho::RUSAGE_SELF));
    let (output, seconds, peak) = common::peak::run_watched(&mut command, None);
    LAST_CPU.set((cpu(UsageWho::RUSAGE_CHILDREN) - child, cpu(UsageWho::RUSAGE_SELF) - own));
    LAST_PEAK.set(peak);
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    // CAIRN_LOG=debug (passed on to cairn) shows where the time went.
    if std::env::var_os("CAIRN_LOG").is_some() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
    }
    seconds
}

/// What one restore cost: wall seconds, GETs, bytes the server sent, CPU
/// seconds of cairn and of the server.
struct Cost {
    seconds: f64,
    gets: u64,
    bytes: u64,
    cpu: (f64, f64),
    /// Peak RSS of cairn, bytes.
    peak: u64,
}

/// Runs `cairn ARGS` and counts the server's GETs and bytes for it.
fn counted(server: &S3Server, run: impl FnOnce() -> f64) -> Cost {
    server.seen.reset();
    let seconds = run();
    Cost {
        seconds,
        gets: server.seen.gets.load(Ordering::SeqCst),
        bytes: server.seen.downloaded.load(Ordering::SeqCst),
        cpu: LAST_CPU.get(),
        peak: LAST_PEAK.get(),
    }
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mb: usize =
        if benchmarking { std::env::var("CAIRN_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(200) } else { 4 };
    // A real S3's time to first byte, injected into every request.
    let latency: u64 = std::env::var("CAIRN_BENCH_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let work = common::work_dir();
    let server = S3Server::start(&work.path().join("s3"));
    let tree = work.path().join("tree");
    let files = generate(&tree, mb << 20);
    let store = work.path().join("store");
    let url = format!("s3://{BUCKET}/cairn");
    let backup = cairn(&store, &server, &["backup", tree.to_str().unwrap()]);
    cairn(&store, &server, &["remote", "add", "bench", &url]);
    let stored = du(&store.join("containers"));
    server.seen.latency_ms.store(latency, Ordering::SeqCst);
    let push = cairn(&store, &server, &["push"]);
    // Where restores write (CAIRN_BENCH_RESTORE_DIR, for example a tmpfs,
    // takes the file system's cost of making files out of the comparison).
    let restores = match std::env::var_os("CAIRN_BENCH_RESTORE_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir_in(work.path()).unwrap(),
    };
    let none = work.path().join("none");
    let tree_bytes = du(&tree);
    // CAIRN_BENCH_RESTORE_MEMORY: the `--memory` of restores from S3.
    let memory = std::env::var("CAIRN_BENCH_RESTORE_MEMORY").ok();
    let direct = |what: &[&str], to: &str| {
        let mut args = vec!["--remote", &url, "restore", "latest"];
        args.extend(what);
        if let Some(memory) = &memory {
            args.extend(["--memory", memory]);
        }
        let target = Target::new(restores.path(), to, tree_bytes);
        args.extend(["--to", target.arg()]);
        counted(&server, || cairn(&none, &server, &args))
    };
    // Local and remote restores take turns (ABBA), each removes what it
    // made, and the medians are compared.
    let rounds: usize = if benchmarking {
        std::env::var("CAIRN_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
    } else {
        1
    };
    let (mut locals, mut fulls) = (Vec::new(), Vec::new());
    let local = || {
        let target = Target::new(restores.path(), "local", tree_bytes);
        let seconds = cairn(&store, &server, &["restore", "latest", "--to", target.arg()]);
        (seconds, LAST_CPU.get().0, LAST_PEAK.get())
    };
    // CAIRN_BENCH_ORDER (for example LLLRRR) first runs local (L) and
    // remote (R) restores in that order and prints each one's time: to see
    // whether a restore's time depends on what ran before it.
    for (step, kind) in std::env::var("CAIRN_BENCH_ORDER").unwrap_or_default().chars().enumerate() {
        let (seconds, cpu) = match kind {
            'L' => {
                let (seconds, cpu, _) = local();
                (seconds, cpu)
            }
            'R' => {
                let cost = direct(&[], "direct");
                (cost.seconds, cost.cpu.0)
            }
            other => panic!("CAIRN_BENCH_ORDER: {other:?} is neither L nor R"),
        };
        println!("order step {step} {kind}: {seconds:.2} s, CPU {cpu:.1} s");
    }
    // One of each first, not counted: on the machines these figures come
    // from, the first restore after the setup ran up to 3x slower than
    // every later one (memory the virtual machine touches for the first
    // time), whichever kind it was.
    if benchmarking {
        local();
        direct(&[], "direct");
    }
    for round in 0..rounds {
        if round % 2 == 0 {
            locals.push(local());
            fulls.push(direct(&[], "direct"));
        } else {
            fulls.push(direct(&[], "direct"));
            locals.push(local());
        }
    }
    let ratios: Vec<String> = locals.iter().zip(&fulls).map(|(l, f)| format!("{:.2}", f.seconds / l.0)).collect();
    locals.sort_by(|a, b| a.0.total_cmp(&b.0));
    fulls.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let (local, local_cpu, local_peak) = locals[rounds / 2];
    let full = fulls.swap_remove(rounds / 2);
    let dir = direct(&["/dir07"], "direct-dir");
    let dir_bytes = du(&tree.join("dir07"));
    let one = direct(&["/dir04/file000004.txt"], "direct-file");
    let attached = work.path().join("attached");
    let attach = counted(&server, || cairn(&attached, &server, &["attach", &url]));
    let from_attached = {
        let target = Target::new(restores.path(), "from-attached", tree_bytes);
        cairn(&attached, &server, &["restore", "latest", "--to", target.arg()])
    };

    let mib = mb as f64;
    let gib = mib / 1024.0;
    println!(
        "tree: {files} files, {mb} MiB, stored {:.1} MiB; {} cores; {latency} ms injected before every S3 request",
        stored as f64 / 1048576.0,
        num_cpus()
    );
    println!("cairn backup (local)              {:8.1} MiB/s", mib / backup);
    println!("cairn push                        {:8.1} MiB/s of stored bytes", stored as f64 / 1048576.0 / push);
    println!(
        "cairn restore, local store        {:8.1} MiB/s  (median of {rounds}; CPU {local_cpu:.1} s; peak RSS {:.0} MiB)",
        mib / local,
        local_peak as f64 / 1048576.0
    );
    println!(
        "cairn restore --remote, full      {:8.1} MiB/s  ({:.2}x local's time, medians; per round {}; {} GETs, {:.0} per GiB; fetched {:.2}x stored; CPU {:.1} s, server {:.1} s; peak RSS {:.0} MiB)",
        mib / full.seconds,
        full.seconds / local,
        ratios.join(" "),
        full.gets,
        full.gets as f64 / gib,
        full.bytes as f64 / stored as f64,
        full.cpu.0,
        full.cpu.1,
        full.peak as f64 / 1048576.0
    );
    println!(
        "cairn restore --remote, one dir   {:8.2} s      ({} GETs; fetched {:.2}x the directory's bytes)",
        dir.seconds,
        dir.gets,
        dir.bytes as f64 / dir_bytes as f64
    );
    println!("cairn restore --remote, one file  {:8.2} s      ({} GETs, {} bytes)", one.seconds, one.gets, one.bytes);
    println!("cairn attach                      {:8.2} s      ({} GETs)", attach.seconds, attach.gets);
    println!(
        "cairn restore, attached store     {:8.1} MiB/s  ({:.2}x local's time)",
        mib / from_attached,
        from_attached / local
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
        let target = Target::new(restores.path(), "restic", tree_bytes);
        let restore = counted(&server, || restic(&["restore", "latest", "--target", target.arg()]));
        println!(
            "restic backup to S3               {:8.1} MiB/s  (cairn backup + push: {:.2}x faster)",
            mib / restic_backup,
            restic_backup / (backup + push)
        );
        println!(
            "restic restore from S3            {:8.1} MiB/s  ({} GETs; cairn --remote: {:.2}x faster; CPU {:.1} s, server {:.1} s)",
            mib / restore.seconds,
            restore.gets,
            restore.seconds / full.seconds,
            restore.cpu.0,
            restore.cpu.1
        );
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
