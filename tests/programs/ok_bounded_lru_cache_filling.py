"""Not a leak: functools.lru_cache(maxsize=4000) on a per-request lookup whose keys are all
different, so the cache grows at every request for longer than the program runs (4,000
entries at 100 requests/s: 40 s). Its growth is a straight line, exactly like a leak's, until
the cache is full; what tells them apart is the holder: a cache with a size bound. The
watcher must report it as warming up (pattern bounded-cache), never as a leak."""
import functools

from _service import serve


@functools.lru_cache(maxsize=4000)
def rendered_receipt(order_id, user):
    return {"order": order_id, "user": user, "lines": [f"line {i} of {order_id}" for i in range(3)]}


def handle(request):
    rendered_receipt(request.id, request.user)


serve(handle)
