//! Names for the frames of a snapshot, shared by every export format and the HTML page.
//!
//! A frame is `filename:lineno`. Its function is, in this order:
//! * the one the snapshot recorded (the code object's `co_qualname` and `co_firstlineno`,
//!   read in the process when the snapshot was taken): right whatever became of the source;
//! * with source lookup on, the enclosing `def`/`class` chain read from the source file
//!   ([`super::source_scopes`]) now: for snapshots that recorded none (files of format
//!   version 1 or 2, stdlib tracemalloc dumps);
//! * else the frame is its own function, named `basename:lineno`.

use rustc_hash::FxHashMap;
use std::path::Path;

use super::source_scopes::SourceScopes;
use crate::model::{FilenameId, FrameId, FunctionId, Snapshot, StackFrame, NO_FUNCTION};

/// The function a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunctionKey {
    /// A function the snapshot recorded: (its file, its id in the snapshot).
    Recorded(FilenameId, FunctionId),
    /// A scope found in the source file: (file, index of the scope in that file).
    Scope(FilenameId, u32),
    /// No name: the frame stands alone.
    Frame(FrameId),
    /// The pseudo-function of blocks allocated with no Python frame on the stack.
    Unknown,
}

/// Names of a snapshot's frames, computed once per export.
pub struct FrameNames<'s> {
    snapshot: &'s Snapshot,
    /// Per frame: its scope in the source file and the scope's `def` line; None without
    /// source, or when no occurrence of the frame lacks a recorded function (the file is then
    /// not even read).
    qualnames: Vec<Option<(FunctionKey, u32)>>,
    /// Scopes per file that could be read (None: not readable, not needed, or lookup disabled).
    sources: Vec<Option<SourceScopes>>,
    /// Short display name of each file (`leaky_service.py`, `pkg/__init__.py`).
    short_files: Vec<String>,
    /// Module name shown before a qualname in pprof (`leaky_service`, `pkg`).
    modules: Vec<String>,
}

impl<'s> FrameNames<'s> {
    /// Names for every frame of `snapshot`; reads source files only when `read_sources`, and
    /// only for frames the snapshot has no recorded function for.
    pub fn new(snapshot: &'s Snapshot, read_sources: bool) -> FrameNames<'s> {
        // Only files that frames without a recorded function point at; each read at most once.
        let mut sources: Vec<Option<SourceScopes>> = vec![None; snapshot.filenames.len()];
        let mut unnamed = vec![false; snapshot.frames.len()];
        if read_sources {
            for id in 0..snapshot.tracebacks.len() {
                for sf in snapshot.stack(id as u32) {
                    if sf.function == NO_FUNCTION {
                        unnamed[sf.frame as usize] = true;
                    }
                }
            }
            let mut used = vec![false; snapshot.filenames.len()];
            for (f, _) in snapshot.frames.iter().zip(&unnamed).filter(|(_, &u)| u) {
                used[f.filename as usize] = true;
            }
            for (id, name) in snapshot.filenames.iter().enumerate() {
                if used[id] {
                    sources[id] = SourceScopes::read(name);
                }
            }
        }
        let qualnames = snapshot
            .frames
            .iter()
            .zip(&unnamed)
            .map(|(f, &unnamed)| {
                if !unnamed {
                    return None;
                }
                let scopes = sources[f.filename as usize].as_ref()?;
                let (idx, scope) = scopes.scope_of(f.lineno)?;
                Some((FunctionKey::Scope(f.filename, idx as u32), scope.start_line))
            })
            .collect();
        let short_files = snapshot.filenames.iter().map(|n| short_file(n)).collect();
        let modules = snapshot
            .filenames
            .iter()
            .map(|n| module_name(n, read_sources))
            .collect();
        FrameNames {
            snapshot,
            qualnames,
            sources,
            short_files,
            modules,
        }
    }

    /// The function `frame` belongs to.
    pub fn function_key(&self, frame: StackFrame) -> FunctionKey {
        if self.snapshot.function(frame.function).is_some() {
            let file = self.snapshot.frame(frame.frame).filename;
            return FunctionKey::Recorded(file, frame.function);
        }
        match self.qualnames[frame.frame as usize] {
            Some((key, _)) => key,
            None => FunctionKey::Frame(frame.frame),
        }
    }

    /// The Python qualified name of the code at `frame` (`Cache.put`), when known.
    pub fn qualname(&self, frame: StackFrame) -> Option<&'_ str> {
        if let Some(f) = self.snapshot.function(frame.function) {
            return Some(&f.qualname);
        }
        match self.qualnames[frame.frame as usize]? {
            (FunctionKey::Scope(file, idx), _) => {
                let scopes = self.sources[file as usize].as_ref()?;
                Some(scopes.scopes[idx as usize].qualname.as_str())
            }
            _ => None,
        }
    }

    /// Line of the `def`/`class` of the frame's function (0 when unknown).
    pub fn start_line(&self, frame: StackFrame) -> u32 {
        if let Some(f) = self.snapshot.function(frame.function) {
            return f.first_lineno;
        }
        self.qualnames[frame.frame as usize].map_or(0, |(_, line)| line)
    }

    /// `leaky_service.py` for `/srv/app/leaky_service.py`.
    pub fn short_file(&self, frame: FrameId) -> &str {
        &self.short_files[self.snapshot.frames[frame as usize].filename as usize]
    }

