//! Integration tests: one binary, one module per topic. They drive the real
//! `cairn` binary (and, where a test needs to reach inside, the public
//! library API) against stores in temporary directories.

mod fstree;
mod s3;
mod util;

mod backtraces;
mod blob_kinds;
mod cli_errors;
mod compression;
mod content;
mod corruption;
mod crash;
mod dataset_errors;
mod datasets;
mod dedupe;
mod frames;
mod gc;
mod hostile;
mod hostile_cli;
mod hostile_restore;
mod hostile_sources;
mod layouts;
mod objects;
mod powercut;
mod process;
mod remote;
mod remote_writers;
mod repair;
mod sessions;
mod stress;
mod versions;
