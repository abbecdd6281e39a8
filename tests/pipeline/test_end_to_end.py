"""The whole pipeline, bars in -> fills out, through the real runner and every service.

Ingestion replays zig-zag bars, the Signal Engine runs `FlipFlop` (it asks to trade on every bar),
and the rest of the stages size, check, execute and book what it asks. Afterwards the streams, the
records and the cache must tell one story: every fill traces back to its bar through a raw signal,
a modified signal, an intent and an order (on the bus and in the records); the position is the sum
of the fills everywhere it is kept; nothing is duplicated and nothing is dead-lettered.
Run on the machine's Redis 7 and PostgreSQL, and on the embedded default (redis-servers from the
wheel, SQLite).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from end_to_end_support import (
    pipeline_settings_for,
    running_pipeline,
    stream_messages,
    wait_until_settled,
    zigzag_file,
)

from tradeos_lab.contracts import (
    BarMessage,
    FillMessage,
    IntentMessage,
    Message,
    ModifiedSignalMessage,
    OrderMessage,
    PositionMessage,
    RawSignalMessage,
    Side,
)
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab

BARS = 30


def _run(lab: Lab, tmp_path: Path) -> dict[Stream, list[Message]]:
    settings = pipeline_settings_for(lab.settings, zigzag_file(tmp_path / "bars.csv", BARS))
    with running_pipeline(lab, settings):
        wait_until_settled(lab, bars=BARS)
    return {s: stream_messages(lab, s) for s in Stream}


def _chain(message: Message, by_id: dict[str, Message]) -> list[Message]:
    """`message` and its causes, back to the message that started its chain."""
    chain = [message]
    while chain[-1].causation_id is not None:
        chain.append(by_id[chain[-1].causation_id])
    return chain


def _signed(fill: FillMessage) -> float:
    p = fill.payload
    return p.quantity if p.side is Side.BUY else -p.quantity


def check_pipeline(lab: Lab, streams: dict[Stream, list[Message]]) -> None:
    fills = [m for m in streams[Stream.FILLS_RAW] if isinstance(m, FillMessage)]
    assert len(streams[Stream.MARKET_DATA]) == BARS
    assert len(fills) >= BARS // 3, f"only {len(fills)} fills from {BARS} bars"

    # nothing twice on the bus, nothing given up on
    for stream, messages in streams.items():
        repeated = [i for i, n in Counter(m.message_id for m in messages).items() if n > 1]
        assert not repeated, f"{stream.value} holds {len(repeated)} duplicated message ids"
        assert lab.bus.inspect.dead_letters(stream).empty, f"dead letters on {stream.value}"

    # every fill traces back to its bar on the bus, under the bar's correlation id
    by_id = {m.message_id: m for messages in streams.values() for m in messages}
    for fill in fills:
        chain = _chain(fill, by_id)
        kinds = [type(m) for m in chain]
        for kind in (IntentMessage, ModifiedSignalMessage, RawSignalMessage, BarMessage):
            assert kind in kinds, f"fill {fill.message_id} has no {kind.__name__} in its chain"
        bar = chain[-1]
        assert isinstance(bar, BarMessage)
        assert {m.correlation_id for m in chain} == {bar.correlation_id}
        raw = next(m for m in chain if isinstance(m, RawSignalMessage))
        modified = next(m for m in chain if isinstance(m, ModifiedSignalMessage))
        intent = next(m for m in chain if isinstance(m, IntentMessage))
        assert raw.payload.source_message_id == bar.message_id
        assert modified.payload.raw_signal_id == raw.message_id

        # ... and in the records: one trade per fill, with the same chain
        (trade,) = lab.records.attribution(execution_id=fill.payload.execution_id)
        assert trade.trade.correlation_id == bar.correlation_id
        assert trade.trade.market_data_message_id == bar.message_id
        assert trade.trade.raw_signal_id == raw.message_id
        assert trade.trade.modified_signal_id == modified.message_id
        assert trade.trade.intent_id == intent.message_id
        assert trade.trade.client_order_id == fill.payload.client_order_id
        assert trade.order.intent_id == intent.message_id

    # the records keep what the bus carried
    orders = [m for m in streams[Stream.ORDERS] if isinstance(m, OrderMessage)]
    intents = [m for m in streams[Stream.INTENTS] if isinstance(m, IntentMessage)]
    kept_intents = {r.message_id for r in lab.records.intents()}
    assert {m.message_id for m in intents} <= kept_intents
    for coid in {o.payload.client_order_id for o in orders}:
        recorded = lab.records.order(coid)
        on_bus = [f for f in fills if f.payload.client_order_id == coid]
        assert sorted(f.execution_id for f in lab.records.fills(coid)) == sorted(
            f.payload.execution_id for f in on_bus
        )
        assert recorded.filled_quantity == pytest.approx(sum(f.payload.quantity for f in on_bus)), (
            f"order {coid} ({recorded.status}, {recorded.quantity}) fills on the bus: "
            + ", ".join(
                f"{f.payload.quantity}@{f.payload.price} {f.payload.execution_id}" for f in on_bus
            )
        )

    # position = sum of fills: in the ledger, the cache and the positions stream
    symbol = fills[0].payload.symbol
    total = sum(_signed(f) for f in fills)
    assert lab.records.net_quantity(None, symbol) == pytest.approx(total, abs=1e-9)
    assert lab.records.net_quantity("flip_flop", symbol) == pytest.approx(total, abs=1e-9)
    cached = lab.cache.get_position(symbol)
    assert (cached.quantity if cached else 0.0) == pytest.approx(total, abs=1e-9)
    updates = [
        m
        for m in streams[Stream.POSITIONS]
        if isinstance(m, PositionMessage) and m.payload.symbol == symbol
    ]
    assert updates, "no positions update"
    assert updates[-1].payload.quantity == pytest.approx(total, abs=1e-9)


def test_bars_in_fills_out_on_the_servers(pipeline_lab: Lab, tmp_path: Path) -> None:
    check_pipeline(pipeline_lab, _run(pipeline_lab, tmp_path))


def test_bars_in_fills_out_on_the_embedded_stack(
    embedded_pipeline_lab: Lab, tmp_path: Path
) -> None:
    check_pipeline(embedded_pipeline_lab, _run(embedded_pipeline_lab, tmp_path))
