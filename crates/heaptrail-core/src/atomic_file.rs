//! Writing a file so that readers see the old content or the new one, never half of either:
//! the one way heaptrail writes snapshot files, exports and HTML pages.
//!
//! The data goes to a new temporary file beside the target (created exclusively, named after
//! it and this process, so two writers never share one), is synced to disk, then renamed over
//! the target. On any error the temporary file is removed and the target is untouched. A
//! target that exists and is not a regular file (a device or a pipe: `-o /dev/stdout`) cannot
//! be replaced, and is written in place.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes what `write` produces to `path` (see the module comment); returns the bytes written.
pub fn write_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<u64> {
    if fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let mut out = Counting {
            inner: BufWriter::new(fs::OpenOptions::new().write(true).open(path)?),
            written: 0,
        };
        write(&mut out)?;
        out.flush()?;
        return Ok(out.written);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let (tmp_path, file) = create_temp(dir, name)?;
    let result = (|| {
        let mut out = Counting {
            inner: BufWriter::new(file),
            written: 0,
        };
        write(&mut out)?;
        let file = out.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp_path, path)?;
        Ok(out.written)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// Writes `bytes` to `path` (see the module comment).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> io::Result<u64> {
    write_with(path, |out| out.write_all(bytes))
}

/// A new, exclusively created temporary file in `dir` for the target `name`.
fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, fs::File)> {
    let mut last_err = None;
    for n in 0..100u32 {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("cannot create a temporary file")))
}

/// Counts what goes through it.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("heaptrail-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("page.html");
        fs::write(&out, "an older, longer page than the new one\n").unwrap();
        assert_eq!(write_bytes(&out, b"new\n").unwrap(), 4);
        assert_eq!(fs::read_to_string(&out).unwrap(), "new\n");
        // A writer that fails leaves the old file as it was, and no temporary file.
        let err = write_with(&out, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert_eq!(fs::read_to_string(&out).unwrap(), "new\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        // A directory that does not exist is an error; a device is written in place.
        let err = write_bytes(&dir.join("no/such/dir.txt"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(write_bytes(Path::new("/dev/null"), b"xyz").unwrap(), 3);
        fs::remove_dir_all(&dir).unwrap();
    }
}
