//! The engine: what runs inside the allocator hooks and keeps the live traces. Nothing here is
//! a Python class or function; `python_api` exposes it.

pub mod allocator_hooks;
pub mod block_headers;
pub mod closed_free_lists;
pub mod code_registry;
pub mod frames;
pub mod gil;
pub mod live_blocks;
pub mod sampler;
pub mod traceback_interner;
pub mod tracer;
