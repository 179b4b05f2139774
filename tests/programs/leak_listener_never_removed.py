"""Leak (listener-never-removed, bound methods): each request creates an AuditTrail and
subscribes its bound method to the application's event bus; nothing unsubscribes it, so the
bus keeps every trail (and its buffer) alive.

The line to blame is the one that registers the callback: the fix (unsubscribe, or a weak
reference) goes there.

# PATTERN: listener-never-removed
# ROOT: listeners
"""
from _service import serve


class EventBus:
    def __init__(self):
        self.listeners = []

    def subscribe(self, callback):
        self.listeners.append(callback)

    def publish(self, event):
        for callback in self.listeners[-3:]:
            callback(event)


class AuditTrail:
    def __init__(self, user):
        self.user = user
        self.events = []

    def on_event(self, event):
        self.events.append(event)


bus = EventBus()


def handle(request):
    bus.subscribe(AuditTrail(request.user).on_event)  # LEAK
    bus.publish("request-done")


serve(handle)
