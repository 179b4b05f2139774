//! Reading snapshot files. Written for hostile input: every length is checked against the
//! bytes that are really there before anything is allocated, every id against its table, and
//! nothing indexes a slice directly.

use super::varint::{unzigzag, Cursor};
use super::{
    sniff, FileKind, FormatError, FORMAT_VERSION, OLDEST_READABLE_VERSION, HEADER_LEN, MAGIC, MAX_BODY_LEN,
    MAX_DEFLATE_RATIO,
};
use crate::model::{
    Filename, Frame, Function, FunctionId, Snapshot, Trace, Traceback, NO_FUNCTION,
    TOTAL_NFRAME_UNKNOWN,
};
use flate2::bufread::DeflateDecoder;
use flate2::Crc;
use std::io::Read;

/// The header fields the decoder needs after checking them.
pub(crate) struct Header {
    version: u16,
    body_crc: u32,
    compressed_crc: u32,
    body_len: u64,
    pub(crate) compressed_len: u64,
}

fn truncated(detail: impl Into<String>) -> FormatError {
    FormatError::Truncated {
        detail: detail.into(),
    }
}

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::Corrupt {
        detail: detail.into(),
    }
}

/// Checks the fixed header at the start of `bytes` (which may hold more than the header).
/// The order matters for the messages: "not ours" before "truncated", and the version before
/// anything whose meaning could change in another version.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, FormatError> {
    if bytes.is_empty() {
        return Err(truncated("the file is empty"));
    }
    let not_ours = || match sniff(bytes) {
        FileKind::Pickle => FormatError::Pickle,
        _ => FormatError::BadMagic,
    };
    match bytes.get(..MAGIC.len()) {
        Some(m) if m != MAGIC => return Err(not_ours()),
        None if !MAGIC.starts_with(bytes) => return Err(not_ours()),
        _ => {}
    }
    let short = || {
        truncated(format!(
            "the file ends inside the {HEADER_LEN}-byte header, after {} bytes",
            bytes.len()
        ))
    };
    let version = bytes
        .get(8..10)
        .and_then(|v| <[u8; 2]>::try_from(v).ok())
        .ok_or_else(short)?;
    let version = u16::from_le_bytes(version);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(FormatError::UnsupportedVersion { found: version });
    }
    let h: &[u8; HEADER_LEN] = bytes.first_chunk().ok_or_else(short)?;

    let mut crc = Crc::new();
    crc.update(&h[..36]);
    if crc.sum() != u32::from_le_bytes(field(h, 36)) {
        return Err(FormatError::ChecksumMismatch { part: "header" });
    }
    let flags = u16::from_le_bytes(field(h, 10));
    if flags != 0 {
        return Err(FormatError::UnsupportedFlags { flags });
    }
    let header = Header {
        version,
        body_crc: u32::from_le_bytes(field(h, 12)),
        compressed_crc: u32::from_le_bytes(field(h, 32)),
        body_len: u64::from_le_bytes(field(h, 16)),
        compressed_len: u64::from_le_bytes(field(h, 24)),
    };
    // Refuse a decompression bomb before allocating or inflating anything.
    let possible = header
        .compressed_len
        .saturating_mul(MAX_DEFLATE_RATIO)
        .min(MAX_BODY_LEN);
    if header.body_len > possible {
        return Err(FormatError::BodyTooLarge {
            declared: header.body_len,
            limit: possible,
        });
    }
    Ok(header)
}

