//! One leak entry per holder: the growing sites that feed one container, grouped, with the
//! line a user would name first.
//!
//! Rules (see docs/verdicts.md for the reasoning):
//! 1. Each growing site's analysis names its holder; sites whose holders have the same path
//!    form one entry. A site without a holder (unreachable from any root the analysis knows,
//!    or the analysis failed) is an entry of its own, holder unknown.
//! 2. A site whose reached blocks are mostly the internal storage of objects created at
//!    another line (a dict's key table, a list's item array) is never the entry's line: it is
//!    listed with role `internal`. When an entry has only such sites, its line is where the
//!    owning objects were created (the analysis's top owner site).
//! 3. The entry's line is its first site in the order: role `element` (the objects put into
//!    the holder), then `content` (deeper inside them), then `key` (a dict holder's keys: the
//!    index of what is stored), then `storage` (the holder's own table), then `internal`;
//!    bigger first within a role.
//! 4. A site whose reached objects are mostly stored directly inside the objects of another
//!    growing site (the ids and names kept in the dicts another line creates) is part of that
//!    site's entry, listed after its own sites, whatever holder its own analysis named: the
//!    "deepest container above half of the blocks" can differ between the two lines (one
//!    thread's list holds just over half of the dicts but not of the ints once a few requests
//!    in flight hold ints too), and one leak must not be reported twice.

use super::analysis::{Edge, HolderAnalysis, Role};
use super::holder_text::holder_text;
use super::pattern::{classify, ElementKinds, LeakPattern};
use crate::sites::site_key;
use serde::Serialize;

/// A site the trend detector calls a leak, with what the heap analysis found for it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub key: u64,
    pub filename: String,
    pub lineno: u32,
    pub size: u64,
    pub count: u64,
    pub bytes_per_second: f64,
    pub analysis: HolderAnalysis,
    pub kinds: ElementKinds,
}

/// How a site relates to its entry's holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteRole {
    Element,
    Content,
    Storage,
    /// A dict holder's keys (or inside them).
    Key,
    /// Internal storage of objects created at another line.
    Internal,
    /// No holder was found.
    Unknown,
}

impl SiteRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteRole::Element => "element",
            SiteRole::Content => "content",
            SiteRole::Storage => "storage",
            SiteRole::Key => "key",
            SiteRole::Internal => "internal",
            SiteRole::Unknown => "unknown",
        }
    }

    fn rank(self) -> u8 {
        match self {
            SiteRole::Element | SiteRole::Unknown => 0,
            SiteRole::Content => 1,
            SiteRole::Key => 2,
            SiteRole::Storage => 3,
            SiteRole::Internal => 4,
        }
    }
}

/// One site listed under an entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntrySite {
    #[serde(skip)]
    pub key: u64,
    pub filename: String,
    pub lineno: u32,
    pub role: SiteRole,
    pub size: u64,
    pub count: u64,
    pub bytes_per_second: f64,
}

/// One leak: a holder and the sites that feed it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeakEntry {
    /// Key of the entry's line (a site key; the owner's site when every site is internal).
    #[serde(skip)]
    pub key: u64,
    pub filename: String,
    pub lineno: u32,
    /// The holder's path as text, when a holder was found.
    pub holder: Option<String>,
    pub holder_type: Option<String>,
    pub path: Vec<Edge>,
    pub pattern: LeakPattern,
    pub size: u64,
    pub count: u64,
    pub bytes_per_second: f64,
    /// The entry's line first.
    pub sites: Vec<EntrySite>,
    /// Why no holder is named, when none is.
    pub note: Option<String>,
}

/// Which entry a candidate site went to, and whether it is that entry's line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteAssignment {
    pub key: u64,
    pub entry: usize,
    pub primary: bool,
}

fn role_of(c: &Candidate) -> SiteRole {
    if c.analysis.is_mostly_internal() {
        return SiteRole::Internal;
    }
    match c.analysis.holder.as_ref().map(|h| h.role) {
        Some(Role::Element) => SiteRole::Element,
        Some(Role::Content) => SiteRole::Content,
        Some(Role::Storage) => SiteRole::Storage,
        Some(Role::Key) => SiteRole::Key,
        None => SiteRole::Unknown,
    }
}

fn no_holder_note(a: &HolderAnalysis) -> String {
    if let Some(error) = &a.error {
        return format!("holder not found: {error}");
    }
    if a.blocks == 0 {
        return "holder not found: the line's blocks were freed before the analysis".into();
    }
    if a.reached == 0 {
        return "holder not found: no live block of the line is reachable from a module, a \
                thread's stack or gc.garbage (held by C-level state?)"
            .into();
    }
    "holder not found: the blocks are spread over many containers".into()
}

