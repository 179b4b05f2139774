"""Runs `alloc_mix` traced by heaptrail and/or stdlib tracemalloc in this (fresh) interpreter
and prints, as JSON, what each tracer saw. Used by test_differential.py.

    python differential_run.py ORDER NFRAME

ORDER names the tracers to start, comma-separated, in start order: the first started is
hooked lowest in the allocator chain (e.g. "stdlib,heaptrail": heaptrail on top). A fresh
process is what makes the order certain: heaptrail's hooks stay in the chain after stop()
while blocks carrying its headers are alive.
"""

import gc
import json
import sys
import tracemalloc as std

import alloc_mix

import heaptrail

TRACERS = {"heaptrail": heaptrail, "stdlib": std}


def lines(tracer):
    """{lineno: [size, count]} of the live blocks allocated in alloc_mix.py."""
    stats = tracer.take_snapshot().statistics("lineno")
    return {s.traceback[0].lineno: [s.size, s.count] for s in stats
            if s.traceback[0].filename == alloc_mix.__file__}


def main():
    order, nframe = sys.argv[1].split(","), int(sys.argv[2])
    gc.collect()
    for name in order:
        TRACERS[name].start(nframe)
    result = {"headers": heaptrail._native.testing._block_headers()[0]}
    keep = alloc_mix.run([])
    for name in order:
        result[name] = lines(TRACERS[name])
    if len(order) == 2:
        result["objects"] = []
        for obj in keep[::97]:
            ours, theirs = heaptrail.get_object_traceback(obj), std.get_object_traceback(obj)
            result["objects"].append([
                repr(obj)[:40],
                None if ours is None else [list(f) for f in ours._frames],
                None if theirs is None else [list(f) for f in theirs._frames],
            ])
    for name in reversed(order):
        TRACERS[name].stop()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
