"""gunicorn config: every worker watched by heaptrail, writing its own report
($FLEET_REPORT_DIR/w-<pid>.jsonl). heaptrail has no per-process placeholder in --report, so
`heaptrail run` workers share one file; a post_fork hook gives each worker its own."""

import os

import heaptrail


def post_fork(server, worker):
    report = os.path.join(os.environ["FLEET_REPORT_DIR"], f"w-{os.getpid()}.jsonl")
    heaptrail.watch(report=report, interval=float(os.environ.get("FLEET_INTERVAL", "0.5")))
