"""Leak (lru-cache-unbounded): a price lookup memoised with functools.lru_cache(maxsize=None)
is called with arguments that are new for every request (a timestamp-derived quote id), so the
cache never hits and never evicts.

The line to blame creates the cached values (the function's return value); the holder is the
lru_cache of `quote`. The fix is a bound (maxsize=...) or a key that repeats.

# PATTERN: lru-cache-unbounded
# ROOT: quote
"""
import functools

from _service import serve


@functools.lru_cache(maxsize=None)
def quote(sku, quote_id):
    return {"sku": sku, "quote": quote_id, "tiers": [round(q * 9.99, 2) for q in (1, 5, 10)]}  # LEAK


def handle(request):
    quote(f"SKU-{request.id % 500:05d}", request.id)


serve(handle)
