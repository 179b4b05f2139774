"""The watcher's opt-in Prometheus endpoint: valid exposition format (checked by promtool) and
scraped by a real Prometheus server started by the test. Binds 127.0.0.1."""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

import heaptrail

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs = pytest.mark.skipif(
    not (PROMTOOL and PROMETHEUS) and not os.environ.get("CI"),
    reason="needs Debian's prometheus package (CI installs it)")

leaked = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def watcher():
    heaptrail.stop()
    w = heaptrail.watch(interval=0.2, prometheus="0")
    try:
        for i in range(60):
            leaked.append(bytearray(4096))
            time.sleep(0.01)
        w.check_now()
        yield w
    finally:
        w.stop()
        leaked.clear()


def scrape(address):
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


@needs
def test_metrics_pass_promtool(watcher):
    host, port = watcher._prometheus.address
    assert host == "127.0.0.1"
    text = scrape((host, port))
    assert "heaptrail_traced_bytes " in text and "heaptrail_site_bytes{" in text
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@needs
def test_a_real_prometheus_scrapes_it(watcher, tmp_path):
    target = "%s:%d" % watcher._prometheus.address
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: heaptrail\n    static_configs: [{{targets: ['{target}']}}]\n")
    port = free_port()
    server = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        value = None
        while time.monotonic() < deadline and value is None:
            time.sleep(1)
            try:
                url = f"http://127.0.0.1:{port}/api/v1/query?query=heaptrail_traced_bytes"
                with urllib.request.urlopen(url, timeout=5) as r:
                    result = json.load(r)["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
            except OSError:
                continue
        assert value is not None and value > 0, "Prometheus never scraped heaptrail"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_metrics_endpoint_serves_only_metrics(watcher):
    host, port = watcher._prometheus.address
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{host}:{port}/admin", timeout=5)
    assert err.value.code == 404
