//! Power cuts, not just SIGKILL: the store lives on a FUSE filesystem
//! ([`fs::PowerCutFs`]) that forgets every write, name and removal not made
//! durable by fsync, fdatasync or a directory fsync. The tests run the real
//! binary on it, cut the power at random moments (during a command, or
//! right after one reported success), mount what survived, and check:
//!
//! - every object and dataset a command reported committed is there and
//!   reads back identical;
//! - what a cut command left is all or nothing (an object, if listed, is
//!   whole);
//! - `check --read-data` is clean, and the next command recovers.
//!
//! SIGKILL keeps the page cache, so crash tests pass even with every fsync
//! removed; these do not: `CAIRN_FAULT=skip-sync:...` removes the container
//! seal's fdatasync or the commit batch's sync, and the last tests show that
//! the harness then fails. Seeded: the seed is printed, and
//! `CAIRN_TEST_SEED` replays it.

mod fs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fstree::{Meta, assert_same, snapshot};
use crate::util::{command_on, noise, text};

/// A store on a power-cut filesystem, and the binary to drive it.
struct Rig {
    fs: fs::PowerCutFs,
    session: Option<fuser::BackgroundSession>,
    /// Outside the FUSE mount: sources, restores, the mountpoint itself.
    dir: tempfile::TempDir,
    /// Environment for every command (fault injection).
    env: Vec<(String, String)>,
}

impl Rig {
    fn new(env: &[(&str, &str)]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        let mut rig = Rig {
            fs: fs::PowerCutFs::new(),
            session: None,
            dir,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        rig.mount();
        rig
    }

    fn mountpoint(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn store(&self) -> PathBuf {
        self.mountpoint().join("store")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn mount(&mut self) {
        let session = self.fs.mount(&self.mountpoint()).unwrap_or_else(|e| {
            panic!("the power-cut tests need FUSE (/dev/fuse, and root to mount without fusermount): {e}")
        });
        self.session = Some(session);
    }

    /// Cuts the power: no process may be running on the store. Unmounts
    /// (so no kernel cache survives), forgets what was not durable, mounts
    /// what is left.
    fn cut(&mut self) {
        if let Some(session) = self.session.take() {
            match session.umount_and_join() {
                Ok(()) => {}
                // The serving thread may see the unmount as an aborted
                // connection to /dev/fuse: the normal end of a session.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) => panic!("unmounting the power-cut filesystem: {e}"),
            }
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
            let mountpoint = self.mountpoint().canonicalize().unwrap();
            assert!(
                !mounts.lines().any(|l| l.split(' ').nth(1) == mountpoint.to_str()),
                "the power-cut filesystem is still mounted"
            );
        }
        self.fs.cut();
        self.mount();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = command_on(&self.store(), args);
        command.envs(self.env.iter().map(|(k, v)| (k, v))).stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    /// Runs a command to the end; whether it succeeded, and its stdout.
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let output = self.command(args).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args);
        assert!(ok, "cairn {args:?} failed:\n{stderr}");
        stdout
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().unwrap()
    }
}

/// What the store must hold: objects and datasets reported committed.
#[derive(Default)]
struct Expected {
    objects: BTreeMap<String, Vec<u8>>,
    /// Dataset label -> the source as it was backed up.
    datasets: BTreeMap<String, BTreeMap<PathBuf, Meta>>,
}

/// One step of a workload.
#[derive(Clone, Debug)]
enum Op {
    Put { key: String, data: Vec<u8> },
    Backup { label: String },
    Forget { label: String },
    Rm { key: String },
    Clone { from: String, to: String },
    Gc,
}

impl Op {
    fn args(&self, rig: &Rig) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Op::Put { key, .. } => s(&["put", key, rig.path("input").to_str().unwrap()]),
            Op::Backup { label } => s(&["backup", rig.path("source").to_str().unwrap(), "--name", label]),
            Op::Forget { label } => s(&["forget", label]),
            Op::Rm { key } => s(&["rm", key]),
            Op::Clone { from, to } => s(&["clone", from, "--name", to]),
            Op::Gc => s(&["gc", "--compact-threshold", "0.05"]),
        }
    }

