"""Leak (thread-local-accumulation): a thread pool service keeps per-thread state in a
threading.local; the handler appends each request's trace spans to it "to flush later" and
never does. Worker threads live as long as the pool, so their locals only grow.

The line to blame is the user's (it creates the spans), not concurrent.futures' worker loop.

# PATTERN: thread-local-accumulation
# ROOT: _context
"""
import threading
import time

from _service import serve_threaded

_context = threading.local()


def handle(request):
    spans = getattr(_context, "spans", None)
    if spans is None:
        spans = _context.spans = []
    spans.append({"request": request.id, "name": request.path, "start": time.time()})  # LEAK


serve_threaded(handle, workers=4)
