//! From each process's latest leak entries to one [`FleetLeak`] per line and pattern: the
//! processes that show it, their rates added up and spread, their live bytes, the holder most
//! of them name, and when any window reported it.

use super::{FleetLeak, ProcessId, ProcessState, Spread};
use crate::leak::LeakPattern;
use crate::watch_report::{LeakKey, Line};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;

/// What one process contributes to one leak: its entries with that key, added up (one
/// window can list a line and pattern twice, under two holders).
struct Share<'a> {
    process: &'a ProcessId,
    bytes_per_second: f64,
    size: u64,
    count: u64,
    holders: Vec<Option<&'a str>>,
    hint: &'a str,
    /// The function its entries name for the line (None: not recorded, an older report).
    function: Option<&'a str>,
}

pub(super) fn fleet_leaks(
    processes: &[ProcessState],
    leak_times: &FxHashMap<LeakKey, (f64, f64)>,
) -> Vec<FleetLeak> {
    // Keys in the order they are first met, so that ties sort the same way every time.
    let mut order: Vec<LeakKey> = Vec::new();
    let mut shares: FxHashMap<LeakKey, Vec<Share>> = FxHashMap::default();
    for p in processes {
        for leak in &p.leaks {
            let key = leak.key();
            let list = shares.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                Vec::new()
            });
            let holder = leak.holder.as_deref();
            let function = leak.site.function.as_deref();
            match list.last_mut() {
                Some(share) if std::ptr::eq(share.process, &p.id) => {
                    share.bytes_per_second += leak.bytes_per_second;
                    share.size += leak.size;
                    share.count += leak.count;
                    share.holders.push(holder);
                    share.function = share.function.or(function);
                }
                _ => list.push(Share {
                    process: &p.id,
                    bytes_per_second: leak.bytes_per_second,
                    size: leak.size,
                    count: leak.count,
                    holders: vec![holder],
                    hint: &leak.hint,
                    function,
                }),
            }
        }
    }
    let mut leaks: Vec<FleetLeak> = order
        .into_iter()
        .map(|key| {
            let list = &shares[&key];
            let rates: Vec<f64> = list.iter().map(|s| s.bytes_per_second).collect();
            let (holder, holder_processes, other_holders) = main_holder(list);
            let hint = list
                .iter()
                .map(|s| s.hint)
                .find(|h| !h.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| hint_of(&key.2));
            let (first_seen, last_seen) = leak_times
                .get(&key)
                .copied()
                .unwrap_or((f64::NAN, f64::NAN));
            let function = main_function(list);
            let (filename, lineno, pattern) = key;
            FleetLeak {
                site: Line {
                    filename,
                    lineno,
                    function,
                },
                pattern,
                hint,
                processes: list.len(),
                bytes_per_second: rates.iter().filter(|r| r.is_finite()).sum(),
                process_bytes_per_second: Spread::of(&rates).unwrap_or(Spread {
                    median: 0.0,
                    min: 0.0,
                    max: 0.0,
                }),
                size: list.iter().map(|s| s.size).fold(0, u64::saturating_add),
                count: list.iter().map(|s| s.count).fold(0, u64::saturating_add),
                holder,
                holder_processes,
                other_holders,
                first_seen,
                last_seen,
                seen_in: list.iter().map(|s| s.process.clone()).collect(),
            }
        })
        .collect();
    // Fastest-growing first (what costs the fleet most), then the most widespread.
    leaks.sort_by(|a, b| {
        b.bytes_per_second
            .total_cmp(&a.bytes_per_second)
            .then(b.processes.cmp(&a.processes))
            .then_with(|| a.site.filename.cmp(&b.site.filename))
            .then(a.site.lineno.cmp(&b.site.lineno))
    });
    leaks
}

/// The holder most processes name, how many name it, and how many other holders there are.
/// A holder found beats none: a process whose analysis found nothing (yet) does not outvote
/// those that found one. Ties go to the holder that sorts first, for a stable answer.
fn main_holder(list: &[Share]) -> (Option<String>, usize, usize) {
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut none = 0;
    for share in list {
        let mut named: Vec<&str> = share.holders.iter().flatten().copied().collect();
        named.sort_unstable();
        named.dedup();
        if named.is_empty() {
            none += 1;
        }
        for h in named {
            *votes.entry(h).or_default() += 1;
        }
    }
    let best = votes
        .iter()
        .fold(None, |best: Option<(&str, usize)>, (&h, &n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((h, n)),
        });
    match best {
        Some((h, n)) => (Some(h.to_owned()), n, votes.len() - 1),
        None => (None, none, 0),
    }
}

/// The function most processes name for the leak's line (processes running another version
/// of the file can differ; those that recorded none do not count). Ties go to the name that
/// sorts first.
fn main_function(list: &[Share]) -> Option<String> {
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for f in list.iter().filter_map(|s| s.function) {
        *votes.entry(f).or_default() += 1;
    }
    let best = votes.iter().fold(None, |best: Option<(&str, usize)>, (&f, &n)| match best {
        Some((_, m)) if m >= n => best,
        _ => Some((f, n)),
    });
    best.map(|(f, _)| f.to_owned())
}

/// This heaptrail's fix for a pattern, for entries written without one.
fn hint_of(pattern: &str) -> String {
    LeakPattern::ALL
        .iter()
        .find(|p| p.as_str() == pattern)
        .map_or("", |p| p.hint())
        .to_owned()
}
