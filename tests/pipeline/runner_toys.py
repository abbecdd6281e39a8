"""Toy services for the runner's tests, run in-process or as a service process of their own
(`tradeos-lab service tests/pipeline/runner_toys.py:Relay`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from tradeos_lab.contracts import Bar, BarMessage, Message, new_message
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline import Service, ServiceContext, Timer

#: A bar with this volume makes `Relay` stop in its handler the first time it sees one (so a test
#: can kill the process mid-batch); `REJECT_VOLUME` makes it raise (a bad message). While the
#: bus key `<namespace>:toy:slow` holds a number, it spends that many seconds on each bar.
STALL_VOLUME = 999.0
REJECT_VOLUME = 666.0
START = datetime(2024, 1, 2, tzinfo=UTC)


def bar(i: int, *, volume: float = 10.0, symbol: str = "BTC-USD") -> Message:
    """The i-th one-minute bar of a toy series, as a fresh message."""
    price = 100.0 + i
    payload = Bar(
        symbol=symbol,
        timeframe="1m",
        ts=START + timedelta(minutes=i),
        open=price,
        high=price + 1,
        low=price - 1,
        close=price,
        volume=volume,
        source="synthetic",
    )
    return new_message(payload, producer="test")


class Relay(Service):
    """One audit message per bar; notes each handling in the bus Redis (`toy:handled`)."""

    name = "relay"
    inputs = (Stream.MARKET_DATA,)
    outputs = (Stream.AUDIT,)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.redis = ctx.lab.bus.redis
        self.key = f"{ctx.settings.namespace}:toy"

    def handle(self, message: Message) -> Sequence[Message]:
        assert isinstance(message, BarMessage)
        self.redis.hincrby(f"{self.key}:handled", message.message_id, 1)
        self.redis.rpush(f"{self.key}:started", message.message_id)
        slow = self.redis.get(f"{self.key}:slow")
        if slow:
            time.sleep(float(slow))
        if message.payload.volume == STALL_VOLUME and self.redis.set(
            f"{self.key}:stalled", message.message_id, nx=True
        ):
            time.sleep(3600)  # first sight only: the test kills the process here
        if message.payload.volume == REJECT_VOLUME:
            raise ValueError(f"bar volume {REJECT_VOLUME} is refused by the relay")
        return [
            self.ctx.audit(
                message,
                action="bar.relayed",
                target=f"symbol:{message.payload.symbol}",
                reason="every bar is relayed",
            )
        ]


class Ticker(Service):
    """No inputs: a timer that publishes one audit message per tick."""

    name = "ticker"
    outputs = (Stream.AUDIT,)

    def timers(self) -> Sequence[Timer]:
        return (Timer("tick", 0.05, self.tick),)

    def tick(self) -> Sequence[Message]:
        return [self.ctx.audit(None, action="clock.tick", target="global", reason="a tick")]


class BatchRelay(Relay):
    """`Relay` with a batch path of its own; counts the batches in `toy:batches`."""

    name = "batch_relay"

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        self.redis.incr(f"{self.key}:batches")
        return [self.handle(message) for message in messages]
