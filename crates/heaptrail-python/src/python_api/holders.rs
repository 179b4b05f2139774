//! "Who holds it", as a path from a root, found in a forked copy of the process.
//!
//! Walking a heap of millions of objects takes seconds, and the walk needs a heap that does
//! not change under it: with the GIL held, that stalls the application for those seconds. So
//! the watcher thread (GIL held) `fork()`s: the child is a copy-on-write snapshot of the heap
//! that holds the GIL (the forking thread held it) and has no other thread. The parent
//! releases the GIL at once and waits on a pipe for the child's JSON result, with a deadline
//! (SIGKILL on timeout). The application is paused only for the `fork()` itself.
//!
//! The child never runs Python-level code (no `__del__`, properties or imports): it disables
//! the collector, makes heaptrail's allocator hooks pass straight through (a lock held by a
//! thread that vanished in the fork must never be taken), reads the heap with `tp_traverse`
//! and a few C-API reads, writes its result and leaves with `_exit` (no atexit, no stdio
//! flush, no return into Python).
//!
//! In the child: one breadth-first walk from the roots (each module of `sys.modules`,
//! `gc.garbage`, the local variables of every thread's frames) records each reachable
//! object's BFS parent. Containers also own their internal storage blocks (a dict's key table
//! and values array, a list's item array, a set's table, an instance's values array), which
//! the allocation site of a leaking line often is (the line that inserts into a cache grows its
//! table). Then, per candidate site, the blocks allocated through the line are located in the
//! tree, and the holder is the deepest object above at least half of them. Edge labels (the
//! attribute, key, index, closure variable, local variable...) are computed only for the path
//! from the root to the holder.

use crate::engine::frames::object_block_address;
use crate::engine::tracer;
use heaptrail_core::fnmatch::{normalize_filename, Pattern};
use heaptrail_core::sites::SiteRules;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{json, Map, Value};
use std::os::raw::{c_int, c_ulong, c_void};
use std::sync::Mutex;
use std::time::{Duration, Instant};

extern "C" {
    fn ht_dict_storage(op: *mut ffi::PyObject, out: *mut usize);
    fn ht_list_storage(op: *mut ffi::PyObject) -> usize;
    fn ht_set_storage(op: *mut ffi::PyObject) -> usize;
    fn ht_bytearray_storage(op: *mut ffi::PyObject) -> usize;
    fn ht_deque_blocks(op: *mut ffi::PyObject, out: *mut usize, cap: usize) -> usize;
    fn ht_instance_values_storage(op: *mut ffi::PyObject) -> usize;
    fn ht_thread_locals(tstate: *mut ffi::PyThreadState, cb: LocalCb, ctx: *mut c_void);
    fn ht_thread_bottom_code(tstate: *mut ffi::PyThreadState) -> *mut ffi::PyCodeObject;
    fn ht_thread_ident(tstate: *mut ffi::PyThreadState) -> c_ulong;
    fn ht_frame_object_locals(frame: *mut ffi::PyObject, cb: LocalCb, ctx: *mut c_void);
    fn ht_code_qualname(code: *mut ffi::PyCodeObject) -> *mut ffi::PyObject;
    fn ht_code_filename_object(code: *mut ffi::PyCodeObject) -> *mut ffi::PyObject;
    fn ht_code_freevar(code: *mut ffi::PyCodeObject, i: ffi::Py_ssize_t) -> *mut ffi::PyObject;
    fn ht_tb_frame(tb: *mut ffi::PyObject) -> *mut ffi::PyObject;
    fn ht_tb_next(tb: *mut ffi::PyObject) -> *mut ffi::PyObject;
    fn ht_heap_type_qualname(tp: *mut ffi::PyTypeObject) -> *mut ffi::PyObject;
    fn ht_module_dict(module: *mut ffi::PyObject) -> *mut ffi::PyObject;
    fn ht_cell_get(cell: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

type LocalCb = extern "C" fn(
    ctx: *mut c_void,
    code: *mut ffi::PyCodeObject,
    line: c_int,
    name: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
);

// ---- the parent: fork, wait, collect -----------------------------------------------------

/// Figures of the last analysis, for the benchmark (`_native._last_analysis_stats()`).
static LAST_STATS: Mutex<Option<Value>> = Mutex::new(None);

pub fn last_stats() -> Option<String> {
    LAST_STATS.lock().ok()?.as_ref().map(|v| v.to_string())
}

fn compile(patterns: &[String]) -> Vec<Pattern> {
    patterns
        .iter()
        .map(|p| Pattern::new(&normalize_filename(p)))
        .collect()
}

/// `_native._analyse_holders`: one result dict per candidate, in order. Runtime failures
/// (fork, timeout, a crashed child) are reported in each dict's `error`, never raised.
pub fn analyse_holders<'py>(
    py: Python<'py>,
    candidates: Vec<(String, u32)>,
    library: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    timeout: f64,
) -> PyResult<Bound<'py, PyList>> {
    let entered = Instant::now();
    let rules = SiteRules {
        library: compile(&library),
        include: compile(&include),
        exclude: compile(&exclude),
    };
    // gc.garbage, looked up here: the child imports nothing.
    let garbage = py.import("gc")?.getattr("garbage")?;
    let outcome = fork_and_wait(py, &candidates, &rules, garbage.as_ptr(), timeout, entered);
    let (pause, results, error) = match outcome {
        Ok((pause, text)) => match serde_json::from_str::<Value>(&text) {
            Ok(mut v) => {
                let error = v.get("error").and_then(|e| e.as_str()).map(str::to_string);
                if let Some(stats) = v.get_mut("stats") {
                    stats["pause_ms"] = json!(pause.as_secs_f64() * 1e3);
                    stats["wall_ms"] = json!(entered.elapsed().as_secs_f64() * 1e3);
                    *LAST_STATS.lock().unwrap() = Some(stats.take());
                }
                let results = v.get_mut("results").map(Value::take);
                (pause, results, error)
            }
            Err(e) => (
                pause,
                None,
                Some(format!("unreadable analysis result: {e}")),
            ),
        },
        Err((pause, e)) => (pause, None, Some(e)),
    };
    let results = match results {
        Some(Value::Array(r)) if r.len() == candidates.len() => r,
        _ => candidates
            .iter()
            .map(|(f, l)| {
                json!({"filename": f, "lineno": l, "blocks": 0, "reached": 0, "internal": 0,
                       "owner_sites": [], "holder": null})
            })
            .collect(),
    };
    let json_loads = py.import("json")?.getattr("loads")?;
    let out = PyList::empty(py);
    for mut r in results {
        r["pause_ms"] = json!(pause.as_secs_f64() * 1e3);
        r["error"] = match &error {
            Some(e) => json!(e),
            None => Value::Null,
        };
        out.append(json_loads.call1((r.to_string(),))?)?;
    }
    Ok(out)
}

/// Forks the analysis child and waits for its output. `Ok((pause, json))`, or
/// `Err((pause, reason))`. `pause`: how long the application was held (until the GIL is
/// released, right after the fork).
fn fork_and_wait(
    py: Python<'_>,
    candidates: &[(String, u32)],
    rules: &SiteRules,
    garbage: *mut ffi::PyObject,
    timeout: f64,
    entered: Instant,
) -> Result<(Duration, String), (Duration, String)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: plain syscall on a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err((
            entered.elapsed(),
            format!("pipe failed: {}", std::io::Error::last_os_error()),
        ));
    }
    let [read_fd, write_fd] = fds;
    let fork_start = Instant::now();
    // SAFETY: libc's fork (glibc runs its pthread_atfork handlers, among them heaptrail's
    // own for the pending-queue lock; Python's os.register_at_fork handlers are not run). The
    // child only runs `child_main`, then `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child, which holds the GIL (the forking thread held it) and has no
        // other thread.
        unsafe {
            libc::close(read_fd);
            let text = child_main(py, candidates, rules, garbage);
            write_all(write_fd, text.as_bytes());
            libc::_exit(0);
        }
    }
    let fork_time = fork_start.elapsed();
    // SAFETY: closing our copy of the write end, so that EOF comes when the child exits.
    unsafe { libc::close(write_fd) };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing our own read end; no child will write to it.
        unsafe { libc::close(read_fd) };
        return Err((entered.elapsed(), format!("fork failed: {e}")));
    }
    let pause = entered.elapsed();
    let timeout_s = if timeout.is_nan() {
        0.0
    } else {
        timeout.clamp(0.0, 1e6)
    };
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_s);
    let read = py.detach(move || {
        let out = read_until(read_fd, deadline);
        // SAFETY: our own pipe end and child.
        unsafe {
            libc::close(read_fd);
            if out.is_err() {
                libc::kill(pid, libc::SIGKILL);
            }
            let mut status: c_int = 0;
            while libc::waitpid(pid, &mut status, 0) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            (out, status)
        }
    });
    let _ = fork_time;
    match read {
        (Err(()), _) => Err((pause, format!("timeout after {timeout} s"))),
        (Ok(bytes), status) => {
            if bytes.is_empty() {
                let why = if libc::WIFSIGNALED(status) {
                    format!("killed by signal {}", libc::WTERMSIG(status))
                } else {
                    format!("exit status {}", libc::WEXITSTATUS(status))
                };
                return Err((
                    pause,
                    format!("analysis child died without a result ({why})"),
                ));
            }
            Ok((pause, String::from_utf8_lossy(&bytes).into_owned()))
        }
    }
}

