//! Keeping code objects alive, and turning captured frames into filenames and line numbers.
//!
//! A captured frame names its code object by address. Were the code object freed, the address
//! could be reused by another one and the frame would silently point at the wrong line, so
//! every code object that appears in an interned traceback is held (one reference) as long as
//! that traceback is: until the traces are cleared, or until the tracer drops the traceback
//! because no live block uses it any more (`Tracer::compact`), when code objects no kept
//! traceback names are let go. Code compiled on the fly (templates, `exec` of generated
//! source) is therefore not kept alive by heaptrail once its allocations are gone.
//!
//! The same promise when the allocations are the code's own: a code object can own, itself
//! or through the code nested in it, a traced block whose traceback names it (3.12+ caches a
//! function's `co_varnames` tuple when `inspect.signature` first reads it, say from the module
//! code that defined the function), and held for that traceback it would never die. So code
//! objects nothing but the registry references are let go of as well
//! ([`CodeRegistry::take_orphans`]; the watcher does it before each window), their frames
//! first erased from the traceback table, so that a new code object at the reused address
//! never matches them (a block one of them allocated that outlives it elsewhere stays traced,
//! those frames reading `<unknown>`).
//!
//! Letting go happens in two steps: the registry forgets the objects at once (while the
//! tracer's tables are borrowed, inside an allocator hook), and the references are dropped
//! later from a pending call ([`defer_release`]), where freeing memory is safe.
//!
//! The registry also says which held code objects are library code, when the leak watcher has
//! set the rules (`_set_user_code_rules`): each code object is classified once, when first held.

use crate::engine::frames::{code_filename_in_hook, code_function, frame_lineno, RawFrame};
use heaptrail_core::model::Function;
use heaptrail_core::sites::SiteRules;
use heaptrail_core::Filename;
use pyo3::ffi;
use pyo3::prelude::*;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Whether a held code object is library code, under the user-code rules in force.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// No rules: everything is the user's code.
    Unclassified,
    User,
    Library,
}

#[derive(Default)]
pub struct CodeRegistry {
    held: FxHashMap<usize, Class>,
    /// What counts as library code (`_set_user_code_rules`); `None`: nothing does.
    rules: Option<Arc<SiteRules>>,
}

impl CodeRegistry {
    pub fn is_held(&self, code: *mut ffi::PyCodeObject) -> bool {
        code.is_null() || self.held.contains_key(&(code as usize))
    }

    /// Takes a reference to `code` unless one is already held; a newly held code object is
    /// classified (user or library code) once, here.
    ///
    /// # Safety
    /// The calling thread holds the GIL and `code` is alive (it is on the thread's stack).
    pub unsafe fn hold(&mut self, code: *mut ffi::PyCodeObject) {
        // SAFETY: the caller's contract is `hold_and_classify`'s.
        unsafe { self.hold_and_classify(code) };
    }

    /// Whether `code` is library code under the rules in force (null: unknown, counted as
    /// library). Holds and classifies it if needed.
    ///
    /// # Safety
    /// As for [`hold`](Self::hold).
    #[inline]
    pub unsafe fn is_library(&mut self, code: *mut ffi::PyCodeObject) -> bool {
        if code.is_null() {
            return true;
        }
        // SAFETY: the caller's contract is `hold_and_classify`'s.
        unsafe { self.hold_and_classify(code) == Class::Library }
    }

    /// [`hold`](Self::hold), returning the code object's class.
    ///
    /// # Safety
    /// As for [`hold`](Self::hold).
    unsafe fn hold_and_classify(&mut self, code: *mut ffi::PyCodeObject) -> Class {
        if code.is_null() {
            return Class::Library;
        }
        if let Some(&class) = self.held.get(&(code as usize)) {
            return class;
        }
        // SAFETY: GIL held and `code` alive (the caller's contract).
        unsafe { ffi::Py_INCREF(code.cast()) };
        // SAFETY: as above; we hold a reference to it now.
        let class = unsafe { classify(self.rules.as_deref(), code) };
        self.held.insert(code as usize, class);
        class
    }

    /// Sets the rules and reclassifies every held code object.
    ///
    /// # Safety
    /// GIL held (held code objects are alive: we own a reference to each).
    pub unsafe fn set_rules(&mut self, rules: Option<Arc<SiteRules>>) {
        self.rules = rules;
        let rules = self.rules.clone();
        for (&code, class) in self.held.iter_mut() {
            // SAFETY: GIL held (the caller's contract); we own a reference to `code`.
            *class = unsafe { classify(rules.as_deref(), code as *mut ffi::PyCodeObject) };
        }
    }

