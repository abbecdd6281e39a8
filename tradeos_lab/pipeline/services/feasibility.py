"""Feasibility: modified signals in, sized and risk-checked intents out (or the reason not).

What it consumes: `signals.modified`.

What it decides:
- the order: a signal names the exposure its strategy wants (long, short or flat). While the
  strategy already holds that side nothing is ordered; otherwise the order opens, flips or closes
  the strategy's position (the records' ledger plus its orders still working). An opening size
  is the adjusted strength times the active policy profile's largest position (% of equity) at
  the latest price; equity is the paper account's portfolio value in the cache, or its starting
  cash before the first fill.
  A signal below the profile's minimum confidence opens nothing (closing is always considered).
- the checks: every rule of `rules.RULES`, in order, each a pure function of the facts gathered
  here. The kill switch is read first and alone: when it denies the order (HALTED, REDUCING and
  the order does not reduce, or the flags tier unreachable) no other fact is gathered. Under
  REDUCING a flip is cut to the part that closes the position, which does reduce.

The active policy profile is followed without a restart: a `ConfigWatcher` sees another profile
chosen (`active_policy_profile`), the next signal is sized under it and carries a `config.applied`
audit entry.

What it emits: an `intents` message listing the rules it passed and the policy profile version it
was sized under, kept in the records under the id the bus gives it, plus an `audit` entry; or, for
a refused order, a `risk_events` message and an `audit` entry naming the rule and its reason. The
modified signal it decided on is kept with them, in the same transaction (`kept`).

Approval: an intent that passed every rule but whose notional is above the active profile's
`approval_notional` is parked in the flags tier's approval queue for `approval_ttl_s` instead of
published (an `audit` entry says so); `tradeos_lab.operator` approves (publishes it, same id) or
rejects it. An order that only reduces exposure never waits: an exit held for a human holds the
risk longer. While one intent of a strategy waits in a symbol, its later orders there wait behind
it (nothing new is parked). A timer sweeps the queue: an intent not approved in time is rejected on
`risk_events` ("not approved within N s") and `audit`, both kept in the records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Final

import redis
from sqlalchemy import select

from tradeos_lab.agent.config import ConfigWatcher, applied
from tradeos_lab.contracts import (
    AuditMessage,
    Direction,
    Intent,
    IntentMessage,
    ModifiedSignal,
    ModifiedSignalMessage,
    OrderType,
    RiskEventMessage,
    RiskKind,
    Severity,
    Side,
    TimeInForce,
    derive,
    restamped,
)
from tradeos_lab.contracts.ids import derived_message_id
from tradeos_lab.errors import (
    ContractError,
    DependencyUnavailable,
    TradeosError,
    ValidationError,
)
from tradeos_lab.indicators.sessions import sessions
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import Service, ServiceContext, Timer
from tradeos_lab.pipeline.services.rules import (
    DUST,
    RULES,
    OrderCheck,
    first_failure,
    rate_limit,
)
from tradeos_lab.pipeline.services.signal_modifier import (
    ACTIVE_PROFILE_KEY,
    ActiveProfile,
    Held,
    ProfileSource,
)
from tradeos_lab.providers.alpaca import is_crypto
from tradeos_lab.stores.records import RecordsStore, StrategyBook
from tradeos_lab.stores.records.models import LedgerEntry
from tradeos_lab.stores.records.store import KeptMessage
from tradeos_lab.tiers.flags import (
    BreakerState,
    BreakerStatus,
    Decision,
    ParkedIntent,
    reduces_exposure,
)
from tradeos_lab.tiers.flags.approvals import APPROVAL_RULE
from tradeos_lab.tiers.flags.kill_switches import SwitchesRead

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message, Payload
    from tradeos_lab.lab import Lab

#: The broker's circuit breaker and rate limiter on the flags tier, shared with Execution.
BROKER_DEPENDENCY: Final = "broker"
#: The exchange calendar equities trade on.
EQUITY_CALENDAR: Final = "XNYS"
#: Live-tunable limits in the records' system config, and their values when unset.
MAX_ORDER_NOTIONAL_KEY: Final = "risk.max_order_notional"
DEFAULT_MAX_ORDER_NOTIONAL: Final = 50_000.0
EXIT_COOLDOWN_KEY: Final = "risk.exit_cooldown_seconds"
DEFAULT_EXIT_COOLDOWN_S: Final = 30.0
BROKER_RATE_LIMIT_KEY: Final = "risk.broker_orders_per_minute"
DEFAULT_BROKER_RATE_LIMIT: Final = 200  # Alpaca's documented 200 requests per minute
DAY_START_EQUITY_KEY: Final = "risk.day_start_equity"
#: The paper broker's starting cash in the records, and the paper broker's default for it.
STARTING_CASH_KEY: Final = "broker.paper.starting_cash"
DEFAULT_STARTING_CASH: Final = 100_000.0
#: How long an intent cleared here counts as working while no order for it is recorded.
UNPLACED_MAX_AGE_S: Final = 60.0
#: Below this notional an order is noise, not a decision.
MIN_ORDER_NOTIONAL: Final = 1.0
#: The stage a parked intent's id is derived under (apart from the audit entry saying so), and
#: how often the approval queue is swept for intents not approved in time.
APPROVAL_STAGE: Final = "feasibility.approval"
APPROVAL_SWEEP_S: Final = 1.0

#: The risk kind of a refusal under each rule that has its own (any other is a limit breach).
_KIND: Final = {
    "kill_switch": RiskKind.KILL_SWITCH,
    "circuit_breaker": RiskKind.CIRCUIT_BREAKER,
    "rate_limit": RiskKind.RATE_LIMITED,
}
_CRITICAL: Final = frozenset({"kill_switch", "max_daily_loss", "circuit_breaker"})
#: What an intent lists as the checks it passed: every rule, in order.
_CHECKS: Final = tuple(name for name, _ in RULES)


class Feasibility(Service):
    """Position sizing and the named pre-trade rules between a signal and an order."""

    name: ClassVar[str] = "feasibility"
    inputs: ClassVar[tuple[Stream, ...]] = (Stream.SIGNALS_MODIFIED,)
    outputs: ClassVar[tuple[Stream, ...]] = (Stream.INTENTS, Stream.RISK_EVENTS, Stream.AUDIT)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.config = ConfigWatcher(ctx.lab.records)
        self.profiles = ProfileSource(ctx.lab.records, config=self.config)
        self._limits = Held(self._read_limits)
        self._day_start: tuple[str, float] | None = None
        #: Intents this process cleared whose order the records do not hold yet: (strategy,
        #: symbol) -> intent id -> (signed quantity, monotonic time cleared, its signal's bar).
        #: They count as working for the signals of later bars, so a signal handled before
        #: Execution placed the previous intent does not order the same exposure twice; one
        #: never placed (dead-lettered) stops counting after `UNPLACED_MAX_AGE_S`.
        self._unplaced: dict[tuple[str, str], _OnTheWay] = {}
        #: Facts read once for the batch in hand (`handle_batch`), else None (read per message).
        self._batch: _BatchFacts | None = None
        #: Whether the rate limit is taken after the batch's decisions, for all of them.
        self._defer_rate = False

    def handle(self, message: Message) -> Sequence[Message]:
        changes, switched = self._follow_profile(message)
        decided = self._decide(message) + switched
        outputs = kept(self.ctx.lab.records, message, decided, stage=self.name)
        self._note_unplaced(message, outputs)
        self.config.acknowledge(changes)
        return outputs

    def _follow_profile(self, parent: Message) -> tuple[dict[str, Any], list[Message]]:
        """When another profile was chosen: read it now, and its `audit` entry."""
        changes = self.config.pending((ACTIVE_PROFILE_KEY,))
        if not changes:
            return changes, []
        profile = self.profiles.reload()
        effect = f"sizing under {profile.label} (max position {profile.max_position_pct:g}%)"
        return changes, [applied(self.ctx, parent, self.config, ACTIVE_PROFILE_KEY, effect)]

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        """Every message of the batch decided in order on facts read once for the batch (the
        records' book in one transaction; the kill switches and the broker's breaker in one
        flags round trip; prices, account and positions from the cache), each decision's
        intent counted as working for the next, and what they emit kept in one transaction."""
        signals: list[ModifiedSignal] = []
        for message in messages:
            if not isinstance(message.payload, ModifiedSignal):
                raise ContractError(f"feasibility reads modified signals, not {message.SCHEMA}")
            signals.append(message.payload)
        records = self.ctx.lab.records
        unplaced = _copy(self._unplaced)
        try:
            changes, switched = self._follow_profile(messages[0]) if messages else ({}, [])
            self._batch = self._read_batch(signals)
            read = _copy(self._unplaced)  # as the batch's book found them (placed ones gone)
            # The broker's rate limit is taken for all the batch's intents at once; when the
            # budget cannot cover them all, the batch is decided again taking it order by order.
            self._defer_rate = True
            decided = self._decide_each(messages)
            cleared = sum(isinstance(m.payload, Intent) for out in decided for m in out)
            if cleared and not self._take_rate(cleared):
                self._unplaced = read
                self._defer_rate = False
                decided = self._decide_each(messages)
            if switched:
                decided[0] += switched
            batch: list[Sequence[Message]] = list(
                kept_many(records, messages, decided, stage=self.name)
            )
            self.config.acknowledge(changes)
            return batch
        except BaseException:
            self._unplaced = unplaced  # none of the batch's intents went out
            raise
        finally:
            self._batch = None
            self._defer_rate = False

    def _decide_each(self, messages: Sequence[Message]) -> list[list[Message]]:
        """Each message decided in order, each intent counted as working for the next."""
        decided: list[list[Message]] = []
        for message in messages:
            decided.append(self._decide(message))
            self._note_unplaced(message, decided[-1])
        return decided

    def _take_rate(self, cost: int) -> bool:
        """Take `cost` slots of the broker's rate limit at once; False when they do not fit
        (or the flags tier does not answer: the orders then take theirs one by one, failing
        closed under the rule)."""
        limit = self.limits().broker_rate_limit
        if cost > limit:
            return False
        try:
            limiter = self.ctx.lab.flags.rate_limiter(
                BROKER_DEPENDENCY, limit=limit, window_seconds=60
            )
            return limiter.acquire(cost).allowed
        except (redis.RedisError, TradeosError):
            return False

    def _note_unplaced(self, parent: Message, outputs: Sequence[Message]) -> None:
        """Count the intent among `outputs` (under the id the runner gives it) as working."""
        signal = parent.payload
        if not isinstance(signal, ModifiedSignal):
            return
        for index, output in enumerate(outputs):
            intent = output.payload
            if isinstance(intent, Intent):
                signed = intent.quantity if intent.side is Side.BUY else -intent.quantity
                intent_id = output_id(parent.message_id, self.name, index)
                pair = (intent.strategy, intent.symbol)
                on_the_way = self._unplaced.setdefault(pair, _OnTheWay())
                on_the_way.add(intent_id, signed, time.monotonic(), signal.ts)

    def _read_batch(self, signals: Sequence[ModifiedSignal]) -> _BatchFacts:
        """The facts every decision of a batch reads, each store asked once."""
        lab = self.ctx.lab
        pairs = list(dict.fromkeys((s.strategy, s.symbol) for s in signals))
        symbols = list(dict.fromkeys(s.symbol for s in signals))
        books = self._books(pairs)
        switches, breaker = self._gate(pairs)
        profile, limits = self.profiles.get(), self.limits()
        book = lab.cache.get_book(symbols)
        account, positions, marks = book.account, book.positions, book.prices
        prices = {s: marks[s].price for s in symbols if s in marks}
        return _BatchFacts(
            profile=profile,
            limits=limits,
            books=books,
            switches=switches,
            breaker=breaker,
            prices=prices,
            equity=None if account is None else account.portfolio_value,
            exposure={
                s: abs(p.quantity) * (marks[s].price if s in marks else p.avg_price)
                for s, p in positions.items()
            },
            held=frozenset(s for s, p in positions.items() if abs(p.quantity) > DUST),
        )

    def _gate(self, pairs: Sequence[tuple[str, str]]) -> tuple[SwitchesRead, BreakerState | None]:
        """The kill switches over `pairs` and the broker's circuit (`broker_circuit`), read in
        one flags round trip. A switch that cannot be read reads HALTED; a circuit that cannot
        be read is None, and each order is refused under the breaker's rule (fail closed)."""
        lab = self.ctx.lab
        pipe = lab.flags.redis.pipeline(transaction=False)
        read_switches = lab.kill_switches.queue_switches(pipe, pairs)
        admitted = lab.flags.circuit_breaker(BROKER_DEPENDENCY).queue_admit(pipe)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as e:
            return read_switches(e), None
        try:
            breaker: BreakerState | None = _judged(admitted(replies[2]))
        except (redis.RedisError, TradeosError):
            breaker = None
        return read_switches(replies), breaker

    def _decide(self, message: Message) -> list[Message]:
        """Intent and audit, or risk event and audit, or an audit of a skip, or nothing."""
        signal = message.payload
        if not isinstance(signal, ModifiedSignal):
            raise ContractError(f"feasibility reads modified signals, not {message.SCHEMA}")
        profile = self._profile()
        held, working, account = self._book(signal)
        # Orders still working count as held, so a signal repeated before its fill orders once.
        exposure = held + working
        if _side_of(exposure) == _WANT[signal.direction]:
            return []
        price = self._price(signal)
        if price is None:
            return [self._skip(message, signal, f"no price for {signal.symbol} in the cache")]
        equity = self._equity()
        order = _order(signal, exposure, price, equity, profile)
        if isinstance(order, str):
            return [self._skip(message, signal, order)] if order else []
        side, quantity = order
        proposal = _Proposal(
            message=message,
            signal=signal,
            side=side,
            quantity=quantity,
            price=price,
            reduces=reduces_exposure(held, side, quantity)
            and reduces_exposure(account, side, quantity),
            held=held,
            on_the_way=working,
        )
        failed = self._check(proposal, equity, account)
        if failed is not None and failed[0] == "kill_switch":
            # Under REDUCING a flip is cut to its closing part, which reduces exposure.
            closing = _closing_part(proposal, held, account)
            if closing is not None and self._check(closing, equity, account) is None:
                return self._clear(closing, profile)
        if failed is not None:
            return self._refuse(proposal, *failed)
        return self._clear(proposal, profile)

    def _check(self, p: _Proposal, equity: float, account: float) -> tuple[str, str] | None:
        """(rule, reason) of the first rule the order fails, or None when it passes them all.

        The kill switch is read first and alone; a flags-tier failure on any later read refuses
        the order under the rule that needed it (fail closed)."""
        lab = self.ctx.lab
        kill = self.ctx.lab.kill_switches.check_order(
            p.signal.strategy,
            p.signal.symbol,
            p.side,
            p.quantity,
            book=lab.records,
            switches=None if self._batch is None else self._batch.switches,
        )
        if not kill.allowed:
            return "kill_switch", f"kill switch: {kill.reason}"
        try:
            check = self._facts(p, kill, equity, account)
            failed = first_failure(check)
            if failed is not None:
                return failed
            check = self._with_rate(check)
        except _FlagsDown as e:
            return e.rule, str(e)
        reason = rate_limit(check)
        return None if reason is None else ("rate_limit", reason)

    # ---- facts ------------------------------------------------------------------------------

    def _book(self, signal: ModifiedSignal) -> tuple[float, float, float]:
        """The strategy's filled position in the symbol, the signed unfilled quantity of its
        orders still working there (and of its intents not yet placed), and the account's
        position in the symbol (the ledger, as `net_quantity` sums it)."""
        pair = (signal.strategy, signal.symbol)
        book = self._batch.books[pair] if self._batch is not None else self._books([pair])[pair]
        # Only intents of earlier bars: a signal handled again (after a crash or a failed
        # batch) decides as it did the first time, its own intent and later ones not counted.
        on_the_way = self._unplaced.get(pair)
        unplaced = 0.0 if on_the_way is None else on_the_way.before(signal.ts)
        return book.held, book.working + unplaced, book.account

    def _books(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], StrategyBook]:
        """The records' `StrategyBook` of each (strategy, symbol), from one snapshot; forgets the
        unplaced intents whose order the records now hold (counted in the working orders or the
        ledger)."""
        from tradeos_lab.pipeline.services.execution import client_order_id_for

        stale = time.monotonic() - UNPLACED_MAX_AGE_S
        for pair in list(self._unplaced):
            if not self._unplaced[pair].forget_older(stale):
                del self._unplaced[pair]
        cids = {
            client_order_id_for(i): (pair, i)
            for pair, entries in self._unplaced.items()
            for i in entries.entries
        }
        books, recorded = self.ctx.lab.records.strategy_books(pairs, client_order_ids=cids)
        for cid in recorded:
            pair, intent_id = cids[cid]
            self._unplaced[pair].discard(intent_id)
        return books

    def _price(self, signal: ModifiedSignal) -> float | None:
        """The latest price in the cache, else the close of the latest cached bar."""
        cache = self.ctx.lab.cache
        if self._batch is not None and signal.symbol in self._batch.prices:
            return self._batch.prices[signal.symbol]
        latest = cache.get_price(signal.symbol)
        if latest is not None:
            return latest.price
        bars = cache.get_bars(signal.symbol, signal.timeframe, limit=1)
        return float(bars["close"].iloc[-1]) if len(bars) else None

    def _equity(self) -> float:
        """The paper account's portfolio value; its starting cash before it has one."""
        if self._batch is not None:
            return self._batch.equity or self.limits().starting_cash
        account = self.ctx.lab.cache.get_account()
        if account is not None:
            return account.portfolio_value
        return self.limits().starting_cash

    def limits(self) -> RiskLimits:
        """The live-tunable limits from the records (held up to a second, like the profile);
        one reading for the whole batch in hand."""
        return self._limits.get() if self._batch is None else self._batch.limits

    def _profile(self) -> ActiveProfile:
        """The active policy profile; one reading for the whole batch in hand."""
        return self.profiles.get() if self._batch is None else self._batch.profile

    def _read_limits(self) -> RiskLimits:
        """The limits in one read of the records' system config."""
        get = self.ctx.lab.records.config_values().get
        return RiskLimits(
            max_order_notional=float(get(MAX_ORDER_NOTIONAL_KEY, DEFAULT_MAX_ORDER_NOTIONAL)),
            exit_cooldown_s=float(get(EXIT_COOLDOWN_KEY, DEFAULT_EXIT_COOLDOWN_S)),
            broker_rate_limit=int(get(BROKER_RATE_LIMIT_KEY, DEFAULT_BROKER_RATE_LIMIT)),
            starting_cash=float(get(STARTING_CASH_KEY, DEFAULT_STARTING_CASH)),
        )

    def _facts(self, p: _Proposal, kill: Decision, equity: float, account: float) -> OrderCheck:
        """The facts every rule but the rate limit judges the order by."""
        signal = p.signal
        lab = self.ctx.lab
        profile = self._profile()
        limits = self.limits()
        now = self.ctx.clock()
        if self._batch is not None:
            if self._batch.breaker is None:
                raise _FlagsDown("circuit_breaker", DependencyUnavailable("breaker unread"))
            breaker = self._batch.breaker
        else:
            try:
                breaker = broker_circuit(lab)
            except (redis.RedisError, TradeosError) as e:
                raise _FlagsDown("circuit_breaker", e) from e
        return OrderCheck(
            strategy=signal.strategy,
            symbol=signal.symbol,
            side=p.side,
            quantity=p.quantity,
            price=p.price,
            now=now,
            reduces=p.reduces,
            kill=kill,
            breaker=breaker,
            equity=equity,
            day_start_equity=self._day_start_equity(equity, now),
            max_daily_loss_pct=profile.max_daily_loss_pct,
            # the account's position once the strategy's orders already on their way are done
            position=account + p.on_the_way,
            max_position_pct=profile.max_position_pct,
            other_exposure=self._other_exposure(signal.symbol),
            max_leverage=profile.max_leverage,
            max_order_notional=limits.max_order_notional,
            last_exit_at=(
                self._last_exit_at(p, now - limits.exit_cooldown_s)
                if limits.exit_cooldown_s > 0
                else None
            ),
            exit_cooldown_s=limits.exit_cooldown_s,
            market_open=market_open(signal.symbol, now),
            open_positions=self._open_positions(signal.symbol),
            max_open_positions=profile.max_open_positions,
        )

    def _with_rate(self, check: OrderCheck) -> OrderCheck:
        """Take one slot of the broker's rate limit (the only check with an effect: last); in a
        batch, the slots are taken for all its intents at once afterwards (`handle_batch`)."""
        if self._defer_rate:
            return check
        limit = self.limits().broker_rate_limit
        try:
            limiter = self.ctx.lab.flags.rate_limiter(
                BROKER_DEPENDENCY, limit=limit, window_seconds=60
            )
            decision = limiter.acquire()
        except (redis.RedisError, TradeosError) as e:
            raise _FlagsDown("rate_limit", e) from e
        return OrderCheck(**{**vars(check), "rate": decision})

    def _day_start_equity(self, equity: float, now: float) -> float:
        """Equity when this UTC day's first order was checked, kept in the records so every
        process and a restart agree on it."""
        records = self.ctx.lab.records
        day = datetime.fromtimestamp(now, UTC).date().isoformat()
        if self._day_start is not None and self._day_start[0] == day:
            return self._day_start[1]
        kept = records.get_config(DAY_START_EQUITY_KEY)
        if isinstance(kept, dict) and kept.get("day") == day:
            self._day_start = (day, float(kept["equity"]))
            return self._day_start[1]
        records.set_config(
            DAY_START_EQUITY_KEY,
            {"day": day, "equity": equity},
            changed_by=f"service:{self.name}",
            reason="the daily loss limit counts from the first equity seen on a UTC day",
        )
        self._day_start = (day, equity)
        return equity

    def _other_exposure(self, symbol: str) -> float:
        """Gross market value of the account's positions in every other symbol (cache copy)."""
        if self._batch is not None:
            return sum(v for s, v in self._batch.exposure.items() if s != symbol)
        cache = self.ctx.lab.cache
        positions = {s: p for s, p in cache.get_positions().items() if s != symbol}
        prices = cache.get_prices(positions) if positions else {}
        return sum(
            abs(p.quantity) * (prices[s].price if s in prices else p.avg_price)
            for s, p in positions.items()
        )

    def _open_positions(self, symbol: str) -> int:
        """How many symbols other than `symbol` the account holds a position in (cache copy)."""
        if self._batch is not None:
            return len(self._batch.held - {symbol})
        positions = self.ctx.lab.cache.get_positions()
        return sum(1 for s, p in positions.items() if s != symbol and abs(p.quantity) > DUST)

    def _last_exit_at(self, p: _Proposal, since: float) -> float | None:
        """When the strategy's position in the symbol last returned to flat, looking only at
        ledger entries since `since` (an older exit cannot hold an order back): walked back
        from the position now, newest first, so the cost does not grow with the history."""
        stmt = (
            select(LedgerEntry)
            .where(
                LedgerEntry.strategy == p.signal.strategy,
                LedgerEntry.symbol == p.signal.symbol,
                LedgerEntry.executed_at >= datetime.fromtimestamp(since, UTC),
            )
            .order_by(LedgerEntry.executed_at.desc(), LedgerEntry.execution_id.desc())
        )
        after = p.held
        with self.ctx.lab.records.reading() as session:
            for entry in session.scalars(stmt):
                before = after - entry.signed_quantity
                if before and math.isclose(after, 0.0, abs_tol=1e-9 * max(1.0, abs(before))):
                    at = entry.executed_at
                    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
                after = before
        return None

    # ---- outputs ----------------------------------------------------------------------------

    def _emit(self, parent: Message, index: int, payload: Payload) -> Message:
        """Output `index` of `parent`, built under the id the runner gives it, so neither
        `kept_many` nor the intents noted as working derive or stamp it again."""
        message_id = output_id(parent.message_id, self.name, index)
        return derive(
            parent, payload, producer=self.name, produced_at=self.ctx.now(), message_id=message_id
        )

    def _clear(self, p: _Proposal, profile: ActiveProfile) -> list[Message]:
        signal = p.signal
        label = profile.label
        intent = Intent(
            symbol=signal.symbol,
            side=p.side,
            quantity=p.quantity,
            order_type=OrderType.MARKET,
            time_in_force=TimeInForce.GTC if is_crypto(signal.symbol) else TimeInForce.DAY,
            strategy=signal.strategy,
            reduce_only=p.reduces,
            checks_passed=list(_CHECKS),
            signal_id=p.message.message_id,
            policy_profile=label,
        )
        out = self._emit(p.message, 0, intent)
        threshold = profile.approval_notional
        if threshold is not None and not p.reduces and p.quantity * p.price > threshold:
            return self._park(p, profile, out, threshold)
        side = p.side.value
        audit = self.ctx.audit_payload(
            action="intent.cleared",
            target=f"symbol:{signal.symbol}",
            reason=(
                f"{signal.strategy} {side} {p.quantity:g} {signal.symbol} at ~{p.price:g} "
                f"passed {len(RULES)} checks under {label}{p.note}"
            ),
            new_value={"side": side, "quantity": p.quantity, "price": p.price},
        )
        return [out, self._emit(p.message, 1, audit)]

    def _park(
        self, p: _Proposal, profile: ActiveProfile, out: Message, threshold: float
    ) -> list[Message]:
        """The intent queued for an operator's approval and an audit entry saying so; nothing
        while an earlier intent of the strategy waits in the symbol; refused when the flags tier
        cannot hold it (fail closed)."""
        intent_id = derived_message_id(p.message.message_id, stage=APPROVAL_STAGE, index=0)
        message = restamped(out, message_id=intent_id)
        if not isinstance(message, IntentMessage):
            raise ContractError("only an intent waits for approval")
        signal, notional = p.signal, p.quantity * p.price
        parked = ParkedIntent(
            message=message,
            price=p.price,
            notional=notional,
            threshold=threshold,
            ttl_s=profile.approval_ttl_s,
            signal={
                "id": p.message.message_id,
                "direction": signal.direction.value,
                "raw_strength": signal.raw_strength,
                "adjusted_strength": signal.adjusted_strength,
                "confidence": signal.confidence,
                "timeframe": str(signal.timeframe),
                "ts": signal.ts.isoformat(),
            },
        )
        queue = self.ctx.lab.flags.approvals
        try:
            waiting = [
                w.intent_id
                for w in queue.pending()
                if (w.intent.strategy, w.intent.symbol) == (signal.strategy, signal.symbol)
            ]
            if [w for w in waiting if w != intent_id]:
                return []
            deadline = queue.park(parked)
        except (redis.RedisError, TradeosError) as e:
            return self._refuse(p, APPROVAL_RULE, f"{_FlagsDown(APPROVAL_RULE, e)}: not parked")
        if deadline is None:
            return []  # decided already (a signal handled again)
        reason = (
            f"{signal.strategy} {p.side.value} {p.quantity:g} {signal.symbol} at ~{p.price:g} "
            f"(notional {notional:,.2f}) passed {len(RULES)} checks under {profile.label} but is "
            f"above its approval threshold {threshold:,.2f}: it waits up to "
            f"{profile.approval_ttl_s:g} s for an operator"
        )
        audit = self.ctx.audit_payload(
            action="intent.parked",
            target=f"intent:{intent_id}",
            reason=reason,
            new_value={"side": p.side.value, "quantity": p.quantity, "notional": notional},
        )
        return [self._emit(p.message, 0, audit)]

    def timers(self) -> Sequence[Timer]:
        return (Timer("approval_expiry", APPROVAL_SWEEP_S, self.expire_approvals),)

    def expire_approvals(self) -> list[Message]:
        """Reject every parked intent whose time ran out, on `risk_events` and `audit` (kept in
        the records first, so a bus that fails to take them loses nothing); put back when the
        records cannot keep them."""
        lab = self.ctx.lab
        expired = lab.flags.approvals.take_expired()
        if not expired:
            return []
        out: list[Message] = []
        for parked in expired:
            intent = parked.intent
            why = f"not approved within {parked.ttl_s:g} s"
            facts = parked.facts()
            out.append(
                self.ctx.risk_event(
                    parked.message,
                    kind=RiskKind.LIMIT_BREACH,
                    severity=Severity.WARNING,
                    scope=f"symbol:{intent.symbol}",
                    detail=f"{APPROVAL_RULE}: intent {parked.intent_id} {why}: rejected",
                    data=facts,
                )
            )
            out.append(
                self.ctx.audit(
                    parked.message,
                    action="intent.expired",
                    target=f"intent:{parked.intent_id}",
                    reason=why,
                    new_value=facts,
                )
            )
        try:
            lab.records.keep_messages(out)  # type: ignore[arg-type]  # risk events and audits
        except BaseException:
            for parked in expired:
                lab.flags.approvals.restore(parked)
            raise
        return out

    def _refuse(self, p: _Proposal, rule: str, reason: str) -> list[Message]:
        facts: dict[str, Any] = {
            "rule": rule,
            "strategy": p.signal.strategy,
            "symbol": p.signal.symbol,
            "side": p.side.value,
            "quantity": p.quantity,
            "price": p.price,
        }
        event = self.ctx.risk_event_payload(
            kind=_KIND.get(rule, RiskKind.LIMIT_BREACH),
            severity=Severity.CRITICAL if rule in _CRITICAL else Severity.WARNING,
            scope=f"symbol:{p.signal.symbol}",
            detail=f"{rule}: {reason}"[:4000],
            data=facts,
        )
        audit = self.ctx.audit_payload(
            action="intent.refused",
            target=f"rule:{rule}",
            reason=reason[:4000],
            new_value=facts,
        )
        return [self._emit(p.message, 0, event), self._emit(p.message, 1, audit)]

    def _skip(self, message: Message, signal: ModifiedSignal, reason: str) -> Message:
        audit = self.ctx.audit_payload(
            action="intent.skipped",
            target=f"symbol:{signal.symbol}",
            reason=reason,
        )
        return self._emit(message, 0, audit)


