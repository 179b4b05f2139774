"""The JSON Lines report on disk: whole-line appends from any number of processes, a size cap
with rotation, and faults survived.

* **Whole lines.** The file is opened with O_APPEND and each window is one ``os.write`` of one
  line, so the lines of several processes (pre-fork workers share their parent's report; each
  line carries its pid) never interleave. A write cut short (disk full) is taken back, so the
  last line of a report is never half a window.
* **Bounded.** Past ``max_bytes`` the file is rotated: FILE -> FILE.1 -> ... -> FILE.<keep>
  (the oldest dropped), under an exclusive ``flock`` so that processes sharing the file rotate
  it once. ``keep=0`` empties the file instead. ``max_bytes=0``: never rotated.
* **Rotation by others.** logrotate's ``copytruncate`` is harmless (appends go to the new end);
  a file moved or deleted (logrotate's ``create``, a cleanup) is noticed before the next write,
  which goes to a fresh FILE.
* **Faults.** A window that cannot be written (disk full, directory gone, permissions) is
  dropped with one WARNING on the ``heaptrail`` logger; one INFO line when writing works again.
  Nothing is raised into the watcher, and what was written before stays intact.
"""

import errno
import fcntl
import logging
import os
import threading

log = logging.getLogger("heaptrail")


class ReportFile:
    def __init__(self, path, max_bytes=0, keep=2):
        self.path = os.fspath(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._fd = None
        self._identity = None  # (st_dev, st_ino) of the open file
        self._failing = None   # the error being reported, while writes fail
        self._open()           # an unwritable report at the start is the caller's error

    def append(self, line):
        """Appends `line` (bytes ending with a newline); never raises OSError."""
        with self._lock:
            if self._fd is None and self._identity == "closed":
                return
            try:
                self._reopen_if_moved()
                if self.max_bytes and os.fstat(self._fd).st_size + len(line) > self.max_bytes:
                    self._rotate(len(line))
                self._write_whole(line)
            except OSError as exc:
                self._fail(exc)
                return
            if self._failing is not None:
                log.info("heaptrail: writing the report %s again", self.path)
                self._failing = None

    def close(self):
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._identity = None, "closed"

    # ---- internals (lock held) ----------------------------------------------------------------

    def _open(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if self._fd is not None:
            os.close(self._fd)
        st = os.fstat(fd)
        self._fd, self._identity = fd, (st.st_dev, st.st_ino)

    def _reopen_if_moved(self):
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == self._identity
        except FileNotFoundError:
            same = False
        if not same or self._fd is None:
            self._open()

    def _rotate(self, incoming):
        # Whoever gets the lock first rotates; the others find a new file under the name.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) != self._identity or st.st_size + incoming <= self.max_bytes:
                return
            if self.keep == 0:
                os.ftruncate(self._fd, 0)
                return
            for n in range(self.keep - 1, 0, -1):
                older = f"{self.path}.{n}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._open()

    def _write_whole(self, line):
        written = os.write(self._fd, line)
        if written == len(line):
            return
        # Cut short: with O_APPEND our bytes end at the file offset. Take them back unless
        # another process appended after them (then its line follows a partial one; rare).
        end = os.lseek(self._fd, 0, os.SEEK_CUR)
        if os.fstat(self._fd).st_size == end:
            os.ftruncate(self._fd, end - written)
        raise OSError(errno.ENOSPC, "the window was cut short (disk full?) and taken back")

    def _fail(self, exc):
        message = exc.strerror or str(exc)
        if self._failing != message:
            log.warning("heaptrail: cannot write the report %s: %s; windows are dropped until "
                        "it can be written again", self.path, message)
            self._failing = message
        if exc.errno in (errno.ENOENT, errno.ESTALE, errno.EACCES):
            # The directory went away or became unwritable: retry opening next time.
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._identity = None, None
