"""External tools the tests drive (go tool pprof, headless Chromium, promtool, gdb): skipped when
missing on a developer machine, but a failure under CI (CI=1, set by .ci/run), which installs
them, so a missing tool can never turn a test green by skipping it."""

import os
import shutil

import pytest


def require(*names, package=None):
    """The path of each tool in ``names`` (a single path for one name); skips the test (fails
    under CI) when one is missing."""
    paths = [shutil.which(n) for n in names]
    missing = [n for n, p in zip(names, paths) if p is None]
    if missing:
        message = f"needs {', '.join(missing)} (Debian package {package or missing[0]})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)
    return paths[0] if len(paths) == 1 else paths