# ---- helpers --------------------------------------------------------------------------------


def broker_circuit(lab: Lab) -> BreakerState:
    """The broker's circuit as the `circuit_breaker` rule judges it. The read is the breaker's
    admission: once the cooldown has passed it turns an open circuit half-open and lets this
    order (or batch) through as the probe, whose outcome at Execution closes or re-opens it;
    while the cooldown runs or a probe is out, it reads open."""
    return _judged(lab.flags.circuit_breaker(BROKER_DEPENDENCY).admit())


def _judged(admission: BreakerStatus) -> BreakerState:
    """The circuit as the rule judges an admission: open while it lets nothing through."""
    return admission.state if admission.allowed else BreakerState.OPEN


@lru_cache(maxsize=8192)
def output_id(parent_id: str, stage: str, index: int) -> str:
    """The id the runner gives output `index` of `stage` for message `parent_id`
    (`derived_message_id`), derived once: a stage that builds its outputs under their ids asks
    for it, and `kept_many` again for the same outputs."""
    return derived_message_id(parent_id, stage=stage, index=index)


def kept(
    records: RecordsStore, parent: Message, outputs: Sequence[Message], *, stage: str
) -> list[Message]:
    """`outputs` under the ids the runner gives them (derived from the parent's id, the stage
    and their index), kept in the records with the modified signal they answer: a re-handled
    message keeps nothing twice, and the decisions outlive the bus's trimming.

    The modified signal is kept here, with the decision taken on it, not by the Signal
    Modifier: one records transaction on the way from a bar to its order instead of two. It is
    kept before Execution reads it (the intent is published after this commit), and it waits
    on the bus, unacked, until it is. Beside an intent its audit entry stays on the bus (the
    audit trail keeps it): the intent row, with the checks it passed, is the record of that
    decision."""
    return kept_many(records, [parent], [outputs], stage=stage)[0]


