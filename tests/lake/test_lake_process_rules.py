"""chdb's rules made explicit: one process per lake directory, one lake directory per process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from lake_helpers import make_bars

from tradeos_lab.errors import LakeInUse, StackError, StoreError
from tradeos_lab.settings import Settings
from tradeos_lab.stores.lake import Lake, lake_owner


def test_a_process_cannot_open_a_second_lake_directory(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    with Lake.open(settings_factory()) as lake:
        with pytest.raises(StackError, match="one data directory per process") as refused:
            Lake.open(settings_factory(data_dir=tmp_path / "other"))
        assert not isinstance(refused.value, LakeInUse)
        assert lake.query("SELECT 1 AS one")["one"].tolist() == [1]


def test_lakes_on_one_directory_in_one_process_share_the_engine(lake_settings: Settings) -> None:
    first = Lake.open(lake_settings)
    second = Lake.open(lake_settings)
    first.write_bars(make_bars(periods=10))

    assert len(second.read_bars("AAPL", "1m")) == 10
    first.close()
    assert len(second.read_bars("AAPL", "1m")) == 10
    second.close()
    with Lake.open(lake_settings) as again:
        assert len(again.read_bars("AAPL", "1m")) == 10


def test_the_lock_is_released_when_the_lake_closes(lake_settings: Settings) -> None:
    path = lake_settings.data_dir / "lake"
    with Lake.open(lake_settings):
        # Our own process holds it; the probe sees the lock like any other process would.
        assert lake_owner(path) is not None
    assert lake_owner(path) is None


def test_a_closed_lake_refuses_work_clearly(lake_settings: Settings) -> None:
    lake = Lake.open(lake_settings)
    lake.close()
    lake.close()

    with pytest.raises(StoreError, match="closed"):
        lake.query("SELECT 1")


def test_threads_share_one_lake_safely(lake: Lake) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            symbol = f"SYM{i}"
            lake.write_bars(make_bars(symbol, periods=60, seed=i))
            assert len(lake.read_bars(symbol, "1m")) == 60
            assert len(lake.read_bars(symbol, "1h")) == 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert set(lake.coverage()["symbol"]) == {f"SYM{i}" for i in range(6)}
