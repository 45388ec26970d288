//! One writer per remote, and only one that has seen all of it: every way a
//! second writer used to wipe or corrupt a remote (a killed attach, a store
//! restored from an older copy, an attached store and its original, two new
//! stores racing for an empty prefix) is refused before it changes
//! anything, and the remote stays whole. Against a server that honours
//! `If-None-Match` and one that ignores it.

use std::collections::BTreeSet;
use std::path::Path;

use crate::remote::{add_remote, attach, cairn, push, remote_containers, url};
use crate::s3::S3Server;
use crate::util::{Fixture, succeed};
use crate::versions::{diff_r, generate, mutate};

/// Everything under the remote's prefix, as file names and sizes.
fn remote_listing(server: &S3Server) -> BTreeSet<(String, u64)> {
    fn walk(dir: &Path, out: &mut BTreeSet<(String, u64)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(&entry.path(), out);
            } else {
                out.insert((entry.path().display().to_string(), meta.len()));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(server.root(), &mut out);
    out
}

/// `cairn push` is refused, says `reason`, and leaves the remote unchanged.
fn push_is_refused(store: &Path, server: &S3Server, reason: &str) {
    let before = remote_listing(server);
    let output = cairn(store, server, &["push"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the push should have been refused");
    assert!(stderr.contains(reason), "{stderr}");
    assert_eq!(remote_listing(server), before, "a refused push changed the remote");
}

/// A fresh attach of the remote restores `source` as its latest dataset.
fn remote_restores(fixture: &Fixture, server: &S3Server, name: &str, source: &Path) {
    let fresh = fixture.path(name);
    attach(&fresh, server);
    let target = fixture.path(&format!("{name}-restored"));
    succeed(cairn(&fresh, server, &["restore", "latest", "--to", target.to_str().unwrap()]));
    diff_r(source, &target);
    succeed(cairn(&fresh, server, &["check", "--read-data"]));
}

/// A store with one backup of `source`, pushed.
fn pushed_store(fixture: &Fixture, server: &S3Server, source: &Path) -> std::path::PathBuf {
    let store = fixture.store();
    generate(source, 60, 3);
    add_remote(&store, server, &[]);
    succeed(cairn(&store, server, &["backup", source.to_str().unwrap(), "--push", "s3"]));
    store
}

#[test]
fn a_killed_attach_cannot_push() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let source = fixture.path("source");
    pushed_store(&fixture, &server, &source);
    let half = fixture.path("half");
    let output = cairn(&half, &server, &["attach", &url()]).env("CAIRN_CRASH_AT", "attach:remotes-saved").output();
    assert!(!output.unwrap().status.success(), "the attach should have crashed");
    push_is_refused(&half, &server, "never seen");
    remote_restores(&fixture, &server, "check", &source);
}

#[test]
fn a_store_restored_from_an_older_copy_cannot_push() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let source = fixture.path("source");
    let store = pushed_store(&fixture, &server, &source);
    let copy = fixture.path("copy");
    succeed({
        let mut cp = std::process::Command::new("cp");
        cp.arg("-a").arg(&store).arg(&copy);
        cp
    });
    // The original goes on: a new version, the old one forgotten and collected.
    mutate(&source, 2);
    succeed(cairn(&store, &server, &["backup", source.to_str().unwrap()]));
    succeed(cairn(&store, &server, &["forget", "--keep-last", "1"]));
    succeed(cairn(&store, &server, &["gc", "--compact-threshold", "0.01"]));
    push(&store, &server);
    // The old copy lacks all of that: its push would have deleted it.
    push_is_refused(&copy, &server, "never seen");
    remote_restores(&fixture, &server, "check", &source);
}

#[test]
fn an_attached_store_and_its_original_do_not_both_write() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let source = fixture.path("source");
    let original = pushed_store(&fixture, &server, &source);
    let attached = fixture.path("attached");
    attach(&attached, &server);
    // The attached store has seen everything: it may write, and does.
    mutate(&source, 2);
    succeed(cairn(&attached, &server, &["backup", source.to_str().unwrap()]));
    push(&attached, &server);
    // The original has not seen that push.
    let other = fixture.path("other-source");
    generate(&other, 20, 9);
    succeed(cairn(&original, &server, &["backup", other.to_str().unwrap()]));
    push_is_refused(&original, &server, "never seen");
    remote_restores(&fixture, &server, "check", &source);
}

/// Two new stores push to one empty prefix at once, five times over:
/// exactly one wins each time, and the remote is the winner's, whole.
fn racing_new_stores(conditional: bool) {
    for round in 0..5 {
        let fixture = Fixture::new();
        let server = S3Server::start_with(&fixture.path("s3"), conditional);
        let mut sources = Vec::new();
        let mut stores = Vec::new();
        for side in ["a", "b"] {
            let store = fixture.path(&format!("store-{side}"));
            let source = fixture.path(&format!("source-{side}"));
            generate(&source, 30, if side == "a" { 11 } else { 12 });
            add_remote(&store, &server, &[]);
            succeed(cairn(&store, &server, &["backup", source.to_str().unwrap()]));
            sources.push(source);
            stores.push(store);
        }
        let spawned: Vec<_> = stores
            .iter()
            .map(|store| {
                let mut command = cairn(store, &server, &["push"]);
                command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
                command.spawn().unwrap()
            })
            .collect();
        let outcomes: Vec<_> = spawned.into_iter().map(|child| child.wait_with_output().unwrap()).collect();
        let winners: Vec<usize> = (0..2).filter(|&i| outcomes[i].status.success()).collect();
        let messages: Vec<String> = outcomes.iter().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one push wins: {messages:?}");
        let loser = 1 - winners[0];
        assert!(
            messages[loser].contains("another store") || messages[loser].contains("same moment"),
            "round {round}: {}",
            messages[loser]
        );
        if !conditional {
            assert!(messages.iter().any(|m| m.contains("ignores If-None-Match")), "the fallback says so: {messages:?}");
        }
        assert!(!remote_containers(&server).is_empty());
        remote_restores(&fixture, &server, "check", &sources[winners[0]]);
    }
}

#[test]
fn two_new_stores_racing_for_an_empty_prefix_one_wins() {
    racing_new_stores(true);
}

#[test]
fn two_new_stores_racing_on_a_server_without_conditional_writes_one_wins() {
    racing_new_stores(false);
}