def kept_many(
    records: RecordsStore,
    parents: Sequence[Message],
    outputs: Sequence[Sequence[Message]],
    *,
    stage: str,
) -> list[list[Message]]:
    """`kept` for a batch: every parent's outputs stamped (an output built under its id already
    is taken as it is), all kept with the parents with one write per table."""
    stamped: list[list[Message]] = []
    keep: list[KeptMessage] = []
    for parent, messages in zip(parents, outputs, strict=True):
        if isinstance(parent, ModifiedSignalMessage):
            keep.append(parent)
        with_intent = any(isinstance(m, IntentMessage) for m in messages)
        mine: list[Message] = []
        for index, output in enumerate(messages):
            message_id = output_id(parent.message_id, stage, index)
            message = (
                output
                if output.message_id == message_id
                else restamped(output, message_id=message_id)
            )
            if isinstance(message, IntentMessage | RiskEventMessage) or (
                isinstance(message, AuditMessage) and not with_intent
            ):
                keep.append(message)
            mine.append(message)
        stamped.append(mine)
    records.keep_messages(keep)
    return stamped


@dataclass(frozen=True)
class RiskLimits:
    """The live-tunable limits of the records' system config (the profile holds the rest)."""

    max_order_notional: float
    exit_cooldown_s: float
    broker_rate_limit: int
    starting_cash: float


