"""Not a leak: compiling many distinct regular expressions (a new pattern per request). The `re`
module caches compiled patterns, but its cache is bounded (512 entries in 3.11-3.13): it fills
in the first second, then evicts as much as it adds."""
import re

from _service import serve


def handle(request):
    for k in range(8):
        re.match(rf"order-{request.id}-{k}-(\d+)/(\w+)", f"order-{request.id}-{k}-42/ok")


serve(handle)
