"""`tradeos-lab`: the command line. Each command group lives in its own module here."""

from __future__ import annotations

from tradeos_lab.cli.app import cli, main

__all__ = ["cli", "main"]
