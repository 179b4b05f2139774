"""Not a leak: the last 500 request events (four per request) kept for a debug page in a
deque(maxlen=500): fills during the first seconds, then each new entry pushes out the oldest."""
import collections
import time

from _service import serve

_RECENT = collections.deque(maxlen=500)


def handle(request):
    for stage in ("accepted", "parsed", "handled", "sent"):
        _RECENT.append({"id": request.id, "stage": stage, "at": time.time()})


serve(handle)
