"""Leak: a logger per request id; logging's registry keeps every one (the allocation happens
inside the logging package, the line to blame is the caller's)."""
import logging
from _loop import run


def handle(i):
    log = logging.getLogger(f"app.request.{i}")  # LEAK
    log.debug("handled")  # ALSO: logging caches each new logger's level


run(lambda i: [handle(i * 10 + k) for k in range(10)])
