//! The snapshot file format: round trips, and every kind of bad file a user might hand us.

mod snapshot_file_support;

use heaptrail_core::model::{Function, NO_FUNCTION, TOTAL_NFRAME_UNKNOWN};
use heaptrail_core::snapshot_file::{
    decode, encode, encode_to_vec, read_file, sniff, write_file, FileKind, FormatError, HEADER_LEN,
    MAX_BODY_LEN,
};
use heaptrail_core::{Frame, Snapshot, SnapshotBuilder, Trace, Traceback};
use snapshot_file_support::*;

fn round_trip(s: &Snapshot, meta: &str) {
    let bytes = encode_to_vec(s, meta);
    let (back, back_meta) = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&back, s);
    assert_eq!(back_meta, meta);
    let mut via_writer = Vec::new();
    encode(s, meta, &mut via_writer).unwrap();
    assert_eq!(via_writer, bytes, "encode and encode_to_vec agree");
}

fn err(bytes: &[u8]) -> FormatError {
    match decode(bytes) {
        Ok(_) => panic!("decoded a bad file"),
        Err(e) => e,
    }
}

#[test]
fn round_trips_empty_snapshot() {
    round_trip(&Snapshot::default(), "");
    round_trip(&SnapshotBuilder::new(1).finish(), "{}");
}

#[test]
fn round_trips_small_snapshot_and_unicode() {
    round_trip(&small_snapshot(), r#"{"note": "héllo ☃ 🐍"}"#);
    let mut b = SnapshotBuilder::new(25);
    for name in [
        "",
        "/usr/lib/python3.12/json/__init__.py",
        "名前.py",
        "🐍/\u{0}nul.py",
        "e\u{301}.py",
    ] {
        let f = b.intern_filename(name);
        let fr = b.intern_frame(f, 1);
        let tb = b.intern_traceback(&[fr], 1);
        b.push_trace(0, 1, tb);
    }
    round_trip(&b.finish(), "");
}

#[test]
fn round_trips_extreme_values() {
    let s = Snapshot {
        filenames: vec!["x".into(), "y".into()],
        // Line numbers jumping up and down across the whole u32 range exercise the deltas.
        frames: vec![
            Frame {
                filename: 1,
                lineno: u32::MAX,
            },
            Frame {
                filename: 0,
                lineno: 0,
            },
            Frame {
                filename: 1,
                lineno: u32::MAX,
            },
            Frame {
                filename: 1,
                lineno: 1,
            },
        ],
        tracebacks: vec![
            Traceback {
                frames: vec![0, 1, 2, 3].into(),
                total_nframe: TOTAL_NFRAME_UNKNOWN,
            },
            Traceback {
                frames: vec![].into(),
                total_nframe: 0,
            },
            Traceback {
                frames: vec![3, 3].into(),
                total_nframe: u32::MAX - 1,
            },
        ],
        traces: vec![
            Trace {
                domain: u32::MAX,
                size: u64::MAX,
                traceback: 2,
            },
            Trace {
                domain: 0,
                size: u64::MAX - 1,
                traceback: 0,
            },
            Trace {
                domain: 1,
                size: 0,
                traceback: 1,
            },
        ],
        traceback_limit: u32::MAX,
        sample_rate: u64::MAX,
        functions: vec![
            Function {
                qualname: "".into(),
                first_lineno: u32::MAX,
            },
            Function {
                qualname: "a.<locals>.<lambda>".into(),
                first_lineno: 0,
            },
        ],
        traceback_functions: vec![
            vec![1, NO_FUNCTION, 0, 1].into(),
            vec![].into(),
            vec![NO_FUNCTION, 0].into(),
        ],
    };
    round_trip(&s, "");
}

#[test]
fn round_trips_many_traces() {
    let mut b = SnapshotBuilder::new(10);
    let files: Vec<_> = (0..50)
        .map(|i| b.intern_filename(&format!("/srv/app/mod{i}.py")))
        .collect();
    let frames: Vec<_> = (0..500u32)
        .map(|i| b.intern_frame(files[(i % 50) as usize], i * 3))
        .collect();
    let tbs: Vec<_> = (0..200usize)
        .map(|i| {
            let ids: Vec<_> = (0..10).map(|d| frames[(i * 7 + d * 13) % 500]).collect();
            b.intern_traceback(&ids, 10 + i as u32)
        })
        .collect();
    for i in 0..20_000u64 {
        b.push_trace(
            (i % 3) as u32,
            16 + (i * 2654435761) % 4096,
            tbs[(i as usize * 31) % 200],
        );
    }
    round_trip(&b.finish(), "{\"k\": 1}");
}

#[test]
fn every_truncation_is_reported_as_truncated() {
    let bytes = encode_to_vec(&small_snapshot(), "meta");
    for len in 0..bytes.len() {
        match err(&bytes[..len]) {
            FormatError::Truncated { .. } => {}
            e => panic!("prefix of {len} bytes: expected Truncated, got {e:?}"),
        }
    }
    assert!(err(&[])
        .to_string()
        .starts_with("truncated snapshot file: "));
}

#[test]
fn trailing_data_is_rejected() {
    let mut bytes = encode_to_vec(&small_snapshot(), "");
    bytes.push(0);
    assert!(matches!(err(&bytes), FormatError::Corrupt { .. }));
}

#[test]
fn every_bit_flip_is_detected() {
    let bytes = encode_to_vec(&small_snapshot(), "meta");
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            assert!(
                decode(&bad).is_err(),
                "flip of bit {bit} of byte {i} went unnoticed"
            );
        }
    }
    let mut bad = bytes.clone();
    *bad.last_mut().unwrap() ^= 0x10;
    assert!(err(&bad).to_string().contains("checksum mismatch"));
    let mut bad = bytes.clone();
    bad[20] ^= 1; // body length: covered by the header checksum
    assert_eq!(
        err(&bad).to_string(),
        "corrupt snapshot file: checksum mismatch (header)"
    );
}

