"""Not a leak: functools.lru_cache(maxsize=256) on a product lookup fed from a bounded key
space (2,000 products): the cache fills during warm-up, then evicts as much as it adds."""
import functools

from _service import serve


@functools.lru_cache(maxsize=256)
def product(sku):
    return {"sku": sku, "title": f"Product {sku}", "tags": ["new", "sale"][: len(sku) % 3]}


def handle(request):
    for k in range(5):
        product(f"SKU-{(request.id * 7 + k) % 2_000:05d}")


serve(handle)
