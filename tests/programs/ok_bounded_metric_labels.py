"""Not a leak: a hand-rolled metrics registry (name -> {label values: count}) with a fixed
label set (method, route template, status), however many requests come."""
from _service import serve

_COUNTERS = {}


def count(metric, **labels):
    series = _COUNTERS.setdefault(metric, {})
    key = tuple(sorted(labels.items()))
    series[key] = series.get(key, 0) + 1


def handle(request):
    status = "500" if request.id % 97 == 0 else "200"
    count("http_requests_total", method=request.method, path=request.path, status=status)
    count("http_request_bytes_total", path=request.path)


serve(handle)
