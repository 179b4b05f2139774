"""Leak (unbounded-cache) beside a bounded buffer: each request's summary goes into a
deque(maxlen=500) of recent requests (bounded: fine), and a session store keeps one session
per request token for ever. A summary of 20 characters or fewer *is* its own 20-character
prefix (CPython returns the same string), so the sessions keep some summaries too: the summary
line grows with the leak. It belongs to the session leak; it is never a leak of its own, and
the bounded deque is never named as the holder.

# PATTERN: unbounded-cache
# ROOT: _SESSIONS
"""
import collections

from _service import serve

RECENT = collections.deque(maxlen=500)
_SESSIONS = {}


def handle(request):
    summary = f"{request.method} {request.path} {request.id % 1000}"
    RECENT.append(summary)
    _SESSIONS[f"tok-{request.id}"] = {"user": request.user, "first": summary[:20]}  # LEAK


serve(handle)