/// Reads `fd` to EOF; `Err` at the deadline.
fn read_until(fd: c_int, deadline: Instant) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(());
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as c_int;
        // SAFETY: one pollfd on the stack.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(());
        }
        if n == 0 {
            continue; // deadline checked above
        }
        // SAFETY: reading into our buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(());
        }
        if r == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..r as usize]);
    }
}

/// # Safety
/// `fd` is an open file descriptor the caller owns.
unsafe fn write_all(fd: c_int, mut data: &[u8]) {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        while !data.is_empty() {
            let n = libc::write(fd, data.as_ptr().cast(), data.len());
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return;
            }
            data = &data[n as usize..];
        }
    }
}

// ---- the child --------------------------------------------------------------------------

/// Everything the child does; returns its JSON output. Never unwinds.
///
/// # Safety
/// Called only in the analysing child, right after `fork()`, by its only thread, which
/// holds the GIL (the forking thread held it).
unsafe fn child_main(
    py: Python<'_>,
    candidates: &[(String, u32)],
    rules: &SiteRules,
    garbage: *mut ffi::PyObject,
) -> String {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        tracer::enter_fork_child();
        let _own = tracer::OwnWork::begin();
        // Dies with its parent; no core file of a copy of the whole process if it crashes; the
        // application's signal handlers (which would write to its wakeup fd, shared with the
        // parent) are not run: a signal meant for the process group simply ends the child.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The application's threads come first for the CPU: the walk is background work. And
        // if memory runs out, the kernel's OOM killer takes the child, not the application.
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
        let _ = std::fs::write("/proc/self/oom_score_adj", b"1000");
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPIPE,
            libc::SIGALRM,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        ffi::PyGC_Disable();
        let started = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let graph = Graph::walk(garbage);
            let walked = started.elapsed();
            // Every candidate's blocks first: a line's blocks are compared with the others'.
            let sets: Vec<FxHashSet<usize>> = candidates
                .iter()
                .map(|(f, l)| tracer::blocks_at_site(py, f, *l, rules))
                .collect();
            let results: Vec<Value> = (0..candidates.len())
                .map(|i| graph.analyse(py, candidates, &sets, i, rules))
                .collect();
            // Measured while the walk's maps are still allocated.
            let (peak, private) = own_memory();
            (graph.ids.len(), walked, results, peak, private)
        }));
        match run {
            Ok((nodes, walked, results, peak, private)) => json!({
                "results": results,
                "stats": {"nodes": nodes, "walk_ms": walked.as_secs_f64() * 1e3,
                          "child_ms": started.elapsed().as_secs_f64() * 1e3,
                          "child_peak_rss_kb": peak, "child_private_kb": private},
            })
            .to_string(),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                json!({"error": format!("analysis failed: {msg}")}).to_string()
            }
        }
    }
}

/// (VmHWM, private memory) of the child in KiB: its peak resident set (which counts the
/// parent's pages it shares) and the memory that is its own (its maps, pages it copied).
fn own_memory() -> (u64, u64) {
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    (
        field(&status, "VmHWM:"),
        field(&rollup, "Private_Clean:") + field(&rollup, "Private_Dirty:"),
    )
}

const NONE: u32 = u32::MAX;
const OBJECT: u8 = 0;
/// An internal storage block of its parent (never expanded).
const STORAGE: u8 = 1;
/// A thread state: its children are its frames' local variables.
const THREAD: u8 = 2;
/// Marked visited, not expanded (`sys.modules` itself).
const SKIP: u8 = 3;

/// The BFS tree. Node `i`'s parent has a smaller index (BFS discovers parents first), and
/// indices grow with depth within each of the three walks (from the modules and
/// `gc.garbage`, then from the threads' frames, then from heaptrail's own modules; a node of
/// one never has a parent or child in a later one).
struct Graph {
    ids: Vec<usize>,
    parent: Vec<u32>,
    kind: Vec<u8>,
    /// Addresses visited. (Parents are recorded as indices by the node that discovers a
    /// child, so no address-to-index map is needed: 8 bytes an entry, not 16.)
    seen: FxHashSet<usize>,
    module_names: FxHashMap<u32, String>,
    garbage_root: u32,
}

struct Adder<'a> {
    g: &'a mut Graph,
    parent: u32,
}

