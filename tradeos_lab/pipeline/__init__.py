"""The paper-trading pipeline: services (pure logic per stage) run by one shared runner."""

from __future__ import annotations

from tradeos_lab.pipeline.registry import (
    PIPELINE_ORDER,
    SERVICES,
    service_class,
    service_names,
)
from tradeos_lab.pipeline.service import Service, ServiceContext, Timer

__all__ = [
    "PIPELINE_ORDER",
    "SERVICES",
    "Service",
    "ServiceContext",
    "Timer",
    "service_class",
    "service_names",
]
