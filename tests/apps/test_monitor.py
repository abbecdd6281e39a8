"""The monitor's refresh on real tiers: empty states that say so, a new fill drawn by the same
app without building it again, the panels filled from their tiers, and a tier that goes down said
and recovered from by itself."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apps_support import fill_message

from tradeos_lab import operator
from tradeos_lab.apps.monitor import Monitor
from tradeos_lab.contracts import PositionUpdate
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.settings import Settings, SharedRedisServerWarning


@pytest.fixture
def monitor(apps_lab: Lab) -> Iterator[Monitor]:
    app = Monitor(apps_lab.settings, every_s=0, slow_every_s=0)
    yield app
    app.close()


def test_an_idle_pipeline_shows_empty_states_that_say_why(monitor: Monitor) -> None:
    monitor.refresh()
    assert "no fill yet" in monitor.tables[Stream.FILLS_RAW].value
    assert "no order yet" in monitor.tables[Stream.ORDERS].value
    assert "no risk event" in monitor.tables[Stream.RISK_EVENTS].value
    assert "no price in the cache yet" in monitor.prices.value
    assert "no account yet" in monitor.book.value
    assert "no open position" in monitor.positions.value
    assert "trading: no global kill switch" in monitor.limits.value
    assert "live" in monitor.header.value and monitor.tiers.value == ""


def test_a_new_fill_appears_on_the_next_refresh_newest_first(
    apps_lab: Lab, monitor: Monitor
) -> None:
    apps_lab.bus.publish(Stream.FILLS_RAW, fill_message("exec-old"))
    monitor.refresh()
    assert "exec-old" in monitor.tables[Stream.FILLS_RAW].value
    apps_lab.bus.publish(Stream.FILLS_RAW, fill_message("exec-new", price=102.25))
    assert monitor.refresh(block_ms=2_000) == 1
    table = monitor.tables[Stream.FILLS_RAW].value
    assert table.index("exec-new") < table.index("exec-old")
    assert "102.25" in table


def test_panels_show_the_cache_the_flags_tier_and_the_bus(apps_lab: Lab, monitor: Monitor) -> None:
    cache = apps_lab.cache
    cache.set_price("BTC-USD", 101.0)
    cache.set_account(balance=90_000.0, portfolio_value=100_250.0)
    cache.set_position("BTC-USD", quantity=2.0, avg_price=100.0)
    operator.halt(apps_lab, actor="user:alice", reason="news", scope="symbol", target="BTC-USD")
    apps_lab.kill_switches.engage(
        "strategy",
        "REDUCING",
        target="sma_cross",
        actor="agent:x",
        reason="drawdown",
        ttl_seconds=300,
    )
    breaker = apps_lab.flags.circuit_breaker("broker")
    for _ in range(5):
        breaker.record_failure()
    apps_lab.bus.ensure_group(Stream.FILLS_RAW, "positions")
    apps_lab.bus.publish(Stream.FILLS_RAW, fill_message("exec-1"))
    monitor.refresh()

    assert "101.00" in monitor.prices.value
    assert "250.00" in monitor.book.value  # P&L against the starting cash of 100,000
    assert "unrealized P&amp;L" in monitor.positions.value and "2.00" in monitor.positions.value
    limits = monitor.limits.value
    assert "symbol:BTC-USD" in limits and "user:alice" in limits and "never (clear it)" in limits
    assert "strategy:sma_cross" in limits and "min" in limits  # the agent's switch counts down
    assert "OPEN" in limits and "reopens in" in limits
    assert "0 of 200" in limits  # the broker's budget, untouched by reading it
    streams = monitor.streams.value
    assert "fills.raw" in streams and "positions" in streams
    assert "<td>1</td>" in streams  # the group's lag: the fill nobody has read


def test_the_equity_curve_starts_from_the_records_snapshots_then_goes_on_live(
    apps_lab: Lab, monitor: Monitor
) -> None:
    """The history is the starting cash plus the book's P&L at each snapshot; the cache's equity
    follows it, so the curve does not begin when the page opened."""
    start = datetime.now(UTC) - timedelta(hours=2)
    for minutes, mark in ((0, 100.0), (30, 110.0)):
        apps_lab.records.snapshot_positions(
            [
                PositionUpdate(
                    symbol="BTC-USD",
                    quantity=2.0,
                    avg_price=100.0,
                    mark_price=mark,
                    market_value=2.0 * mark,
                    unrealized_pnl=2.0 * (mark - 100.0),
                    realized_pnl=-1.0,  # the fee
                    ts=start,
                )
            ],
            at=start + timedelta(minutes=minutes),
        )
    apps_lab.cache.set_account(balance=99_799.0, portfolio_value=100_023.0)
    monitor.refresh()
    curve = monitor.chart.data[-1]
    assert list(curve.y) == [
        pytest.approx(100_000.0 - 1.0),
        pytest.approx(100_000.0 + 20.0 - 1.0),
        pytest.approx(100_023.0),
    ]
    assert curve.x[0] == start.strftime("%Y-%m-%d %H:%M:%S")
    monitor.refresh()
    assert len(monitor.chart.data[-1].y) == 4, "the history is read once"


@pytest.fixture
def private_redis_settings(
    redis_server_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    pg_url: str,
    tmp_path: Path,
) -> tuple[Any, Settings]:
    """Every Redis tier on one redis-server of this test (to kill and start again)."""
    server = redis_server_factory("bus")
    url = server.url.rsplit("?", 1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        settings = settings_factory(
            bus_url=f"{url}?db=0",
            cache_url=f"{url}?db=1",
            flags_url=f"{url}?db=2",
            records_url=pg_url,
            lake_url=f"chdb://{tmp_path / 'lake'}",
        )
    from tradeos_lab.stores.records import RecordsStore

    RecordsStore.open(settings, migrate=True).close()
    return server, settings


def test_a_tier_that_goes_down_is_said_and_the_monitor_recovers_by_itself(
    private_redis_settings: tuple[Any, Settings],
) -> None:
    server, settings = private_redis_settings
    app = Monitor(settings, every_s=0, slow_every_s=0)
    try:
        app.refresh()
        assert app.tiers.value == ""
        server.kill()
        app.refresh()  # never raises
        assert "degraded" in app.header.value
        assert "unavailable" in app.tiers.value
        assert "HALTED: flags tier unreachable" in app.limits.value  # as every order check reads
        server.start()
        app.refresh()
        app.refresh()
        assert "live" in app.header.value and app.tiers.value == ""
    finally:
        app.close()
