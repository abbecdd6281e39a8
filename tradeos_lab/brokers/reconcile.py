"""Reconciliation: the records against what a broker reports, so the orders and positions a
trader watches are the broker's truth.

`reconcile(records, broker, switches=...)` reads the broker's report first (its working orders,
its orders changed within `lookback`, each records-open order it did not list, its positions);
when any part of it is missing (a timeout, a 5xx, an open breaker, an unreadable answer) the
result is `unknown` and nothing is imported, advanced, halted or cleared: a missing report is
never taken as flat. Otherwise, with `apply`:

- an order the records do not know is imported (`external`), brought to the broker's state
  through `apply_order_update` (`order_state.advance`), its fills recorded (`external`);
- a fill of a known order the records miss is imported, when the records' fills and the new ones
  add up to what the broker says is filled (else it is a conflict, left for an operator);
- an order whose state differs is advanced the same way (a broker state the life cycle does not
  allow, an older or regressing one, stays a conflict);
- per symbol, the ledger's position from the broker's orders beside the broker's position: a
  mismatch is a `risk_events` entry and halts the symbol REDUCING with a `reconciliation` kill
  switch; once they agree again that switch (and no other) is cleared. The broker's positions are
  read before and after its orders: a symbol whose position moved in between is judged by the
  next run, neither halted nor cleared.

It must run while no order of this broker is in flight (Execution: at start and on its schedule,
under the lock it places orders with, before it takes the next intent): an order the broker holds
before the records do would otherwise be imported as external.

Imports and advances are audited (`audit` messages kept in the records and returned for the
caller to publish), halts and clears by the kill switches' own audit sink. With `apply=False` it
only reports: the positions then count the fills it would import.

The switch's actor names the brokers whose positions disagree (`reconciliation:alpaca/paper`),
so reconciling one broker never lifts a halt another broker's mismatch holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol, cast, runtime_checkable

from tradeos_lab.brokers.base import Broker, BrokerFill, BrokerOrder, OrderReport
from tradeos_lab.brokers.paper import PaperBroker
from tradeos_lab.contracts import (
    Audit,
    AuditMessage,
    OrderStatus,
    RiskEvent,
    RiskEventMessage,
    RiskKind,
    Severity,
    new_message,
)
from tradeos_lab.errors import ProviderError, TransientError, ValidationError
from tradeos_lab.stores.records import Order, RecordsStore, fill_columns
from tradeos_lab.stores.records.store import client_order_id_of
from tradeos_lab.tiers.flags import KillMode, KillScope, KillSource, KillSwitch, KillSwitches

PRODUCER: Final = "reconciliation"
ACTOR: Final = "service:reconciliation"
LOOKBACK: Final = timedelta(days=1)
"""How far back closed orders are listed; an order the records miss from before then shows as a
position mismatch instead of being imported."""
_TOLERANCE = 1e-9
_SWITCH_ACTOR = "reconciliation:"


class Outcome(StrEnum):
    RECONCILED = "reconciled"
    """The records agree with the broker (after what this run applied)."""
    MISMATCHED = "mismatched"
    """Differences remain: conflicts, positions that disagree, or a dry run's findings."""
    UNKNOWN = "unknown"
    """The broker's report is missing; nothing was compared or changed."""


class Kind(StrEnum):
    UNKNOWN_ORDER = "unknown_order"
    UNKNOWN_FILL = "unknown_fill"
    ORDER_STATE = "order_state"
    FILL_CONFLICT = "fill_conflict"
    STATE_CONFLICT = "state_conflict"
    NOT_AT_BROKER = "not_at_broker"
    POSITION = "position"


@dataclass(frozen=True)
class Difference:
    """One way the records and the broker disagreed, and what was done about it."""

    kind: Kind
    symbol: str
    records: str
    broker: str
    action: str
    resolved: bool
    client_order_id: str | None = None


