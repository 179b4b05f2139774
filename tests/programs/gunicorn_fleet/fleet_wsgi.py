"""A WSGI app for the fleet summary: /order leaks (every order's audit record is kept in a
module-level list), /search churns (big temporary results, and a bounded deque of recent
searches) without leaking. Each response names the worker's pid, so the client knows which
workers served leaking requests. URLs carry no unique query: the standard library caches
parsed URLs (a bounded cache), which is not what this app is about."""

import collections
import itertools
import os

audit_log = []
recent_searches = collections.deque(maxlen=50)
numbers = itertools.count()


def order():
    audit_log.append({"order": next(numbers), "pad": "." * 400})  # LEAK
    return b"ordered"


def search():
    results = [{"hit": i, "text": str(i) * 20} for i in range(200)]  # CHURN
    recent_searches.append(len(results))
    return str(len(results)).encode()


def app(environ, start_response):
    path = environ.get("PATH_INFO")
    body = order() if path == "/order" else search() if path == "/search" else b"pong"
    body += f" pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
