//! Remotes against a real S3 protocol server (`s3s` + `s3s-fs` with SigV4,
//! in this process, see `s3.rs`), driven through the real binary and the
//! real aws-sdk-s3 client: push, attach and restore on a fresh store, reads
//! straight from S3, gc propagation, resuming an interrupted push, retries,
//! and bad credentials, buckets and endpoints.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::s3::{BUCKET, Failure, S3Server, SECRET_KEY, credentials};
use crate::util::{Fixture, command_on, noise, succeed};
use crate::versions::{diff_r, generate, mutate};

/// The remote URL every test pushes to.
pub(crate) fn url() -> String {
    format!("s3://{BUCKET}/team/cairn")
}

/// Points a command at the test server (its credentials, nothing of the
/// machine's AWS setup), with few retries so failures are quick.
pub(crate) fn aim(command: &mut Command) {
    credentials(command).env_remove("CAIRN_REMOTE").env("CAIRN_S3_MAX_ATTEMPTS", "4");
}

/// `cairn ARGS` on `store`, aimed at `server` (its endpoint is given as
/// the global `--endpoint-url`, with `--path-style`).
pub(crate) fn cairn(store: &Path, server: &S3Server, args: &[&str]) -> Command {
    let endpoint = server.endpoint();
    let mut all = vec!["--endpoint-url", &endpoint, "--path-style"];
    all.extend(args);
    let mut command = command_on(store, &all);
    aim(&mut command);
    command
}

pub(crate) fn add_remote(store: &Path, server: &S3Server, extra: &[&str]) {
    let url = url();
    let mut args = vec!["remote", "add", "s3", &url];
    args.extend(extra);
    succeed(cairn(store, server, &args));
}

/// `cairn attach` of the test remote into `store`; its JSON report.
pub(crate) fn attach(store: &Path, server: &S3Server) -> Value {
    serde_json::from_str(&succeed(cairn(store, server, &["--json", "attach", &url()]))).unwrap()
}

