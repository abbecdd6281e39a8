"""`tradeos-lab apps`, `tradeos-lab lab` and `up --no-apps` from the command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil
import pytest
from up_process import TRADEOS_LAB, UpProcess


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    env["TRADEOS_DATA_DIR"] = str(data_dir)
    return env


@pytest.mark.parametrize("command", [["apps"], ["lab", "--allow-root"]])
def test_apps_or_lab_without_a_running_stack_is_one_clear_error(
    tmp_path: Path, command: list[str]
) -> None:
    out = subprocess.run(
        [TRADEOS_LAB, *command],
        env=_env(tmp_path / "lab"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("error: no stack is running for"), out.stderr
    assert "Traceback" not in out.stderr


def test_up_with_no_apps_serves_none_and_says_so(tmp_path: Path) -> None:
    up = UpProcess(tmp_path / "lab", "--no-pipeline", "--no-apps")
    try:
        assert "apps       not served (--no-apps)" in up.banner, up.banner
        family = [" ".join(p.cmdline()) for p in up.descendants()]
        assert not [c for c in family if "tradeos_lab.apps.server" in c], family
    finally:
        up.stop()


def test_the_apps_server_dies_with_a_killed_up(tmp_path: Path) -> None:
    """Even a SIGKILLed `up` (no chance to stop anything) leaves no apps server running."""
    up = UpProcess(tmp_path / "lab", "--no-pipeline")
    family = up.descendants()
    try:
        (server,) = [p for p in family if "tradeos_lab.apps.server" in " ".join(p.cmdline())]
        assert "monitor" in up.banner
        up.proc.kill()
        up.proc.wait(30)
        _, alive = psutil.wait_procs([server], timeout=30)
        assert alive == []
    finally:
        for process in family:  # the embedded servers, not under test here
            if process.is_running():
                process.kill()
