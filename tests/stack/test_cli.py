"""`tradeos-lab up/status/down` as a user runs them: real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from up_process import TRADEOS_LAB, UpProcess, up_env

import tradeos_lab as tl
from tradeos_lab.cli import cli
from tradeos_lab.stack.runtime import read_runtime
from tradeos_lab.stores.lake import Lake


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return up_env(data_dir, **{"TRADEOS_LOG_LEVEL": "WARNING", **extra})


def _up(data_dir: Path) -> UpProcess:
    """The stack alone (its own behaviour), logging only warnings."""
    return UpProcess(data_dir, "--no-pipeline", TRADEOS_LOG_LEVEL="WARNING")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[UpProcess]:
    up = _up(tmp_path / "lab")
    yield up
    if up.proc.poll() is None:
        up.proc.kill()
        up.proc.wait(30)


def _status(data_dir: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = subprocess.run(
        [TRADEOS_LAB, "status", "--json"],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.returncode, json.loads(out.stdout)


@pytest.mark.parametrize("command", [[], ["up"], ["status"], ["down"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_is_healthy_and_stops_cleanly_on_signal(tmp_path: Path, sig: int) -> None:
    up = _up(tmp_path / "lab")
    children = up.descendants()
    assert len(children) >= 3, "one redis-server per tier"
    code, report = _status(up.data_dir)
    assert code == 0, report
    states = {p["part"]: p["state"] for p in report["parts"]}
    for part in ("stack", "bus", "cache", "flags", "records", "lake"):
        assert states[part] == "up", report
    assert any(p["kind"] == "service" and p["state"] == "up" for p in report["parts"]), "heartbeat"
    assert up.stop(sig) == 0
    time.sleep(0.2)
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert read_runtime(up.data_dir) is None


def test_health_and_metrics_endpoints_answer(running: UpProcess) -> None:
    import urllib.request

    assert running.info.health_url
    with urllib.request.urlopen(f"{running.info.health_url}/healthz", timeout=5) as r:
        health = json.loads(r.read())
    assert health["status"] == "up"
    assert set(health["dependencies"]) >= {"bus", "cache", "flags", "lake"}
    with urllib.request.urlopen(f"{running.info.health_url}/metrics", timeout=5) as r:
        assert b"tradeos_embedded_redis_restarts" in r.read()


def test_down_stops_the_running_stack(running: UpProcess) -> None:
    out = subprocess.run(
        [TRADEOS_LAB, "down"],
        env=_env(running.data_dir),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    assert running.proc.wait(30) == 0
    assert read_runtime(running.data_dir) is None


def test_second_up_on_the_same_data_dir_is_refused(running: UpProcess) -> None:
    out = subprocess.run(
        [TRADEOS_LAB, "up"], env=_env(running.data_dir), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "already running" in out.stderr
    assert f"process {running.proc.pid}" in out.stderr
    assert _status(running.data_dir)[0] == 0, "the first stack is untouched"


def test_status_exits_nonzero_and_says_why_when_nothing_runs(tmp_path: Path) -> None:
    code, report = _status(tmp_path / "empty")
    assert code == 1
    stack = next(p for p in report["parts"] if p["part"] == "stack")
    assert stack["state"] == "down"
    assert "tradeos-lab up" in stack["detail"]


def test_status_reports_a_killed_server_restarted(running: UpProcess) -> None:
    os.kill(running.info.redis_pids["cache"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = read_runtime(running.data_dir)
        if info and info.redis_pids["cache"] != running.info.redis_pids["cache"]:
            break
        time.sleep(0.1)
    code, report = _status(running.data_dir)
    cache = next(p for p in report["parts"] if p["part"] == "cache")
    assert code == 0
    assert cache["state"] == "up"
    assert "restarted 1x" in cache["detail"]


def test_a_bad_setting_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    out = subprocess.run(
        [TRADEOS_LAB, "up"],
        env=_env(tmp_path / "lab", TRADEOS_PROFILE="staging"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "TRADEOS_PROFILE" in out.stderr
    assert not (tmp_path / "lab").exists(), "nothing was started"


WRITER = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    import tradeos_lab as tl
    lab = tl.connect(data_dir=sys.argv[1])
    start = pd.Timestamp.now(tz="UTC").floor("1D") - pd.Timedelta(days=1)  # inside the 1m retention
    for batch in range(int(sys.argv[2])):
        ts = pd.date_range(start + pd.Timedelta(minutes=10 * batch), periods=10, freq="1min")
        lab.lake.write_bars(pd.DataFrame({
            "symbol": "AAPL", "timeframe": "1m", "ts": ts, "open": 100.0, "high": 101.0,
            "low": 99.0, "close": 100.5, "volume": 1000.0}))
        print(batch, flush=True)
    lab.close()
    """
)


