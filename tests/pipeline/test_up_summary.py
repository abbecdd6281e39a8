"""The running summary of `up`: fills as they happen, equity and P&L, risk events and halts, in
readable lines read from the bus, the cache and the flags tier."""

from __future__ import annotations

import io
import os
import pty
import re
import selectors
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from tradeos_lab import operator
from tradeos_lab.contracts import Fill, RiskEvent, new_message
from tradeos_lab.contracts.enums import Liquidity, RiskKind, Severity, Side
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.summary import RunningSummary

TRADEOS_LAB = str(Path(sys.executable).with_name("tradeos-lab"))
T0 = datetime(2026, 12, 1, 12, 0, 1, tzinfo=UTC)


def fill(execution_id: str, side: Side, quantity: float, price: float) -> Fill:
    return Fill(
        client_order_id=f"c-{execution_id}",
        broker_order_id=f"b-{execution_id}",
        execution_id=execution_id,
        symbol="BTC-USD",
        side=side,
        quantity=quantity,
        price=price,
        fee=1.6,
        fee_currency="USD",
        liquidity=Liquidity.TAKER,
        ts=T0,
    )


def plain(terminal: bytes) -> str:
    """What a terminal shows, without its colour codes."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.decode(errors="replace"))


def summary_of(lab: Lab) -> tuple[RunningSummary, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False, color_system=None)
    running = RunningSummary(lab, console, equity_every_s=3600)
    running.start_from_now()
    return running, out


def test_summary_prints_each_new_fill_then_equity_and_pnl_from_the_cache(
    pipeline_lab: Lab,
) -> None:
    pipeline_lab.bus.publish(
        Stream.FILLS_RAW, new_message(fill("old", Side.BUY, 9, 1), producer="t")
    )
    running, out = summary_of(pipeline_lab)
    pipeline_lab.cache.set_account(balance=100_000.0, portfolio_value=100_000.0)
    assert running.poll() == 0  # the fill before the start is not news
    pipeline_lab.cache.set_account(balance=68_000.0, portfolio_value=100_250.0)
    pipeline_lab.bus.publish(
        Stream.FILLS_RAW, new_message(fill("e1", Side.BUY, 0.5, 64_000.0), producer="execution")
    )
    assert running.poll() == 1
    text = out.getvalue()
    assert "12:00:01  FILL  BUY  0.5 BTC-USD @ 64,000.00  fee 1.60 USD" in text
    assert "equity 100,250.00  P&L +250.00 (+0.25%)  cash 68,000.00  fills 1" in text
    assert "9 BTC-USD" not in text
    assert "{" not in text, "no raw JSON"


def test_summary_prints_risk_events_and_each_change_of_the_halt(pipeline_lab: Lab) -> None:
    running, out = summary_of(pipeline_lab)
    event = RiskEvent(
        kind=RiskKind.LIMIT_BREACH,
        severity=Severity.WARNING,
        scope="symbol:BTC-USD",
        detail="order notional 60,000 above the 50,000 limit",
        data={},
        ts=T0,
    )
    pipeline_lab.bus.publish(Stream.RISK_EVENTS, new_message(event, producer="feasibility"))
    assert running.poll() == 1
    operator.halt(pipeline_lab, actor="user:ops", reason="fat finger")
    running.poll()
    running.poll()  # said once, not on every poll
    operator.clear(pipeline_lab, actor="user:ops", reason="checked")
    running.poll()
    lines = out.getvalue().splitlines()
    assert (
        "12:00:01  RISK  warning  limit_breach  symbol:BTC-USD  order notional 60,000 above the "
        "50,000 limit"
    ) in lines
    halts = [line for line in lines if line.startswith("HALTED")]
    assert len(halts) == 1 and "fat finger" in halts[0]
    assert lines[-1] == "trading resumed: no global kill switch"


def _readable(fd: int, timeout: float) -> bool:
    """Whether `fd` has something to read within `timeout` (epoll: any descriptor number, where
    select() refuses those above 1023 in a long-lived test worker)."""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def test_up_on_a_terminal_shows_fills_as_they_happen_not_json(tmp_path: Path) -> None:
    """The README's first command: on a terminal, fills appear in the summary."""
    main, child = pty.openpty()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRADEOS_") or k.startswith("TRADEOS_TEST_")
    }
    env.update({"TRADEOS_DATA_DIR": str(tmp_path / "lab"), "COLUMNS": "160"})
    proc = subprocess.Popen(
        [TRADEOS_LAB, "up"], env=env, stdin=child, stdout=child, stderr=child, close_fds=True
    )
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and not (
            " FILL " in plain(seen) and "P&L " in plain(seen)
        ):
            ready = _readable(main, 1.0)
            if ready:
                try:
                    seen += os.read(main, 65536)
                except OSError:
                    break
    finally:
        proc.send_signal(signal.SIGINT)
        tail_deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < tail_deadline:
            ready = _readable(main, 0.5)
            if ready:
                try:
                    seen += os.read(main, 65536)
                except OSError:
                    break
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        os.close(main)
    text = plain(seen)
    assert " FILL " in text, text[-3000:]
    assert "equity " in text and "P&L " in text
    assert '"severity"' not in text, "JSON logs go to files, not the terminal"
    assert (tmp_path / "lab" / "logs" / "execution.log").read_text().startswith("{")
