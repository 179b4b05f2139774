"""Leak (listener-never-removed, closures): a request handler registers a closure on a
module-level event bus to be told when its order ships; the closure keeps the order's summary,
and the bus never forgets it.

The line to blame is the one that registers the callback (the fix goes there).

# PATTERN: listener-never-removed
# ROOT: _handlers
"""
from _service import serve


class EventBus:
    def __init__(self):
        self._handlers = {}

    def on(self, event, handler):
        self._handlers.setdefault(event, []).append(handler)

    def emit(self, event, *args):
        for handler in self._handlers.get(event, [])[:5]:
            handler(*args)


events = EventBus()
sent = []


def notify(summary, tracking):
    if len(sent) < 10:
        sent.append(f"{summary} shipped ({tracking})")


def handle(request):
    summary = f"order {request.id} for {request.user}: {len(request.body)} bytes"
    events.on("shipped", lambda tracking: notify(summary, tracking))  # LEAK
    events.emit("shipped", "TRACK-1")


serve(handle)
