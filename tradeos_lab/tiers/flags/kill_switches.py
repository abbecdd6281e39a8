"""Kill switches: may a new order go, and who halted what.

They live on the flags tier, a Redis with `volatile-ttl` eviction where every key carries an
explicit TTL and nothing is a source of truth. That is fine for rate limits and heartbeats, but a
kill switch must not be released by a TTL, by eviction, by a restart of the server or by the
server being down. How the kill switches stay fail-closed:

1. Every switch, plus an `armed` sentinel, lives in ONE hash (`Keys.kill_switches()`). Eviction and
   expiry remove a key, never a field, so the switches are either all there or all gone.
2. A read that does not find the `armed` field answers HALTED for every order. The sentinel is only
   written by `arm()`, an explicit, audited operator action; writing a switch into a lost registry
   recreates the hash without it, so it still reads HALTED. A fresh or restarted flags server thus
   halts trading until someone arms it: we cannot tell "never halted" from "halt was lost".
3. The hash has a long TTL (`kill_ttl_seconds`, 30 days by default) refreshed by every kill-switch
   write, by `refresh()` and by every worker heartbeat, so it never expires while the system runs;
   under `volatile-ttl` it is also the last key to be evicted (the one farthest from expiry).
4. A `KillSwitches` object acts for one source, fixed when it is built: the agent and the services
   get one for `agent` (`Lab.kill_switches`), whose `engage`/`clear` cannot touch a manual switch;
   manual switches are written only through the operator path (`tradeos_lab.operator`, used by
   the CLI and the kill-switch dashboard), which alone may also `arm`. A manual switch has no
   expiry of its own and is removed only by an explicit `clear()` with an actor and a reason.
   Agent switches may carry their own expiry, compared against the server's clock. The
   `reconciliation` source is the halt of a symbol whose records and broker disagree
   (`tradeos_lab.brokers.reconcile`): neither the agent's switches can lift it nor does it expire;
   the reconciliation clears it once they agree, or an operator clears it explicitly.
5. Every change (arm, engage, clear, and the purge of an expired agent switch by `refresh()`) is
   handed as an audit record to the `audit` sink the object was built with (`Lab` publishes it on
   the bus's `audit` stream): no method changes a switch without leaving that trail, and an
   object cannot be built without a sink.
6. Any Redis error (a stalled server times out: the flags clients' connect and read timeouts, with
   no retry of a timeout, bound a check to well under a second), a corrupt entry or an unknown
   mode during a check reads as HALTED.
7. Under REDUCING an order goes only if it reduces exposure, computed from the records' position
   ledger (`PositionBook`) for the strategy and for the account, never taken on the caller's word.

Cancels are always allowed (`check_cancel`): they only ever reduce risk.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import redis

from tradeos_lab.contracts.enums import Side
from tradeos_lab.errors import TradingHalted, ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.symbols import canonical_name, canonical_symbol
from tradeos_lab.tiers.flags.plumbing import (
    call_script,
    run_pipeline,
    seconds,
    server_time,
    text,
)

if TYPE_CHECKING:
    from redis.client import Pipeline

KILL_TTL_SECONDS: Final = 30 * 86_400
_ARMED: Final = "armed"
# Who an expiry is attributed to in the audit trail: no person or agent acted.
EXPIRY_ACTOR: Final = "system:expiry"


#: What `read_switches` found per (strategy, symbol): the live switches, or a HALTED decision.
SwitchesRead = dict[tuple[str, str], "tuple[KillSwitch, ...] | Decision"]


class PositionBook(Protocol):
    """Where a check reads the signed net position (the records' per-strategy position ledger;
    `strategy=None` is the net across strategies). Never a cache: an evicted key would read as
    flat."""

    def net_quantity(self, strategy: str | None, symbol: str) -> float: ...


AuditSink = Callable[[dict[str, Any]], object]
"""Takes the audit record of one kill-switch change (`Lab` publishes it on the `audit` stream)."""


class KillMode(StrEnum):
    """HALTED: no new orders (cancels allowed). REDUCING: only exposure-reducing orders."""

    HALTED = "HALTED"
    REDUCING = "REDUCING"


class KillScope(StrEnum):
    GLOBAL = "global"
    STRATEGY = "strategy"
    SYMBOL = "symbol"


class KillSource(StrEnum):
    MANUAL = "manual"
    AGENT = "agent"
    RECONCILIATION = "reconciliation"


@dataclass(frozen=True)
class KillSwitch:
    """One engaged switch. `expires_at` (epoch s, server clock) is None for a lasting switch."""

    scope: KillScope
    target: str
    source: KillSource
    mode: KillMode
    actor: str
    reason: str
    since: float
    expires_at: float | None = None

    @property
    def field(self) -> str:
        return f"{self.scope.value}:{self.target}:{self.source.value}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope.value,
            "target": self.target,
            "source": self.source.value,
            "mode": self.mode.value,
            "actor": self.actor,
            "reason": self.reason,
            "since": self.since,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, raw: bytes | str) -> KillSwitch:
        """Decode a stored switch; raises ValueError/KeyError/TypeError on anything unexpected."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError(f"a kill switch is a JSON object, got {type(data).__name__}")
        expires = data.get("expires_at")
        return cls(
            scope=KillScope(data["scope"]),
            target=str(data["target"]),
            source=KillSource(data["source"]),
            mode=KillMode(data["mode"]),
            actor=str(data["actor"]),
            reason=str(data["reason"]),
            since=float(data["since"]),
            expires_at=None if expires is None else float(expires),
        )


