"""Code that runs inside other processes, not in the `heaptrail` command's own:

* ``agent``: what `heaptrail attach / detach / snapshot` runs inside the target process. It is
  never imported there: the command sends its source (``_cli.remote.build_code``), so it
  stands alone (the standard library, plus heaptrail once imported in the target).
* ``bootstrap/sitecustomize.py``: loaded at start-up by every Python process `heaptrail run`
  starts; ``BOOTSTRAP``, the folder, is put first on their PYTHONPATH. It is a plain folder,
  not a package, and holds nothing else, so that no other module of heaptrail becomes
  importable by a top-level name in those processes.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))

BOOTSTRAP = os.path.join(_HERE, "bootstrap")
"""The folder `heaptrail run` puts first on PYTHONPATH (it holds only sitecustomize.py)."""

INSTALLATION = os.path.dirname(os.path.dirname(_HERE))
"""The folder this heaptrail is imported from (the one that holds the `heaptrail` package):
what an attached process borrows when it cannot import heaptrail itself."""