@dataclass(frozen=True)
class _BatchFacts:
    """What `Feasibility.handle_batch` reads once for all the batch's decisions."""

    profile: ActiveProfile
    limits: RiskLimits
    books: dict[tuple[str, str], StrategyBook]
    switches: SwitchesRead
    #: None: the flags tier did not answer (every order is refused, fail closed).
    breaker: BreakerState | None
    prices: dict[str, float]
    #: The cache's portfolio value (None before the account has one).
    equity: float | None
    #: Gross market value per symbol of the account's positions (cache copy).
    exposure: dict[str, float]
    #: The symbols the account holds a position in (dust is flat).
    held: frozenset[str]


@dataclass(frozen=True)
class _Proposal:
    """A sized order on its way through the rules, with the signal it answers."""

    message: Message
    signal: ModifiedSignal
    side: Side
    quantity: float
    price: float
    #: Whether it shrinks both the strategy's and the account's position (from the ledger).
    reduces: bool
    #: The strategy's filled position in the symbol before the order (the ledger).
    held: float
    #: The signed unfilled quantity of the strategy's working orders and unplaced intents there.
    on_the_way: float = 0.0
    #: Said in the audit entry when the order is not the one the signal asked for.
    note: str = ""


def _closing_part(p: _Proposal, held: float, account: float) -> _Proposal | None:
    """The part of a flip that closes the strategy's position, when that part reduces
    exposure; None for an order that does not flip."""
    closing = abs(held)
    if not held or p.quantity <= closing or _side_of(held) == (1 if p.side is Side.BUY else -1):
        return None
    if not (reduces_exposure(held, p.side, closing) and reduces_exposure(account, p.side, closing)):
        return None
    return replace(
        p,
        quantity=closing,
        reduces=True,
        note=f"; a flip of {p.quantity:g} cut to closing {closing:g} under a REDUCING kill switch",
    )


