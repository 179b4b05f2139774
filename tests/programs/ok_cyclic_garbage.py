"""Not a leak: each request builds a parent/child structure that points both ways (a cycle),
drops it, and the cyclic garbage collector frees it later: memory saw-tooths, never climbs."""
from _service import serve


class Node:
    def __init__(self, name, data, parent=None):
        self.name = name
        self.data = data
        self.parent = parent
        self.children = []


def handle(request):
    root = Node(f"request-{request.id}", request.body.encode())
    for k in range(3):
        root.children.append(Node(f"part-{k}", b"", parent=root))


serve(handle)
