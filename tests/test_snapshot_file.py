"""Snapshot files: heaptrail's own format round-trips, is smaller than stdlib's pickle, and
every damaged or hostile file is refused with a clear error (never a crash, hang or pickle)."""

import os
import pickle
import random
import tracemalloc as std

import pytest

import heaptrail
from heaptrail import SnapshotFileError
from workloads import alloc_mix


@pytest.fixture(scope="module")
def stdlib_snapshot():
    std.start(10)
    try:
        keep = alloc_mix.run([])
        snap = std.take_snapshot()
    finally:
        std.stop()
    del keep
    return snap


@pytest.fixture(scope="module")
def snapshot(stdlib_snapshot):
    return heaptrail.Snapshot.from_tracemalloc(stdlib_snapshot)


@pytest.fixture(scope="module")
def good_file(snapshot, tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "good.heaptrail"
    snapshot.dump(path)
    return path.read_bytes()


def test_round_trip_keeps_everything(snapshot, tmp_path):
    snapshot.owner = {"service": "api", "build": 7}
    path = tmp_path / "s.heaptrail"
    snapshot.dump(path)
    del snapshot.owner
    loaded = heaptrail.Snapshot.load(path)
    assert loaded.traces == snapshot.traces
    assert loaded.traceback_limit == snapshot.traceback_limit
    assert loaded.owner == {"service": "api", "build": 7}
    assert loaded.statistics("traceback") == snapshot.statistics("traceback")


def test_unicode_and_odd_filenames(tmp_path):
    raw = [(0, 1, (("<stdin>", 0), ("ünïcødé/пути/文件.py", 2**31)), 65535),
           (7, 2**63, (("", 1),), None)]
    snap = heaptrail.Snapshot(raw, 3)
    snap.dump(tmp_path / "u")
    assert list(heaptrail.Snapshot.load(tmp_path / "u").traces._traces) == raw


def test_file_is_smaller_than_stdlib_pickle(stdlib_snapshot, snapshot, tmp_path):
    stdlib_snapshot.dump(tmp_path / "std.pickle")
    snapshot.dump(tmp_path / "ours.heaptrail")
    ours, theirs = (tmp_path / "ours.heaptrail").stat().st_size, (tmp_path / "std.pickle").stat().st_size
    assert ours < theirs / 2, (ours, theirs)


def test_unstorable_attribute_is_a_clear_error(snapshot, tmp_path):
    snap = heaptrail.Snapshot(snapshot.traces._traces, 1)
    snap.callback = print
    with pytest.raises(TypeError, match="JSON"):
        snap.dump(tmp_path / "x")


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        heaptrail.Snapshot.load(tmp_path / "nope")


def test_stdlib_pickle_is_refused_with_a_pointer_to_the_safe_path(stdlib_snapshot, tmp_path):
    path = tmp_path / "std.pickle"
    stdlib_snapshot.dump(path)
    with pytest.raises(SnapshotFileError, match="pickle"):
        heaptrail.Snapshot.load(path)
    with pytest.raises(PermissionError, match="trust_pickle"):
        heaptrail.load_tracemalloc_dump(path)
    loaded = heaptrail.load_tracemalloc_dump(path, trust_pickle=True)
    assert loaded.statistics("lineno") == heaptrail.Snapshot.from_tracemalloc(stdlib_snapshot).statistics("lineno")


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED",))


def test_hostile_pickle_is_refused_even_when_trusted(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        heaptrail.load_tracemalloc_dump(path, trust_pickle=True)
    assert not (tmp_path / "PWNED").exists()


def _mutations(good, count, seed=1234):
    rnd = random.Random(seed)
    for i in range(count):
        data = bytearray(good)
        kind = i % 6
        if kind == 0:  # truncation
            data = data[: rnd.randrange(len(data))]
        elif kind == 1:  # bit flips
            for _ in range(rnd.randint(1, 8)):
                pos = rnd.randrange(len(data))
                data[pos] ^= 1 << rnd.randrange(8)
        elif kind == 2:  # random bytes over a region
            pos = rnd.randrange(len(data))
            data[pos:pos + 16] = rnd.randbytes(16)
        elif kind == 3:  # header kept, body replaced with garbage
            data = data[:24] + rnd.randbytes(rnd.randrange(4096))
        elif kind == 4:  # huge numbers in the header
            pos = rnd.randrange(8, min(40, len(data)))
            data[pos:pos + 8] = b"\xff" * 8
        else:  # deletion / duplication
            a, b = sorted(rnd.randrange(len(data)) for _ in range(2))
            data = data[:a] + data[b:] if rnd.random() < 0.5 else data[:b] + data[a:]
        yield bytes(data)


def test_hundreds_of_corrupted_files_fail_cleanly(good_file, tmp_path):
    path = tmp_path / "bad"
    failures = 0
    for data in _mutations(good_file, 600):
        path.write_bytes(data)
        try:
            snap = heaptrail.Snapshot.load(path)
        except SnapshotFileError as exc:
            assert str(exc), "an error must say what is wrong"
            failures += 1
        else:
            # A mutation the checksum cannot see is impossible in practice; if it loads, it
            # must still be a usable snapshot.
            snap.statistics("lineno")
    assert failures >= 590


@pytest.mark.parametrize("data", [b"", b"HEAP", b"\x80\x04\x95", b"not a snapshot at all\n" * 10,
                                  bytes(100), b"\xff" * 1000])
def test_wrong_type_files(tmp_path, data):
    path = tmp_path / "f"
    path.write_bytes(data)
    with pytest.raises(SnapshotFileError):
        heaptrail.Snapshot.load(path)



def test_dump_errors_are_the_systems_and_devices_are_written_in_place(snapshot, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        snapshot.dump(tmp_path / "no" / "such" / "dir" / "snap.heaptrail")
    assert err.value.filename.endswith("snap.heaptrail")
    assert list(tmp_path.iterdir()) == [], "no temporary file left behind"
    snapshot.dump("/dev/null")  # not replaced by a regular file
    assert os.stat("/dev/null").st_rdev != 0
