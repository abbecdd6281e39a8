"""Batches on the machine's Redis and PostgreSQL: a service handed a whole batch
(`handle_batch`) fails a bad message alone, and a batch handled again after a crash emits the
same messages and records nothing twice."""

from __future__ import annotations

from typing import Any

from end_to_end_support import wait_for
from runner_toys import REJECT_VOLUME, BatchRelay, bar
from test_execution import _bar, _intent

import tradeos_lab as tl
from tradeos_lab.contracts import AuditMessage, FillMessage, Message
from tradeos_lab.contracts.ids import derived_message_id
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline import ServiceContext, ServiceRunner
from tradeos_lab.pipeline.services.execution import Execution, client_order_id_for
from tradeos_lab.pipeline.services.positions import Positions, position_of
from tradeos_lab.settings import Settings


def _ctx(lab: Lab, settings: Settings, instance: str) -> ServiceContext:
    return ServiceContext(lab=lab, settings=settings, instance=instance)


def _payloads(messages: Any) -> list[Any]:
    """What a re-handled batch must give again (audit entries carry their own times)."""
    return [m.payload for m in messages if not isinstance(m, AuditMessage)]


def test_a_bad_message_in_the_middle_of_a_batch_is_dead_lettered_alone(
    pipeline_settings: Settings,
) -> None:
    settings = pipeline_settings.model_copy(update={"max_deliveries": 2, "claim_idle_ms": 100})
    with tl.connect(settings, start=False) as lab:
        good = [bar(0), bar(2)]
        bad = bar(1, volume=REJECT_VOLUME)
        lab.bus.publish_many(Stream.MARKET_DATA, [good[0], bad, good[1]])
        runner = ServiceRunner(BatchRelay, _ctx(lab, settings, "batch-relay-1"))
        running = runner.run_in_thread()
        try:
            wait_for(
                lambda: runner.counts.dead_lettered == 1 and runner.counts.handled == 2,
                what="the bad bar dead-lettered and the two others handled",
            )
        finally:
            running.stop()
        assert int(lab.bus.redis.get(f"{settings.namespace}:toy:batches") or 0) >= 1
        dead = lab.bus.inspect.dead_letters(Stream.MARKET_DATA)
        assert list(dead["reason"]) == ["handler_failed"]
        assert "refused by the relay" in dead["error"].iloc[0]
        outputs = [
            m
            for _, fields in lab.bus.redis.xrange(lab.keys.stream(Stream.AUDIT))
            if (m := lab.bus.decode(Stream.AUDIT, fields)).producer == "batch_relay"
        ]
        # the good ones once each, although the failed batch had handled them already
        assert sorted(m.message_id for m in outputs) == sorted(
            derived_message_id(m.message_id, stage="batch_relay", index=0) for m in good
        )
        assert lab.bus.inspect.group_info(Stream.MARKET_DATA, "batch_relay").pending == 0


def test_an_execution_batch_handled_again_after_a_crash_places_and_records_nothing_twice(
    pipeline_lab: Lab, pipeline_settings: Settings
) -> None:
    lab = pipeline_lab
    market = _bar(lab, 0)
    intents = [_intent(lab, market) for _ in range(3)]
    first = Execution(_ctx(lab, pipeline_settings, "before-crash")).handle_batch(intents)
    _bar(lab, 1, close=150.0)  # the market moved: a second order would fill elsewhere
    again = Execution(_ctx(lab, pipeline_settings, "after-crash")).handle_batch(intents)
    assert [_payloads(out) for out in again] == [_payloads(out) for out in first]
    for intent, out in zip(intents, first, strict=True):
        cid = client_order_id_for(intent.message_id)
        (fill,) = [m for m in out if isinstance(m, FillMessage)]
        assert [f.execution_id for f in lab.records.fills(cid)] == [fill.payload.execution_id]
        assert len(lab.records.attribution(execution_id=fill.payload.execution_id)) == 1
        assert lab.records.order(cid).status == "filled"
    assert len(lab.records.intents()) == 3
    assert lab.records.net_quantity(None, "BTC-USD") == 6.0

    # the fills through Positions, twice (a restarted process): the book counts each once
    fills: list[Message] = [m for out in first for m in out if isinstance(m, FillMessage)]
    positions = Positions(_ctx(lab, pipeline_settings, "positions-1")).handle_batch(fills)
    repeat = Positions(_ctx(lab, pipeline_settings, "positions-2")).handle_batch(fills)
    assert [_payloads(p) for p in repeat] == [_payloads(p) for p in positions]
    # Execution's broker kept the fills in the ledger already: the book, loaded from it, holds
    # them all from the first one on, and applying them again changes nothing
    assert [p[0].payload.quantity for p in positions] == [6.0, 6.0, 6.0]  # type: ignore[attr-defined]
    ledger = lab.records.ledger(symbol="BTC-USD")
    assert len(ledger) == 3
    whole = position_of("BTC-USD", ledger, None, ledger[-1].executed_at)
    assert whole.quantity == 6.0
    assert whole.avg_price == positions[-1][0].payload.avg_price  # type: ignore[attr-defined]
