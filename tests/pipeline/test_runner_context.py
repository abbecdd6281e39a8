"""The service context builds valid audit and risk-event messages; the registry names its choices;
the shared pipeline labs come armed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tradeos_lab.contracts import Audit, Bar, RiskEvent, new_message
from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline import (
    PIPELINE_ORDER,
    SERVICES,
    Service,
    ServiceContext,
    ServiceRunner,
    Timer,
    service_class,
)
from tradeos_lab.pipeline.registry import service_names
from tradeos_lab.settings import PIPELINE_SERVICES


class Watcher(Service):
    name = "watcher"
    inputs = (Stream.MARKET_DATA,)
    outputs = (Stream.AUDIT, Stream.RISK_EVENTS)


def _bar() -> Bar:
    return Bar(
        symbol="BTC-USD",
        timeframe="1m",
        ts=datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
        open=1.0,
        high=2.0,
        low=0.5,
        close=1.5,
        volume=10.0,
        source="synthetic",
    )


def test_context_audit_and_risk_event_carry_the_chain_and_publish(pipeline_lab: Lab) -> None:
    ctx = Watcher(
        ServiceContext(pipeline_lab, pipeline_lab.settings, "watcher-1", clock=lambda: 1.7e9)
    ).ctx
    bar = new_message(_bar(), producer="ingestion")
    audit = ctx.audit(bar, action="bar.seen", target="symbol:BTC-USD", reason="a bar came in")
    risk = ctx.risk_event(
        bar,
        kind="stale_data",
        severity="warning",
        scope="symbol:BTC-USD",
        detail="bar older than expected",
        data={"age_s": 90},
    )
    for message in (audit, risk):
        assert message.correlation_id == bar.correlation_id
        assert message.causation_id == bar.message_id
        assert message.producer == "watcher"
        assert message.produced_at.timestamp() == 1.7e9
    assert isinstance(audit.payload, Audit) and audit.payload.actor == "service:watcher"
    assert isinstance(risk.payload, RiskEvent) and risk.payload.data == {"age_s": 90}
    pipeline_lab.bus.publish(Stream.AUDIT, audit)
    pipeline_lab.bus.publish(Stream.RISK_EVENTS, risk)
    assert pipeline_lab.bus.redis.xlen(pipeline_lab.keys.stream(Stream.RISK_EVENTS)) == 1


def test_context_audit_without_parent_starts_a_chain(pipeline_lab: Lab) -> None:
    ctx = Watcher(ServiceContext(pipeline_lab, pipeline_lab.settings, "watcher-1")).ctx
    audit = ctx.audit(None, action="service.start", target="service:watcher", reason="started")
    assert audit.causation_id is None and audit.correlation_id == audit.message_id


def test_risk_event_with_an_unknown_kind_is_refused(pipeline_lab: Lab) -> None:
    ctx = Watcher(ServiceContext(pipeline_lab, pipeline_lab.settings, "watcher-1")).ctx
    with pytest.raises(ValueError, match="no_such_kind"):
        ctx.risk_event(None, kind="no_such_kind", severity="info", scope="global", detail="x")


def test_unknown_service_name_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ValidationError, match=r"no pipeline service named 'ingest'.*ingestion"):
        service_class("ingest")
    with pytest.raises(ValidationError, match="choose one of"):
        service_names(("feasibility", "nope"))
    assert service_names(("positions", "Ingestion")) == ("ingestion", "positions")
    assert PIPELINE_ORDER[0] == "ingestion"
    assert PIPELINE_ORDER == PIPELINE_SERVICES  # the settings list what the registry holds


def test_pipeline_labs_come_armed(pipeline_lab: Lab, embedded_pipeline_lab: Lab) -> None:
    for lab in (pipeline_lab, embedded_pipeline_lab):
        state = lab.kill_switches.state()
        assert state.armed and state.mode is None, state
        assert lab.records.profiles()


def test_services_maps_names_to_classes_in_pipeline_order() -> None:
    assert tuple(SERVICES) == PIPELINE_ORDER
    assert "Feasibility" in SERVICES and "nope" not in SERVICES
    with pytest.raises(KeyError, match="choose one of"):
        SERVICES["nope"]


class Other(Service):
    name = "other"


def test_services_sharing_one_context_each_produce_under_their_own_name(pipeline_lab: Lab) -> None:
    shared = ServiceContext(pipeline_lab, pipeline_lab.settings, "shared-1")
    watcher, other = Watcher(shared), Other(shared)
    assert watcher.ctx.audit(None, action="a.b", target="global", reason="r").producer == "watcher"
    assert other.ctx.audit(None, action="a.b", target="global", reason="r").producer == "other"
    assert watcher.ctx.lab is other.ctx.lab is pipeline_lab


@pytest.mark.parametrize("every_s", [0, -1.0, float("nan"), float("inf")])
def test_a_timer_must_fire_every_positive_finite_interval(every_s: float) -> None:
    with pytest.raises(ValidationError, match="positive, finite"):
        Timer("poll", every_s, list)


def test_the_runner_runs_only_service_classes_with_canonical_names(pipeline_lab: Lab) -> None:
    ctx = ServiceContext(pipeline_lab, pipeline_lab.settings, "x-1")

    class Shouting(Service):
        name = "Shouting"

    with pytest.raises(ValidationError, match="a ServiceRunner runs a Service subclass"):
        ServiceRunner(object, ctx)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="must be spelled 'shouting'"):
        ServiceRunner(Shouting, ctx)
