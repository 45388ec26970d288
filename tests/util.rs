//! Shared test helpers: running the binary, making data, reading stats.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary store directory (removed on drop) and the binary to drive it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture { dir: tempfile::tempdir().expect("temporary directory") }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `cairn` command aimed at this fixture's store.
    pub fn command(&self, args: &[&str]) -> Command {
        command_on(&self.store(), args)
    }

    /// Runs `cairn ARGS`; returns the output whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cairn runs")
    }

    /// Runs `cairn ARGS` and insists that it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeed(self.command(args))
    }

    /// Runs `cairn ARGS`, insists that it fails, and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(!output.status.success(), "cairn {args:?} should have failed");
        assert_eq!(output.status.code(), Some(1), "errors exit with 1");
        String::from_utf8(output.stderr).expect("utf-8 output")
    }

    /// `cairn --json stats`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["--json", "stats"])).expect("stats is JSON")
    }

    /// `stats` without the index's size on disk, which RocksDB changes by
    /// a few bytes on every open (its own log), nor the size of its filters
    /// (which depends on how its table files were flushed and compacted):
    /// what the store holds.
    pub fn contents(&self) -> serde_json::Value {
        let mut stats = self.stats();
        let fields = stats.as_object_mut().expect("stats is an object");
        fields.remove("index_bytes");
        fields.remove("index_bytes_per_blob");
        fields.remove("index_filter_bytes");
        stats
    }

    /// Bytes of container files on disk, by walking the directory.
    pub fn stored_bytes(&self) -> u64 {
        walk_size(&self.store().join("containers"))
    }

    /// Rewrites the store's `config.json` to say store format `format`
    /// (as a store made by an older cairn would); returns the one it had.
    pub fn set_format(&self, format: u32) -> serde_json::Value {
        let path = self.store().join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let old = std::mem::replace(&mut config["format"], serde_json::Value::from(format));
        std::fs::write(&path, config.to_string()).unwrap();
        old
    }

    /// Writes `data` to a file in the fixture and returns its path as a string.
    pub fn file(&self, name: &str, data: &[u8]) -> String {
        let path = self.path(name);
        std::fs::write(&path, data).expect("write test file");
        path.to_str().expect("utf-8 path").to_string()
    }

    /// Puts `data` under `key` through the binary.
    pub fn put(&self, key: &str, data: &[u8]) {
        let file = self.file(&format!("{}.in", key.replace('/', "_")), data);
        self.ok(&["put", key, &file]);
    }

    /// Gets `key` through the binary.
    pub fn get(&self, key: &str) -> Vec<u8> {
        let out = self.path(&format!("{}.out", key.replace('/', "_")));
        self.ok(&["get", key, out.to_str().unwrap()]);
        std::fs::read(out).expect("read got file")
    }
}

/// A `cairn` command aimed at the store at `store`.
pub fn command_on(store: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.arg("--store").arg(store).args(args);
    command.env_remove("CAIRN_STORE").stdin(Stdio::null());
    command
}

/// Runs a command and insists that it succeeds; returns stdout.
pub fn succeed(mut command: Command) -> String {
    let output = command.output().expect("cairn runs");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn walk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() { walk_size(&e.path()) } else { meta.len() }
        })
        .sum()
}

/// Reproducible pseudo-random bytes that do not compress (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like bytes that compress about 3:1 and still chunk by content.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "cairn",
        "store",
        "chunk",
        "blob",
        "tree",
        "backup",
        "restore",
        "version",
        "container",
        "index",
        "reference",
        "dataset",
        "manifest",
        "mirror",
        "retain",
        "compact",
    ];
    let random = noise(len / 4 + 16, seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(WORDS[(random[i % random.len()] & 15) as usize].as_bytes());
        out.push(if random[(i + 1) % random.len()] & 7 == 0 { b'\n' } else { b' ' });
        i += 1;
    }
    out.truncate(len);
    out
}

/// Files below `dir`, recursively (containers on disk).
pub fn count_files(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| if e.file_type().unwrap().is_dir() { count_files(&e.path()) } else { 1 })
        .sum()
}

