"""The running summary `tradeos-lab up` prints on a terminal: fills as they happen, equity and
P&L, risk events and any halt, in readable lines rather than raw JSON (the JSON logs go to
files).

It only reads: new entries of `fills.raw` and `risk_events` on the bus (a plain XREAD from the
end, so it joins no consumer group and takes nothing from the services), the account in the
cache, and the kill switches' state in the flags tier.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import redis
from rich.console import Console
from rich.text import Text

from tradeos_lab.contracts import Fill, RiskEvent
from tradeos_lab.errors import ContractError, TradeosError
from tradeos_lab.keys import Stream

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.tiers.flags import KillState

#: How often the equity line is printed.
EQUITY_EVERY_S = 10.0
#: How long one read of the bus waits for new fills or risk events.
BLOCK_MS = 500

_FOLLOWED = (Stream.FILLS_RAW, Stream.RISK_EVENTS)
_SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


class RunningSummary:
    """Follows one lab's fills, risk events, account and kill switches, printing to `console`."""

    def __init__(
        self,
        lab: Lab,
        console: Console,
        *,
        equity_every_s: float = EQUITY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lab = lab
        self.console = console
        self.equity_every_s = equity_every_s
        self.clock = clock
        self.fills = 0
        self.starting_equity: float | None = None
        self._positions = dict.fromkeys(_FOLLOWED, "$")
        self._halt_reason: str | None = None
        self._next_equity = 0.0

    def start_from_now(self) -> None:
        """Follow only what happens from now on (the last entry of each stream, or its start)."""
        for stream in _FOLLOWED:
            last = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                self.lab.bus.redis.xrevrange(self.lab.keys.stream(stream), count=1),
            )
            self._positions[stream] = _text(last[0][0]) if last else "0-0"

    def run(self, stop: threading.Event) -> None:
        """Print until `stop` is set; a store that is down is said once per outage, not fatal."""
        self.start_from_now()
        down = False
        while not stop.is_set():
            try:
                self.poll(BLOCK_MS)
                down = False
            except (TradeosError, redis.RedisError) as e:
                if not down:
                    self.console.print(Text(f"summary paused: {e}", style="yellow"))
                down = True
                stop.wait(1.0)

    def poll(self, block_ms: int = 0) -> int:
        """Print the fills and risk events that arrived since the last poll (waiting up to
        `block_ms` for the first), then the equity line and halt changes when due; returns how
        many entries were printed."""
        streams = {self.lab.keys.stream(s): s for s in _FOLLOWED}
        positions = {key: self._positions[s] for key, s in streams.items()}
        replies = cast(
            "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",
            self.lab.bus.redis.xread(positions, block=block_ms or None, count=100),  # type: ignore[arg-type]
        )
        printed = 0
        for key, entries in replies or []:
            stream = streams[_text(key)]
            for entry_id, fields in entries:
                self._positions[stream] = _text(entry_id)
                printed += self._show(stream, fields)
        self._show_halt(self.lab.kill_switches.state())
        if self.clock() >= self._next_equity or printed:
            self._show_equity()
            self._next_equity = self.clock() + self.equity_every_s
        return printed

    def _show(self, stream: Stream, fields: dict[bytes, bytes]) -> int:
        try:
            message = self.lab.bus.decode(stream, fields)
        except ContractError:
            return 0  # a malformed entry is the services' dead letter, not the summary's
        payload = message.payload
        if isinstance(payload, Fill):
            self.fills += 1
            self.console.print(fill_line(payload))
            return 1
        if isinstance(payload, RiskEvent):
            self.console.print(risk_line(payload))
            return 1
        return 0

    def _show_equity(self) -> None:
        account = self.lab.cache.get_account()
        if account is None:
            return
        if self.starting_equity is None:
            self.starting_equity = account.portfolio_value
        self.console.print(
            equity_line(account.portfolio_value, account.balance, self.starting_equity, self.fills)
        )

    def _show_halt(self, state: KillState) -> None:
        reason = state.reason if state.mode is not None else None
        if reason == self._halt_reason:
            return
        self._halt_reason = reason
        if reason is None:
            self.console.print(Text("trading resumed: no global kill switch", style="green"))
        else:
            mode = state.mode.value if state.mode is not None else "HALTED"
            self.console.print(Text(f"{mode}: {reason}", style="bold red"))


def fill_line(fill: Fill) -> Text:
    """`12:00:01  FILL  BUY  0.5 BTC-USD @ 64,000.00  fee 1.60 USD`."""
    side = str(fill.side)
    style = "green" if side.lower() == "buy" else "magenta"
    return Text.assemble(
        (f"{fill.ts:%H:%M:%S}  ", "dim"),
        ("FILL  ", "bold"),
        (f"{side.upper():<4} ", style),
        f"{fill.quantity:g} {fill.symbol} @ {fill.price:,.2f}  ",
        (f"fee {fill.fee:,.2f} {fill.fee_currency}", "dim"),
    )


def risk_line(event: RiskEvent) -> Text:
    """`12:00:02  RISK  warning  max_order_notional  symbol:BTC-USD  the order is too large`."""
    severity, kind = str(event.severity), str(event.kind)
    return Text.assemble(
        (f"{event.ts:%H:%M:%S}  ", "dim"),
        ("RISK  ", "bold"),
        (f"{severity:<8} ", _SEVERITY_STYLE.get(severity.lower(), "")),
        f"{kind}  {event.scope}  {event.detail}",
    )


def equity_line(equity: float, cash: float, starting: float, fills: int) -> Text:
    """`equity 100,012.50  P&L +12.50 (+0.01%)  cash 50,000.00  fills 3`."""
    pnl = equity - starting
    share = pnl / starting * 100 if starting else 0.0
    return Text.assemble(
        ("equity ", "dim"),
        (f"{equity:,.2f}  ", "bold"),
        ("P&L ", "dim"),
        (f"{pnl:+,.2f} ({share:+.2f}%)  ", "green" if pnl >= 0 else "red"),
        ("cash ", "dim"),
        f"{cash:,.2f}  ",
        ("fills ", "dim"),
        str(fills),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