/// Entries whose line is the same (an internal-storage site whose owners' line is another
/// entry's line, reached under a differently written path) are one leak: the one whose line
/// is a site of its own (not only an owners' line) keeps its holder, the other's sites join it.
fn merge_same_line(entries: Vec<(LeakEntry, Vec<usize>)>) -> Vec<(LeakEntry, Vec<usize>)> {
    let mut out: Vec<(LeakEntry, Vec<usize>)> = Vec::new();
    for (entry, members) in entries {
        match out.iter_mut().find(|(e, _)| e.key == entry.key) {
            None => out.push((entry, members)),
            Some((kept, kept_members)) => {
                let entry_owns_line = entry.sites.first().is_some_and(|s| s.key == entry.key);
                let kept_owns_line = kept.sites.first().is_some_and(|s| s.key == kept.key);
                let (mut base, mut base_members, other, other_members) =
                    if entry_owns_line && !kept_owns_line {
                        (entry, members, kept.clone(), kept_members.clone())
                    } else {
                        (kept.clone(), kept_members.clone(), entry, members)
                    };
                for (site, m) in other.sites.into_iter().zip(other_members) {
                    if !base.sites.iter().any(|s| s.key == site.key) {
                        base.size += site.size;
                        base.count += site.count;
                        base.bytes_per_second += site.bytes_per_second;
                        base.sites.push(site);
                        base_members.push(m);
                    }
                }
                *kept = base;
                *kept_members = base_members;
            }
        }
    }
    out
}

/// For each candidate, the candidate it is stored inside (rule 4), followed to the outermost
/// one: `None` for a site that stands on its own (or is part of a cycle of such links).
fn containers(candidates: &[Candidate]) -> Vec<Option<usize>> {
    let direct: Vec<Option<usize>> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (f, l) = c.analysis.mostly_inside()?;
            let key = site_key(f, l);
            candidates.iter().position(|o| o.key == key).filter(|&j| j != i)
        })
        .collect();
    (0..candidates.len())
        .map(|i| {
            let mut at = direct[i]?;
            for _ in 0..candidates.len() {
                match direct[at] {
                    Some(next) if next == i => return None,
                    Some(next) => at = next,
                    None => return Some(at),
                }
            }
            None // a cycle not through `i`: no outermost site
        })
        .collect()
}

/// Groups leak candidates by holder. Returns the entries (fastest growing first) and, for
/// each candidate, where it went.
pub fn group_leaks(candidates: &[Candidate]) -> (Vec<LeakEntry>, Vec<SiteAssignment>) {
    let container = containers(candidates);
    // Group keys in first-seen order; a site stored inside another's objects takes that
    // site's group.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for i in 0..candidates.len() {
        let c = &candidates[container[i].unwrap_or(i)];
        let text = c
            .analysis
            .holder
            .as_ref()
            .map(|h| holder_text(&h.path))
            .filter(|t| !t.is_empty());
        let group = text.unwrap_or_else(|| format!("\0site {}:{}", c.filename, c.lineno));
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, members)) => members.push(i),
            None => groups.push((group, vec![i])),
        }
    }
    let mut entries: Vec<(LeakEntry, Vec<usize>)> = Vec::new();
    for (group, mut members) in groups {
        members.sort_by(|&a, &b| {
            let (ca, cb) = (&candidates[a], &candidates[b]);
            container[a]
                .is_some()
                .cmp(&container[b].is_some())
                .then(role_of(ca).rank().cmp(&role_of(cb).rank()))
                .then(cb.size.cmp(&ca.size))
                .then(ca.key.cmp(&cb.key))
        });
        let sites: Vec<EntrySite> = members
            .iter()
            .map(|&i| {
                let c = &candidates[i];
                EntrySite {
                    key: c.key,
                    filename: c.filename.clone(),
                    lineno: c.lineno,
                    role: role_of(c),
                    size: c.size,
                    count: c.count,
                    bytes_per_second: c.bytes_per_second,
                }
            })
            .collect();
        let first = &candidates[members[0]];
        let holder = first.analysis.holder.as_ref();
        // No site of the entry is an element: its line is where the objects put into the
        // holder were created (the owners of internal storage; the holder's children for
        // content and keys), when the analysis saw that line.
        let elsewhere = match role_of(first) {
            SiteRole::Internal => first.analysis.owner_sites.first(),
            SiteRole::Content | SiteRole::Key => holder.and_then(|h| h.element_sites.first()),
            _ => None,
        };
        let (key, filename, lineno) = match elsewhere {
            Some((f, l, _)) => (site_key(f, *l), f.clone(), *l),
            None => (first.key, first.filename.clone(), first.lineno),
        };
        let entry = LeakEntry {
            key,
            filename,
            lineno,
            holder: holder.map(|_| group.clone()),
            holder_type: holder.map(|h| h.type_name.clone()),
            path: holder.map(|h| h.path.clone()).unwrap_or_default(),
            pattern: holder
                .map(|h| classify(h, &first.kinds))
                .unwrap_or(LeakPattern::Unknown),
            size: sites.iter().map(|s| s.size).sum(),
            count: sites.iter().map(|s| s.count).sum(),
            bytes_per_second: sites.iter().map(|s| s.bytes_per_second).sum(),
            sites,
            note: if holder.is_none() {
                Some(no_holder_note(&first.analysis))
            } else {
                None
            },
        };
        entries.push((entry, members));
    }
    let mut entries = merge_same_line(entries);
    entries.sort_by(|a, b| {
        b.0.bytes_per_second
            .total_cmp(&a.0.bytes_per_second)
            .then(a.0.key.cmp(&b.0.key))
    });
    let mut assignments = Vec::new();
    for (e, (entry, members)) in entries.iter().enumerate() {
        for (i, &m) in members.iter().enumerate() {
            // The entry's first site is its line unless the line is an owner site that is not
            // a candidate (then every candidate of the entry is internal storage).
            let primary = i == 0 && candidates[m].key == entry.key;
            assignments.push(SiteAssignment {
                key: candidates[m].key,
                entry: e,
                primary,
            });
        }
    }
    (entries.into_iter().map(|(e, _)| e).collect(), assignments)
}

