"""tradeos-lab: a Jupyter-first research and paper-trading workbench.

    import tradeos_lab as tl
    lab = tl.connect()   # the running stack, or an embedded one started for this process
"""

from __future__ import annotations

__version__ = "0.1.0"

from tradeos_lab.lab import Lab, connect  # noqa: E402 - the version is needed by submodules
from tradeos_lab.settings import Settings, load_settings  # noqa: E402

__all__ = ["Lab", "Settings", "__version__", "connect", "load_settings"]
