"""The JSON Lines report on disk: whole-line appends from any number of processes, a size cap
with rotation, and faults survived.

* **Whole lines.** The file is opened with O_APPEND and each window is one ``os.write`` of one
  line, so the lines of several processes (pre-fork workers share their parent's report; each
  line carries its pid) never interleave. A write cut short (disk full) is taken back. A write
  cut short because its process died in the middle (``os._exit`` or a fatal signal while the
  watcher thread writes) cannot be taken back: the next window, from any process, starts on a
  new line, so only the dead process's last window is lost, and readers skip it
  (``heaptrail html`` warns about it).
* **Bounded.** Past ``max_bytes`` the file is rotated: FILE -> FILE.1 -> ... -> FILE.<keep>
  (the oldest dropped). Every append and rotation happens under an exclusive ``flock`` of the
  file, so processes sharing it rotate it once and never see each other's write in progress. ``keep=0`` empties the file instead. ``max_bytes=0``: never rotated.
* **Rotation by others.** logrotate's ``copytruncate`` is harmless (appends go to the new end);
  a file moved or deleted (logrotate's ``create``, a cleanup) is noticed before the next write,
  which goes to a fresh FILE.
* **Faults.** A window that cannot be written (disk full, directory gone, permissions) is
  dropped with one WARNING on the ``heaptrail`` logger; one INFO line when writing works again.
  Nothing is raised into the watcher, and what was written before stays intact.
"""

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time

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
        self._closed = False
        self._open()           # an unwritable report at the start is the caller's error

    def append(self, line):
        """Appends `line` (bytes ending with a newline); never raises OSError."""
        with self._lock:
            if self._closed:
                return
            try:
                self._append(line)
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
            self._fd, self._identity, self._closed = None, None, True

    # ---- internals (lock held) ----------------------------------------------------------------

    def _open(self):
        # Read access too: the last byte is checked before each append (see _write_whole).
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
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

    def _append(self, line):
        # Under the file's flock, shared by every process writing it: no write is in progress
        # while one checks the size or the last byte, and the file is rotated once.
        for _ in range(3):
            self._reopen_if_moved()
            with self._file_lock():
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    continue  # another process is rotating it: reopen
                if (st.st_dev, st.st_ino) != self._identity:
                    continue
                if self.max_bytes and st.st_size and st.st_size + len(line) > self.max_bytes:
                    if self.keep == 0:
                        os.ftruncate(self._fd, 0)
                    else:
                        for n in range(self.keep - 1, 0, -1):
                            older = f"{self.path}.{n}"
                            if os.path.exists(older):
                                os.replace(older, f"{self.path}.{n + 1}")
                        os.replace(self.path, f"{self.path}.1")
                        continue  # write to the fresh file, under its own lock
                self._write_whole(line)
                return
        raise OSError(errno.EAGAIN, "the report kept being rotated under us")

    @contextlib.contextmanager
    def _file_lock(self):
        """flock(LOCK_EX) on the open file, waiting up to a second: a process stopped while
        holding it (SIGSTOP) must not stall the others' windows for good."""
        deadline = time.monotonic() + 1.0
        locked = False
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.002)
        try:
            yield
        finally:
            if locked:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _write_whole(self, line):
        # A process that ended in the middle of its write (os._exit or a fatal signal while
        # its watcher wrote, under the lock, which its death released) left a partial last
        # line: ours starts on a line of its own, so only that window is lost.
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            line = b"\n" + line
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
