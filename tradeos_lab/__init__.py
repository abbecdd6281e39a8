"""tradeos-lab: a Jupyter-first research and paper-trading workbench.

Start with `lab = tradeos_lab.connect()`: the running stack, or an embedded one started for this
process, with `lab.bus`, `lab.cache`, `lab.flags`, `lab.records` and `lab.lake`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from tradeos_lab.lab import Lab, connect
from tradeos_lab.settings import Settings, load_settings

__all__ = ["Lab", "Settings", "__version__", "connect", "load_settings"]
