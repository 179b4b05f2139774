"""Leak (per-request-logger): the handler asks for a logger named after the request id;
logging's manager keeps every logger it ever made (logging.Logger.manager.loggerDict).

The allocation happens inside the logging package; the line to blame is the caller's.

# PATTERN: per-request-logger
# ROOT: loggerDict
"""
import logging

from _service import serve

logging.basicConfig(level=logging.WARNING)


def handle(request):
    log = logging.getLogger(f"req.{request.id}")  # LEAK
    log.debug("handling %s %s", request.method, request.path)


serve(handle)
