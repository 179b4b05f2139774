//! Writing snapshot files. The body is built in memory first because the header, which comes
//! first, carries the body's length and checksum.

use super::varint::{put_u64, zigzag};
use super::{FORMAT_VERSION, HEADER_LEN, MAGIC};
use crate::model::{Snapshot, NO_FUNCTION, TOTAL_NFRAME_UNKNOWN};
use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};
use std::io::{self, Write};

/// Deflate level. On a 1M-trace snapshot (examples/file_speed.rs) level 6, zlib's default,
/// took 5x longer than level 1 (127 ms vs 25 ms) for a file only 0.5% smaller: the body is
/// already dense varints. Snapshots are written from live services, so speed wins.
const LEVEL: u32 = 1;

/// Writes `snapshot` and the opaque `metadata` string as a snapshot file to `out`.
///
/// Fails with [`io::ErrorKind::InvalidInput`] if the snapshot does not pass
/// [`Snapshot::validate`]: the decoder would reject such a file, so it is never written.
pub fn encode<W: Write>(snapshot: &Snapshot, metadata: &str, mut out: W) -> io::Result<()> {
    let bytes = encode_checked(snapshot, metadata)?;
    out.write_all(&bytes)?;
    out.flush()
}

/// [`encode`] into a new vector.
///
/// # Panics
/// If the snapshot does not pass [`Snapshot::validate`] (dangling ids). Snapshots made by
/// `SnapshotBuilder` or decoded from a file are always valid.
pub fn encode_to_vec(snapshot: &Snapshot, metadata: &str) -> Vec<u8> {
    match encode_checked(snapshot, metadata) {
        Ok(bytes) => bytes,
        Err(e) => panic!("heaptrail: cannot encode snapshot: {e}"),
    }
}

/// The whole file (header + compressed body), or `InvalidInput` for an invalid snapshot.
pub(crate) fn encode_checked(snapshot: &Snapshot, metadata: &str) -> io::Result<Vec<u8>> {
    snapshot.validate().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid snapshot: {e}"),
        )
    })?;
    let body = encode_body(snapshot, metadata);
    let mut crc = Crc::new();
    crc.update(&body);

    let mut file = Vec::with_capacity(HEADER_LEN + body.len() / 2);
    file.resize(HEADER_LEN, 0);
    let mut z = DeflateEncoder::new(file, Compression::new(LEVEL));
    z.write_all(&body)?;
    let mut file = z.finish()?;

    let compressed = file.get(HEADER_LEN..).unwrap_or(&[]);
    let compressed_len = compressed.len() as u64;
    let mut zcrc = Crc::new();
    zcrc.update(compressed);
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&0u16.to_le_bytes()); // flags: none defined yet
    h[12..16].copy_from_slice(&crc.sum().to_le_bytes());
    h[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
    h[24..32].copy_from_slice(&compressed_len.to_le_bytes());
    h[32..36].copy_from_slice(&zcrc.sum().to_le_bytes());
    let mut hcrc = Crc::new();
    hcrc.update(&h[..36]);
    h[36..40].copy_from_slice(&hcrc.sum().to_le_bytes());
    file[..HEADER_LEN].copy_from_slice(&h);
    Ok(file)
}

/// The uncompressed body; see the module documentation for the layout.
fn encode_body(s: &Snapshot, metadata: &str) -> Vec<u8> {
    let nframe_ids: usize = s.tracebacks.iter().map(|tb| tb.frames.len()).sum();
    let guess = 64
        + metadata.len()
        + s.filenames.iter().map(|f| f.len() + 2).sum::<usize>()
        + s.frames.len() * 4
        + s.tracebacks.len() * 4
        + nframe_ids * 3
        + s.traces.len() * 5
        + s.functions
            .iter()
            .map(|f| f.qualname.len() + 3)
            .sum::<usize>()
        + if s.functions.is_empty() {
            0
        } else {
            nframe_ids * 2
        };
    let mut out = Vec::with_capacity(guess);
    let o = &mut out;

    put_u64(o, s.traceback_limit.into());
    put_u64(o, s.sample_rate);
    put_str(o, metadata);

    put_u64(o, s.filenames.len() as u64);
    for name in &s.filenames {
        put_str(o, name);
    }

    // Frames are interned in first-seen order, so neighbours usually share a file and have
    // nearby line numbers: deltas are small.
    put_u64(o, s.frames.len() as u64);
    put_deltas(o, s.frames.iter().map(|f| f.filename));
    put_deltas(o, s.frames.iter().map(|f| f.lineno));

    put_u64(o, s.tracebacks.len() as u64);
    for tb in &s.tracebacks {
        // +1 so that "unknown" (u32::MAX) becomes 0 and every value still fits in a u32.
        let total = match tb.total_nframe {
            TOTAL_NFRAME_UNKNOWN => 0,
            n => u64::from(n) + 1,
        };
        put_u64(o, total);
    }
    for tb in &s.tracebacks {
        put_u64(o, tb.frames.len() as u64);
    }
    // Absolute ids: tracebacks share their outer frames, and equal id runs are exactly what
    // deflate's back-references find.
    for tb in &s.tracebacks {
        for &f in tb.frames.iter() {
            put_u64(o, f.into());
        }
    }

    put_u64(o, s.traces.len() as u64);
    for t in &s.traces {
        put_u64(o, t.domain.into());
    }
    for t in &s.traces {
        put_u64(o, t.size);
    }
    for t in &s.traces {
        put_u64(o, t.traceback.into());
    }

    // Version 3: the function of every frame of every traceback, when known.
    put_u64(o, s.functions.len() as u64);
    for f in &s.functions {
        put_str(o, &f.qualname);
    }
    put_deltas(o, s.functions.iter().map(|f| f.first_lineno));
    if !s.functions.is_empty() {
        // +1 so that "unknown" is 0. Same order as the frame ids above.
        for functions in &s.traceback_functions {
            for &f in functions.iter() {
                put_u64(
                    o,
                    if f == NO_FUNCTION {
                        0
                    } else {
                        u64::from(f) + 1
                    },
                );
            }
        }
    }
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_deltas(out: &mut Vec<u8>, values: impl Iterator<Item = u32>) {
    let mut prev = 0i64;
    for v in values {
        let v = i64::from(v);
        put_u64(out, zigzag(v - prev));
        prev = v;
    }
}
