"""Leak (uncollectable-cycle): the process runs with gc.set_debug(gc.DEBUG_SAVEALL) (left on
after a debugging session), so every reference cycle the collector finds is moved to
gc.garbage instead of freed. Each request builds a parent/child pair that points both ways.

The line to blame creates the cyclic objects.

# PATTERN: uncollectable-cycle
# ROOT: gc.garbage
"""
import gc

from _service import serve

gc.set_debug(gc.DEBUG_SAVEALL)


class Node:
    def __init__(self, name, data, parent=None):
        self.name = name
        self.data = data
        self.parent = parent
        self.children = []


def handle(request):
    root = Node(f"request-{request.id}", request.body.encode())  # LEAK
    root.children.append(Node("body", b"", parent=root))


serve(handle)
