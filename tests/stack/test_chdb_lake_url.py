"""A lake named by `chdb://PATH` under a running stack: chdb opens a directory in one process
only, so the stack (`up`) owns it and serves it through its lake gateway, as it serves the
embedded default; every other process (the services, a notebook) reaches it there. Without a
running stack for the data directory, one process opens it directly, as before."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tradeos_lab.pipeline.supervisor import settings_environment
from tradeos_lab.settings import Settings
from tradeos_lab.stack.owner import StackOwner
from tradeos_lab.status import collect_status
from tradeos_lab.stores.lake import lake_owner

pytestmark = [pytest.mark.redis_server, pytest.mark.postgres]

BARS = 30
#: Writes BARS minute bars of BTC-USD through the lab's lake, says so, and keeps the lake open
#: until a line comes on stdin: the way ingestion holds it while other services read.
WRITER = f"""
import sys
import pandas as pd
import tradeos_lab as tl

lab = tl.connect(start=False)
ts = pd.date_range("2026-12-01", periods={BARS}, freq="1min", tz="UTC")
lab.lake.write_bars(pd.DataFrame({{
    "symbol": "BTC-USD", "timeframe": "1m", "ts": ts,
    "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": 10.0,
}}))
print("written", flush=True)
sys.stdin.readline()
lab.close()
"""
READER = """
import tradeos_lab as tl

with tl.connect(start=False) as lab:
    print(len(lab.lake.read_bars("BTC-USD", "1m")))
"""


def _env(settings: Settings) -> dict[str, str]:
    """This environment without TRADEOS_* settings, plus those that load exactly `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    return {**env, "PYTHONWARNINGS": "ignore", **settings_environment(settings)}


@pytest.fixture
def owner(server_settings: Settings) -> Iterator[StackOwner]:
    """`up` on the servers, with the lake on chdb at a path of its own."""
    stack_owner = StackOwner(server_settings)
    stack_owner.start()
    try:
        yield stack_owner
    finally:
        stack_owner.stop()


def test_the_stack_owns_a_chdb_lake_url_and_serves_it_to_every_other_process(
    server_settings: Settings, owner: StackOwner
) -> None:
    path = server_settings.chdb_lake_path
    assert path is not None and server_settings.lake_url is not None
    assert lake_owner(path) == os.getpid(), "the stack opened the lake at the URL's path"
    assert f"lake       chdb in {path.resolve()}, served" in owner.summary()

    env = _env(server_settings)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "written", (
            writer.communicate(timeout=60)[1][-2000:]
        )
        # while the writer is still connected, another process reads the same lake
        reader = subprocess.run(
            [sys.executable, "-c", READER], env=env, capture_output=True, text=True, timeout=120
        )
        assert reader.returncode == 0, reader.stderr[-2000:]
        assert reader.stdout.strip() == str(BARS)
    finally:
        _, err = writer.communicate("stop\n", timeout=60)
    assert writer.returncode == 0, err[-2000:]

    assert owner.stack is not None
    assert len(owner.stack.lake.read_bars("BTC-USD", "1m")) == BARS
    (lake,) = [p for p in collect_status(server_settings).parts if p.part == "lake"]
    assert lake.state == "up", lake


def test_without_a_stack_one_process_opens_a_chdb_lake_url_itself(
    server_settings: Settings,
) -> None:
    env = _env(server_settings)
    run = subprocess.run(
        [sys.executable, "-c", READER], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "0"
    path = server_settings.chdb_lake_path
    assert path is not None and any(path.iterdir()), "the reader opened the lake at its path"
