//! Micro benchmark of the ingest hot path, stage by stage: FastCDC chunking,
//! BLAKE3 hashing, lz4 compression, the three together, and the store's
//! codecs as it calls them (`encode_blob`), over the same 32 MiB of
//! text-like data.
//!
//! `cargo bench --bench chunk_hash_compress`

mod common;

use cairn_chunker::{BlobId, ChunkerConfig};
use cairn_store::BlobKind;
use cairn_store::container::{Codec, DEFAULT_ZSTD_LEVEL, encode_blob};
use cairn_store::ids::IdKeys;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn stages(c: &mut Criterion) {
    let input = common::text_like(32 << 20, 0x2545_f491_4f6c_dd1d);
    let config = ChunkerConfig::default_cdc();
    let chunks: Vec<Vec<u8>> = config.stream(&input[..]).map(|c| c.unwrap().data).collect();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(10);
    group.bench_function("fastcdc", |b| {
        b.iter(|| config.stream(&input[..]).map(|c| c.unwrap().data.len()).sum::<usize>())
    });
    group.bench_function("fixed", |b| {
        let fixed = ChunkerConfig::fixed(8192).unwrap();
        b.iter(|| fixed.stream(&input[..]).map(|c| c.unwrap().data.len()).sum::<usize>())
    });
    // Keyed, as a store of format 3 names chunks (the same speed as plain).
    let key = *IdKeys::public().key(BlobKind::Data);
    group.bench_function("blake3", |b| {
        b.iter(|| chunks.iter().map(|c| BlobId::keyed(&key, c).0[0] as usize).sum::<usize>())
    });
    group
        .bench_function("lz4", |b| b.iter(|| chunks.iter().map(|c| lz4_flex::block::compress(c).len()).sum::<usize>()));
    for codec in [Codec::Lz4, Codec::Zstd(1), Codec::Zstd(DEFAULT_ZSTD_LEVEL)] {
        let stored: usize =
            chunks.iter().map(|c| encode_blob(BlobId::of(c), BlobKind::Data, c, codec).bytes.len()).sum();
        println!("encode {codec}: stores {:.1}% of the input", 100.0 * stored as f64 / input.len() as f64);
        group.bench_function(format!("encode {codec}"), |b| {
            b.iter(|| {
                chunks.iter().map(|c| encode_blob(BlobId::of(b""), BlobKind::Data, c, codec).bytes.len()).sum::<usize>()
            })
        });
    }
    group.bench_function("cdc+blake3+lz4", |b| {
        b.iter(|| {
            config
                .stream(&input[..])
                .map(|c| {
                    let c = c.unwrap();
                    BlobId::keyed(&key, &c.data).0[0] as usize + lz4_flex::block::compress(&c.data).len()
                })
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
