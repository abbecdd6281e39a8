"""Execution: intents in, orders placed at the broker, orders and fills out.

What it consumes: `intents` (place an order) and `market_data` (a new bar works the orders still
open at the paper broker: limit orders, partial fills, expiries).

Where orders go: the broker the settings choose (`execution_broker`: the built-in paper broker,
or Alpaca paper), behind the one broker protocol. An order for Alpaca is recorded (status new)
and committed before it is sent, so a crash between Alpaca's acceptance and the ack leaves the
records knowing it; Alpaca's later updates (fills after the submit's answer) are read on a timer
(`execution_updates_poll_s`).

Reconciliation: at start, before the first intent, and every `execution_reconcile_interval_s`,
the records are reconciled with a remote broker (`brokers.reconcile`). While the broker's state
is unknown (it did not report), intents wait: each is retried in place, neither dropped nor
acked. The paper broker's orders, fills and account are rows of the records themselves, so
there is nothing of its own to reconcile in the service (reading a day of orders back every
minute would only cost); `tradeos-lab reconcile --broker paper` still checks it on demand.

What it decides: the order's client order id, derived from the intent's message id (the same
every time, so a redelivered intent never places a second order); whether the kill switch still
lets a new order go (HALTED: nothing new is submitted; cancels are never held back).

What it emits: `orders` (the order after the broker answered), `fills.raw` (each execution, its
causation the intent), `audit` (every submission and its outcome) and `risk_events` (a refused
or rejected order). Records come first: the order, its broker events, fills and trades with the
whole attribution chain (bar -> raw signal -> modified signal -> intent -> order -> fill) are
written, each idempotent by its key, before anything is published; a records outage raises
`DependencyUnavailable` and the input is retried in place.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from tradeos_lab.brokers import (
    Broker,
    BrokerFill,
    BrokerOrder,
    OrderReport,
    OrderRequest,
    PaperBroker,
)
from tradeos_lab.brokers.paper import broker_order
from tradeos_lab.brokers.reconcile import PRODUCER as RECONCILIATION
from tradeos_lab.brokers.reconcile import Outcome, Reconciliation, reconcile
from tradeos_lab.contracts import (
    BarMessage,
    Fill,
    IntentMessage,
    Liquidity,
    Order,
    OrderStatus,
    QuoteMessage,
    RiskKind,
    Severity,
    Side,
    TradeMessage,
    restamped,
)
from tradeos_lab.errors import (
    ContractError,
    DependencyUnavailable,
    ProviderError,
    TransientError,
)
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import Service, Timer
from tradeos_lab.pipeline.services.feasibility import BROKER_DEPENDENCY
from tradeos_lab.tiers.flags import BreakerState, KillSource, KillSwitches
from tradeos_lab.tiers.flags.kill_switches import SwitchesRead

if TYPE_CHECKING:
    from tradeos_lab.brokers.alpaca import AlpacaTradeUpdates
    from tradeos_lab.contracts import Message, Payload
    from tradeos_lab.stores.records import Fill as FillRecord
    from tradeos_lab.stores.records import Order as OrderRecord
    from tradeos_lab.stores.records import RecordsStore

OPEN_ORDERS_RECHECK_S = 1.0
"""How long a symbol without open orders is taken to stay so (for orders placed by another
process; this one's own orders are worked from the next bar)."""
QUIET_BARS_LINGER_S = 0.1
"""How long Execution waits between reads of the bars while it knows of no order working: the
bars that came meanwhile are then one batch, not a wake-up for every bar of every symbol."""

CLIENT_ORDER_ID_PREFIX = "tl-"
"""Marks the orders this pipeline placed: `tl-` and the intent's message id (39 characters,
within the broker's 48)."""


def client_order_id_for(intent_id: str) -> str:
    """The client order id of the order placed for intent `intent_id`: the same every time."""
    return f"{CLIENT_ORDER_ID_PREFIX}{intent_id}"


@dataclass
class _Batch:
    """What `Execution.handle_batch` reads once and writes once for the batch in hand."""

    trades: list[dict[str, Any]]
    #: Modified signal id -> the raw signal it was made from, for the batch's intents.
    raw_signals: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Chain:
    """The ids an order's trades are attributed to, from the bar to the intent."""

    correlation_id: str
    intent_id: str | None
    modified_signal_id: str | None
    raw_signal_id: str | None
    market_data_message_id: str | None


class Execution(Service):
    """Places each intent's order at the broker once and reports its orders and fills."""

    name: ClassVar[str] = "execution"
    inputs: ClassVar[tuple[Stream, ...]] = (Stream.INTENTS, Stream.MARKET_DATA)
    outputs: ClassVar[tuple[Stream, ...]] = (
        Stream.ORDERS,
        Stream.FILLS_RAW,
        Stream.RISK_EVENTS,
        Stream.AUDIT,
    )

    #: The batch in hand (`handle_batch`), else None.
    _batch: _Batch | None = None
    #: Whether the last reconciliation had the broker's report: until then intents wait.
    broker_state_known: bool = False
    #: Whether this process saw the broker's circuit open (its closing is then announced).
    _breaker_opened: bool = False

    @property
    def records(self) -> RecordsStore:
        """The lab's records, opened on first use: a records outage while the service starts is
        a transient error of the first message, retried in place, not a crash."""
        return self.ctx.lab.records

    @cached_property
    def broker(self) -> Broker:
        """The broker the settings choose (`execution_broker`), opened on first use."""
        from tradeos_lab.operator import stack_broker

        settings = self.ctx.settings
        return stack_broker(
            self.ctx.lab, settings.execution_broker, settings=settings, clock=self.ctx.clock
        )

    @cached_property
    def _reconciliation_switches(self) -> KillSwitches:
        """Kill switches acting for reconciliation: a position mismatch halts its symbol."""
        from tradeos_lab.operator import audit_sink

        lab = self.ctx.lab
        return KillSwitches(
            lab.flags.redis,
            keys=lab.keys,
            source=KillSource.RECONCILIATION,
            audit=audit_sink(lab.bus, producer=RECONCILIATION),
        )

    @cached_property
    def _updates(self) -> AlpacaTradeUpdates | None:
        """Alpaca's trade updates (its stream, polling as the backstop); None for the paper
        broker, whose orders are worked by the bars."""
        from tradeos_lab.brokers.alpaca import AlpacaBroker

        broker = self.broker
        if not isinstance(broker, AlpacaBroker):
            return None
        poll = self.ctx.settings.execution_updates_poll_s
        return broker.trade_updates(poll_interval_s=poll).start()

    @cached_property
    def _quiet_since(self) -> dict[str, float]:
        """Symbol -> monotonic time the records last showed it without open orders."""
        return {}

    @cached_property
    def _working(self) -> set[str]:
        """Symbols where orders may be working: the records last showed open orders there, or
        this process placed one there that stayed open."""
        return set()

    def linger_s(self, stream: Stream) -> float:
        """Bars come here only to work open orders: while none is known to work, those that
        came meanwhile are read together every `QUIET_BARS_LINGER_S` (orders placed by another
        process are found within `OPEN_ORDERS_RECHECK_S` anyway)."""
        if stream is Stream.MARKET_DATA and not self._working:
            return QUIET_BARS_LINGER_S
        return super().linger_s(stream)

    @cached_property
    def _one_at_a_time(self) -> threading.Lock:
        # The runner polls each input in its own thread; an intent and a bar working the same
        # order at once would both fill its remaining quantity.
        return threading.Lock()

    def handle(self, message: Message) -> Sequence[Message]:
        if isinstance(message, QuoteMessage | TradeMessage):
            return []  # the paper broker fills against bars; other market data moves nothing
        if not isinstance(message, IntentMessage | BarMessage):
            raise ContractError(f"execution takes intents and bars, not {message.schema_name}")
        with self._one_at_a_time:
            if isinstance(message, IntentMessage):
                self._await_broker_state()
                return self._place(message)
            return self._work_open_orders(message)

    def timers(self) -> Sequence[Timer]:
        """A remote broker's reconciliation on its schedule and its order updates (none for
        the paper broker, whose state is the records)."""
        settings = self.ctx.settings
        if settings.execution_broker == "paper":
            return ()
        every = settings.execution_reconcile_interval_s
        reconciling = Timer(name="reconcile", every_s=every, fire=self.reconcile)
        updates = Timer(
            name="broker-updates", every_s=settings.execution_updates_poll_s, fire=self.updates
        )
        return (reconciling, updates)

    def close(self) -> None:
        """Stop Alpaca's trade updates and close its connections (when they were opened)."""
        if "_updates" in self.__dict__ and self._updates is not None:
            self._updates.stop()
        if "broker" in self.__dict__:
            close = getattr(self.broker, "close", None)
            if close is not None:
                close()

    # ---- reconciliation: the broker's state known before any intent ------------------------

    def reconcile(self) -> list[Message]:
        """Reconcile the records with the broker now (the timer); the audit entries and risk
        events to publish."""
        with self._one_at_a_time:
            return list(self._reconcile().messages)

    def _reconcile(self) -> Reconciliation:
        """One reconciliation, under the lock orders are placed with (no order of this process
        is in flight). A broker that did not report leaves its state unknown: intents wait."""
        try:
            self._settle_in_flight()
        except (TransientError, ProviderError) as e:
            self.broker_state_known = False
            return Reconciliation(
                self.broker.name,
                Outcome.UNKNOWN,
                applied=False,
                reason=f"broker {self.broker.name} did not report ({type(e).__name__}: {e})",
            )
        result = reconcile(
            self.records,
            self.broker,
            switches=self._reconciliation_switches,
            actor=f"service:{self.name}",
            now=self.ctx.now(),
        )
        self.broker_state_known = result.outcome is not Outcome.UNKNOWN
        return result

    def _settle_in_flight(self) -> None:
        """Orders placed at a remote broker whose answer a crash lost (recorded, still new):
        each looked up by its client order id and, when the broker holds it, its state and
        fills folded in as this pipeline's own, with their trades' chain (not imported as
        external by the reconciliation after it). One the broker does not hold is left for its
        intent's redelivery to place."""
        broker = self.broker
        if isinstance(broker, PaperBroker):
            return  # its orders are the records themselves
        for held in self.records.open_orders(broker=broker.name):
            if held.status != OrderStatus.NEW.value or held.intent_id is None:
                continue
            found = broker.get_order(held.client_order_id)
            if found is not None:
                self._record_trades(self._fold(found)[0], self._chain_of(held))

    def _await_broker_state(self) -> None:
        """Before an intent: reconcile first when a remote broker's state is not known (at
        start, or after it failed to report); still unknown, the intent is retried in place."""
        if self.broker_state_known or isinstance(self.broker, PaperBroker):
            return
        result = self._reconcile()
        self._publish(result.messages)
        if not self.broker_state_known:
            raise DependencyUnavailable(
                f"the state of broker {self.broker.name} is unknown ({result.reason}); intents "
                "wait until it reports"
            )

    def _publish(self, messages: Iterable[Message]) -> None:
        """Reconciliation's own messages (kept in the records under their ids), as they are."""
        for message in messages:
            self.ctx.lab.bus.publish(message.STREAM, message)

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        """A batch of intents: the intents kept in one transaction committed before any order
        goes out (a crash after it places nothing twice: the client order ids are derived from
        the intents), the kill switches, the orders already recorded and the bars to fill on
        read once, then the orders placed together at the broker (`PaperBroker.submit_many`)
        and their orders, fills, trades and ledger entries written in a second transaction, the
        broker's circuit breaker told once after it. Bars (and a mixed batch) go one at a time;
        a batch of bars under one hold of the lock (every bar of every symbol comes here)."""
        bars = [m for m in messages if isinstance(m, BarMessage)]
        if len(bars) == len(messages):
            with self._one_at_a_time:
                return [self._work_open_orders(m) for m in bars]
        if not all(isinstance(m, IntentMessage) for m in messages):
            return [self.handle(m) for m in messages]
        broker = self.broker
        if not isinstance(broker, PaperBroker):
            # An order for a remote broker is committed in the records before it is sent, so
            # each intent goes on its own (its order's row, then the broker).
            return [self.handle(m) for m in messages]
        intents = [m for m in messages if isinstance(m, IntentMessage)]
        records = self.records
        with self._one_at_a_time, broker.same_bars():
            self._await_broker_state()
            switches = self.ctx.lab.kill_switches.read_switches(
                (m.payload.strategy, m.payload.symbol) for m in intents
            )
            for symbol in {m.payload.symbol for m in intents}:
                broker.latest_bar(symbol)  # the bars the orders fill on, read before the lock
            self._batch = _Batch(trades=[])
            try:
                # Read in one read transaction before the write transaction, whose write lock
                # (SQLite's one) is taken at its first statement: the orders are planned without
                # it. An order recorded since this read is still refused by its unique client
                # order id.
                with records.reading():
                    records.keep_intents(intents)
                    known = records.known_orders(client_order_id_for(m.message_id) for m in intents)
                    self._batch.raw_signals = records.raw_signal_ids_of(
                        m.payload.signal_id for m in intents if m.payload.signal_id is not None
                    )
                with records.batch():
                    prepared = [self._prepare(m, switches, known=known) for m in intents]
                    # an order refused here was recorded after `known` was read
                    known.update(r.client_order_id for r, done in prepared if done is not None)
                    requests = [r for r, done in prepared if done is None]
                    sent = iter(self._submit_many(requests, known=known, success_later=True))
                    answered = [
                        self._recorded(m, done or next(sent))
                        for m, (_, done) in zip(intents, prepared, strict=True)
                    ]
                    records.record_trades(self._batch.trades)
            finally:
                self._batch = None
            if requests:
                self._broker_answered()
        # the messages are built once the records are committed (the write lock released)
        return [self._answer(m, report, chain) for m, report, chain in answered]

    # ---- an intent: one order ---------------------------------------------------------------

    def _place(self, message: IntentMessage) -> list[Message]:
        """Keep the intent, then place its order once."""
        self.records.record_intent(message)
        request, known = self._prepare(message)
        return self._answer(*self._recorded(message, known or self._submit(request)))

    def _prepare(
        self,
        message: IntentMessage,
        switches: SwitchesRead | None = None,
        *,
        known: set[str] | None = None,
    ) -> tuple[OrderRequest, OrderReport | None]:
        """The intent's order request, and its answer when it goes to no broker: refused here
        (kill switch, now or before). `switches`: the kill switches read for the batch;
        `known`: the batch's client order ids the records hold (else each is looked up)."""
        intent = message.payload
        cid = client_order_id_for(message.message_id)
        request = OrderRequest(
            client_order_id=cid,
            symbol=intent.symbol,
            side=intent.side,
            quantity=intent.quantity,
            order_type=intent.order_type,
            limit_price=intent.limit_price,
            stop_price=intent.stop_price,
            time_in_force=intent.time_in_force,
            strategy=intent.strategy,
            intent_id=message.message_id,
            correlation_id=message.correlation_id,
        )
        known_order = (
            None if known is not None and cid not in known else self.records.find_order(cid)
        )
        if (
            known_order is not None
            and known_order.status == OrderStatus.NEW.value
            and not isinstance(self.broker, PaperBroker)
        ):
            # Recorded, then sent, its answer lost: the broker may hold it. Looked up before the
            # kill switch may refuse it (the records would then deny an order the broker holds).
            found = self.broker.get_order(cid)
            if found is not None:
                return request, self._fold(found)[0]
        if known_order is None or known_order.status == OrderStatus.NEW.value:
            # Not yet placed: the kill switch is asked again right before the broker is.
            decision = self.ctx.lab.kill_switches.check_order(
                intent.strategy,
                intent.symbol,
                intent.side,
                intent.quantity,
                book=self.records,
                switches=switches,
            )
            if not decision.allowed:
                known_order = self._refuse(request, f"kill switch: {decision.reason}")
        if (
            known_order is not None
            and known_order.status == OrderStatus.REJECTED.value
            and (known_order.broker_order_id is None)
        ):
            return request, OrderReport(broker_order(known_order))  # refused here, never sent
        return request, None

    def _recorded(
        self, message: IntentMessage, report: OrderReport
    ) -> tuple[IntentMessage, OrderReport, Chain]:
        """The intent's trades recorded with their chain, once the broker (or the kill switch)
        answered."""
        intent = message.payload
        if report.order.is_open:
            self._quiet_since.pop(intent.symbol, None)  # the next bar must work it
            self._working.add(intent.symbol)
        chain = self._chain(message.correlation_id, message.message_id, intent.signal_id)
        self._record_trades(report, chain)
        return message, report, chain

    def _answer(self, message: IntentMessage, report: OrderReport, chain: Chain) -> list[Message]:
        """The messages answering an intent."""
        return self._messages(message, report, chain, submitted=True)

    def _refuse(self, request: OrderRequest, reason: str) -> OrderRecord:
        """Record the intent's order as rejected here, before any broker saw it."""
        cid = request.client_order_id
        self._record_order(request)
        self.records.apply_order_update(
            cid,
            event_id=f"{cid}:halted",
            status=OrderStatus.REJECTED.value,
            broker_at=self.ctx.now(),
            reason=reason[:256],
        )
        return self.records.order(cid)

    def _submit(self, request: OrderRequest) -> OrderReport:
        """Submit through the broker's circuit breaker (see `_submit_many`)."""
        return self._submit_many([request])[0]

    def _submit_many(
        self,
        requests: Sequence[OrderRequest],
        *,
        known: set[str] | None = None,
        success_later: bool = False,
    ) -> list[OrderReport]:
        """Submit through the broker's circuit breaker, which Feasibility's rule reads: a broker
        that cannot answer counts a failure (and the intents are retried), an answer a success
        (once for all of them). `known`: the client order ids the records hold (the paper
        broker's batch reads them once). `success_later`: the caller counts the success
        (`_broker_answered`) once its records transaction has committed, so the flags tier's
        round trip is not made while the transaction holds the records' write lock."""
        if not requests:
            return []
        breaker = self.ctx.lab.flags.circuit_breaker(BROKER_DEPENDENCY)
        broker = self.broker
        try:
            if isinstance(broker, PaperBroker):
                reports = broker.submit_many(requests, known=known)
            else:
                reports = [self._submit_remote(r) for r in requests]
        except TransientError as e:
            with contextlib.suppress(TransientError):  # the flags tier down too: still retry
                status = breaker.record_failure()
                if status.state is BreakerState.OPEN and not self._breaker_opened:
                    self._breaker_opened = True
                    self._breaker_changed(
                        Severity.CRITICAL,
                        f"broker {broker.name} circuit opened after {status.failures} failures "
                        f"(last: {e}); Feasibility holds new orders until a probe succeeds",
                        status.failures,
                    )
            raise
        if not success_later:
            self._broker_answered()
        return reports

    def _broker_answered(self) -> None:
        """A success on the broker's circuit breaker; its closing on `risk_events` when it was
        open."""
        breaker = self.ctx.lab.flags.circuit_breaker(BROKER_DEPENDENCY)
        closed = breaker.record_success().state is BreakerState.CLOSED
        if self._breaker_opened and closed:
            self._breaker_opened = False
            with contextlib.suppress(TransientError):
                self._breaker_changed(
                    Severity.INFO,
                    f"broker {self.broker.name} circuit closed: an order went through",
                    0,
                )

    def _breaker_changed(self, severity: Severity, detail: str, failures: int) -> None:
        """A change of the broker's circuit, on `risk_events` at once: the intent that saw it
        is being retried (its own outputs are not published), and an operator must see it."""
        event = self.ctx.risk_event(
            None,
            kind=RiskKind.CIRCUIT_BREAKER,
            severity=severity,
            scope=f"broker:{self.broker.name}",
            detail=detail,
            data={"dependency": BROKER_DEPENDENCY, "failures": failures},
        )
        self._publish([event])

    def _submit_remote(self, request: OrderRequest) -> OrderReport:
        """Record the order, committed, then place it at the remote broker (which looks an
        unknown outcome up by the client order id before any resend) and fold its answer in."""
        _ = self._updates  # listening before the first order is sent, so none of it is missed
        self._record_order(request)
        return self._fold(self.broker.submit(request))[0]

    def _record_order(self, request: OrderRequest) -> None:
        """The order as the intent asked for it, in the records before any broker answer."""
        self.records.record_order(
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side.value,
            quantity=request.quantity,
            order_type=request.order_type.value,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            time_in_force=request.time_in_force.value,
            strategy=request.strategy,
            broker=self.broker.name,
            intent_id=request.intent_id,
            correlation_id=request.correlation_id,
            at=self.ctx.now(),
        )

    def _fold(self, report: OrderReport) -> tuple[OrderReport, OrderReport | None]:
        """A remote broker's report folded into the records (its fills, its state, each once
        by its key). Returns the order as the records now hold it with every fill recorded (so
        an answer given again after a crash carries the fills an earlier attempt recorded), and
        what this call changed (its newly recorded fills), None when nothing."""
        order = report.order
        cid = order.client_order_id
        records = self.records
        new: list[BrokerFill] = []
        for fill in report.fills:
            recorded = records.record_fill(
                execution_id=fill.execution_id,
                client_order_id=cid,
                symbol=fill.symbol,
                side=fill.side.value,
                quantity=fill.quantity,
                price=fill.price,
                fee=fill.fee,
                filled_at=fill.ts,
                broker=self.broker.name,
            )
            if recorded:
                new.append(fill)
        changed = False
        if order.status is not OrderStatus.NEW:
            changed = records.apply_order_update(
                cid,
                event_id=f"{cid}:{order.status.value}:{order.filled_quantity:g}",
                status=order.status.value,
                broker_at=order.updated_at,
                filled_quantity=order.filled_quantity,
                avg_price=order.avg_price if order.filled_quantity > 0 else None,
                broker_order_id=order.broker_order_id,
                reason=order.reason,
            )
        held = records.order(cid)
        fee_currency = report.fills[0].fee_currency if report.fills else "USD"
        fills = tuple(_broker_fill(held, f, fee_currency) for f in records.fills(cid))
        now = broker_order(held)
        return OrderReport(now, fills), (OrderReport(now, tuple(new)) if new or changed else None)

    def updates(self) -> list[Message]:
        """The remote broker's order updates since the last call (the timer): their fills and
        states recorded, their trades with the intent's chain, then their messages."""
        feed = self._updates
        if feed is None:
            return []
        out: list[Message] = []
        with self._one_at_a_time:
            for report in feed.reports():
                held = self.records.find_order(report.order.client_order_id)
                if held is None or held.broker != self.broker.name:
                    continue  # not placed here: reconciliation imports it
                _, new = self._fold(report)
                if new is None:
                    continue  # told already (the submit's answer, an earlier update)
                chain = self._chain_of(held)
                self._record_trades(new, chain)
                out.extend(self._messages(None, new, chain, submitted=False))
        return out

    # ---- a bar: open orders work on it ------------------------------------------------------

    def _work_open_orders(self, message: BarMessage) -> list[Message]:
        """Work the symbol's open orders on this bar. Every bar of every symbol comes here, so a
        symbol the records just showed without open orders is not asked again for
        `OPEN_ORDERS_RECHECK_S`, unless this process placed an order in it meanwhile (orders
        placed elsewhere are found within that bound)."""
        broker = self.broker
        if not isinstance(broker, PaperBroker):
            return []  # a remote venue works its own orders; its updates come on the timer
        symbol = message.payload.symbol
        now = time.monotonic()
        if now - self._quiet_since.get(symbol, -math.inf) < OPEN_ORDERS_RECHECK_S:
            return []
        out: list[Message] = []
        reports = broker.advance(message.payload)
        if broker.working_seen.get(symbol):
            self._quiet_since.pop(symbol, None)
            self._working.add(symbol)
        else:
            self._quiet_since[symbol] = now
            self._working.discard(symbol)
        for report in reports:
            order = self.records.order(report.order.client_order_id)
            chain = self._chain_of(order)
            self._record_trades(report, chain)
            out.extend(self._messages(message, report, chain, submitted=False))
        return out

    # ---- records first, then the messages ---------------------------------------------------

    def _record_trades(self, report: OrderReport, chain: Chain) -> None:
        """The report's fills recorded as trades with their attribution chain (in a batch: at
        its end, all at once)."""
        order = report.order
        for fill in report.fills:
            trade: dict[str, Any] = {
                "execution_id": fill.execution_id,
                "client_order_id": fill.client_order_id,
                "correlation_id": chain.correlation_id,
                "symbol": fill.symbol,
                "side": fill.side.value,
                "quantity": fill.quantity,
                "price": fill.price,
                "executed_at": fill.ts,
                "market_data_message_id": chain.market_data_message_id,
                "raw_signal_id": chain.raw_signal_id,
                "modified_signal_id": chain.modified_signal_id,
                "intent_id": chain.intent_id,
                "strategy": order.strategy,
            }
            if self._batch is not None:
                self._batch.trades.append(trade)  # written for the whole batch at its end
            else:
                self.records.record_trades([trade])

    def _messages(
        self, parent: Message | None, report: OrderReport, chain: Chain, *, submitted: bool
    ) -> list[Message]:
        """The order, its fills, audit and risk events (its trades recorded first).

        Messages answering a bar or a broker's update (`parent` None) still belong to their
        intent's chain: correlation id of the intent and causation the intent itself.
        """
        order = report.order
        out = [self._in_chain(parent, chain, _order_payload(order, chain))]
        out.extend(self._in_chain(parent, chain, _fill_payload(f)) for f in report.fills)
        if submitted or not order.is_open:
            filled = f"{order.filled_quantity:g} of {order.quantity:g}"
            out.append(
                self._in_chain(
                    parent,
                    chain,
                    self.ctx.audit_payload(
                        action="order.submit" if submitted else f"order.{order.status.value}",
                        target=f"order:{order.client_order_id}",
                        reason=order.reason or f"{order.status.value}, filled {filled}",
                        new_value={"status": order.status.value, "filled": order.filled_quantity},
                    ),
                )
            )
        if order.status is OrderStatus.REJECTED:
            halted = (order.reason or "").startswith("kill switch")
            event = self.ctx.risk_event_payload(
                kind=RiskKind.KILL_SWITCH if halted else RiskKind.EXECUTION_FAILURE,
                severity=Severity.WARNING if halted else Severity.CRITICAL,
                scope=f"symbol:{order.symbol}",
                detail=f"order {order.client_order_id} not placed: {order.reason}",
                data={"client_order_id": order.client_order_id, "strategy": order.strategy or ""},
            )
            out.append(self._in_chain(parent, chain, event))
        return out

    def _in_chain(self, parent: Message | None, chain: Chain, payload: Payload) -> Message:
        out = self.ctx.message(parent, payload)
        if chain.intent_id is None or (parent is not None and parent.message_id == chain.intent_id):
            return out
        return restamped(out, correlation_id=chain.correlation_id, causation_id=chain.intent_id)

    def _chain(self, correlation_id: str, intent_id: str | None, signal_id: str | None) -> Chain:
        """The attribution chain behind an intent. A signal's chain starts at its bar, whose
        message id is the chain's correlation id; the raw signal is named by the modified
        signal the records kept. A manual intent (no signal) has neither."""
        raw_id: str | None = None
        if (
            signal_id is not None
            and self._batch is not None
            and signal_id in self._batch.raw_signals
        ):
            raw_id = self._batch.raw_signals[signal_id]
        elif signal_id is not None:
            modified = self.records.signal(signal_id)
            raw_id = None if modified is None else modified.payload.get("raw_signal_id")
        return Chain(
            correlation_id=correlation_id,
            intent_id=intent_id,
            modified_signal_id=signal_id,
            raw_signal_id=raw_id,
            market_data_message_id=None if signal_id is None else correlation_id,
        )

    def _chain_of(self, order: OrderRecord) -> Chain:
        correlation = order.correlation_id or order.client_order_id
        signal_id = None
        if order.intent_id is not None:
            kept = self.records.intents(correlation_id=correlation)
            signal_id = next((i.signal_id for i in kept if i.message_id == order.intent_id), None)
        return self._chain(correlation, order.intent_id, signal_id)


def _order_payload(order: BrokerOrder, chain: Chain) -> Order:
    return Order(
        client_order_id=order.client_order_id,
        intent_id=order.intent_id or chain.intent_id or "",
        strategy=order.strategy or "manual",
        symbol=order.symbol,
        side=order.side,
        quantity=order.quantity,
        order_type=order.order_type,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        time_in_force=order.time_in_force,
        status=order.status,
        filled_quantity=order.filled_quantity,
        avg_price=order.avg_price if order.filled_quantity > 0 else None,
        broker_order_id=order.broker_order_id,
        reason=order.reason,
        ts=order.updated_at,
    )


def _broker_fill(order: OrderRecord, fill: FillRecord, fee_currency: str) -> BrokerFill:
    """A fill of the records as its broker reported it."""
    return BrokerFill(
        execution_id=fill.execution_id,
        client_order_id=fill.client_order_id,
        broker_order_id=order.broker_order_id or "",
        symbol=fill.symbol,
        side=Side(fill.side),
        quantity=fill.quantity,
        price=fill.price,
        fee=fill.fee,
        fee_currency=fee_currency,
        liquidity=Liquidity.UNKNOWN,
        ts=fill.filled_at,
    )


def _fill_payload(fill: BrokerFill) -> Fill:
    return Fill(
        client_order_id=fill.client_order_id,
        broker_order_id=fill.broker_order_id,
        execution_id=fill.execution_id,
        symbol=fill.symbol,
        side=fill.side,
        quantity=fill.quantity,
        price=fill.price,
        fee=fill.fee,
        fee_currency=fill.fee_currency,
        liquidity=fill.liquidity,
        ts=fill.ts,
    )