/// Every byte of every file under `dir`.
fn read_all_files(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(read_all_files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

pub(crate) fn push(store: &Path, server: &S3Server) -> Value {
    serde_json::from_str(&succeed(cairn(store, server, &["--json", "push"]))).unwrap()
}

/// `cairn --remote URL ARGS` with no store of its own.
fn remote_read(dir: &Path, server: &S3Server, args: &[&str]) -> String {
    let url = url();
    let mut all = vec!["--remote", &url];
    all.extend(args);
    succeed(cairn(&dir.join("no-store-here"), server, &all))
}

/// Container files the server holds under the remote's prefix.
pub(crate) fn remote_containers(server: &S3Server) -> BTreeSet<String> {
    let dir = server.root().join(BUCKET).join("team/cairn/containers");
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.len() == 16).collect()
}

/// Containers the local store's index names.
pub(crate) fn local_containers(store: &Path) -> BTreeSet<String> {
    let out: Value = serde_json::from_str(&succeed(command_on(store, &["--json", "containers"]))).unwrap();
    out.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

/// Stored bytes of the distinct blobs a dataset reaches (its records as
/// stored, compressed): what a restore of it must at least download.
fn dataset_stored_bytes(store: &Path, dataset: u64) -> u64 {
    let store = cairn_store::Store::open(store, cairn_store::OpenMode::ReadOnly).unwrap();
    let root = store.datasets().unwrap().into_iter().find(|d| d.id.0 == dataset).unwrap().root;
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    let mut bytes = 0;
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let entry = store.entry(&id).unwrap();
        bytes += entry.record_len();
        if entry.kind.is_metadata() {
            stack.extend(cairn_store::refs::children_of(entry.kind, id, &store.read_blob(&id).unwrap()).unwrap());
        }
    }
    bytes
}

#[test]
fn ten_versions_pushed_attach_and_restore_identical_and_read_straight_from_s3() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    generate(&source, 600, 3);
    let snapshots = fixture.path("snapshots");
    std::fs::create_dir(&snapshots).unwrap();
    add_remote(&store, &server, &["--default"]);
    for version in 1..=10u64 {
        if version > 1 {
            mutate(&source, version);
        }
        // The default remote: every backup pushes by itself.
        let mut backup = cairn(&store, &server, &["backup", source.to_str().unwrap()]);
        // Parts of 1 MiB, so containers (4 MiB) go up as multipart uploads.
        backup.env("CAIRN_S3_PART_SIZE", (1 << 20).to_string());
        succeed(backup);
        let status = Command::new("cp").arg("-a").arg(&source).arg(snapshots.join(format!("v{version}"))).status();
        assert!(status.unwrap().success());
    }
    assert!(server.seen.uploads.lock().unwrap().len() > remote_containers(&server).len(), "multipart parts");
    assert_eq!(remote_containers(&server), local_containers(&store), "every container was pushed");

    // A second push has nothing to do.
    server.seen.reset();
    let again = push(&store, &server);
    assert_eq!(again["containers_uploaded"], 0, "{again}");
    assert_eq!(again["datasets_uploaded"], 0, "{again}");
    assert_eq!(server.seen.uploads.lock().unwrap().len(), 0);

    let stored_latest = dataset_stored_bytes(&store, 10);
    std::fs::remove_dir_all(&store).unwrap();

    // Straight from S3, no store: list, browse, and restore one dataset
    // with ranged GETs of just what it needs.
    let listed: Value =
        serde_json::from_str(&remote_read(fixture.dir.path(), &server, &["--json", "datasets"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 10);
    let ls = remote_read(fixture.dir.path(), &server, &["ls", "latest", "/dir03"]);
    assert!(ls.contains("new-10-3.txt"), "{ls}");
    let found = remote_read(fixture.dir.path(), &server, &["find", "latest", "--name", "*.bin"]);
    assert!(found.contains("large.bin"), "{found}");
    let stat = remote_read(fixture.dir.path(), &server, &["stat", "latest", "/large.bin"]);
    assert!(stat.contains("chunks"), "{stat}");
    let cat = remote_read(fixture.dir.path(), &server, &["cat", "3", "/dir01/file00001.txt"]);
    assert_eq!(cat.as_bytes(), std::fs::read(snapshots.join("v3/dir01/file00001.txt")).unwrap());
    server.seen.reset();
    let direct = fixture.path("direct");
    remote_read(fixture.dir.path(), &server, &["restore", "latest", "--to", direct.to_str().unwrap()]);
    diff_r(&snapshots.join("v10"), &direct);
    let downloaded = server.seen.downloaded.load(Ordering::SeqCst);
    let overhead = downloaded as f64 / stored_latest as f64 - 1.0;
    eprintln!(
        "restore straight from S3: downloaded {downloaded} bytes for {stored_latest} stored ({:+.1}%), {} GETs",
        overhead * 100.0,
        server.seen.gets.load(Ordering::SeqCst)
    );
    // The metadata containers come whole (every version's trees, a few
    // percent), so no tree costs a request of its own, and each data
    // container the restore reads is staged in one ranged GET: 866 GETs and
    // +1.8% bytes with a GET per run of records and per tree, 576 and +6.2%
    // with metadata whole, 43 and +19.8% with data staged per container.
    // Issue 17 allows 1.3x the bytes and 2 GETs per container read.
    assert!(overhead < 0.3, "downloaded {downloaded} bytes for a dataset of {stored_latest} stored bytes");
    let gets = server.seen.gets.load(Ordering::SeqCst);
    let containers = remote_containers(&server).len();
    assert!(gets as usize <= 2 * containers, "{gets} GETs for {containers} containers on the remote");

    // Attach on a fresh directory: index and metadata only, then restore.
    let fresh = fixture.path("fresh");
    server.seen.reset();
    let attached = attach(&fresh, &server);
    assert_eq!(attached["datasets"], 10);
    let data_bytes = attached["remote_bytes"].as_u64().unwrap();
    assert!(
        server.seen.downloaded.load(Ordering::SeqCst) * 4 < data_bytes,
        "attach downloaded {} of {data_bytes} bytes",
        server.seen.downloaded.load(Ordering::SeqCst)
    );
    for version in [1u64, 6, 10] {
        let target = fixture.path(&format!("restored{version}"));
        succeed(cairn(&fresh, &server, &["restore", &version.to_string(), "--to", target.to_str().unwrap()]));
        diff_r(&snapshots.join(format!("v{version}")), &target);
    }
    succeed(cairn(&fresh, &server, &["check"]));
    let attached_store = cairn_store::Store::open(&fresh, cairn_store::OpenMode::ReadOnly).unwrap();
    crate::util::assert_recount_matches(&attached_store);
}

#[test]
fn a_tree_naming_one_child_twice_is_counted_once_per_mention_by_attach() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    let twin = source.join("twin-a");
    generate(&twin, 40, 7);
    // Two large files alike: one directory names their content list twice.
    std::fs::write(twin.join("large.bin"), crate::util::noise(3 << 20, 7)).unwrap();
    std::fs::write(twin.join("large-too.bin"), crate::util::noise(3 << 20, 7)).unwrap();
    // And a copy of the directory (the same tree blob, if nothing in it
    // differs but the time its inodes changed).
    let status = Command::new("cp").arg("-a").arg(&twin).arg(source.join("twin-b")).status();
    assert!(status.unwrap().success());
    add_remote(&store, &server, &["--default"]);
    succeed(cairn(&store, &server, &["backup", source.to_str().unwrap()]));
    // With the remote's blobs in memory, and on disk.
    for memory_blobs in ["1000000", "0"] {
        let fresh = fixture.path(&format!("fresh-{memory_blobs}"));
        let mut command = cairn(&fresh, &server, &["attach", &url()]);
        command.env("CAIRN_ATTACH_MEMORY_BLOBS", memory_blobs).env("CAIRN_LOG", "cairn_store::remote=debug");
        let output = command.output().unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{log}");
        assert_eq!(log.contains("moved to disk"), memory_blobs == "0", "{log}");
        // The attach's counts, against an independent recount of the trees.
        let attached = cairn_store::Store::open(&fresh, cairn_store::OpenMode::ReadOnly).unwrap();
        crate::util::assert_recount_matches(&attached);
    }
}

/// A store of small containers (many ranges to stage) holding one backup
/// of a generated tree, pushed to a new test server: the fixture, the
/// server, the store and the tree.
fn pushed_in_small_containers() -> (Fixture, S3Server, std::path::PathBuf, std::path::PathBuf) {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    succeed(command_on(&store, &["init", "--container-size", "256KiB"]));
    let source = fixture.path("source");
    generate(&source, 200, 5);
    add_remote(&store, &server, &[]);
    succeed(cairn(&store, &server, &["backup", source.to_str().unwrap(), "--push", "s3"]));
    (fixture, server, store, source)
}

/// A range a `--remote` restore stages that cannot be fetched: the files
/// that need it read it from the remote themselves, the remote refuses
/// them too, and the restore ends naming the container (a remote that
/// cannot be read ends a restore, as it always has). What matters here:
/// nothing waits for bytes that will not come (reads inside a range still
/// being fetched wait for it), and every file left behind is whole.
#[test]
fn a_staged_range_that_cannot_be_fetched_ends_the_restore_without_hanging() {
    let (fixture, server, store, source) = pushed_in_small_containers();
    let containers: Value = serde_json::from_str(&succeed(command_on(&store, &["--json", "containers"]))).unwrap();
    let data: Vec<&str> = containers
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "data")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(data.len() >= 4, "{containers}");
    // One container in the middle of the restore's order.
    let failing = data[data.len() / 2].to_string();
    *server.seen.fail_ranges_of.lock().unwrap() = Some(failing.clone());
    let target = fixture.path("restored");
    let url = url();
    let (status, stderr) = finish_within(cairn(
        &fixture.path("no-store-here"),
        &server,
        &["--remote", &url, "restore", "latest", "--to", target.to_str().unwrap()],
    ));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("container {failing}")), "{stderr}");
    assert!(server.seen.failed.load(Ordering::SeqCst) > 0);
    let (mut restored, mut stack) = (0, vec![source.clone()]);
    while let Some(dir) = stack.pop() {
        for file in std::fs::read_dir(dir).unwrap() {
            let file = file.unwrap().path();
            if file.is_dir() {
                stack.push(file);
                continue;
            }
            let relative = file.strip_prefix(&source).unwrap();
            if let Ok(bytes) = std::fs::read(target.join(relative)) {
                assert_eq!(bytes, std::fs::read(&file).unwrap(), "{relative:?} was left partly written");
                restored += 1;
            }
        }
    }
    eprintln!("{restored} files restored before the restore ended");
}

