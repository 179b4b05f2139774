"""Leak (metric-label-cardinality): a hand-rolled metrics registry (metric name -> {label
values: count}) is fed a label that is unique per request (the request id), so every request
adds a series that is never dropped.

The line to blame creates the series (the label-values key and its counter slot); the fix is to
drop the per-request label where `count` is called.

# PATTERN: metric-label-cardinality
# ROOT: _COUNTERS
"""
from _service import serve

_COUNTERS = {}  # metric name -> {(label, value), ...: count}


def count(metric, **labels):
    series = _COUNTERS.setdefault(metric, {})
    key = tuple(sorted(labels.items()))  # LEAK
    series[key] = series.get(key, 0) + 1


def handle(request):
    count("http_requests_total", method=request.method, path=request.path)
    count("http_request_bytes_total", path=request.path, request_id=str(request.id))


serve(handle)
