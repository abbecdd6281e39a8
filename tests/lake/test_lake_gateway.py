"""The lake gateway: another process uses the embedded lake through the process that owns it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from lake_helpers import ANCHOR, make_bars

from tradeos_lab.errors import (
    DependencyUnavailable,
    LakeInUse,
    StackError,
    StoreError,
    TradeosError,
    ValidationError,
)
from tradeos_lab.settings import Settings
from tradeos_lab.stores.lake import Lake, lake_owner, serve_gateway

OWNER_SCRIPT = Path(__file__).with_name("lake_owner_process.py")


def test_the_client_gets_the_same_frames_as_the_owner(gateway_pair: tuple[Lake, Lake]) -> None:
    owner, client = gateway_pair
    bars = make_bars(periods=150)
    owner.write_bars(bars[bars["ts"] != ANCHOR + pd.Timedelta(minutes=7)])
    hour = pd.Timedelta(hours=1)

    same: list[Callable[[Lake], pd.DataFrame]] = [
        lambda lake: lake.read_bars("AAPL", "1m"),
        lambda lake: lake.read_bars("AAPL", "5m", limit=3),
        lambda lake: lake.coverage(),
        lambda lake: lake.gaps("AAPL", "1m", ANCHOR, ANCHOR + 3 * hour),
        lambda lake: lake.atr_regime("AAPL", "1m", window=5, lookback=20),
        lambda lake: lake.volume_percentile("AAPL", "1m", lookback=10),
        lambda lake: lake.opening_range_breakout("AAPL", "1m", range_minutes=15),
        lambda lake: lake.resample("AAPL", "1h"),
        lambda lake: lake.query("SELECT * FROM bars_15m FINAL ORDER BY ts"),
    ]
    for call in same:
        pd.testing.assert_frame_equal(call(client), call(owner))


def test_writes_through_the_gateway_land_in_the_owners_lake(
    gateway_pair: tuple[Lake, Lake],
) -> None:
    owner, client = gateway_pair

    assert client.write_bars(make_bars("ETH-USD", periods=60)) == 60
    client.record_gaps("ETH-USD", "1m", ANCHOR, ANCHOR + pd.Timedelta(hours=2))

    assert len(owner.read_bars("ETH-USD", "1m")) == 60
    assert len(owner.read_bars("ETH-USD", "1h")) == 1
    assert len(owner.gap_ledger("ETH-USD")) == 1


def raised(call: Callable[[Lake], object], lake: Lake) -> TradeosError:
    with pytest.raises(TradeosError) as info:
        call(lake)
    return info.value


def test_owner_errors_come_back_as_the_same_class_with_the_same_message(
    gateway_pair: tuple[Lake, Lake],
) -> None:
    owner, client = gateway_pair
    calls: list[Callable[[Lake], object]] = [
        lambda lake: lake.query("SELECT * FROM no_such_table"),
        lambda lake: lake.query("SELECT {x:UInt8} AS x", {"x": "not a number"}),
        lambda lake: lake.command("CREATE TABLE bars_1m (a UInt8) ENGINE = Memory"),
        lambda lake: lake.insert_df("no_such_table", pd.DataFrame({"a": [1]})),
    ]
    for call in calls:
        at_owner, at_client = raised(call, owner), raised(call, client)
        assert type(at_client) is type(at_owner)
        assert str(at_client) == str(at_owner)
    assert isinstance(raised(calls[0], client), StoreError)
    assert isinstance(raised(calls[1], client), ValidationError)


def test_requests_without_the_right_token_are_refused(lake: Lake) -> None:
    token = secrets.token_urlsafe(24)
    server = serve_gateway(lake, token)
    try:
        anonymous = httpx.post(f"{server.url}/v1/query", json={"sql": "SELECT 1"})
        wrong = httpx.post(
            f"{server.url}/v1/query",
            json={"sql": "SELECT 1"},
            headers={"Authorization": "Bearer " + "x" * 32},
        )
        assert anonymous.status_code == wrong.status_code == 401
        assert anonymous.json()["error"] == "StackError"
        with pytest.raises(StackError, match="token"):
            Lake.over_gateway(server.url, "not-the-token-at-all")
    finally:
        server.shutdown()


def test_malformed_requests_are_rejected_with_a_validation_error(lake: Lake) -> None:
    token = secrets.token_urlsafe(24)
    server = serve_gateway(lake, token)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        not_json = httpx.post(f"{server.url}/v1/query", content=b"{nope", headers=auth)
        no_sql = httpx.post(f"{server.url}/v1/command", json={"params": {}}, headers=auth)
        not_arrow = httpx.post(
            f"{server.url}/v1/insert", params={"table": "bars_1m"}, content=b"xx", headers=auth
        )
        bad_table = httpx.post(
            f"{server.url}/v1/insert",
            params={"table": "x; DROP TABLE y"},
            content=b"",
            headers=auth,
        )
        for response in (not_json, no_sql, not_arrow, bad_table):
            assert response.status_code == 400
            assert response.json()["error"] == "ValidationError"
        assert httpx.get(f"{server.url}/v1/nothing", headers=auth).status_code == 404
    finally:
        server.shutdown()


def test_the_gateway_listens_on_loopback_only_and_needs_a_real_token(lake: Lake) -> None:
    with pytest.raises(StackError, match="loopback"):
        serve_gateway(lake, secrets.token_urlsafe(24), host="0.0.0.0")
    with pytest.raises(StackError, match="token"):
        serve_gateway(lake, "short")


def test_a_stopped_gateway_is_reported_as_unavailable(lake: Lake) -> None:
    token = secrets.token_urlsafe(24)
    server = serve_gateway(lake, token)
    client = Lake.over_gateway(server.url, token)
    server.shutdown()

    with pytest.raises(DependencyUnavailable, match="does not answer"):
        client.query("SELECT 1")
    client.close()


def test_concurrent_clients_are_served_one_statement_at_a_time(
    gateway_pair: tuple[Lake, Lake],
) -> None:
    owner, client = gateway_pair
    owner.write_bars(make_bars(periods=100))
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                assert len(client.read_bars("AAPL", "1m")) == 100
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []


# ---- a real second process -------------------------------------------------------------------


@pytest.fixture
def owner_process(lake_settings: Settings) -> Iterator[tuple[dict[str, object], str]]:
    """A separate process that owns the lake of `lake_settings`, serves it and keeps writing."""
    token = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    proc = subprocess.Popen(
        [sys.executable, str(OWNER_SCRIPT), str(lake_settings.data_dir), token],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        line = proc.stdout.readline()
        if not line:
            stderr = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the lake owner process did not start: {stderr}")
        yield json.loads(line), token
    finally:
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_a_second_process_reads_through_the_gateway_while_the_owner_writes(
    owner_process: tuple[dict[str, object], str], lake_settings: Settings
) -> None:
    info, token = owner_process
    client = Lake.over_gateway(str(info["url"]), token)
    try:
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(seen) < 5 or seen[-1] <= seen[0]):
            seen.append(len(client.read_bars("BTC-USD", "1m")))
            time.sleep(0.05)
        assert seen[-1] > seen[0], f"the owner's writes never showed up: {seen}"
        assert seen == sorted(seen)
        assert not client.read_bars("BTC-USD", "5m").empty

        client.write_bars(make_bars("ETH-USD", periods=30))
        assert len(client.read_bars("ETH-USD", "1m")) == 30
    finally:
        client.close()


def test_opening_the_owned_lake_directly_is_refused_with_a_pointer_to_the_gateway(
    owner_process: tuple[dict[str, object], str], lake_settings: Settings
) -> None:
    info, _ = owner_process

    with pytest.raises(LakeInUse) as refused:
        Lake.open(lake_settings)

    assert isinstance(refused.value, StackError)
    assert f"process {info['pid']}" in str(refused.value)
    assert "gateway" in str(refused.value)
    assert lake_owner(lake_settings.data_dir / "lake") == info["pid"]