@dataclass(frozen=True)
class Reconciliation:
    """What one run found and did; `messages` (audit entries and risk events, already kept in
    the records) are for the caller to publish on the bus."""

    broker: str
    outcome: Outcome
    applied: bool
    differences: tuple[Difference, ...] = ()
    halted: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()
    reason: str = ""
    messages: tuple[AuditMessage | RiskEventMessage, ...] = ()

    @property
    def remaining(self) -> tuple[Difference, ...]:
        """The differences still standing after the run."""
        return tuple(d for d in self.differences if not d.resolved)


@runtime_checkable
class ListsOrders(Protocol):
    """A broker that lists its orders (Alpaca); the paper broker's are read from its records."""

    def orders(self, *, since: datetime) -> list[OrderReport]: ...


def broker_orders(broker: Broker, *, since: datetime) -> list[OrderReport]:
    """`broker`'s working orders and those changed since `since`, each with its fills."""
    if isinstance(broker, PaperBroker):
        reports = (broker.get_order(o.client_order_id) for o in _paper_orders(broker, since))
        return [r for r in reports if r is not None]
    if isinstance(broker, ListsOrders):
        return broker.orders(since=since)
    raise ValidationError(f"broker {broker.name!r} cannot list its orders to be reconciled")


def _paper_orders(broker: PaperBroker, since: datetime) -> list[Order]:
    return broker.records.broker_orders(broker.name, since=since)


@dataclass
class _Report:
    """The broker's side, read whole before anything is written."""

    orders: list[OrderReport]
    missing: list[Order]  # records-open orders the broker does not hold
    positions: dict[str, float]
    moving: set[str]  # symbols whose position changed while the orders were read


@dataclass
class _Run:
    records: RecordsStore
    broker: str
    apply: bool
    actor: str
    now: datetime
    differences: list[Difference] = field(default_factory=list)
    messages: list[AuditMessage | RiskEventMessage] = field(default_factory=list)
    pending: dict[str, float] = field(default_factory=dict)  # dry run: signed fills per symbol

    def found(self, kind: Kind, symbol: str, records: str, broker: str, **kw: Any) -> None:
        self.differences.append(Difference(kind, symbol, records, broker, **kw))

    def audit(self, action: str, target: str, reason: str, new_value: Any = None) -> None:
        payload = Audit(
            actor=self.actor,
            action=action,
            target=target,
            old_value=None,
            new_value=new_value,
            reason=reason,
        )
        # new_message builds the payload's own message class
        message = cast(AuditMessage, new_message(payload, producer=PRODUCER, produced_at=self.now))
        self.records.record_audit(message)
        self.messages.append(message)

    def risk(self, severity: Severity, scope: str, detail: str, data: dict[str, Any]) -> None:
        payload = RiskEvent(
            kind=RiskKind.RECONCILIATION,
            severity=severity,
            scope=scope,
            detail=detail,
            data=data,
            ts=self.now,
        )
        message = cast(
            RiskEventMessage, new_message(payload, producer=PRODUCER, produced_at=self.now)
        )
        self.records.record_risk_event(message)
        self.messages.append(message)


def reconcile(
    records: RecordsStore,
    broker: Broker,
    *,
    switches: KillSwitches | None,
    apply: bool = True,
    actor: str = ACTOR,
    lookback: timedelta = LOOKBACK,
    now: datetime | None = None,
) -> Reconciliation:
    """Compare the records with `broker`'s report and, with `apply`, bring them in line (see the
    module docstring). `switches` must act for the `reconciliation` source (None only for a dry
    run: nothing is halted then)."""
    if apply and (switches is None or switches.source is not KillSource.RECONCILIATION):
        raise ValidationError("reconciliation halts with kill switches of its own source")
    if not actor.strip():
        raise ValidationError("reconciliation needs an actor for its audit trail")
    now = now or datetime.now(UTC)
    run = _Run(records, broker.name, apply, actor, now)
    held_open = records.open_orders(broker=broker.name)
    try:
        report = _read_broker(broker, held_open, since=now - lookback)
    except (TransientError, ProviderError) as e:
        reason = f"broker {broker.name} did not report ({type(e).__name__}: {e})"
        if apply:
            run.risk(
                Severity.WARNING,
                f"broker:{broker.name}",
                f"{reason}; nothing reconciled, nothing taken as flat",
                {"broker": broker.name},
            )
        return Reconciliation(
            broker.name, Outcome.UNKNOWN, apply, reason=reason, messages=tuple(run.messages)
        )
    for found in report.orders:
        _order(run, found)
    for order in report.missing:
        run.found(
            Kind.NOT_AT_BROKER,
            order.symbol,
            f"{order.status} {order.client_order_id}",
            "no such order",
            action="left for Execution's lookup",
            resolved=False,
            client_order_id=order.client_order_id,
        )
    mismatched = _positions(run, report.positions, report.moving)
    halted: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()
    if apply and switches is not None:
        halted, cleared = _halts(run, switches, mismatched, report.moving)
    outcome = Outcome.MISMATCHED if any(not d.resolved for d in run.differences) else None
    return Reconciliation(
        broker.name,
        outcome or Outcome.RECONCILED,
        apply,
        tuple(run.differences),
        halted,
        cleared,
        messages=tuple(run.messages),
    )


