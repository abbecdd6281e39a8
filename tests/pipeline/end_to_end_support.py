"""What the end-to-end and fault tests (and the pipeline benchmark) share: a strategy that trades
on every bar, bars that make it trade, and waiting on the bus.

`FlipFlop` is referenced by path (`STRATEGY_REF`), so service processes started by the
supervisor load the same class as a test's own threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from tradeos_lab import strategies as st
from tradeos_lab.contracts import Bar, Message, new_message
from tradeos_lab.errors import ContractError
from tradeos_lab.keys import Stream
from tradeos_lab.providers.files import save_bars

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.pipeline.runner import RunningService
    from tradeos_lab.settings import Settings

#: `path.py:Class` reference to `FlipFlop` for the `pipeline_strategies` setting.
STRATEGY_REF = f"{Path(__file__).resolve()}:FlipFlop"

#: The series starts two days ago (inside every lake retention), on the hour.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
T = TypeVar("T")


class FlipFlop(st.Strategy[st.StrategyParams]):
    """Long when the close rose since the last bar, short when it fell, flat when it held: on
    zig-zag bars it asks to trade on every bar after the first (open long, close, open short,
    close, ...), so every bar can be followed to a fill."""

    name = "flip_flop"
    lookback = 2

    def indicators(self) -> tuple[()]:
        return ()

    def rule(self, values: Any) -> Any:
        close = values["close"]
        before = st.previous(close)
        return st.choose(close > before, close < before, close == before)


def zigzag_bar(
    i: int, *, symbol: str = "BTC-USD", producer: str = "ingestion", start: datetime = T0
) -> Message:
    """Bar `i` of a 1m series whose close goes 99, 101, 101, 99, 99, 101, ... one minute apart."""
    price = 101.0 if i % 4 in (1, 2) else 99.0
    payload = Bar(
        symbol=symbol,
        timeframe="1m",
        ts=start + timedelta(minutes=i),
        open=100.0,
        high=max(price, 100.0) + 0.5,
        low=min(price, 100.0) - 0.5,
        close=price,
        volume=1_000.0,
        source="synthetic",
    )
    return new_message(payload, producer=producer)


def wait_for(
    probe: Callable[[], T], *, timeout: float = 20.0, every: float = 0.05, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; AssertionError naming `what` if never."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or probe}")
        time.sleep(every)


def zigzag_file(path: Path, count: int, *, symbol: str = "BTC-USD") -> Path:
    """`count` zig-zag bars saved for the `replay:PATH` feed."""
    rows = [zigzag_bar(i, symbol=symbol).payload.model_dump() for i in range(count)]
    return save_bars(pd.DataFrame(rows), path)


def pipeline_settings_for(settings: Settings, replay: Path, **overrides: Any) -> Settings:
    """`settings` with the pipeline replaying `replay` quickly and trading `FlipFlop`."""
    update = {
        "pipeline_feed": f"replay:{replay}",
        "pipeline_symbols": ("BTC-USD",),
        "pipeline_timeframe": "1m",
        "pipeline_strategies": (STRATEGY_REF,),
        "pipeline_bar_interval_s": 0.02,
        **overrides,
    }
    return settings.model_copy(update=update)


def allow_trading_every_bar(lab: Lab) -> None:
    """No cooldown after an exit, and a broker budget and a daily loss limit no test reaches
    (records settings and a version of the active policy profile), so `FlipFlop` may trade on
    every bar for as long as a test runs, paying fees and slippage on each; the rules themselves
    have their own tests."""
    from tradeos_lab.pipeline.services.feasibility import (
        BROKER_RATE_LIMIT_KEY,
        EXIT_COOLDOWN_KEY,
    )
    from tradeos_lab.pipeline.services.signal_modifier import (
        ACTIVE_PROFILE_KEY,
        REFERENCE_PROFILE,
        ensure_default_profiles,
    )

    why = {"changed_by": "user:test", "reason": "a test trades on every bar"}
    lab.records.set_config(EXIT_COOLDOWN_KEY, 0, **why)
    lab.records.set_config(BROKER_RATE_LIMIT_KEY, 1_000_000, **why)
    ensure_default_profiles(lab.records)
    active = str(lab.records.get_config(ACTIVE_PROFILE_KEY, REFERENCE_PROFILE))
    version = lab.records.save_profile_version(
        active, {"max_daily_loss_pct": 100.0}, created_by=why["changed_by"], reason=why["reason"]
    )
    lab.records.activate_profile(active, version.version, activated_by=why["changed_by"])


@contextmanager
def running_pipeline(
    lab: Lab, settings: Settings, names: Sequence[str] | None = None
) -> Iterator[dict[str, RunningService]]:
    """Every service (or `names`) under its own `ServiceRunner` on a thread of this process,
    with no cooldown after an exit."""
    from tradeos_lab.pipeline import ServiceContext
    from tradeos_lab.pipeline.registry import PIPELINE_ORDER, service_class
    from tradeos_lab.pipeline.runner import ServiceRunner

    allow_trading_every_bar(lab)
    running: dict[str, RunningService] = {}
    try:
        for name in names or PIPELINE_ORDER:
            ctx = ServiceContext(lab, settings, instance=f"{name}-test")
            runner = ServiceRunner(service_class(name), ctx, block_ms=100, heartbeat_s=0.5)
            running[name] = runner.run_in_thread()
        yield running
    finally:
        for service in running.values():
            service.stop()


def stream_messages(lab: Lab, stream: Stream, *, skip_invalid: bool = False) -> list[Message]:
    """Every message a stream holds, oldest first; an invalid entry raises `ContractError`
    unless `skip_invalid` (a test that put one there on purpose)."""
    bus = lab.bus
    out: list[Message] = []
    for _id, fields in bus.redis.xrange(bus.stream_key(stream), "-", "+"):
        try:
            out.append(bus.decode(stream, fields))
        except ContractError:
            if not skip_invalid:
                raise
    return out


def settled(lab: Lab) -> bool:
    """No group on any stream has an entry undelivered or unacked."""
    groups = lab.bus.inspect.groups()
    return bool(len(groups)) and int(groups["lag"].sum() + groups["pending"].sum()) == 0


def wait_until_settled(lab: Lab, *, bars: int, timeout: float = 60.0) -> None:
    """Until ingestion published `bars` bars and every group has handled all it was given."""
    wait_for(
        lambda: len(stream_messages(lab, Stream.MARKET_DATA)) >= bars,
        timeout=timeout,
        what=f"{bars} bars on market_data",
    )
    wait_for(lambda: settled(lab), timeout=timeout, what="every group to catch up")