def test_a_notebook_uses_the_lake_while_up_owns_it_and_another_process_writes(
    running: UpProcess,
) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(running.data_dir), "30"],
        env=_env(running.data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    with tl.connect(data_dir=running.data_dir) as lab:
        assert not lab.owns_stack
        while writer.poll() is None:
            n = lab.lake.read_bars("AAPL", "1m")
            seen.append(len(n))
            time.sleep(0.05)
        assert writer.wait(60) == 0, writer.stderr.read() if writer.stderr else ""
        final = lab.lake.read_bars("AAPL", "1m")
        # `up` settles the writer's rollups by itself: no read of a coarse tier asked for it.
        deadline = time.monotonic() + 30
        while _pending_spans(lab.lake) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _pending_spans(lab.lake) == 0
        hourly = lab.lake.backend.query_arrow("SELECT sum(volume) AS v FROM bars_1h FINAL", {})
        assert hourly["v"][0].as_py() == 300 * 1000.0
    assert len(final) == 300
    assert seen == sorted(seen), "reads never go backwards while the writer writes"
    assert _status(running.data_dir)[0] == 0


def _pending_spans(lake: Lake) -> int:
    """Spans queued for a rollup refresh, read without settling them."""
    sql = "SELECT count() AS n FROM rollup_pending FINAL WHERE done = 0"
    return int(lake.backend.query_arrow(sql, {})["n"][0].as_py())


def test_connect_without_a_running_stack_owns_one_and_stops_it(tmp_path: Path) -> None:
    lab = tl.connect(data_dir=tmp_path / "lab")
    assert lab.owns_stack
    pids = [lab.stack.servers[r].pid for r in ("bus", "cache", "flags")]  # type: ignore[union-attr]
    assert lab.bus.redis.ping()
    second = tl.connect(data_dir=tmp_path / "lab")
    assert not second.owns_stack
    assert second.lake.query("SELECT 41 + {x:UInt8} AS v", {"x": 1})["v"].iloc[0] == 42
    second.close()
    lab.close()
    time.sleep(0.2)
    assert not [
        p for p in pids if p and psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
    ]


def test_a_planted_broker_key_appears_in_no_output_of_a_running_stack(tmp_path: Path) -> None:
    key, secret = "PKPLANTEDKEY7777777", "planted-secret-value-8888"
    extra = {
        "TRADEOS_ALPACA_API_KEY": key,
        "TRADEOS_ALPACA_SECRET_KEY": secret,
        "TRADEOS_LOG_LEVEL": "DEBUG",
    }
    up = UpProcess(tmp_path / "lab", "--no-pipeline", **extra)
    status = subprocess.run(
        [TRADEOS_LAB, "status"],
        env=_env(up.data_dir, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    up.stop()
    assert up.proc.stderr is not None
    # JSON logs go to files under the data directory (stderr gets them with --log-stderr)
    files = "".join(p.read_text() for p in sorted((up.data_dir / "logs").glob("*.log")))
    logs = up.proc.stderr.read() + files
    assert '"severity": "INFO"' in logs, "the stack logged at all"
    everything = up.banner + "".join(up.output) + logs + status.stdout + status.stderr
    assert key not in everything
    assert secret not in everything
    password = (up.data_dir / "secret").read_text().strip()
    assert password not in everything
