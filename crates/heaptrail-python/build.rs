//! Compiles the C shims (`csrc/cpython_frames.c`: frame capture, 3.13's reference tracer;
//! `csrc/free_list_bypass.c`: 3.11/3.12's free lists; `csrc/sampled_fast_path.c`: sampled
//! mode's allocator fast path; `csrc/parked_blocks.c`: 3.13's free lists;
//! `csrc/closed_free_lists.c`: free lists closed while tracing; `csrc/free_lists.h`: which
//! of those a build uses;
//! `csrc/cpython_internals.c`: container storage for the holder analysis) against the headers
//! of the interpreter this extension is built for: they read that exact version's private
//! struct layouts.
//!
//! The shims are the only place that tells CPython versions apart: they export the same
//! functions on every version (no-ops or constant answers where a version lacks the thing),
//! and the Rust code has no version cfgs (PyO3's `Py_3_*` cfgs are deliberately not enabled
//! for this crate, so a `#[cfg(Py_3_13)]` there would be an unknown cfg, a warning).

use std::process::Command;

fn main() {
    let config = pyo3_build_config::get();
    let python = config
        .executable()
        .map(str::to_string)
        .or_else(|| std::env::var("PYO3_PYTHON").ok())
        .unwrap_or_else(|| "python3".to_string());
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('include'))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} to find CPython's headers: {e}"));
    assert!(
        out.status.success(),
        "{python} could not report its include directory"
    );
    let include = String::from_utf8(out.stdout).expect("include path is UTF-8");
    let include = include.trim();
    cc::Build::new()
        .file("csrc/cpython_frames.c")
        .file("csrc/free_list_bypass.c")
        .file("csrc/sampled_fast_path.c")
        .file("csrc/parked_blocks.c")
        .file("csrc/closed_free_lists.c")
        .include(include)
        .opt_level(3)
        .warnings(true)
        .compile("heaptrail_cpython_frames");
    // Private structures read by the holder analysis (src/python_api/holders.rs), in the
    // forked child.
    cc::Build::new()
        .file("csrc/cpython_internals.c")
        .include(include)
        .opt_level(2)
        .warnings(true)
        .compile("heaptrail_cpython_internals");
    println!("cargo:rerun-if-changed=csrc/cpython_frames.c");
    println!("cargo:rerun-if-changed=csrc/free_list_bypass.c");
    println!("cargo:rerun-if-changed=csrc/sampled_fast_path.c");
    println!("cargo:rerun-if-changed=csrc/sampled_fast_path.h");
    println!("cargo:rerun-if-changed=csrc/parked_blocks.c");
    println!("cargo:rerun-if-changed=csrc/closed_free_lists.c");
    println!("cargo:rerun-if-changed=csrc/free_lists.h");
    println!("cargo:rerun-if-changed=csrc/cpython_internals.c");
    println!("cargo:rerun-if-changed=csrc/cpython_frame_access.h");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
