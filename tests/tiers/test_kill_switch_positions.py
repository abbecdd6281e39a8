"""REDUCING kill switches decide from the records' position ledger, never on the caller's word.

The kill switches run on the machine's Redis and the position book is a real `RecordsStore`
(SQLite and PostgreSQL), filled through the same `record_order` / `record_fill` calls Execution
makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from tradeos_lab.keys import Keys
from tradeos_lab.stores.records import RecordsStore
from tradeos_lab.tiers.flags import KillMode, KillScope, KillSource, KillSwitches

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordsStore]:
    url = (
        f"sqlite:///{tmp_path / 'records.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = RecordsStore.from_url(url)
    store.upgrade()
    yield store
    store.close()


@pytest.fixture
def switches(shared_redis: redis.Redis, keys: Keys) -> KillSwitches:
    trail: list[dict[str, object]] = []
    manual = KillSwitches(shared_redis, keys=keys, source=KillSource.MANUAL, audit=trail.append)
    manual.arm(actor="ops:alice", reason="trading day start")
    return manual


def _filled(
    book: RecordsStore, cid: str, strategy: str, symbol: str, side: str, quantity: float
) -> None:
    book.record_order(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        quantity=quantity,
        strategy=strategy,
        broker="paper",
        at=T0,
    )
    book.record_fill(
        execution_id=f"{cid}-x",
        client_order_id=cid,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=100.0,
        filled_at=T0,
    )


def test_reducing_lets_through_only_what_the_ledger_shows_shrinks_the_position(
    switches: KillSwitches, book: RecordsStore
) -> None:
    _filled(book, "momo-1", "momo", "AAPL", "buy", 10)
    switches.engage(KillScope.GLOBAL, KillMode.REDUCING, actor="ops:alice", reason="vol spike")

    assert switches.check_order("momo", "AAPL", "sell", 4, book=book).allowed
    assert switches.check_order("momo", "AAPL", "sell", 10, book=book).allowed
    # crossing through flat opens a short: more exposure, not less
    assert not switches.check_order("momo", "AAPL", "sell", 11, book=book).allowed
    # adding to the long, or trading a symbol the strategy does not hold, is refused
    assert not switches.check_order("momo", "AAPL", "buy", 1, book=book).allowed
    assert not switches.check_order("momo", "MSFT", "sell", 1, book=book).allowed


def test_a_caller_cannot_claim_a_reduction_the_ledger_does_not_hold(
    switches: KillSwitches, book: RecordsStore
) -> None:
    """What a strategy believes it holds (a cache hash, its own memory) does not count: a
    strategy flat in the records cannot sell under REDUCING, whatever it says."""
    switches.engage(KillScope.SYMBOL, KillMode.REDUCING, target="AAPL", **_ops())
    assert not switches.check_order("momo", "AAPL", "sell", 5, book=book).allowed
    _filled(book, "momo-1", "momo", "AAPL", "buy", 5)
    assert switches.check_order("momo", "AAPL", "sell", 5, book=book).allowed


def test_unwinding_one_strategy_into_another_strategys_opposite_position_is_refused(
    switches: KillSwitches, book: RecordsStore
) -> None:
    """The account is net short 5: a long strategy selling its 3 shrinks its own position but
    grows the account's, so REDUCING refuses it."""
    _filled(book, "momo-1", "momo", "AAPL", "buy", 3)
    _filled(book, "revert-1", "revert", "AAPL", "sell", 8)
    switches.engage(KillScope.GLOBAL, KillMode.REDUCING, **_ops())
    assert not switches.check_order("momo", "AAPL", "sell", 3, book=book).allowed
    assert switches.check_order("revert", "AAPL", "buy", 5, book=book).allowed


def test_symbols_and_strategies_of_any_spelling_meet_one_ledger(
    switches: KillSwitches, book: RecordsStore
) -> None:
    _filled(book, "momo-1", "Momo", "btc/usd", "buy", 2)
    switches.engage(KillScope.SYMBOL, KillMode.REDUCING, target="BTC-USD", **_ops())
    assert book.net_quantity("momo", "BTC-USD") == 2.0
    assert switches.check_order("MOMO", "BTC/USD", "sell", 2, book=book).allowed
    assert not switches.check_order("momo", "btc-usd", "buy", 1, book=book).allowed


def test_a_ledger_that_cannot_answer_reads_halted(switches: KillSwitches) -> None:
    """A records server that does not answer: no order can be shown to reduce exposure."""
    unreachable = RecordsStore.from_url("postgresql+psycopg://postgres@127.0.0.1:9/records")
    switches.engage(KillScope.GLOBAL, KillMode.REDUCING, **_ops())
    try:
        decision = switches.check_order("momo", "AAPL", "sell", 1, book=unreachable)
    finally:
        unreachable.close()
    assert not decision.allowed
    assert decision.mode is KillMode.HALTED
    assert "position book unreadable" in decision.reason


def _ops() -> dict[str, str]:
    return {"actor": "ops:alice", "reason": "test"}
