"""Native growth: memory taken with libc malloc (outside Python's allocators) and never freed."""
import ctypes
from _loop import run

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
kept = []


def step(i):
    p = libc.malloc(256 * 1024)
    ctypes.memset(p, 1, 256 * 1024)  # touch it so it counts in RSS
    kept.append(p)  # an int per block: negligible Python memory


run(step, period=0.02)
