"""Leak whose allocation happens deep inside an installed library (plumbline, a local package
installed into site-packages by scripts/setup): a multi-tenant service defines a table per
tenant on a Schema kept for ever, and tenants are created per request. Every allocation is
more than 16 frames below the user's `define` call; that call is the line to blame.

# PATTERN: unbounded-cache
# ROOT: SCHEMA
"""
from plumbline import Schema

from _service import serve

SCHEMA = Schema()
COLUMNS = (("id", "int"), ("created", "timestamp"), ("payload", "json"))


def handle(request):
    SCHEMA.define(f"tenant_{request.id}_events", COLUMNS, partitioned=True)  # LEAK


serve(handle)
