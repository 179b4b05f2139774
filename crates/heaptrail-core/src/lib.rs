//! heaptrail-core: everything heaptrail knows about snapshots, with no Python in sight.
//!
//! * [`model`] — interned filenames, frames, tracebacks and traces.
//! * [`atomic_file`] — files replaced whole or not at all (snapshots, exports, pages).
//! * [`fnmatch`] — filename patterns with the standard library's `fnmatch` semantics.
//! * [`filter`] — `Filter` / `DomainFilter` evaluation (`Snapshot.filter_traces`).
//! * [`group`] — `Snapshot.statistics` (group by traceback, line or file; cumulative or not).
//! * [`diff`] — `Snapshot.compare_to`.
//! * [`sampling`] — Poisson sampling by bytes: gaps, probabilities and the weight of a sample.
//! * [`sites`] — live memory per allocation site in the user's code (the watcher's unit).
//! * [`size_format`] — sizes written like the standard library (`"4.9 KiB"`).
//! * [`snapshot_file`] — the versioned, compact, hostile-input-safe snapshot file format.
//! * [`stacks`] — live memory per call stack, folded stacks (flame graphs, pprof).
//! * [`export`] — pprof heap profiles, folded stacks and versioned JSON for other tools.
//! * [`html`] — the self-contained HTML page of a snapshot, a watcher report or a fleet.
//! * [`watch_report`] — the watcher's JSON Lines window (`heaptrail.watch/2`).
//! * [`fleet`] — many processes' watch reports summed up, each leak once.
//! * [`trend`] — the trend detector: per-site verdicts from live memory over windows.
//! * [`leak`] — leak entries: holder analysis types, grouping by holder, patterns and fixes.
//!
//! No `unsafe` here: everything that touches CPython lives in the extension crate.

#![forbid(unsafe_code)]

pub mod atomic_file;
pub mod diff;
pub mod export;
pub mod filter;
pub mod fleet;
pub mod fnmatch;
pub mod group;
pub mod html;
pub mod leak;
pub mod model;
pub mod sampling;
pub mod sites;
pub mod size_format;
pub mod snapshot_file;
pub mod stacks;
pub mod trend;
pub mod watch_report;

#[cfg(test)]
mod test_fixtures;

pub use model::{Filename, Frame, Snapshot, SnapshotBuilder, Trace, Traceback};
