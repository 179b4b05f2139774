"""Loaded at start-up by every Python process that `heaptrail run` starts (this folder is put
first on PYTHONPATH). It starts heaptrail as the HEAPTRAIL_* environment variables say, then
hands over to any other `sitecustomize` module the environment has."""

import importlib.util
import os
import sys


def _start_heaptrail():
    try:
        from heaptrail import _child
        _child.start_from_environment()
    except Exception as exc:  # never break the user's program
        print(f"heaptrail: not tracing this process: {exc}", file=sys.stderr)


def _chain_to_next_sitecustomize():
    here = os.path.dirname(os.path.abspath(__file__))
    others = [p for p in sys.path if os.path.abspath(p or ".") != here]
    from importlib.machinery import PathFinder
    found = PathFinder.find_spec("sitecustomize", others)
    if found is not None and found.loader is not None:
        module = importlib.util.module_from_spec(found)
        sys.modules["sitecustomize"] = module
        found.loader.exec_module(module)


_start_heaptrail()
_chain_to_next_sitecustomize()
