"""Leak: functools.lru_cache(maxsize=None) on a method called with ever-new arguments."""
import functools
from _loop import run


class PriceService:
    @functools.lru_cache(maxsize=None)
    def quote(self, sku):
        return {"sku": sku, "price": len(sku) * 3}  # LEAK


service = PriceService()
run(lambda i: [service.quote(f"sku-{i}-{k}") for k in range(10)])  # ALSO
