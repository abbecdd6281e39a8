"""The kill-switch panel (`apps/kill_switch.ipynb`): engage and clear switches per scope and mode
as a named operator with a reason, through `tradeos_lab.operator` (the only path that writes
manual switches; every action lands on `audit` with the operator's name).

Clearing takes a confirmation step that says what is about to resume. Every active switch shows
who, when and why; the automatic switches (the agent's, a reconciliation's) and the broker's circuit
breaker are shown beside them.
When the flags tier cannot be read the panel says so, shows the pipeline as halted (fail-closed,
as every order check reads it) and disables every switch action, since none of them could work.

Cancelling every open order (`operator.cancel_all`, audited per broker) also takes a reason and a
confirmation, and stays offered whatever the switches or the flags tier say: a cancel only ever
reduces risk, and the paper broker needs neither. Each broker's outcome is shown, a broker that
could not be reached or is not configured included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import ipywidgets as widgets

from tradeos_lab import operator
from tradeos_lab.apps import views
from tradeos_lab.apps.live import LabLink, PageHeartbeat, PolledPanel, Poller, Reading
from tradeos_lab.errors import TradeosError, ValidationError
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.flags import KillMode, KillScope, KillSource, KillState, KillSwitch

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.tiers.flags import BreakerStatus

REFRESH_S: Final = 1.0


@dataclass(frozen=True)
class PanelState:
    kill: KillState
    breaker: BreakerStatus | None
    now: float


def read_panel(lab: Lab) -> PanelState:
    """The kill switches (a failed read is already HALTED there) and the broker's breaker."""
    from tradeos_lab.pipeline.services.feasibility import BROKER_DEPENDENCY
    from tradeos_lab.tiers.flags.plumbing import server_time

    kill = lab.kill_switches.state()
    if not kill.reachable:
        return PanelState(kill, None, 0.0)
    breaker = lab.flags.circuit_breaker(BROKER_DEPENDENCY).status()
    return PanelState(kill, breaker, server_time(lab.flags.redis))


def operator_actor(name: str) -> str:
    """`alice` -> `user:alice`; a name that already says what it is (`desk:risk`) stays."""
    name = name.strip()
    if not name:
        raise ValidationError("the operator's name is required: every action is audited with it")
    return name if ":" in name else f"user:{name}"