/// `N` bytes of the header at a constant offset (cannot fail: the header has a fixed size).
fn field<const N: usize>(h: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = h.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// Decodes a whole snapshot file: the snapshot and the metadata string stored with it.
pub fn decode(bytes: &[u8]) -> Result<(Snapshot, String), FormatError> {
    let header = parse_header(bytes)?;
    let compressed = bytes.get(HEADER_LEN..).unwrap_or(&[]);
    let have = compressed.len() as u64;
    if have < header.compressed_len {
        return Err(truncated(format!(
            "the header declares {} compressed bytes but only {have} follow it",
            header.compressed_len
        )));
    }
    if have > header.compressed_len {
        return Err(corrupt(format!(
            "{} bytes of unexpected data after the compressed body",
            have - header.compressed_len
        )));
    }
    let mut crc = Crc::new();
    crc.update(compressed);
    if crc.sum() != header.compressed_crc {
        return Err(FormatError::ChecksumMismatch {
            part: "compressed body",
        });
    }
    let body = inflate(compressed, &header)?;
    parse_body(&body, header.version).map_err(corrupt)
}

fn inflate(compressed: &[u8], header: &Header) -> Result<Vec<u8>, FormatError> {
    let damaged = |e: std::io::Error| corrupt(format!("the compressed body is damaged ({e})"));
    // `parse_header` bounded `body_len` by what these compressed bytes could inflate to;
    // still, start small and let the vector grow with data that really arrives.
    let expected = usize::try_from(header.body_len).map_err(|_| FormatError::BodyTooLarge {
        declared: header.body_len,
        limit: usize::MAX as u64,
    })?;
    let mut body = Vec::with_capacity(expected.min(64 << 20));
    let mut z = DeflateDecoder::new(compressed);
    (&mut z)
        .take(header.body_len)
        .read_to_end(&mut body)
        .map_err(damaged)?;
    if body.len() != expected {
        return Err(corrupt(format!(
            "the body inflates to {} bytes but the header declares {expected}",
            body.len()
        )));
    }
    let mut probe = [0u8; 1];
    if z.read(&mut probe).map_err(damaged)? != 0 {
        return Err(corrupt(format!(
            "the body inflates to more than the {expected} bytes the header declares"
        )));
    }
    if !z.get_ref().is_empty() {
        return Err(corrupt(
            "unexpected data after the end of the compressed stream",
        ));
    }
    let mut crc = Crc::new();
    crc.update(&body);
    if crc.sum() != header.body_crc {
        return Err(FormatError::ChecksumMismatch { part: "body" });
    }
    Ok(body)
}

/// Adds "what was being read" to a cursor error.
fn at<T>(r: Result<T, &'static str>, what: impl FnOnce() -> String) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn string(c: &mut Cursor<'_>) -> Result<String, &'static str> {
    let len = c.count(1)?;
    let bytes = c.bytes(len)?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| "text is not valid UTF-8")
}

/// Parses the inflated body. Reaching this point means the checksum matched, so an error here
/// is a crafted file or a writer bug; messages name the table and entry.
fn parse_body(body: &[u8], version: u16) -> Result<(Snapshot, String), String> {
    let c = &mut Cursor::new(body);
    let traceback_limit = at(c.u32(), || "traceback limit".into())?;
    // Version 1 files are exact snapshots (no sampled mode then).
    let sample_rate = if version >= 2 { at(c.u64(), || "sample rate".into())? } else { 0 };
    let metadata = at(string(c), || "metadata".into())?;

    // Minimum bytes per item: a filename is at least its length varint.
    let nfiles = at(c.count(1), || "filename count".into())?;
    let mut filenames: Vec<Filename> = Vec::with_capacity(nfiles);
    for i in 0..nfiles {
        filenames.push(at(string(c), || format!("filename {i}"))?.into());
    }

    let frames = parse_frames(c, nfiles)?;
    let tracebacks = parse_tracebacks(c, frames.len())?;
    let traces = parse_traces(c, tracebacks.len())?;
    // Versions 1 and 2 name no functions: readers fall back to the source files.
    let (functions, traceback_functions) = if version >= 3 {
        parse_functions(c, &tracebacks)?
    } else {
        (Vec::new(), Vec::new())
    };
    if c.remaining() != 0 {
        let last = if version >= 3 {
            "function names"
        } else {
            "traces"
        };
        return Err(format!(
            "{} bytes of unexpected data after the {last}",
            c.remaining()
        ));
    }
    let snapshot = Snapshot {
        filenames,
        frames,
        tracebacks,
        traces,
        traceback_limit,
        sample_rate,
        functions,
        traceback_functions,
    };
    Ok((snapshot, metadata))
}

fn parse_frames(c: &mut Cursor<'_>, nfiles: usize) -> Result<Vec<Frame>, String> {
    // Two columns of at least one byte each.
    let n = at(c.count(2), || "frame count".into())?;
    let mut frames = Vec::with_capacity(n);
    let mut prev = 0i64;
    for i in 0..n {
        let v = at(c.u64(), || format!("frame {i}"))?;
        let id = prev
            .checked_add(unzigzag(v))
            .ok_or_else(|| format!("frame {i}: bad filename delta"))?;
        match u32::try_from(id) {
            Ok(f) if (f as usize) < nfiles => frames.push(Frame {
                filename: f,
                lineno: 0,
            }),
            _ => return Err(format!("frame {i} points at filename {id} of {nfiles}")),
        }
        prev = id;
    }
    let mut prev = 0i64;
    for (i, frame) in frames.iter_mut().enumerate() {
        let v = at(c.u64(), || format!("line number of frame {i}"))?;
        let line = prev.checked_add(unzigzag(v));
        frame.lineno = line
            .and_then(|l| u32::try_from(l).ok())
            .ok_or_else(|| format!("frame {i}: line number out of range"))?;
        prev = i64::from(frame.lineno);
    }
    Ok(frames)
}