#[cfg(test)]
mod tests {
    use super::super::analysis::Holder;
    use super::*;
    use std::collections::BTreeMap;

    fn edge(kind: &str, name: &str, type_name: &str) -> Edge {
        Edge {
            kind: kind.into(),
            name: name.into(),
            of: None,
            type_name: type_name.into(),
        }
    }

    fn cache_path() -> Vec<Edge> {
        vec![
            edge("module", "app", "builtins.module"),
            edge("attr", "CACHE", "builtins.dict"),
        ]
    }

    fn candidate(line: u32, size: u64, role: Option<Role>, internal: u64) -> Candidate {
        Candidate {
            key: site_key("app.py", line),
            filename: "app.py".into(),
            lineno: line,
            size,
            count: size / 100,
            bytes_per_second: size as f64 / 10.0,
            analysis: HolderAnalysis {
                filename: "app.py".into(),
                lineno: line,
                blocks: 100,
                reached: 100,
                internal,
                owner_sites: vec![("app.py".into(), 40, internal)],
                holder: role.map(|role| Holder {
                    type_name: "builtins.dict".into(),
                    len: Some(100),
                    share: 1.0,
                    role,
                    path: cache_path(),
                    element_types: BTreeMap::new(),
                    key_types: None,
                    element_sites: vec![("app.py".into(), 50, 10)],
                    bound: None,
                    siblings: None,
                }),
                ..Default::default()
            },
            kinds: ElementKinds::default(),
        }
    }

    #[test]
    fn one_entry_per_holder_elements_first() {
        let cands = [
            candidate(10, 9000, Some(Role::Storage), 0), // the cache's table: biggest
            candidate(11, 5000, Some(Role::Element), 0), // the values
            candidate(12, 7000, Some(Role::Content), 0),
            candidate(13, 800, Some(Role::Element), 0), // the keys
        ];
        let (entries, assigned) = group_leaks(&cands);
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!((e.lineno, e.holder.as_deref()), (11, Some("app.CACHE")));
        let lines: Vec<_> = e.sites.iter().map(|s| s.lineno).collect();
        assert_eq!(lines, [11, 13, 12, 10]);
        assert_eq!(e.pattern, LeakPattern::UnboundedCache);
        assert_eq!(e.size, 21800);
        let primaries: Vec<_> = assigned.iter().filter(|a| a.primary).map(|a| a.key).collect();
        assert_eq!(primaries, [site_key("app.py", 11)]);
    }

    #[test]
    fn content_alone_names_the_line_that_made_the_elements() {
        // Only the captured payload (content) grows enough to be a candidate yet: the entry's
        // line is where the holder's elements were created (line 50), not the payload's.
        let (entries, assigned) = group_leaks(&[candidate(12, 7000, Some(Role::Content), 0)]);
        assert_eq!(entries[0].lineno, 50);
        assert_eq!(entries[0].sites[0].lineno, 12);
        assert!(!assigned[0].primary);
        // Beside an element candidate, that candidate is the line.
        let (entries, _) = group_leaks(&[
            candidate(12, 7000, Some(Role::Content), 0),
            candidate(11, 100, Some(Role::Element), 0),
        ]);
        assert_eq!(entries[0].lineno, 11);
    }

