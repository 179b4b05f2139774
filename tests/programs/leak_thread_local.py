"""Leak: a worker thread accumulates per-request state in a threading.local."""
import threading
from _loop import run

state = threading.local()


def worker():
    def step(i):
        if not hasattr(state, "seen"):
            state.seen = []
        state.seen.append({"request": i, "tags": ["a", "b", str(i)]})  # LEAK
    run(step, period=0.001)


t = threading.Thread(target=worker)
t.start()
t.join()
