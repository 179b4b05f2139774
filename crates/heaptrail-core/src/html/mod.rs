//! `heaptrail html`: one self-contained HTML page (nothing fetched from the network) that shows
//! a snapshot or a watcher report.
//!
//! * Snapshot: totals, a flame graph of live memory by call stack, the top lines.
//! * Watcher report (`heaptrail.watch/2` JSON Lines): per process run, a chart per leaking or
//!   suspect site of its size over time with its verdict, RSS against traced memory, the sites
//!   of the last window, and a flame graph of the last window's tracebacks.
//! * Fleet (several watcher reports, [`crate::fleet`]): each leak once with its process count,
//!   rates, holder and fix; the process verdicts; every process at its latest window.
//!
//! Files: [`page`] (document, style sheet, shared pieces), [`flame`] (inferno flame graph in a
//! sandboxed frame), [`chart`] (SVG line charts), [`report`] (JSON Lines reader),
//! [`snapshot_page`], [`report_page`] and [`fleet_page`](mod@fleet_page) (the pages), [`escape`], [`format`].
//!
//! Everything read from a file is escaped ([`escape`]); the page carries a content security
//! policy that forbids any fetch.

pub mod chart;
pub mod escape;
pub mod flame;
pub mod fleet_page;
pub mod format;
pub mod page;
pub mod report;
pub mod report_page;
pub mod snapshot_page;

pub use fleet_page::fleet_page;
pub use report::{read_report, Report, ReportError};
pub use report_page::report_page;
pub use snapshot_page::snapshot_page;

/// What the caller decides about a page.
#[derive(Clone, Copy, Debug)]
pub struct PageOptions<'a> {
    /// The page title (plain text).
    pub title: &'a str,
    /// The line under the title, e.g. `heaptrail snapshot app.heaptrail` (plain text).
    pub subtitle: &'a str,
    /// Rows of the sites tables.
    pub limit: usize,
}