/// Runs `command` to its end, failing the test if it still runs after two
/// minutes (something waits for what will not come); its status and
/// stderr.
fn finish_within(mut command: Command) -> (std::process::ExitStatus, String) {
    let mut child = command.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{command:?} still runs after 120 s: something waits for what will not come");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().unwrap())
}

/// Restores the latest dataset of [`pushed_in_small_containers`] straight
/// from S3 with `extra` arguments, its staging logged; checks that the
/// restore is exact, and returns the log.
fn restore_straight_from_s3(extra: &[&str]) -> String {
    let (fixture, server, _store, source) = pushed_in_small_containers();
    let target = fixture.path("restored");
    let url = url();
    let mut args = vec!["--remote", &url, "restore", "latest", "--to", target.to_str().unwrap()];
    args.extend(extra);
    let mut command = cairn(&fixture.path("no-store-here"), &server, &args);
    command.env("CAIRN_LOG", "cairn_store::dataset::stage=debug");
    let (status, stderr) = finish_within(command);
    assert!(status.success(), "{stderr}");
    diff_r(&source, &target);
    stderr
}

/// With next to no memory for what is fetched ahead, a restore straight
/// from S3 still ends, exact: the fetcher waits for windows of files to be
/// written while no reader waits, and sends what lands to a staging file
/// while one does. Without that second rule each would wait for the other.
#[test]
fn a_restore_with_almost_no_memory_for_fetching_ahead_is_exact_and_never_stalls() {
    let stderr = restore_straight_from_s3(&["--memory", "1B", "--jobs", "4"]);
    // The staging files were used (the log says how many bytes went
    // there), so both of the fetcher's rules were exercised.
    let spilled: u64 = stderr
        .split("spilled=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no staging report in {stderr}"));
    assert!(spilled > 0, "{stderr}");
}