    pub fn has_rules(&self) -> bool {
        self.rules.is_some()
    }

    /// Forgets every held code object `used` does not contain, handing back their references
    /// (to drop with [`defer_release`] or [`release`]).
    pub fn take_unused(&mut self, used: &rustc_hash::FxHashSet<usize>) -> Vec<usize> {
        let unused: Vec<usize> = self
            .held
            .keys()
            .filter(|code| !used.contains(code))
            .copied()
            .collect();
        for code in &unused {
            self.held.remove(code);
        }
        if self.held.capacity() > 4 * self.held.len().max(64) {
            self.held.shrink_to_fit();
        }
        unused
    }

    /// Forgets every held code object nothing but the registry references (its reference
    /// count is 1), handing back the references. Such a code object can never run again, yet
    /// it may own traced blocks whose tracebacks name it (a tuple it caches lazily, such as
    /// `co_varnames` built on the first `inspect.signature` of its function, allocated while
    /// one of its frames ran): held for those tracebacks, it would keep them alive for good.
    ///
    /// # Safety
    /// The calling thread holds the GIL (no reference count changes meanwhile).
    pub unsafe fn take_orphans(&mut self) -> Vec<usize> {
        let orphans: Vec<usize> = self
            .held
            .keys()
            // SAFETY: every held address is a live code object we hold a reference to.
            .filter(|&&code| unsafe { ffi::Py_REFCNT(code as *mut ffi::PyObject) } == 1)
            .copied()
            .collect();
        for code in &orphans {
            self.held.remove(code);
        }
        orphans
    }

    /// Empties the registry, handing back the references to drop with [`release`] once the
    /// trace store's lock is no longer held (dropping a code object frees memory, which
    /// re-enters the allocator hooks).
    pub fn take(&mut self) -> Vec<usize> {
        self.held.drain().map(|(code, _)| code).collect()
    }

    pub fn heap_bytes(&self) -> usize {
        self.held.capacity() * (std::mem::size_of::<(usize, Class)>() + 1)
    }
}

/// Classifies a live code object by its filename. Runs inside allocator hooks: reads the
/// filename without any Python allocation.
///
/// # Safety
/// The calling thread holds the GIL and `code` is alive.
unsafe fn classify(rules: Option<&SiteRules>, code: *mut ffi::PyCodeObject) -> Class {
    let Some(rules) = rules else {
        return Class::Unclassified;
    };
    // SAFETY: the caller's contract is `code_filename_in_hook`'s.
    let name = unsafe { code_filename_in_hook(code) }.unwrap_or_else(|| "<unknown>".to_string());
    if rules.is_user_file(&name) {
        Class::User
    } else {
        Class::Library
    }
}

/// Drops references taken by [`CodeRegistry::hold`], and any still waiting in
/// [`defer_release`]'s queue.
pub fn release(_py: Python<'_>, codes: Vec<usize>) {
    EPOCH.fetch_add(1, Ordering::AcqRel);
    for code in codes.into_iter().chain(std::mem::take(&mut *DEFERRED.lock())) {
        // SAFETY: we own one reference to each of these objects and hold the GIL.
        unsafe { ffi::Py_DECREF(code as *mut ffi::PyObject) };
    }
}

/// Counts the times held code objects were let go of: their addresses may then belong to
/// new code objects, so anything that copied frames (code addresses) before must not resolve
/// them after a change (see `LineResolver` and the snapshot's copy).
static EPOCH: AtomicUsize = AtomicUsize::new(0);

pub fn epoch() -> usize {
    EPOCH.load(Ordering::Acquire)
}

/// References let go of inside an allocator hook, waiting for a safe point.
static DEFERRED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static RELEASE_QUEUED: AtomicBool = AtomicBool::new(false);

/// Drops `codes`' references at the interpreter's next safe point: a pending call, run by the
/// main thread between two bytecodes with the GIL held. Called with the GIL held, from inside
/// the hooks, where a Py_DECREF could free memory and re-enter them. If the pending-call queue
/// is full, the references wait for the next call here, or for [`release`].
pub fn defer_release(codes: Vec<usize>) {
    if codes.is_empty() {
        return;
    }
    DEFERRED.lock().extend(codes);
    if !RELEASE_QUEUED.swap(true, Ordering::AcqRel) {
        // SAFETY: Py_AddPendingCall may be called from any thread; it only stores the
        // function in a fixed queue (no allocation).
        if unsafe { ffi::Py_AddPendingCall(Some(release_deferred), std::ptr::null_mut()) } != 0 {
            RELEASE_QUEUED.store(false, Ordering::Release);
        }
    }
}

