"""The approval queue (`apps/approvals.ipynb`): the intents above the active profile's notional
threshold that Feasibility parked for a human, each with its signal, its sizing and the rules it
passed, approved or rejected as a named operator with a reason through `tradeos_lab.operator`
(the only path that decides them; every decision lands on `audit` with the operator's name).

Each intent shows how long it has left: one not approved in time is rejected by Feasibility's
sweep, and the recent decisions (approvals, rejections, expiries) are listed with who made them.
A HALTED kill switch wins over an approval: the panel says so, and an approval then publishes
nothing. When the flags tier cannot be read the panel says so and disables both decisions, since
neither could work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import ipywidgets as widgets

from tradeos_lab import operator
from tradeos_lab.apps import views
from tradeos_lab.apps.kill_switch import operator_actor
from tradeos_lab.apps.live import LabLink, PageHeartbeat, PolledPanel, Poller, Reading
from tradeos_lab.contracts import Audit
from tradeos_lab.errors import ContractError, TradeosError, ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.flags import KillMode, KillState, ParkedIntent

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab

REFRESH_S: Final = 1.0
#: The audit actions of a decision on a parked intent, as the decisions table names them.
DECISIONS: Final = {
    "intent.approved": "approved",
    "intent.rejected": "rejected",
    "intent.expired": "expired (not approved in time)",
}
#: How far back the audit stream is searched for decisions, and how many are shown.
AUDIT_LOOKBACK: Final = 500
SHOWN_DECISIONS: Final = 10


@dataclass(frozen=True)
class QueueState:
    waiting: list[ParkedIntent]
    kill: KillState
    decisions: list[dict[str, object]]
    #: The flags server's clock, which deadlines are on.
    now: float


def read_queue(lab: Lab) -> QueueState:
    """The waiting intents, the kill switches (an approval under HALTED publishes nothing) and
    the recent decisions from the `audit` stream."""
    from tradeos_lab.tiers.flags.plumbing import server_time

    waiting = operator.pending_approvals(lab)
    now = server_time(lab.flags.redis)
    return QueueState(waiting, lab.kill_switches.state(), recent_decisions(lab), now)


def recent_decisions(lab: Lab) -> list[dict[str, object]]:
    """The newest decisions on parked intents, newest first: what, which intent, by whom, why."""
    bus = lab.bus
    rows = cast(
        "list[tuple[bytes, dict[bytes, bytes]]]",
        bus.redis.xrevrange(bus.stream_key(Stream.AUDIT), count=AUDIT_LOOKBACK),
    )
    out: list[dict[str, object]] = []
    for _entry_id, fields in rows:
        try:
            message = bus.decode(Stream.AUDIT, fields)
        except ContractError:
            continue
        audit = message.payload
        if not isinstance(audit, Audit) or audit.action not in DECISIONS:
            continue
        facts = audit.new_value if isinstance(audit.new_value, dict) else {}
        quantity = facts.get("quantity")
        out.append(
            {
                "at": message.produced_at,
                "decision": DECISIONS[audit.action],
                "intent": audit.target.removeprefix("intent:"),
                "order": " ".join(
                    str(part)
                    for part in (
                        facts.get("side"),
                        f"{quantity:g}" if isinstance(quantity, int | float) else quantity,
                        facts.get("symbol"),
                    )
                    if part is not None
                ),
                "by": audit.actor,
                "reason": audit.reason,
            }
        )
        if len(out) >= SHOWN_DECISIONS:
            break
    return out


class ApprovalsPanel(PolledPanel[QueueState]):
    """The queue's widgets and actions; `show()` starts refreshing it."""

    def __init__(self, settings: Settings | None = None, *, link: LabLink | None = None) -> None:
        self.link = link or LabLink(settings)
        self.state: Reading[QueueState] = Reading(error="reading the approval queue...")

        self.status = widgets.HTML()
        self.queue = widgets.HTML()
        self.operator = widgets.Text(description="Operator", placeholder="your name (required)")
        self.choice = widgets.Dropdown(description="Intent", options=[])
        self.reason = widgets.Textarea(description="Reason", placeholder="why (required)")
        self.approve_button = widgets.Button(
            description="Approve", button_style="success", icon="check"
        )
        self.reject_button = widgets.Button(description="Reject", button_style="danger", icon="ban")
        self.message = widgets.HTML()
        self.decisions = widgets.HTML()

        self.approve_button.on_click(lambda _b: self.approve())
        self.reject_button.on_click(lambda _b: self.reject())
        for w, name in (
            (self.status, "tl-approvals-status"),
            (self.queue, "tl-approvals"),
            (self.operator, "tl-operator"),
            (self.choice, "tl-approval-choice"),
            (self.reason, "tl-approval-reason"),
            (self.approve_button, "tl-approve"),
            (self.reject_button, "tl-reject"),
            (self.message, "tl-message"),
            (self.decisions, "tl-decisions"),
        ):
            w.add_class(name)

        self.heartbeat = PageHeartbeat()
        self.poller = Poller(
            self.refresh, every_s=REFRESH_S, heartbeat=self.heartbeat, name="approvals-poller"
        )
        title = views.title
        self.widget = widgets.VBox(
            [
                widgets.HTML(views.STYLE),
                self.status,
                widgets.HTML(title("Intents waiting for approval")),
                self.queue,
                widgets.HTML(title("Decide")),
                self.operator,
                self.choice,
                self.reason,
                widgets.HBox([self.approve_button, self.reject_button]),
                self.message,
                widgets.HTML(title("Recent decisions")),
                self.decisions,
                self.heartbeat,
            ]
        )
        self.widget.add_class("tl-approvals-panel")
        self._draw()

    # ---- lifecycle (shown, closed and refreshed as a `PolledPanel`) ---------------------------

    def read(self, lab: Lab) -> QueueState:
        return read_queue(lab)

    # ---- actions, each through the operator path -------------------------------------------

    def approve(self) -> operator.ApprovalOutcome | None:
        """Approve the chosen intent: published on `intents` unless a kill switch denies it."""
        return self._decide(operator.approve)

    def reject(self) -> operator.ApprovalOutcome | None:
        """Reject the chosen intent (on `risk_events` and `audit`)."""
        return self._decide(operator.reject)

    def _decide(self, decision: Any) -> operator.ApprovalOutcome | None:
        if self.state.value is None:
            self._say("the approval queue is unreachable: nothing can be decided now", "down")
            return None
        intent_id = self.choice.value
        try:
            actor = operator_actor(self.operator.value)
            if not self.reason.value.strip():
                raise ValidationError("a reason is required: every decision is audited with it")
            if intent_id is None:
                raise ValidationError("no intent chosen: nothing to decide")
            outcome = cast(
                "operator.ApprovalOutcome",
                decision(self.link.lab(), intent_id, actor=actor, reason=self.reason.value),
            )
        except ValidationError as e:
            self._say(str(e), "warn")
            return None
        except TradeosError as e:
            self.link.reset()
            self._say(f"not done: {e}", "down")
            return None
        self._say(
            f"{outcome.detail} (audited)" if outcome.done else outcome.detail,
            "ok" if outcome.done else "warn",
        )
        if outcome.done:
            self.reason.value = ""
        self.refresh()
        return outcome

    # ---- drawing ---------------------------------------------------------------------------

    def _draw(self) -> None:
        reading = self.state
        state = reading.value
        for w in (self.approve_button, self.reject_button, self.choice):
            w.disabled = state is None
        if state is None:
            self.status.value = views.banner(
                f"Flags tier unreachable: the approval queue cannot be read and nothing can be "
                f"approved or rejected until it is back. {reading.error or ''}",
                "down",
            )
            self.queue.value = ""
            self.choice.options = []
            return
        kill = state.kill
        waiting = len(state.waiting)
        if kill.mode is KillMode.HALTED:  # unreachable and unarmed read HALTED too
            self.status.value = views.banner(
                f"{waiting} waiting. Kill switch {kill.reason}: an approval publishes nothing "
                "until it is cleared (the intent keeps waiting)",
                "down",
            )
        else:
            self.status.value = views.banner(
                f"{waiting} waiting for approval" if waiting else "No intent waits for approval",
                "warn" if waiting else "ok",
            )
        self.queue.value = views.table(
            [waiting_row(p, state.now) for p in state.waiting],
            _QUEUE_COLUMNS,
            empty="no intent waits for approval",
            css_class="tl-approvals-table",
        )
        options = [(choice_label(p), p.intent_id) for p in state.waiting]
        if [v for _, v in options] != [v for _, v in self.choice.options]:
            keep = self.choice.value
            self.choice.options = options
            ids = [v for _, v in options]
            self.choice.value = keep if keep in ids else (ids[0] if ids else None)
        self.decisions.value = views.table(
            state.decisions,
            ["at", "decision", "intent", "order", "by", "reason"],
            empty="no intent has been approved, rejected or expired yet",
            css_class="tl-decisions-table",
        )