extern "C" fn visit(child: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Adder` passed to tp_traverse in `expand`.
    let a = unsafe { &mut *(arg as *mut Adder) };
    a.g.add(child as usize, a.parent, OBJECT);
    0
}

extern "C" fn visit_local(
    ctx: *mut c_void,
    _code: *mut ffi::PyCodeObject,
    _line: c_int,
    _name: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
) {
    // SAFETY: `ctx` is the `Adder` passed by `expand`.
    let a = unsafe { &mut *(ctx as *mut Adder) };
    a.g.add(value as usize, a.parent, OBJECT);
}

/// `_thread._local`: its per-thread dicts hang off a bookkeeping dict (keyed by weak
/// references); the per-thread dicts become its direct children.
extern "C" fn visit_thread_local(child: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: as `visit`; GIL held (child process).
    unsafe {
        let a = &mut *(arg as *mut Adder);
        if !child.is_null() && ffi::PyDict_CheckExact(child) != 0 {
            let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
            while ffi::PyDict_Next(child, &mut pos, &mut k, &mut v) != 0 {
                if ffi::PyDict_Check(v) != 0 {
                    a.g.add(v as usize, a.parent, OBJECT);
                }
            }
        }
        a.g.add(child as usize, a.parent, OBJECT);
    }
    0
}

/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn type_is(obj: *mut ffi::PyObject, name: &[u8]) -> bool {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        let tp = ffi::Py_TYPE(obj);
        std::ffi::CStr::from_ptr((*tp).tp_name).to_bytes() == name
    }
}

/// `obj` is a `collections.deque` or an instance of a subclass of it.
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs): `obj`
/// is a live object.
unsafe fn is_deque(obj: *mut ffi::PyObject) -> bool {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        let mut tp = ffi::Py_TYPE(obj);
        while !tp.is_null() {
            if std::ffi::CStr::from_ptr((*tp).tp_name).to_bytes() == b"collections.deque" {
                return true;
            }
            tp = (*tp).tp_base;
        }
        false
    }
}

impl Graph {
    fn add(&mut self, id: usize, parent: u32, kind: u8) -> bool {
        if id == 0 {
            return false;
        }
        if !self.seen.insert(id) {
            return false;
        }
        self.ids.push(id);
        self.parent.push(parent);
        self.kind.push(kind);
        true
    }

    /// The walk from the roots.
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn walk(garbage: *mut ffi::PyObject) -> Graph {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            let mut g = Graph {
                ids: Vec::new(),
                parent: Vec::new(),
                kind: Vec::new(),
                seen: FxHashSet::default(),
                module_names: FxHashMap::default(),
                garbage_root: NONE,
            };
            let mut own_modules = Vec::new();
            let modules = ffi::PyImport_GetModuleDict();
            if !modules.is_null() {
                // heaptrail's own modules are roots only once everything reachable from the
                // others has been walked (`walk_from`, below): a path through them (a logger
                // heaptrail keeps, say) would mean nothing to a user.
                let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
                while ffi::PyDict_Next(modules, &mut pos, &mut k, &mut v) != 0 {
                    let name = str_of(k).unwrap_or_default();
                    if name == "heaptrail" || name.starts_with("heaptrail.") {
                        own_modules.push((name, v));
                    } else if g.add(v as usize, NONE, OBJECT) {
                        g.module_names.insert(g.ids.len() as u32 - 1, name);
                    }
                }
                g.add(modules as usize, NONE, SKIP);
            }
            if g.add(garbage as usize, NONE, OBJECT) {
                g.garbage_root = g.ids.len() as u32 - 1;
            }
            // Durable roots first: a running function's local variables are roots only for what
            // no module reaches. A leak outlives the call that happens to be running at the fork
            // (a `Signal.send` whose `self` is the module's leaking signal, say), so a path
            // through that call's frame would name a holder that is gone a moment later, and
            // which one is named would depend on where the thread was stopped.
            let head = g.walk_from(0);
            let mut t = ffi::PyInterpreterState_ThreadHead(ffi::PyInterpreterState_Main());
            while !t.is_null() {
                g.add(t as usize, NONE, THREAD);
                t = ffi::PyThreadState_Next(t);
            }
            let head = g.walk_from(head);
            for (name, module) in own_modules {
                if g.add(module as usize, NONE, OBJECT) {
                    g.module_names.insert(g.ids.len() as u32 - 1, name);
                }
            }
            g.walk_from(head);
            g
        }
    }

    /// Expands the nodes from index `head` on, breadth first, until none is left; returns
    /// the new end.
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn walk_from(&mut self, mut head: usize) -> usize {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            while head < self.ids.len() {
                let i = head as u32;
                head += 1;
                match self.kind[i as usize] {
                    OBJECT => self.expand(i),
                    THREAD => {
                        let tstate = self.ids[i as usize] as *mut ffi::PyThreadState;
                        let mut a = Adder { g: self, parent: i };
                        ht_thread_locals(tstate, visit_local, &mut a as *mut Adder as *mut c_void);
                    }
                    _ => {}
                }
            }
            head
        }
    }

    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn expand(&mut self, i: u32) {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            let obj = self.ids[i as usize] as *mut ffi::PyObject;
            if ffi::PyDict_Check(obj) != 0 {
                // Keys too: a dict's tp_traverse skips string keys, which a cache keeps alive.
                let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
                while ffi::PyDict_Next(obj, &mut pos, &mut k, &mut v) != 0 {
                    self.add(k as usize, i, OBJECT);
                    self.add(v as usize, i, OBJECT);
                }
                let mut storage = [0usize; 2];
                ht_dict_storage(obj, storage.as_mut_ptr());
                self.add(storage[0], i, STORAGE);
                self.add(storage[1], i, STORAGE);
                if ffi::PyDict_CheckExact(obj) != 0 {
                    return;
                }
            } else if ffi::PyList_Check(obj) != 0 {
                self.add(ht_list_storage(obj), i, STORAGE);
            } else if ffi::PyAnySet_Check(obj) != 0 {
                self.add(ht_set_storage(obj), i, STORAGE);
            } else if ffi::PyByteArray_Check(obj) != 0 {
                self.add(ht_bytearray_storage(obj), i, STORAGE);
            } else if is_deque(obj) {
                // Its blocks of 64 items, allocated by the line that grew it: without them an
                // `append` line whose items were made elsewhere had no reachable block at all.
                let cap = ffi::Py_SIZE(obj).max(0) as usize / 64 + 2;
                let mut blocks = vec![0usize; cap];
                let n = ht_deque_blocks(obj, blocks.as_mut_ptr(), cap);
                for &b in &blocks[..n] {
                    self.add(b, i, STORAGE);
                }
            } else if ffi::PyFunction_Check(obj) != 0 {
                // Closure variables first, as the function's own children (the cells are
                // bookkeeping).
                let closure = ffi::PyFunction_GetClosure(obj);
                if !closure.is_null() && ffi::PyTuple_Check(closure) != 0 {
                    for j in 0..ffi::PyTuple_GET_SIZE(closure) {
                        let cell = ffi::PyTuple_GET_ITEM(closure, j);
                        if ffi::PyCell_Check(cell) != 0 {
                            self.add(ht_cell_get(cell) as usize, i, OBJECT);
                        }
                    }
                }
            } else if ffi::PyFrame_Check(obj) != 0 {
                let mut a = Adder { g: self, parent: i };
                ht_frame_object_locals(obj, visit_local, &mut a as *mut Adder as *mut c_void);
            }
            self.add(ht_instance_values_storage(obj), i, STORAGE);
            if ffi::PyObject_IS_GC(obj) == 0 {
                return;
            }
            if let Some(traverse) = (*ffi::Py_TYPE(obj)).tp_traverse {
                let visitor: ffi::visitproc = if type_is(obj, b"_thread._local") {
                    visit_thread_local
                } else {
                    visit
                };
                let mut a = Adder { g: self, parent: i };
                // Calling a type's tp_traverse with a visitor that only records is what the
                // garbage collector does.
                traverse(obj, visitor, &mut a as *mut Adder as *mut c_void);
            }
        }
    }

    fn obj(&self, i: u32) -> *mut ffi::PyObject {
        self.ids[i as usize] as *mut ffi::PyObject
    }

    /// The block a node stands for (0 for a thread).
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn block_of(&self, i: usize) -> usize {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            match self.kind[i] {
                OBJECT => object_block_address(self.ids[i] as *mut ffi::PyObject),
                STORAGE => self.ids[i],
                _ => 0,
            }
        }
    }

    /// A module's dict, a class's dict or an instance's dict, seen from its owner (the
    /// owner's parent in the tree): its entries are the owner's attributes.
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn is_namespace_of(&self, dict: u32, owner: u32) -> bool {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            if self.kind[owner as usize] != OBJECT || self.kind[dict as usize] != OBJECT {
                return false;
            }
            let (d, o) = (self.obj(dict), self.obj(owner));
            if ffi::PyDict_Check(d) == 0 {
                return false;
            }
            if ffi::PyModule_Check(o) != 0 {
                return ht_module_dict(o) == d;
            }
            if ffi::PyType_Check(o) != 0 {
                let tp = o as *mut ffi::PyTypeObject;
                return (*tp).tp_flags & ffi::Py_TPFLAGS_HEAPTYPE != 0 && (*tp).tp_dict == d;
            }
            instance_dict(o) == Some(d)
        }
    }

    /// The object node `i` stands for: the owner of a namespace dict (an instance's or a
    /// class's attributes are the owner's), else `i` itself.
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every node of the walk is a live object.
    unsafe fn standing_for(&self, i: u32) -> u32 {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            let p = self.parent[i as usize];
            if p != NONE && self.is_namespace_of(i, p) {
                p
            } else {
                i
            }
        }
    }

    fn is_module_like(&self, i: u32) -> bool {
        // SAFETY: child, GIL held, nodes alive.
        unsafe {
            let o = self.obj(i);
            if ffi::PyModule_Check(o) != 0 {
                return true;
            }
            let p = self.parent[i as usize];
            p != NONE
                && self.kind[p as usize] == OBJECT
                && ffi::PyModule_Check(self.obj(p)) != 0
                && ht_module_dict(self.obj(p)) == o
        }
    }

    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn analyse(
        &self,
        py: Python<'_>,
        candidates: &[(String, u32)],
        sets: &[FxHashSet<usize>],
        index: usize,
        rules: &SiteRules,
    ) -> Value {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            let (filename, lineno) = (&candidates[index].0, candidates[index].1);
            let blocks = &sets[index];
            let n = self.ids.len();
            let mut reached: Vec<u32> = Vec::new();
            for i in 0..n {
                let b = self.block_of(i);
                if b != 0 && blocks.contains(&b) {
                    reached.push(i as u32);
                }
            }
            let in_b: FxHashSet<u32> = reached.iter().copied().collect();
            // Internal storage of objects allocated elsewhere, and where those were allocated.
            let mut internal = 0u64;
            let mut owner_sites: FxHashMap<(String, u32), u64> = FxHashMap::default();
            for &r in &reached {
                if self.kind[r as usize] != STORAGE {
                    continue;
                }
                let owner = self.parent[r as usize];
                let owner_block = self.block_of(owner as usize);
                if blocks.contains(&owner_block) {
                    continue;
                }
                internal += 1;
                if let Some(tb) = tracer::block_traceback(py, owner_block) {
                    let site = tb
                        .iter()
                        .find(|(f, _)| rules.is_user_file(f))
                        .or(tb.first())
                        .map(|(f, l)| (f.to_string(), *l));
                    if let Some(site) = site {
                        *owner_sites.entry(site).or_default() += 1;
                    }
                }
            }
            let mut owner_sites: Vec<_> = owner_sites.into_iter().collect();
            owner_sites.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            owner_sites.truncate(3);
            let inside = self.inside_other_candidates(&reached, candidates, sets, index);
            // Blocks held by a container with a fixed capacity (a deque with a maxlen) cannot be
            // part of unbounded growth: the holder is judged by the others, when there are any.
            // (A line whose strings fill a bounded deque and, now and then, are kept by a leaking
            // dict too was named as held by the deque, "unbounded-list, bound it", while the deque
            // was bounded already.)
            let unbounded: Vec<u32> = reached
                .iter()
                .copied()
                .filter(|&r| {
                    let p = self.parent[r as usize];
                    p == NONE
                        || self.kind[p as usize] != OBJECT
                        || !is_bounded_container(self.obj(p))
                })
                .collect();
            let (mut holder, holder_obj) = if reached.is_empty() {
                (Value::Null, None)
            } else if unbounded.is_empty() || unbounded.len() == reached.len() {
                self.holder(&reached, &in_b, sets)
            } else {
                let in_unbounded: FxHashSet<u32> = unbounded.iter().copied().collect();
                self.holder(&unbounded, &in_unbounded, sets)
            };
            if let (Some(ho), Value::Object(map)) = (holder_obj, &mut holder) {
                map.insert("element_sites".into(), element_sites(py, ho, rules));
            }
            json!({
                "filename": filename, "lineno": lineno,
                "blocks": blocks.len(), "reached": reached.len(), "internal": internal,
                "owner_sites": owner_sites.iter().map(|((f, l), c)| json!([f, l, c])).collect::<Vec<_>>(),
                "inside": inside,
                "holder": holder,
            })
        }
    }

    /// The other candidate lines whose objects directly hold this line's reached objects
    /// (`[filename, lineno, blocks]`, most first, at most 3): the ints and strings stored in
    /// the dicts another growing line creates are that line's leak, whichever holder each
    /// line's own blocks point to. An attribute in an instance's dict counts for the instance.
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn inside_other_candidates(
        &self,
        reached: &[u32],
        candidates: &[(String, u32)],
        sets: &[FxHashSet<usize>],
        index: usize,
    ) -> Value {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            let mut counts = vec![0u64; candidates.len()];
            for &r in reached {
                if self.kind[r as usize] != OBJECT {
                    continue; // storage: its owner is counted by `owner_sites`
                }
                let p = self.parent[r as usize];
                if p == NONE || self.kind[p as usize] != OBJECT {
                    continue;
                }
                let block = self.block_of(self.standing_for(p) as usize);
                if block == 0 || sets[index].contains(&block) {
                    continue; // the line's own structure
                }
                if let Some(j) = (0..sets.len()).find(|&j| j != index && sets[j].contains(&block)) {
                    counts[j] += 1;
                }
            }
            let mut found: Vec<(usize, u64)> =
                counts.into_iter().enumerate().filter(|&(_, c)| c > 0).collect();
            found.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            found.truncate(3);
            Value::Array(
                found
                    .into_iter()
                    .map(|(j, c)| json!([candidates[j].0, candidates[j].1, c]))
                    .collect(),
            )
        }
    }

    /// The size bound a cache object declares for the holder `h`: an int attribute with a
    /// bound's name (`BOUND_ATTRIBUTES`) of `h` itself or of the object `h` is an attribute of
    /// (cachetools' `TTLCache` keeps its entries in `_Cache__data` and `_TTLCache__links`,
    /// its bound in `_Cache__maxsize`). Believed only while the holder's length is within
    /// it: a container that outgrew the number is not what the number bounds.
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn declared_bound(&self, h: u32, len: &Value) -> Option<u64> {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            let mut owners = vec![h];
            let p = self.parent[h as usize];
            if p != NONE && self.kind[p as usize] == OBJECT {
                owners.push(self.standing_for(p));
            }
            let bound = owners
                .into_iter()
                .filter(|&o| self.kind[o as usize] == OBJECT)
                .find_map(|o| bound_attribute(self.obj(o)))?;
            match len.as_u64() {
                Some(n) if n > bound => None,
                _ => Some(bound),
            }
        }
    }

    /// When no single container holds half of the blocks because the growth is spread over
    /// like containers inside a fixed set of objects (one `listeners` list per event bus, one
    /// `orders` list per customer loaded at start-up, one list per thread of a
    /// `threading.local`): the biggest of those containers, how many there are, and how many
    /// blocks they hold together. Each child of `above` (the deepest object above half of the
    /// blocks) concentrates its share in one container (the deepest node above more than half
    /// of that share); containers reached from their child by the same steps, of the same type, that
    /// together hold half of the blocks are siblings, unless a growing line made any of them
    /// or of their children (new sessions each holding their cart: the sessions are what
    /// accumulates; in sampled mode one sampled session says so), more than 64 children hold
    /// blocks (a fixed set of objects is a handful: buses, tenants, threads), or they hang off
    /// different attributes of one object (two caches of one service are two holders). With
    /// `required` (a holder found first, under `above`): the like containers of that holder,
    /// even where it alone holds half of the blocks (not three quarters: then it is the
    /// holder).
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn sibling_holders(
        &self,
        above: u32,
        below: &[u32],
        total: u64,
        in_b: &FxHashSet<u32>,
        sets: &[FxHashSet<usize>],
        required: Option<u32>,
    ) -> Option<(u32, usize, u64)> {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            // The holder found first holds three quarters or more: it is the holder (the series
            // of one metric that takes a label per request, beside another metric's dozen
            // series), not one of several filling up alike.
            if required.is_some_and(|r| below[r as usize] as u64 * 4 >= total * 3) {
                return None;
            }
            let n = self.ids.len();
            let start = above as usize + 1;
            let growing = |i: u32| {
                let b = self.block_of(i as usize);
                b != 0 && sets.iter().any(|set| set.contains(&b))
            };
            // Each node's child of `above` (its branch), then each branch's concentrator.
            let mut branch = vec![NONE; n.saturating_sub(start)];
            let mut concentrator: FxHashMap<u32, u32> = FxHashMap::default();
            let mut items = 0usize;
            let mut own_storage: FxHashMap<u32, u32> = FxHashMap::default();
            for i in start..n {
                let p = self.parent[i];
                if p == NONE || (p as usize) < above as usize {
                    continue;
                }
                let x = if p == above {
                    i as u32
                } else if (p as usize) < start {
                    NONE
                } else {
                    branch[p as usize - start]
                };
                branch[i - start] = x;
                if x == NONE || below[x as usize] == 0 {
                    continue;
                }
                if self.kind[i] == STORAGE && below[i] > 0 {
                    *own_storage.entry(p).or_default() += below[i];
                }
                if p == above {
                    // An item that holds blocks: made by a growing line (it is one of the
                    // blocks, or sampled at another candidate line), the items accumulate. In
                    // sampled mode only some of them are known to be, so one is enough.
                    if in_b.contains(&(i as u32)) || growing(i as u32) {
                        return None;
                    }
                    items += 1;
                }
                if below[i] * 2 > below[x as usize]
                    && self.kind[i] == OBJECT
                    && !in_b.contains(&(i as u32))
                {
                    concentrator.insert(x, i as u32); // BFS order: the deepest one last
                }
            }
            // More than 64 items holding blocks: items that accumulate (exceptions, sessions,
            // callbacks), not a fixed set of objects each accumulating inside.
            if items > 64 {
                return None;
            }
            let mut branches: Vec<(u32, u32)> = concentrator.into_iter().collect();
            branches.sort_by(|a, b| below[b.0 as usize].cmp(&below[a.0 as usize]).then(a.0.cmp(&b.0)));
            let one_holds_half =
                branches.first().is_none_or(|&(x, _)| below[x as usize] as u64 * 2 >= total);
            if one_holds_half && required.is_none() {
                return None; // `above` is not the deepest object above half of the blocks
            }
            // Like containers: reached from their child by the same steps (list positions and
            // dict keys aside), of the same types. A branch with few blocks (sampled mode) has
            // its concentrator deeper, at the wrapper of its only block (a tuple in the list, the
            // message dict in the pending dict): the biggest branch sets the group's shape, and
            // a branch whose shape starts with it joins it, at that depth.
            struct Like {
                shape: Vec<String>,
                members: Vec<(Vec<u32>, u64)>, // (nodes from the child down, one per step; held)
            }
            let mut groups: Vec<Like> = Vec::new();
            let is_item = |p: u32, c: u32| matches!(self.label(p, c).0, "key" | "index" | "member" | "thread_local");
            // A node whose only blocks are its own storage (a message dict's key table, grown
            // from a free list at the line) is an element, not a container filling up.
            let only_own_storage = |i: u32| own_storage.get(&i) == Some(&below[i as usize]);
            for (x, mut y) in branches {
                // Items of one collection (a dict's values, a list's items, a thread-local's
                // per-thread dicts); two attributes of one object are two holders.
                if !is_item(above, x) || (x == y && only_own_storage(x)) {
                    continue;
                }
                // An element's storage (its only block, sampled): its container concentrates.
                let p = self.parent[y as usize];
                if y != x && only_own_storage(y) && is_item(p, y) {
                    y = p;
                }
                let mut steps = Vec::new();
                let mut c = y;
                while c != x {
                    let p = self.parent[c as usize];
                    if !self.is_namespace_of(c, p) {
                        let (kind, name, _) = self.label(p, c);
                        // Positions and keys differ from item to item; attribute names not.
                        let name = if matches!(kind, "index" | "key" | "member") { String::new() } else { name };
                        steps.push((format!("{kind} {name} {}", type_name(ffi::Py_TYPE(self.obj(c)))), c));
                    }
                    c = p;
                }
                let mut shape = vec![type_name(ffi::Py_TYPE(self.obj(x)))];
                let mut nodes = vec![x];
                for (step, node) in steps.into_iter().rev() {
                    shape.push(step);
                    nodes.push(node);
                }
                // A growing line made what leads from an item to its container.
                if nodes.iter().any(|&i| growing(i)) {
                    return None;
                }
                let held = below[x as usize] as u64;
                match groups.iter_mut().find(|g| shape.starts_with(&g.shape)) {
                    Some(g) => g.members.push((nodes, held)),
                    None => groups.push(Like { shape, members: vec![(nodes, held)] }),
                }
            }
            let node = |g: &Like, m: usize| g.members[m].0[g.shape.len() - 1];
            let held = |g: &Like| g.members.iter().map(|(_, h)| h).sum::<u64>();
            let group = match required {
                // The group of `required` (the holder found first).
                Some(r) => groups.into_iter().find(|g| (0..g.members.len()).any(|m| node(g, m) == r))?,
                None => groups.into_iter().max_by_key(|g| (held(g), g.members.len()))?,
            };
            if group.members.len() < 2 || held(&group) * 2 < total {
                return None;
            }
            Some((node(&group, 0), group.members.len(), held(&group)))
        }
    }

    /// The holder's description, and the holder object itself.
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn holder(
        &self,
        reached: &[u32],
        in_b: &FxHashSet<u32>,
        sets: &[FxHashSet<usize>],
    ) -> (Value, Option<*mut ffi::PyObject>) {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            let n = self.ids.len();
            // Reached blocks per subtree, children before parents (reverse BFS order).
            let mut below = vec![0u32; n];
            for &r in reached {
                below[r as usize] = 1;
            }
            for i in (0..n).rev() {
                let p = self.parent[i];
                if p != NONE {
                    below[p as usize] += below[i];
                }
            }
            let total = reached.len() as u64;
            // The deepest (largest BFS index) eligible node above at least half of them.
            let mut best = NONE;
            for i in (0..n).rev() {
                let c = below[i] as u64 - in_b.contains(&(i as u32)) as u64;
                if c * 2 < total || self.kind[i] != OBJECT || in_b.contains(&(i as u32)) {
                    continue;
                }
                if self.is_module_like(i as u32) {
                    continue;
                }
                best = i as u32;
                break;
            }
            if best == NONE {
                return (Value::Null, None);
            }
            // Spread over like containers below `best`; or `best` is one of them, holding half
            // of the blocks only because few were sampled or one thread took most requests:
            // then its like containers under an ancestor (up to three levels up) say so too.
            let mut spread = None;
            let mut above = best;
            for level in 0..4 {
                if above == NONE || self.kind[above as usize] != OBJECT || self.is_module_like(above) {
                    break;
                }
                let required = (level > 0).then_some(best);
                if let Some((representative, n, held)) =
                    self.sibling_holders(above, &below, total, in_b, sets, required)
                {
                    spread = Some((above, n, held));
                    best = representative;
                    break;
                }
                above = self.parent[above as usize];
            }
            // A class's or an instance's dict stands for its owner.
            let p = self.parent[best as usize];
            if p != NONE && self.is_namespace_of(best, p) && ffi::PyModule_Check(self.obj(p)) == 0 {
                best = p;
            }
            let h = best;
            let count = match spread {
                Some((_, _, held)) => held,
                None => below[h as usize] as u64 - in_b.contains(&h) as u64,
            };
            // Role: how the blocks hang under the holder, judged by the holder's direct child each
            // block is under (its *branch*; through the namespace dict of an instance holder):
            // the child itself or its storage allocated at the line: `element`; the holder's own
            // storage: `storage`; something deeper, under a child allocated elsewhere: `content`.
            let start = h as usize + 1;
            let mut branch = vec![NONE; n.saturating_sub(start)];
            for i in start..n {
                let p = self.parent[i];
                if p == NONE || (p as usize) < h as usize {
                    continue;
                }
                branch[i - start] = if p == h {
                    i as u32
                } else if (p as usize) < start {
                    NONE
                } else {
                    let b = branch[p as usize - start];
                    // Entries of the holder's namespace dict are its direct children.
                    if b == p && self.is_namespace_of(p, h) {
                        i as u32
                    } else {
                        b
                    }
                };
            }
            // A dict holder's keys are its index, not what the code stores in it: blocks under a
            // key (the key itself or what it holds) count as `key`, so that the line creating the
            // stored values ranks first. Keys are compared by address (no __hash__/__eq__ runs).
            let ho = self.obj(h);
            let mut keys: FxHashSet<usize> = FxHashSet::default();
            if ffi::PyDict_Check(ho) != 0 {
                let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
                while ffi::PyDict_Next(ho, &mut pos, &mut k, &mut v) != 0 {
                    keys.insert(k as usize);
                }
            }
            let (mut storage, mut element, mut content, mut key) = (0u64, 0u64, 0u64, 0u64);
            for &r in reached {
                if (r as usize) < start {
                    continue;
                }
                let a = branch[r as usize - start];
                if a == NONE {
                    continue;
                }
                let is_storage = self.kind[r as usize] == STORAGE;
                if a == r && is_storage {
                    storage += 1;
                } else if self.kind[a as usize] == OBJECT && keys.contains(&(self.obj(a) as usize)) {
                    key += 1;
                } else if in_b.contains(&a) || (is_storage && self.parent[r as usize] == a) {
                    element += 1;
                } else {
                    content += 1;
                }
            }
            let role = if storage > element && storage > content && storage > key {
                "storage"
            } else if key > element && key > content {
                "key"
            } else if element >= content {
                "element"
            } else {
                "content"
            };
            let len = holder_len(ho);
            let (element_types, key_types) = children_types(ho);
            let mut path = self.path(h);
            if let Some((above, _, _)) = spread {
                // The step where the sibling holders part ways reads `*`: every one of them.
                let at = self.path(above).len();
                if let Some(Value::Object(edge)) = path.get_mut(at) {
                    edge.insert("name".into(), json!("*"));
                }
            }
            let description = json!({
                "type": type_name(ffi::Py_TYPE(ho)),
                "len": len,
                "share": count as f64 / total as f64,
                "role": role,
                "siblings": spread.map(|(_, n, _)| n),
                "path": path,
                "element_types": element_types,
                "key_types": key_types,
                "bound": size_bound(ho).or_else(|| self.declared_bound(h, &len)),
            });
            (description, Some(ho))
        }
    }

    /// The labelled path from the root to `h`.
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn path(&self, h: u32) -> Vec<Value> {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            let mut chain = vec![h];
            while let Some(&x) = chain.last() {
                let p = self.parent[x as usize];
                if p == NONE {
                    break;
                }
                chain.push(p);
            }
            chain.reverse();
            let mut out = Vec::new();
            let root = chain[0];
            let root_obj = self.obj(root);
            match self.kind[root as usize] {
                THREAD => {
                    let tstate = root_obj as *mut ffi::PyThreadState;
                    let code = ht_thread_bottom_code(tstate);
                    let of = if code.is_null() {
                        Value::Null
                    } else {
                        json!(str_of(ht_code_qualname(code)))
                    };
                    out.push(
                        json!({"kind": "thread", "name": ht_thread_ident(tstate).to_string(),
                                    "of": of, "type": "thread"}),
                    );
                }
                _ if root == self.garbage_root => out.push(json!({"kind": "gc_garbage",
                    "name": "gc.garbage", "of": null, "type": type_name(ffi::Py_TYPE(root_obj))})),
                _ => out.push(json!({"kind": "module",
                    "name": self.module_names.get(&root).cloned().unwrap_or_default(),
                    "of": null, "type": type_name(ffi::Py_TYPE(root_obj))})),
            }
            for w in chain.windows(2) {
                let (p, c) = (w[0], w[1]);
                if self.is_namespace_of(c, p) {
                    continue; // its entries are labelled as the owner's attributes
                }
                let (kind, name, of) = self.label(p, c);
                out.push(json!({"kind": kind, "name": name, "of": of,
                                "type": type_name(ffi::Py_TYPE(self.obj(c)))}));
            }
            out
        }
    }

    /// How `p` refers to `c`: (kind, name, of).
    ///
    /// # Safety
    /// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
    /// every object pointer passed in (and every node of the walk) is a live object.
    unsafe fn label(&self, p: u32, c: u32) -> (&'static str, String, Option<String>) {
        // SAFETY: this function's `# Safety` contract is what every unsafe operation
        // below relies on.
        unsafe {
            let po = self.obj(p);
            let co = self.obj(c);
            if self.kind[p as usize] == THREAD {
                let mut found = FindLocal {
                    target: co,
                    found: None,
                };
                ht_thread_locals(
                    po as *mut ffi::PyThreadState,
                    find_local,
                    &mut found as *mut FindLocal as *mut c_void,
                );
                return match found.found {
                    Some((name, of)) => ("local", name, Some(of)),
                    None => ("referent", String::new(), None),
                };
            }
            if ffi::PyDict_Check(po) != 0 {
                let gp = self.parent[p as usize];
                let owner = if gp != NONE && self.is_namespace_of(p, gp) {
                    Some(owner_name(self, gp))
                } else if gp != NONE
                    && self.kind[gp as usize] == OBJECT
                    && type_is(self.obj(gp), b"_thread._local")
                {
                    Some("threading.local".to_string())
                } else {
                    None
                };
                let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
                while ffi::PyDict_Next(po, &mut pos, &mut k, &mut v) != 0 {
                    if v == co {
                        return match owner {
                            Some(of) => ("attr", str_of(k).unwrap_or_else(|| key_repr(k)), Some(of)),
                            None => ("key", key_repr(k), None),
                        };
                    }
                }
                let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
                while ffi::PyDict_Next(po, &mut pos, &mut k, &mut v) != 0 {
                    if k == co {
                        return ("key", format!("{} (a key)", key_repr(k)), owner);
                    }
                }
            }
            if ffi::PyList_Check(po) != 0 {
                for j in 0..ffi::PyList_GET_SIZE(po) {
                    if ffi::PyList_GET_ITEM(po, j) == co {
                        return ("index", j.to_string(), None);
                    }
                }
            }
            if ffi::PyTuple_Check(po) != 0 {
                for j in 0..ffi::PyTuple_GET_SIZE(po) {
                    if ffi::PyTuple_GET_ITEM(po, j) == co {
                        return ("index", j.to_string(), None);
                    }
                }
            }
            if ffi::PyAnySet_Check(po) != 0 {
                return ("member", key_repr(co), None);
            }
            if ffi::PyFunction_Check(po) != 0 {
                let closure = ffi::PyFunction_GetClosure(po);
                let code = ffi::PyFunction_GetCode(po) as *mut ffi::PyCodeObject;
                if !closure.is_null() && ffi::PyTuple_Check(closure) != 0 {
                    for j in 0..ffi::PyTuple_GET_SIZE(closure) {
                        let cell = ffi::PyTuple_GET_ITEM(closure, j);
                        if ffi::PyCell_Check(cell) != 0 && ht_cell_get(cell) == co {
                            let name = str_of(ht_code_freevar(code, j)).unwrap_or_default();
                            return ("closure", name, str_of(ht_code_qualname(code)));
                        }
                    }
                }
            }
            if ffi::PyFrame_Check(po) != 0 {
                let mut found = FindLocal {
                    target: co,
                    found: None,
                };
                ht_frame_object_locals(po, find_local, &mut found as *mut FindLocal as *mut c_void);
                if let Some((name, of)) = found.found {
                    return ("local", name, Some(of));
                }
            }
            if type_is(po, b"functools._lru_cache_wrapper")
                && ffi::PyDict_Check(co) != 0
                && instance_dict(po) != Some(co)
            {
                let of = instance_dict(po)
                    .and_then(|d| str_of(ffi::PyDict_GetItemString(d, c"__qualname__".as_ptr())));
                return match lru_cache_maxsize(po) {
                    Some(maxsize) => ("bounded_lru_cache", format!("maxsize={maxsize}"), of),
                    None => ("lru_cache", "cache".into(), of),
                };
            }
            if type_is(po, b"_thread._local") && ffi::PyDict_Check(co) != 0 {
                return ("thread_local", "per-thread attributes".into(), None);
            }
            if ffi::PyExceptionInstance_Check(po) != 0 {
                let links = [
                    ("__traceback__", ffi::PyException_GetTraceback(po)),
                    ("__context__", ffi::PyException_GetContext(po)),
                    ("__cause__", ffi::PyException_GetCause(po)),
                ];
                for (name, x) in links {
                    if !x.is_null() {
                        ffi::Py_DECREF(x);
                        if x == co {
                            return ("attr", name.into(), Some(type_name(ffi::Py_TYPE(po))));
                        }
                    }
                }
            }
            if ffi::PyTraceBack_Check(po) != 0 {
                if ht_tb_frame(po) == co {
                    return ("attr", "tb_frame".into(), Some("traceback".into()));
                }
                if ht_tb_next(po) == co {
                    return ("attr", "tb_next".into(), Some("traceback".into()));
                }
            }
            // An instance attribute kept in its dict or inline values, or a slot.
            if let Some(d) = instance_dict(po) {
                let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
                while ffi::PyDict_Next(d, &mut pos, &mut k, &mut v) != 0 {
                    if v == co {
                        return (
                            "attr",
                            str_of(k).unwrap_or_default(),
                            Some(type_name(ffi::Py_TYPE(po))),
                        );
                    }
                }
            }
            if let Some(name) = slot_name(po, co) {
                return ("attr", name, Some(type_name(ffi::Py_TYPE(po))));
            }
            ("referent", String::new(), None)
        }
    }
}

