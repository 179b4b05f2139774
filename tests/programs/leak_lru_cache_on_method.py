"""Leak (lru-cache-on-method): lru_cache on an instance method; every request makes a short-
lived Cart and calls its cached `total()`. The cache (one per class, not per instance) keys on
`self`, so it keeps every Cart alive, with its result (flake8-bugbear B019).

The line to blame creates the cached values (the method's return value); the holder is the
lru_cache of `Cart.total`, which also keeps the carts.

# PATTERN: lru-cache-on-method
# ROOT: Cart.total
"""
import functools

from _service import serve


class Cart:
    def __init__(self, user, skus):
        self.user = user
        self.skus = skus

    @functools.lru_cache(maxsize=None)
    def total(self, currency):
        return {"currency": currency, "lines": [f"{sku}: 9.99" for sku in self.skus]}  # LEAK


def handle(request):
    cart = Cart(request.user, ("SKU-1", "SKU-2", "SKU-3"))
    cart.total("EUR")


serve(handle)