    /// Makes the op's input (the file to put, the source to back up).
    fn prepare(&self, rig: &Rig, rng: &mut StdRng) {
        match self {
            Op::Put { data, .. } => std::fs::write(rig.path("input"), data).unwrap(),
            Op::Backup { .. } => change_source(&rig.path("source"), rng),
            _ => {}
        }
    }

    /// Applies the op to what the store must hold, once it is known to
    /// have committed.
    fn apply(&self, expected: &mut Expected, rig: &Rig) {
        match self {
            Op::Put { key, data } => drop(expected.objects.insert(key.clone(), data.clone())),
            Op::Backup { label } => drop(expected.datasets.insert(label.clone(), snapshot(&rig.path("source")))),
            Op::Forget { label } => drop(expected.datasets.remove(label)),
            Op::Rm { key } => drop(expected.objects.remove(key)),
            Op::Clone { from, to } => {
                let tree = expected.datasets[from].clone();
                expected.datasets.insert(to.clone(), tree);
            }
            Op::Gc => {}
        }
    }
}

/// Edits a few files of the backup source, adds one, removes one.
fn change_source(source: &Path, rng: &mut StdRng) {
    if !source.exists() {
        for i in 0..40 {
            let dir = source.join(format!("d{}", i % 4));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}")), text(500 + rng.random_range(0..30_000), i)).unwrap();
        }
        return;
    }
    for _ in 0..3 {
        let dir = source.join(format!("d{}", rng.random_range(0..4)));
        let name = format!("f{}", rng.random_range(0..60));
        std::fs::write(dir.join(name), noise(rng.random_range(0..40_000), rng.random())).unwrap();
    }
    let dir = source.join(format!("d{}", rng.random_range(0..4)));
    if let Some(entry) = std::fs::read_dir(&dir).unwrap().next() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
}

/// The labels of the datasets the store lists.
fn listed_datasets(rig: &Rig) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(&rig.ok(&["--json", "datasets"])).unwrap();
    json.as_array().unwrap().iter().filter_map(|d| d["label"].as_str().map(String::from)).collect()
}

fn listed_objects(rig: &Rig) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(&rig.ok(&["--json", "objects"])).unwrap();
    json.as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap().to_string()).collect()
}