struct FindLocal {
    target: *mut ffi::PyObject,
    found: Option<(String, String)>,
}

extern "C" fn find_local(
    ctx: *mut c_void,
    code: *mut ffi::PyCodeObject,
    line: c_int,
    name: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
) {
    // SAFETY: `ctx` is the `FindLocal` passed by `label`; child, GIL held.
    unsafe {
        let f = &mut *(ctx as *mut FindLocal);
        if f.found.is_none() && value == f.target {
            let qualname = str_of(ht_code_qualname(code)).unwrap_or_default();
            let file = str_of(ht_code_filename_object(code)).unwrap_or_default();
            f.found = Some((
                str_of(name).unwrap_or_default(),
                format!("{qualname} ({file}:{line})"),
            ));
        }
    }
}

/// The owner of a namespace dict, as a user names it.
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn owner_name(g: &Graph, owner: u32) -> String {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        let o = g.obj(owner);
        if ffi::PyModule_Check(o) != 0 {
            if let Some(name) = g.module_names.get(&owner) {
                return name.clone();
            }
            let d = ht_module_dict(o);
            return str_of(ffi::PyDict_GetItemString(d, c"__name__".as_ptr())).unwrap_or_default();
        }
        if ffi::PyType_Check(o) != 0 {
            return type_name(o as *mut ffi::PyTypeObject);
        }
        type_name(ffi::Py_TYPE(o))
    }
}

