//! heaptrail's snapshot file format: versioned, compact, and safe to load from untrusted files.
//!
//! The standard library saves snapshots with `pickle`, and loading a pickle can run arbitrary
//! code. heaptrail never unpickles; it writes this format instead, and its decoder treats every
//! byte as hostile: no panics, no allocation a file's size cannot justify, every id checked.
//!
//! # Layout (version 3)
//!
//! Version 2 lacks the functions table (its frames have no recorded function: readers name
//! them from the source files); version 1 also lacks `sample_rate` and is read as an exact
//! snapshot.
//!
//! A 40-byte header, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 8 | magic `HEAPTRL\0` |
//! | 8  | 2 | format version (`3`) |
//! | 10 | 2 | flags (`0`; a reader rejects any bit it does not know) |
//! | 12 | 4 | CRC-32 of the uncompressed body |
//! | 16 | 8 | uncompressed body length |
//! | 24 | 8 | compressed body length |
//! | 32 | 4 | CRC-32 of the compressed body |
//! | 36 | 4 | CRC-32 of header bytes 0..36 |
//!
//! then exactly "compressed body length" bytes of raw deflate (RFC 1951), then end of file.
//!
//! Why two body checksums: the one over the compressed bytes rejects any damage before the
//! inflater sees it (including flips in deflate's padding bits, which would not change the
//! output); the one over the inflated body checks the result end to end.
//!
//! The body is a sequence of unsigned LEB128 varints and strings (`len`, UTF-8 bytes). Tables
//! are stored column by column (all domains, then all sizes, ...) because similar values next
//! to each other are what makes deflate effective; `zz` marks a zigzag-encoded signed delta
//! from the previous entry of the same column (the first entry's predecessor is 0):
//!
//! ```text
//! traceback_limit
//! sample_rate                   mean bytes between sample points; 0: exact (every block)
//! metadata                      string (opaque; the Python side stores JSON)
//! filenames   count F, F x string
//! frames      count R, R x zz(filename id), R x zz(lineno)
//! tracebacks  count T, T x (total_nframe + 1, or 0 when unknown), T x nframes,
//!             sum(nframes) x frame id          (frames most recent first, as in the model)
//! traces      count N, N x domain, N x size, N x traceback id
//! functions   count U, U x string (co_qualname), U x zz(co_firstlineno),
//!             when U > 0: sum(nframes) x (function id + 1, or 0 when unknown)
//!                                         (one per frame id above, in the same order)
//! ```
//!
//! Nothing may follow the functions table. A function is named by its code object's
//! `co_qualname` and `co_firstlineno` (its file is its frame's); frames keep only
//! `filename:lineno`, so a line shared by two functions (a lambda and the function around it)
//! is one frame with a function per occurrence.

mod decode;
mod encode;
mod varint;

pub use decode::decode;
pub use encode::{encode, encode_to_vec};

use crate::model::Snapshot;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// First 8 bytes of every heaptrail snapshot file.
pub const MAGIC: &[u8; 8] = b"HEAPTRL\0";
/// The format version this code writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 3;
/// The oldest format version this code reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// Size of the fixed header that precedes the compressed body.
pub const HEADER_LEN: usize = 40;
/// Largest uncompressed body the decoder accepts, whatever the header says (4 GiB).
pub const MAX_BODY_LEN: u64 = 4 << 30;
/// Deflate cannot expand one input byte into more than 1032 output bytes (a 258-byte match
/// costs at least 2 bits), so a header declaring more than this is lying.
pub(crate) const MAX_DEFLATE_RATIO: u64 = 1032;

/// What a file looks like from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Starts with [`MAGIC`].
    Heaptrail,
    /// A pickle of protocol 2 or later (what `tracemalloc.Snapshot.dump` writes).
    Pickle,
    Unknown,
}

/// Classifies a file from its first bytes (8 are enough).
pub fn sniff(prefix: &[u8]) -> FileKind {
    if prefix.starts_with(MAGIC) {
        return FileKind::Heaptrail;
    }
    // Pickle protocols 2..=5 begin with the PROTO opcode (0x80) and the protocol number.
    // Protocols 0 and 1 have no signature; stdlib's dump uses the highest protocol anyway.
    match prefix {
        [0x80, 2..=5, ..] => FileKind::Pickle,
        _ => FileKind::Unknown,
    }
}

