"""Leak (listener-never-removed, spread over several holders): the service has one event bus
per region, made once at start-up; each request subscribes a callback to its region's bus and
nothing unsubscribes it. No single bus holds half of the leak: the six `listeners` lists grow
side by side, inside containers (the buses, the registry) that do not grow at all.

The line to blame is the one that registers the callback, and the holder is the buses'
`listeners` attribute, not the registry of buses or the line that made the buses.

# PATTERN: listener-never-removed
# ROOT: listeners
"""
import time

from _service import serve

REGIONS = ("eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east")


class EventBus:
    def __init__(self, region):
        self.region = region
        self.listeners = []
        self.published = 0

    def subscribe(self, callback):
        self.listeners.append(callback)

    def publish(self, event):
        self.published += 1
        for callback in self.listeners[-2:]:
            callback(event)


_buses = {region: EventBus(region) for region in REGIONS}


def _audit(event, request_id, started):
    return (event["event"], request_id, time.monotonic() - started)


def handle(request):
    bus = _buses[REGIONS[request.id % len(REGIONS)]]
    started = time.monotonic()
    bus.subscribe(lambda event: _audit(event, request.id, started))  # LEAK
    bus.publish({"event": "request-done", "path": request.path})


serve(handle)