    #[test]
    fn values_rank_before_bigger_keys() {
        let cands = [
            candidate(11, 500, Some(Role::Element), 0), // the values
            candidate(12, 9000, Some(Role::Key), 0),    // the keys, bigger
        ];
        let (entries, _) = group_leaks(&cands);
        let roles: Vec<_> = entries[0].sites.iter().map(|s| (s.lineno, s.role)).collect();
        assert_eq!(roles, [(11, SiteRole::Element), (12, SiteRole::Key)]);
    }

    #[test]
    fn internal_storage_is_never_the_line() {
        // A line whose blocks are other objects' key tables, alone: the entry goes to the
        // owners' line, and the candidate is not primary.
        let cands = [candidate(20, 9000, Some(Role::Element), 80)];
        let (entries, assigned) = group_leaks(&cands);
        assert_eq!((entries[0].filename.as_str(), entries[0].lineno), ("app.py", 40));
        assert_eq!(entries[0].sites[0].role, SiteRole::Internal);
        assert!(!assigned[0].primary);
        // Beside a real element site, the element site is the line.
        let cands = [
            candidate(20, 9000, Some(Role::Element), 80),
            candidate(21, 100, Some(Role::Element), 0),
        ];
        let (entries, _) = group_leaks(&cands);
        assert_eq!(entries[0].lineno, 21);
    }

    #[test]
    fn entries_for_one_line_are_merged() {
        // The owners' line of an internal-storage site (reached through another path) is the
        // line of a real entry: one leak, not two.
        let mut storage = candidate(20, 9000, Some(Role::Element), 80);
        storage.analysis.owner_sites = vec![("app.py".into(), 21, 80)];
        if let Some(h) = storage.analysis.holder.as_mut() {
            h.path.pop();
        }
        let line = candidate(21, 100, Some(Role::Element), 0);
        let (entries, assigned) = group_leaks(&[storage, line]);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].lineno, 21);
        assert_eq!(entries[0].holder.as_deref(), Some("app.CACHE"));
        assert_eq!(entries[0].sites.len(), 2);
        assert_eq!(assigned.iter().filter(|a| a.primary).count(), 1);
        assert!(assigned.iter().all(|a| a.entry == 0));
    }

    #[test]
    fn a_site_stored_in_another_sites_objects_joins_its_entry() {
        // Line 22's dicts are elements of one thread's list; line 49's ints are values in
        // those dicts, but more of them are live elsewhere, so their own holder is the
        // thread-local above the lists: still one leak, at line 22.
        let dicts = candidate(22, 9000, Some(Role::Element), 0);
        let mut ints = candidate(49, 2000, Some(Role::Content), 0);
        if let Some(h) = ints.analysis.holder.as_mut() {
            h.path.pop();
            h.element_sites.clear();
        }
        ints.analysis.inside = vec![("app.py".into(), 22, 60)];
        let (entries, assigned) = group_leaks(&[ints.clone(), dicts.clone()]);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].lineno, 22);
        assert_eq!(entries[0].holder.as_deref(), Some("app.CACHE"));
        let lines: Vec<_> = entries[0].sites.iter().map(|s| s.lineno).collect();
        assert_eq!(lines, [22, 49]);
        let primaries: Vec<_> = assigned.iter().filter(|a| a.primary).map(|a| a.key).collect();
        assert_eq!(primaries, [site_key("app.py", 22)]);
        // Inside less than half of its blocks: its own holder decides.
        ints.analysis.inside = vec![("app.py".into(), 22, 40)];
        let (entries, _) = group_leaks(&[ints.clone(), dicts.clone()]);
        assert_eq!(entries.len(), 2);
        // Two sites inside each other's objects: neither joins the other.
        let mut dicts_in_ints = dicts;
        dicts_in_ints.analysis.inside = vec![("app.py".into(), 49, 90)];
        ints.analysis.inside = vec![("app.py".into(), 22, 90)];
        let (entries, _) = group_leaks(&[ints, dicts_in_ints]);
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn no_holder_stands_alone_with_a_reason() {
        let mut c = candidate(30, 100, None, 0);
        c.analysis.reached = 0;
        let d = candidate(31, 100, Some(Role::Element), 0);
        let (entries, assigned) = group_leaks(&[c, d]);
        assert_eq!(entries.len(), 2);
        let lone = entries.iter().find(|e| e.lineno == 30).unwrap();
        assert!(lone.holder.is_none());
        assert!(lone.note.as_deref().unwrap().contains("reachable"));
        assert_eq!(lone.pattern, LeakPattern::Unknown);
        assert!(assigned.iter().all(|a| a.primary));
    }
}
