"""The kill-switch panel's actions on the real flags tier, bus and records: engaging needs an
operator and a reason and is audited with the operator's name; clearing waits for a
confirmation; the agent's switches and the breaker show beside the operators'; a flags tier that
cannot be read is shown as halted with every switch action disabled; cancelling every open order
needs a reason and a confirmation, works while halted and shows each broker's outcome."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.apps.kill_switch import KillSwitchPanel
from tradeos_lab.brokers import OrderRequest, PaperBroker
from tradeos_lab.contracts import OrderType, Side, TimeInForce
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.operator import audit_sink
from tradeos_lab.secrets import SecretUrl
from tradeos_lab.settings import Settings, SharedRedisServerWarning
from tradeos_lab.tiers.flags import KillSource, KillSwitches

#: Nothing listens on port 1 of loopback: a flags tier that is down.
DEAD_FLAGS_URL = "redis://127.0.0.1:1/2"


@pytest.fixture
def panel(apps_lab: Lab) -> Iterator[KillSwitchPanel]:
    app = KillSwitchPanel(apps_lab.settings)
    app.refresh()
    yield app
    app.close()


def _audit(lab: Lab) -> list[dict[str, object]]:
    frame = lab.bus.inspect.read(Stream.AUDIT)
    return [] if frame.empty else frame.to_dict("records")


def test_engaging_is_audited_with_the_operators_name_and_reason(
    apps_lab: Lab, panel: KillSwitchPanel
) -> None:
    assert "TRADING" in panel.status.value
    panel.operator.value = "alice"
    panel.scope.value = "symbol"
    panel.target.value = "eth/usd"
    panel.mode.value = "REDUCING"
    panel.reason.value = "exchange outage"
    panel.engage_button.click()

    (switch,) = apps_lab.kill_switches.state().switches
    assert (switch.scope.value, switch.target, switch.mode.value) == (
        "symbol",
        "ETH-USD",
        "REDUCING",
    )
    assert (switch.source.value, switch.actor, switch.reason) == (
        "manual",
        "user:alice",
        "exchange outage",
    )
    engaged = [a for a in _audit(apps_lab) if a["payload.action"] == "kill_switch.engaged"]
    assert [(a["payload.actor"], a["payload.reason"]) for a in engaged] == [
        ("user:alice", "exchange outage")
    ]
    assert "symbol:ETH-USD" in panel.active.value and "user:alice" in panel.active.value
    assert "audited" in panel.message.value


@pytest.mark.parametrize(
    ("operator", "reason", "said"),
    [("", "why", "name is required"), ("alice", "  ", "a reason is required")],
)
def test_engaging_without_an_operator_or_a_reason_does_nothing_and_says_why(
    apps_lab: Lab, panel: KillSwitchPanel, operator: str, reason: str, said: str
) -> None:
    panel.operator.value = operator
    panel.reason.value = reason
    assert panel.engage() is None
    assert said in panel.message.value
    assert apps_lab.kill_switches.state().switches == ()
    assert not [a for a in _audit(apps_lab) if a["payload.action"] == "kill_switch.engaged"]


def test_clearing_waits_for_the_confirmation_and_is_audited(
    apps_lab: Lab, panel: KillSwitchPanel
) -> None:
    panel.operator.value = "bob"
    panel.reason.value = "halt everything"
    panel.engage()
    assert "HALTED" in panel.status.value
    assert panel.to_clear.value == "global:*:manual"

    panel.clear_reason.value = "all clear"
    panel.clear_button.click()
    assert panel.confirm_box.layout.display == "flex"
    assert "engaged by user:bob" in panel.confirm_text.value
    assert apps_lab.kill_switches.state().mode is not None, "nothing is cleared before confirming"
    panel.cancel_button.click()
    assert panel.confirm_box.layout.display == "none"
    assert apps_lab.kill_switches.state().mode is not None

    panel.clear_button.click()
    panel.confirm_button.click()
    state = apps_lab.kill_switches.state()
    assert state.mode is None and state.switches == ()
    cleared = [a for a in _audit(apps_lab) if a["payload.action"] == "kill_switch.cleared"]
    assert [(a["payload.actor"], a["payload.reason"]) for a in cleared] == [
        ("user:bob", "all clear")
    ]
    assert "TRADING" in panel.status.value


def test_the_automatic_switches_and_the_breaker_are_shown_and_an_operator_may_clear_them(
    apps_lab: Lab, panel: KillSwitchPanel
) -> None:
    apps_lab.kill_switches.engage(
        "strategy",
        "HALTED",
        target="sma_cross",
        actor="agent:risk",
        reason="drawdown",
        ttl_seconds=600,
    )
    reconciliation = KillSwitches(
        apps_lab.flags.redis,
        keys=apps_lab.keys,
        source=KillSource.RECONCILIATION,
        audit=audit_sink(apps_lab.bus, producer="test"),
    )
    reconciliation.engage(
        "symbol", "REDUCING", target="ETH-USD", actor="reconciliation:paper", reason="mismatch"
    )
    for _ in range(5):
        apps_lab.flags.circuit_breaker("broker").record_failure()
    panel.refresh()
    automatic = panel.automatic.value
    assert "strategy:sma_cross" in automatic and "agent:risk" in automatic
    assert "min" in automatic  # the agent's expiry counting down
    assert "symbol:ETH-USD" in automatic and "reconciliation:paper" in automatic
    assert "no operator switch" in panel.active.value
    assert "OPEN" in panel.breakers.value

    panel.operator.value = "carol"
    for switch in apps_lab.kill_switches.state().switches:  # an operator clears either source
        panel.refresh()
        panel.to_clear.value = switch.field
        panel.clear_reason.value = "reviewed"
        panel.ask_to_clear()
        assert panel.confirm_clear() is not None
    assert apps_lab.kill_switches.state().switches == ()


def test_an_unreachable_flags_tier_reads_halted_and_offers_no_action(
    server_settings: Settings,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        settings = server_settings.model_copy(update={"flags_url": SecretUrl(DEAD_FLAGS_URL)})
    app = KillSwitchPanel(settings)
    try:
        app.refresh()
        assert "unreachable" in app.status.value and "HALTED" in app.status.value
        assert app.engage_button.disabled and app.clear_button.disabled
        assert app.confirm_button.disabled and app.to_clear.options == ()
        app.operator.value, app.reason.value = "dave", "try anyway"
        assert app.engage() is None
        assert "unreachable" in app.message.value

        # Cancelling orders needs no flags tier (the paper broker lives in the records).
        lab = app.link.lab()
        _resting_paper_order(lab, "tl-rest-0")
        app.cancel_reason.value = "flags are down, flatten"
        app.ask_to_cancel_all()
        (paper,) = app.confirm_cancel_all() or []
        assert paper.client_order_ids == ("tl-rest-0",) and paper.error is None
        assert lab.records.open_orders() == []
    finally:
        app.close()


def _resting_paper_order(lab: Lab, cid: str) -> None:
    """A limit order at the paper broker that rests (no bar to fill it against)."""
    PaperBroker(lab.records, lambda _symbol: None).submit(
        OrderRequest(
            client_order_id=cid,
            symbol="BTC-USD",
            side=Side.BUY,
            quantity=1.0,
            order_type=OrderType.LIMIT,
            limit_price=100.0,
            time_in_force=TimeInForce.GTC,
        )
    )


def test_cancel_all_works_while_halted_shows_each_broker_and_says_an_unreachable_one(
    server_settings: Settings,
) -> None:
    """Alpaca is configured but nothing answers at its URL: its row says so, the paper orders
    are canceled anyway, and each broker has its audit entry with the operator's name."""
    settings = server_settings.model_copy(
        update={
            "alpaca_api_key": SecretStr("key"),
            "alpaca_secret_key": SecretStr("secret"),
            "alpaca_trading_url": "http://127.0.0.1:1",
            "alpaca_timeout_seconds": 1.0,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(settings, start=False)
    app = KillSwitchPanel(settings)
    try:
        operator.arm(lab, actor="user:test", reason="apps test")
        operator.halt(lab, actor="user:test", reason="market halt")
        _resting_paper_order(lab, "tl-rest-1")
        _resting_paper_order(lab, "tl-rest-2")
        app.refresh()
        assert "HALTED" in app.status.value

        app.operator.value = "erin"
        app.cancel_reason.value = "flatten before the close"
        app.cancel_all_button.click()
        assert app.cancel_confirm_box.layout.display == "flex"
        confirm = app.cancel_confirm_text.value
        assert "paper, alpaca" in confirm and "2 open order(s)" in confirm
        assert len(lab.records.open_orders()) == 2, "nothing is canceled before confirming"

        app.cancel_confirm_button.click()
        assert lab.records.open_orders() == []
        assert {lab.records.order(c).status for c in ("tl-rest-1", "tl-rest-2")} == {"canceled"}
        rows = app.canceled.value
        assert "paper" in rows and "2 canceled" in rows and "tl-rest-1" in rows
        assert "alpaca" in rows and "NOT REACHED" in rows
        assert "NOT reached: alpaca" in app.message.value
        assert app.cancel_confirm_box.layout.display == "none"

        audit = [a for a in _audit(lab) if a["payload.action"] == "orders.cancel_all"]
        assert sorted(a["payload.target"] for a in audit) == ["broker:alpaca", "broker:paper"]
        assert {(a["payload.actor"], a["payload.reason"]) for a in audit} == {
            ("user:erin", "flatten before the close")
        }
        kept = {a.target: a for a in lab.records.audit_trail() if a.action == "orders.cancel_all"}
        assert kept["broker:alpaca"].payload["new_value"]["error"]
        assert kept["broker:paper"].payload["new_value"]["canceled"] == ["tl-rest-1", "tl-rest-2"]
        assert lab.kill_switches.state().mode is not None, "the halt stays engaged"
    finally:
        app.close()
        lab.close()


@pytest.mark.parametrize(
    ("operator_name", "reason", "said"),
    [("", "why", "name is required"), ("frank", " ", "a reason is required")],
)
def test_cancel_all_without_an_operator_or_a_reason_asks_nothing(
    apps_lab: Lab, panel: KillSwitchPanel, operator_name: str, reason: str, said: str
) -> None:
    _resting_paper_order(apps_lab, "tl-rest-3")
    panel.operator.value, panel.cancel_reason.value = operator_name, reason
    panel.ask_to_cancel_all()
    assert said in panel.message.value
    assert panel.cancel_confirm_box.layout.display == "none"
    assert panel.confirm_cancel_all() is None
    assert [o.client_order_id for o in apps_lab.records.open_orders()] == ["tl-rest-3"]
    assert not [a for a in _audit(apps_lab) if a["payload.action"] == "orders.cancel_all"]


def test_cancel_all_skips_alpaca_without_keys_and_says_so(
    apps_lab: Lab, panel: KillSwitchPanel
) -> None:
    panel.operator.value, panel.cancel_reason.value = "gina", "end of day"
    panel.ask_to_cancel_all()
    assert "alpaca not configured: skipped" in panel.cancel_confirm_text.value
    panel.cancel_back_button.click()
    assert panel.cancel_confirm_box.layout.display == "none"
    assert panel.confirm_cancel_all() is None, "Back leaves nothing to confirm"

    panel.ask_to_cancel_all()
    (paper,) = panel.confirm_cancel_all() or []
    assert (paper.broker, paper.client_order_ids, paper.error) == ("paper", (), None)
    assert "0 canceled" in panel.canceled.value
    assert "SKIPPED: not configured" in panel.canceled.value
