"""Stress for the tracing engine, run in its own process by test_engine.py (a crash there is a
failed test, not a dead test run).

Four threads churn the allocator (lists, dicts, strings, bytearrays grown in place: malloc,
realloc and free of blocks with and without headers, small and big) while a control thread
keeps taking snapshots and live totals, clearing traces, stopping and restarting heaptrail with
other frame limits, and starting and stopping stdlib tracemalloc on top of it.

    python engine_stress.py SECONDS
"""

import gc
import random
import sys
import threading
import time
import tracemalloc as std

import heaptrail

stop = threading.Event()
errors = []


def churn(seed):
    r = random.Random(seed)
    keep = []
    while not stop.is_set():
        floats = [r.random() for _ in range(r.randint(0, 50))]
        for _ in range(r.randint(0, 30)):
            floats.append(bytearray(r.randint(0, 2000)))
        table = {str(i): i for i in range(r.randint(0, 40))}
        grown = bytearray(r.randint(0, 600))
        grown.extend(bytes(r.randint(0, 5000)))
        text = "".join(str(i) for i in range(r.randint(0, 100)))
        keep.append((floats, table, grown, text))
        if len(keep) > 300:
            del keep[:r.randint(1, 300)]


def control():
    r = random.Random(1)
    while not stop.is_set():
        op = r.random()
        if op < 0.3:
            if heaptrail.is_tracing():
                heaptrail.take_snapshot()
        elif op < 0.45:
            heaptrail.clear_traces()
        elif op < 0.6:
            heaptrail.stop()
            time.sleep(0.01)
            heaptrail.start(r.choice([1, 5, 25]))
        elif op < 0.7:
            if heaptrail.is_tracing():
                heaptrail._native._get_traceback_totals().sites([], [], [])
        elif op < 0.75:
            std.start()
            time.sleep(0.01)
            std.stop()
        else:
            time.sleep(0.005)


def guarded(f, *args):
    try:
        f(*args)
    except BaseException as e:  # reported by the main thread
        errors.append(repr(e))
        stop.set()


def main():
    heaptrail.start(5)
    threads = [threading.Thread(target=guarded, args=(churn, i)) for i in range(4)]
    threads.append(threading.Thread(target=guarded, args=(control,)))
    for t in threads:
        t.start()
    time.sleep(float(sys.argv[1]))
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"errors: {errors}")
    if not heaptrail.is_tracing():
        heaptrail.start()
    heaptrail.take_snapshot()
    heaptrail.stop()
    gc.collect()
    print("ok")


if __name__ == "__main__":
    main()
