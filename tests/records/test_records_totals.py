"""The running totals of the ledger and of the fills (`position_totals`, `fill_totals`): the
database's triggers keep them equal to the sums of the rows whatever writes the rows, and the
migration that adds them backfills them (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Table, case, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tradeos_lab.stores.records import (
    Fill,
    FillTotal,
    LedgerEntry,
    PlacedOrder,
    PositionTotal,
    RecordsStore,
)

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
Sums = dict[tuple[str, str], tuple[float, ...]]


def _summed(store: RecordsStore) -> tuple[Sums, Sums]:
    """(ledger per strategy and symbol, fills per broker and symbol) as GROUP BYs of the rows
    compute them, each with its count of rows."""
    strategy = func.coalesce(LedgerEntry.strategy, "")
    buy = Fill.side == "buy"
    ledger = select(
        strategy, LedgerEntry.symbol, func.sum(LedgerEntry.signed_quantity), func.count()
    ).group_by(strategy, LedgerEntry.symbol)
    fills = select(
        Fill.broker,
        Fill.symbol,
        func.sum(case((buy, Fill.quantity), else_=-Fill.quantity)),
        func.sum(case((buy, -Fill.quantity * Fill.price), else_=Fill.quantity * Fill.price)),
        func.sum(Fill.fee),
        func.count(),
    ).group_by(Fill.broker, Fill.symbol)
    with store.reading() as session:
        return (
            {(k1, k2): tuple(rest) for k1, k2, *rest in session.execute(ledger)},
            {(k1, k2): tuple(rest) for k1, k2, *rest in session.execute(fills)},
        )


def _kept(store: RecordsStore) -> tuple[Sums, Sums]:
    """The same, as the totals tables hold them."""
    positions = select(
        PositionTotal.strategy, PositionTotal.symbol, PositionTotal.quantity, PositionTotal.entries
    )
    fills = select(
        FillTotal.broker,
        FillTotal.symbol,
        FillTotal.quantity,
        FillTotal.cash_flow,
        FillTotal.fees,
        FillTotal.fills,
    )
    with store.reading() as session:
        return (
            {(k1, k2): tuple(rest) for k1, k2, *rest in session.execute(positions)},
            {(k1, k2): tuple(rest) for k1, k2, *rest in session.execute(fills)},
        )


def _assert_totals_are_the_sums(store: RecordsStore) -> None:
    summed, kept = _summed(store), _kept(store)
    for want, got in zip(summed, kept, strict=True):
        assert got.keys() == want.keys()
        for key, values in want.items():
            assert got[key] == pytest.approx(values, abs=1e-9), key
    ledger, fills = summed
    for (strategy, symbol), (quantity, _) in ledger.items():
        if strategy:
            assert store.net_quantity(strategy, symbol) == pytest.approx(quantity, abs=1e-9)
    for symbol in {s for _, s in ledger}:
        account = sum(q for (_, s), (q, _) in ledger.items() if s == symbol)
        assert store.net_quantity(None, symbol) == pytest.approx(account, abs=1e-9)
    for broker in {b for b, _ in fills}:
        read = store.fill_totals(broker)
        assert list(read) == sorted(s for b, s in fills if b == broker)
        for symbol, t in read.items():
            assert (t.quantity, t.cash_flow, t.fees) == pytest.approx(
                fills[broker, symbol][:3], abs=1e-9
            )


def _order(
    store: RecordsStore, cid: str, symbol: str, side: str, strategy: str | None, broker: str
) -> None:
    store.record_order(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        quantity=10,
        strategy=strategy,
        broker=broker,
        at=T0,
    )


def _fill(eid: str, cid: str, symbol: str, side: str, qty: float, price: float) -> dict[str, Any]:
    return {
        "execution_id": eid,
        "client_order_id": cid,
        "symbol": symbol,
        "side": side,
        "quantity": qty,
        "price": price,
        "fee": 0.01 * qty,
        "filled_at": T0 + timedelta(seconds=len(eid)),
    }


def _write_through_every_path(store: RecordsStore) -> None:
    _order(store, "m-buy", "AAPL", "buy", "momo", "paper")
    _order(store, "m-sell", "AAPL", "sell", "momo", "paper")
    _order(store, "r-sell", "AAPL", "sell", "revert", "other")
    _order(store, "x-buy", "MSFT", "buy", None, "paper")  # no strategy (an external order)
    store.record_fill(**_fill("e1", "m-buy", "AAPL", "buy", 0.1, 100.5))
    store.record_fill(**_fill("e2", "m-buy", "AAPL", "buy", 0.2, 101.25))
    store.record_fill(**_fill("e3", "m-sell", "AAPL", "sell", 0.3, 99.0), broker="paper")
    store.record_fills(
        [
            {**_fill("e4", "r-sell", "AAPL", "sell", 1.5, 98.0), "broker": "other"},
            _fill("e5", "x-buy", "MSFT", "buy", 3.0, 410.0),
        ]
    )
    placed = PlacedOrder(
        {
            "client_order_id": "p-buy",
            "symbol": "MSFT",
            "side": "buy",
            "quantity": 2.0,
            "strategy": "momo",
            "broker": "paper",
            "at": T0,
        },
        [
            {
                "event_id": "p-buy:1",
                "status": "filled",
                "broker_at": T0,
                "filled_quantity": 2.0,
                "avg_price": 400.0,
                "sequence": 1,
            }
        ],
        [_fill("p-buy:1", "p-buy", "MSFT", "buy", 2.0, 400.0)],
    )
    store.record_placed([placed])


def test_totals_are_the_sums_of_the_rows_after_every_write_path(store: RecordsStore) -> None:
    _write_through_every_path(store)
    _assert_totals_are_the_sums(store)
    positions, fills = _kept(store)
    assert set(positions) == {("momo", "AAPL"), ("revert", "AAPL"), ("", "MSFT"), ("momo", "MSFT")}
    assert positions["momo", "AAPL"] == (pytest.approx(0.0, abs=1e-12), 3)
    assert positions["momo", "MSFT"] == (2.0, 1)
    assert fills["other", "AAPL"] == (-1.5, 147.0, pytest.approx(0.015), 1)
    assert store.net_quantity(None, "AAPL") == pytest.approx(-1.5)
    assert store.net_quantity("revert", "AAPL") == pytest.approx(-1.5)
    assert store.net_quantity(None, "MSFT") == pytest.approx(5.0)
    assert store.net_quantity("momo", "MSFT") == pytest.approx(2.0)
    assert store.net_quantity("nobody", "MSFT") == 0.0
    assert store.fill_totals("paper")["MSFT"].quantity == pytest.approx(5.0)
    # Reports of fills already recorded, through every path, add nothing.
    store.record_fill(**_fill("e1", "m-buy", "AAPL", "buy", 0.1, 100.5))
    store.record_fills([_fill("e5", "x-buy", "MSFT", "buy", 3.0, 410.0)])
    assert _kept(store) == (positions, fills)


def test_a_row_an_insert_ignores_is_not_counted(store: RecordsStore) -> None:
    """ON CONFLICT DO NOTHING fires no AFTER INSERT trigger for the row it skips."""
    _write_through_every_path(store)
    before = _kept(store)
    insert = pg_insert if store.engine.dialect.name == "postgresql" else sqlite_insert
    with store.session() as session:
        fills = session.execute(select(Fill.__table__)).mappings().all()
        ledger = session.execute(select(LedgerEntry.__table__)).mappings().all()
        for model, rows in ((Fill, fills), (LedgerEntry, ledger)):
            table = model.__table__
            assert isinstance(table, Table)
            added = session.execute(
                insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns),
                [dict(r) for r in rows],
            ).all()
            assert added == []
    assert _kept(store) == before
    _assert_totals_are_the_sums(store)


def test_totals_follow_updates_and_deletes_of_the_rows(store: RecordsStore) -> None:
    _write_through_every_path(store)
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE fills SET quantity = 0.7, side = 'sell' WHERE execution_id = 'e2'")
        )
        conn.execute(text("UPDATE fills SET broker = 'other' WHERE execution_id = 'e5'"))
        conn.execute(text("UPDATE fills SET external = TRUE"))  # no summed column changes
        conn.execute(
            text("UPDATE position_ledger SET strategy = NULL WHERE execution_id = 'p-buy:1'")
        )
        conn.execute(
            text("UPDATE position_ledger SET signed_quantity = -4 WHERE execution_id = 'e4'")
        )
    _assert_totals_are_the_sums(store)
    assert ("momo", "MSFT") not in _kept(store)[0]  # its only entry moved to no strategy
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM fills WHERE execution_id IN ('e4', 'e1')"))
        conn.execute(text("DELETE FROM position_ledger WHERE symbol = 'MSFT'"))
    _assert_totals_are_the_sums(store)
    assert store.fill_totals("other") == {"MSFT": store.fill_totals("other")["MSFT"]}
    assert store.net_quantity(None, "MSFT") == 0.0
    assert not [k for k in _kept(store)[0] if k[1] == "MSFT"]


def test_upgrade_from_0011_backfills_the_totals_and_downgrade_drops_them(
    bare_store: RecordsStore,
) -> None:
    store = bare_store
    store.upgrade("0011")
    _write_through_every_path(store)
    store.upgrade()
    _assert_totals_are_the_sums(store)
    assert _kept(store)[1]["paper", "MSFT"][-1] == 2
    store.downgrade("0011")
    # No trigger is left to write to the dropped tables.
    store.record_fill(**_fill("e6", "m-sell", "AAPL", "sell", 0.4, 97.0))
    store.upgrade()
    _assert_totals_are_the_sums(store)
    assert _kept(store)[0]["momo", "AAPL"][-1] == 4
    # The migrations run again over the same tables (the version lost) count nothing twice.
    counts = [{key: values[-1] for key, values in t.items()} for t in _kept(store)]
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    store.upgrade()
    assert [{key: values[-1] for key, values in t.items()} for t in _kept(store)] == counts
    _assert_totals_are_the_sums(store)
    store.record_fill(**_fill("e7", "m-sell", "AAPL", "sell", 0.5, 96.0))
    _assert_totals_are_the_sums(store)


def _placed(cid: str, symbol: str) -> PlacedOrder:
    order = {"client_order_id": cid, "symbol": symbol, "side": "buy", "quantity": 1.0}
    order |= {"strategy": "momo", "broker": "paper", "at": T0}
    update = {"event_id": f"{cid}:1", "status": "filled", "broker_at": T0, "sequence": 1}
    update |= {"filled_quantity": 1.0, "avg_price": 100.0}
    return PlacedOrder(order, [update], [_fill(f"{cid}:1", cid, symbol, "buy", 1.0, 100.0)])


def _by_record_fills(store: RecordsStore, tag: str, symbols: list[str]) -> None:
    store.record_fills([_fill(f"{tag}-{s}", f"o-{s}", s, "buy", 1.0, 100.0) for s in symbols])


def _by_record_placed(store: RecordsStore, tag: str, symbols: list[str]) -> None:
    store.record_placed([_placed(f"{tag}-{s}", s) for s in symbols])


@pytest.mark.postgres
@pytest.mark.parametrize("write", [_by_record_fills, _by_record_placed])
def test_writers_of_the_same_symbols_take_the_totals_rows_in_one_order(
    pg_url: str, write: Callable[[RecordsStore, str, list[str]], None]
) -> None:
    """A writer holds the totals row of each symbol it wrote until it commits. One holds AAPL's
    and is about to write MSFT; another is given MSFT then AAPL. Taken as given, the second
    would hold MSFT's row while it waits for AAPL's, and PostgreSQL would abort one of them as
    a deadlock; taken in the totals' order, it waits for AAPL's first and holds nothing."""
    first, second = RecordsStore.from_url(pg_url), RecordsStore.from_url(pg_url)
    try:
        first.upgrade()
        for symbol in ("AAPL", "MSFT"):
            _order(first, f"o-{symbol}", symbol, "buy", "momo", "paper")
        errors: list[BaseException] = []

        def second_writer() -> None:
            try:
                write(second, "b", ["MSFT", "AAPL"])
            except BaseException as e:  # the test reports it
                errors.append(e)

        with first.batch():
            write(first, "a", ["AAPL"])
            thread = threading.Thread(target=second_writer)
            thread.start()
            waiting = text("SELECT count(*) FROM pg_locks WHERE NOT granted")
            deadline = time.monotonic() + 10
            with first.engine.connect() as watcher:
                while not watcher.execute(waiting).scalar():
                    assert time.monotonic() < deadline, "the second writer never waited"
                    time.sleep(0.01)
                    watcher.rollback()  # a new snapshot of the locks
            write(first, "a", ["MSFT"])
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert not errors, errors
        _assert_totals_are_the_sums(first)
        assert _kept(first)[1]["paper", "AAPL"][-1] == 2
    finally:
        first.close()
        second.close()


def test_truncating_the_rows_empties_their_totals(store: RecordsStore) -> None:
    """PostgreSQL fires no row trigger for TRUNCATE; the totals follow it all the same. SQLite
    has no TRUNCATE: its DELETE without a WHERE goes through the row triggers."""
    _write_through_every_path(store)
    postgresql = store.engine.dialect.name == "postgresql"
    with store.engine.begin() as conn:
        conn.execute(
            text("TRUNCATE position_ledger" if postgresql else "DELETE FROM position_ledger")
        )
    assert _kept(store)[0] == {}
    assert store.net_quantity("momo", "AAPL") == 0.0
    assert _kept(store)[1]  # the fills keep their totals
    with store.engine.begin() as conn:
        conn.execute(text("TRUNCATE fills CASCADE" if postgresql else "DELETE FROM fills"))
    assert _kept(store) == ({}, {})
    store.record_fill(**_fill("e9", "m-buy", "AAPL", "buy", 0.5, 100.0))
    _assert_totals_are_the_sums(store)
    assert _kept(store)[1]["paper", "AAPL"][-1] == 1