/// A restore straight from S3 in batches of a few entries stages each
/// batch's ranges in turn (the staging of one batch is over before the
/// next begins) and restores the same tree.
#[test]
fn a_restore_from_s3_in_small_batches_stages_each_batch_and_is_exact() {
    let stderr = restore_straight_from_s3(&["--batch", "7"]);
    let stagings = stderr.matches("staged remote containers").count();
    assert!(stagings > 3, "one staging per batch with files, got {stagings}: {stderr}");
}

#[test]
fn attached_store_backs_up_deduplicating_against_the_remote_and_pushes_back() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    generate(&source, 200, 5);
    add_remote(&store, &server, &[]);
    succeed(cairn(&store, &server, &["backup", source.to_str().unwrap(), "--push", "s3"]));
    std::fs::remove_dir_all(&store).unwrap();

    let fresh = fixture.path("fresh");
    attach(&fresh, &server);
    mutate(&source, 2);
    let report: Value =
        serde_json::from_str(&succeed(cairn(&fresh, &server, &["--json", "backup", source.to_str().unwrap()])))
            .unwrap();
    let added = report["record"]["bytes_added"].as_u64().unwrap();
    assert!(added < 2 << 20, "the second backup deduplicated against the remote: added {added}");
    let pushed = push(&fresh, &server);
    assert_eq!(pushed["datasets_uploaded"], 1, "{pushed}");
    assert_eq!(remote_containers(&server), local_containers(&fresh));
    let target = fixture.path("restored");
    succeed(cairn(&fresh, &server, &["restore", "latest", "--to", target.to_str().unwrap()]));
    diff_r(&source, &target);
}