def _read_broker(broker: Broker, held_open: list[Order], *, since: datetime) -> _Report:
    """The broker's report: its orders, each records-open order it did not list looked up on
    its own, its positions (read before and after the orders, so a fill landing meanwhile is
    seen as one); any failure raises before anything is written."""
    before = broker.positions()
    orders = broker_orders(broker, since=since)
    listed = {r.order.client_order_id for r in orders}
    missing: list[Order] = []
    for order in held_open:
        if order.client_order_id in listed:
            continue
        found = broker.get_order(order.client_order_id)
        if found is None:
            missing.append(order)
        else:
            orders.append(found)
    after = broker.positions()
    moving = {s for s in set(before) | set(after) if not _same(before.get(s, 0), after.get(s, 0))}
    return _Report(orders, missing, after, moving)


# ---- orders and fills ---------------------------------------------------------------------


def _order(run: _Run, report: OrderReport) -> None:
    order = report.order
    cid = order.client_order_id
    try:
        client_order_id_of(cid)
        held = run.records.find_order(cid)
    except ValidationError as e:
        run.found(
            Kind.UNKNOWN_ORDER,
            order.symbol,
            "none",
            _describe(order),
            action=f"cannot import: {e}",
            resolved=False,
            client_order_id=cid,
        )
        return
    if held is None:
        _import_order(run, report)
        return
    if held.broker != run.broker:
        run.found(
            Kind.STATE_CONFLICT,
            order.symbol,
            f"order of broker {held.broker}",
            _describe(order),
            action="left for an operator",
            resolved=False,
            client_order_id=cid,
        )
        return
    _fills(run, report)
    if held.status != order.status.value or not _same(held.filled_quantity, order.filled_quantity):
        _advance(run, held, order)


def _import_order(run: _Run, report: OrderReport) -> None:
    order = report.order
    cid = order.client_order_id
    fills = list(report.fills)
    consistent = _same(sum(f.quantity for f in fills), order.filled_quantity)
    if not run.apply:
        run.found(
            Kind.UNKNOWN_ORDER,
            order.symbol,
            "none",
            _describe(order),
            action="would import",
            resolved=False,
            client_order_id=cid,
        )
        if consistent:
            _pending(run, fills)
        return
    run.records.record_order(
        client_order_id=cid,
        symbol=order.symbol,
        side=order.side.value,
        quantity=order.quantity,
        order_type=order.order_type.value,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        time_in_force=order.time_in_force.value,
        strategy=order.strategy,
        broker=run.broker,
        broker_order_id=order.broker_order_id,
        intent_id=order.intent_id,
        at=order.updated_at,
        external=True,
    )
    if consistent:
        for fill in fills:
            _record_fill(run, fill)
    moved = _update(run, order)
    run.audit(
        "order.imported",
        f"order:{cid}",
        f"found at broker {run.broker}, unknown to the records",
        {"status": order.status.value, "filled": order.filled_quantity, "fills": len(fills)},
    )
    if not consistent:
        run.found(
            Kind.FILL_CONFLICT,
            order.symbol,
            "none",
            f"filled {order.filled_quantity:g}, fills {sum(f.quantity for f in fills):g}",
            action="order imported without fills",
            resolved=False,
            client_order_id=cid,
        )
    run.found(
        Kind.UNKNOWN_ORDER,
        order.symbol,
        "none",
        _describe(order),
        action="imported",
        resolved=moved or order.status is OrderStatus.NEW,
        client_order_id=cid,
    )


