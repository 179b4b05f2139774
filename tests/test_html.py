"""`heaptrail html` on real inputs: a snapshot dumped by a leaking program and the watcher report
of `heaptrail run` on a leaking program. Each page is opened in headless Chromium, which must
render it without a console message, show the top site, paint the flame graph (checked on the
screenshot's pixels) and fetch nothing (every request goes through a recording proxy). Paths
and filenames full of markup check the escaping: injected markup would run and log."""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tools import require

PROGRAMS = Path(__file__).resolve().parent / "programs"
REPORT_PROGRAM = PROGRAMS / "leak_unbounded_cache.py"
# A directory name that is markup: if any of it reached the page unescaped, the script would
# run (a console message) and the image would be fetched (a CSP violation, also logged).
EVIL_DIR = "x\"'&<img src=y onerror=console.error(1)><script>console.error(2)<\\script>"

LEAKY = """\
import sys
import heaptrail

heaptrail.start(10)
cache = []


def remember(i):
    cache.append(("x" * 500 + str(i)).encode())  # LEAK


def main():
    for i in range(5000):
        remember(i)
    heaptrail.take_snapshot().dump(sys.argv[1])


main()
"""
LEAK_LINE = 9

# Requests Chromium makes on its own (time, component updates, sign-in), whatever the page.
# Hosts Chromium contacts for itself whatever the page holds (Debian's Chromium 148 also opens
# www.google.com at start-up); the pages never name them (external_references checks the
# markup), so a request to one of them is never the page's.
CHROMIUM_OWN_HOSTS = {"clients2.google.com", "update.googleapis.com", "accounts.google.com",
                      "www.google.com"}


def heaptrail(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "heaptrail", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """(snapshot file, the leaking program's path) from a real traced run."""
    base = tmp_path_factory.mktemp("snap") / EVIL_DIR
    base.mkdir()
    program = base / "leaky.py"
    program.write_text(LEAKY)
    snap = base.parent / "leaky.heaptrail"
    subprocess.run([sys.executable, str(program), str(snap)], check=True, timeout=120)
    return snap, program


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A watcher report of leak_unbounded_cache.py under `heaptrail run`."""
    path = tmp_path_factory.mktemp("report") / "leaks.jsonl"
    env = dict(os.environ, HEAPTRAIL_TEST_SECONDS="10")
    proc = heaptrail("run", "--interval", "0.5", "--report", path, "--", sys.executable,
                     REPORT_PROGRAM, env=env, cwd=PROGRAMS)
    assert proc.returncode == 0, proc.stderr
    return path


def leak_line(program):
    return next(i for i, line in enumerate(program.read_text().splitlines(), 1)
                if "# LEAK" in line)


# ---- Chromium ----------------------------------------------------------------------------------

class RecordingProxy:
    """An HTTP proxy that records the first line of every request and answers nothing."""

    def __init__(self):
        self.requests = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(4096).split(b"\r\n")[0].decode("latin-1"))
                except OSError:
                    pass

    def close(self):
        self.sock.close()

    def page_requests(self):
        """Requests not made by Chromium for itself. (Chromium may also open a connection to the
        proxy ahead of time and send nothing on it: no request.)"""
        def host(line):
            parts = line.split()
            target = parts[1] if len(parts) > 1 else ""
            target = target.split("://", 1)[-1]
            return target.split("/", 1)[0].rsplit(":", 1)[0]
        return [r for r in self.requests if r and host(r) not in CHROMIUM_OWN_HOSTS]


def browse(page, screenshot=None):
    """Load ``page`` in headless Chromium: (DOM as serialized HTML, console messages, requests
    the page made)."""
    chromium = require("chromium")
    proxy = RecordingProxy()
    try:
        with tempfile.TemporaryDirectory() as profile:
            args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-default-apps",
                    "--disable-extensions", f"--user-data-dir={profile}",
                    f"--proxy-server=http://127.0.0.1:{proxy.port}",
                    "--proxy-bypass-list=<-loopback>", "--enable-logging=stderr", "--v=0",
                    "--window-size=1280,2400", "--virtual-time-budget=3000",
                    # A sandboxed frame (the flame graph's) renders in a process of its own by
                    # default, and a screenshot may be composed before that process has drawn
                    # it: once in CI the flame graph's box came out empty. In the page's
                    # process, with every compositor stage run before a frame is drawn, the
                    # screenshot holds what the page shows.
                    "--disable-features=IsolateSandboxedIframes",
                    "--run-all-compositor-stages-before-draw"]
            if screenshot:
                args.append(f"--screenshot={screenshot}")
            else:
                args.append("--dump-dom")
            proc = subprocess.run(args + [Path(page).resolve().as_uri()], capture_output=True,
                                  text=True, timeout=120)
    finally:
        proxy.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console, proxy.page_requests()


class Elements(HTMLParser):
    """Tags with their attributes and the page text, from serialized HTML."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags = []
        self.text = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag, **attrs):
        return [a for t, a in self.tags
                if t == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())]


