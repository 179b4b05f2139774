"""Not a leak: a cache that fills during warm-up, then stays the same size."""
from _loop import run

catalogue = {}


def step(i):
    if len(catalogue) < 3000:
        for k in range(50):
            catalogue[len(catalogue)] = "item" * 30
    else:
        _ = catalogue[i % 3000]


run(step)
