"""Slow leak (about 2-3 KB/s): an audit trail keeps a small tuple per request in a module list,
under the same bursty temporaries as every other program (100 B - 5 KB bytes, sometimes dozens
at once), which dwarf it in any single window. Needs a longer run to be seen.

# PATTERN: unbounded-list
# ROOT: _AUDIT_TRAIL
# INTERVAL: 2
# SECONDS: 36
"""
import time

from _service import serve

_AUDIT_TRAIL = []


def handle(request):
    _AUDIT_TRAIL.append((request.user, request.method, round(time.time() % 86400, 3)))  # LEAK


serve(handle, rate=30)
