//! Allocation *sites* a user can act on.
//!
//! Grouping by the innermost frame blames `logging/__init__.py` or `functools.py` for memory a
//! user's line asked them to keep. A site is therefore the innermost frame that belongs to the
//! user's code: frames whose file matches a *library* pattern (the standard library,
//! site-packages, heaptrail itself — the caller decides) are skipped, and user patterns can
//! force files in or out. When no frame qualifies, the innermost frame is the site.

use crate::fnmatch::{normalize_filename, Pattern};
use crate::export::source_scopes::SourceScopes;
use crate::model::{Filename, FrameId, Snapshot, TracebackId};
use rustc_hash::FxHashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Which files count as "not the user's code".
#[derive(Default)]
pub struct SiteRules {
    /// Files that are never sites (unless `include` says otherwise): library code.
    pub library: Vec<Pattern>,
    /// Files that are always user code, even when a library pattern matches them.
    pub include: Vec<Pattern>,
    /// Files that are never sites, on top of `library`.
    pub exclude: Vec<Pattern>,
}

impl SiteRules {
    /// Rules from fnmatch patterns as the watcher computes them (filenames are normalised the
    /// same way as the names they are matched against).
    pub fn from_patterns<S: AsRef<str>>(library: &[S], include: &[S], exclude: &[S]) -> Self {
        let compile = |v: &[S]| {
            v.iter()
                .map(|p| Pattern::new(&normalize_filename(p.as_ref())))
                .collect()
        };
        SiteRules {
            library: compile(library),
            include: compile(include),
            exclude: compile(exclude),
        }
    }

    /// Whether no file can be anything but user code under these rules.
    pub fn is_empty(&self) -> bool {
        self.library.is_empty() && self.exclude.is_empty()
    }

    /// Whether `filename` is the user's code: the one definition, used both for the sites of
    /// snapshots and by the tracer, which looks beyond the frame limit for a user frame.
    pub fn is_user_file(&self, filename: &str) -> bool {
        let name = normalize_filename(filename);
        if self.include.iter().any(|p| p.matches(&name)) {
            return true;
        }
        !(self.library.iter().any(|p| p.matches(&name))
            || self.exclude.iter().any(|p| p.matches(&name)))
    }
}

/// Live memory attributed to one site.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// Stable identity of the site across snapshots: a hash of its filename and line.
    pub key: u64,
    pub filename: Filename,
    pub lineno: u32,
    pub size: u64,
    pub count: u64,
    /// The traceback holding the most memory at this site (shown beside it).
    pub traceback: TracebackId,
    /// The function that runs the site's line in that traceback: its code object's
    /// `co_qualname` as the snapshot recorded it (None when the snapshot has no name for it;
    /// see [`name_sites_from_source`]).
    pub function: Option<Arc<str>>,
}

/// The stable key of a site (same filename and line in any snapshot -> same key).
pub fn site_key(filename: &str, lineno: u32) -> u64 {
    // FxHasher is deterministic across runs and processes, unlike std's RandomState.
    let mut h = rustc_hash::FxHasher::default();
    filename.hash(&mut h);
    lineno.hash(&mut h);
    h.finish()
}

/// The site of each traceback of one snapshot: its innermost user frame, else its innermost
/// frame, else `<unknown>:0` (the one rule every view of sites follows).
pub struct SiteFinder<'a> {
    snapshot: &'a Snapshot,
    rules: &'a SiteRules,
    /// Per file: whether it is user code (few files, many frames).
    user_file: Vec<Option<bool>>,
}

impl<'a> SiteFinder<'a> {
    pub fn new(snapshot: &'a Snapshot, rules: &'a SiteRules) -> Self {
        SiteFinder {
            snapshot,
            rules,
            user_file: vec![None; snapshot.filenames.len()],
        }
    }

    fn is_user(&mut self, frame: FrameId) -> bool {
        let fid = self.snapshot.frames[frame as usize].filename as usize;
        let (rules, snapshot) = (self.rules, self.snapshot);
        *self.user_file[fid].get_or_insert_with(|| rules.is_user_file(&snapshot.filenames[fid]))
    }

    /// The position in traceback `tb`'s frames of its site's frame (None: no frames).
    fn site_index(&mut self, tb: TracebackId) -> Option<usize> {
        let frames = &self.snapshot.tracebacks[tb as usize].frames;
        frames
            .iter()
            .position(|&f| self.is_user(f))
            .or((!frames.is_empty()).then_some(0))
    }

    /// The site (filename, line) of traceback `tb`.
    pub fn site(&mut self, tb: TracebackId) -> (Filename, u32) {
        let snapshot = self.snapshot;
        match self.site_index(tb) {
            Some(i) => {
                let f = snapshot.tracebacks[tb as usize].frames[i];
                (snapshot.filename(f).clone(), snapshot.frame(f).lineno)
            }
            None => (Filename::from("<unknown>"), 0),
        }
    }

