"""Execution at Alpaca for tests: settings and a lab on the machine's Redis and PostgreSQL whose
broker is the local Alpaca trading server, and intents as Feasibility emits them."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

from alpaca_trading_server import API_KEY, SECRET_KEY, AlpacaTradingServer

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.contracts import Intent, Message, new_message
from tradeos_lab.lab import Lab
from tradeos_lab.settings import Settings, SharedRedisServerWarning


def alpaca_settings(base: Settings, server: AlpacaTradingServer, **extra: Any) -> Settings:
    """`base` (the machine's servers, this test's namespace) trading at `server`."""
    values = {
        **base.model_dump(),
        "execution_broker": "alpaca",
        "alpaca_api_key": API_KEY,
        "alpaca_secret_key": SECRET_KEY,
        "alpaca_trading_url": server.url,
        "alpaca_stream_url": server.stream_url,
        "alpaca_timeout_seconds": 2.0,
        **extra,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        return Settings.model_validate(values)


def armed_lab(settings: Settings) -> Lab:
    """A lab on `settings` with the kill switches armed, so Execution may trade."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(settings, start=False)
    operator.arm(lab, actor="user:test", reason="execution test")
    return lab


def intent(
    symbol: str = "AAPL", quantity: float = 3.0, side: str = "buy", **extra: object
) -> Message:
    """A manual intent (no signal behind it) as Feasibility passes it on."""
    values: dict[str, object] = {
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "order_type": "market",
        "time_in_force": "day",
        "strategy": "manual_test",
        "reduce_only": False,
        "checks_passed": ["kill_switch"],
        **extra,
    }
    return new_message(Intent(**values), producer="feasibility")  # type: ignore[arg-type]


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, *, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met in {timeout:g} s: {what}")
        time.sleep(0.05)
