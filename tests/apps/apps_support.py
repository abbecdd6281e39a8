"""What the apps' tests (and their benchmark) share: a fill as Execution publishes one."""

from __future__ import annotations

from datetime import UTC, datetime

from tradeos_lab.contracts import Fill, Message, new_message


def fill_message(execution_id: str, *, symbol: str = "BTC-USD", price: float = 101.5) -> Message:
    """A fill of 2 at `price`, as the paper broker reports one."""
    return new_message(
        Fill(
            client_order_id=f"tl-{execution_id}",
            broker_order_id=f"paper-{execution_id}",
            execution_id=execution_id,
            symbol=symbol,
            side="buy",  # type: ignore[arg-type]
            quantity=2,
            price=price,
            fee=0.1,
            fee_currency="USD",
            liquidity="taker",  # type: ignore[arg-type]
            ts=datetime.now(UTC),
        ),
        producer="execution",
    )
