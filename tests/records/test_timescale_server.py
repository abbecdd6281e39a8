"""The TimescaleDB path on a real TimescaleDB server: record hypertables, the bar hypertable with
continuous aggregates and compression, read back through the same bar-store protocol.

Runs when TRADEOS_TEST_TIMESCALE_URL names a PostgreSQL server that offers the timescaledb
extension (an admin URL such as postgresql://postgres@127.0.0.1:5433/postgres; each test gets a
scratch database there); skips with that reason otherwise, as on a machine whose PostgreSQL has
no TimescaleDB.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text
from test_pg_bars import _check_rollups, make_bars

from tradeos_lab.bars import validate_bars
from tradeos_lab.stores.bars_pg import PostgresBarStore
from tradeos_lab.stores.records import RecordsStore
from tradeos_lab.stores.records.timescale import RECORD_HYPERTABLES

TIMESCALE_URL = os.environ.get("TRADEOS_TEST_TIMESCALE_URL")
NO_SERVER = "TRADEOS_TEST_TIMESCALE_URL is not set: no TimescaleDB server to test against"

pytestmark = pytest.mark.postgres


@pytest.fixture
def timescale_url() -> Iterator[str]:
    """A scratch database on the TimescaleDB server (SQLAlchemy URL with psycopg 3)."""
    if not TIMESCALE_URL:
        pytest.skip(NO_SERVER)
    admin = make_url(TIMESCALE_URL).set(drivername="postgresql")
    name = f"tradeos_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _hypertables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = conn.execute(
                text("SELECT hypertable_name FROM timescaledb_information.hypertables")
            ).scalars()
            return set(names)
    finally:
        engine.dispose()


def test_record_time_series_tables_become_hypertables(timescale_url: str) -> None:
    with RecordsStore.from_url(timescale_url) as store:
        store.upgrade()
        store.upgrade()  # idempotent on the Timescale path too
        assert store.uses_timescale is True
        assert {table for table, _, _ in RECORD_HYPERTABLES} <= _hypertables(timescale_url)
        store.downgrade("base")
        assert store.current_revision() is None
        store.upgrade()
        assert store.uses_timescale is True


def test_bars_use_a_hypertable_continuous_aggregates_and_compression(timescale_url: str) -> None:
    engine = create_engine(timescale_url)
    try:
        store = PostgresBarStore(engine)
        assert store.mode == "timescale"
        assert "market_data_bars" in _hypertables(timescale_url)
        with engine.connect() as conn:
            aggregates = conn.execute(
                text(
                    "SELECT view_name FROM timescaledb_information.continuous_aggregates "
                    "ORDER BY view_name"
                )
            ).scalars()
            assert list(aggregates) == ["bars_1d", "bars_1h", "bars_5m"]
            jobs = conn.execute(
                text("SELECT proc_name FROM timescaledb_information.jobs ORDER BY proc_name")
            ).scalars()
            assert "policy_compression" in set(jobs)
        assert PostgresBarStore(engine).ensure_schema() == "timescale", "a second start is a no-op"
    finally:
        engine.dispose()


def test_rollups_on_timescale_match_a_pandas_resample(timescale_url: str) -> None:
    engine = create_engine(timescale_url)
    try:
        store = PostgresBarStore(engine)
        start = pd.Timestamp("2024-02-28 20:00", tz="UTC")
        rng = np.random.default_rng(3)
        by_symbol = {}
        for i, symbol in enumerate(("AAPL", "BTC-USD")):
            holes = tuple(int(x) for x in rng.choice(3000, 200, replace=False))
            bars = make_bars(symbol, start=start, n=3000, seed=10 + i, drop=holes)
            by_symbol[symbol] = bars
            store.write_bars(bars)
        # Real-time aggregation: the coarse tiers are right before any refresh ...
        _check_rollups(store, by_symbol)
        # ... and after one, when they are read from the materialized buckets.
        store.refresh_rollups()
        _check_rollups(store, by_symbol)
        got = store.read_bars("AAPL", "1m")
        pd.testing.assert_frame_equal(
            got, validate_bars(by_symbol["AAPL"]), check_exact=False, rtol=1e-12
        )
        assert got["symbol"].dtype == by_symbol["AAPL"]["symbol"].dtype
    finally:
        engine.dispose()


def test_a_truncated_chunk_of_fills_takes_out_only_its_own_totals(timescale_url: str) -> None:
    """On TimescaleDB the totals' TRUNCATE trigger is on every chunk of `fills` too: a truncated
    chunk leaves the totals of the fills in the others."""
    with RecordsStore.from_url(timescale_url) as store:
        store.upgrade()
        for cid, quantity, month in (("early", 1.0, 1), ("late", 2.0, 6)):
            at = pd.Timestamp(2024, month, 3, tz="UTC").to_pydatetime()
            store.record_order(
                client_order_id=cid, symbol="AAPL", side="buy", quantity=quantity, at=at
            )
            store.record_fills(
                [
                    {
                        "execution_id": f"{cid}:1",
                        "client_order_id": cid,
                        "symbol": "AAPL",
                        "side": "buy",
                        "quantity": quantity,
                        "price": 100.0,
                        "filled_at": at,
                    }
                ]
            )
        assert store.fill_totals("paper")["AAPL"].quantity == 3.0
        with store.engine.begin() as conn:
            early = conn.execute(
                text(
                    "SELECT show_chunks('fills', older_than => "
                    "TIMESTAMPTZ '2024-03-01 00:00:00+00')"
                )
            ).scalar_one()
            conn.execute(text(f"TRUNCATE {early}"))
        assert store.fill_totals("paper")["AAPL"].quantity == 2.0
        assert store.net_quantity(None, "AAPL") == 3.0  # the ledger is a plain table, untouched
