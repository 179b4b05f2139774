"""A soak run in miniature (issue 9): a service with churn, run-time compiled code, threads and
asyncio, under `heaptrail run` with windows every 0.1 s, a rotating report and a Prometheus
endpoint scraped all along (plus idle connections that never send a request). heaptrail's own
memory, the process's threads and file descriptors must stay flat after warm-up, every scrape
must be answered, and the report must stay within its cap. (The long version is
benches/bench_self_memory.py.)"""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVICE = Path(__file__).resolve().parent / "workloads" / "soak_service.py"
SECONDS = 45
MAX_BYTES = 200_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_long_run_keeps_heaptrail_flat(tmp_path):
    state, report, port = tmp_path / "state.jsonl", tmp_path / "report.jsonl", free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "heaptrail", "run", "--interval", "0.1", "--nframe", "4",
         "--report", str(report), "--report-max-bytes", str(MAX_BYTES), "--report-keep", "2",
         "--prometheus", f"127.0.0.1:{port}", "--", sys.executable, str(SERVICE), str(state),
         str(SECONDS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    idle, scrapes, failures = [], 0, []
    started = time.monotonic()
    try:
        deadline = started + SECONDS + 60
        while service.poll() is None and time.monotonic() < deadline:
            try:
                if len(idle) < 20:  # connections that never send a request
                    idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    assert r.status == 200 and b"heaptrail_windows_total" in r.read()
                scrapes += 1
            except OSError as exc:
                refused = isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)
                # Refused: not listening yet, or the service is ending. Anything else fails.
                if service.poll() is None and not (refused and (
                        scrapes == 0 or time.monotonic() - started > SECONDS - 2)):
                    failures.append(repr(exc))
            time.sleep(0.2)
        out, err = service.communicate(timeout=60)
    finally:
        if service.poll() is None:
            service.kill()
        for s in idle:
            s.close()
    assert service.returncode == 0, err
    assert scrapes >= 50 and not failures, (scrapes, failures[:5])
    samples = [json.loads(line) for line in state.read_text().splitlines()]
    assert len(samples) >= SECONDS - 5 and all(s["tracing"] for s in samples)
    warm, late = samples[:len(samples) // 4], samples[len(samples) // 2:]
    # Threads: the service's own, the watcher and the endpoint's one loop; never more later.
    assert max(s["threads"] for s in late) <= max(s["threads"] for s in warm), samples
    # File descriptors: idle clients are dropped (header timeout), reports are reopened, not
    # leaked (+2: a rotation or an analysis pipe caught in the middle).
    assert max(s["fds"] for s in late) <= max(s["fds"] for s in warm) + 2, samples
    own_growth = late[-1]["own"] - late[0]["own"]
    assert own_growth < 1 << 20, f"heaptrail's bookkeeping grew {own_growth} B in the 2nd half"
    rss_growth = late[-1]["rss"] - min(s["rss"] for s in late[:5])
    assert rss_growth < 8 << 20, f"RSS grew {rss_growth >> 20} MiB in the second half"
    # The report: rotated, bounded, whole lines only, and more windows than history keeps.
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("report"))
    assert files == ["report.jsonl", "report.jsonl.1", "report.jsonl.2"], files
    for name in files:
        path = tmp_path / name
        assert path.stat().st_size <= MAX_BYTES + 64 * 1024
        windows = [json.loads(line) for line in path.read_text().splitlines()]
        assert windows and all(w["schema"] == "heaptrail.watch/2" for w in windows)
    last = [json.loads(line) for line in report.read_text().splitlines()][-1]
    assert last["window"] > 100, "more windows than Watcher.history keeps"
    assert "Traceback" not in err, err[-2000:]
