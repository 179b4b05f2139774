"""A stand-in for a web service's request loop, shared by the watcher's test programs.

Each request does what a real handler does around the code under test: it parses a small JSON
body, builds a list of small dicts (a list comprehension), formats f-strings and joins them,
makes a few bytes objects of 100 B - 5 KB (bursty: now and then dozens of them), sorts, and drops
all of it; then it calls the program's `handle(request)`. None of this churn is ever kept, so no
line of this file may be called a leak -- though a leak may keep objects made here (a request's
id or user), which then belong to that leak ("part-of-leak").

Settings: HEAPTRAIL_TEST_SECONDS (default 8) and HEAPTRAIL_TEST_RATE (requests per second,
default 100; a program may pass its own `rate`). Requests are deterministic (seeded RNG); only
their number depends on how fast the machine is.

Markers the tests read in a program: `# LEAK` on the line to blame, `# PATTERN: <name>`,
`# ROOT: <text the holder's path must contain>`, and optionally `# INTERVAL: <s>` and
`# SECONDS: <s>` for programs that need a longer run (a slow leak).
"""

import asyncio
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

SECONDS = float(os.environ.get("HEAPTRAIL_TEST_SECONDS", "8"))
RATE = float(os.environ.get("HEAPTRAIL_TEST_RATE", "100"))
PATHS = ("/orders", "/orders/{id}", "/cart", "/search", "/users/{id}", "/health")
USERS = tuple(f"user{n:03d}" for n in range(50))


class Request:
    """What a handler gets: an id, a method and path, a user, a raw JSON body."""

    __slots__ = ("id", "method", "path", "user", "body")

    def __init__(self, id, method, path, user, body):
        self.id = id
        self.method = method
        self.path = path
        self.user = user
        self.body = body


def make_request(rng, i):
    items = [{"sku": f"SKU-{rng.randrange(10_000):05d}", "qty": rng.randint(1, 5)}
             for _ in range(rng.randint(1, 8))]
    body = json.dumps({"items": items, "coupon": rng.choice(["", "WELCOME", "VIP"])})
    return Request(1_000_000 + i, rng.choice(("GET", "POST")), rng.choice(PATHS),
                   rng.choice(USERS), body)


def churn(request, rng):
    """The work every request does whatever the program tests; nothing survives it."""
    order = json.loads(request.body)
    lines = [{"sku": it["sku"], "qty": it["qty"], "price": round(it["qty"] * 9.99, 2)}
             for it in order["items"]]
    text = "\n".join(f"{ln['sku']} x{ln['qty']} = {ln['price']:.2f}" for ln in lines)
    header = f"{request.method} {request.path} user={request.user} items={len(lines)}"
    # Bursty payloads: usually a few, sometimes dozens (an export, a page of thumbnails).
    burst = rng.randint(20, 60) if rng.random() < 0.05 else rng.randint(1, 4)
    blobs = [bytes(rng.randint(100, 5_000)) for _ in range(burst)]
    blobs.sort(key=len)
    lines.sort(key=lambda ln: (ln["price"], ln["sku"]))
    return len(header) + len(text) + sum(map(len, blobs))


def _requests(rate, seed):
    """Yields (request, rng) at `rate` per second until the deadline."""
    rng = random.Random(seed)
    period = 1.0 / rate
    start = time.monotonic()
    deadline = start + SECONDS
    i = 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        due = start + i * period
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:  # fell behind (a busy machine): do not try to catch up
            start = now - i * period
        yield make_request(rng, i), rng
        i += 1


def serve(handle, rate=None, seed=1234):
    """The single-threaded service: churn, then `handle(request)`, for each request."""
    for request, rng in _requests(rate or RATE, seed):
        churn(request, rng)
        handle(request)


def serve_threaded(handle, workers=4, rate=None, seed=1234):
    """A thread pool service: the loop accepts requests, worker threads churn and handle them."""
    def work(request, seed):
        churn(request, random.Random(seed))
        handle(request)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="worker") as pool:
        pending = []
        for request, rng in _requests(rate or RATE, seed):
            pending.append(pool.submit(work, request, rng.random()))
            if len(pending) >= 4 * workers:
                for f in pending:
                    f.result()
                pending.clear()
        for f in pending:
            f.result()


def serve_async(handle, rate=None, seed=1234):
    """An asyncio service: `await handle(request)` for each request, on one event loop."""
    async def main():
        rng = random.Random(seed)
        period = 1.0 / (rate or RATE)
        loop = asyncio.get_running_loop()
        start = loop.time()
        i = 0
        while loop.time() < start + SECONDS:
            request = make_request(rng, i)
            churn(request, rng)
            await handle(request)
            i += 1
            delay = start + i * period - loop.time()
            await asyncio.sleep(max(delay, 0))

    asyncio.run(main())

