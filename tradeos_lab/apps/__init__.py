"""The trader's Voila apps (`apps/*.ipynb`), built here so the notebooks only assemble them.

`monitor.Monitor` shows the pipeline live; `kill_switch.KillSwitchPanel` holds the kill switches
through the operator path; `approvals.ApprovalsPanel` decides the intents waiting for approval.
All attach to a running stack (never start one), refresh in place from a polling thread of their
kernel, say when a tier is down and recover by themselves.
`server` serves `apps/` with Voila on loopback behind a token; `jupyterlab` serves `notebooks/`
with JupyterLab the same way, for `tradeos-lab lab`.
"""

from __future__ import annotations

from tradeos_lab.apps.approvals import ApprovalsPanel
from tradeos_lab.apps.kill_switch import KillSwitchPanel
from tradeos_lab.apps.monitor import Monitor

__all__ = ["ApprovalsPanel", "KillSwitchPanel", "Monitor"]
