//! Feeds arbitrary bytes to the snapshot decoder, twice: as a whole file (mostly exercising the
//! header and checksums) and as a body wrapped in a valid header with valid checksums (which
//! is what reaches the body parser). Either way: no panic, and anything accepted is valid and
//! re-encodes to the same snapshot.
#![no_main]

use heaptrail_core::snapshot_file::{decode, encode_to_vec, FORMAT_VERSION, MAGIC};
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fn crc(bytes: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum()
}

/// A file with correct lengths and checksums around an arbitrary body (layout: see
/// `src/snapshot_file/mod.rs`).
fn wrap_body(body: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(body).unwrap();
    let compressed = z.finish().unwrap();
    let mut h = Vec::with_capacity(40 + compressed.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&crc(body).to_le_bytes());
    h.extend_from_slice(&(body.len() as u64).to_le_bytes());
    h.extend_from_slice(&(compressed.len() as u64).to_le_bytes());
    h.extend_from_slice(&crc(&compressed).to_le_bytes());
    let c = crc(&h);
    h.extend_from_slice(&c.to_le_bytes());
    h.extend_from_slice(&compressed);
    h
}

fn check(bytes: &[u8]) {
    if let Ok((snapshot, metadata)) = decode(bytes) {
        snapshot.validate().expect("decoded snapshot is valid");
        let again = decode(&encode_to_vec(&snapshot, &metadata)).expect("re-encoded file decodes");
        assert_eq!(again.0, snapshot);
        assert_eq!(again.1, metadata);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&wrap_body(data));
});