@dataclass(frozen=True)
class Decision:
    """The answer to "may this order go?"; `mode` is the strictest switch that applies."""

    allowed: bool
    mode: KillMode | None
    reason: str
    switches: tuple[KillSwitch, ...] = ()

    def raise_if_denied(self) -> None:
        if not self.allowed:
            raise TradingHalted(self.reason)


@dataclass(frozen=True)
class KillState:
    """Every kill switch at one instant. `mode` is the global effect: HALTED when the tier is
    unreachable, the registry is not armed, or a global HALTED switch is engaged."""

    reachable: bool
    armed: bool
    mode: KillMode | None
    reason: str
    switches: tuple[KillSwitch, ...] = ()
    armed_by: dict[str, Any] | None = None


# Drop agent switches whose own expiry has passed; refresh the registry TTL when it exists;
# answer whether the `armed` sentinel is there, the server time and the dropped switches.
_PURGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local all = redis.call('HGETALL', KEYS[1])
local dropped = {}
for i = 1, #all, 2 do
  if all[i] ~= 'armed' then
    local ok, sw = pcall(cjson.decode, all[i + 1])
    if ok and type(sw) == 'table' and type(sw['expires_at']) == 'number'
        and sw['expires_at'] <= now then
      redis.call('HDEL', KEYS[1], all[i]); table.insert(dropped, all[i + 1])
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {redis.call('HEXISTS', KEYS[1], 'armed'), string.format('%.6f', now), dropped}
"""


def _unreachable(pairs: list[tuple[str, str]], error: BaseException) -> SwitchesRead:
    """Every pair HALTED: the switches could not be read (fail closed)."""
    down = _halted(f"flags tier unreachable ({type(error).__name__}): failing closed")
    return dict.fromkeys(pairs, down)


class KillSwitches:
    """The kill switches over the flags Redis, changed on behalf of one `source`; every change is
    handed to `audit`. See the module docstring for why they fail closed."""

    def __init__(
        self,
        redis: redis.Redis,
        *,
        keys: Keys,
        source: KillSource | str,
        audit: AuditSink,
        kill_ttl_seconds: int = KILL_TTL_SECONDS,
    ) -> None:
        if not callable(audit):
            raise ValidationError("kill switches need an audit sink: no change may go unrecorded")
        if kill_ttl_seconds < 60:
            raise ValidationError("kill_ttl_seconds must be >= 60")
        self.redis = redis
        self.keys = keys
        self.source = _enum(KillSource, source, "source")
        self.audit = audit
        self.kill_ttl_seconds = kill_ttl_seconds
        self._purge = redis.register_script(_PURGE)

    # ---- kill switches: writes, each audited --------------------------------------------

    def arm(self, *, actor: str, reason: str) -> dict[str, Any]:
        """Mark the registry as known-good so orders may flow where no switch applies.

        Needed once on a fresh flags server and again whenever the registry was lost (expiry,
        eviction, restart): arming then forgets whatever switches were lost, so only the operator
        path (a manual `KillSwitches`) may do it.
        """
        if self.source is not KillSource.MANUAL:
            raise ValidationError("arming the kill-switch registry is an operator action")
        actor, reason = _actor(actor), _reason(reason)
        key = self.keys.kill_switches()
        now = server_time(self.redis)
        epoch = uuid.uuid4().hex
        sentinel = {"epoch": epoch, "actor": actor, "reason": reason, "at": now}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(key, _ARMED)
        pipe.hset(key, _ARMED, json.dumps(sentinel))
        pipe.expire(key, self.kill_ttl_seconds)
        previous, _, _ = run_pipeline(pipe)
        return self._audited(
            _audit(
                "kill_switch.armed",
                actor,
                reason,
                now,
                epoch=epoch,
                was_armed=previous is not None,
            )
        )

    def engage(
        self,
        scope: KillScope | str,
        mode: KillMode | str,
        *,
        target: str | None = None,
        actor: str,
        reason: str,
        ttl_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Engage (or replace) this source's switch; returns the audit record it published.

        Only agent switches may have `ttl_seconds`: a manual or reconciliation halt never lifts
        by itself.
        """
        scope_, target_, source_ = _where(scope, target, self.source)
        mode_ = _enum(KillMode, mode, "mode")
        actor, reason = _actor(actor), _reason(reason)
        if ttl_seconds is not None:
            if source_ is not KillSource.AGENT:
                raise ValidationError(
                    f"a {source_.value} switch cannot expire; clear it explicitly"
                )
            if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int | float):
                raise ValidationError("ttl_seconds must be a number")
            if not math.isfinite(ttl_seconds) or ttl_seconds <= 0:
                raise ValidationError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        now = server_time(self.redis)
        switch = KillSwitch(
            scope=scope_,
            target=target_,
            source=source_,
            mode=mode_,
            actor=actor,
            reason=reason,
            since=now,
            expires_at=None if ttl_seconds is None else now + float(ttl_seconds),
        )
        key = self.keys.kill_switches()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, switch.field, json.dumps(switch.as_dict()))
        pipe.expire(key, self.kill_ttl_seconds)
        run_pipeline(pipe)
        return self._audited(
            _audit("kill_switch.engaged", actor, reason, now, switch=switch.as_dict())
        )

    def clear(
        self,
        scope: KillScope | str,
        *,
        target: str | None = None,
        actor: str,
        reason: str,
    ) -> dict[str, Any]:
        """Remove this source's switch; the audit record names who, why and what was cleared
        (None when nothing was engaged). Another source's switch is never touched."""
        scope_, target_, source_ = _where(scope, target, self.source)
        actor, reason = _actor(actor), _reason(reason)
        fieldname = f"{scope_.value}:{target_}:{source_.value}"
        key = self.keys.kill_switches()
        now = server_time(self.redis)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(key, fieldname)
        pipe.hdel(key, fieldname)
        pipe.expire(key, self.kill_ttl_seconds)
        previous, _, _ = run_pipeline(pipe)
        cleared: dict[str, Any] | None = None
        if previous is not None:
            try:
                cleared = KillSwitch.from_json(previous).as_dict()
            except (ValueError, KeyError, TypeError):
                cleared = {"field": fieldname, "unreadable": True}
        return self._audited(
            _audit(
                "kill_switch.cleared",
                actor,
                reason,
                now,
                scope=scope_.value,
                target=target_,
                source=source_.value,
                cleared=cleared,
            )
        )

    def refresh(self) -> bool:
        """Drop expired agent switches (each audited as `kill_switch.expired`) and push the
        registry's TTL out.

        Returns whether the registry is armed; False means every order reads HALTED until `arm`.
        """
        armed, now, dropped = call_script(
            self._purge, [self.keys.kill_switches()], [self.kill_ttl_seconds]
        )
        for raw in dropped:
            try:
                switch = KillSwitch.from_json(raw).as_dict()
            except (ValueError, KeyError, TypeError):
                switch = {"unreadable": True}
            self._audited(
                _audit(
                    "kill_switch.expired",
                    EXPIRY_ACTOR,
                    "an agent switch reached the end of its own ttl",
                    float(now),
                    scope=switch.get("scope"),
                    target=switch.get("target"),
                    source=switch.get("source"),
                    cleared=switch,
                )
            )
        return bool(armed)

    def _audited(self, record: dict[str, Any]) -> dict[str, Any]:
        """Hand a change to the audit sink; its failure is raised, never swallowed."""
        self.audit(record)
        return record

    # ---- kill switches: reads (fail closed) ---------------------------------------------

    def check_order(
        self,
        strategy: str,
        symbol: str,
        side: Side | str,
        quantity: float,
        *,
        book: PositionBook | None,
        switches: SwitchesRead | None = None,
    ) -> Decision:
        """May a new order of `strategy` to `side` `quantity` of `symbol` go? Any doubt answers
        HALTED.

        `switches`: the switches as `read_switches` found them for a batch that covers this
        order's strategy and symbol (one round trip for the batch); read now when not given.

        Under a REDUCING switch, whether the order reduces exposure is computed from `book` (the
        records' position ledger), never taken on the caller's word; without a book (None) no
        order can be shown to reduce exposure, so REDUCING lets none through. The book is read
        only when a REDUCING switch applies; a book that fails to answer reads HALTED.
        """
        strategy = canonical_name(strategy, "strategy")
        symbol = canonical_symbol(symbol)
        side_ = _enum(Side, side, "side")
        quantity = _quantity(quantity)
        if switches is not None and (strategy, symbol) in switches:
            active = switches[strategy, symbol]
        else:
            active = self._applicable(strategy, symbol)
        return self._decide_order(active, strategy, symbol, side_, quantity, book=book)

    def _decide_order(
        self,
        active: tuple[KillSwitch, ...] | Decision,
        strategy: str,
        symbol: str,
        side: Side,
        quantity: float,
        *,
        book: PositionBook | None,
    ) -> Decision:
        if isinstance(active, Decision):
            return active
        if not active or any(s.mode is KillMode.HALTED for s in active):
            return decide(active, reduces=False)
        if book is None:
            return decide(active, reduces=False, why="no position book to show it does")
        try:
            # Both the strategy's own position and the account's net position in the symbol must
            # shrink: unwinding one strategy into another's opposite position still adds to the
            # account's exposure, and a flat strategy trading against the account opens a position.
            reduces = all(
                reduces_exposure(book.net_quantity(owner, symbol), side, quantity)
                for owner in (strategy, None)
            )
        except Exception as e:  # the ledger did not answer: the order cannot be shown to reduce
            return _halted(f"position book unreadable ({type(e).__name__}): failing closed", active)
        return decide(active, reduces=reduces)

    def _applicable(self, strategy: str, symbol: str) -> tuple[KillSwitch, ...] | Decision:
        """The live switches covering an order of `strategy` in `symbol` (global, strategy and
        symbol scope, either source), or a HALTED decision when they cannot be known."""
        return self.read_switches([(strategy, symbol)])[strategy, symbol]

    def read_switches(self, pairs: Iterable[tuple[str, str]]) -> SwitchesRead:
        """The live switches over each (strategy, symbol) of a batch, all read in one HMGET, for
        `check_order(switches=...)`; a pair whose switches cannot be known maps to HALTED."""
        pipe = self.redis.pipeline(transaction=False)
        switches = self.queue_switches(pipe, pairs)
        try:
            return switches(pipe.execute(raise_on_error=False))
        except redis.RedisError as e:
            return switches(e)

    def queue_switches(
        self, pipe: Pipeline, pairs: Iterable[tuple[str, str]]
    ) -> Callable[[Sequence[Any] | BaseException], SwitchesRead]:
        """`read_switches` queued on `pipe` (no transaction, run with `raise_on_error=False`,
        so a caller reads other flags in the same round trip). Returns what reads the switches
        from the replies of the two commands queued here (the pipeline's replies from theirs
        on), or from the error that kept the pipeline from running: every pair HALTED."""
        pairs = list(
            dict.fromkeys(
                (canonical_name(st, "strategy"), canonical_symbol(sy)) for st, sy in pairs
            )
        )
        scopes = [("global", "*")]
        for strategy, symbol in pairs:
            scopes.extend((("strategy", strategy), ("symbol", symbol)))
        fields = list(
            dict.fromkeys(
                f"{scope}:{target}:{source.value}"
                for scope, target in scopes
                for source in KillSource
            )
        )
        pipe.hmget(self.keys.kill_switches(), [_ARMED, *fields])
        pipe.time()
        return lambda replies: self._switches_read(pairs, fields, replies)

    def _switches_read(
        self,
        pairs: list[tuple[str, str]],
        fields: list[str],
        replies: Sequence[Any] | BaseException,
    ) -> SwitchesRead:
        if isinstance(replies, BaseException):
            return _unreachable(pairs, replies)
        unread = next((r for r in replies[:2] if isinstance(r, BaseException)), None)
        if unread is not None:
            return _unreachable(pairs, unread)
        values, clock = replies[0], replies[1]
        try:
            if values[0] is None:
                return dict.fromkeys(pairs, _halted(_NOT_ARMED))
            raw = dict(zip(fields, values[1:], strict=True))
            now = seconds(clock)
        except Exception as e:  # a decision we cannot compute must not let an order through
            failed = _halted(f"kill-switch check failed ({type(e).__name__}): failing closed")
            return dict.fromkeys(pairs, failed)
        out: dict[tuple[str, str], tuple[KillSwitch, ...] | Decision] = {}
        for strategy, symbol in pairs:
            mine = [
                f"{scope}:{target}:{source.value}"
                for scope, target in (("global", "*"), ("strategy", strategy), ("symbol", symbol))
                for source in KillSource
            ]
            try:
                active, problem = _active(((f, raw[f]) for f in mine), now)
            except Exception as e:  # a decision we cannot compute must not let an order through
                out[strategy, symbol] = _halted(
                    f"kill-switch check failed ({type(e).__name__}): failing closed"
                )
                continue
            out[strategy, symbol] = _halted(problem, active) if problem else active
        return out

    def check_cancel(self, strategy: str, symbol: str) -> Decision:
        """Cancels are always allowed, whatever the switches or the tier's health."""
        canonical_name(strategy, "strategy")
        canonical_symbol(symbol)
        return Decision(True, None, "cancels are always allowed")

    def state(self) -> KillState:
        """All switches now, for dashboards and the CLI; unreachable or unarmed reads HALTED."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(self.keys.kill_switches())
            pipe.time()
            raw, clock = pipe.execute()
        except redis.RedisError as e:
            reason = f"flags tier unreachable ({type(e).__name__}): failing closed"
            return KillState(reachable=False, armed=False, mode=KillMode.HALTED, reason=reason)
        entries = {text(k): v for k, v in raw.items()}
        sentinel = entries.pop(_ARMED, None)
        active, problem = _active(sorted(entries.items()), seconds(clock))
        armed_by = _sentinel(sentinel)
        if sentinel is None:
            return KillState(True, False, KillMode.HALTED, _NOT_ARMED, active)
        if problem:
            return KillState(True, True, KillMode.HALTED, problem, active, armed_by)
        globals_ = [s for s in active if s.scope is KillScope.GLOBAL]
        mode = None
        if any(s.mode is KillMode.HALTED for s in globals_):
            mode = KillMode.HALTED
        elif globals_:
            mode = KillMode.REDUCING
        reason = _describe(tuple(globals_)) if globals_ else "no global switch"
        return KillState(True, True, mode, reason, active, armed_by)


# ---- helpers --------------------------------------------------------------------------------

_NOT_ARMED: Final = (
    "kill-switch registry missing (never armed, expired, evicted or the flags server restarted): "
    "halted until an operator arms it"
)


def reduces_exposure(position: float, side: Side, quantity: float) -> bool:
    """Does an order of `quantity` (> 0) on `side` reduce the signed net `position`?

    Only when it moves the position toward zero without crossing through it: selling 10 of a
    long 10 closes it (reduces), selling 11 of it leaves a short 1 (does not), and any order on a
    flat position opens one (does not).
    """
    if side is Side.BUY:
        return position < 0 and quantity <= -position
    return position > 0 and quantity <= position


def decide(active: tuple[KillSwitch, ...], *, reduces: bool, why: str = "") -> Decision:
    """HALTED beats REDUCING beats nothing; REDUCING lets only exposure-reducing orders through."""
    halts = tuple(s for s in active if s.mode is KillMode.HALTED)
    if halts:
        return Decision(False, KillMode.HALTED, _describe(halts), halts)
    if not active:
        return Decision(True, None, "no kill switch applies")
    reason = _describe(active)
    if reduces:
        return Decision(True, KillMode.REDUCING, f"reducing order allowed: {reason}", active)
    unproven = f" ({why})" if why else ""
    return Decision(False, KillMode.REDUCING, f"only reducing orders{unproven}: {reason}", active)


def _quantity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"quantity must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(f"quantity must be finite and > 0, got {value}")
    return float(value)


def _halted(reason: str, switches: tuple[KillSwitch, ...] = ()) -> Decision:
    return Decision(False, KillMode.HALTED, reason, switches)


def _active(
    entries: Iterable[tuple[str, bytes | str | None]], now: float
) -> tuple[tuple[KillSwitch, ...], str | None]:
    """Decode present switches, dropping agent switches past their expiry; report corrupt ones."""
    active: list[KillSwitch] = []
    problem = None
    for fieldname, raw in entries:
        if raw is None:
            continue
        try:
            switch = KillSwitch.from_json(raw)
        except Exception:  # unreadable in any way: fail closed
            problem = (
                f"kill switch {fieldname!r} is unreadable or has an unknown mode: failing closed"
            )
            continue
        if switch.expires_at is not None and switch.expires_at <= now:
            continue
        active.append(switch)
    return tuple(active), problem


def _describe(switches: tuple[KillSwitch, ...] | list[KillSwitch]) -> str:
    return "; ".join(
        f"{s.mode.value} by {s.source.value} switch {s.scope.value}:{s.target} ({s.reason})"
        for s in switches
    )


def _sentinel(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {"unreadable": True}
    return data if isinstance(data, dict) else {"unreadable": True}


def _audit(event: str, actor: str, reason: str, at: float, **details: Any) -> dict[str, Any]:
    return {
        "event": event,
        "actor": actor,
        "reason": reason,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
        **details,
    }


def _where(
    scope: KillScope | str, target: str | None, source: KillSource | str
) -> tuple[KillScope, str, KillSource]:
    scope_ = _enum(KillScope, scope, "scope")
    source_ = _enum(KillSource, source, "source")
    if scope_ is KillScope.GLOBAL:
        if target not in (None, "*"):
            raise ValidationError("a global switch takes no target")
        return scope_, "*", source_
    if target is None:
        raise ValidationError(f"a {scope_.value} switch needs a target")
    if scope_ is KillScope.SYMBOL:
        return scope_, canonical_symbol(target), source_
    return scope_, canonical_name(target, "strategy"), source_


_E = TypeVar("_E", bound=StrEnum)


def _enum(kind: type[_E], value: object, what: str) -> _E:
    if isinstance(value, kind):
        return value  # a member already (every order Feasibility checks)
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise ValidationError(f"unknown {what} {value!r}; choose one of {choices}") from None


def _actor(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise ValidationError("actor must be a non-empty name of at most 128 characters")
    return value.strip()


def _reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        raise ValidationError("reason must be non-empty text of at most 1024 characters")
    return value.strip()
