"""Leak: failed requests keep their exceptions, whose tracebacks keep frames and locals."""
from _loop import run

failures = []


def parse(i):
    data = bytearray(300)  # LEAK
    raise ValueError(f"bad request {i}")  # ALSO: the exception and its message


def handle(i):
    try:
        parse(i)  # ALSO: the traceback objects
    except ValueError as exc:
        failures.append(exc)


run(lambda i: [handle(i) for _ in range(5)])  # ALSO: frames kept by the tracebacks
