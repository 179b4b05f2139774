"""Access to the standard library's ``tracemalloc`` even where ``heaptrail`` stands in for it
(``sys.modules['tracemalloc'] = heaptrail``), and the one guarded way to read its pickles."""

import importlib.util
import pickle
import sys
import sysconfig

_STDLIB_NAME = "_heaptrail_stdlib_tracemalloc"


def stdlib_tracemalloc():
    """The real ``tracemalloc`` module of the standard library."""
    module = sys.modules.get("tracemalloc")
    if module is not None and getattr(module, "__name__", "") == "tracemalloc" \
            and not hasattr(module, "_heaptrail_"):
        return module
    module = sys.modules.get(_STDLIB_NAME)
    if module is None:
        path = f"{sysconfig.get_path('stdlib')}/tracemalloc.py"
        spec = importlib.util.spec_from_file_location(_STDLIB_NAME, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_STDLIB_NAME] = module
        spec.loader.exec_module(module)
    return module


class _SnapshotOnlyUnpickler(pickle.Unpickler):
    """Resolves only the two classes a tracemalloc dump contains; any other global in the
    pickle (which is how pickles run code) is refused."""

    _ALLOWED = {("tracemalloc", "Snapshot"), ("tracemalloc", "_Traces")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return getattr(stdlib_tracemalloc(), name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a tracemalloc dump holds only "
            f"tracemalloc.Snapshot objects")


def load_tracemalloc_dump(filename, *, trust_pickle=False):
    """Read a dump written by stdlib ``tracemalloc.Snapshot.dump`` (a pickle) and return it as
    a heaptrail Snapshot.

    Unpickling can run code, so this refuses unless ``trust_pickle=True`` says the file comes
    from a source you trust. Even then only tracemalloc's own classes may be referenced.
    """
    from ._snapshot import Snapshot

    if not trust_pickle:
        raise PermissionError(
            f"{filename} is a pickle (a stdlib tracemalloc dump); loading a pickle can run "
            f"arbitrary code, so heaptrail reads it only with trust_pickle=True "
            f"(--trust-pickle on the command line) for files you trust")
    with open(filename, "rb") as f:
        snapshot = _SnapshotOnlyUnpickler(f).load()
    if not isinstance(snapshot, stdlib_tracemalloc().Snapshot):
        raise pickle.UnpicklingError(f"{filename} does not hold a tracemalloc.Snapshot")
    return Snapshot.from_tracemalloc(snapshot)
