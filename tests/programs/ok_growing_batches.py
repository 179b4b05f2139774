"""Not a leak: temporary batches whose size grows over time (a backlog that gets longer), but
each batch is dropped at the end of its request."""
from _service import serve

started = None


def handle(request):
    global started
    started = started or request.id
    batch = [bytearray(100) for _ in range(20 + (request.id - started) // 2)]  # grows, then dies
    return len(batch)


serve(handle)