class KillSwitchPanel(PolledPanel[PanelState]):
    """The panel's widgets and actions; `show()` starts refreshing the switches' state."""

    def __init__(self, settings: Settings | None = None, *, link: LabLink | None = None) -> None:
        self.link = link or LabLink(settings)
        self.state: Reading[PanelState] = Reading(error="reading the flags tier...")
        self.selected: KillSwitch | None = None

        self.status = widgets.HTML()
        self.operator = widgets.Text(description="Operator", placeholder="your name (required)")
        self.scope = widgets.ToggleButtons(
            options=[s.value for s in KillScope], value=KillScope.GLOBAL.value, description="Scope"
        )
        self.target = widgets.Text(
            description="Target", placeholder="strategy name or symbol", disabled=True
        )
        self.mode = widgets.ToggleButtons(
            options=[m.value for m in KillMode], value=KillMode.HALTED.value, description="Mode"
        )
        self.reason = widgets.Textarea(description="Reason", placeholder="why (required)")
        self.engage_button = widgets.Button(
            description="Engage", button_style="danger", icon="stop"
        )
        self.active = widgets.HTML()
        self.automatic = widgets.HTML()
        self.breakers = widgets.HTML()
        self.to_clear = widgets.Dropdown(description="Switch", options=[])
        self.clear_reason = widgets.Textarea(description="Reason", placeholder="why (required)")
        self.clear_button = widgets.Button(description="Clear...", button_style="warning")
        self.confirm_text = widgets.HTML()
        self.confirm_button = widgets.Button(description="Confirm clear", button_style="danger")
        self.cancel_button = widgets.Button(description="Cancel")
        self.confirm_box = widgets.VBox(
            [self.confirm_text, widgets.HBox([self.confirm_button, self.cancel_button])]
        )
        self.confirm_box.layout.display = "none"
        self.message = widgets.HTML()
        self.cancel_reason = widgets.Textarea(description="Reason", placeholder="why (required)")
        self.cancel_all_button = widgets.Button(
            description="Cancel all orders...", button_style="danger", icon="ban"
        )
        self.cancel_confirm_text = widgets.HTML()
        self.cancel_confirm_button = widgets.Button(
            description="Confirm cancel all", button_style="danger"
        )
        self.cancel_back_button = widgets.Button(description="Back")
        self.cancel_confirm_box = widgets.VBox(
            [
                self.cancel_confirm_text,
                widgets.HBox([self.cancel_confirm_button, self.cancel_back_button]),
            ]
        )
        self.cancel_confirm_box.layout.display = "none"
        self.canceled = widgets.HTML()

        self.scope.observe(self._on_scope, names="value")
        self.engage_button.on_click(lambda _b: self.engage())
        self.clear_button.on_click(lambda _b: self.ask_to_clear())
        self.confirm_button.on_click(lambda _b: self.confirm_clear())
        self.cancel_button.on_click(lambda _b: self.cancel_clear())
        self.cancel_all_button.on_click(lambda _b: self.ask_to_cancel_all())
        self.cancel_confirm_button.on_click(lambda _b: self.confirm_cancel_all())
        self.cancel_back_button.on_click(lambda _b: self.back_from_cancel_all())
        for w, name in (
            (self.engage_button, "tl-engage"),
            (self.clear_button, "tl-clear"),
            (self.confirm_button, "tl-confirm-clear"),
            (self.cancel_button, "tl-cancel-clear"),
            (self.operator, "tl-operator"),
            (self.reason, "tl-reason"),
            (self.clear_reason, "tl-clear-reason"),
            (self.status, "tl-kill-status"),
            (self.message, "tl-message"),
            (self.cancel_reason, "tl-cancel-reason"),
            (self.cancel_all_button, "tl-cancel-all"),
            (self.cancel_confirm_button, "tl-confirm-cancel-all"),
            (self.cancel_back_button, "tl-back-cancel-all"),
            (self.canceled, "tl-canceled"),
        ):
            w.add_class(name)

        self.heartbeat = PageHeartbeat()
        self.poller = Poller(
            self.refresh, every_s=REFRESH_S, heartbeat=self.heartbeat, name="kill-switch-poller"
        )
        title = views.title
        self.widget = widgets.VBox(
            [
                widgets.HTML(views.STYLE),
                self.status,
                self.operator,
                widgets.HTML(title("Engage a kill switch")),
                self.scope,
                self.target,
                self.mode,
                self.reason,
                self.engage_button,
                widgets.HTML(title("Active switches (operators)")),
                self.active,
                widgets.HTML(title("Clear a switch")),
                self.to_clear,
                self.clear_reason,
                self.clear_button,
                self.confirm_box,
                self.message,
                widgets.HTML(title("Cancel all open orders (at every broker)")),
                self.cancel_reason,
                self.cancel_all_button,
                self.cancel_confirm_box,
                self.canceled,
                widgets.HTML(title("Automatic switches (the agent, reconciliations)")),
                self.automatic,
                widgets.HTML(title("Circuit breakers")),
                self.breakers,
                self.heartbeat,
            ]
        )
        self.widget.add_class("tl-kill-switch")
        self._draw()

    # ---- lifecycle (shown, closed and refreshed as a `PolledPanel`) ---------------------------

    def read(self, lab: Lab) -> PanelState:
        return read_panel(lab)

    # ---- actions, each through the operator path -------------------------------------------

    def engage(self) -> dict[str, Any] | None:
        """Engage the switch the form describes; the audit record, or None (said why)."""

        def act(lab: Lab) -> dict[str, Any]:
            scope = KillScope(self.scope.value)
            target = None if scope is KillScope.GLOBAL else _required(self.target.value, "a target")
            return operator.halt(
                lab,
                actor=operator_actor(self.operator.value),
                reason=_required(self.reason.value),
                scope=scope,
                target=target,
                mode=self.mode.value,
            )

        record = self._act(act)
        if record is not None:
            switch = record["switch"]
            self._say(
                f"engaged {switch['mode']} on {switch['scope']}:{switch['target']} "
                f"as {record['actor']} (audited)",
                "ok",
            )
            self.reason.value = ""
        self.refresh()
        return record

    def ask_to_clear(self) -> None:
        """Show the confirmation step for the chosen switch; nothing is cleared yet."""
        switch = self._choice()
        if switch is None:
            self._say("no switch chosen: nothing to clear", "warn")
            return
        self.selected = switch
        effect = (
            "Trading resumes everywhere unless another switch applies"
            if switch.scope is KillScope.GLOBAL
            else f"Trading resumes for {switch.scope.value} {switch.target}"
        )
        self.confirm_text.value = views.banner(
            f"Clear the {switch.source.value} {switch.mode.value} switch on "
            f"{switch.scope.value}:{switch.target}, engaged by {switch.actor} at "
            f"{views.clock(switch.since)} ({switch.reason})? {effect}.",
            "warn",
        )
        self.confirm_box.layout.display = "flex"

    def confirm_clear(self) -> dict[str, Any] | None:
        """Clear the switch the confirmation step named; the audit record, or None (said why)."""
        switch = self.selected
        if switch is None:
            self._say("nothing to confirm: choose a switch and press Clear first", "warn")
            return None

        def act(lab: Lab) -> dict[str, Any]:
            return operator.clear(
                lab,
                actor=operator_actor(self.operator.value),
                reason=_required(self.clear_reason.value),
                scope=switch.scope,
                target=switch.target,
                source=switch.source,
            )

        record = self._act(act)
        if record is not None:
            self._say(
                f"cleared {switch.scope.value}:{switch.target} ({switch.source.value}) as "
                f"{record['actor']} (audited)",
                "ok",
            )
            self.clear_reason.value = ""
            self.cancel_clear()
        self.refresh()
        return record

    def cancel_clear(self) -> None:
        self.selected = None
        self.confirm_box.layout.display = "none"

    def ask_to_cancel_all(self) -> None:
        """Show the confirmation step: the brokers about to be asked and the open orders the
        records hold; nothing is canceled yet."""
        try:
            operator_actor(self.operator.value)
            _required(self.cancel_reason.value)
        except ValidationError as e:
            self._say(str(e), "warn")
            return
        asked = self.link.read("the stack", lambda lab: configured_brokers(lab.settings))
        if asked.value is None:
            self._say(f"nothing can be canceled now: {asked.error}", "down")
            return
        skipped = [b for b in operator.BROKERS if b not in asked.value]
        opened = self.link.read("the records", lambda lab: len(lab.records.open_orders()))
        held = (
            f"The records hold {opened.value} open order(s)"
            if opened.value is not None
            else f"The records cannot be read now ({opened.error})"
        )
        self.cancel_confirm_text.value = views.banner(
            f"Cancel every open order at {', '.join(asked.value)}"
            + (f" ({', '.join(skipped)} not configured: skipped)" if skipped else "")
            + f", whatever the kill switches say? {held}; each broker is asked for all of its own.",
            "warn",
        )
        self.cancel_confirm_box.layout.display = "flex"

    def confirm_cancel_all(self) -> list[operator.Canceled] | None:
        """Cancel every open order at each configured broker (audited per broker) and show each
        broker's outcome; None (said why) when nothing could be asked."""
        if self.cancel_confirm_box.layout.display == "none":
            self._say("nothing to confirm: press Cancel all orders first", "warn")
            return None
        try:
            actor = operator_actor(self.operator.value)
            reason = _required(self.cancel_reason.value)
            lab = self.link.lab()
            names = configured_brokers(lab.settings)
            with operator.stack_brokers(lab, names) as brokers:
                outcomes = operator.cancel_all(lab, brokers, actor=actor, reason=reason)
        except ValidationError as e:
            self._say(str(e), "warn")
            return None
        except TradeosError as e:
            self.link.reset()
            self._say(f"not done: {e}", "down")
            return None
        skipped = [b for b in operator.BROKERS if b not in names]
        self.canceled.value = views.table(
            [canceled_row(o) for o in outcomes]
            + [{"broker": b, "outcome": "SKIPPED: not configured (no API keys)"} for b in skipped],
            ["broker", "outcome", "orders"],
            empty="no broker to ask",
            css_class="tl-canceled-table",
        )
        failed = [o.broker for o in outcomes if o.error is not None]
        total = sum(len(o.client_order_ids) for o in outcomes)
        self._say(
            f"canceled {total} order(s) as {actor} (audited per broker)"
            + (f"; NOT reached: {', '.join(failed)}" if failed else ""),
            "down" if failed else "ok",
        )
        self.cancel_reason.value = ""
        self.back_from_cancel_all()
        return outcomes

    def back_from_cancel_all(self) -> None:
        self.cancel_confirm_box.layout.display = "none"

    def _act(self, action: Any) -> dict[str, Any] | None:
        if not self._reachable():
            self._say("the flags tier is unreachable: no switch can be changed now", "down")
            return None
        try:
            return dict(action(self.link.lab()))
        except ValidationError as e:
            self._say(str(e), "warn")
        except TradeosError as e:
            self.link.reset()
            self._say(f"not done: {e}", "down")
        return None

    # ---- drawing ---------------------------------------------------------------------------

    def _reachable(self) -> bool:
        state = self.state.value
        return state is not None and state.kill.reachable

    def _choice(self) -> KillSwitch | None:
        state = self.state.value
        if state is None or self.to_clear.value is None:
            return None
        return next((s for s in state.kill.switches if s.field == self.to_clear.value), None)

    def _on_scope(self, change: dict[str, Any]) -> None:
        is_global = change["new"] == KillScope.GLOBAL.value
        self.target.disabled = is_global or not self._reachable()
        if is_global:
            self.target.value = ""

    def _draw(self) -> None:
        reading = self.state
        state = reading.value
        reachable = self._reachable()
        for w in (self.engage_button, self.clear_button, self.confirm_button, self.to_clear):
            w.disabled = not reachable
        self.target.disabled = not reachable or self.scope.value == KillScope.GLOBAL.value
        if state is None or not state.kill.reachable:
            why = reading.error or (state.kill.reason if state else "")
            self.status.value = views.banner(
                f"Flags tier unreachable: the pipeline is HALTED (fail-closed); no switch can "
                f"be changed until it is back. {why}",
                "down",
            )
            self.active.value = self.automatic.value = self.breakers.value = ""
            self.to_clear.options = []
            self.confirm_box.layout.display = "none"
            return
        kill = state.kill
        if not kill.armed:
            self.status.value = views.banner(
                f"HALTED: {kill.reason}. Arm it with `tradeos-lab flags arm`.", "down"
            )
        elif kill.mode is not None:
            self.status.value = views.banner(f"Pipeline {kill.reason}", "down")
        else:
            self.status.value = views.banner(
                "TRADING: no global switch (scoped switches below still apply)", "ok"
            )
        manual = [s for s in kill.switches if s.source is KillSource.MANUAL]
        automatic = [s for s in kill.switches if s.source is not KillSource.MANUAL]
        self.active.value = views.table(
            [switch_row(s, state.now) for s in manual],
            _SWITCH_COLUMNS,
            empty="no operator switch is engaged",
            css_class="tl-active",
        )
        self.automatic.value = views.table(
            [{"source": s.source.value, **switch_row(s, state.now)} for s in automatic],
            ["source", *_SWITCH_COLUMNS],
            empty="neither the agent nor a reconciliation has a switch engaged",
        )
        options = [(_label(s), s.field) for s in kill.switches]
        if [v for _, v in options] != [v for _, v in self.to_clear.options]:
            keep = self.to_clear.value
            self.to_clear.options = options
            fields = [v for _, v in options]
            self.to_clear.value = keep if keep in fields else (fields[0] if fields else None)
        if self.selected is not None and self.selected not in kill.switches:
            self.cancel_clear()  # cleared elsewhere meanwhile: nothing left to confirm
        b = state.breaker
        self.breakers.value = views.table(
            []
            if b is None
            else [{"dependency": "broker", "state": b.state.value.upper(), "failures": b.failures}],
            ["dependency", "state", "failures"],
            empty="no breaker",
        )


