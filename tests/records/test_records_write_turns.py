"""SQLite's writers take turns: handed over when the writer before commits, trading stages first.

Each test holds the turn with one store's open batch and lets other stores (their own engines and
connections, as other processes would have) wait for it in threads.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tradeos_lab.errors import DependencyUnavailable
from tradeos_lab.stores.records import ConfigChange, RecordsStore
from tradeos_lab.stores.records import store as store_module
from tradeos_lab.stores.records.write_turns import TRADING_WAITS_SUFFIX, WriteTurns

KEY = "broker.paper.fee_bps"
WHY = {"changed_by": "user:test", "reason": "write turns"}


@pytest.fixture
def database(tmp_path: Path) -> str:
    path = tmp_path / "records.db"
    RecordsStore.from_url(f"sqlite:///{path}").upgrade()
    return str(path)


@pytest.fixture
def open_store(database: str) -> Iterator[Callable[[], RecordsStore]]:
    """Stores on the one database, each with its own engine; closed at the end."""
    stores: list[RecordsStore] = []

    def make() -> RecordsStore:
        stores.append(RecordsStore.from_url(f"sqlite:///{database}"))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


def _writer(store: RecordsStore, value: float, errors: list[BaseException]) -> threading.Thread:
    def write() -> None:
        try:
            store.set_config(KEY, value, **WHY)
        except BaseException as e:  # reported by the test
            errors.append(e)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _trading_writer_waits(database: str) -> bool:
    """Whether a trading writer waits for the turn (it holds the second file shared)."""
    fd = os.open(database + TRADING_WAITS_SUFFIX, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_writer_waits_for_its_turn_past_sqlites_busy_timeout(
    open_store: Callable[[], RecordsStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were it waiting on SQLite's busy handler, the write would fail after 100 ms.
    monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    holder, waiter = open_store(), open_store()
    errors: list[BaseException] = []
    with holder.batch():
        holder.set_config(KEY, 1.0, **WHY)
        thread = _writer(waiter, 2.0, errors)
        time.sleep(0.5)
        assert thread.is_alive(), "the writer did not wait for the open transaction"
    thread.join(timeout=10)
    assert not thread.is_alive() and not errors
    assert [c.new_value for c in waiter.config_history(KEY)] == [1.0, 2.0]


def test_trading_writers_go_before_a_background_writer_that_came_after_one_of_them(
    database: str, open_store: Callable[[], RecordsStore]
) -> None:
    holder, first, second, background = (open_store() for _ in range(4))
    background.write_in_background()
    errors: list[BaseException] = []
    with holder.batch():
        holder.set_config(KEY, 0.0, **WHY)
        threads = [_writer(first, 1.0, errors)]
        _wait_until(lambda: _trading_writer_waits(database), "the first trading writer to wait")
        threads.append(_writer(background, 9.0, errors))
        time.sleep(0.3)
        threads.append(_writer(second, 2.0, errors))
        time.sleep(0.3)
        assert all(t.is_alive() for t in threads)
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    with holder.reading() as session:  # in the order they were written
        written = select(ConfigChange.new_value).where(ConfigChange.key == KEY)
        order = list(session.scalars(written.order_by(ConfigChange.id)))
    assert order[0] == 0.0 and sorted(order[1:3]) == [1.0, 2.0] and order[3] == 9.0


def test_the_turn_goes_back_when_a_transaction_rolls_back(
    open_store: Callable[[], RecordsStore],
) -> None:
    holder, waiter = open_store(), open_store()
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []

    def failing_batch() -> None:
        with holder.batch():
            holder.set_config(KEY, 1.0, **WHY)
            threads.append(_writer(waiter, 2.0, errors))
            raise RuntimeError("the batch fails")

    with pytest.raises(RuntimeError):
        failing_batch()
    (thread,) = threads
    thread.join(timeout=10)
    assert not thread.is_alive() and not errors
    assert [c.new_value for c in waiter.config_history(KEY)] == [2.0]


def test_a_thread_holding_the_turn_that_writes_again_elsewhere_fails_instead_of_hanging(
    open_store: Callable[[], RecordsStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    holder, other = open_store(), open_store()
    outcome: list[BaseException | None] = []

    def nested() -> None:
        try:
            with holder.batch():
                holder.set_config(KEY, 1.0, **WHY)
                other.set_config(KEY, 2.0, **WHY)  # SQLite's lock: busy after 100 ms
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "a second write transaction on the thread waited for itself"
    assert len(outcome) == 1 and isinstance(outcome[0], DependencyUnavailable)


@pytest.mark.postgres
def test_postgresql_writers_take_no_turns(pg_url: str) -> None:
    store = RecordsStore.from_url(pg_url)
    try:
        assert WriteTurns.of(store.engine) is None
        store.write_in_background()  # nothing to do there
    finally:
        store.close()
