"""A background service's process yields the CPU and the records' write turn to the trading
stages (`Service.background`, set up by `run_service`), and reads its inputs in fewer, larger
batches."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from runner_toys import Relay, bar

from tradeos_lab.contracts import Message
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline import ServiceContext, ServiceRunner
from tradeos_lab.pipeline.registry import service_class
from tradeos_lab.pipeline.runner import BACKGROUND_NICENESS, yield_to_trading
from tradeos_lab.pipeline.service import BACKGROUND_LINGER_S
from tradeos_lab.settings import PIPELINE_SERVICES
from tradeos_lab.stores.records import RecordsStore
from tradeos_lab.stores.records.write_turns import WriteTurns


def test_only_the_services_off_the_way_from_a_bar_to_its_fill_run_in_the_background() -> None:
    background = {name for name in PIPELINE_SERVICES if service_class(name).background}
    assert background == {"tca", "audit_trail"}


def _scheduler() -> int | None:
    """This process's scheduling policy, where the OS tells it."""
    return os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None


def _report_background(database: str, answer: mp.Queue[tuple[int, int | None, bool]]) -> None:
    store = RecordsStore.from_url(f"sqlite:///{database}")
    yield_to_trading(SimpleNamespace(records=store))  # type: ignore[arg-type]
    turns = WriteTurns.of(store.engine)
    answer.put((os.nice(0), _scheduler(), turns is not None and turns.background))
    store.close()


def test_a_background_service_process_yields_the_cpu_and_the_write_turn(tmp_path: Path) -> None:
    database = str(tmp_path / "records.db")
    RecordsStore.from_url(f"sqlite:///{database}").upgrade()
    ctx = mp.get_context("spawn")
    answer: mp.Queue[tuple[int, int | None, bool]] = ctx.Queue()
    process = ctx.Process(target=_report_background, args=(database, answer))
    process.start()
    niceness, scheduler, background = answer.get(timeout=60)
    process.join(timeout=30)
    assert niceness == os.nice(0) + BACKGROUND_NICENESS
    if hasattr(os, "SCHED_IDLE"):  # Linux: a trading stage that wakes preempts it at once
        assert scheduler == os.SCHED_IDLE
        assert _scheduler() != os.SCHED_IDLE  # the service's own process only
    assert background


class BatchSizes(Relay):
    """The relay, noting the size of each batch it is handed."""

    name = "batch_sizes"
    sizes: list[int]

    def handle(self, message: Message) -> Sequence[Message]:
        self.sizes.append(1)
        return super().handle(message)

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        self.sizes.append(len(messages))
        return [super(BatchSizes, self).handle(m) for m in messages]


class BackgroundBatchSizes(BatchSizes):
    name = "background_batch_sizes"
    background = True


def _batch_sizes(lab: Lab, cls: type[BatchSizes]) -> tuple[list[int], float]:
    """The batches `cls` is handed for 10 bars published 20 ms apart as it runs, and how long
    the publishing took."""
    cls.sizes = []
    runner = ServiceRunner(cls, ServiceContext(lab, lab.settings, f"{cls.name}-1"))
    running = runner.run_in_thread()
    try:
        started = time.monotonic()
        for i in range(10):
            lab.bus.publish(Stream.MARKET_DATA, bar(i))
            time.sleep(0.02)
        took = time.monotonic() - started
        deadline = time.monotonic() + 10
        while sum(cls.sizes) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        running.stop()
    return cls.sizes, took


def test_a_background_service_reads_what_came_while_it_lingered_in_one_batch(
    pipeline_lab: Lab,
) -> None:
    sizes, took = _batch_sizes(pipeline_lab, BackgroundBatchSizes)
    assert sum(sizes) == 10
    # lingering after each batch, it takes what came meanwhile together: a batch per linger
    assert len(sizes) <= took / BACKGROUND_LINGER_S + 2, (sizes, took)


def test_a_trading_service_reads_each_entry_as_it_comes(pipeline_lab: Lab) -> None:
    sizes, _ = _batch_sizes(pipeline_lab, BatchSizes)
    assert sum(sizes) == 10
    assert len(sizes) > 4, sizes  # no lingering: it wakes for the bars as they come
