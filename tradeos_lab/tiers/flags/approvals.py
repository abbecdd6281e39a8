"""The approval queue: intents above the active profile's notional threshold, parked by
Feasibility until an operator approves or rejects them or their time runs out.

One hash holds each parked intent (its message and what the operator decides on: the signal, the
sizing, the rules it passed) under its intent id; a sorted set holds each one's deadline on the
flags server's clock, so whoever sweeps (Feasibility's timer) finds the expired ones in one call.
A decision takes the entry out atomically (a Lua script), so an intent is approved, rejected or
expired exactly once however many operators and sweepers race; a third set remembers the decided
ids for a day, so a signal handled again does not park an intent already decided.

Every key carries a TTL a day past the latest deadline: the tier may lose nothing a sweep has not
had the chance to see, and leaves nothing behind once the queue is quiet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

import redis

from tradeos_lab.contracts import Intent, IntentMessage, decode, encode
from tradeos_lab.errors import ContractError, ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.tiers.flags.plumbing import call_script, positive_int, run_pipeline, text

#: How long the keys outlive the latest deadline, and a decided id is remembered.
GRACE_S: Final = 86_400
#: The most expired intents one sweep takes.
SWEEP_LIMIT: Final = 100
#: The name approvals, rejections and expiries go by on `risk_events` and `audit`.
APPROVAL_RULE: Final = "approval"

_EXPIRE = """
local function keep(key, s)
  local ttl = redis.call('TTL', key)
  if ttl >= 0 and ttl < s then redis.call('EXPIRE', key, s) end
  if ttl == -1 then redis.call('EXPIRE', key, s) end
end
"""
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
# KEYS: entries, deadlines, decided; ARGV: intent id, entry, ttl seconds, grace seconds.
# Returns the deadline (parked now or before), or false when the intent was already decided.
_PARK = (
    _EXPIRE
    + _NOW
    + """
local grace = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - grace)
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return false end
local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not deadline then
  deadline = now + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], deadline, ARGV[1])
end
local s = math.ceil(tonumber(deadline) - now + grace)
keep(KEYS[1], s)
keep(KEYS[2], s)
return tostring(deadline)
"""
)
# KEYS: entries, deadlines, decided; ARGV: grace seconds, then the ids to take (none: every
# expired one, up to ARGV[2]). Returns the entries taken, each as {id, entry, deadline}.
_TAKE = (
    _EXPIRE
    + _NOW
    + """
local ids = {}
if ARGV[2] == 'expired' then
  ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