fn read_object(rig: &Rig, key: &str) -> Vec<u8> {
    let out = rig.path("got");
    rig.ok(&["get", key, out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

fn restores_as(rig: &Rig, label: &str, tree: &BTreeMap<PathBuf, Meta>) {
    let target = rig.path("restored");
    let _ = std::fs::remove_dir_all(&target);
    rig.ok(&["restore", label, "--to", target.to_str().unwrap()]);
    assert_same(tree, &snapshot(&target));
}

/// After a cut: reconciles `expected` with the op that was cut (`uncertain`:
/// it may or may not have committed), then insists the store holds exactly
/// what it must, intact.
fn verify(rig: &Rig, expected: &mut Expected, uncertain: Option<&Op>, rng: &mut StdRng, context: &str) {
    // A commit cut after its log record was durable is redone by the next
    // writer's open (check makes one), so what it did is known after that.
    let (clean, stdout, stderr) = rig.run(&["check"]);
    assert!(clean, "{context}: first check after the cut:\n{stdout}\n{stderr}");
    let objects = listed_objects(rig);
    let datasets = listed_datasets(rig);
    if let Some(op) = uncertain {
        let committed = match op {
            // Committed if the key holds the new bytes; if it holds anything
            // but these or what it held before, the checks below fail.
            Op::Put { key, data } => objects.contains(key) && read_object(rig, key) == *data,
            Op::Backup { label } | Op::Clone { to: label, .. } => datasets.contains(label),
            Op::Forget { label } => !datasets.contains(label),
            Op::Rm { key } => !objects.contains(key),
            Op::Gc => false,
        };
        if committed {
            op.apply(expected, rig);
        }
    }
    let want_objects: Vec<&String> = expected.objects.keys().collect();
    let mut have_objects: Vec<&String> = objects.iter().collect();
    have_objects.sort();
    assert_eq!(have_objects, want_objects, "{context}: objects listed");
    let mut have_datasets = datasets.clone();
    have_datasets.sort();
    assert_eq!(have_datasets, expected.datasets.keys().cloned().collect::<Vec<_>>(), "{context}: datasets listed");
    for (key, data) in &expected.objects {
        assert!(read_object(rig, key) == *data, "{context}: object {key} is not what was put");
    }
    // Restoring every dataset after every cut would dominate the run: the
    // newest, and one other at random.
    let labels: Vec<&String> = expected.datasets.keys().collect();
    if let Some(newest) = labels.iter().max_by_key(|l| l[1..].parse::<u64>().unwrap_or(0)) {
        restores_as(rig, newest, &expected.datasets[*newest]);
        let other = labels[rng.random_range(0..labels.len())];
        restores_as(rig, other, &expected.datasets[other]);
    }
    let (clean, stdout, stderr) = rig.run(&["check", "--read-data"]);
    assert!(clean, "{context}: check after the cut:\n{stdout}\n{stderr}");
}

/// The next op of the workload, given what the store holds.
fn next_op(rng: &mut StdRng, expected: &Expected, counter: &mut u64) -> Op {
    *counter += 1;
    let n = *counter;
    let roll = rng.random_range(0..100);
    let dataset = |rng: &mut StdRng| {
        let labels: Vec<&String> = expected.datasets.keys().collect();
        (!labels.is_empty()).then(|| labels[rng.random_range(0..labels.len())].clone())
    };
    match roll {
        0..30 => {
            let len = rng.random_range(0..600_000);
            // Partly shared with earlier objects, so dedup and commit resolution run too.
            let mut data = text(len, n % 5);
            let at = rng.random_range(0..=data.len());
            data.splice(at..at, noise(rng.random_range(0..100_000), n));
            Op::Put { key: format!("o{}", n % 7), data }
        }
        30..60 => Op::Backup { label: format!("b{n}") },
        60..70 if expected.datasets.len() > 1 => Op::Forget { label: dataset(rng).unwrap() },
        70..77 if !expected.objects.is_empty() => {
            let keys: Vec<&String> = expected.objects.keys().collect();
            Op::Rm { key: keys[rng.random_range(0..keys.len())].clone() }
        }
        77..85 if !expected.datasets.is_empty() => Op::Clone { from: dataset(rng).unwrap(), to: format!("c{n}") },
        _ => Op::Gc,
    }
}

/// The seed for this run: `CAIRN_TEST_SEED`, or a random one, printed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("CAIRN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed} (rerun with CAIRN_TEST_SEED={seed})");
    seed
}

/// Runs `rounds` ops with a cut after each: half of them in the middle of
/// the op, at a random moment, half right after it reported success.
/// Returns the number of cuts made, and how many of them cut a command
/// before it finished.
fn workload(rig: &mut Rig, seed: u64, rounds: u64) -> (u64, u64) {
    let mut interrupted = 0;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut expected = Expected::default();
    let mut counter = 0;
    // How long each kind of op takes, to aim the cuts inside it.
    let mut durations: BTreeMap<&'static str, Duration> = BTreeMap::new();
    rig.ok(&["init", "--container-size", "256KiB"]);
    rig.cut();
    for round in 0..rounds {
        let op = next_op(&mut rng, &expected, &mut counter);
        let kind = match op {
            Op::Put { .. } => "put",
            Op::Backup { .. } => "backup",
            Op::Forget { .. } => "forget",
            Op::Rm { .. } => "rm",
            Op::Clone { .. } => "clone",
            Op::Gc => "gc",
        };
        op.prepare(rig, &mut rng);
        let args = op.args(rig);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let context = format!("seed {seed}, round {round}, {op:?}", op = short(&op));
        let uncertain = match durations.get(kind) {
            Some(duration) if rng.random_bool(0.5) => {
                let mut child = rig.spawn(&args);
                let at = duration.mul_f64(rng.random_range(0.0..1.1));
                let started = Instant::now();
                while started.elapsed() < at && child.try_wait().unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                interrupted += u64::from(!output.status.success());
                if output.status.success() {
                    op.apply(&mut expected, rig);
                    None
                } else {
                    Some(op.clone())
                }
            }
            _ => {
                let started = Instant::now();
                let (ok, _, stderr) = rig.run(&args);
                assert!(ok, "{context}: {stderr}");
                durations.insert(kind, started.elapsed());
                op.apply(&mut expected, rig);
                None
            }
        };
        rig.cut();
        verify(rig, &mut expected, uncertain.as_ref(), &mut rng, &context);
    }
    (rig.fs.state().cuts, interrupted)
}

/// An op without its data, for messages.
fn short(op: &Op) -> String {
    match op {
        Op::Put { key, data } => format!("put {key} ({} bytes)", data.len()),
        other => format!("{other:?}"),
    }
}

#[test]
fn power_cuts_during_and_after_every_kind_of_write_lose_nothing_committed() {
    let seed = seed("power cuts");
    let mut rig = Rig::new(&[]);
    let (cuts, interrupted) = workload(&mut rig, seed, 120);
    eprintln!("power cuts: {cuts} cuts, {interrupted} of them inside a command");
    assert!(cuts >= 120, "{cuts} cuts");
    assert!(interrupted >= 15, "only {interrupted} cuts came inside a command");
    assert!(rig.fs.state().syncs > 0, "nothing was ever synced");
}

/// The same with every commit of more than 16 blobs staged and applied in
/// pieces (`CAIRN_STAGE_ENTRIES`; `apply.rs`), so that cuts land in that
/// path too: before the stage is durable, between the applied pieces, and
/// around the final batch.
#[test]
fn power_cuts_during_staged_commits_lose_nothing_committed() {
    let seed = seed("power cuts, staged commits");
    let mut rig = Rig::new(&[("CAIRN_STAGE_ENTRIES", "16")]);
    let (cuts, interrupted) = workload(&mut rig, seed, 40);
    eprintln!("power cuts, staged commits: {cuts} cuts, {interrupted} of them inside a command");
    assert!(cuts >= 40, "{cuts} cuts");
    assert!(interrupted >= 4, "only {interrupted} cuts came inside a command");
}

/// The harness must be able to fail: with the container seal's fdatasync
/// skipped, a put reported committed loses its data at the next cut.
#[test]
fn the_harness_finds_a_missing_container_fsync() {
    let mut rig = Rig::new(&[("CAIRN_FAULT", "skip-sync:container")]);
    rig.ok(&["init"]);
    let data = noise(1 << 20, 1);
    std::fs::write(rig.path("input"), &data).unwrap();
    rig.ok(&["put", "k", rig.path("input").to_str().unwrap()]);
    rig.cut();
    let out = rig.path("got");
    let (ok, _, stderr) = rig.run(&["get", "k", out.to_str().unwrap()]);
    assert!(!ok, "the object survived a cut without its container's fsync");
    assert!(stderr.contains("container"), "{stderr}");
}

/// ... and with the commit batch written unsynced, the committed object is
/// gone after the cut.
#[test]
fn the_harness_finds_an_unsynced_commit() {
    let mut rig = Rig::new(&[("CAIRN_FAULT", "skip-sync:commit")]);
    rig.ok(&["init"]);
    std::fs::write(rig.path("input"), noise(100_000, 2)).unwrap();
    rig.ok(&["put", "k", rig.path("input").to_str().unwrap()]);
    rig.cut();
    assert!(!listed_objects(&rig).contains(&"k".to_string()), "the commit survived a cut without its sync");
}

/// An attach that reported success survives a power cut right after it:
/// its downloaded metadata containers, its index and its claim.
#[test]
fn an_attach_survives_a_power_cut_after_it_reports_success() {
    use crate::remote::{add_remote, attach, cairn};

    let mut rig = Rig::new(&[]);
    let server = crate::s3::S3Server::start(&rig.path("s3"));
    let origin = rig.path("origin");
    let source = rig.path("source");
    crate::versions::generate(&source, 80, 4);
    add_remote(&origin, &server, &[]);
    crate::util::succeed(cairn(&origin, &server, &["backup", source.to_str().unwrap(), "--push", "s3"]));
    attach(&rig.store(), &server);
    rig.cut();
    let target = rig.path("restored");
    crate::util::succeed(cairn(&rig.store(), &server, &["restore", "latest", "--to", target.to_str().unwrap()]));
    crate::versions::diff_r(&source, &target);
    crate::util::succeed(cairn(&rig.store(), &server, &["check", "--read-data"]));
    // It is the remote's writer still: a new backup pushes.
    crate::versions::mutate(&source, 2);
    crate::util::succeed(cairn(&rig.store(), &server, &["backup", source.to_str().unwrap()]));
    let pushed = crate::remote::push(&rig.store(), &server);
    assert_eq!(pushed["datasets_uploaded"], 1, "{pushed}");
}

/// `cairn repair` cut by a power failure at random moments, over and over:
/// afterwards the store either has its rebuilt index or none (and says to
/// repair), never a half-built one; a second repair finishes, and nothing
/// that was committed is lost.
#[test]
fn power_cuts_during_repair_lose_nothing() {
    let seed = seed("power cuts during repair");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rig = Rig::new(&[]);
    let source = rig.path("source");
    let mut datasets = BTreeMap::new();
    for n in 0..4 {
        change_source(&source, &mut rng);
        let label = format!("b{n}");
        rig.ok(&["backup", source.to_str().unwrap(), "--name", &label]);
        datasets.insert(label, snapshot(&source));
        std::fs::write(rig.path("input"), noise(200_000, n)).unwrap();
        rig.ok(&["put", &format!("o{n}"), rig.path("input").to_str().unwrap()]);
    }
    rig.ok(&["forget", "b1"]);
    datasets.remove("b1");
    rig.ok(&["gc", "--compact-threshold", "0.05"]);
    let objects = listed_objects(&rig);
    rig.cut();
    let mut max_delay = 400;
    let mut killed = 0;
    for round in 0..8 {
        let context = format!("seed {seed}, round {round}");
        // The damage: the index is gone, durably.
        std::fs::remove_dir_all(rig.store().join("index")).unwrap();
        std::fs::File::open(rig.store()).unwrap().sync_all().unwrap();
        let mut child = rig.spawn(&["repair"]);
        if round % 3 == 2 {
            // This time the repair finishes before the power goes: what it
            // reported done must survive the cut.
            assert!(child.wait().unwrap().success(), "{context}: repair failed");
            rig.cut();
            rig.ok(&["datasets"]);
        } else {
            if crate::util::kill_at_random(&mut child, &mut rng, &mut max_delay) {
                killed += 1;
            }
            rig.cut();
        }
        let (listed, _, stderr) = rig.run(&["datasets"]);
        if !listed {
            assert!(stderr.contains("cairn repair"), "{context}: after a cut repair:\n{stderr}");
            rig.ok(&["repair"]);
        }
        let mut have = listed_datasets(&rig);
        have.sort();
        assert_eq!(have, datasets.keys().cloned().collect::<Vec<_>>(), "{context}: datasets listed");
        assert_eq!(listed_objects(&rig), objects, "{context}: objects listed");
        for (label, tree) in &datasets {
            restores_as(&rig, label, tree);
        }
        let (clean, stdout, stderr) = rig.run(&["check", "--read-data"]);
        assert!(clean, "{context}: check after the cut:\n{stdout}\n{stderr}");
        // Moved-aside old indexes are the user's to remove.
        for entry in std::fs::read_dir(rig.store()).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with("index.old-") {
                std::fs::remove_dir_all(path).unwrap();
            }
        }
    }
    assert!(killed > 0, "seed {seed}: no repair was cut; every one finished first");
}