@dataclass
class _OnTheWay:
    """One strategy's intents in one symbol not yet placed: intent id -> (signed quantity,
    monotonic time cleared, its signal's bar), in the order of their bars as they usually come,
    with their sum, so a batch's decisions each read it without summing them all again."""

    entries: dict[str, tuple[float, float, datetime]] = field(default_factory=dict)
    total: float = 0.0
    #: Whether the entries are in the order of their bars (else `before` sums them all).
    ordered: bool = True

    def add(self, intent_id: str, signed: float, at: float, ts: datetime) -> None:
        self.discard(intent_id)
        if self.entries and ts < next(reversed(self.entries.values()))[2]:
            self.ordered = False
        self.entries[intent_id] = (signed, at, ts)
        self.total += signed

    def discard(self, intent_id: str) -> None:
        gone = self.entries.pop(intent_id, None)
        if gone is not None:
            self.total = self.total - gone[0] if self.entries else 0.0

    def forget_older(self, stale: float) -> bool:
        """Forget the intents cleared before `stale` (monotonic); whether any is left."""
        for intent_id in [i for i, e in self.entries.items() if e[1] < stale]:
            self.discard(intent_id)
        return bool(self.entries)

    def before(self, ts: datetime) -> float:
        """The signed quantity of the intents of bars before `ts`."""
        if not self.ordered:
            return sum(q for q, _, t in self.entries.values() if t < ts)
        later = 0.0
        for q, _, t in reversed(self.entries.values()):
            if t < ts:
                break
            later += q
        return self.total - later

    def copy(self) -> _OnTheWay:
        return _OnTheWay(dict(self.entries), self.total, self.ordered)