    /// The recorded function (`co_qualname`) that runs the site's line of traceback `tb`.
    pub fn site_function(&mut self, tb: TracebackId) -> Option<Arc<str>> {
        let snapshot = self.snapshot;
        let i = self.site_index(tb)?;
        let sf = snapshot.stack(tb).nth(i)?;
        snapshot.function(sf.function).map(|f| f.qualname.clone())
    }
}

/// Live memory per site, biggest first.
pub fn site_statistics(snapshot: &Snapshot, rules: &SiteRules) -> Vec<Site> {
    // (size, count) per traceback first: a million traces, a few thousand tracebacks.
    site_statistics_from_totals(snapshot, &snapshot.per_traceback(), rules)
}

/// Live memory per site, biggest first, from `(bytes, blocks)` per traceback of `snapshot`
/// (its traces are not read): what a tracer that keeps live totals per traceback gives.
pub fn site_statistics_from_totals(
    snapshot: &Snapshot,
    per_tb: &[(u64, u64)],
    rules: &SiteRules,
) -> Vec<Site> {
    let mut site_of = SiteFinder::new(snapshot, rules);
    // Sites keyed by their frame's text, so duplicated frame ids cannot split a site.
    struct Acc {
        size: u64,
        count: u64,
        best: (u64, TracebackId),
    }
    let mut sites: FxHashMap<(Filename, u32), Acc> = FxHashMap::default();
    for (tb_id, &(size, count)) in per_tb.iter().enumerate().take(snapshot.tracebacks.len()) {
        if count == 0 {
            continue;
        }
        let (filename, lineno) = site_of.site(tb_id as TracebackId);
        let acc = sites.entry((filename, lineno)).or_insert(Acc {
            size: 0,
            count: 0,
            best: (0, tb_id as u32),
        });
        acc.size += size;
        acc.count += count;
        if size > acc.best.0 {
            acc.best = (size, tb_id as TracebackId);
        }
    }
    let mut out: Vec<Site> = sites
        .into_iter()
        .map(|((filename, lineno), acc)| Site {
            key: site_key(&filename, lineno),
            function: site_of.site_function(acc.best.1),
            filename,
            lineno,
            size: acc.size,
            count: acc.count,
            traceback: acc.best.1,
        })
        .collect();
    out.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then(b.count.cmp(&a.count))
            .then_with(|| a.filename.cmp(&b.filename))
            .then(a.lineno.cmp(&b.lineno))
    });
    out
}

