"""Leak (unbounded-cache): a login service keeps every session in a module dict keyed by a
session id that is new for each request, and never expires one.

The line to blame is the one that creates the cached sessions (the dict's own growing table,
at the line that stores them, is part of the same leak).

# PATTERN: unbounded-cache
# ROOT: _SESSIONS
"""
import hashlib

from _service import serve

_SESSIONS = {}


def handle(request):
    session_id = hashlib.sha1(str(request.id).encode()).hexdigest()
    session = {"user": request.user, "csrf": session_id[:16], "scopes": ["read", "write"]}  # LEAK
    _SESSIONS[session_id] = session


serve(handle)