extern "C" fn release_deferred(_arg: *mut std::os::raw::c_void) -> std::os::raw::c_int {
    RELEASE_QUEUED.store(false, Ordering::Release);
    let codes = std::mem::take(&mut *DEFERRED.lock());
    if !codes.is_empty() {
        EPOCH.fetch_add(1, Ordering::AcqRel);
    }
    for code in codes {
        // SAFETY: a pending call runs with the GIL held, outside any hook; we own one
        // reference to each of these objects (the registry forgot them when queueing).
        unsafe { ffi::Py_DECREF(code as *mut ffi::PyObject) };
    }
    0
}

/// Caches `code -> (filename, function)` and `(code, instruction) -> line`. Only used with the
/// GIL held. Emptied whenever the registry lets code objects go ([`epoch`] changes): their
/// addresses may then be reused by other code objects.
#[derive(Default)]
pub struct LineResolver {
    /// Per code object: `co_filename`, and `co_qualname` with `co_firstlineno` (None when the
    /// name is not a string). One entry for both, so a snapshot's frames cost one lookup.
    codes: FxHashMap<usize, (Filename, Option<Function>)>,
    lines: FxHashMap<(usize, i64), u32>,
    epoch: usize,
}

impl LineResolver {
    pub fn clear(&mut self) {
        self.codes.clear();
        self.lines.clear();
    }

    /// Filename and line of a captured frame.
    ///
    /// # Safety
    /// `frame.code` is null or a code object held by the [`CodeRegistry`].
    pub unsafe fn resolve(&mut self, py: Python<'_>, frame: RawFrame) -> (Filename, u32) {
        // SAFETY: the caller's contract is `resolve_with_function`'s.
        let (filename, lineno, _) = unsafe { self.resolve_with_function(py, frame) };
        (filename, lineno)
    }

    /// Filename and line of a captured frame, and the function it runs: its code object's
    /// `co_qualname` and `co_firstlineno`, read once per code object from the object's fields
    /// (no Python code runs). None for an unknown frame.
    ///
    /// # Safety
    /// As for [`resolve`](Self::resolve).
    pub unsafe fn resolve_with_function(
        &mut self,
        py: Python<'_>,
        frame: RawFrame,
    ) -> (Filename, u32, Option<Function>) {
        if frame.code.is_null() {
            return (unknown_filename(), 0, None);
        }
        let epoch = epoch();
        if epoch != self.epoch {
            self.clear();
            self.epoch = epoch;
        }
        let key = frame.code as usize;
        // No map borrow is held across the Python call: reading co_filename allocates, and
        // whatever that runs may resolve frames too.
        let (filename, function) = match self.codes.get(&key) {
            Some(code) => code.clone(),
            None => {
                // SAFETY: the registry holds `frame.code` alive and the caller holds the GIL.
                let name = unsafe { code_filename(py, frame.code) };
                // SAFETY: the registry holds `frame.code` alive and the caller holds the GIL.
                let function =
                    unsafe { code_function(frame.code) }.map(|(qualname, first)| Function {
                        qualname: Arc::from(qualname),
                        first_lineno: first,
                    });
                if self.epoch == epoch {
                    self.codes.insert(key, (name.clone(), function.clone()));
                }
                (name, function)
            }
        };
        let lineno = *self
            .lines
            .entry((key, frame.lasti))
            // SAFETY: as above: GIL held, `frame.code` held by the registry (or null).
            .or_insert_with(|| unsafe { frame_lineno(frame) });
        (filename, lineno, function)
    }
}

fn unknown_filename() -> Filename {
    Arc::from("<unknown>")
}

/// `code.co_filename`, or "<unknown>" if it is not a string (as tracemalloc reports it).
///
/// # Safety
/// `code` is a live code object (`py`: the GIL is held).
unsafe fn code_filename(py: Python<'_>, code: *mut ffi::PyCodeObject) -> Filename {
    // SAFETY: `code` is a live object (the caller's contract); the new reference keeps it so.
    let code = unsafe { Bound::from_borrowed_ptr(py, code.cast()) };
    match code
        .getattr("co_filename")
        .and_then(|f| f.extract::<String>())
    {
        Ok(name) => Arc::from(name),
        Err(_) => unknown_filename(),
    }
}