    /// The name pprof shows for the frame's function: `leaky_service.Cache.put` when known,
    /// `leaky_service.py:38` otherwise.
    pub fn function_name(&self, frame: StackFrame) -> String {
        let f = self.snapshot.frames[frame.frame as usize];
        match self.qualname(frame) {
            Some(q) => format!("{}.{q}", self.modules[f.filename as usize]),
            None => format!("{}:{}", self.short_files[f.filename as usize], f.lineno),
        }
    }

    /// The label of a frame in folded stacks: `Cache.put (leaky_service.py:38)` when the
    /// function is known, `leaky_service.py:38` otherwise.
    pub fn frame_label(&self, frame: StackFrame) -> String {
        let f = self.snapshot.frames[frame.frame as usize];
        let file = &self.short_files[f.filename as usize];
        match self.qualname(frame) {
            Some(q) => format!("{q} ({file}:{})", f.lineno),
            None => format!("{file}:{}", f.lineno),
        }
    }
}

/// The last path component, or the last two for files whose name alone says nothing
/// (`pkg/__init__.py`, `pkg/__main__.py`).
fn short_file(path: &str) -> String {
    // Pseudo-filenames like `<frozen importlib._bootstrap>` may contain slashes in theory;
    // they are shown whole.
    if path.starts_with('<') {
        return path.to_owned();
    }
    let mut parts = path.rsplit(['/', '\\']).filter(|p| !p.is_empty());
    let last = parts.next().unwrap_or(path);
    match (last, parts.next()) {
        ("__init__.py" | "__main__.py", Some(dir)) => format!("{dir}/{last}"),
        _ => last.to_owned(),
    }
}

/// The module a file defines, as far as its path tells: its stem, or the package directory
/// for `__init__.py`; with `packages`, prefixed with the enclosing packages found on disk
/// (directories with an `__init__.py`), so `/usr/lib/python3/urllib/request.py` is
/// `urllib.request`, not just `request`.
fn module_name(path: &str, packages: bool) -> String {
    // A frozen standard module names itself: `<frozen importlib._bootstrap>`.
    if let Some(name) = path
        .strip_prefix("<frozen ")
        .and_then(|p| p.strip_suffix('>'))
    {
        return name.to_owned();
    }
    if path.starts_with('<') {
        return path.to_owned();
    }
    let p = Path::new(path);
    let Some(last) = p.file_name().and_then(|n| n.to_str()) else {
        return path.to_owned();
    };
    let stem = last
        .strip_suffix(".py")
        .or_else(|| last.strip_suffix(".pyw"))
        .unwrap_or(last);
    let mut parts: Vec<&str> = Vec::new();
    if stem != "__init__" {
        parts.push(stem);
    }
    let mut dir = p.parent();
    // The package of `__init__.py` itself is always named; outer packages only when checked.
    if stem == "__init__" {
        if let Some(name) = dir.and_then(|d| d.file_name()).and_then(|n| n.to_str()) {
            parts.push(name);
            dir = dir.and_then(Path::parent);
        }
    }
    if packages && p.is_absolute() {
        // Bounded: package nesting deeper than this is not real code.
        for _ in 0..32 {
            let Some(d) = dir else { break };
            let Some(name) = d.file_name().and_then(|n| n.to_str()) else {
                break;
            };
            if !d.join("__init__.py").is_file() {
                break;
            }
            parts.push(name);
            dir = d.parent();
        }
    }
    if parts.is_empty() {
        return stem.to_owned();
    }
    parts.reverse();
    parts.join(".")
}

/// One id per distinct function, in order of first use (pprof's function table).
#[derive(Default)]
pub struct FunctionIds {
    ids: FxHashMap<FunctionKey, u64>,
}

impl FunctionIds {
    /// The 1-based id of `key`, and whether it is new.
    pub fn get_or_insert(&mut self, key: FunctionKey) -> (u64, bool) {
        let next = self.ids.len() as u64 + 1;
        let mut new = false;
        let id = *self.ids.entry(key).or_insert_with(|| {
            new = true;
            next
        });
        (id, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_files_and_modules() {
        assert_eq!(short_file("/srv/app/leaky_service.py"), "leaky_service.py");
        assert_eq!(short_file("/srv/app/pkg/__init__.py"), "pkg/__init__.py");
        assert_eq!(short_file("main.py"), "main.py");
        assert_eq!(
            short_file("<frozen importlib._bootstrap>"),
            "<frozen importlib._bootstrap>"
        );
        assert_eq!(
            module_name("/srv/app/leaky_service.py", false),
            "leaky_service"
        );
        assert_eq!(module_name("/srv/app/pkg/__init__.py", false), "pkg");
        assert_eq!(module_name("m.py", true), "m");
        assert_eq!(module_name("<frozen abc>", true), "abc");
        assert_eq!(
            module_name("<frozen importlib._bootstrap>", false),
            "importlib._bootstrap"
        );
        assert_eq!(module_name("<string>", true), "<string>");
        // Packages are found on disk.
        let root = std::env::temp_dir().join(format!("heaptrail-names-{}", std::process::id()));
        let sub = root.join("top").join("inner");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(root.join("top/__init__.py"), "").unwrap();
        std::fs::write(sub.join("__init__.py"), "").unwrap();
        let file = sub.join("mod.py");
        let init = sub.join("__init__.py");
        assert_eq!(module_name(file.to_str().unwrap(), true), "top.inner.mod");
        assert_eq!(module_name(init.to_str().unwrap(), true), "top.inner");
        assert_eq!(module_name(file.to_str().unwrap(), false), "mod");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
