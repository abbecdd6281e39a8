"""The paper-trading pipeline: services (pure logic per stage) run by one shared runner."""

from __future__ import annotations

from tradeos_lab.pipeline.registry import (
    PIPELINE_ORDER,
    SERVICES,
    service_class,
    service_names,
)
from tradeos_lab.pipeline.runner import RunningService, ServiceRunner, run_service
from tradeos_lab.pipeline.service import Service, ServiceContext, Timer

__all__ = [
    "PIPELINE_ORDER",
    "SERVICES",
    "RunningService",
    "Service",
    "ServiceContext",
    "ServiceRunner",
    "Timer",
    "run_service",
    "service_class",
    "service_names",
]