_SWITCH_COLUMNS: Final = ["scope", "mode", "by", "since", "reason", "expires in"]


def switch_row(s: KillSwitch, now: float) -> dict[str, object]:
    """Who engaged a switch, when, why, and when it expires (`now`: the flags server's clock)."""
    return {
        "scope": f"{s.scope.value}:{s.target}",
        "mode": s.mode.value,
        "source": s.source.value,
        "by": s.actor,
        "since": views.clock(s.since),
        "reason": s.reason,
        "expires in": "never (clear it)"
        if s.expires_at is None
        else views.duration(s.expires_at - now),
    }


def configured_brokers(settings: Settings) -> list[str]:
    """The brokers a cancel-all asks: those the stack can reach (Alpaca only with its keys)."""
    return [b for b in operator.BROKERS if operator.broker_configured(settings, b)]


def canceled_row(outcome: operator.Canceled) -> dict[str, object]:
    """One broker's cancel-all outcome; a broker that could not be reached says so and why."""
    if outcome.error is not None:
        return {"broker": outcome.broker, "outcome": f"NOT REACHED: {outcome.error}"}
    return {
        "broker": outcome.broker,
        "outcome": f"{len(outcome.client_order_ids)} canceled",
        "orders": ", ".join(outcome.client_order_ids) or None,
    }


def _label(s: KillSwitch) -> str:
    return f"{s.scope.value}:{s.target} {s.mode.value} ({s.source.value}, {s.actor})"


def _required(value: str, what: str = "a reason") -> str:
    if not value.strip():
        raise ValidationError(f"{what} is required: every action is audited with it")
    return value.strip()
