"""The audit trail service keeps `audit` and `risk_events` in the records, once per message, so
the trail outlives the streams' trimming."""

from __future__ import annotations

import pytest

from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.runner import ServiceRunner
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.audit_trail import AuditTrail
from tradeos_lab.settings import Settings


@pytest.fixture
def ctx(pipeline_lab: Lab, pipeline_settings: Settings) -> ServiceContext:
    return ServiceContext(lab=pipeline_lab, settings=pipeline_settings, instance="t")


def test_audit_entries_and_risk_events_on_the_bus_are_kept_in_the_records_once(
    pipeline_lab: Lab, ctx: ServiceContext
) -> None:
    decided = ctx.audit(None, action="intent.refused", target="BTC-USD", reason="order notional")
    breach = ctx.risk_event(
        decided,
        kind="limit_breach",
        severity="warning",
        scope="symbol:BTC-USD",
        detail="order notional 60,000 above 50,000",
        data={"limit": 50_000.0, "value": 60_000.0},
    )
    pipeline_lab.bus.publish(Stream.AUDIT, decided)
    pipeline_lab.bus.publish(Stream.RISK_EVENTS, breach)
    pipeline_lab.bus.publish(Stream.AUDIT, decided)  # the same message again (a re-publish)

    runner = ServiceRunner(AuditTrail, ctx)
    try:
        handled = runner.drain()
    finally:
        runner.close()

    assert handled.handled == 4  # the fixture's arming of the kill switches is audited too
    records = pipeline_lab.records
    assert sorted(a.action for a in records.audit_trail()) == [
        "intent.refused",
        "kill_switch.armed",
    ]
    kept = records.audit_trail(correlation_id=decided.correlation_id)
    assert [(a.message_id, a.action, a.target) for a in kept] == [
        (decided.message_id, "intent.refused", "BTC-USD")
    ]
    risks = records.risk_events(correlation_id=decided.correlation_id)
    assert [(r.message_id, r.kind, r.scope) for r in risks] == [
        (breach.message_id, "limit_breach", "symbol:BTC-USD")
    ]
    # the streams may now be trimmed to nothing: the trail is in the records
    pipeline_lab.bus.redis.delete(pipeline_lab.keys.stream(Stream.AUDIT))
    assert len(records.audit_trail(correlation_id=decided.correlation_id)) == 1


def test_the_audit_trail_runs_with_the_pipeline() -> None:
    from tradeos_lab.pipeline.registry import PIPELINE_ORDER, service_class
    from tradeos_lab.settings import PIPELINE_SERVICES

    assert service_class("audit_trail") is AuditTrail
    assert "audit_trail" in PIPELINE_ORDER
    assert "audit_trail" in PIPELINE_SERVICES