#[test]
fn body_checksum_is_checked_after_inflating() {
    let body = unwrap_body(&encode_to_vec(&small_snapshot(), ""));
    let compressed = deflate(&body);
    let mut f = Fields::honest(&body, &compressed);
    f.body_crc ^= 1;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    assert_eq!(
        err(&file).to_string(),
        "corrupt snapshot file: checksum mismatch (body)"
    );
}

#[test]
fn declared_length_bombs_fail_before_allocating() {
    let compressed = deflate(b"tiny");
    // More than any deflate stream of this size could produce (and far more than memory).
    let mut f = Fields::honest(b"tiny", &compressed);
    f.body_len = u64::MAX;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    match err(&file) {
        FormatError::BodyTooLarge { declared, limit } => {
            assert_eq!(declared, u64::MAX);
            assert!(limit <= compressed.len() as u64 * 1032);
        }
        e => panic!("{e:?}"),
    }
    // A header claiming a huge compressed body makes the ratio check pass, but the hard cap
    // still applies, and the missing bytes are reported before anything is inflated.
    f.compressed_len = u64::MAX / 2;
    f.body_len = MAX_BODY_LEN + 1;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    assert!(matches!(
        err(&file),
        FormatError::BodyTooLarge {
            limit: MAX_BODY_LEN,
            ..
        }
    ));
    f.body_len = MAX_BODY_LEN;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    assert!(matches!(err(&file), FormatError::Truncated { .. }));
}

#[test]
fn a_real_deflate_bomb_stops_at_the_declared_length() {
    // 64 MiB of zeros compresses to ~64 KiB; declare 1000 bytes. Reading goes through
    // `take`, so at most the declared length is ever inflated.
    let zeros = vec![0u8; 64 << 20];
    let compressed = deflate(&zeros);
    let mut f = Fields::honest(&zeros[..1000], &compressed);
    f.body_len = 1000;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    assert!(
        err(&file).to_string().contains("inflates to more than"),
        "{}",
        err(&file)
    );
}

#[test]
fn body_shorter_than_declared() {
    let body = unwrap_body(&encode_to_vec(&small_snapshot(), ""));
    let compressed = deflate(&body);
    let mut f = Fields::honest(&body, &compressed);
    f.body_len += 1;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    assert!(err(&file).to_string().contains("inflates to"));
}

