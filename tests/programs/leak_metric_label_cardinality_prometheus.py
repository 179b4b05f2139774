"""Leak (metric-label-cardinality, prometheus_client): a Counter labelled by request id; the
client keeps a child metric per label value for ever (prometheus_client, installed from
PyPI by tests/requirements.txt). The allocations happen inside prometheus_client; the line to
blame is the user's `.labels(...)` call.

# PATTERN: metric-label-cardinality
# ROOT: REQUESTS
"""
from prometheus_client import Counter

from _service import serve

REQUESTS = Counter("shop_requests", "Requests served", ["path", "request_id"])


def handle(request):
    REQUESTS.labels(path=request.path, request_id=str(request.id)).inc()  # LEAK


serve(handle)
