//! The libnv test vectors made by the real FreeBSD code (`../shared/testdata/nvlist/`).

use slirp_helper::config::nvlist::{decode, encode, ByteOrder, Header};
use std::path::PathBuf;

fn vector_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/nvlist"
    ))
}

fn vectors() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(vector_dir())
        .expect("test vectors in ../shared/testdata/nvlist")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 10,
        "expected the shared vectors, found {}",
        out.len()
    );
    out
}

#[test]
fn accepted_vectors_re_encode_identically() {
    let mut accepted = 0;
    for (name, bytes) in vectors() {
        let Ok(header) = Header::parse(&bytes) else {
            continue;
        };
        let Ok(nvl) = decode(&bytes, header.descriptors as usize) else {
            continue;
        };
        let order = if header.big_endian() {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        };
        assert_eq!(encode(&nvl, order), bytes, "{name}");
        accepted += 1;
    }
    assert_eq!(accepted, 7);
}
