//! Property tests for the snapshot decoder: random snapshots round-trip, and mutated files —
//! damaged on disk (checksums should catch it) or crafted behind valid checksums (the parser
//! must catch it) — never panic and never yield a snapshot with dangling ids.
//!
//! This is what CI runs; `fuzz/fuzz_targets/decode_snapshot.rs` is the same idea for
//! cargo-fuzz on nightly.

mod snapshot_file_support;

use heaptrail_core::model::{NO_FUNCTION, TOTAL_NFRAME_UNKNOWN};
use heaptrail_core::snapshot_file::{decode, encode_to_vec, HEADER_LEN};
use heaptrail_core::{Snapshot, SnapshotBuilder};
use proptest::prelude::*;
use snapshot_file_support::*;

/// Random valid snapshots: a few files, frames and tracebacks, with extreme values mixed in,
/// and sometimes the functions of their frames.
fn snapshot() -> impl Strategy<Value = Snapshot> {
    let name = prop_oneof![Just(String::new()), "[a-z/._]{1,12}", "\\PC{0,6}"];
    let names = prop::collection::vec(name.clone(), 1..5);
    let functions = prop::collection::vec((name, prop_oneof![0..20u32, any::<u32>()]), 0..4);
    let num32 = prop_oneof![0..20u32, any::<u32>(), Just(u32::MAX)];
    let num64 = prop_oneof![0..5000u64, any::<u64>(), Just(u64::MAX)];
    let frames = prop::collection::vec((any::<prop::sample::Index>(), num32.clone()), 1..8);
    let tbs = prop::collection::vec(
        (
            prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            num32.clone(),
            // The function of each frame: an index into `functions`, past its end for none.
            prop::collection::vec(any::<prop::sample::Index>(), 6),
        ),
        1..6,
    );
    let traces = prop::collection::vec((num32.clone(), num64, any::<prop::sample::Index>()), 0..30);
    let parts = (names, frames, tbs, traces, num32, functions);
    parts.prop_map(|(names, frames, tbs, traces, limit, functions)| {
        let mut b = SnapshotBuilder::new(limit);
        let files: Vec<_> = names.iter().map(|n| b.intern_filename(n)).collect();
        let functions: Vec<_> = functions
            .iter()
            .map(|(name, line)| b.intern_function(&name.as_str().into(), *line))
            .collect();
        let frames: Vec<_> = frames
            .iter()
            .map(|(f, line)| b.intern_frame(*f.get(&files), *line))
            .collect();
        let tbs: Vec<_> = tbs
            .iter()
            .map(|(ids, total, which)| {
                let ids: Vec<_> = ids.iter().map(|i| *i.get(&frames)).collect();
                let total = if total % 7 == 3 {
                    TOTAL_NFRAME_UNKNOWN
                } else {
                    *total
                };
                let named: Vec<_> = which[..ids.len()]
                    .iter()
                    .map(|i| {
                        let i = i.index(functions.len() + 1);
                        functions.get(i).copied().unwrap_or(NO_FUNCTION)
                    })
                    .collect();
                b.intern_traceback_with_functions(&ids, &named, total)
            })
            .collect();
        for (domain, size, tb) in traces {
            b.push_trace(domain, size, *tb.get(&tbs));
        }
        b.finish()
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    /// Copy a range of the buffer over another place (splicing the file into itself).
    Splice(prop::sample::Index, prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        4 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        3 => (any::<Index>(), prop_oneof![Just(0u8), Just(0x7f), Just(0x80), Just(0xff), any::<u8>()])
            .prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        2 => (any::<Index>(), 1..12usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), any::<Index>(), 1..24usize).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        if let Mutation::Insert(_, v) = m {
            buf.extend_from_slice(v);
        }
        return;
    }
    let len = buf.len();
    match m {
        Mutation::Flip(i, bit) => buf[i.index(len)] ^= 1 << bit,
        Mutation::Set(i, v) => buf[i.index(len)] = *v,
        Mutation::Insert(i, v) => {
            let at = i.index(len + 1);
            buf.splice(at..at, v.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = i.index(len);
            buf.drain(at..(at + n).min(len));
        }
        Mutation::Truncate(i) => buf.truncate(i.index(len)),
        Mutation::Splice(a, b, n) => {
            let (from, to) = (a.index(len), b.index(len));
            let n = (*n).min(len - from).min(len - to);
            let chunk: Vec<u8> = buf[from..from + n].to_vec();
            buf[to..to + n].copy_from_slice(&chunk);
        }
    }
}

/// Decoding must not panic; whatever it accepts must be internally consistent.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok((s, _)) = decode(bytes) {
        prop_assert!(
            s.validate().is_ok(),
            "decoded an invalid snapshot: {:?}",
            s.validate()
        );
        // And re-encoding it must reproduce an equal snapshot.
        let again =
            decode(&encode_to_vec(&s, "")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.0, s);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_snapshots_round_trip(s in snapshot(), meta in "\\PC{0,20}") {
        let bytes = encode_to_vec(&s, &meta);
        let (back, back_meta) = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, s);
        prop_assert_eq!(back_meta, meta);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Damage anywhere in the file: checksums and lengths must catch it.
    #[test]
    fn damaged_files_fail_cleanly(s in snapshot(), ms in prop::collection::vec(mutation(), 1..5)) {
        let mut bytes = encode_to_vec(&s, "{}");
        let original = bytes.clone();
        for m in &ms {
            apply(&mut bytes, m);
        }
        let result = decode(&bytes);
        if bytes != original {
            prop_assert!(result.is_err(), "damaged file decoded: {:?}", ms);
        }
        check(&bytes)?;
    }

    /// Damage to the body behind valid checksums: this is what reaches the parser.
    #[test]
    fn crafted_bodies_never_panic(s in snapshot(), ms in prop::collection::vec(mutation(), 1..5)) {
        let mut body = unwrap_body(&encode_to_vec(&s, "{\"a\": 1}"));
        for m in &ms {
            apply(&mut body, m);
        }
        check(&wrap_body(&body))?;
    }

    /// Random garbage behind a valid header, both as the compressed stream and as the body.
    #[test]
    fn garbage_never_panics(garbage in prop::collection::vec(any::<u8>(), 0..300), lie in any::<u64>()) {
        check(&wrap_body(&garbage))?;
        let mut f = Fields::honest(&garbage, &garbage);
        let mut file = f.header();
        file.extend_from_slice(&garbage);
        check(&file)?;
        f.body_len = lie % (garbage.len() as u64 * 1100 + 1);
        let mut file = f.header();
        file.extend_from_slice(&garbage);
        check(&file)?;
        check(&garbage)?;
        let mut headed = encode_to_vec(&Snapshot::default(), "")[..HEADER_LEN].to_vec();
        headed.extend_from_slice(&garbage);
        check(&headed)?;
    }
}
