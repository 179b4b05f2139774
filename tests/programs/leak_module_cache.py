"""Leak: an unbounded module-level cache keyed by a unique request id."""
from _loop import run

_responses = {}


def handle(request_id):
    body = ("x" * 200 + str(request_id)).encode()  # LEAK
    _responses[request_id] = body  # ALSO: the cache dict's own table
    return body


run(lambda i: [handle(i * 10 + k) for k in range(10)])  # ALSO: the int keys
