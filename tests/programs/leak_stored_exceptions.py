"""Leak (stored-exceptions): a batch importer keeps every failure "for the error page"; each
exception's traceback pins the frame that raised it, and that frame's big locals (the parsed
rows) with it.

The line to blame creates the stored exceptions (the `raise` line); the rows they pin are part
of the same leak.

# PATTERN: stored-exceptions
# ROOT: _failures
"""
from _service import serve

_failures = []


class ImportFailed(Exception):
    pass


def import_rows(request):
    rows = [f"{request.id},{n},{request.user},{n * 7 % 13}" for n in range(40)]
    if request.id % 2:
        raise ImportFailed(f"row 40 of request {request.id} is malformed")  # LEAK
    return len(rows)


def handle(request):
    try:
        import_rows(request)
    except ImportFailed as exc:
        _failures.append(exc)


serve(handle)