/// Why a snapshot file could not be loaded. Every message is meant to be shown to a user as is.
#[derive(Debug)]
#[non_exhaustive]
pub enum FormatError {
    /// The file could not be opened or read.
    Io { path: PathBuf, source: io::Error },
    /// The file does not start with [`MAGIC`] and is not a pickle either.
    BadMagic,
    /// The file is a Python pickle, which heaptrail refuses to load.
    Pickle,
    /// Written in a format version this heaptrail cannot read.
    UnsupportedVersion { found: u16 },
    /// Uses optional features (flag bits) this heaptrail does not know.
    UnsupportedFlags { flags: u16 },
    /// The file ends early.
    Truncated { detail: String },
    /// The header declares an uncompressed size that is impossible or over [`MAX_BODY_LEN`].
    BodyTooLarge { declared: u64, limit: u64 },
    /// A checksum does not match (`part` is `"header"`, `"compressed body"` or `"body"`).
    ChecksumMismatch { part: &'static str },
    /// Anything else that is structurally wrong.
    Corrupt { detail: String },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => {
                write!(f, "cannot read snapshot file {}: {source}", path.display())
            }
            Self::BadMagic => f.write_str("not a heaptrail snapshot file (bad magic)"),
            Self::Pickle => f.write_str(
                "this looks like a Python pickle (e.g. a stdlib tracemalloc dump); heaptrail never \
                 unpickles, because loading a pickle can run arbitrary code. If you trust the file, \
                 load it with the standard library's tracemalloc.Snapshot.load() and convert it",
            ),
            Self::UnsupportedVersion { found } => write!(
                f,
                "unsupported snapshot format version {found} (this heaptrail reads versions \
                 {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})"
            ),
            Self::UnsupportedFlags { flags } => write!(
                f,
                "snapshot file uses features this heaptrail does not understand (flags \
                 {flags:#06x}); it was probably written by a newer heaptrail"
            ),
            Self::Truncated { detail } => write!(f, "truncated snapshot file: {detail}"),
            Self::BodyTooLarge { declared, limit } => write!(
                f,
                "corrupt snapshot file: header declares a {declared}-byte body, but at most \
                 {limit} bytes are possible; refusing to decompress"
            ),
            Self::ChecksumMismatch { part } => {
                write!(f, "corrupt snapshot file: checksum mismatch ({part})")
            }
            Self::Corrupt { detail } => write!(f, "corrupt snapshot file: {detail}"),
        }
    }
}

impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Writes a snapshot file whole or not at all ([`crate::atomic_file`]: a synced temporary file
/// renamed over `path`), so a crash never leaves a half-written file under the real name. I/O
/// errors are the system's (the caller names the path); an invalid snapshot is `InvalidInput`
/// and creates no file.
pub fn write_file(path: &Path, snapshot: &Snapshot, metadata: &str) -> io::Result<()> {
    // Encode first: an invalid snapshot must not even create the temporary file.
    let bytes = encode::encode_checked(snapshot, metadata)?;
    crate::atomic_file::write_bytes(path, &bytes).map(|_| ())
}

/// Reads and decodes a snapshot file. Only the header and the compressed body it declares are
/// read, so pointing this at a huge unrelated file fails fast instead of reading all of it.
pub fn read_file(path: &Path) -> Result<(Snapshot, String), FormatError> {
    let io_err = |source| FormatError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    let header = decode::parse_header(&bytes)?;
    // One byte more than declared, so trailing data is still reported as such by `decode`.
    let want = header.compressed_len.saturating_add(1);
    // Reserve what the file really holds, not what a (possibly lying) header claims.
    let on_disk = file.metadata().map(|m| m.len()).unwrap_or(0);
    bytes.reserve(usize::try_from(want.min(on_disk)).unwrap_or(0));
    file.take(want).read_to_end(&mut bytes).map_err(io_err)?;
    decode(&bytes)
}