/// A tmpfs mounted for one test and unmounted when dropped.
pub struct SmallDisk {
    pub path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` at `path`; `None` when this process may not mount.
    pub fn mount(path: std::path::PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallDisk { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.path).status();
    }
}

/// Flips one byte in the stored bytes of blob `id` (in a frame: of its
/// own bytes when the payload is stored raw) and returns (container id,
/// blob id a read reports) as messages print them.
pub fn flip_byte_in_blob(store: &cairn_store::Store, id: cairn_store::BlobId) -> (String, String) {
    use cairn_store::container::{FLAG_FRAME, FRAME_BITS, RECORD_HEADER_LEN};
    use std::os::unix::fs::FileExt;
    let entry = store.entry(&id).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(store.files().path(entry.container)).unwrap();
    let read_u32 = |at: u64| {
        let mut bytes = [0u8; 4];
        file.read_exact_at(&mut bytes, at).unwrap();
        u32::from_le_bytes(bytes) as u64
    };
    let stored = entry.offset + RECORD_HEADER_LEN as u64;
    // The blob a read reports: this one, unless it is in a frame whose
    // payload is compressed, which the byte damages whole (then the first
    // member is the first one a read meets).
    let (at, reported) = if entry.flags & FLAG_FRAME == 0 {
        (stored + entry.stored_len as u64 / 2, id)
    } else {
        let members = read_u32(stored) & 0xffff;
        let payload = stored + 2 + 4 * members;
        if entry.flags & !FRAME_BITS == 0 {
            let start: u64 = (0..entry.member as u64).map(|i| read_u32(stored + 2 + 4 * i)).sum();
            (payload + start + entry.raw_len as u64 / 2, id)
        } else {
            let record = store.index().container(entry.container).unwrap().unwrap();
            let table = store.files().table(entry.container, record.stored_bytes).unwrap();
            let first = table.iter().find(|t| t.offset == entry.offset && t.member == 0).unwrap().id;
            (payload + (entry.stored_len as u64 - 2 - 4 * members) / 2, first)
        }
    };
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5a], at).unwrap();
    (entry.container.to_string(), reported.to_string())
}

/// What one commit's log record may cost in container bytes (a small
/// metadata container: header, the record, footer): commits that write
/// no data still write this.
pub const LOG_RECORD_BOUND: u64 = 2048;

/// Reference counts recomputed from the records down, the way the brief
/// defines them: one per object or dataset naming a blob, one per live log
/// record (the log holds it), plus one per time a *reachable* metadata blob
/// names it (each distinct blob's children counted once). The index is used
/// only to find bytes, never for counts.
pub fn recount(store: &cairn_store::Store) -> std::collections::HashMap<cairn_store::BlobId, i64> {
    let mut counts = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<cairn_store::BlobId> = store.objects("").unwrap().iter().map(|o| o.record.content).collect();
    stack.extend(store.datasets().unwrap().iter().map(|d| d.root));
    stack.extend(store.log().unwrap().iter().map(|entry| entry.id));
    while let Some(id) = stack.pop() {
        *counts.entry(id).or_default() += 1;
        if !seen.insert(id) {
            continue;
        }
        let entry = store.entry(&id).unwrap_or_else(|e| panic!("reachable blob {id}: {e}"));
        if entry.kind.is_metadata() {
            let bytes = store.read_blob(&id).unwrap();
            stack.extend(cairn_store::refs::children_of(entry.kind, id, &bytes).unwrap());
        }
    }
    counts
}

/// After a complete gc with no session running: the index holds exactly
/// the reachable blobs, each with the recounted number of references, and
/// the zero queue is empty.
pub fn assert_recount_matches(store: &cairn_store::Store) {
    use cairn_store::index::{IndexEntry, cf};
    let want = recount(store);
    let mut have = std::collections::HashMap::new();
    for item in store.index().scan(cf::BLOBS, b"") {
        let (key, value) = item.unwrap();
        let id = cairn_store::BlobId::from_slice(&key).unwrap();
        have.insert(id, IndexEntry::decode(&value).unwrap().refs);
    }
    let mut wrong: Vec<String> = want
        .iter()
        .filter(|(id, refs)| have.get(*id) != Some(*refs))
        .map(|(id, refs)| format!("{id}: recount {refs}, index {:?}", have.get(id)))
        .collect();
    wrong.extend(
        have.iter()
            .filter(|(id, _)| !want.contains_key(*id))
            .map(|(id, refs)| format!("{id}: unreachable, index {refs}")),
    );
    wrong.sort();
    assert!(
        wrong.is_empty(),
        "{} of {} blobs disagree, e.g. {:?}",
        wrong.len(),
        want.len(),
        &wrong[..wrong.len().min(5)]
    );
    let queued = store.index().scan(cf::ZERO, b"").count();
    assert_eq!(queued, 0, "the zero queue should be empty after a complete gc");
}

/// A store made through the library, with small containers so that tests
/// span several.
pub fn library_store(dir: &tempfile::TempDir, container_size: u64) -> cairn_store::Store {
    let options = cairn_store::StoreOptions { container_size, ..cairn_store::StoreOptions::default() };
    cairn_store::Store::create(&dir.path().join("store"), &options).unwrap()
}

/// An object's bytes, read through the library.
pub fn read_object(store: &cairn_store::Store, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store.get_object(key, &mut out, "test", &|_| {}).unwrap();
    out
}

/// `check --read-data` through the library finds nothing wrong.
pub fn assert_clean(store: &cairn_store::Store) {
    let report = store.check(cairn_store::CheckOptions { read_data: true }).unwrap();
    assert!(report.is_clean(), "check found problems: {:#?}", report.problems);
}

/// Kills `child` (SIGKILL) at a random moment below `max_delay` ms unless
/// it has finished by then, and waits for it. The bound adapts to how long
/// the command takes on this machine, so most runs are cut somewhere: it
/// grows after a kill and halves (to 5 ms at least) after a run that
/// finished first. Returns whether the child was killed.
pub fn kill_at_random(child: &mut std::process::Child, rng: &mut impl rand::Rng, max_delay: &mut u64) -> bool {
    std::thread::sleep(std::time::Duration::from_millis(rng.random_range(0..*max_delay)));
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        child.kill().unwrap();
        *max_delay = *max_delay * 5 / 4;
    } else {
        *max_delay = (*max_delay / 2).max(5);
    }
    child.wait().unwrap();
    killed
}
