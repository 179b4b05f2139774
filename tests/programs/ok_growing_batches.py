"""Not a leak: temporary batches that grow over time but are always freed."""
from _loop import run


def step(i):
    batch = [bytearray(100) for _ in range(100 + i)]  # grows, then dies
    return len(batch)


run(step)
