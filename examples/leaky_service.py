"""A small HTTP service with a real memory leak, and its own load.

It serves JSON "orders" on 127.0.0.1 and drives itself with a client thread, so running it is
all it takes:

    python examples/leaky_service.py [--seconds 12] [--port 0]

What happens inside, as in many real services:
* warm-up that plateaus: a product catalogue is loaded lazily, page by page, then stays;
* churn: every request builds temporary objects (parsed query, rendered rows) that die with it;
* the leak: `render_order` memoises rendered responses in a module-level dict keyed by the
  request id, which is unique per request, so the "cache" never hits and never shrinks.
"""

import argparse
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CATALOGUE_PAGES = 40
_catalogue = {}          # warm-up: filled on first use of each page, then stable
_rendered_orders = {}    # the leak: one entry per request, never evicted


def catalogue_page(page):
    if page not in _catalogue:
        _catalogue[page] = [{"sku": f"P{page:03d}-{i:04d}", "price": (i * 37) % 1000 / 10}
                            for i in range(250)]
    return _catalogue[page]


def render_order(request_id, page, quantity):
    items = catalogue_page(page)[:quantity]
    rows = [f"{item['sku']:>12} {item['price']:>8.2f}" for item in items]   # churn
    body = json.dumps({"request": request_id, "rows": rows}).encode()
    _rendered_orders[request_id] = body                                     # leaks
    return body


class OrderHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        _, _, query = self.path.partition("?")
        params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        body = render_order(params.get("id", "?"), int(params.get("page", 0)) % CATALOGUE_PAGES,
                            int(params.get("qty", 10)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the demo's output for heaptrail
        pass


def drive(port, seconds):
    """The service's own load: sequential requests for `seconds`."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        url = f"http://127.0.0.1:{port}/order?id=req-{n}&page={n % CATALOGUE_PAGES}&qty={5 + n % 20}"
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
        n += 1
    return n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="how long to run the load (default 12)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), OrderHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        requests = drive(server.server_address[1], args.seconds)
    finally:
        server.shutdown()
        server.server_close()
    print(f"leaky_service: served {requests} requests; {len(_rendered_orders)} rendered orders kept")


if __name__ == "__main__":
    main()
