//! Decoding and encoding bhyve's config message (the libnv vectors from `../shared`).
//! Start-up cost only, but the decoder must stay linear on large hostile inputs too.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use slirp_helper::config::nvlist::{decode, encode, ByteOrder, Nvlist, Value};
use slirp_helper::config::BhyveConfig;

fn vector(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../shared/testdata/nvlist/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A list of `n` small string pairs: the shape of a hostile, large but valid config.
fn many_pairs(n: usize) -> Vec<u8> {
    let mut nv = Nvlist::new();
    for i in 0..n {
        nv.push(format!("key{i}"), Value::String(b"value".to_vec()));
    }
    encode(&nv, ByteOrder::Little)
}

fn bench(c: &mut Criterion) {
    for name in ["b_typical.bin", "e_robust.bin"] {
        let buf = vector(name);
        c.bench_function(&format!("decode {name}"), |b| {
            b.iter(|| decode(black_box(&buf), 0).unwrap())
        });
        let nv = decode(&buf, 0).unwrap();
        c.bench_function(&format!("encode {name}"), |b| {
            b.iter(|| encode(black_box(&nv), ByteOrder::Little))
        });
    }
    let typical = decode(&vector("b_typical.bin"), 0).unwrap();
    c.bench_function("bhyve config b_typical", |b| {
        b.iter(|| BhyveConfig::from_nvlist(black_box(&typical)).unwrap())
    });
    let big = many_pairs(10_000);
    c.bench_function("decode 10000 pairs", |b| {
        b.iter(|| decode(black_box(&big), 0).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