#[test]
fn gc_propagates_deletes_after_uploads_and_the_remote_stays_whole() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    generate(&source, 300, 7);
    add_remote(&store, &server, &["--default"]);
    for version in 1..=4u64 {
        std::fs::write(source.join("large.bin"), noise(6 << 20, 100 + version)).unwrap();
        mutate(&source, version);
        succeed(cairn(&store, &server, &["backup", source.to_str().unwrap()]));
    }
    let before = remote_containers(&server);
    succeed(cairn(&store, &server, &["forget", "--keep-last", "1"]));
    succeed(cairn(&store, &server, &["gc", "--compact-threshold", "0.05"]));
    let local = local_containers(&store);
    assert!(before.difference(&local).count() > 0, "gc freed containers");
    assert!(local.difference(&before).count() > 0, "gc wrote new containers");

    server.seen.reset();
    let report = push(&store, &server);
    assert_eq!(report["datasets_deleted"], 3, "{report}");
    assert_eq!(report["containers_deleted"].as_u64().unwrap(), before.difference(&local).count() as u64);
    assert_eq!(remote_containers(&server), local, "the remote names exactly what the store does");
    // Uploads came before deletes: the delta, the new containers and the
    // dataset record went up before the first deletion.
    let ops = server.seen.ops.lock().unwrap().clone();
    let first_delete = ops.iter().position(|(op, _)| op.starts_with("Delete")).expect("deletions were sent");
    let last_upload = ops.iter().rposition(|(op, _)| op == "PutObject").expect("uploads were sent");
    assert!(last_upload < first_delete, "{ops:?}");
    let delta = ops.iter().position(|(op, key)| op == "PutObject" && key.contains("/index/")).expect("a delta");
    let container = ops.iter().position(|(op, key)| op == "PutObject" && key.contains("/containers/")).unwrap();
    assert!(delta < container, "the delta goes up before the containers it names: {ops:?}");

    let fresh = fixture.path("fresh");
    let attached = attach(&fresh, &server);
    assert_eq!(attached["datasets"], 1);
    let target = fixture.path("restored");
    succeed(cairn(&fresh, &server, &["restore", "latest", "--to", target.to_str().unwrap()]));
    diff_r(&source, &target);
    succeed(cairn(&fresh, &server, &["check", "--read-data"]));
}

