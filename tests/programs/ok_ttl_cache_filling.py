"""Not a leak: a cachetools.TTLCache(maxsize=3000, ttl=600) of rendered profiles, keyed by
request id, so it grows at every request for longer than the program runs (3,000 entries at
100 requests/s: 30 s; nothing expires in 16 s). Like a bounded lru_cache filling up, its growth
is a straight line until the cache is full; the holder is a third-party cache whose bound is an
attribute (`maxsize`), and the watcher must report it as warming up, never as a leak.

A second, smaller cachetools.LRUCache(maxsize=40) per user fills up within seconds and stays
full: evictions churn it."""
import cachetools

from _service import serve

_profiles = cachetools.TTLCache(maxsize=3000, ttl=600)
_recent_by_user = cachetools.LRUCache(maxsize=40)


def render_profile(request):
    return {"id": request.id, "user": request.user,
            "links": [f"/users/{request.user}/orders/{request.id}/{i}" for i in range(4)]}


def handle(request):
    _profiles[request.id] = render_profile(request)
    _recent_by_user[(request.user, request.path)] = request.id


serve(handle)
