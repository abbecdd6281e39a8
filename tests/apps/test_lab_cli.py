"""`tradeos-lab lab`: JupyterLab on `notebooks/` attached to a stack (here the machine's Redis and
a PostgreSQL records database, given as settings), refusing requests without its token, its
kernels loading the stack's settings but not the token, and nothing left running after SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from up_process import TRADEOS_LAB, read_banner, up_env

from tradeos_lab.apps.jupyterlab import notebooks_dir
from tradeos_lab.pipeline.supervisor import settings_environment
from tradeos_lab.settings import Settings

#: JupyterLab refuses to run as root unless told; test machines often run tests as root.
AS_ROOT = ["--allow-root"] if os.geteuid() == 0 else []
URL = re.compile(r"(http://127\.0\.0\.1:\d+)/lab\?token=(\S+)")


class LabProcess:
    """`tradeos-lab lab` in the background, returned once it printed its URL."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [TRADEOS_LAB, "lab", *AS_ROOT],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.banner = read_banner(self.proc, "lab")
        found = URL.search(self.banner)
        assert found is not None, self.banner
        self.base_url, self.token = found.group(1), found.group(2)

    def family(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]


def _command_line(process: psutil.Process) -> str:
    """The process's command line; empty for a short-lived child that ended (or is a zombie
    not yet reaped) since the family was listed."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


@pytest.fixture
def lab_process(server_settings: Settings, tmp_path: Path) -> Iterator[LabProcess]:
    env = up_env(tmp_path / "lab", **settings_environment(server_settings))
    env["PYTHONWARNINGS"] = "ignore"  # one Redis server for the three tiers
    lab = LabProcess(env)
    family = lab.family()
    yield lab
    for process in family:  # whatever a failed test left running
        if process.is_running():
            process.kill()


def test_lab_serves_the_notebooks_only_with_its_token_and_stops_cleanly_on_sigterm(
    lab_process: LabProcess, server_settings: Settings
) -> None:
    lab = lab_process
    assert lab.banner.count(lab.token) == 1, "the token is printed once"
    with httpx.Client(base_url=lab.base_url, timeout=30) as http:
        assert http.get("/api/contents").status_code == 403
        assert http.get("/api/contents", params={"token": "x" * 32}).status_code == 403
        assert http.get("/lab").status_code in (302, 403)  # to the login page, never the lab

        auth = {"Authorization": f"token {lab.token}"}
        listed = http.get("/api/contents", headers=auth)
        assert listed.status_code == 200
        names = {item["name"] for item in listed.json()["content"]}
        assert names == {p.name for p in notebooks_dir().iterdir() if p.suffix == ".ipynb"}
        assert "00_quickstart.ipynb" in names

        started = http.post("/api/kernels", headers=auth, json={"name": "python3"})
        assert started.status_code == 201, started.text
    kernels = [p for p in lab.family() if "ipykernel" in _command_line(p)]
    assert len(kernels) == 1
    environ = kernels[0].environ()
    assert environ["TRADEOS_NAMESPACE"] == server_settings.namespace
    assert environ["TRADEOS_BUS_URL"] == server_settings.bus_url.get_secret_value()
    assert "JUPYTER_TOKEN" not in environ and "TRADEOS_LAB_TOKEN" not in environ

    family = lab.family()
    lab.proc.send_signal(signal.SIGTERM)
    assert lab.proc.wait(60) == 0
    assert lab.proc.stdout is not None and "stopped" in lab.proc.stdout.read()
    _, alive = psutil.wait_procs(family, timeout=30)
    assert alive == []
