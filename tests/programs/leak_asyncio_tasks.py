"""Leak: asyncio tasks kept in a set that is never pruned."""
import asyncio
import os
import time

background = set()


async def job(i):
    return [i] * 20  # ALSO: each finished task keeps its result


async def main():
    deadline = time.monotonic() + float(os.environ.get("HEAPTRAIL_TEST_SECONDS", "8"))
    i = 0
    while time.monotonic() < deadline:
        for _ in range(10):
            background.add(asyncio.ensure_future(job(i)))  # LEAK
            i += 1  # ALSO: the ints the kept tasks refer to
        await asyncio.sleep(0.005)


asyncio.run(main())