/// The most elements `o` can ever hold, when it is a container with a size bound: an
/// `lru_cache` wrapper's `maxsize`, a `collections.deque`'s `maxlen`. None: unbounded.
///
/// # Safety
/// GIL held (or the forked child, alone); `o` is a live object.
unsafe fn size_bound(o: *mut ffi::PyObject) -> Option<u64> {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        if type_is(o, b"functools._lru_cache_wrapper") {
            return lru_cache_maxsize(o);
        }
        if type_is(o, b"collections.deque") {
            // A C getter (no Python code runs): an int, or None when unbounded.
            let maxlen = ffi::PyObject_GetAttrString(o, c"maxlen".as_ptr());
            if maxlen.is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            let n = if ffi::PyLong_Check(maxlen) != 0 { ffi::PyLong_AsLongLong(maxlen) } else { -1 };
            ffi::Py_DECREF(maxlen);
            if n < 0 {
                ffi::PyErr_Clear();
                return None;
            }
            return Some(n as u64);
        }
        None
    }
}

/// Names of the attributes in which caches keep their size bound, compared lower-cased and
/// without leading underscores or a class-private prefix (`_Cache__maxsize` is `maxsize`).
const BOUND_ATTRIBUTES: &[&str] = &[
    "maxsize", "max_size", "maxlen", "max_len", "capacity", "max_entries", "max_items",
];