def external_references(text):
    """Attributes and style rules that could make a browser fetch something, in ``text`` and in
    the documents of its srcdoc frames."""
    found = []
    doc = Elements(text)
    for tag, attrs in doc.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "srcset", "action", "formaction", "data", "poster",
                        "xlink:href", "background", "ping") and not (value or "").startswith("#"):
                found.append((tag, name, value))
        if tag in ("link", "img", "object", "embed", "audio", "video", "source", "base"):
            found.append((tag, "", ""))
        if tag == "iframe" and "srcdoc" in attrs:
            found += external_references(attrs["srcdoc"])
    style = "".join(doc.text)
    if "@import" in style or "url(" in style:
        found.append(("style", "", "url( or @import"))
    return found


def png_pixels(path):
    """(width, height, rows of (r, g, b)) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and not interlace, header
    bpp = 4 if color == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def flame_red_pixels(png):
    """Pixels in the red of inferno's Python palette (the application's frames): r = 200 + 55v,
    g = b = 50 + 80v for some v in 0..1. Red text and borders blended into white do not
    follow that line."""
    _, _, rows = png_pixels(png)
    return sum(1 for row in rows for r, g, b in row
               if 50 <= g <= 130 and abs(g - b) <= 1 and abs((r - 200) - (g - 50) * 55 / 80) <= 2)


# ---- snapshots ---------------------------------------------------------------------------------

def test_snapshot_page_renders_in_chromium(snapshot, tmp_path):
    snap, program = snapshot
    out = tmp_path / "snap.html"
    proc = heaptrail("html", snap, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    text = out.read_text()
    assert external_references(text) == []

    dom, console, requests = browse(out)
    assert console == []
    assert requests == []
    page = Elements(dom)
    top = f"{program}:{LEAK_LINE}"
    # The headline and the first table row name the leaking line.
    assert "The line holding the most memory is " + top in "".join(page.text)
    rows = page.find("span", class_="mono")
    assert rows and rows[0]["title"] == top
    frames = page.find("iframe", class_="flame")
    assert len(frames) == 1
    inner = frames[0]["srcdoc"]
    # Each box names the function the snapshot recorded for its frame.
    assert "<svg" in inner and f"remember (leaky.py:{LEAK_LINE}) in " in inner
    # The markup in the path is text everywhere, in the page and in the flame graph.
    assert "<img src=y" not in dom.replace("&lt;img src=y", "")
    assert "<img src=y" not in inner.replace("&lt;img src=y", "")

    png = tmp_path / "snap.png"
    _, console, requests = browse(out, screenshot=png)
    assert console == [] and requests == []
    assert flame_red_pixels(png) > 5000


def test_tracemalloc_dump_needs_trust_pickle(tmp_path):
    dump = tmp_path / "stdlib.pickle"
    subprocess.run([sys.executable, "-c",
                    "import sys, tracemalloc\n"
                    "tracemalloc.start(5)\n"
                    "a = [bytes(1000) for _ in range(2000)]\n"
                    "b = [bytes(100) for _ in range(2000)]\n"
                    "c = [str(i) for i in range(5000)]\n"
                    "d = {i: i for i in range(3000)}\n"
                    "tracemalloc.take_snapshot().dump(sys.argv[1])\n", str(dump)],
                   check=True, timeout=60)
    refused = heaptrail("html", dump, "-o", tmp_path / "x.html")
    assert refused.returncode == 2
    assert "--trust-pickle" in refused.stderr and not (tmp_path / "x.html").exists()
    proc = heaptrail("html", dump, "--trust-pickle", "-o", tmp_path / "d.html", "--limit", "3")
    assert proc.returncode == 0, proc.stderr
    page = Elements((tmp_path / "d.html").read_text())
    assert "tracemalloc dump" in "".join(page.text)
    sites = [a["title"] for a in page.find("span", class_="mono")]
    assert sites[0] == "<string>:3"  # `a`, the biggest list of the -c program
    assert len(page.find("td", class_="site")) == 3
    assert "more lines not shown" in "".join(page.text)


# ---- watcher reports ---------------------------------------------------------------------------

def test_report_page_renders_in_chromium(report, tmp_path):
    out = tmp_path / "report.html"
    proc = heaptrail("html", report, "-o", out, "--limit", 5)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert external_references(out.read_text()) == []

    windows = [json.loads(line) for line in report.read_text().splitlines()]
    last = windows[-1]
    line = leak_line(REPORT_PROGRAM)
    site = f"{REPORT_PROGRAM}:{line}"
    leak = next(s for s in last["sites"] if (s["filename"], s["lineno"]) == (str(REPORT_PROGRAM), line))
    assert leak["verdict"] == "leak"

    dom, console, requests = browse(out)
    assert console == []
    assert requests == []
    page = Elements(dom)
    text = "".join(page.text)
    assert f"Process {last['pid']}" in text
    # A chart card for the leaking site, with its verdict, and the verdict's start marked.
    cards = [i for i, (tag, a) in enumerate(page.tags)
             if tag == "div" and a.get("class") == "card v-leak"]
    titles = [page.tags[i + 3][1].get("title") for i in cards]
    assert site in titles, titles
    assert page.find("svg", class_="chart", role="img",
                     **{"aria-label": f"live memory at {site} over time"})
    assert "leak since window" in text
    # The process chart and the sites table, whose first row is a leak.
    assert page.find("svg", class_="chart",
                     **{"aria-label": f"RSS and traced memory of process {last['pid']} over time"})
    first_row_badge = page.tags[[t for t, _ in page.tags].index("tbody") + 3]
    assert first_row_badge == ("span", {"class": "badge v-leak"})
    assert site in [a["title"] for a in page.find("span", class_="mono")]
    assert len(page.find("td", class_="site")) == min(5, len(last["sites"]))
    if len(last["sites"]) > 5:
        assert f"{len(last['sites']) - 5} more sites not shown" in text
    frames = page.find("iframe", class_="flame")
    assert len(frames) == 1 and "<svg" in frames[0]["srcdoc"]
    assert f"leak_unbounded_cache.py:{line} in " in frames[0]["srcdoc"]

    png = tmp_path / "report.png"
    _, console, requests = browse(out, screenshot=png)
    assert console == [] and requests == []
    assert flame_red_pixels(png) > 5000


def test_report_with_markup_in_filenames_and_a_bad_line(report, tmp_path):
    """Filenames in a report are whatever the watched program's paths were: escaped. A broken
    line in the middle is skipped with a warning that names it."""
    evil = f"/srv/{EVIL_DIR}/app.py"
    lines = report.read_text().replace(json.dumps(str(REPORT_PROGRAM))[1:-1],
                                       json.dumps(evil)[1:-1]).splitlines()
    lines.insert(3, lines[3][:50])
    doctored = tmp_path / "doctored.jsonl"
    doctored.write_text("\n".join(lines) + "\n")
    out = tmp_path / "doctored.html"
    proc = heaptrail("html", doctored, "-o", out, "--title", "<b>title</b>")
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"heaptrail html: warning: {doctored}: line 4: ")
    text = out.read_text()
    assert "<b>title</b>" not in text and "&lt;b&gt;title&lt;/b&gt;" in text
    assert "line 4: " in text
    dom, console, requests = browse(out)
    assert console == [] and requests == []
    assert f"{evil}:{leak_line(REPORT_PROGRAM)}" in [
        a["title"] for a in Elements(dom).find("span", class_="mono")]


def test_report_of_several_processes_and_pid(report, tmp_path):
    windows = [json.loads(line) for line in report.read_text().splitlines()]
    pid = windows[0]["pid"]
    other = [dict(w, pid=pid + 1, sites=w["sites"][-1:]) for w in windows[:4]]
    both = tmp_path / "both.jsonl"
    both.write_text("".join(json.dumps(w) + "\n" for w in windows + other))
    proc = heaptrail("html", both, "-o", tmp_path / "both.html")
    assert proc.returncode == 0, proc.stderr
    page = Elements((tmp_path / "both.html").read_text())
    assert [a["id"] for a in page.find("section", class_="run")] == ["run-1", "run-2"]
    assert "Processes" in "".join(page.text)
    proc = heaptrail("html", both, "-o", tmp_path / "one.html", "--pid", pid + 1)
    assert proc.returncode == 0, proc.stderr
    page = Elements((tmp_path / "one.html").read_text())
    assert [a["id"] for a in page.find("section", class_="run")] == ["run-1"]
    assert f"Process {pid + 1}" in "".join(page.text)
    missing = heaptrail("html", both, "-o", tmp_path / "none.html", "--pid", 1)
    assert missing.returncode == 2
    assert missing.stderr == (f"heaptrail html: {both}: no window of process 1 in the report "
                              f"(its processes: {pid}, {pid + 1})\n")


# ---- the command -------------------------------------------------------------------------------

def test_default_output_is_next_to_the_file(report, tmp_path):
    copy = tmp_path / "leaks.jsonl"
    copy.write_bytes(report.read_bytes())
    proc = heaptrail("html", copy)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {tmp_path / 'leaks.html'}\n"
    assert (tmp_path / "leaks.html").read_text().startswith("<!DOCTYPE html>")


def test_help_explains_the_command():
    proc = heaptrail("html", "--help")
    assert proc.returncode == 0
    for word in ("--output", "--title", "--limit", "--pid", "--trust-pickle", "flame graph",
                 "watcher report", "no fonts"):
        assert word in proc.stdout.replace("\n", " ").replace("  ", " "), word


def bad_inputs(tmp, snap):
    """{name: (path, expected message start)} of files `heaptrail html` must refuse."""
    files = {}

    def make(name, data):
        path = tmp / name
        path.write_bytes(data)
        return path

    whole = snap.read_bytes()
    files["empty"] = (make("empty.heaptrail", b""), "{path} is empty")
    files["truncated snapshot"] = (make("cut.heaptrail", whole[:len(whole) // 2]),
                                   "cannot load {path}: ")
    files["flipped snapshot"] = (make("flip.heaptrail", whole[:60] + bytes(b ^ 0x55 for b in whole[60:])),
                                 "cannot load {path}: ")
    files["binary"] = (make("bytes.bin", bytes(range(256)) * 16), "{path} is not a heaptrail snapshot")
    files["text"] = (make("notes.txt", b"hello\n"), "{path} is not a heaptrail snapshot")
    files["html"] = (make("page.html", b"<!DOCTYPE html><p>x</p>"), "{path} is not a heaptrail")
    files["other json"] = (make("other.json", b'{"hello": 1}\n'),
                           "{path}: line 1: not a heaptrail watcher report: no \"schema\" field")
    files["cut report"] = (make("cut.jsonl", b'{"schema":"heaptrail.watch/1","time":1'),
                           "{path}: line 1: not a heaptrail watcher report: incomplete JSON")
    files["newer schema"] = (make("v9.jsonl", b'{"schema":"heaptrail.watch/9"}\n'),
                             "{path}: line 1: not a heaptrail watcher report: schema "
                             "\"heaptrail.watch/9\" is not heaptrail.watch/2")
    # A directory is read as many processes' reports (the fleet page): tests/test_fleet.py.
    files["missing"] = (tmp / "missing.heaptrail", "cannot read {path}: No such file")
    return files


def test_corrupt_and_wrong_type_inputs_fail_with_one_line(snapshot, tmp_path):
    snap, _ = snapshot
    for name, (path, message) in bad_inputs(tmp_path, snap).items():
        out = tmp_path / "out.html"
        proc = heaptrail("html", path, "-o", out)
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr)
        assert proc.stderr.startswith("heaptrail html: " + message.format(path=path)), \
            (name, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert not out.exists(), name


def test_bad_options(snapshot, tmp_path):
    snap, _ = snapshot
    for args, message in [
            (["--limit", "0"], "--limit must be at least 1, not 0"),
            (["--pid", "3"], "--pid applies to watcher reports only"),
            (["-o", snap], f"the page would overwrite {snap}; choose another file with -o"),
            (["-o", tmp_path / "no" / "such" / "dir.html"], "cannot write ")]:
        proc = heaptrail("html", snap, *args)
        assert proc.returncode in (1, 2), (args, proc.stderr)
        assert proc.stderr.startswith(f"heaptrail html: {message}"), (args, proc.stderr)
        assert proc.stderr.count("\n") == 1
    assert snap.read_bytes()[:8] == b"HEAPTRL\0"
    proc = heaptrail("html", snap, "-o", tmp_path / "all.html", "--limit", 10**30)
    assert proc.returncode == 0, proc.stderr


def test_pid_out_of_range(report, tmp_path):
    proc = heaptrail("html", report, "-o", tmp_path / "x.html", "--pid", 2**40)
    assert proc.returncode == 2
    assert proc.stderr == f"heaptrail html: --pid must be a process id, not {2**40}\n"


def test_the_network_check_can_fail(tmp_path):
    """The harness sees a page's fetches: a page with an external image is caught."""
    page = tmp_path / "external.html"
    page.write_text('<!DOCTYPE html><img src="http://example.com/a.png">'
                    '<script>console.log("hi")</script>')
    assert external_references(page.read_text()) == [("img", "src", "http://example.com/a.png"),
                                                     ("img", "", "")]
    _, console, requests = browse(page)
    assert any("example.com" in r for r in requests), requests
    assert any('"hi"' in c for c in console), console
