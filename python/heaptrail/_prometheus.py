"""An opt-in Prometheus text-format endpoint for the watcher's latest window.

Binds 127.0.0.1 unless told otherwise. Only GET /metrics is served; nothing a client sends is
interpreted beyond the request line. Site labels are bounded to the reported sites (leaks,
suspects, fixed, and the top sites), leak labels to the leaks of the window, so cardinality
stays small.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import _native

_VERDICTS = tuple(_native.SITE_VERDICTS)
_PROCESS_VERDICTS = tuple(_native.PROCESS_VERDICTS)
_MAX_HOLDER_LABEL = 200  # characters of a holder path kept in a label


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(report):
    """The Prometheus exposition text for one window report."""
    out = []

    def metric(name, kind, help_text, samples):
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

    if report is None:
        metric("heaptrail_windows_total", "counter", "Watcher windows taken.", [({}, 0)])
        return "\n".join(out) + "\n"
    metric("heaptrail_windows_total", "counter", "Watcher windows taken.", [({}, report["window"])])
    metric("heaptrail_rss_bytes", "gauge", "Resident set size of the process.", [({}, report["rss_bytes"])])
    metric("heaptrail_traced_bytes", "gauge", "Memory in live blocks traced by heaptrail.",
           [({}, report["traced_bytes"])])
    metric("heaptrail_traced_peak_bytes", "gauge", "Peak traced memory during the last window.",
           [({}, report["traced_peak_bytes"])])
    metric("heaptrail_process_verdict", "gauge", "1 for the process verdict of the last window.",
           [({"verdict": v}, int(v == report["process_verdict"])) for v in _PROCESS_VERDICTS])
    sites = report["sites"]
    metric("heaptrail_sites", "gauge", "Reported sites per verdict.",
           [({"verdict": v}, sum(1 for s in sites if s["verdict"] == v)) for v in _VERDICTS])
    labels = [({"filename": s["filename"], "lineno": s["lineno"], "verdict": s["verdict"],
                "pattern": s.get("pattern", "")}, s) for s in sites]
    metric("heaptrail_site_bytes", "gauge", "Live memory allocated at a site.",
           [(lab, s["size"]) for lab, s in labels])
    metric("heaptrail_site_blocks", "gauge", "Live blocks allocated at a site.",
           [(lab, s["count"]) for lab, s in labels])
    metric("heaptrail_site_growth_bytes_per_second", "gauge",
           "Growth rate of a site's live memory (Sen's slope).",
           [(lab, s["bytes_per_second"]) for lab, s in labels])
    leaks = report.get("leaks", [])
    leak_labels = [({"filename": e["site"]["filename"], "lineno": e["site"]["lineno"],
                     "holder": (e["holder"] or "")[:_MAX_HOLDER_LABEL], "pattern": e["pattern"]}, e)
                   for e in leaks]
    metric("heaptrail_leak_bytes", "gauge",
           "Live memory of a leak: every site feeding one holder (one series per leak).",
           [(lab, e["size"]) for lab, e in leak_labels])
    metric("heaptrail_leak_growth_bytes_per_second", "gauge", "Growth rate of a leak.",
           [(lab, e["bytes_per_second"]) for lab, e in leak_labels])
    return "\n".join(out) + "\n"


class PrometheusEndpoint:
    """Serves /metrics from a daemon thread; a watcher sink (emit keeps the latest report)."""

    def __init__(self, address):
        self._report = None
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                body = render_metrics(endpoint._report).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(address, Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._serve, name="heaptrail-prometheus", daemon=True)
        self._thread.start()

    def _serve(self):
        from . import _native
        _native._ignore_current_thread(True)
        self._server.serve_forever(poll_interval=0.5)

    def emit(self, report, transitions):
        self._report = report

    def close(self):
        self._server.shutdown()
        self._server.server_close()