/// Waits until `done` holds, for at most `limit`.
fn wait_for(limit: Duration, done: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn a_push_cut_by_a_stopped_server_or_sigkill_resumes_uploading_only_what_is_missing() {
    let fixture = Fixture::new();
    let mut server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    std::fs::create_dir(&source).unwrap();
    for i in 0..8 {
        std::fs::write(source.join(format!("blob{i}")), noise(6 << 20, i)).unwrap();
    }
    succeed(command_on(&store, &["backup", source.to_str().unwrap()]));
    add_remote(&store, &server, &[]);
    let total = local_containers(&store).len();

    // 1. The server goes away mid-push.
    let child = cairn(&store, &server, &["push", "--jobs", "1"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert!(wait_for(Duration::from_secs(60), || server.seen.uploads_of("containers/") >= 3));
    server.stop();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach") || stderr.contains("pushing"), "{stderr}");
    server.restart();
    let present = remote_containers(&server).len();
    assert!(present >= 2 && present < total, "{present} of {total} containers made it");
    server.seen.reset();
    let report = push(&store, &server);
    assert_eq!(report["containers_uploaded"].as_u64().unwrap() as usize, total - present, "{report}");
    assert_eq!(server.seen.uploads_of("containers/"), total - present, "only the missing ones went up");

    // 2. SIGKILL at a moment during a push of new data.
    for i in 8..14 {
        std::fs::write(source.join(format!("blob{i}")), noise(6 << 20, i)).unwrap();
    }
    succeed(command_on(&store, &["backup", source.to_str().unwrap()]));
    let total = local_containers(&store).len();
    server.seen.reset();
    let mut child = cairn(&store, &server, &["push", "--jobs", "1"]).spawn().unwrap();
    assert!(wait_for(Duration::from_secs(60), || server.seen.uploads_of("containers/") >= 2));
    child.kill().unwrap();
    child.wait().unwrap();
    // A PUT whose body had arrived completes after the client died: count
    // what is there once the server has finished with it.
    assert!(wait_for(Duration::from_secs(30), || server.seen.writing.load(Ordering::SeqCst) == 0));
    let present = remote_containers(&server).len();
    server.seen.reset();
    let report = push(&store, &server);
    assert_eq!(report["containers_uploaded"].as_u64().unwrap() as usize, total - present, "{report}");
    assert_eq!(remote_containers(&server), local_containers(&store));

    let target = fixture.path("restored");
    remote_read(fixture.dir.path(), &server, &["restore", "latest", "--to", target.to_str().unwrap()]);
    diff_r(&source, &target);
}

#[test]
fn slowdown_and_internal_errors_are_retried_with_backoff() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    generate(&source, 50, 9);
    succeed(command_on(&store, &["backup", source.to_str().unwrap()]));
    add_remote(&store, &server, &[]);
    server.seen.fail_next(2, Failure::SlowDown);
    push(&store, &server);
    assert_eq!(server.seen.failed.load(Ordering::SeqCst), 2);
    server.seen.fail_next(2, Failure::Internal);
    let target = fixture.path("restored");
    remote_read(fixture.dir.path(), &server, &["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_eq!(server.seen.failed.load(Ordering::SeqCst), 4);
    diff_r(&source, &target);

    // More failures in a row than attempts: a clear error, not a hang.
    server.seen.fail_next(100, Failure::SlowDown);
    let output = cairn(&store, &server, &["push"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SlowDown"), "{output:?}");
}

#[test]
fn wrong_key_missing_bucket_and_unreachable_endpoint_fail_clearly_leaving_the_store_alone() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    fixture.file("a", &noise(300_000, 1));
    succeed(command_on(&store, &["put", "a", fixture.path("a").to_str().unwrap()]));
    add_remote(&store, &server, &[]);
    let stats_before = fixture.contents();
    let remotes_before = std::fs::read(store.join("remotes.json")).unwrap();

    let mut wrong = cairn(&store, &server, &["push"]);
    wrong.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let output = wrong.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the credentials") && stderr.contains("AWS_SECRET_ACCESS_KEY"), "{stderr}");

    // No credentials anywhere (the instance metadata service allowed, as
    // on a user's machine): cairn's own error says what to set, and the
    // SDK's warnings about each source it tried are not shown.
    let mut none = cairn(&store, &server, &["push"]);
    none.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY").env_remove("AWS_EC2_METADATA_DISABLED");
    let output = none.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no AWS credentials found") && stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
    assert!(!stderr.contains("WARN"), "the SDK's warnings reach the user: {stderr}");

    succeed(cairn(&store, &server, &["remote", "add", "nobucket", "s3://no-such-bucket/x"]));
    let output = cairn(&store, &server, &["push", "nobucket"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bucket 'no-such-bucket' does not exist"), "{stderr}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let endpoint = format!("http://{closed}");
    let url = url();
    let mut unreachable = command_on(&fixture.path("elsewhere"), &["--endpoint-url", &endpoint, "attach", &url]);
    aim(&mut unreachable);
    let output = unreachable.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(!fixture.path("elsewhere").exists(), "a failed attach leaves nothing behind");

    // Nothing local changed (besides the remote added on purpose).
    assert_eq!(fixture.contents(), stats_before);
    let remotes: Value = serde_json::from_slice(&std::fs::read(store.join("remotes.json")).unwrap()).unwrap();
    let before: Value = serde_json::from_slice(&remotes_before).unwrap();
    assert_eq!(remotes["remotes"]["s3"], before["remotes"]["s3"]);
    assert!(server.seen.uploads.lock().unwrap().is_empty(), "nothing was uploaded");
    succeed(command_on(&store, &["check", "--read-data"]));
}

#[test]
fn remotes_are_added_listed_and_removed_without_credentials_in_the_store() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    add_remote(&store, &server, &["--default"]);
    let listed: Value = serde_json::from_str(&succeed(command_on(&store, &["--json", "remote", "list"]))).unwrap();
    assert_eq!(listed["remotes"]["s3"]["url"], url());
    assert_eq!(listed["remotes"]["s3"]["endpoint_url"], server.endpoint());
    assert_eq!(listed["default"], "s3");
    let everything = read_all_files(&store);
    assert!(!everything.windows(SECRET_KEY.len()).any(|w| w == SECRET_KEY.as_bytes()), "no secret in the store");
    let bad = command_on(&store, &["remote", "add", "x", "http://not-s3"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("s3://BUCKET"));
    let nowhere = fixture.path("nowhere");
    assert_eq!(command_on(&nowhere, &["remote", "add", "x", "http://not-s3"]).output().unwrap().status.code(), Some(1));
    assert!(!nowhere.exists(), "a refused remote makes no store");
    succeed(command_on(&store, &["remote", "rm", "s3"]));
    let listed: Value = serde_json::from_str(&succeed(command_on(&store, &["--json", "remote", "list"]))).unwrap();
    assert_eq!(listed["remotes"].as_object().unwrap().len(), 0);
    assert!(listed.get("default").is_none());
}

/// Push and attach say how many requests they sent (what a real S3's
/// latency is paid on), counted as the server counts them.
#[test]
fn push_and_attach_report_the_requests_they_send() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    generate(&source, 50, 1);
    succeed(command_on(&store, &["backup", source.to_str().unwrap()]));
    add_remote(&store, &server, &[]);
    server.seen.reset();
    let pushed = push(&store, &server);
    let sent = server.seen.requests.load(Ordering::SeqCst);
    assert!(sent > 0);
    assert_eq!(pushed["requests"], sent, "{pushed}");
    server.seen.reset();
    let attached = attach(&fixture.path("attached"), &server);
    assert_eq!(attached["requests"], server.seen.requests.load(Ordering::SeqCst), "{attached}");
}

/// Index deltas, one per push, are consolidated into one when they pile
/// up, and a fresh attach still finds every blob: every version restores.
#[test]
fn index_deltas_are_consolidated_and_attach_still_finds_everything() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    std::fs::create_dir(&source).unwrap();
    add_remote(&store, &server, &["--default"]);
    let deltas = || std::fs::read_dir(server.root().join(BUCKET).join("team/cairn/index")).unwrap().count();
    let mut consolidated = 0;
    for version in 0..36u64 {
        std::fs::write(source.join(format!("f{version}")), noise(20_000, version)).unwrap();
        succeed(cairn(&store, &server, &["backup", source.to_str().unwrap(), "--no-push"]));
        let pushed = push(&store, &server);
        consolidated += pushed["deltas_consolidated"].as_u64().unwrap();
        assert!(deltas() <= 33, "{} deltas after push {version}", deltas());
    }
    assert!(consolidated >= 33, "{consolidated} deltas consolidated");
    let attached = fixture.path("attached");
    attach(&attached, &server);
    for version in [1, 18, 36] {
        let target = fixture.path(&format!("v{version}"));
        succeed(cairn(&attached, &server, &["restore", &version.to_string(), "--to", target.to_str().unwrap()]));
        assert_eq!(std::fs::read_dir(&target).unwrap().count() as u64, version);
    }
    succeed(cairn(&attached, &server, &["check", "--read-data"]));
}

/// `cat` of one small file straight from S3 stays interactive: beyond what
/// attaching for `--remote` costs (the same for `datasets`), it reads the
/// trees on its path and the file's chunks, and no whole container.
#[test]
fn cat_of_one_file_from_s3_costs_a_few_requests() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    generate(&source, 300, 2);
    succeed(command_on(&store, &["backup", source.to_str().unwrap()]));
    add_remote(&store, &server, &[]);
    push(&store, &server);
    server.seen.reset();
    remote_read(fixture.dir.path(), &server, &["datasets"]);
    let attaching = server.seen.requests.load(Ordering::SeqCst);
    server.seen.reset();
    let cat = remote_read(fixture.dir.path(), &server, &["cat", "latest", "/dir01/file00001.txt"]);
    assert_eq!(cat.as_bytes(), std::fs::read(source.join("dir01/file00001.txt")).unwrap());
    let requests = server.seen.requests.load(Ordering::SeqCst);
    let downloaded = server.seen.downloaded.load(Ordering::SeqCst);
    eprintln!("cat from S3: {requests} requests ({attaching} to attach), {downloaded} bytes");
    // Two trees on the path (the top and dir01), then the content.
    assert!(requests <= attaching + 4, "{requests} requests, {attaching} of them to attach");
    assert!(downloaded < 1 << 20, "{downloaded} bytes: a whole container was read");
}
