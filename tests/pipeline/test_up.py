"""`tradeos-lab up` with the pipeline, as a user runs it: the embedded stack, every service as its
own supervised process, `status`, `down`, and the kill switches armed on a dev machine only."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from up_process import TRADEOS_LAB, UpProcess, up_env

import tradeos_lab as tl
from tradeos_lab.keys import Stream
from tradeos_lab.settings import NEWS_SERVICES, PIPELINE_SERVICES
from tradeos_lab.stack.runtime import read_runtime

#: What `up` runs with no news source configured.
DEFAULT_SERVICES = tuple(n for n in PIPELINE_SERVICES if n not in NEWS_SERVICES)

# How long a test waits for processes to start on a busy machine (imports, servers).
START_S = 120.0


class Up(UpProcess):
    """`up` with the pipeline: its services' rows in `status`."""

    def status(self) -> dict[str, Any]:
        out = subprocess.run(
            [TRADEOS_LAB, "status", "--json"],
            env=up_env(self.data_dir),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return dict(json.loads(out.stdout))

    def services(self) -> dict[str, dict[str, Any]]:
        """Pipeline service rows of `status --json`, by service name."""
        return {
            p["part"].split("/")[0]: p
            for p in self.status()["parts"]
            if p["kind"] == "service" and p["part"].split("/")[0] in PIPELINE_SERVICES
        }


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    started: list[Up] = []

    def start(*args: str, **env: str) -> Up:
        up = Up(tmp_path / f"lab{len(started)}", *args, **env)
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()


def eventually(condition: Callable[[], bool], timeout: float = START_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_up_runs_every_service_and_down_leaves_no_process_behind(
    start_up: Callable[..., Up],
) -> None:
    up = start_up()
    assert eventually(
        lambda: {n for n, p in up.services().items() if p["state"] == "up"} == set(DEFAULT_SERVICES)
    ), up.status()
    family = up.descendants()
    assert len(family) >= 3 + len(DEFAULT_SERVICES), "three redis-servers and the services"
    # Off a terminal too, up prints its fills as readable lines, not JSON.
    assert up.printed(" FILL ", timeout=START_S), "".join(up.output)
    assert not [line for line in up.output if line.lstrip().startswith("{")]

    out = subprocess.run(
        [TRADEOS_LAB, "down"], env=up_env(up.data_dir), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert up.proc.wait(60) == 0
    _, still = psutil.wait_procs(family, timeout=10)
    assert alive(still) == []


def test_supervisor_restarts_a_sigkilled_service_and_status_shows_it(
    start_up: Callable[..., Up],
) -> None:
    # Positions alone: the restart is the supervisor's, whichever service it is.
    up = start_up(TRADEOS_PIPELINE_SERVICES="positions")
    assert eventually(lambda: up.services().get("positions", {}).get("state") == "up")
    first = up.services()["positions"]
    assert first["restarts"] == 0
    victim = psutil.Process(int(first["part"].rsplit("-", 1)[1]))
    victim.send_signal(signal.SIGKILL)

    def runs_again() -> bool:
        row = up.services().get("positions", {})
        return row.get("state") == "up" and row["part"] != first["part"]

    assert eventually(runs_again), up.status()
    assert up.services()["positions"]["restarts"] == 1
    with tl.connect(data_dir=up.data_dir, start=False) as lab:
        actions = list(lab.bus.inspect.read(Stream.AUDIT)["payload.action"])
    assert "service.restarted" in actions


def test_no_pipeline_starts_no_service(start_up: Callable[..., Up]) -> None:
    up = start_up("--no-pipeline")
    assert "pipeline   not started" in up.banner
    names = [" ".join(p.cmdline()) for p in up.descendants()]
    assert not [n for n in names if " service " in n], names
    assert up.services() == {}


def test_dev_profile_arms_the_kill_switches_at_start_and_audits_it_as_stack_up(
    start_up: Callable[..., Up],
) -> None:
    up = start_up("--no-pipeline")
    with tl.connect(data_dir=up.data_dir, start=False) as lab:
        assert lab.kill_switches.state().armed
        audit = lab.bus.inspect.read(Stream.AUDIT)
    armed = audit[audit["payload.action"] == "kill_switch.armed"]
    assert list(armed["payload.actor"]) == ["stack:up"]
    assert "armed by `up`" in up.banner


def test_prod_profile_leaves_the_kill_switches_to_an_operator(
    start_up: Callable[..., Up],
) -> None:
    up = start_up("--no-pipeline", TRADEOS_PROFILE="prod")
    with tl.connect(data_dir=up.data_dir, start=False, profile="prod") as lab:
        assert not lab.kill_switches.state().armed
        audit = lab.bus.inspect.read(Stream.AUDIT)
    assert "payload.action" not in audit or "kill_switch.armed" not in set(audit["payload.action"])
    assert "tradeos-lab flags arm" in up.banner


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--strategy", "no_such_strategy"], "unknown strategy 'no_such_strategy'"),
        (["--strategy", "sma_cross", "--strategy", "nowhere.mod:Cls"], "nowhere.mod"),
        (["--symbols", "BTC-USD,BTC USD"], "'BTC USD' is not a ticker"),
        (["--feed", "tape"], "unknown feed 'tape'"),
    ],
)
def test_bad_choice_of_what_up_runs_is_one_clear_error_exit_2(
    tmp_path: Path, args: list[str], named: str
) -> None:
    out = subprocess.run(
        [TRADEOS_LAB, "up", *args],
        env=up_env(tmp_path / "lab"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    first = out.stderr.strip().splitlines()[0]
    assert first.startswith("config error: ") and named in first, out.stderr
    assert "Traceback" not in out.stderr
    assert read_runtime(tmp_path / "lab") is None, "nothing was started"


def test_service_runs_in_the_foreground_and_sigterm_stops_it_cleanly(
    start_up: Callable[..., Up],
) -> None:
    up = start_up("--no-pipeline")
    proc = subprocess.Popen(
        [TRADEOS_LAB, "service", "positions"],
        env=up_env(up.data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert eventually(lambda: up.services().get("positions", {}).get("state") == "up")
        assert up.services()["positions"]["part"].endswith(f"-{proc.pid}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.stderr is not None
    assert "positions stopped" in proc.stderr.read()
    with tl.connect(data_dir=up.data_dir, start=False) as lab:
        assert "positions" not in {w.service for w in lab.flags.workers.live_workers()}


def test_unknown_service_is_one_clear_error_exit_2(tmp_path: Path) -> None:
    out = subprocess.run(
        [TRADEOS_LAB, "service", "brokerage"],
        env=up_env(tmp_path / "lab"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("config error: no pipeline service named 'brokerage'")


def test_services_die_with_a_killed_up(start_up: Callable[..., Up]) -> None:
    """Even a SIGKILLed `up` (no chance to stop anything) leaves no service running."""
    up = start_up(TRADEOS_PIPELINE_SERVICES="positions")
    assert eventually(lambda: up.services().get("positions", {}).get("state") == "up")
    family = up.descendants()
    services = [p for p in family if " service " in " ".join(p.cmdline())]
    assert len(services) == 1
    up.proc.kill()
    up.proc.wait(30)
    try:
        _, still = psutil.wait_procs(services, timeout=30)
        assert alive(still) == []
    finally:
        for process in alive(family):  # the embedded servers, not under test here
            process.kill()


@pytest.mark.parametrize("echo", [True, False])
def test_json_logs_go_to_files_and_to_stderr_only_with_log_stderr(
    start_up: Callable[..., Up], echo: bool
) -> None:
    args = ["--log-stderr"] if echo else []
    up = start_up(*args, TRADEOS_PIPELINE_SERVICES="positions")
    assert eventually(lambda: up.services().get("positions", {}).get("state") == "up")
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(60) == 0
    assert up.proc.stderr is not None
    stderr = up.proc.stderr.read()
    logs = up.data_dir / "logs"
    for service in ("stack", "positions"):
        lines = (logs / f"{service}.log").read_text().splitlines()
        assert lines and all(json.loads(line)["service"] == service for line in lines)
        assert (f'"service": "{service}"' in stderr) is echo, stderr[-2000:]
