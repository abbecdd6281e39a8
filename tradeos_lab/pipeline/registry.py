"""The pipeline's services by name, in pipeline order.

Each service lives in its own module under `tradeos_lab.pipeline.services`; `SERVICES[name]`
imports that module only when the service is asked for, so a process that runs one service loads
only that one.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from tradeos_lab.errors import ValidationError

if TYPE_CHECKING:
    from tradeos_lab.pipeline.service import Service

#: Service name -> the module that defines it, in pipeline order (market data in, positions out).
SERVICE_MODULES: dict[str, str] = {
    "ingestion": "tradeos_lab.pipeline.services.ingestion",
    "news_fetcher": "tradeos_lab.pipeline.services.news_fetcher",
    "sentiment_scorer": "tradeos_lab.pipeline.services.sentiment_scorer",
    "signal_engine": "tradeos_lab.pipeline.services.signal_engine",
    "signal_modifier": "tradeos_lab.pipeline.services.signal_modifier",
    "feasibility": "tradeos_lab.pipeline.services.feasibility",
    "execution": "tradeos_lab.pipeline.services.execution",
    "positions": "tradeos_lab.pipeline.services.positions",
    "tca": "tradeos_lab.pipeline.services.tca",
    "audit_trail": "tradeos_lab.pipeline.services.audit_trail",
    "agent": "tradeos_lab.pipeline.services.agent",
}

#: The order `up` starts the services in and `status` lists them.
PIPELINE_ORDER: tuple[str, ...] = tuple(SERVICE_MODULES)


def _unknown(name: object) -> ValidationError:
    return ValidationError(
        f"no pipeline service named {name!r}; choose one of {', '.join(PIPELINE_ORDER)}"
    )


def _key(name: object) -> str:
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in SERVICE_MODULES:
        raise _unknown(name)
    return key


def service_class(name: str) -> type[Service]:
    """The `Service` subclass registered as `name`; `ValidationError` naming the choices if none."""
    from tradeos_lab.pipeline.service import Service

    key = _key(name)
    module = importlib.import_module(SERVICE_MODULES[key])
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, Service)
            and getattr(value, "name", None) == key
        ):
            return value
    raise ValidationError(f"module {module.__name__} defines no Service subclass named {key!r}")


def service_names(names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """`names` checked and put in pipeline order (all services when None)."""
    if names is None:
        return PIPELINE_ORDER
    wanted = {_key(n) for n in names}
    return tuple(n for n in PIPELINE_ORDER if n in wanted)


class _Services(Mapping[str, "type[Service]"]):
    """Service name -> class, in pipeline order; a class is imported on first access."""

    def __getitem__(self, name: str) -> type[Service]:
        try:
            return service_class(name)
        except ValidationError as e:
            if isinstance(name, str) and name.strip().lower() in SERVICE_MODULES:
                raise
            raise KeyError(str(e)) from e

    def __iter__(self) -> Iterator[str]:
        return iter(PIPELINE_ORDER)

    def __len__(self) -> int:
        return len(PIPELINE_ORDER)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in SERVICE_MODULES

    def __repr__(self) -> str:
        return f"SERVICES({', '.join(PIPELINE_ORDER)})"


#: Service name -> `Service` subclass, in pipeline order (`SERVICES["feasibility"]`).
SERVICES: Mapping[str, type[Service]] = _Services()
