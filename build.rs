//! Links the `cairn` binary with its debug sections compressed (zlib). The
//! release build keeps line tables (so a panic's backtrace names file and
//! line), and Rust's standard library brings its own: uncompressed they
//! were 23 MB of a 61 MB binary. The linker flag touches only the binary's
//! own link step, so no dependency (RocksDB above all) is rebuilt for it.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,--compress-debug-sections=zlib");
        println!("cargo:rustc-link-arg-bins=-Wl,--discard-all");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
