"""Runs a program's `step(i)` every few milliseconds for HEAPTRAIL_TEST_SECONDS (default 8)."""

import os
import time


def run(step, period=0.005):
    deadline = time.monotonic() + float(os.environ.get("HEAPTRAIL_TEST_SECONDS", "8"))
    i = 0
    while time.monotonic() < deadline:
        step(i)
        i += 1
        time.sleep(period)
