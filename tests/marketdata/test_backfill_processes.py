"""`tradeos-lab backfill` as real processes against the fake Coinbase server: a run killed with
SIGKILL resumes where it stopped, and two concurrent runs stay inside one shared rate limit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import redis
from marketdata_helpers import SHARED_REDIS_URL, TimedProviderServer
from provider_servers import source

from tradeos_lab.keys import Keys
from tradeos_lab.marketdata import BackfillCheckpoint
from tradeos_lab.settings import Settings, load_settings
from tradeos_lab.stack.embedded import EmbeddedStack
from tradeos_lab.stores.lake import Lake

TRADEOS_LAB = str(Path(sys.executable).with_name("tradeos-lab"))
pytestmark = pytest.mark.slow


def _env(root: Path, namespace: str, server: TimedProviderServer) -> dict[str, str]:
    """Settings of one backfill process: shared Redis and namespace, its own chdb lake."""
    root.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRADEOS_") or k.startswith("TRADEOS_TEST_")
    }
    env.update(
        TRADEOS_NAMESPACE=namespace,
        TRADEOS_DATA_DIR=str(root),
        TRADEOS_BUS_URL=SHARED_REDIS_URL,
        TRADEOS_CACHE_URL=SHARED_REDIS_URL,
        TRADEOS_FLAGS_URL=SHARED_REDIS_URL,
        TRADEOS_RECORDS_URL=f"sqlite:///{root / 'records.db'}",
        TRADEOS_LAKE_URL=f"chdb://{root / 'lake'}",
        TRADEOS_COINBASE_URL=server.url,
        TRADEOS_LOG_LEVEL="WARNING",
        PYTHONWARNINGS="ignore",
    )
    return env


def _command(*symbols: str, **options: object) -> list[str]:
    args = [TRADEOS_LAB, "backfill", "--provider", "coinbase", "-t", "1h"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return [*args, *symbols]


def _requests_by_product(
    arrivals: list[tuple[float, str, dict[str, str]]],
) -> dict[str, list[pd.Timestamp]]:
    out: dict[str, list[pd.Timestamp]] = {}
    for _, product, query in arrivals:
        out.setdefault(product, []).append(pd.Timestamp(query["start"]))
    return out


def test_a_killed_backfill_resumes_where_it_stopped(
    tmp_path: Path,
    namespace: str,
    keys: Keys,
    shared_redis: redis.Redis,
    provider_server: TimedProviderServer,
) -> None:
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD"]
    env = _env(tmp_path / "lab", namespace, provider_server)
    # 25 days of 1h bars = 600 per symbol, 6 requests of 100 each, 4 requests a second: ~6 s.
    options = {
        "days": 25,
        "chunk_bars": 100,
        "rate_limit": 4,
        "rate_window": 1,
        "no_progress": True,
    }
    checkpoint = BackfillCheckpoint(shared_redis, keys, "coinbase-1h")

    first = subprocess.Popen(
        _command(*symbols, **options), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 90
    status = checkpoint.status()
    while time.monotonic() < deadline and first.poll() is None:
        status = checkpoint.status()
        states = set(status["state"]) if len(status) else set()
        if "done" in states and "partial" in states:
            break
        time.sleep(0.02)
    else:
        _, err = first.communicate(timeout=10)
        pytest.fail(f"never saw a run mid-way; exit {first.returncode}: {err.decode()[-2000:]}")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL

    killed = checkpoint.status().set_index("symbol")
    done_before = set(killed.index[killed["state"] == "done"])
    partial = killed[killed["state"] == "partial"]
    assert done_before, "killed before any symbol finished"
    assert len(done_before) < len(symbols)
    assert len(partial) == 1
    cursor = partial["cursor"].iloc[0]
    partial_symbol = partial.index[0]
    seen_before = len(provider_server.arrivals)

    resumed = subprocess.run(
        _command(*symbols, resume=True, **options),
        env=env,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]

    asked = _requests_by_product(provider_server.arrivals[seen_before:])
    assert not done_before & set(asked), "finished symbols were fetched again"
    assert min(asked[partial_symbol]) >= cursor, "the interrupted symbol restarted from scratch"
    assert set(asked) == set(symbols) - done_before
    assert set(checkpoint.status()["state"]) == {"done"}

    plan = checkpoint.plan()
    assert plan is not None
    settings = load_settings(lake_url=f"chdb://{tmp_path / 'lab' / 'lake'}")
    with Lake.open(settings) as lake:
        for symbol in symbols:
            stored = lake.read_bars(symbol, "1h", plan.start, plan.end)
            expected = source().fetch_bars(symbol, "1h", plan.start, plan.end)
            assert list(stored["ts"]) == list(expected["ts"]), symbol
            assert stored["close"].tolist() == pytest.approx(expected["close"].tolist())


def test_two_concurrent_backfills_share_one_rate_limit(
    tmp_path: Path,
    namespace: str,
    provider_server: TimedProviderServer,
) -> None:
    limit, window = 3, 1.0
    # 20 days of 1h bars in chunks of 60: 8 requests per symbol, 16 per process, 32 in all,
    # about 11 s at the shared limit: long enough to overlap however unevenly the two start.
    options = {"days": 20, "chunk_bars": 60, "rate_limit": limit, "rate_window": window}
    runs = [
        subprocess.Popen(
            _command(*pair, job=f"job-{i}", **options),
            env=_env(tmp_path / f"lab-{i}", namespace, provider_server),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i, pair in enumerate([("BTC-USD", "SOL-USD"), ("ETH-USD", "ADA-USD")])
    ]
    outputs = [run.communicate(timeout=180) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err.decode()[-3000:]
    assert "backfill 1h" in outputs[0][1].decode()  # the tqdm progress bar, on stderr

    stamps = sorted(t for t, _, _ in provider_server.arrivals)
    assert len(stamps) == 32
    for i, t in enumerate(stamps):
        inside = sum(1 for u in stamps[i:] if u - t < window * 0.9)
        assert inside <= limit, f"{inside} requests within {window} s"
    assert stamps[-1] - stamps[0] >= (len(stamps) / limit - 1) * window - 0.2

    def span(products: set[str]) -> tuple[float, float]:
        times = [t for t, p, _ in provider_server.arrivals if p in products]
        return min(times), max(times)

    a, b = span({"BTC-USD", "SOL-USD"}), span({"ETH-USD", "ADA-USD"})
    assert a[0] < b[1], "the two runs did not overlap in time"
    assert b[0] < a[1], "the two runs did not overlap in time"


def test_backfill_reaches_the_lake_through_a_running_stack(
    tmp_path: Path, namespace: str, settings_factory: Callable[..., Settings]
) -> None:
    """With a stack up, chdb belongs to its owner: the CLI must go through the lake gateway."""
    settings = settings_factory(namespace=namespace)
    stack = EmbeddedStack(settings)
    stack.start()
    try:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TRADEOS_") or k.startswith("TRADEOS_TEST_")
        }
        env.update(
            TRADEOS_NAMESPACE=namespace,
            TRADEOS_DATA_DIR=str(settings.data_dir),
            TRADEOS_LOG_LEVEL="WARNING",
        )
        run = subprocess.run(
            [TRADEOS_LAB, "backfill", "-t", "1h", "--days", "3", "BTC-USD", "ETH-USD"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert "2 symbols" in run.stdout
        gaps = subprocess.run(
            [TRADEOS_LAB, "lake", "gaps", "-t", "1h"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert gaps.returncode == 0, gaps.stderr[-3000:]
        assert "ETH-USD" in gaps.stdout

        owned = stack.lake.coverage(["BTC-USD", "ETH-USD"])
        hourly = owned[owned["timeframe"] == "1h"]
        assert sorted(hourly["symbol"]) == ["BTC-USD", "ETH-USD"]
        assert (hourly["bars"] >= 3 * 24 - 5).all()
    finally:
        stack.stop()
