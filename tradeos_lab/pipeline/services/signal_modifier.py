"""Signal Modifier: raw signals in, modified signals out, every adjustment named with its reason.

What it consumes: `signals.raw`. What it decides, in order:

1. hero filter: while the records' system config names hero signals (`hero_signals`), a strategy
   not among them is not traded (the signal is dropped and the drop audited);
2. confidence threshold: a signal whose confidence is below `signal_confidence_threshold` (system
   config) is not traded either (dropped and audited); a flat signal, an exit, always passes;
3. weighted ensemble: the strategies' latest non-flat signals on the same symbol, timeframe and
   bar (kept in the cache, so every modifier process and a restarted one see them) are averaged
   with the cache's weights (equal when none are set), so one strategy's view is tempered by the
   others';
4. regime from ATR: the cached ATR-regime indicator labels the market low / normal / high
   volatility; a high-volatility regime halves the strength (wider swings, smaller bets);
5. policy-profile scaling: the active policy profile (records) scales the strength by its risk
   per trade against Balanced's (Conservative halves it, Aggressive doubles it, capped at 1).

The live-tunable values (hero signals, threshold, active profile) are followed without a restart:
a `ConfigWatcher` re-reads them when the records' config version moves, and the first message
after a change carries a `config.applied` audit entry per changed key.

What it emits: one `signals.modified` message listing every modifier, its effect and its reason
(or an `audit` entry for a dropped signal). A flat signal is an exit: it passes through unscaled.
It writes nothing to the records: Feasibility keeps each modified signal with the decision it takes
on it, and the audit trail the audit entries.
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar, cast

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tradeos_lab.agent.config import ConfigWatcher, applied
from tradeos_lab.contracts import (
    Direction,
    ModifiedSignal,
    Modifier,
    RawSignal,
    derive,
)
from tradeos_lab.errors import ContractError
from tradeos_lab.indicators.specs import ATRRegime
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import Service, ServiceContext
from tradeos_lab.stores.records.models import PolicyProfile
from tradeos_lab.stores.records.store import RecordsStore

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message
    from tradeos_lab.tiers.cache import Indicators

#: The profile every other one is scaled against, and the one used when none is chosen.
REFERENCE_PROFILE: Final = "Balanced"
#: The records' live-tunable key naming the active policy profile.
ACTIVE_PROFILE_KEY: Final = "active_policy_profile"
#: The records' live-tunable list of the strategies traded (empty: every one).
HERO_SIGNALS_KEY: Final = "hero_signals"
#: The records' live-tunable confidence below which a raw signal is not traded.
CONFIDENCE_THRESHOLD_KEY: Final = "signal_confidence_threshold"
#: What the modifier follows in the system config.
MODIFIER_CONFIG_KEYS: Final = (HERO_SIGNALS_KEY, CONFIDENCE_THRESHOLD_KEY, ACTIVE_PROFILE_KEY)
#: How long a process trusts the profile it read from the records before reading it again.
PROFILE_MAX_AGE_S: Final = 1.0
#: Strength multiplier per ATR regime: a volatile market halves the bet.
REGIME_SCALE: Final = {"low": 1.0, "normal": 1.0, "high": 0.5}
_ATR_REGIME_PREFIX: Final = f"{ATRRegime.kind}_"
T = TypeVar("T")


# ---- policy profiles (records) -------------------------------------------------------------


@dataclass(frozen=True)
class ActiveProfile:
    """The policy profile the pipeline sizes and scales under, with its version."""

    name: str
    version: str
    max_position_pct: float
    max_daily_loss_pct: float
    max_leverage: float
    risk_per_trade_pct: float
    max_open_positions: int
    min_signal_confidence: float
    reference_risk_per_trade_pct: float
    #: Notional above which an intent waits for an operator (None: none waits), and how long.
    approval_notional: float | None = None
    approval_ttl_s: float = 300.0

    @property
    def label(self) -> str:
        """`NAME@VERSION`, as intents record it."""
        return f"{self.name}@{self.version}"


def default_profiles() -> list[dict[str, Any]]:
    """Conservative, Balanced and Aggressive as the records' first migration seeds them (the
    migration is their one home, so a restored database and a fresh one agree)."""
    module = importlib.import_module(
        "tradeos_lab.stores.records.migrations.versions.0001_records_schema"
    )
    return [dict(p) for p in module.PROFILES]


def ensure_default_profiles(records: RecordsStore, *, now: float | None = None) -> list[str]:
    """Create the default profiles that are missing (never touching one that exists); returns
    the names created. Safe to run from several processes at once."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    wanted = default_profiles()
    created: list[str] = []
    with records.session() as session:
        present = set(session.scalars(select(PolicyProfile.name)))
        rows = [{**p, "updated_at": stamp} for p in wanted if p["name"] not in present]
        if rows:
            insert = pg_insert if records.engine.dialect.name == "postgresql" else sqlite_insert
            stmt = insert(PolicyProfile).on_conflict_do_nothing(index_elements=["name"])
            session.execute(stmt, rows)
            created = [r["name"] for r in rows]
    return created