def _fills(run: _Run, report: OrderReport) -> None:
    """Import the fills of a known order the records miss, when they add up."""
    order = report.order
    cid = order.client_order_id
    recorded = run.records.fills(cid)
    ids = {f.execution_id for f in recorded}
    new = [f for f in report.fills if f.execution_id not in ids]
    have = sum(f.quantity for f in recorded)
    if not new and _same(have, order.filled_quantity):
        return
    total = have + sum(f.quantity for f in new)
    records_side = f"fills {have:g}"
    broker_side = f"filled {order.filled_quantity:g}"
    if not new or not _same(total, order.filled_quantity):
        run.found(
            Kind.FILL_CONFLICT,
            order.symbol,
            records_side,
            broker_side,
            action="left for an operator",
            resolved=False,
            client_order_id=cid,
        )
        return
    if not run.apply:
        _pending(run, new)
        run.found(
            Kind.UNKNOWN_FILL,
            order.symbol,
            records_side,
            broker_side,
            action=f"would import {len(new)}",
            resolved=False,
            client_order_id=cid,
        )
        return
    for fill in new:
        _record_fill(run, fill)
        run.audit(
            "fill.imported",
            f"fill:{fill.execution_id}",
            f"reported by broker {run.broker} for order {cid}, missing from the records",
            {"quantity": fill.quantity, "price": fill.price},
        )
    run.found(
        Kind.UNKNOWN_FILL,
        order.symbol,
        records_side,
        broker_side,
        action=f"imported {len(new)}",
        resolved=True,
        client_order_id=cid,
    )


def _advance(run: _Run, held: Order, order: BrokerOrder) -> None:
    cid = order.client_order_id
    records_side = f"{held.status} {held.filled_quantity:g}"
    if not run.apply:
        run.found(
            Kind.ORDER_STATE,
            order.symbol,
            records_side,
            _state(order),
            action="would advance",
            resolved=False,
            client_order_id=cid,
        )
        return
    try:
        moved = _update(run, order)
    except ValidationError as e:
        moved, why = False, str(e)
    else:
        why = "the order's life cycle does not allow it"
    after = run.records.order(cid)
    agree = after.status == order.status.value and _same(
        after.filled_quantity, order.filled_quantity
    )
    if moved:
        run.audit(
            "order.reconciled",
            f"order:{cid}",
            f"broker {run.broker} reports {_state(order)}, the records held {records_side}",
            {"status": after.status, "filled": after.filled_quantity},
        )
    run.found(
        Kind.ORDER_STATE if agree else Kind.STATE_CONFLICT,
        order.symbol,
        records_side,
        _state(order),
        action="advanced" if agree else f"not applied: {why}",
        resolved=agree,
        client_order_id=cid,
    )


def _update(run: _Run, order: BrokerOrder) -> bool:
    """Fold the broker's state of `order` into the records (once per state: a keyed event)."""
    if order.status is OrderStatus.NEW:
        return False
    reason = order.reason
    if order.status is OrderStatus.REJECTED and not reason:
        reason = f"rejected at broker {run.broker}"
    return run.records.apply_order_update(
        order.client_order_id,
        event_id=f"reconcile:{order.client_order_id}:{order.status.value}:"
        f"{order.filled_quantity:g}",
        status=order.status.value,
        broker_at=order.updated_at,
        filled_quantity=order.filled_quantity,
        avg_price=order.avg_price if order.filled_quantity > 0 else None,
        broker_order_id=order.broker_order_id,
        reason=reason,
    )


def _record_fill(run: _Run, fill: BrokerFill) -> None:
    run.records.record_fill(**fill_columns(fill), broker=run.broker, external=True)