_QUEUE_COLUMNS: Final = [
    "intent",
    "order",
    "notional",
    "threshold",
    "signal",
    "rules passed",
    "profile",
    "expires in",
]


def waiting_row(p: ParkedIntent, now: float) -> dict[str, object]:
    """One waiting intent: the order, its signal, its sizing and the rules it passed."""
    intent, signal = p.intent, p.signal
    return {
        "intent": p.intent_id,
        "order": f"{intent.strategy}: {intent.side.value} {intent.quantity:g} {intent.symbol} "
        f"at ~{p.price:,.2f}",
        "notional": p.notional,
        "threshold": p.threshold,
        "signal": (
            f"{signal.get('direction', '?')} strength {signal.get('adjusted_strength', '?')} "
            f"(raw {signal.get('raw_strength', '?')}), confidence {signal.get('confidence', '?')}"
        ),
        "rules passed": ", ".join(intent.checks_passed),
        "profile": intent.policy_profile,
        "expires in": "expired (being rejected)"
        if p.deadline is not None and p.deadline <= now
        else views.duration(None if p.deadline is None else p.deadline - now),
    }


def choice_label(p: ParkedIntent) -> str:
    """How the intent is offered for a decision: the order and its id."""
    intent = p.intent
    return (
        f"{intent.strategy} {intent.side.value} {intent.quantity:g} {intent.symbol} "
        f"({p.notional:,.0f}) {p.intent_id}"
    )
