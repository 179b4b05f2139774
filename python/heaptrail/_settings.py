"""Settings of the leak watcher, also read from HEAPTRAIL_* environment variables (how
`heaptrail run` configures the processes it starts; `watch()` reads them too)."""

import logging
import os
import re
from dataclasses import dataclass, field, fields, replace

from . import _native

PREFIX = "HEAPTRAIL_"
_UNITS = {"": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "b": 1}


def sample_bytes(sample):
    """The `sample=` argument of start() and watch() as bytes: True -> the default rate,
    False -> 0 (exact), a number of bytes as is, None stays None (each caller's default)."""
    if sample is None:
        return None
    if isinstance(sample, bool):
        return _native.DEFAULT_SAMPLE_RATE if sample else 0
    if not isinstance(sample, int):
        raise TypeError(f"sample must be None, True or a number of bytes, not "
                        f"{type(sample).__name__}")
    if not 0 <= sample < 2**62:
        raise ValueError(f"sample must be a positive number of bytes (or 0 for exact), "
                         f"not {sample}")
    return sample


def parse_bytes(text):
    """"524288", "512K", "512 KiB", "1M" -> bytes (binary units). ValueError otherwise."""
    found = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
    unit = found and _UNITS.get(found.group(2).lower())
    if not unit:
        raise ValueError(f"not a number of bytes: {text!r} (e.g. 524288, 512K, 1M)")
    return int(found.group(1)) * unit


@dataclass(frozen=True)
class Settings:
    interval: float = 60.0    # HEAPTRAIL_INTERVAL: seconds between two windows
    nframe: int = 16          # HEAPTRAIL_NFRAME: frames kept per traceback
    report: str = ""          # HEAPTRAIL_REPORT: JSON Lines report file ("" = none)
    report_max_bytes: int = 64 << 20  # HEAPTRAIL_REPORT_MAX_BYTES: rotate past this (0 = never)
    report_keep: int = 2      # HEAPTRAIL_REPORT_KEEP: rotated files kept (FILE.1 ... FILE.N)
    prometheus: str = ""      # HEAPTRAIL_PROMETHEUS: HOST:PORT of a metrics endpoint ("" = off)
    top: int = 20             # HEAPTRAIL_TOP: sites listed per window (leaks always are)
    include: str = ""         # HEAPTRAIL_INCLUDE: comma-separated fnmatch patterns of user files
    exclude: str = ""         # HEAPTRAIL_EXCLUDE: comma-separated patterns of files never blamed
    sample: int = 0           # HEAPTRAIL_SAMPLE: sampled mode's mean bytes between samples (0 = exact)
    # HEAPTRAIL_PYROSCOPE: URL of a Pyroscope server to push heap profiles to ("" = off).
    # Left out of repr: it may hold a password (user:password@host).
    pyroscope: str = field(default="", repr=False)
    pyroscope_app: str = ""   # HEAPTRAIL_PYROSCOPE_APP: application name ("" = the program's)
    pyroscope_labels: str = ""  # HEAPTRAIL_PYROSCOPE_LABELS: extra labels, NAME=VALUE,...

    def to_environment(self):
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_environment(cls, environ=None, strict=False, **overrides):
        """Defaults, then HEAPTRAIL_* variables, then explicit `overrides` (not None).

        A bad variable (not a number, out of range) is a ValueError naming it when `strict`
        (the CLI checks them before it starts anything); otherwise one WARNING on the
        `heaptrail` logger, and that setting keeps its default: a typo in a deployment's
        environment must not take the application down. Bad `overrides` always raise."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                value = parse_bytes(raw) if f.name == "sample" else type(f.default)(raw)
                replace(cls(), **{f.name: value}).check()
            except ValueError as exc:
                kind = "a number" if isinstance(f.default, (int, float)) else "valid"
                problem = str(exc) if "must be" in str(exc) else f"it is not {kind}"
                message = f"{name}={_shown(f.name, raw)!r} is invalid ({problem})"
                if strict:
                    raise ValueError(message) from None
                logging.getLogger("heaptrail").warning(
                    "heaptrail: %s; using the default %s=%r", message, name,
                    getattr(cls, f.name))
                continue
            values[f.name] = value
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(cls(), **values)
        settings.check()
        return settings

    def patterns(self, name):
        return [p.strip() for p in getattr(self, name).split(",") if p.strip()]

    def prometheus_address(self):
        """(host, port) of the metrics endpoint, or None."""
        if not self.prometheus:
            return None
        host, sep, port = self.prometheus.rpartition(":")
        if not sep:
            host, port = "127.0.0.1", self.prometheus
        try:
            port = int(port)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ValueError(f"prometheus must be HOST:PORT or PORT, not {self.prometheus!r}")
        return (host or "127.0.0.1", port)

    def check_pyroscope(self):
        if self.pyroscope or self.pyroscope_app or self.pyroscope_labels:
            from ._pyroscope import check_app_name, parse_labels, parse_url  # http.client: lazily
            if self.pyroscope:
                parse_url(self.pyroscope)
            if self.pyroscope_app:
                check_app_name(self.pyroscope_app)
            parse_labels(self.pyroscope_labels)

    def check(self):
        if not 1 <= self.nframe <= 65535:
            raise ValueError(f"nframe must be in 1..65535, not {self.nframe}")
        if not self.interval > 0:
            raise ValueError(f"interval must be > 0 seconds, not {self.interval}")
        if self.top < 1:
            raise ValueError(f"top must be >= 1, not {self.top}")
        if self.report_max_bytes < 0:
            raise ValueError(f"report_max_bytes must be >= 0 (0: never rotate), not "
                             f"{self.report_max_bytes}")
        if not 0 <= self.report_keep <= 100:
            raise ValueError(f"report_keep must be in 0..100, not {self.report_keep}")
        if not 0 <= self.sample < 2**62:
            raise ValueError(f"sample must be a number of bytes >= 0 (0: exact), not {self.sample}")
        self.prometheus_address()
        self.check_pyroscope()


def _shown(name, raw):
    """A variable's value as messages show it: a Pyroscope URL without its password."""
    if name == "pyroscope":
        from ._pyroscope import redact
        return redact(raw)
    return raw
