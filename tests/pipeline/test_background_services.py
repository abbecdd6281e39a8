"""A background service's process yields the CPU and the records' write turn to the trading
stages (`Service.background`, set up by `run_service`)."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from types import SimpleNamespace

from tradeos_lab.pipeline.registry import service_class
from tradeos_lab.pipeline.runner import BACKGROUND_NICENESS, yield_to_trading
from tradeos_lab.settings import PIPELINE_SERVICES
from tradeos_lab.stores.records import RecordsStore
from tradeos_lab.stores.records.write_turns import WriteTurns


def test_only_the_services_off_the_way_from_a_bar_to_its_fill_run_in_the_background() -> None:
    background = {name for name in PIPELINE_SERVICES if service_class(name).background}
    assert background == {"tca", "audit_trail"}


def _report_background(database: str, answer: mp.Queue[tuple[int, bool]]) -> None:
    store = RecordsStore.from_url(f"sqlite:///{database}")
    yield_to_trading(SimpleNamespace(records=store))  # type: ignore[arg-type]
    turns = WriteTurns.of(store.engine)
    answer.put((os.nice(0), turns is not None and turns.background))
    store.close()


def test_a_background_service_process_yields_the_cpu_and_the_write_turn(tmp_path: Path) -> None:
    database = str(tmp_path / "records.db")
    RecordsStore.from_url(f"sqlite:///{database}").upgrade()
    ctx = mp.get_context("spawn")
    answer: mp.Queue[tuple[int, bool]] = ctx.Queue()
    process = ctx.Process(target=_report_background, args=(database, answer))
    process.start()
    niceness, background = answer.get(timeout=60)
    process.join(timeout=30)
    assert niceness == os.nice(0) + BACKGROUND_NICENESS
    assert background
