"""Not a leak: heavy churn, lots of allocation, nothing kept."""
import random
from _loop import run

rng = random.Random(7)
recent = []


def step(i):
    batch = [{"id": k, "v": str(k) * 5} for k in range(rng.randint(200, 2000))]
    recent.append(batch)
    if len(recent) > 3:
        recent.pop(0)


run(step)