/// A positive int in an attribute of `o` named like a size bound (its instance dict, then its
/// class's own dict), read without running Python code.
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs): `o`
/// is a live object.
unsafe fn bound_attribute(o: *mut ffi::PyObject) -> Option<u64> {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        let tp = ffi::Py_TYPE(o);
        let class_dict = if (*tp).tp_flags & ffi::Py_TPFLAGS_HEAPTYPE != 0 {
            Some((*tp).tp_dict)
        } else {
            None
        };
        for d in [instance_dict(o), class_dict].into_iter().flatten() {
            if d.is_null() || ffi::PyDict_Check(d) == 0 {
                continue;
            }
            let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
            while ffi::PyDict_Next(d, &mut pos, &mut k, &mut v) != 0 {
                let Some(name) = str_of(k) else { continue };
                let bare = name.rsplit("__").next().unwrap_or(&name).trim_start_matches('_');
                if !BOUND_ATTRIBUTES.contains(&bare.to_ascii_lowercase().as_str())
                    || ffi::PyLong_CheckExact(v) == 0
                {
                    continue;
                }
                let n = ffi::PyLong_AsLongLong(v);
                if n == -1 && !ffi::PyErr_Occurred().is_null() {
                    ffi::PyErr_Clear();
                    continue;
                }
                if n > 0 {
                    return Some(n as u64);
                }
            }
        }
        None
    }
}

