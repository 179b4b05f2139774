"""Progress for long operations, on stderr and only when it is a terminal: a line that says what
is being done and for how long, erased when it is done. Quiet for operations under half a second,
and never in pipes or logs, so machine-readable output stays clean."""

import sys
import threading
import time

_DELAY = 0.5
_TICK = 0.2


class Progress:
    """``with Progress("loading snap.ht"): ...`` shows ``loading snap.ht... 3.2 s`` while it runs."""

    def __init__(self, label, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self._done = threading.Event()
        self._thread = None
        self._shown = False

    def __enter__(self):
        if getattr(self.stream, "isatty", lambda: False)():
            self._thread = threading.Thread(target=self._run, name="heaptrail-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            if self._shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
        return False

    def _run(self):
        start = time.monotonic()
        if self._done.wait(_DELAY):
            return
        while not self._done.wait(_TICK):
            self._shown = True
            self.stream.write(f"\r{self.label}... {time.monotonic() - start:.1f} s\033[K")
            self.stream.flush()
