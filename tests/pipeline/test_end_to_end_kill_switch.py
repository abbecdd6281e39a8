"""The kill switch stops new intents within 1 s, measured on the bus, and only a clear resumes.

The pipeline trades `FlipFlop` on a steady replay of zig-zag bars (an intent on most bars). An
operator engages a switch (global, the strategy, the symbol; HALTED, then REDUCING): every intent
whose bus entry is more than 1 s younger than the switch's audit entry must be absent (HALTED) or
reduce-only (REDUCING), the refusals are on `risk_events` and `audit` naming the kill switch, and
intents come back only after an explicit clear. Times are the bus's own (entry ids are the bus
server's milliseconds), so the bound is measured where the intents are.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from end_to_end_support import (
    pipeline_settings_for,
    running_pipeline,
    wait_for,
    zigzag_file,
)

from tradeos_lab import operator
from tradeos_lab.contracts import IntentMessage
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.tiers.bus import parse_id

#: The bound the kill switch is held to: no new (non-reducing) intent 1 s after the switch.
BOUND_MS = 1_000
#: How long a switch is held after the bound, to see that nothing slips through or lifts it.
HOLD_S = 2.0

SYMBOL = "BTC-USD"
TARGETS = {"global": None, "strategy": "flip_flop", "symbol": SYMBOL}


def _entries(lab: Lab, stream: Stream) -> list[tuple[int, object]]:
    """(entry time in bus-server ms, message) of every entry of `stream`."""
    bus = lab.bus
    rows = bus.redis.xrange(bus.stream_key(stream), "-", "+")
    return [(parse_id(i)[0], bus.decode(stream, f)) for i, f in rows]


def _intents_after(lab: Lab, ms: int) -> list[IntentMessage]:
    return [m for t, m in _entries(lab, Stream.INTENTS) if t > ms and isinstance(m, IntentMessage)]


def _switch_time(lab: Lab, action: str, target: str) -> int:
    """Bus time of the newest `audit` entry of a kill-switch change of `target`."""
    found = [
        t
        for t, m in _entries(lab, Stream.AUDIT)
        if m.payload.action == action and m.payload.target.startswith(target)  # type: ignore[attr-defined]
    ]
    assert found, f"no {action} audit entry for {target}"
    return found[-1]


@pytest.mark.parametrize("scope", list(TARGETS))
def test_kill_switch_stops_new_intents_within_a_second_until_cleared(
    pipeline_lab: Lab, tmp_path: Path, scope: str
) -> None:
    lab = pipeline_lab
    target = TARGETS[scope]
    where = f"kill:{scope}:{target or '*'}"
    replay = zigzag_file(tmp_path / "bars.csv", 4_000)
    settings = pipeline_settings_for(lab.settings, replay, pipeline_bar_interval_s=0.05)
    with running_pipeline(lab, settings):
        wait_for(lambda: len(_intents_after(lab, 0)) >= 3, timeout=30, what="trading")

        # HALTED: nothing new after the bound, however long it is held
        operator.halt(lab, actor="user:test", reason="test halt", scope=scope, target=target)
        engaged = _switch_time(lab, "kill_switch.engaged", where)
        time.sleep(BOUND_MS / 1000 + HOLD_S)
        late = _intents_after(lab, engaged + BOUND_MS)
        assert late == [], f"{len(late)} intents more than 1 s after {where} was HALTED"
        refusals = [
            m
            for t, m in _entries(lab, Stream.RISK_EVENTS)
            if t > engaged and "kill_switch" in m.payload.detail  # type: ignore[attr-defined]
        ]
        assert refusals, "no risk event names the kill switch"
        assert any(
            t > engaged and m.payload.action == "intent.refused" and "kill" in m.payload.reason  # type: ignore[attr-defined]
            for t, m in _entries(lab, Stream.AUDIT)
        )

        # REDUCING: only exposure-reducing intents pass
        operator.halt(
            lab,
            actor="user:test",
            reason="test reduce",
            scope=scope,
            target=target,
            mode="REDUCING",
        )
        reducing = _switch_time(lab, "kill_switch.engaged", where)
        time.sleep(BOUND_MS / 1000 + HOLD_S)
        opening = [m for m in _intents_after(lab, reducing + BOUND_MS) if not m.payload.reduce_only]
        assert opening == [], f"{len(opening)} opening intents under REDUCING"
        wait_for(
            lambda: lab.records.net_quantity("flip_flop", SYMBOL) == 0,
            timeout=10,
            what="the position to be closed under REDUCING",
        )

        # only an explicit clear resumes
        operator.clear(lab, actor="user:test", reason="test over", scope=scope, target=target)
        cleared = _switch_time(lab, "kill_switch.cleared", where)
        wait_for(
            lambda: any(not m.payload.reduce_only for m in _intents_after(lab, cleared)),
            timeout=10,
            what="an opening intent after the clear",
        )
    assert lab.bus.inspect.dead_letters(Stream.SIGNALS_MODIFIED).empty