def _pending(run: _Run, fills: Iterable[BrokerFill]) -> None:
    for fill in fills:
        signed = fill.quantity if fill.side.value == "buy" else -fill.quantity
        run.pending[fill.symbol] = run.pending.get(fill.symbol, 0.0) + signed


# ---- positions and halts ------------------------------------------------------------------


def _positions(
    run: _Run, reported: dict[str, float], moving: set[str]
) -> dict[str, tuple[float, float]]:
    """Symbol -> (records, broker) for every symbol whose positions disagree; one whose broker
    position moved while it was read is reported, judged by the next run."""
    held = run.records.ledger_positions(run.broker)
    for symbol, quantity in run.pending.items():
        held[symbol] = held.get(symbol, 0.0) + quantity
    mismatched: dict[str, tuple[float, float]] = {}
    for symbol in sorted(set(held) | set(reported)):
        mine, theirs = held.get(symbol, 0.0), reported.get(symbol, 0.0)
        if _same(mine, theirs):
            continue
        if symbol in moving:
            action = "moved while read: judged by the next run"
        else:
            mismatched[symbol] = (mine, theirs)
            action = "halt REDUCING" if run.apply else "would halt REDUCING"
        run.found(Kind.POSITION, symbol, f"{mine:g}", f"{theirs:g}", action=action, resolved=False)
    return mismatched


def _halts(
    run: _Run,
    switches: KillSwitches,
    mismatched: dict[str, tuple[float, float]],
    moving: set[str],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Halt each mismatched symbol for this broker; lift this broker's part of the halts of
    symbols that agree again (the switch clears when no broker's mismatch holds it); a symbol
    still moving keeps its halt until a run reads it at rest."""
    current = {
        s.target: s
        for s in switches.state().switches
        if s.source is KillSource.RECONCILIATION and s.scope is KillScope.SYMBOL
    }
    halted: list[str] = []
    for symbol, (mine, theirs) in mismatched.items():
        brokers = _brokers(current.get(symbol))
        if run.broker in brokers:
            continue  # already halted for this broker: reported once, when it began
        detail = f"position mismatch at broker {run.broker}: records {mine:g}, broker {theirs:g}"
        switches.engage(
            KillScope.SYMBOL,
            KillMode.REDUCING,
            target=symbol,
            actor=_switch_actor(brokers | {run.broker}),
            reason=detail,
        )
        run.risk(
            Severity.CRITICAL,
            f"symbol:{symbol}",
            f"{detail}; {symbol} halted REDUCING until they agree",
            {"broker": run.broker, "records": mine, "reported": theirs},
        )
        halted.append(symbol)
    cleared: list[str] = []
    for symbol, switch in current.items():
        brokers = _brokers(switch)
        if symbol in mismatched or symbol in moving or run.broker not in brokers:
            continue
        rest = brokers - {run.broker}
        why = f"positions agree again at broker {run.broker}"
        if rest:
            switches.engage(
                KillScope.SYMBOL,
                KillMode.REDUCING,
                target=symbol,
                actor=_switch_actor(rest),
                reason=f"position mismatch still held by {', '.join(sorted(rest))} ({why})",
            )
        else:
            switches.clear(
                KillScope.SYMBOL, target=symbol, actor=_switch_actor({run.broker}), reason=why
            )
        cleared.append(symbol)
    return tuple(halted), tuple(cleared)


def _brokers(switch: KillSwitch | None) -> set[str]:
    """The brokers whose mismatch holds a reconciliation switch (named in its actor)."""
    if switch is None or not switch.actor.startswith(_SWITCH_ACTOR):
        return set()
    return {b for b in switch.actor.removeprefix(_SWITCH_ACTOR).split("/") if b}


def _switch_actor(brokers: set[str]) -> str:
    return _SWITCH_ACTOR + "/".join(sorted(brokers))


# ---- helpers ------------------------------------------------------------------------------


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE)


def _state(order: BrokerOrder) -> str:
    return f"{order.status.value} {order.filled_quantity:g}"


def _describe(order: BrokerOrder) -> str:
    return f"{order.side.value} {order.quantity:g} {order.status.value} {order.filled_quantity:g}"
