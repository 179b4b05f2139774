"""Leak held inside an installed library (blinker, from PyPI): each request connects a
receiver to a module-level blinker Signal with weak=False and never disconnects it, so the
signal's receiver tables (blinker's own dicts and sets) keep every receiver.

The line to blame is the user's connect call (it creates the receivers and registers them: the
fix goes there), not blinker's internals.

# PATTERN: listener-never-removed
# ROOT: order_placed
"""
import functools

from blinker import Signal

from _service import serve

order_placed = Signal("order-placed")
shipped = []


def notify_warehouse(order_id, sender, **extra):
    if len(shipped) < 10:
        shipped.append(order_id)


def handle(request):
    order_placed.connect(functools.partial(notify_warehouse, f"order-{request.id}"), weak=False)  # LEAK
    if request.id % 50 == 0:
        order_placed.send("shop")


serve(handle)