class Held(Generic[T]):
    """A live-tunable value re-read at most every `PROFILE_MAX_AGE_S`: a change reaches the
    pipeline within a second without a round trip per message."""

    def __init__(self, read: Callable[[], T], clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()  # the runner may poll inputs and timers on threads
        self._value: T | None = None
        self._read_at = -math.inf

    def get(self) -> T:
        with self._lock:
            now = self._clock()
            if self._value is None or now - self._read_at > PROFILE_MAX_AGE_S:
                self._value = self._read()
                self._read_at = now
            return self._value

    def expire(self) -> None:
        """Read the value again at the next `get` (it is known to have changed)."""
        with self._lock:
            self._read_at = -math.inf


class ProfileSource:
    """The active policy profile from the records, re-read at most every `PROFILE_MAX_AGE_S`
    (a new version of it reaches the pipeline within a second without a database trip per
    message), and at once after `reload` (a service's `ConfigWatcher` saw another profile
    chosen; its name is then read from that watcher). Creates the default profiles once when
    they are absent."""

    def __init__(
        self,
        records: RecordsStore,
        clock: Callable[[], float] = time.monotonic,
        *,
        config: ConfigWatcher | None = None,
    ) -> None:
        self.records = records
        self.config = config
        self._held = Held(self._read, clock)
        self._ensured = False

    def get(self) -> ActiveProfile:
        return self._held.get()

    def reload(self) -> ActiveProfile:
        """The profile read afresh (another one was chosen)."""
        self._held.expire()
        return self._held.get()

    def _read(self) -> ActiveProfile:
        if not self._ensured:
            ensure_default_profiles(self.records)
            self._ensured = True
        name = (
            self.records.get_config(ACTIVE_PROFILE_KEY, REFERENCE_PROFILE)
            if self.config is None
            else self.config.get(ACTIVE_PROFILE_KEY, REFERENCE_PROFILE)
        )
        profiles = {p.name: p for p in self.records.profiles()}
        chosen = profiles.get(str(name)) or profiles[REFERENCE_PROFILE]
        reference = profiles.get(REFERENCE_PROFILE, chosen)
        return ActiveProfile(
            name=chosen.name,
            version=chosen.updated_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            max_position_pct=chosen.max_position_pct,
            max_daily_loss_pct=chosen.max_daily_loss_pct,
            max_leverage=chosen.max_leverage,
            risk_per_trade_pct=chosen.risk_per_trade_pct,
            max_open_positions=chosen.max_open_positions,
            min_signal_confidence=chosen.min_signal_confidence,
            reference_risk_per_trade_pct=reference.risk_per_trade_pct,
            approval_notional=chosen.approval_notional,
            approval_ttl_s=chosen.approval_ttl_s,
        )


# ---- the service ----------------------------------------------------------------------------


class SignalModifier(Service):
    """Hero filter, weighted ensemble, ATR regime and policy scaling of each raw signal."""

    name: ClassVar[str] = "signal_modifier"
    inputs: ClassVar[tuple[Stream, ...]] = (Stream.SIGNALS_RAW,)
    outputs: ClassVar[tuple[Stream, ...]] = (Stream.SIGNALS_MODIFIED, Stream.AUDIT)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.config = ConfigWatcher(ctx.lab.records)
        self.profiles = ProfileSource(ctx.lab.records, config=self.config)
        self.weights = Held(ctx.lab.cache.get_signal_weights)
        #: The ensemble's inputs as `handle_batch` noted them, by raw signal message id.
        self._seen: dict[str, dict[str, tuple[float, float]]] = {}
        #: The cached indicators read for the batch in hand, by series (None outside a batch).
        self._indicators: dict[tuple[str, str], Indicators | None] | None = None

    def handle(self, message: Message) -> Sequence[Message]:
        changes = self._follow_config()
        outputs = self._modify(message) + self._applied(message, changes)
        self.config.acknowledge(changes)
        return outputs

    # ---- live-tunable config -------------------------------------------------------------

    def _follow_config(self) -> dict[str, Any]:
        """The followed keys changed since last applied; a new active profile is read now."""
        changes = self.config.pending(MODIFIER_CONFIG_KEYS)
        if ACTIVE_PROFILE_KEY in changes:
            self.profiles.reload()
        return changes

    def _applied(self, message: Message, changes: dict[str, Any]) -> list[Message]:
        return [applied(self.ctx, message, self.config, k, self._effect(k)) for k in changes]

    def _effect(self, key: str) -> str:
        if key == HERO_SIGNALS_KEY:
            return "trading " + (", ".join(self._heroes()) or "every strategy (no hero signals)")
        if key == CONFIDENCE_THRESHOLD_KEY:
            return f"signals below confidence {self._threshold():g} are not traded"
        return f"scaling under {self.profiles.get().label}"

    def _heroes(self) -> list[str]:
        """As of the last refresh (`_follow_config`): one reading for a whole batch."""
        return [str(n) for n in self.config.values.get(HERO_SIGNALS_KEY) or ()]

    def _threshold(self) -> float:
        return float(self.config.values.get(CONFIDENCE_THRESHOLD_KEY) or 0.0)

    def _dropped_because(self, raw: RawSignal) -> str | None:
        """Why `raw` is not traded (not a hero, too unsure), or None."""
        heroes = self._heroes()
        if heroes and raw.strategy not in heroes:
            return f"{raw.strategy} is not a hero signal ({', '.join(heroes)})"
        threshold = self._threshold()
        if raw.direction is not Direction.FLAT and raw.confidence < threshold:
            return (
                f"{raw.strategy}'s confidence {raw.confidence:g} is below the threshold "
                f"{threshold:g}"
            )
        return None

    # ---- what it decides -----------------------------------------------------------------

    def _modify(self, message: Message) -> list[Message]:
        """The modified signal (or the audit entry of a dropped one)."""
        raw = message.payload
        if not isinstance(raw, RawSignal):
            raise ContractError(f"signal_modifier reads raw signals, not {message.SCHEMA}")
        dropped = self._dropped_because(raw)
        if dropped is not None:
            filtered = [
                self.ctx.audit(
                    message,
                    action="signal.filtered",
                    target=f"strategy:{raw.strategy}",
                    reason=dropped,
                    old_value=raw.strength,
                    new_value=None,
                )
            ]
            return filtered
        modifiers: list[Modifier] = []
        strength = raw.strength
        regime: str | None = None
        if raw.direction is not Direction.FLAT:
            strength = self._ensemble(message, raw, self.weights.get(), modifiers)
            regime, strength = self._regime(raw, strength, modifiers)
            strength = self._policy(strength, modifiers)
        modified = ModifiedSignal(
            raw_signal_id=message.message_id,
            strategy=raw.strategy,
            symbol=raw.symbol,
            timeframe=raw.timeframe,
            ts=raw.ts,
            direction=_direction(strength),
            raw_strength=raw.strength,
            adjusted_strength=strength,
            confidence=raw.confidence,
            modifiers=modifiers,
            regime=regime,
        )
        return [derive(message, modified, producer=self.name, produced_at=self.ctx.now())]

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        """The batch's ensemble inputs noted in the cache, and each series' ATR regime read, in
        one round trip; the whole batch under one reading of the config."""
        changes = self._follow_config()
        noted = [
            m
            for m in messages
            if isinstance(m.payload, RawSignal)
            and m.payload.direction is not Direction.FLAT
            and self._dropped_because(m.payload) is None
        ]
        notes = [
            (r.symbol, r.timeframe, r.strategy, r.ts.timestamp(), r.strength)
            for r in (cast(RawSignal, m.payload) for m in noted)
        ]
        seen, indicators = self.ctx.lab.cache.note_signals_reading_indicators(notes)
        self._seen = dict(zip((m.message_id for m in noted), seen, strict=True))
        self._indicators = indicators
        try:
            outputs = [self._modify(message) for message in messages]
        finally:
            self._seen, self._indicators = {}, None
        if messages:
            outputs[0] += self._applied(messages[0], changes)
        self.config.acknowledge(changes)
        return list(outputs)

    def _ensemble(
        self,
        message: Message,
        raw: RawSignal,
        weights: dict[str, float],
        modifiers: list[Modifier],
    ) -> float:
        """Weighted mean of the strategies' latest signals on this bar (this one included)."""
        ts = raw.ts.timestamp()
        seen = self._seen.get(message.message_id)
        if seen is None:
            seen = self.ctx.lab.cache.note_signal(
                raw.symbol, raw.timeframe, raw.strategy, ts=ts, strength=raw.strength
            )
        peers = {s: v for s, (t, v) in seen.items() if t == ts}

        def weight(strategy: str) -> float:
            return weights.get(strategy, 1.0) if weights else 1.0

        total = sum(weight(s) for s in peers)
        blended = _clip(sum(weight(s) * v for s, v in peers.items()) / total)
        parts = ", ".join(f"{s} {v:+.3f} x{weight(s):g}" for s, v in sorted(peers.items()))
        basis = "cache weights" if weights else "equal weights"
        modifiers.append(
            Modifier(
                name="ensemble",
                effect=blended - raw.strength,
                reason=f"weighted mean of {len(peers)} signal(s) on this bar, {basis}: {parts}",
            )
        )
        return blended

    def _regime(
        self, raw: RawSignal, strength: float, modifiers: list[Modifier]
    ) -> tuple[str | None, float]:
        """Label the market by the cached ATR regime and scale the strength for it."""
        indicators = self._cached_indicators(raw.symbol, raw.timeframe)
        codes = sorted(
            (k, v)
            for k, v in (indicators.values.items() if indicators else ())
            if k.startswith(_ATR_REGIME_PREFIX)
        )
        label = ATRRegime.label(codes[0][1]) if codes else None
        if label is None:
            modifiers.append(
                Modifier(name="regime", effect=0.0, reason="no ATR regime cached: unchanged")
            )
            return None, strength
        scaled = strength * REGIME_SCALE[label]
        modifiers.append(
            Modifier(
                name="regime",
                effect=scaled - strength,
                reason=f"{codes[0][0]} reads {label} volatility: x{REGIME_SCALE[label]:g}",
            )
        )
        return f"{label}_vol", scaled

    def _cached_indicators(self, symbol: str, timeframe: str) -> Indicators | None:
        """The series' latest indicators from the cache, once per batch."""
        memo = self._indicators
        if memo is None:
            return self.ctx.lab.cache.get_indicators(symbol, timeframe)
        if (symbol, timeframe) not in memo:
            memo[symbol, timeframe] = self.ctx.lab.cache.get_indicators(symbol, timeframe)
        return memo[symbol, timeframe]

    def _policy(self, strength: float, modifiers: list[Modifier]) -> float:
        """Scale by the active profile's risk per trade relative to the reference profile's."""
        profile = self.profiles.get()
        factor = profile.risk_per_trade_pct / profile.reference_risk_per_trade_pct
        scaled = _clip(strength * factor)
        modifiers.append(
            Modifier(
                name="policy",
                effect=scaled - strength,
                reason=(
                    f"{profile.label}: risk per trade {profile.risk_per_trade_pct:g}% against "
                    f"{REFERENCE_PROFILE}'s {profile.reference_risk_per_trade_pct:g}%: x{factor:g}"
                ),
            )
        )
        return scaled


def _clip(value: float) -> float:
    return max(-1.0, min(1.0, value))


def _direction(strength: float) -> Direction:
    if strength > 0:
        return Direction.LONG
    if strength < 0:
        return Direction.SHORT
    return Direction.FLAT
