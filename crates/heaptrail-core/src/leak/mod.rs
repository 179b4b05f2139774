//! From "these sites grow" to "this holder leaks, here is the line and the fix".
//!
//! The trend detector (`crate::trend`) says which allocation sites grow. That is not yet a
//! verdict a person can act on: several sites usually feed one container (a cache's keys, its
//! values and its own table), and a site can grow only because its blocks are another
//! object's internal storage. The heap analysis (in the extension: a walk of a forked copy of
//! the process) reports, for each growing site, the container that holds its blocks and the
//! path to that container from a root ([`analysis`]). This module turns those analyses into
//! leak entries:
//! * [`entries`]: one entry per holder, its sites under it, the line a user would name first;
//!   a site whose blocks are mostly the internal storage of objects created elsewhere is never
//!   a leak on its own;
//! * [`holder_text`]: the holder's path written as a user writes it in code;
//! * [`pattern`]: the leak pattern (unbounded cache, listener never removed, ...) and its fix.

pub mod analysis;
pub mod entries;
pub mod holder_text;
pub mod json;
pub mod pattern;

pub use analysis::{Edge, Holder, HolderAnalysis, Role};
pub use entries::{group_leaks, Candidate, LeakEntry, SiteAssignment, SiteRole};
pub use holder_text::holder_text;
pub use pattern::{classify, ElementKinds, LeakPattern};

/// The report verdict of a growing site listed under a leak entry whose line is another site.
pub const PART_OF_LEAK: &str = "part-of-leak";