#[test]
fn sampled_snapshots_round_trip_and_version_1_files_load_as_exact() {
    let mut sampled = small_snapshot();
    sampled.sample_rate = 512 * 1024;
    round_trip(&sampled, "{}");
    // A version 1 file: the same body without the sample rate (one varint byte for 0) and
    // without the functions table (one byte: no functions).
    let exact = small_snapshot();
    let body = unwrap_body(&encode_to_vec(&exact, ""));
    let limit_len = body.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    assert_eq!(body[limit_len], 0, "the sample rate of an exact snapshot");
    assert_eq!(body.last(), Some(&0), "no functions");
    let v1: Vec<u8> = [&body[..limit_len], &body[limit_len + 1..body.len() - 1]].concat();
    let compressed = deflate(&v1);
    let mut f = Fields::honest(&v1, &compressed);
    f.version = 1;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    let (back, _) = decode(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, exact);
    assert_eq!(back.sample_rate, 0);
}

#[test]
fn wrong_version_and_unknown_flags() {
    let mut bytes = encode_to_vec(&small_snapshot(), "");
    bytes[8..10].copy_from_slice(&7u16.to_le_bytes());
    assert_eq!(
        err(&bytes).to_string(),
        "unsupported snapshot format version 7 (this heaptrail reads versions 1 to 3)"
    );
    let body = unwrap_body(&encode_to_vec(&small_snapshot(), ""));
    let compressed = deflate(&body);
    let mut f = Fields::honest(&body, &compressed);
    f.flags = 4;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    assert!(matches!(
        err(&file),
        FormatError::UnsupportedFlags { flags: 4 }
    ));
}

#[test]
fn pickles_are_recognised_and_refused() {
    // The start of `pickle.dumps(tracemalloc.take_snapshot(), 4)`.
    let pickle = b"\x80\x04\x95\x1b\x00\x00\x00\x00\x00\x00\x00\x8c\x0btracemalloc\x94\x8c\x08Snapshot\x94\x93\x94";
    assert_eq!(sniff(pickle), FileKind::Pickle);
    assert_eq!(sniff(b"\x80\x05"), FileKind::Pickle);
    assert_eq!(sniff(b"\x80\x02\x63"), FileKind::Pickle);
    assert_eq!(sniff(b"\x80"), FileKind::Unknown);
    assert_eq!(sniff(b"\x80\x09"), FileKind::Unknown);
    assert_eq!(sniff(b"hello"), FileKind::Unknown);
    assert_eq!(
        sniff(&encode_to_vec(&small_snapshot(), "")),
        FileKind::Heaptrail
    );
    let e = err(pickle);
    assert!(matches!(e, FormatError::Pickle));
    assert!(e.to_string().starts_with("this looks like a Python pickle"));
    assert!(matches!(err(b"\x80\x04"), FormatError::Pickle));
    assert_eq!(
        err(b"GIF89a....").to_string(),
        "not a heaptrail snapshot file (bad magic)"
    );
    assert!(matches!(err(b"HEAPX"), FormatError::BadMagic));
    assert!(matches!(err(b"HEAP"), FormatError::Truncated { .. }));
}

