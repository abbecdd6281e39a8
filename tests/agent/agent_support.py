"""What the agent tests share."""

from __future__ import annotations

import time
from datetime import datetime

from tradeos_lab.contracts import Intent, Message, new_message


class Clock:
    """A clock the test moves by hand (epoch seconds)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def intent_message(
    symbol: str, produced_at: datetime, *, quantity: float = 1.0, side: str = "buy"
) -> Message:
    """An intent Feasibility cleared under Balanced, as the records keep it."""
    return new_message(
        Intent(
            symbol=symbol,
            side=side,
            quantity=quantity,
            order_type="market",
            time_in_force="gtc",
            strategy="sma_cross",
            reduce_only=False,
            checks_passed=["kill_switch"],
            policy_profile="Balanced@x",
        ),
        producer="feasibility",
        produced_at=produced_at,
    )
