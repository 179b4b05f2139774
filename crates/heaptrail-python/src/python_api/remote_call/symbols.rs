//! Addresses of exported functions and variables in another process: which ELF files it maps
//! (`/proc/PID/maps`), where each is loaded, and their symbol tables (read from the files, as
//! the target sees them through `/proc/PID/root`, so a process in a container is read right).

use std::collections::HashMap;
use std::fs;

use object::{Object, ObjectSegment, ObjectSymbol};

/// A file-backed mapping of the target: its first address and the file offset it maps.
struct Mapping {
    start: u64,
    offset: u64,
    path: String,
}

fn mappings(pid: i32) -> std::io::Result<Vec<Mapping>> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(text.lines().filter_map(parse_mapping).collect())
}

/// `start-end perms offset dev inode path` -> the mapping of a file, None for anonymous ones.
/// The path is the rest of the line (it may contain spaces).
fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_whitespace();
    let start = u64::from_str_radix(fields.next()?.split('-').next()?, 16).ok()?;
    let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
    let path = &line[line.find(" /")? + 1..];
    // A file replaced on disk since it was mapped (an upgrade): try the path it had.
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    Some(Mapping { start, offset, path: path.to_string() })
}

/// Exported symbols looked up in the target's executable and in the few libraries that can
/// hold them (libpython, libc): reading every mapped library would be slow on big services.
pub struct Symbols {
    found: HashMap<String, u64>,
}

impl Symbols {
    /// Resolves `names` in the target; a name found in no file is simply absent.
    pub fn resolve(pid: i32, exe: Option<&str>, names: &[&str]) -> std::io::Result<Symbols> {
        let maps = mappings(pid)?;
        let mut paths: Vec<&str> = Vec::new();
        let wanted = |path: &str| {
            let file = path.rsplit('/').next().unwrap_or(path);
            Some(path) == exe
                || file.starts_with("libpython")
                || file.starts_with("libc.so")
                || file.starts_with("libc-")
        };
        for m in &maps {
            if wanted(&m.path) && !paths.contains(&m.path.as_str()) {
                paths.push(&m.path);
            }
        }
        let mut found = HashMap::new();
        for path in paths {
            let Some(data) = read_as_target_sees(pid, path) else {
                continue;
            };
            let Ok(file) = object::File::parse(&*data) else {
                continue;
            };
            let Some(bias) = load_bias(&file, &maps, path) else {
                continue;
            };
            for symbol in file.dynamic_symbols().chain(file.symbols()) {
                let Ok(name) = symbol.name() else { continue };
                if symbol.is_definition() && names.contains(&name) && !found.contains_key(name) {
                    found.insert(name.to_string(), symbol.address().wrapping_add(bias));
                }
            }
        }
        Ok(Symbols { found })
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.found.get(name).copied()
    }
}

fn read_as_target_sees(pid: i32, path: &str) -> Option<Vec<u8>> {
    fs::read(format!("/proc/{pid}/root{path}"))
        .or_else(|_| fs::read(path))
        .ok()
}

/// How far the file was moved from its link-time addresses: the mapping of the segment that
/// starts the file, minus that segment's page-aligned address (0 for a non-PIE executable).
fn load_bias(file: &object::File<'_>, maps: &[Mapping], path: &str) -> Option<u64> {
    const PAGE_MASK: u64 = !0xfff;
    let first = file
        .segments()
        .find(|s| s.file_range().0 & PAGE_MASK == 0)?;
    let mapped = maps
        .iter()
        .filter(|m| m.path == path && m.offset == 0)
        .map(|m| m.start)
        .min()?;
    Some(mapped.wrapping_sub(first.address() & PAGE_MASK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let m = parse_mapping(
            "7f1c2a000000-7f1c2a028000 r--p 00001000 08:01 1234   /usr/lib/my lib/libc.so.6",
        )
        .unwrap();
        assert_eq!((m.start, m.offset), (0x7f1c_2a00_0000, 0x1000));
        assert_eq!(m.path, "/usr/lib/my lib/libc.so.6");
        assert!(parse_mapping("7ffd1000-7ffd2000 rw-p 00000000 00:00 0   [stack]").is_none());
        assert!(parse_mapping("55d0c000-55d0d000 rw-p 00000000 00:00 0").is_none());
    }
}