/// Names the function of each site the snapshot recorded none for (snapshots without names,
/// frames heaptrail could not attribute) from its source file, read as text
/// ([`SourceScopes`]), the way exports fall back. Sites that have a recorded name are left
/// alone and their files are not read; each other file is read at most once.
pub fn name_sites_from_source(sites: &mut [Site]) {
    let mut files: FxHashMap<Filename, Option<SourceScopes>> = FxHashMap::default();
    for site in sites.iter_mut().filter(|s| s.function.is_none() && s.lineno > 0) {
        let scopes = files
            .entry(site.filename.clone())
            .or_insert_with(|| SourceScopes::read(&site.filename));
        site.function = scopes
            .as_ref()
            .and_then(|s| s.scope_of(site.lineno))
            .map(|(_, scope)| Arc::from(scope.qualname.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SnapshotBuilder;

    fn snapshot(traces: &[(&[(&str, u32)], u64)]) -> Snapshot {
        let mut b = SnapshotBuilder::new(10);
        for (frames, size) in traces {
            let ids: Vec<_> = frames
                .iter()
                .map(|(f, l)| {
                    let fid = b.intern_filename(f);
                    b.intern_frame(fid, *l)
                })
                .collect();
            let tb = b.intern_traceback(&ids, ids.len() as u32);
            b.push_trace(0, *size, tb);
        }
        b.finish()
    }

    fn rules() -> SiteRules {
        SiteRules {
            library: vec![
                Pattern::new("/usr/lib/python3*"),
                Pattern::new("*/site-packages/*"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn totals_per_traceback_give_the_same_sites_as_traces() {
        let s = snapshot(&[
            (&[("/srv/app/a.py", 1), ("/usr/lib/python3.12/x.py", 2)], 10),
            (&[("/usr/lib/python3.12/x.py", 2), ("/srv/app/b.py", 3)], 20),
            (&[("/srv/app/a.py", 1), ("/usr/lib/python3.12/x.py", 2)], 15),
        ]);
        let mut per_tb = vec![(0, 0); s.tracebacks.len()];
        for t in &s.traces {
            per_tb[t.traceback as usize].0 += t.size;
            per_tb[t.traceback as usize].1 += 1;
        }
        let row = |x: &Site| (x.key, x.size, x.count, x.traceback);
        let from_traces: Vec<_> = site_statistics(&s, &rules()).iter().map(row).collect();
        let from_totals: Vec<_> = site_statistics_from_totals(&s, &per_tb, &rules())
            .iter()
            .map(row)
            .collect();
        assert_eq!(from_traces, from_totals);
        assert_eq!(from_totals[0].1, 25);
    }

    #[test]
    fn library_frames_are_skipped_to_the_callers_line() {
        let s = snapshot(&[
            (
                &[
                    ("/usr/lib/python3.12/logging/__init__.py", 1400),
                    ("/srv/app/views.py", 42),
                ],
                100,
            ),
            (
                &[
                    ("/usr/lib/python3.12/logging/__init__.py", 1400),
                    ("/srv/app/jobs.py", 7),
                ],
                30,
            ),
            (&[("/srv/app/views.py", 42)], 5),
        ]);
        let sites = site_statistics(&s, &rules());
        assert_eq!(sites.len(), 2);
        assert_eq!(
            (
                &*sites[0].filename,
                sites[0].lineno,
                sites[0].size,
                sites[0].count
            ),
            ("/srv/app/views.py", 42, 105, 2)
        );
        assert_eq!(
            (&*sites[1].filename, sites[1].lineno),
            ("/srv/app/jobs.py", 7)
        );
        // The representative traceback is the biggest one: through logging.
        assert_eq!(s.tracebacks[sites[0].traceback as usize].frames.len(), 2);
        assert_eq!(sites[0].key, site_key("/srv/app/views.py", 42));
    }

    #[test]
    fn all_library_frames_fall_back_to_the_innermost() {
        let s = snapshot(&[(
            &[
                ("/x/site-packages/lib.py", 3),
                ("/x/site-packages/other.py", 9),
            ],
            10,
        )]);
        let sites = site_statistics(&s, &rules());
        assert_eq!(
            (&*sites[0].filename, sites[0].lineno),
            ("/x/site-packages/lib.py", 3)
        );
    }

    #[test]
    fn rules_from_patterns_treat_generated_code_as_library() {
        let r = SiteRules::from_patterns(&["/usr/lib/python3*", "<*>"], &["*/mine.py"], &[]);
        for generated in [
            "<string>",
            "<template>",
            "<attrs generated init m.C>",
            "<frozen os>",
        ] {
            assert!(!r.is_user_file(generated), "{generated}");
        }
        assert!(r.is_user_file("/srv/app/views.py"));
        assert!(!r.is_user_file("/usr/lib/python3.12/json/decoder.py"));
        assert!(r.is_user_file("/usr/lib/python3.12/mine.py")); // include wins
        assert!(SiteRules::from_patterns::<&str>(&[], &["*"], &[]).is_empty());
    }

    #[test]
    fn include_and_exclude_patterns_win() {
        let s = snapshot(&[(
            &[
                ("/x/site-packages/mylib/core.py", 3),
                ("/srv/app/main.py", 9),
            ],
            10,
        )]);
        let mut r = rules();
        r.include.push(Pattern::new("*/mylib/*"));
        assert_eq!(site_statistics(&s, &r)[0].lineno, 3);
        let mut r = rules();
        r.exclude.push(Pattern::new("/srv/app/main.py"));
        assert_eq!(site_statistics(&s, &r)[0].lineno, 3); // nothing qualifies: innermost
    }

    #[test]
    fn a_site_names_the_function_recorded_for_its_frame() {
        let mut b = SnapshotBuilder::new(10);
        let lib = b.intern_filename("/usr/lib/python3.12/functools.py");
        let app = b.intern_filename("/srv/app/cache.py");
        let lib_frame = b.intern_frame(lib, 500);
        let app_frame = b.intern_frame(app, 42);
        let wrapper = b.intern_function(&Arc::from("_lru_cache_wrapper"), 480);
        let remember = b.intern_function(&Arc::from("Cache.remember"), 40);
        let tb = b.intern_traceback_with_functions(&[lib_frame, app_frame], &[wrapper, remember], 2);
        b.push_trace(0, 100, tb);
        let other_line = b.intern_frame(app, 7);
        let unnamed = b.intern_traceback(&[other_line], 1);
        b.push_trace(0, 10, unnamed);
        let sites = site_statistics(&b.finish(), &rules());
        // The user's frame, not the library's innermost one.
        assert_eq!((sites[0].lineno, sites[0].function.as_deref()), (42, Some("Cache.remember")));
        assert_eq!((sites[1].lineno, sites[1].function.as_deref()), (7, None));
    }

    #[test]
    fn sites_without_a_recorded_name_are_named_from_the_source() {
        let dir = std::env::temp_dir().join(format!("heaptrail-sites-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.py");
        std::fs::write(&path, "class Cache:\n    def remember(self, k):\n        return [k]\n").unwrap();
        let file = path.to_str().unwrap();
        let s = snapshot(&[(&[(file, 3)], 10), (&[("/no/such/file.py", 1)], 5)]);
        let mut sites = site_statistics(&s, &rules());
        name_sites_from_source(&mut sites);
        assert_eq!(sites[0].function.as_deref(), Some("Cache.remember"));
        assert_eq!(sites[1].function, None);
        // A recorded name is kept, whatever the source says now.
        sites[0].function = Some(Arc::from("Old.name"));
        name_sites_from_source(&mut sites);
        assert_eq!(sites[0].function.as_deref(), Some("Old.name"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