fn parse_tracebacks(c: &mut Cursor<'_>, nframes: usize) -> Result<Vec<Traceback>, String> {
    // Two columns of at least one byte each, plus the frame ids.
    let n = at(c.count(2), || "traceback count".into())?;
    let mut totals = Vec::with_capacity(n);
    for i in 0..n {
        let v = at(c.u64(), || format!("total_nframe of traceback {i}"))?;
        totals.push(match v {
            0 => TOTAL_NFRAME_UNKNOWN,
            // The encoder maps only "unknown" to u32::MAX, so v - 1 is below u32::MAX.
            v if v <= u64::from(u32::MAX) => (v - 1) as u32,
            _ => return Err(format!("traceback {i}: total_nframe out of range")),
        });
    }
    let mut lens = Vec::with_capacity(n);
    let mut all_ids = 0usize;
    for i in 0..n {
        let len = at(c.count(0), || format!("frame count of traceback {i}"))?;
        // Every frame id takes at least one byte: the sum must fit in what is left.
        all_ids = all_ids
            .checked_add(len)
            .filter(|&total| total <= c.remaining())
            .ok_or_else(|| {
                format!("traceback {i}: more frames than the rest of the body could hold")
            })?;
        lens.push(len);
    }
    let mut tracebacks = Vec::with_capacity(n);
    for (i, (len, total_nframe)) in lens.into_iter().zip(totals).enumerate() {
        let mut ids = Vec::with_capacity(len);
        for _ in 0..len {
            let id = at(c.u32(), || format!("frame id in traceback {i}"))?;
            if id as usize >= nframes {
                return Err(format!("traceback {i} points at frame {id} of {nframes}"));
            }
            ids.push(id);
        }
        tracebacks.push(Traceback {
            frames: ids.into_boxed_slice(),
            total_nframe,
        });
    }
    Ok(tracebacks)
}

fn parse_traces(c: &mut Cursor<'_>, ntracebacks: usize) -> Result<Vec<Trace>, String> {
    // Three columns of at least one byte each.
    let n = at(c.count(3), || "trace count".into())?;
    let mut traces = Vec::with_capacity(n);
    for i in 0..n {
        let domain = at(c.u32(), || format!("domain of trace {i}"))?;
        traces.push(Trace {
            domain,
            size: 0,
            traceback: 0,
        });
    }
    for (i, t) in traces.iter_mut().enumerate() {
        t.size = at(c.u64(), || format!("size of trace {i}"))?;
    }
    for (i, t) in traces.iter_mut().enumerate() {
        let tb = at(c.u32(), || format!("traceback of trace {i}"))?;
        if tb as usize >= ntracebacks {
            return Err(format!(
                "trace {i} points at traceback {tb} of {ntracebacks}"
            ));
        }
        t.traceback = tb;
    }
    Ok(traces)
}

/// `Snapshot::functions` and `Snapshot::traceback_functions`.
type Functions = (Vec<Function>, Vec<Box<[FunctionId]>>);

/// The functions table and, when it is not empty, the function of every frame of every
/// traceback (version 3).
fn parse_functions(c: &mut Cursor<'_>, tracebacks: &[Traceback]) -> Result<Functions, String> {
    // Two columns of at least one byte each (a name's length, a line delta).
    let n = at(c.count(2), || "function count".into())?;
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        names.push(at(string(c), || format!("name of function {i}"))?);
    }
    let mut functions = Vec::with_capacity(n);
    let mut prev = 0i64;
    for (i, name) in names.into_iter().enumerate() {
        let v = at(c.u64(), || format!("first line of function {i}"))?;
        let line = prev
            .checked_add(unzigzag(v))
            .and_then(|l| u32::try_from(l).ok())
            .ok_or_else(|| format!("function {i}: first line out of range"))?;
        functions.push(Function {
            qualname: name.into(),
            first_lineno: line,
        });
        prev = i64::from(line);
    }
    if n == 0 {
        return Ok((functions, Vec::new()));
    }
    // One id of at least one byte per frame of every traceback, checked before allocating.
    let all: usize = tracebacks.iter().map(|tb| tb.frames.len()).sum();
    if all > c.remaining() {
        return Err(format!(
            "functions of {all} frames, but only {} bytes are left",
            c.remaining()
        ));
    }
    let mut per_traceback = Vec::with_capacity(tracebacks.len());
    for (i, tb) in tracebacks.iter().enumerate() {
        let mut ids = Vec::with_capacity(tb.frames.len());
        for j in 0..tb.frames.len() {
            let v = at(c.u64(), || {
                format!("function of frame {j} of traceback {i}")
            })?;
            ids.push(match v {
                0 => NO_FUNCTION,
                v if v <= n as u64 => (v - 1) as FunctionId,
                v => {
                    return Err(format!(
                        "frame {j} of traceback {i} points at function {} of {n}",
                        v - 1
                    ))
                }
            });
        }
        per_traceback.push(ids.into_boxed_slice());
    }
    Ok((functions, per_traceback))
}
