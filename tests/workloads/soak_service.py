"""A service that runs for a while under `heaptrail run` with fast windows, for the soak test:
request churn (small dicts, f-strings, bytes), code compiled at run time with fresh names,
short-lived threads and an asyncio burst per second, and no leak at all. Once a second it
appends what the soak test checks to STATE (JSON Lines): its RSS, threads, open file
descriptors and heaptrail's own bookkeeping.

argv: STATE SECONDS
"""

import asyncio
import json
import os
import sys
import threading
import time

import heaptrail

STATE, SECONDS = sys.argv[1], float(sys.argv[2])
PAGE = os.sysconf("SC_PAGE_SIZE")
TEMPLATE = "rows = [f'<td>{n}</td>' for n in range(6)]\nhtml = ''.join(rows)\n"


def request(i):
    body = [{"id": i, "sku": f"sku-{j}", "qty": j % 3} for j in range(20)]
    text = ",".join(f"{item['sku']}:{item['qty']}" for item in body)
    blobs = [bytes(100 + (i * 37 + k) % 4000) for k in range(4)]
    exec(compile(TEMPLATE, f"<template-{i}>", "exec"), {})
    return len(text) + sum(map(len, blobs))


async def burst(n):
    async def one(k):
        await asyncio.sleep(0)
        return {"k": k, "v": str(k) * 4}
    return await asyncio.gather(*(one(k) for k in range(n)))


def sample(out):
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    out.write(json.dumps({
        # Python's count: a joined thread is gone from it at once, while its OS thread may
        # still be listed in /proc/self/task for a moment (kept, for information only).
        "t": time.monotonic(), "rss": rss, "threads": threading.active_count(),
        "os_threads": len(os.listdir("/proc/self/task")),
        "fds": len(os.listdir("/proc/self/fd")),
        "own": heaptrail.get_tracemalloc_memory() if heaptrail.is_tracing() else 0,
        "tracing": heaptrail.is_tracing()}) + "\n")
    out.flush()


def main():
    deadline = time.monotonic() + SECONDS
    next_sample = time.monotonic()
    i = 0
    with open(STATE, "w") as out:
        while time.monotonic() < deadline:
            request(i)
            i += 1
            if i % 50 == 0:
                t = threading.Thread(target=request, args=(-i,))
                t.start()
                t.join()
            if time.monotonic() >= next_sample:
                asyncio.run(burst(50))
                sample(out)
                next_sample += 1.0
            time.sleep(0.001)


main()
