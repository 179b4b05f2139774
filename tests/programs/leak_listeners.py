"""Leak: listeners registered per request and never removed."""
from _loop import run


class EventBus:
    def __init__(self):
        self.listeners = []

    def subscribe(self, fn):
        self.listeners.append(fn)


bus = EventBus()


def handle(i):
    payload = [i] * 40  # LEAK
    bus.subscribe(lambda event: payload)  # ALSO


run(lambda i: [handle(i) for _ in range(10)])  # ALSO: the closure cell is made in handle()'s prologue, which CPython blames on the caller