def _copy(unplaced: dict[tuple[str, str], _OnTheWay]) -> dict[tuple[str, str], _OnTheWay]:
    return {pair: entries.copy() for pair, entries in unplaced.items()}


class _FlagsDown(Exception):
    """A flags-tier read failed while checking `rule`: the order is refused (fail closed)."""

    def __init__(self, rule: str, cause: BaseException) -> None:
        super().__init__(f"flags tier unreachable ({type(cause).__name__}): failing closed")
        self.rule = rule


_WANT: Final = {Direction.LONG: 1, Direction.SHORT: -1, Direction.FLAT: 0}


def _side_of(position: float) -> int:
    """+1 long, -1 short, 0 flat (dust included)."""
    if abs(position) <= DUST:
        return 0
    return (position > 0) - (position < 0)


def _order(
    signal: ModifiedSignal, held: float, price: float, equity: float, profile: ActiveProfile
) -> tuple[Side, float] | str:
    """(side, quantity) moving the strategy's position `held` (filled and working) to the
    exposure the signal asks for, or why there is none ("" when holding is the answer, which is
    no decision to record)."""
    want, have = _WANT[signal.direction], _side_of(held)
    if want == have:
        return ""
    target = 0.0
    if want:
        if signal.confidence < profile.min_signal_confidence:
            if not have:
                return (
                    f"confidence {signal.confidence:g} is below {profile.label}'s minimum "
                    f"{profile.min_signal_confidence:g}: no position opened"
                )
            want = 0  # too unsure to flip: only close what is held
        else:
            budget = abs(signal.adjusted_strength) * profile.max_position_pct / 100 * equity
            target = want * budget / price
    delta = target - held
    if abs(delta) * price < MIN_ORDER_NOTIONAL:
        return f"order of {abs(delta) * price:.2f} is below the minimum notional"
    return (Side.BUY if delta > 0 else Side.SELL), abs(delta)


def market_open(symbol: str, now: float) -> bool:
    """Crypto trades around the clock; an equity only inside an XNYS session (holidays and
    early closes included)."""
    if is_crypto(symbol):
        return True
    try:
        return sessions(EQUITY_CALENDAR).locate(int(now * 1e9)) is not None
    except ValidationError:  # outside the calendar's range: no session is known to be open
        return False
