//! Data and tools shared by the benchmarks (each bench uses a part).

#![allow(dead_code)]

pub mod peak;
pub mod tools;

/// The bench's working directory: removed at the end, unless
/// `CAIRN_BENCH_KEEP` is set (to look at the stores and trees, or profile
/// a step by hand), in which case its path is printed.
pub fn work_dir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("CAIRN_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("keeping {}", dir.path().display());
    }
    dir
}

/// Text-like bytes (words from a small vocabulary, a few binary runs) that
/// compress about 2:1 and chunk by content. Reproducible for a given seed.
pub fn text_like(len: usize, seed: u64) -> Vec<u8> {
    let words = ["cairn ", "store ", "chunk ", "blob ", "tree\n", "backup ", "restore ", "index "];
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(words[(state % 8) as usize].as_bytes());
        if state.is_multiple_of(5) {
            out.extend_from_slice(&state.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// `bytes` of BLAKE3's output stream (incompressible, unique per `seed`).
pub fn incompressible(out: &mut dyn std::io::Write, bytes: u64, seed: u64) {
    let mut stream = blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof();
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        stream.fill(&mut block[..n]);
        // A put that failed (a full disk) closed its input: stop, and
        // let its exit status and error tell why.
        if out.write_all(&block[..n]).is_err() {
            return;
        }
        left -= n as u64;
    }
}
