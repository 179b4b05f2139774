// TEMPORARY: differential check against CPython's tracemalloc; deleted after running.
use heaptrail_core::diff::compare_to;
use heaptrail_core::filter::{filter_traces, FrameFilter, TraceFilter};
use heaptrail_core::group::{statistics, KeyType};
use heaptrail_core::{Snapshot, SnapshotBuilder};

fn frames(s: &str) -> Vec<(String, u32)> {
    if s.is_empty() { return vec![]; }
    s.split(';').map(|f| { let (a, b) = f.rsplit_once(':').unwrap(); (a.to_string(), b.parse().unwrap()) }).collect()
}
fn fmt(fr: &[(std::sync::Arc<str>, u32)]) -> String {
    fr.iter().map(|(f, l)| format!("{f}:{l}")).collect::<Vec<_>>().join(";")
}
fn read_snap<'a>(lines: &mut impl Iterator<Item = &'a str>, n: usize) -> Snapshot {
    let mut b = SnapshotBuilder::new(4);
    for _ in 0..n {
        let l = lines.next().unwrap();
        let p: Vec<&str> = l.split('\t').collect();
        let ids: Vec<u32> = frames(p[3]).iter().map(|(f, ln)| { let id = b.intern_filename(f); b.intern_frame(id, *ln) }).collect();
        let tb = b.intern_traceback(&ids, p[2].parse().unwrap());
        b.push_trace(p[0].parse().unwrap(), p[1].parse().unwrap(), tb);
    }
    b.finish()
}
fn snap_lines(s: &Snapshot) -> Vec<String> {
    s.traces.iter().map(|t| {
        let tb = s.traceback(t.traceback);
        let fr: Vec<String> = tb.frames.iter().map(|&f| format!("{}:{}", s.filename(f), s.frame(f).lineno)).collect();
        format!("{}\t{}\t{}\t{}", t.domain, t.size, tb.total_nframe, fr.join(";"))
    }).collect()
}

#[test]
fn oracle() {
    let text = std::fs::read_to_string("/tmp/oracle/cases.txt").unwrap();
    let mut lines = text.lines();
    let (mut a, mut b) = (Snapshot::default(), Snapshot::default());
    let mut checked = 0;
    while let Some(h) = lines.next() {
        let head: Vec<&str> = h.split(' ').collect();
        match head[0] {
            "snap" => {
                let s = read_snap(&mut lines, head[2].parse().unwrap());
                if head[1] == "A" { a = s } else { b = s }
            }
            "stats" | "diff" => {
                let key: KeyType = head[1].parse().unwrap();
                let cum = head[2] == "1";
                let n: usize = head[3].parse().unwrap();
                let want: Vec<&str> = (0..n).map(|_| lines.next().unwrap()).collect();
                let got: Vec<String> = if head[0] == "stats" {
                    statistics(&a, key, cum).unwrap().iter().map(|s| format!("{}\t{}\t{}", s.size, s.count, fmt(&s.frames))).collect()
                } else {
                    compare_to(&a, &b, key, cum).unwrap().iter().map(|s| format!("{}\t{}\t{}\t{}\t{}", s.size, s.size_diff, s.count, s.count_diff, fmt(&s.frames))).collect()
                };
                assert_eq!(got, want, "{h}");
                checked += 1;
            }
            "filter" => {
                let (n, specs) = head[1].split_once('\t').unwrap();
                let n: usize = n.parse().unwrap();
                let want: Vec<&str> = (0..n).map(|_| lines.next().unwrap()).collect();
                let filters: Vec<TraceFilter> = specs.split('|').map(|sp| {
                    let p: Vec<&str> = sp.split(',').collect();
                    if p[0] == "D" { TraceFilter::Domain { inclusive: p[1] == "1", domain: p[2].parse().unwrap() } }
                    else {
                        TraceFilter::Frame(FrameFilter::new(p[1] == "1", p[2], p[3].parse().ok(), p[4] == "1", p[5].parse().ok()))
                    }
                }).collect();
                let got = snap_lines(&filter_traces(&a, &filters));
                assert_eq!(got, want, "{h}");
                checked += 1;
            }
            other => panic!("{other}"),
        }
    }
    eprintln!("checked {checked}");
    assert!(checked > 1000);
}
