"""Leak (unbounded-cache, class-attribute variant): every Connection registers itself in a
registry kept as a class attribute, "for debugging", and nothing ever removes it.

The line to blame creates the connections the registry keeps.

# PATTERN: unbounded-cache
# ROOT: open_connections
"""
import time

from _service import serve


class Connection:
    open_connections = {}  # id -> Connection: a class attribute, lives as long as the class

    def __init__(self, peer, request_id):
        self.peer = peer
        self.request_id = request_id
        self.opened = time.time()
        Connection.open_connections[request_id] = self

    def send(self, payload):
        return len(payload)


def handle(request):
    conn = Connection(f"10.0.{request.id % 250}.{request.id % 97}:443", request.id)  # LEAK
    conn.send(request.body)


serve(handle)