/// The `maxsize` of a `functools.lru_cache` wrapper, None when unbounded (`maxsize=None`) or
/// unknown. Read without calling Python: `functools.lru_cache` stores
/// `cache_parameters = lambda: {'typed': typed, 'maxsize': maxsize}` on the wrapper, and the
/// lambda's closure cell named `maxsize` holds the bound (an int; None when unbounded).
///
/// # Safety
/// GIL held (or the forked child, alone); `wrapper` is a live object.
unsafe fn lru_cache_maxsize(wrapper: *mut ffi::PyObject) -> Option<u64> {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        let dict = instance_dict(wrapper)?;
        let params = ffi::PyDict_GetItemString(dict, c"cache_parameters".as_ptr());
        if params.is_null() || ffi::PyFunction_Check(params) == 0 {
            return None;
        }
        let closure = ffi::PyFunction_GetClosure(params);
        let code = ffi::PyFunction_GetCode(params) as *mut ffi::PyCodeObject;
        if closure.is_null() || ffi::PyTuple_Check(closure) == 0 {
            return None;
        }
        for j in 0..ffi::PyTuple_GET_SIZE(closure) {
            if str_of(ht_code_freevar(code, j)).as_deref() != Some("maxsize") {
                continue;
            }
            let cell = ffi::PyTuple_GET_ITEM(closure, j);
            let value = if ffi::PyCell_Check(cell) != 0 { ht_cell_get(cell) } else { std::ptr::null_mut() };
            if value.is_null() || ffi::PyLong_Check(value) == 0 {
                return None; // None: unbounded
            }
            let n = ffi::PyLong_AsLongLong(value);
            if n == -1 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            return Some(n.max(0) as u64); // functools treats a negative maxsize as 0
        }
        None
    }
}

/// An instance's `__dict__` (materialised from its inline values if need be: the child may
/// allocate), if it has one.
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn instance_dict(o: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        let tp = ffi::Py_TYPE(o);
        if ffi::PyType_Check(o) != 0 || ffi::PyModule_Check(o) != 0 {
            return None;
        }
        let managed = (*tp).tp_flags & (1 << 4) != 0; // Py_TPFLAGS_MANAGED_DICT (3.11+)
        if (*tp).tp_dictoffset == 0 && !managed {
            return None;
        }
        let d = ffi::PyObject_GenericGetDict(o, std::ptr::null_mut());
        if d.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        ffi::Py_DECREF(d); // the object keeps it
        Some(d)
    }
}

/// The name of the `__slots__` member of `o` that holds `c`.
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn slot_name(o: *mut ffi::PyObject, c: *mut ffi::PyObject) -> Option<String> {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        let mro = (*ffi::Py_TYPE(o)).tp_mro;
        if mro.is_null() || ffi::PyTuple_Check(mro) == 0 {
            return None;
        }
        for j in 0..ffi::PyTuple_GET_SIZE(mro) {
            let tp = ffi::PyTuple_GET_ITEM(mro, j) as *mut ffi::PyTypeObject;
            let mut m = (*tp).tp_members;
            if m.is_null() {
                continue;
            }
            while !(*m).name.is_null() {
                // T_OBJECT (6) and T_OBJECT_EX (16) members hold an object pointer.
                if ((*m).type_code == 6 || (*m).type_code == 16) && (*m).offset > 0 {
                    let slot = (o as *mut u8).offset((*m).offset) as *mut *mut ffi::PyObject;
                    if *slot == c {
                        return Some(
                            std::ffi::CStr::from_ptr((*m).name)
                                .to_string_lossy()
                                .into_owned(),
                        );
                    }
                }
                m = m.add(1);
            }
        }
        None
    }
}

/// `module.qualname` of a type.
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn type_name(tp: *mut ffi::PyTypeObject) -> String {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        let qualname = ht_heap_type_qualname(tp);
        if !qualname.is_null() {
            let module = if (*tp).tp_dict.is_null() {
                None
            } else {
                str_of(ffi::PyDict_GetItemString(
                    (*tp).tp_dict,
                    c"__module__".as_ptr(),
                ))
            };
            let q = str_of(qualname).unwrap_or_default();
            return match module {
                Some(m) => format!("{m}.{q}"),
                None => q,
            };
        }
        let name = std::ffi::CStr::from_ptr((*tp).tp_name).to_string_lossy();
        if name.contains('.') {
            name.into_owned()
        } else {
            format!("builtins.{name}")
        }
    }
}

