"""Signal Modifier on the machine's Redis and PostgreSQL: hero filter, weighted ensemble (cache
weights, equal by default), ATR regime and policy-profile scaling, each listed with its effect and
reason on `signals.modified`; the default profiles created once when absent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete

from tradeos_lab.contracts import (
    Audit,
    Message,
    ModifiedSignal,
    RawSignal,
    new_message,
    new_message_id,
)
from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.runner import ServiceRunner
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.audit_trail import AuditTrail
from tradeos_lab.pipeline.services.signal_modifier import (
    ACTIVE_PROFILE_KEY,
    HERO_SIGNALS_KEY,
    ProfileSource,
    SignalModifier,
    ensure_default_profiles,
)
from tradeos_lab.stores.records.models import PolicyProfile

TS = datetime(2026, 12, 2, 15, 59, tzinfo=UTC)


def _raw(strategy: str = "sma_cross", strength: float = 0.4, ts: datetime = TS) -> Message:
    direction = "long" if strength > 0 else "short" if strength < 0 else "flat"
    return new_message(
        RawSignal(
            strategy=strategy,
            symbol="BTC-USD",
            timeframe="1m",
            ts=ts,
            direction=direction,
            strength=strength,
            confidence=0.8,
            features={},
            source_message_id=new_message_id(),
        ),
        producer="signal_engine",
    )


def _run(lab: Lab, *signals: Message) -> dict[Stream, list[Message]]:
    """Publish raw signals, drain the modifier, read what it emitted on the bus."""
    for signal in signals:
        lab.bus.publish(Stream.SIGNALS_RAW, signal)
    ctx = ServiceContext(lab, lab.settings, "modifier-test")
    ServiceRunner(SignalModifier, ctx).drain()
    return {
        stream: [
            lab.bus.decode(stream, fields)
            for _, fields in lab.bus.redis.xrange(lab.keys.stream(stream))
        ]
        for stream in SignalModifier.outputs
    }


def _modified(out: dict[Stream, list[Message]]) -> list[ModifiedSignal]:
    return [
        m.payload for m in out[Stream.SIGNALS_MODIFIED] if isinstance(m.payload, ModifiedSignal)
    ]


def _effects(signal: ModifiedSignal) -> dict[str, float]:
    return {m.name: m.effect for m in signal.modifiers}


def test_defaults_leave_the_strength_and_list_every_modifier_with_its_reason(
    pipeline_lab: Lab,
) -> None:
    raw = _raw(strength=0.4)
    out = _run(pipeline_lab, raw)
    [signal] = _modified(out)
    assert signal.raw_signal_id == raw.message_id
    assert (signal.raw_strength, signal.adjusted_strength) == (0.4, 0.4)
    assert _effects(signal) == {"ensemble": 0.0, "regime": 0.0, "policy": 0.0}
    assert all(m.reason for m in signal.modifiers)
    assert "equal weights" in signal.modifiers[0].reason  # type: ignore[operator]
    assert signal.regime is None
    # Feasibility keeps it with the decision it takes on it: the modifier writes no records
    assert pipeline_lab.records.signals(correlation_id=raw.correlation_id) == []


def test_the_ensemble_weighs_the_strategies_signals_on_the_same_bar_by_the_cache(
    pipeline_lab: Lab,
) -> None:
    pipeline_lab.cache.set_signal_weights({"sma_cross": 3.0, "rsi_reversion": 1.0})
    out = _run(pipeline_lab, _raw("sma_cross", 0.8), _raw("rsi_reversion", -0.4))
    first, second = _modified(out)
    assert first.adjusted_strength == pytest.approx(0.8)  # alone on its bar so far
    assert second.adjusted_strength == pytest.approx((3 * 0.8 + 1 * -0.4) / 4)
    assert second.direction.value == "long"
    assert "cache weights" in (second.modifiers[0].reason or "")


def test_the_ensemble_is_shared_by_modifier_processes_and_survives_a_restart(
    pipeline_lab: Lab,
) -> None:
    _run(pipeline_lab, _raw("sma_cross", 0.8))
    # A fresh service (another process, or this one restarted) sees the first signal.
    out = _run(pipeline_lab, _raw("rsi_reversion", -0.4))
    assert _modified(out)[-1].adjusted_strength == pytest.approx((0.8 - 0.4) / 2)


def test_signals_of_an_older_bar_do_not_enter_the_ensemble(pipeline_lab: Lab) -> None:
    later = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
    out = _run(pipeline_lab, _raw("sma_cross", 0.8), _raw("rsi_reversion", -0.4, ts=later))
    assert _modified(out)[1].adjusted_strength == pytest.approx(-0.4)


def test_the_hero_filter_drops_a_signal_that_is_not_a_hero_and_audits_it(
    pipeline_lab: Lab,
) -> None:
    pipeline_lab.records.set_config(
        HERO_SIGNALS_KEY, ["rsi_reversion"], changed_by="user:test", reason="rsi only"
    )
    out = _run(pipeline_lab, _raw("sma_cross"), _raw("rsi_reversion"))
    assert [s.strategy for s in _modified(out)] == ["rsi_reversion"]
    [audit] = [
        m.payload
        for m in out[Stream.AUDIT]
        if isinstance(m.payload, Audit) and m.producer == SignalModifier.name
    ]
    assert audit.action == "signal.filtered" and "not a hero signal" in audit.reason
    ctx = ServiceContext(pipeline_lab, pipeline_lab.settings, "audit-trail-test")
    ServiceRunner(AuditTrail, ctx).drain()  # the audit trail keeps it
    assert [r.action for r in pipeline_lab.records.audit_trail()].count("signal.filtered") == 1


def test_a_high_volatility_atr_regime_halves_the_strength(pipeline_lab: Lab) -> None:
    pipeline_lab.cache.set_indicators("BTC-USD", "1m", {"atr_regime_14_100": 1.0}, ts=TS)
    [signal] = _modified(_run(pipeline_lab, _raw(strength=0.6)))
    assert signal.regime == "high_vol"
    assert signal.adjusted_strength == pytest.approx(0.3)
    assert _effects(signal)["regime"] == pytest.approx(-0.3)


def test_a_normal_atr_regime_is_labelled_and_leaves_the_strength(pipeline_lab: Lab) -> None:
    pipeline_lab.cache.set_indicators("BTC-USD", "1m", {"atr_regime_14_100": 0.0}, ts=TS)
    [signal] = _modified(_run(pipeline_lab, _raw(strength=0.6)))
    assert (signal.regime, signal.adjusted_strength) == ("normal_vol", pytest.approx(0.6))


@pytest.mark.parametrize(
    ("profile", "strength"), [("Conservative", 0.2), ("Balanced", 0.4), ("Aggressive", 0.8)]
)
def test_the_active_policy_profile_scales_the_strength(
    pipeline_lab: Lab, profile: str, strength: float
) -> None:
    pipeline_lab.records.set_config(ACTIVE_PROFILE_KEY, profile, changed_by="test", reason="t")
    [signal] = _modified(_run(pipeline_lab, _raw(strength=0.4)))
    assert signal.adjusted_strength == pytest.approx(strength)
    assert profile in (signal.modifiers[-1].reason or "")


def test_a_flat_signal_is_an_exit_and_passes_unscaled(pipeline_lab: Lab) -> None:
    pipeline_lab.records.set_config(ACTIVE_PROFILE_KEY, "Aggressive", changed_by="t", reason="t")
    [signal] = _modified(_run(pipeline_lab, _raw(strength=0.0)))
    assert (signal.direction.value, signal.adjusted_strength, signal.modifiers) == ("flat", 0, [])


def test_missing_default_profiles_are_created_once(pipeline_lab: Lab) -> None:
    records = pipeline_lab.records
    with records.session() as session:
        session.execute(delete(PolicyProfile).where(PolicyProfile.name != "Aggressive"))
    assert ensure_default_profiles(records) == ["Conservative", "Balanced"]
    assert ensure_default_profiles(records) == []
    assert sorted(p.name for p in records.profiles()) == ["Aggressive", "Balanced", "Conservative"]


def test_the_profile_source_creates_the_defaults_when_the_table_is_empty(
    pipeline_lab: Lab,
) -> None:
    records = pipeline_lab.records
    with records.session() as session:
        session.execute(delete(PolicyProfile))
    profile = ProfileSource(records).get()
    assert profile.name == "Balanced" and profile.label.startswith("Balanced@")
    assert len(records.profiles()) == 3


def test_ensemble_weights_round_trip_the_cache_and_bad_weights_are_refused(
    pipeline_lab: Lab,
) -> None:
    cache = pipeline_lab.cache
    assert cache.get_signal_weights() == {}
    assert cache.set_signal_weights({"SMA_Cross": 2}) == {"sma_cross": 2.0}
    assert cache.get_signal_weights() == {"sma_cross": 2.0}
    for bad in ({"sma_cross": 0.0}, {"sma_cross": float("nan")}, {"bad name!": 1.0}):
        with pytest.raises(ValidationError):
            cache.set_signal_weights(bad)
    assert cache.get_signal_weights() == {"sma_cross": 2.0}  # a refused write changes nothing
    cache.set_signal_weights({})
    assert cache.get_signal_weights() == {}


def test_a_bad_signal_note_is_refused_by_name(pipeline_lab: Lab) -> None:
    cache = pipeline_lab.cache
    with pytest.raises(ValidationError, match="strength"):
        cache.note_signal("BTC-USD", "1m", "sma_cross", ts=1.7e9, strength=float("nan"))
    with pytest.raises(ValidationError, match="signal"):
        cache.note_signal("BTC-USD", "1m", "bad name!", ts=1.7e9, strength=0.5)
    assert cache.note_signal("BTC-USD", "1m", "sma_cross", ts=1.7e9, strength=0.5) == {
        "sma_cross": (1.7e9, 0.5)
    }


def test_signal_notes_of_a_batch_answer_as_noted_one_by_one(pipeline_lab: Lab) -> None:
    """`note_signals` reads each series once for its batch: every answer, in order, and what
    the batch leaves in the cache equal the same notes made one at a time."""
    cache = pipeline_lab.cache

    def notes(symbol: str) -> list[tuple[str, str, str, float, float]]:
        return [
            (symbol, "1m", "sma_cross", 1.7e9, 0.5),
            (symbol, "5m", "momo", 1.7e9, -0.25),
            (symbol, "1m", "momo", 1.7e9, 0.75),
            (symbol, "1m", "SMA_Cross", 1.7e9 + 60, -1.0),
            (symbol, "1m", "sma_cross", 1.7e9 + 60, 0.125),
        ]

    for symbol in ("BTC-USD", "ETH-USD"):
        cache.note_signal(symbol, "1m", "rsi", ts=1.7e9 - 60, strength=0.3)  # noted before
    one_by_one = [
        cache.note_signal(symbol, tf, s, ts=ts, strength=v)
        for symbol, tf, s, ts, v in notes("BTC-USD")
    ]
    batch = cache.note_signals(notes("ETH-USD"))
    assert [list(a.items()) for a in batch] == [list(a.items()) for a in one_by_one]
    assert batch[3] == {
        "rsi": (1.7e9 - 60, 0.3),
        "sma_cross": (1.7e9 + 60, -1.0),
        "momo": (1.7e9, 0.75),
    }
    left = cache.note_signals(
        [(s, tf, "rsi", 1.7e9, 0.0) for tf in ("1m", "5m") for s in ("BTC-USD", "ETH-USD")]
    )
    assert left[0] == left[1] and left[2] == left[3] == {
        "momo": (1.7e9, -0.25),
        "rsi": (1.7e9, 0.0),
    }
    for symbol in ("BTC-USD", "ETH-USD"):
        assert cache.redis.ttl(cache.keys.tracker(f"latest:{symbol}:1m")) > 0
    assert cache.note_signals([]) == []


def test_signal_notes_read_their_series_indicators_in_the_same_round_trip(
    pipeline_lab: Lab,
) -> None:
    cache = pipeline_lab.cache
    cache.set_indicators("BTC-USD", "1m", {"atr_regime_14_100": 1.0}, ts=TS)
    notes = [
        ("BTC-USD", "1m", "sma_cross", 1.7e9, 0.5),
        ("BTC-USD", "5m", "momo", 1.7e9, -0.25),
        ("BTC-USD", "1m", "momo", 1.7e9, 0.75),
    ]
    seen, indicators = cache.note_signals_reading_indicators(notes)
    assert seen[2] == {"sma_cross": (1.7e9, 0.5), "momo": (1.7e9, 0.75)}
    assert indicators == {
        ("BTC-USD", "1m"): cache.get_indicators("BTC-USD", "1m"),
        ("BTC-USD", "5m"): None,
    }
    assert indicators["BTC-USD", "1m"] is not None
    assert indicators["BTC-USD", "1m"].values == {"atr_regime_14_100": 1.0}
    assert cache.note_signals_reading_indicators([]) == ([], {})
