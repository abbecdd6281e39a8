"""Agent: watches risk and halts trading on its own rules; runs the learning loop.

What it consumes: `risk_events` (circuit-breaker trips, execution failures, reconciliation
mismatches) and `orders` (Execution's order attempts: the error rate's denominator; see
`order_attempt`), plus timers:
every `EVALUATE_EVERY_S` it samples the account's equity and each symbol's latest price from the
cache and judges every rule; every `LEARN_EVERY_S` it runs one learning-loop step; once a week
(`REOPTIMIZE_EVERY_S`, claimed on the flags tier so that one process runs it) it re-runs the
research sweeps.

The equity samples the drawdown rule judges are kept in the cache too (a sorted set by time,
trimmed to the rule's window and capped), so a restarted agent still sees the window's peak; while
the cache is down it goes on from memory.

What it decides: the active policy profile's agent rules (`tradeos_lab.agent.rules`) judged on
those figures; `AgentHalts` engages or releases the agent's kill switches accordingly (never a
switch it did not set; a manual switch outranks it). Event windows are rebuilt from the records'
risk events and Execution's audit entries of its order attempts when the service starts, so a
restart does not forget recent trips or failures; an attempt is one per action and order
(`attempt_key`), so an attempt the records and the stream both bring counts once.

What it emits: an `audit` entry per engagement, release, deferral or override, naming the rule
and the figures that decided it; one per learning step and per config proposal.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar, Final

import redis

from tradeos_lab.agent import rules as agent_rules
from tradeos_lab.agent.halts import AgentAction, AgentHalts
from tradeos_lab.agent.policy import ActiveRules, active_rules, learn
from tradeos_lab.agent.rules import EventWindow, Verdict
from tradeos_lab.contracts import (
    OrderMessage,
    OrderStatus,
    OrderV1Message,
    RiskEventMessage,
    RiskKind,
    Severity,
)
from tradeos_lab.contracts.ids import derived_message_id
from tradeos_lab.errors import ContractError
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import Service, ServiceContext, Timer
from tradeos_lab.pipeline.services.signal_modifier import Held

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message

log = logging.getLogger(__name__)

EVALUATE_EVERY_S: Final = 5.0
LEARN_EVERY_S: Final = 3_600.0
#: How often the re-optimisation timer asks whether a week has passed since the last run.
REOPTIMIZE_CHECK_S: Final = 3_600.0
#: The re-optimisation runs once a week across every agent process (a claim on the flags tier).
REOPTIMIZE_EVERY_S: Final = 7 * 86_400
REOPTIMIZE_CLAIM: Final = "agent.reoptimize"
#: Events older than this are dropped from the windows whatever a rule's window.
MAX_WINDOW_S: Final = 7 * 86_400.0
#: At most this many equity samples are kept in the cache (a day at one per `EVALUATE_EVERY_S`).
MAX_EQUITY_SAMPLES: Final = 20_000
#: Execution's audit actions that count as an attempted order: the order answering an intent
#: (`order.submit`, whatever the broker said) and a broker's later rejection (`order.rejected`).
ORDER_ATTEMPTS: Final = frozenset({"order.submit", "order.rejected"})
#: The service whose orders are attempts (its name is its consumer group, which derives its ids).
EXECUTION: Final = "execution"


def order_attempt(message: OrderMessage | OrderV1Message) -> str | None:
    """The audit action (of `ORDER_ATTEMPTS`) Execution published beside this order, or None when
    the order is no attempt. Execution answers an intent with its order first, so the runner
    gives that order the id derived from the intent (its causation) at index 0: that order is
    `order.submit`; any other order of Execution's that is rejected is `order.rejected`; the rest
    (fills and expiries a bar or a broker's update brings) are no attempts."""
    if message.producer != EXECUTION:
        return None
    parent = message.causation_id
    if parent is not None and message.message_id == derived_message_id(
        parent, stage=EXECUTION, index=0
    ):
        return "order.submit"
    if message.payload.status is OrderStatus.REJECTED:
        return "order.rejected"
    return None


def attempt_key(action: str, client_order_id: str) -> str:
    """An order attempt's identity, the same from its `orders` message and from Execution's audit
    entry in the records (target `order:<client order id>`): one per action and order."""
    return f"{action} {client_order_id}"


class Agent(Service):
    """Halting rules over risk events, orders and the cache; learning and re-optimisation."""

    name: ClassVar[str] = "agent"
    inputs: ClassVar[tuple[Stream, ...]] = (Stream.RISK_EVENTS, Stream.ORDERS)
    #: It counted order attempts from `audit` before.
    retired_inputs: ClassVar[tuple[Stream, ...]] = (Stream.AUDIT,)
    outputs: ClassVar[tuple[Stream, ...]] = (Stream.AUDIT,)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        lab = ctx.lab
        self.halts = AgentHalts(lab.kill_switches)
        self.rules: Held[ActiveRules] = Held(lambda: active_rules(lab.records))
        self.breaker_trips = EventWindow(MAX_WINDOW_S)
        self.mismatches = EventWindow(MAX_WINDOW_S)
        self.execution_errors = EventWindow(MAX_WINDOW_S)
        self.order_attempts = EventWindow(MAX_WINDOW_S)
        self.equity: deque[tuple[float, float]] = deque()
        #: Per symbol: the price timestamp last seen and when (agent clock) it last moved on.
        self.price_seen: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()  # handle() and the timers may run on different threads
        self._rebuilt = False

    # ---- what it consumes -----------------------------------------------------------------

    def handle(self, message: Message) -> Sequence[Message]:
        return self.handle_batch([message])[0]

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        """Every event of the batch counted, then the rules judged once on the counts (one read
        of the kill switches per batch, not per event); what the judgement emits follows the
        batch's last counted event."""
        outputs: list[Sequence[Message]] = [() for _ in messages]
        with self._lock:
            self._rebuild()
            counted = [i for i, m in enumerate(messages) if self._counted(m)]
            if counted:
                last = messages[counted[-1]]
                outputs[counted[-1]] = self._judge(last, self._event_verdicts())
        return outputs

    def _counted(self, message: Message) -> bool:
        """Note a risk event or an order attempt in its window; False for what no rule counts."""
        if message.producer == self.name:
            return False
        if isinstance(message, RiskEventMessage):
            at = message.produced_at.timestamp()
            self._count(message.payload.kind, message.payload.severity, at, message.message_id)
        elif isinstance(message, OrderMessage | OrderV1Message):
            action = order_attempt(message)
            if action is None:
                return False
            key = attempt_key(action, message.payload.client_order_id)
            self.order_attempts.add(message.produced_at.timestamp(), key)
        else:
            raise ContractError(f"the agent reads risk events and orders, not {message!r}")
        return True

    def timers(self) -> Sequence[Timer]:
        return (
            Timer("agent.evaluate", EVALUATE_EVERY_S, self.evaluate),
            Timer("agent.learn", LEARN_EVERY_S, self.learn),
            Timer("agent.reoptimize", REOPTIMIZE_CHECK_S, self.reoptimize),
        )

    def _count(self, kind: RiskKind, severity: Severity, at: float, message_id: str) -> None:
        if kind is RiskKind.CIRCUIT_BREAKER:
            self.breaker_trips.add(at, message_id)
        elif kind is RiskKind.RECONCILIATION and severity is not Severity.INFO:
            self.mismatches.add(at, message_id)
        elif kind is RiskKind.EXECUTION_FAILURE:
            self.execution_errors.add(at, message_id)

    def _rebuild(self) -> None:
        """Once: the windows' events from the records' risk events and Execution's audit
        entries of its order attempts of the last week."""
        if self._rebuilt:
            return
        self._rebuilt = True
        records = self.ctx.lab.records
        since = self.ctx.now() - timedelta(seconds=MAX_WINDOW_S)
        for event in records.risk_events_since(since):
            self._count(
                RiskKind(event.kind),
                Severity(event.severity),
                event.produced_at.timestamp(),
                event.message_id,
            )
        for entry in records.audit_since(since, actions=ORDER_ATTEMPTS):
            if entry.producer == EXECUTION:
                key = attempt_key(entry.action, entry.target.removeprefix("order:"))
                self.order_attempts.add(entry.produced_at.timestamp(), key)
        self.equity.extend(self._kept_equity())

    def _kept_equity(self) -> list[tuple[float, float]]:
        """The equity samples of the drawdown window the cache keeps, oldest first (none when
        the cache is down: the window then starts with this process)."""
        since = self.ctx.clock() - self.rules.get().rules.drawdown.window_s
        try:
            members = self.ctx.lab.cache.redis.zrangebyscore(
                self.ctx.lab.keys.agent_equity(), since, "+inf"
            )
        except redis.RedisError as e:
            log.warning("agent could not read its equity samples from the cache: %s", e)
            return []
        samples: list[tuple[float, float]] = []
        for member in members:
            if not isinstance(member, bytes | str):
                continue
            try:
                at, value = json.loads(member)
                samples.append((float(at), float(value)))
            except (ValueError, TypeError):
                continue  # a corrupt sample is left out, never trusted
        return samples

    # ---- what it decides ------------------------------------------------------------------

    def evaluate(self) -> list[Message]:
        """Sample equity and prices from the cache, then judge every rule."""
        with self._lock:
            self._rebuild()
            self._sample()
            verdicts = self._event_verdicts() + self._sampled_verdicts()
            return self._judge(None, verdicts)

    def _sample(self) -> None:
        now = self.ctx.clock()
        cache = self.ctx.lab.cache
        account = cache.get_account()
        window = self.rules.get().rules.drawdown.window_s
        if account is not None:
            self.equity.append((now, account.portfolio_value))
            self._keep_equity(now, account.portfolio_value, window)
        while self.equity and self.equity[0][0] < now - window:
            self.equity.popleft()
        symbols = sorted(set(self.ctx.settings.pipeline_symbols) | set(cache.get_watchlist()))
        for symbol, price in cache.get_prices(symbols).items():
            seen = self.price_seen.get(symbol)
            if seen is None or price.ts != seen[0]:
                self.price_seen[symbol] = (price.ts, now)

    def _keep_equity(self, at: float, value: float, window: float) -> None:
        """Add a sample to the cache's copy, trimmed to the window and capped, in one round
        trip; a cache outage only costs the copy (the window goes on in memory)."""
        key = self.ctx.lab.keys.agent_equity()
        try:
            with self.ctx.lab.cache.redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {json.dumps([at, value]): at})
                pipe.zremrangebyscore(key, "-inf", f"({at - window}")
                pipe.zremrangebyrank(key, 0, -MAX_EQUITY_SAMPLES - 1)
                pipe.expire(key, max(1, int(window)))
                pipe.execute()
        except redis.RedisError as e:
            log.warning("agent could not keep its equity sample in the cache: %s", e)

    def _event_verdicts(self) -> list[Verdict]:
        rules = self.rules.get().rules
        now = self.ctx.clock()
        out: list[Verdict] = []
        if rules.circuit_breaker.enabled:
            trips = self.breaker_trips.count(now, rules.circuit_breaker.window_s)
            out.append(agent_rules.circuit_breaker(rules.circuit_breaker, trips))
        if rules.reconciliation.enabled:
            found = self.mismatches.count(now, rules.reconciliation.window_s)
            out.append(agent_rules.reconciliation(rules.reconciliation, found))
        if rules.execution_errors.enabled:
            window = rules.execution_errors.window_s
            out.append(
                agent_rules.execution_errors(
                    rules.execution_errors,
                    self.execution_errors.count(now, window),
                    self.order_attempts.count(now, window),
                )
            )
        return out

    def _sampled_verdicts(self) -> list[Verdict]:
        active = self.rules.get()
        rules = active.rules
        now = self.ctx.clock()
        out: list[Verdict] = []
        if rules.drawdown.enabled:
            verdict = agent_rules.drawdown(
                rules.drawdown, active.max_drawdown_pct, self.equity, now
            )
            if verdict is not None:
                out.append(verdict)
        if rules.stale_data.enabled:
            for symbol, (_, moved_at) in sorted(self.price_seen.items()):
                out.append(agent_rules.stale_data(rules.stale_data, symbol, now - moved_at))
        return out

    # ---- what it emits --------------------------------------------------------------------

    def _judge(self, parent: Message | None, verdicts: list[Verdict]) -> list[Message]:
        return [self._audit(parent, a) for a in self.halts.apply(verdicts)]

    def _audit(self, parent: Message | None, action: AgentAction) -> Message:
        return self.ctx.audit(
            parent,
            action=action.action,
            target=f"rule:{action.rule}",
            reason=f"{action.target}: {action.reason}"[:4000],
            old_value=None,
            new_value={"figures": action.figures, "switch": action.switch},
        )

    def learn(self) -> list[Message]:
        """One learning-loop step, audited."""
        active = self.rules.get()
        if not active.rules.learning.enabled:
            return []
        step = learn(self.ctx.lab, now=self.ctx.now(), rules=active.rules)
        return [
            self.ctx.audit(
                None,
                action="weights.adjusted" if step.applied else "weights.held",
                target="signal_weights",
                reason=step.reason,
                old_value=step.before,
                new_value={"weights": step.after, **step.evidence_record()},
            )
        ]

    def reoptimize(self) -> list[Message]:
        """The weekly re-optimisation (once a week whoever claims it first): sweeps on recent lake
        data, proposals as system config, each announced."""
        from tradeos_lab.agent.reoptimize import reoptimize

        dedup = self.ctx.lab.flags.dedup
        if not dedup.claim_once(REOPTIMIZE_CLAIM, ttl_seconds=REOPTIMIZE_EVERY_S):
            return []
        try:
            done = reoptimize(self.ctx.lab, now=self.ctx.now())
        except Exception:
            dedup.release_claim(REOPTIMIZE_CLAIM)  # failed: the next check tries again
            raise
        return [self.ctx.message(None, d.announcement) for d in done]