/// Bodies with valid checksums but inconsistent contents: what a crafted file looks like.
#[test]
fn crafted_bodies_are_rejected_with_precise_messages() {
    // limit, sample rate 0, metadata "", 1 filename "a", 1 frame (file 0, line 1), 10 tracebacks with
    // no frames, 13 traces all in domain 0 of size 1, trace 12 pointing at traceback 99.
    let mut body = vec![1, 0, 0, 1, 1, b'a', 1, 0, 2, 10];
    body.extend([1; 10]);
    body.extend([0; 10]);
    body.push(13);
    body.extend([0; 13]);
    body.extend([1; 13]);
    body.extend([0; 12]);
    body.push(99);
    assert_eq!(
        err(&wrap_body(&body)).to_string(),
        "corrupt snapshot file: trace 12 points at traceback 99 of 10"
    );
    *body.last_mut().unwrap() = 9;
    // Version 3 ends with the functions table: none here.
    let msg = err(&wrap_body(&body)).to_string();
    assert!(msg.contains("function count"), "{msg}");
    body.push(0);
    let (s, meta) = decode(&wrap_body(&body)).unwrap();
    assert_eq!(
        (s.traces.len(), s.tracebacks.len(), meta.as_str()),
        (13, 10, "")
    );

    body.push(0);
    assert!(err(&wrap_body(&body))
        .to_string()
        .contains("unexpected data after the function names"));

    // Counts that the remaining bytes cannot hold: refused without allocating.
    for count in [u64::MAX, 1 << 60, 1 << 40, 1000] {
        let mut b = vec![1, 0, 0];
        leb(&mut b, count);
        b.extend([0; 16]);
        let msg = err(&wrap_body(&b)).to_string();
        assert!(
            msg.contains("filename count: count is larger than"),
            "{msg}"
        );
    }
    // A frame pointing at a missing filename; a traceback at a missing frame.
    let msg = err(&wrap_body(&[1, 0, 0, 1, 1, b'a', 1, 4, 0])).to_string();
    assert!(msg.ends_with("frame 0 points at filename 2 of 1"), "{msg}");
    let msg = err(&wrap_body(&[1, 0, 0, 0, 0, 1, 1, 1, 5, 0])).to_string();
    assert!(msg.ends_with("traceback 0 points at frame 5 of 0"), "{msg}");
    // Invalid UTF-8 in a filename; an overlong varint.
    let msg = err(&wrap_body(&[1, 0, 0, 1, 2, 0xc3, 0x28, 0, 0, 0])).to_string();
    assert!(msg.contains("filename 0: text is not valid UTF-8"), "{msg}");
    let msg = err(&wrap_body(&[0xff; 12])).to_string();
    assert!(msg.contains("traceback limit"), "{msg}");
    // total_nframe above u32::MAX.
    let mut b = vec![1, 0, 0, 0, 0, 1];
    leb(&mut b, 1 << 33);
    b.extend([0, 0]);
    assert!(err(&wrap_body(&b))
        .to_string()
        .contains("total_nframe out of range"));
    // An empty body.
    assert!(matches!(err(&wrap_body(&[])), FormatError::Corrupt { .. }));
}

#[test]
fn encoder_refuses_invalid_snapshots() {
    let mut s = Snapshot::default();
    s.traces.push(Trace {
        domain: 0,
        size: 1,
        traceback: 0,
    });
    let e = encode(&s, "", Vec::new()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("trace 0 points at traceback 0 of 0"));
}

