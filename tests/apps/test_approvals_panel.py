"""The approvals panel on the real flags tier, bus and records: the queue's empty state; a parked
intent listed with its signal, sizing and the rules it passed; approving publishes it once and is
audited with the operator's name; rejecting needs a name and a reason; a HALTED kill switch wins
over an approval and the panel says so; a flags tier that cannot be read disables both decisions."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

import pytest
from apps_support import park_intent

from tradeos_lab import operator
from tradeos_lab.apps.approvals import ApprovalsPanel
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.secrets import SecretUrl
from tradeos_lab.settings import Settings, SharedRedisServerWarning

#: Nothing listens on port 1 of loopback: a flags tier that is down.
DEAD_FLAGS_URL = "redis://127.0.0.1:1/2"


@pytest.fixture
def panel(apps_lab: Lab) -> Iterator[ApprovalsPanel]:
    app = ApprovalsPanel(apps_lab.settings)
    app.refresh()
    yield app
    app.close()


def _intent_ids(lab: Lab) -> list[str]:
    frame = lab.bus.inspect.read(Stream.INTENTS)
    return [] if frame.empty else list(frame["message_id"])


def _audit(lab: Lab) -> list[dict[str, object]]:
    frame = lab.bus.inspect.read(Stream.AUDIT)
    return [] if frame.empty else frame.to_dict("records")


def test_an_empty_queue_says_so(panel: ApprovalsPanel) -> None:
    assert "No intent waits" in panel.status.value
    assert "no intent waits for approval" in panel.queue.value
    assert "no intent has been approved" in panel.decisions.value
    assert panel.choice.options == ()


def test_a_parked_intent_is_listed_with_its_signal_sizing_and_rules(
    apps_lab: Lab, panel: ApprovalsPanel
) -> None:
    intent_id = park_intent(apps_lab)
    panel.refresh()
    assert "1 waiting" in panel.status.value
    listed = panel.queue.value
    for shown in (intent_id, "sma_cross: buy 0.1 BTC-USD", "5,000.00", "1,000.00"):
        assert shown in listed, shown
    assert "long strength 0.5" in listed and "confidence 0.9" in listed
    assert "kill_switch, circuit_breaker" in listed and "Balanced@" in listed
    assert re.search(r">[45] min \d+ s<", listed)  # the default TTL of 300 s, counting down
    assert panel.choice.value == intent_id


def test_approving_publishes_the_intent_once_audited_with_the_operator(
    apps_lab: Lab, panel: ApprovalsPanel
) -> None:
    intent_id = park_intent(apps_lab)
    panel.refresh()
    panel.operator.value = "alice"
    panel.reason.value = "size is fine"
    panel.approve_button.click()
    assert _intent_ids(apps_lab) == [intent_id]
    assert "approved" in panel.message.value and "audited" in panel.message.value
    assert "no intent waits for approval" in panel.queue.value
    approved = [a for a in _audit(apps_lab) if a["payload.action"] == "intent.approved"]
    assert [(a["payload.actor"], a["payload.reason"]) for a in approved] == [
        ("user:alice", "size is fine")
    ]
    assert "user:alice" in panel.decisions.value and "approved" in panel.decisions.value
    # Nothing left to approve: a second approval of the same intent publishes nothing.
    assert operator.approve(apps_lab, intent_id, actor="user:bob", reason="again").done is False
    assert _intent_ids(apps_lab) == [intent_id]


@pytest.mark.parametrize(
    ("name", "reason", "said"),
    [("", "why", "name is required"), ("alice", "  ", "a reason is required")],
)
def test_a_decision_without_an_operator_or_a_reason_does_nothing_and_says_why(
    apps_lab: Lab, panel: ApprovalsPanel, name: str, reason: str, said: str
) -> None:
    intent_id = park_intent(apps_lab)
    panel.refresh()
    panel.operator.value, panel.reason.value = name, reason
    assert panel.reject() is None
    assert said in panel.message.value
    assert [p.intent_id for p in operator.pending_approvals(apps_lab)] == [intent_id]


def test_rejecting_lands_on_risk_events_and_in_the_decisions(
    apps_lab: Lab, panel: ApprovalsPanel
) -> None:
    intent_id = park_intent(apps_lab)
    panel.refresh()
    panel.operator.value, panel.reason.value = "carol", "not today"
    outcome = panel.reject()
    assert outcome is not None and outcome.done
    events = apps_lab.bus.inspect.read(Stream.RISK_EVENTS)
    assert [d for d in events["payload.detail"] if intent_id in d] != []
    assert _intent_ids(apps_lab) == []
    assert "rejected" in panel.decisions.value and "not today" in panel.decisions.value


def test_a_halted_kill_switch_wins_over_an_approval_and_the_panel_says_so(
    apps_lab: Lab, panel: ApprovalsPanel
) -> None:
    intent_id = park_intent(apps_lab)
    operator.halt(apps_lab, actor="user:risk", reason="drill")
    panel.refresh()
    assert "publishes nothing" in panel.status.value
    panel.operator.value, panel.reason.value = "alice", "go"
    outcome = panel.approve()
    assert outcome is not None and not outcome.done
    assert "not published" in panel.message.value
    assert _intent_ids(apps_lab) == []
    assert intent_id in panel.queue.value  # it keeps waiting


def test_a_flags_tier_that_cannot_be_read_disables_every_decision(
    server_settings: Settings,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        settings = server_settings.model_copy(update={"flags_url": SecretUrl(DEAD_FLAGS_URL)})
    app = ApprovalsPanel(settings)
    try:
        app.refresh()
        assert "unreachable" in app.status.value
        assert app.approve_button.disabled and app.reject_button.disabled
        app.operator.value, app.reason.value = "dave", "try anyway"
        assert app.approve() is None
        assert "unreachable" in app.message.value
    finally:
        app.close()