else
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local out = {}
for _, id in ipairs(ids) do
  local entry = redis.call('HGET', KEYS[1], id)
  local deadline = redis.call('ZSCORE', KEYS[2], id)
  if entry then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[3], now, id)
    out[#out + 1] = {id, entry, tostring(deadline or now)}
  end
end
if #out > 0 then keep(KEYS[3], tonumber(ARGV[1])) end
return out
"""
)
# KEYS: entries, deadlines, decided; ARGV: id, entry, deadline, grace seconds. Puts back an
# entry taken by a decision that could not be carried out.
_RESTORE = (
    _EXPIRE
    + _NOW
    + """
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
local s = math.ceil(math.max(tonumber(ARGV[3]) - now, 0) + tonumber(ARGV[4]))
keep(KEYS[1], s)
keep(KEYS[2], s)
return 1
"""
)


@dataclass(frozen=True)
class ParkedIntent:
    """An intent waiting for an operator, with what the operator decides on."""

    #: The intent as it will be published on approval (its id already the final one).
    message: IntentMessage
    #: The price it was sized at and its notional there.
    price: float
    notional: float
    #: The profile's threshold it is above, and how long it may wait.
    threshold: float
    ttl_s: float
    #: The modified signal behind it: strategy, direction, strengths, confidence, bar time.
    signal: dict[str, Any] = field(default_factory=dict)
    #: Epoch seconds on the flags server's clock; set once it is in the queue.
    deadline: float | None = None

    @property
    def intent_id(self) -> str:
        return self.message.message_id

    @property
    def intent(self) -> Intent:
        return self.message.payload

    @property
    def parked_at(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.ttl_s

    def facts(self) -> dict[str, Any]:
        """What a decision's `risk_events` and `audit` entries say about the intent."""
        intent = self.intent
        return {
            "rule": APPROVAL_RULE,
            "intent_id": self.intent_id,
            "strategy": intent.strategy,
            "symbol": intent.symbol,
            "side": intent.side.value,
            "quantity": intent.quantity,
            "notional": self.notional,
        }

    def describe(self) -> str:
        """`sma_cross buy 0.1 BTC-USD (notional 5,000.00)`."""
        intent = self.intent
        return (
            f"{intent.strategy} {intent.side.value} {intent.quantity:g} {intent.symbol} "
            f"(notional {self.notional:,.2f})"
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "message": encode(self.message).decode(),
                "price": self.price,
                "notional": self.notional,
                "threshold": self.threshold,
                "ttl_s": self.ttl_s,
                "signal": self.signal,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str, deadline: float | None) -> ParkedIntent:
        data = json.loads(raw)
        message = decode(data["message"])
        if not isinstance(message, IntentMessage):
            raise ContractError(f"the approval queue holds intents, not {message.schema_name}")
        return cls(
            message=message,
            price=float(data["price"]),
            notional=float(data["notional"]),
            threshold=float(data["threshold"]),
            ttl_s=float(data["ttl_s"]),
            signal=dict(data.get("signal") or {}),
            deadline=deadline,
        )


class ApprovalQueue:
    """Intents waiting for an operator, over the flags Redis (see the module docstring)."""

    def __init__(self, redis: redis.Redis, *, keys: Keys, grace_s: int = GRACE_S) -> None:
        self.redis = redis
        self.keys = keys
        self.grace_s = positive_int("grace_s", grace_s)
        self._park = redis.register_script(_PARK)
        self._take = redis.register_script(_TAKE)
        self._restore = redis.register_script(_RESTORE)

    def _keys(self) -> list[str]:
        return [
            self.keys.approvals(),
            self.keys.approval_deadlines(),
            self.keys.approvals_decided(),
        ]

    def park(self, parked: ParkedIntent) -> float | None:
        """Queue `parked` for `parked.ttl_s` seconds; its deadline (kept from the first time when
        it is already queued), or None when it was already decided (nothing queued)."""
        if not parked.ttl_s > 0:
            raise ValidationError(f"an approval TTL must be positive, not {parked.ttl_s!r}")
        deadline = call_script(
            self._park,
            self._keys(),
            [parked.intent_id, parked.to_json(), repr(float(parked.ttl_s)), self.grace_s],
        )
        return None if deadline is None else float(text(deadline))

    def pending(self) -> list[ParkedIntent]:
        """Every intent waiting, soonest deadline first (expired ones not swept yet included)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(self.keys.approvals())
        pipe.zrange(self.keys.approval_deadlines(), 0, -1, withscores=True)
        raw, deadlines = run_pipeline(pipe)
        entries = {text(k): v for k, v in raw.items()}
        return [
            ParkedIntent.from_json(entries[text(i)], float(score))
            for i, score in deadlines
            if text(i) in entries
        ]

    def get(self, intent_id: str) -> ParkedIntent | None:
        """The intent `intent_id` while it waits; None once decided (or never parked)."""
        return next((p for p in self.pending() if p.intent_id == intent_id), None)

    def take(self, intent_id: str) -> ParkedIntent | None:
        """Take `intent_id` out of the queue to decide it; None when it is not waiting (decided
        by someone else already, expired and swept, or never parked)."""
        taken = self._taken(call_script(self._take, self._keys(), [self.grace_s, intent_id]))
        return taken[0] if taken else None

    def take_expired(self, limit: int = SWEEP_LIMIT) -> list[ParkedIntent]:
        """Take every intent whose deadline has passed (up to `limit`), to reject them."""
        positive_int("limit", limit)
        raw = call_script(self._take, self._keys(), [self.grace_s, "expired", limit])
        return self._taken(raw)

    def restore(self, parked: ParkedIntent) -> None:
        """Put back an intent taken by a decision that could not be carried out (the bus or the
        records down), under its old deadline."""
        if parked.deadline is None:
            raise ValidationError("only an intent taken from the queue can be put back")
        call_script(
            self._restore,
            self._keys(),
            [parked.intent_id, parked.to_json(), repr(parked.deadline), self.grace_s],
        )

    @staticmethod
    def _taken(raw: list[Any]) -> list[ParkedIntent]:
        return [ParkedIntent.from_json(entry, float(text(deadline))) for _, entry, deadline in raw]