#[test]
fn files_round_trip_atomically() {
    let dir = std::env::temp_dir().join(format!("heaptrail-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("snap.heaptrail");
    let s = small_snapshot();
    write_file(&path, &s, "first").unwrap();
    write_file(&path, &s, "second").unwrap(); // replaces
    assert_eq!(read_file(&path).unwrap(), (s.clone(), "second".to_string()));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("snap.heaptrail")],
        "no temp files left"
    );

    // Big unrelated files fail from their first bytes; pickles are named.
    std::fs::write(&path, b"\x80\x04\x95 pickle pickle").unwrap();
    assert!(matches!(read_file(&path), Err(FormatError::Pickle)));
    let mut f = encode_to_vec(&s, "");
    f.extend([0; 5]);
    std::fs::write(&path, &f).unwrap();
    assert!(matches!(read_file(&path), Err(FormatError::Corrupt { .. })));
    f.truncate(f.len() - 8);
    std::fs::write(&path, &f).unwrap();
    assert!(matches!(
        read_file(&path),
        Err(FormatError::Truncated { .. })
    ));

    let missing = dir.join("missing.heaptrail");
    let e = read_file(&missing).unwrap_err();
    assert!(matches!(e, FormatError::Io { .. }));
    assert!(e.to_string().contains("missing.heaptrail"), "{e}");
    // Write errors are the system's, unwrapped (the caller names the path).
    let e = write_file(&dir.join("no-such-dir/x.heaptrail"), &s, "").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn header_len_is_what_the_docs_say() {
    assert_eq!(HEADER_LEN, 40);
    assert_eq!(&encode_to_vec(&Snapshot::default(), "")[..8], b"HEAPTRL\0");
}

#[test]
fn function_names_round_trip_and_version_2_files_load_without_them() {
    let named = named_snapshot();
    assert_eq!(named.functions.len(), 3);
    round_trip(&named, "{}");
    // A version 2 file is a version 3 body without the functions table (here: one byte, no
    // functions). It loads with no names; readers fall back to the source files.
    let plain = small_snapshot();
    let body = unwrap_body(&encode_to_vec(&plain, ""));
    assert_eq!(body.last(), Some(&0));
    let v2 = &body[..body.len() - 1];
    let compressed = deflate(v2);
    let mut f = Fields::honest(v2, &compressed);
    f.version = 2;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    let (back, _) = decode(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, plain);
    assert!(back.functions.is_empty() && back.traceback_functions.is_empty());
    // A version 2 header over a version 3 body: the names are data a version 2 file cannot
    // have.
    let body = unwrap_body(&encode_to_vec(&named, ""));
    let compressed = deflate(&body);
    let mut f = Fields::honest(&body, &compressed);
    f.version = 2;
    let mut file = f.header();
    file.extend_from_slice(&compressed);
    let msg = err(&file).to_string();
    assert!(msg.contains("unexpected data after the traces"), "{msg}");
}

/// The body of `small_snapshot()` up to its functions table, then `section`.
fn with_functions(section: &[u8]) -> Vec<u8> {
    let body = unwrap_body(&encode_to_vec(&small_snapshot(), ""));
    assert_eq!(body.last(), Some(&0), "no functions");
    let mut out = body[..body.len() - 1].to_vec();
    out.extend_from_slice(section);
    wrap_body(&out)
}

#[test]
fn hostile_function_sections_get_precise_errors() {
    // small_snapshot has two tracebacks of 2 and 1 frames. Two functions, "f" at line 10 and
    // "C.m" at line 3 (zigzag deltas 20 and 13), then one id + 1 per frame.
    let good = [2, 1, b'f', 3, b'C', b'.', b'm', 20, 13, 1, 2, 0];
    let (s, _) = decode(&with_functions(&good)).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.validate().is_ok());
    let names: Vec<_> = s
        .functions
        .iter()
        .map(|f| (&*f.qualname, f.first_lineno))
        .collect();
    assert_eq!(names, [("f", 10), ("C.m", 3)]);
    assert_eq!(
        s.traceback_functions,
        [
            vec![0, 1].into_boxed_slice(),
            vec![NO_FUNCTION].into_boxed_slice()
        ]
    );

    // Every truncation of the section is an error, never a panic nor a partial table.
    for len in 0..good.len() {
        let e = err(&with_functions(&good[..len]));
        assert!(matches!(e, FormatError::Corrupt { .. }), "{len}: {e}");
    }
    let cases: &[(&[u8], &str)] = &[
        (&[], "function count: body ends inside a number"),
        // A count the rest of the body cannot hold: refused before allocating.
        (
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            "function count: count is larger than",
        ),
        (&[100, 1, b'f'], "function count: count is larger than"),
        (
            &[1, 5, b'f', 0, 1],
            "name of function 0: count is larger than",
        ),
        (
            &[1, 2, 0xc3, 0x28, 0, 1, 1, 1],
            "name of function 0: text is not valid UTF-8",
        ),
        // First line below 0, and above u32::MAX.
        (
            &[1, 1, b'f', 1, 1, 1, 1],
            "function 0: first line out of range",
        ),
        (
            &[1, 1, b'f', 0x80, 0x80, 0x80, 0x80, 0x20, 1, 1, 1],
            "function 0: first line out of range",
        ),
        (
            &[1, 1, b'f', 2, 1, 3, 1],
            "frame 1 of traceback 0 points at function 2 of 1",
        ),
        (
            &[1, 1, b'f', 2, 1, 1],
            "functions of 3 frames, but only 2 bytes are left",
        ),
        (
            &[1, 1, b'f', 2, 1, 1, 0x81],
            "function of frame 0 of traceback 1: body ends inside",
        ),
        (
            &[1, 1, b'f', 2, 1, 1, 1, 9],
            "1 bytes of unexpected data after the function names",
        ),
    ];
    for (section, want) in cases {
        let msg = err(&with_functions(section)).to_string();
        assert!(msg.contains(want), "{section:?}: {msg}");
    }
}
