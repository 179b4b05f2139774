"""A workload with known allocation sites, used by the differential tests.

`run()` leaves a set of live objects behind; each kind is created on its own line so that
per-line statistics can be compared between heaptrail and stdlib tracemalloc.
"""

import collections


class Record:
    def __init__(self, i):
        self.i = i
        self.name = f"record-{i}"


def make_closure(x):
    def inner():
        return x
    return inner


def run(keep):
    for i in range(2000):
        keep.append([i, i + 1, i + 2])
        keep.append({"k": i, "v": str(i)})
        keep.append(Record(i))
    for i in range(300):
        keep.append(b"x" * (i * 37))
        keep.append("y" * (i * 11))
    buf = bytearray()
    for _ in range(5000):
        buf += b"abcdefgh"
    keep.append(buf)
    keep.append(collections.deque(range(10000)))
    keep.extend(make_closure(i) for i in range(500))
    big = bytes(3 * 1024 * 1024)
    keep.append(big)
    transient = [str(i) * 3 for i in range(20000)]
    del transient
    return keep
