//! Test helpers that build snapshot files by hand, independently of the encoder, so tests can
//! put arbitrary bodies and header fields behind valid checksums and reach the body parser.
#![allow(dead_code)]

use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};
use heaptrail_core::snapshot_file::{FORMAT_VERSION, HEADER_LEN, MAGIC};
use heaptrail_core::{Snapshot, SnapshotBuilder};
use std::io::{Read, Write};

pub fn crc(bytes: &[u8]) -> u32 {
    let mut c = Crc::new();
    c.update(bytes);
    c.sum()
}

/// Header fields, so tests can lie in any of them.
#[derive(Clone, Debug)]
pub struct Fields {
    pub version: u16,
    pub flags: u16,
    pub body_crc: u32,
    pub body_len: u64,
    pub compressed_len: u64,
    pub compressed_crc: u32,
}

impl Fields {
    pub fn honest(body: &[u8], compressed: &[u8]) -> Self {
        Fields {
            version: FORMAT_VERSION,
            flags: 0,
            body_crc: crc(body),
            body_len: body.len() as u64,
            compressed_len: compressed.len() as u64,
            compressed_crc: crc(compressed),
        }
    }

    /// The 40-byte header with a correct header checksum.
    pub fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&self.version.to_le_bytes());
        h.extend_from_slice(&self.flags.to_le_bytes());
        h.extend_from_slice(&self.body_crc.to_le_bytes());
        h.extend_from_slice(&self.body_len.to_le_bytes());
        h.extend_from_slice(&self.compressed_len.to_le_bytes());
        h.extend_from_slice(&self.compressed_crc.to_le_bytes());
        let c = crc(&h);
        h.extend_from_slice(&c.to_le_bytes());
        assert_eq!(h.len(), HEADER_LEN);
        h
    }
}

pub fn deflate(body: &[u8]) -> Vec<u8> {
    let mut z = DeflateEncoder::new(Vec::new(), Compression::default());
    z.write_all(body).unwrap();
    z.finish().unwrap()
}

/// A file whose every checksum and length is right, around an arbitrary body.
pub fn wrap_body(body: &[u8]) -> Vec<u8> {
    let compressed = deflate(body);
    let mut file = Fields::honest(body, &compressed).header();
    file.extend_from_slice(&compressed);
    file
}

/// The inflated body of a valid file.
pub fn unwrap_body(file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    DeflateDecoder::new(&file[HEADER_LEN..])
        .read_to_end(&mut body)
        .unwrap();
    body
}

pub fn leb(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A small snapshot touching every table.
pub fn small_snapshot() -> Snapshot {
    let mut b = SnapshotBuilder::new(3);
    let a = b.intern_filename("a.py");
    let c = b.intern_filename("pkg/café.py");
    let f1 = b.intern_frame(a, 10);
    let f2 = b.intern_frame(c, 3);
    let f3 = b.intern_frame(a, 7);
    let t1 = b.intern_traceback(&[f1, f2], 5);
    let t2 = b.intern_traceback(&[f3], 1);
    b.push_trace(0, 100, t1);
    b.push_trace(0, 24, t2);
    b.push_trace(7, 1 << 40, t1);
    b.finish()
}

/// [`small_snapshot`] with the functions its frames ran, as the tracer records them: one
/// line in two functions (a lambda on its caller's line), and a frame with no function.
pub fn named_snapshot() -> Snapshot {
    let mut b = SnapshotBuilder::new(3);
    let a = b.intern_filename("a.py");
    let c = b.intern_filename("pkg/café.py");
    let f1 = b.intern_frame(a, 10);
    let f2 = b.intern_frame(c, 3);
    let f3 = b.intern_frame(a, 7);
    let put = b.intern_function(&"Cache.put".into(), 9);
    let lambda = b.intern_function(&"handler.<locals>.<lambda>".into(), 3);
    let handler = b.intern_function(&"handler".into(), 2);
    let t1 = b.intern_traceback_with_functions(&[f1, f2, f2], &[put, lambda, handler], 5);
    let t2 = b.intern_traceback_with_functions(&[f3], &[heaptrail_core::model::NO_FUNCTION], 1);
    b.push_trace(0, 100, t1);
    b.push_trace(0, 24, t2);
    b.finish()
}