/// A `str` as a Rust string (no Python code runs: exact or subclass, read as UTF-8).
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn str_of(o: *mut ffi::PyObject) -> Option<String> {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        if o.is_null() || ffi::PyUnicode_Check(o) == 0 {
            return None;
        }
        let mut size: ffi::Py_ssize_t = 0;
        let p = ffi::PyUnicode_AsUTF8AndSize(o, &mut size);
        if p.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let bytes = std::slice::from_raw_parts(p as *const u8, size as usize);
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// A short repr of a dict key: str, int, bytes and tuples of those; else `<module.Type>`.
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn key_repr(k: *mut ffi::PyObject) -> String {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        fn cut(s: String) -> String {
            if s.chars().count() > 80 {
                s.chars().take(77).collect::<String>() + "..."
            } else {
                s
            }
        }
        if ffi::PyUnicode_CheckExact(k) != 0 {
            return cut(format!("{:?}", str_of(k).unwrap_or_default()).replace('"', "'"));
        }
        if ffi::PyLong_CheckExact(k) != 0 {
            let mut overflow = 0;
            let v = ffi::PyLong_AsLongLongAndOverflow(k, &mut overflow);
            if overflow == 0 && (v != -1 || ffi::PyErr_Occurred().is_null()) {
                return v.to_string();
            }
            ffi::PyErr_Clear();
            return "<big int>".into();
        }
        if ffi::PyBytes_CheckExact(k) != 0 {
            let p = ffi::PyBytes_AsString(k) as *const u8;
            let n = ffi::PyBytes_Size(k) as usize;
            let s = String::from_utf8_lossy(std::slice::from_raw_parts(p, n.min(80)));
            return cut(format!("b{:?}", s).replace('"', "'"));
        }
        if ffi::PyTuple_CheckExact(k) != 0 && ffi::PyTuple_GET_SIZE(k) <= 8 {
            let parts: Vec<String> = (0..ffi::PyTuple_GET_SIZE(k))
                .map(|j| key_repr(ffi::PyTuple_GET_ITEM(k, j)))
                .collect();
            return cut(if parts.len() == 1 {
                format!("({},)", parts[0])
            } else {
                format!("({})", parts.join(", "))
            });
        }
        format!("<{}>", type_name(ffi::Py_TYPE(k)))
    }
}

/// `len()` of a dict, list, set, tuple or deque holder, read without calling `__len__`.
/// Up to `max` objects `o` references (its type excluded), by its `tp_traverse`.
///
/// # Safety
/// GIL held; `o` is a live object.
unsafe fn direct_children(o: *mut ffi::PyObject, max: usize) -> Vec<*mut ffi::PyObject> {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        struct Collect {
            seen: Vec<*mut ffi::PyObject>,
            max: usize,
        }
        extern "C" fn collect(child: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
            // SAFETY: `arg` is the `Collect` below.
            let c = unsafe { &mut *(arg as *mut Collect) };
            if !child.is_null() && c.seen.len() < c.max {
                c.seen.push(child);
            }
            0
        }
        let mut c = Collect { seen: Vec::new(), max };
        if ffi::PyObject_IS_GC(o) != 0 {
            if let Some(traverse) = (*ffi::Py_TYPE(o)).tp_traverse {
                // Calling a type's tp_traverse with a visitor that only reads is what the garbage
                // collector itself does.
                traverse(o, collect, &mut c as *mut Collect as *mut c_void);
            }
        }
        let tp = ffi::Py_TYPE(o) as *mut ffi::PyObject;
        c.seen.retain(|&x| x != tp);
        c.seen
    }
}

/// Where the holder's direct children were allocated: `[[filename, lineno, count], ...]`, top 3
/// over a sample of up to 200 children — the line that created what was put into the holder.
/// A dict's values, its keys when none of the values is traced (a counter's small ints); a
/// list's, tuple's, set's or deque's items. Other holders have none.
///
/// # Safety
/// In the analysing child, GIL held (as every read of the walk); `ho` is a live object.
unsafe fn element_sites(py: Python<'_>, ho: *mut ffi::PyObject, rules: &SiteRules) -> Value {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        const MAX: usize = 200;
        let mut values = Vec::new();
        let mut keys = Vec::new();
        if ffi::PyDict_Check(ho) != 0 {
            let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
            while values.len() < MAX && ffi::PyDict_Next(ho, &mut pos, &mut k, &mut v) != 0 {
                values.push(v);
                keys.push(k);
            }
        } else if ffi::PyList_Check(ho) != 0
            || ffi::PyTuple_Check(ho) != 0
            || ffi::PyAnySet_Check(ho) != 0
            || type_name(ffi::Py_TYPE(ho)) == "collections.deque"
        {
            values = direct_children(ho, MAX);
        }
        // Other holders (an instance, a threading.local, a function) reference their own
        // bookkeeping, not what the code put into them: no element sites.
        let count = |objs: &[*mut ffi::PyObject]| {
            let mut sites: FxHashMap<(String, u32), u64> = FxHashMap::default();
            for &o in objs {
                let Some(tb) = tracer::block_traceback(py, object_block_address(o)) else {
                    continue;
                };
                let site = tb.iter().find(|(f, _)| rules.is_user_file(f)).or(tb.first());
                if let Some((f, l)) = site {
                    *sites.entry((f.to_string(), *l)).or_default() += 1;
                }
            }
            sites
        };
        let mut sites = count(&values);
        if sites.is_empty() {
            sites = count(&keys);
        }
        let mut sites: Vec<_> = sites.into_iter().collect();
        sites.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        sites.truncate(3);
        Value::Array(sites.into_iter().map(|((f, l), c)| json!([f, l, c])).collect())
    }
}

/// A container whose size is capped by construction: a `collections.deque` with a `maxlen`.
/// Reads the `maxlen` getset of the exact C type only (no user code runs).
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn is_bounded_container(o: *mut ffi::PyObject) -> bool {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        if o.is_null() || !type_is(o, b"collections.deque") {
            return false;
        }
        let maxlen = ffi::PyObject_GetAttrString(o, c"maxlen".as_ptr());
        if maxlen.is_null() {
            ffi::PyErr_Clear();
            return false;
        }
        let bounded = maxlen != ffi::Py_None();
        ffi::Py_DECREF(maxlen);
        bounded
    }
}

/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn holder_len(o: *mut ffi::PyObject) -> Value {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        if ffi::PyDict_Check(o) != 0 {
            json!(ffi::PyDict_Size(o))
        } else if ffi::PyList_Check(o) != 0 {
            json!(ffi::PyList_GET_SIZE(o))
        } else if ffi::PyAnySet_Check(o) != 0 {
            json!(ffi::PySet_Size(o))
        } else if ffi::PyTuple_Check(o) != 0 {
            json!(ffi::PyTuple_GET_SIZE(o))
        } else if type_is(o, b"collections.deque") {
            json!(ffi::Py_SIZE(o))
        } else {
            Value::Null
        }
    }
}

/// Types of up to 200 direct children of the holder; for a dict, of its values and of its
/// keys.
///
/// # Safety
/// In the analysing child, by its only thread, which holds the GIL (nothing else runs):
/// every object pointer passed in (and every node of the walk) is a live object.
unsafe fn children_types(o: *mut ffi::PyObject) -> (Value, Value) {
    // SAFETY: this function's `# Safety` contract is what every unsafe operation
    // below relies on.
    unsafe {
        const MAX: usize = 200;
        let mut elements: FxHashMap<String, u64> = FxHashMap::default();
        let bump = |m: &mut FxHashMap<String, u64>, x: *mut ffi::PyObject| {
            *m.entry(type_name(ffi::Py_TYPE(x))).or_default() += 1;
        };
        let to_json = |m: FxHashMap<String, u64>| {
            let mut v: Vec<_> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            Value::Object(
                v.into_iter()
                    .map(|(k, c)| (k, json!(c)))
                    .collect::<Map<_, _>>(),
            )
        };
        if ffi::PyDict_Check(o) != 0 {
            let mut keys: FxHashMap<String, u64> = FxHashMap::default();
            let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
            let mut n = 0;
            while n < MAX && ffi::PyDict_Next(o, &mut pos, &mut k, &mut v) != 0 {
                bump(&mut elements, v);
                bump(&mut keys, k);
                n += 1;
            }
            return (to_json(elements), to_json(keys));
        }
        for x in direct_children(o, MAX) {
            bump(&mut elements, x);
        }
        (to_json(elements), Value::Null)
    }
}
