"""The pipeline's services by name, in pipeline order.

Each service lives in its own module under `tradeos_lab.pipeline.services`; the module is imported
only when its service is asked for, so a command that runs one service loads only that one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tradeos_lab.errors import ValidationError

if TYPE_CHECKING:
    from tradeos_lab.pipeline.service import Service

#: Service name -> the module that defines it, in pipeline order (market data in, positions out).
SERVICES: dict[str, str] = {
    "ingestion": "tradeos_lab.pipeline.services.ingestion",
    "signal_engine": "tradeos_lab.pipeline.services.signal_engine",
    "signal_modifier": "tradeos_lab.pipeline.services.signal_modifier",
    "feasibility": "tradeos_lab.pipeline.services.feasibility",
    "execution": "tradeos_lab.pipeline.services.execution",
    "positions": "tradeos_lab.pipeline.services.positions",
}

#: The order `up` starts the services in and `status` lists them.
PIPELINE_ORDER: tuple[str, ...] = tuple(SERVICES)


def service_class(name: str) -> type[Service]:
    """The `Service` subclass registered as `name`; `ValidationError` naming the choices if none."""
    from tradeos_lab.pipeline.service import Service

    key = name.strip().lower() if isinstance(name, str) else name
    module_name = SERVICES.get(key) if isinstance(key, str) else None
    if module_name is None:
        raise ValidationError(
            f"no pipeline service named {name!r}; choose one of {', '.join(PIPELINE_ORDER)}"
        )
    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, Service)
            and getattr(value, "name", None) == key
        ):
            return value
    raise ValidationError(f"module {module_name} defines no Service subclass named {key!r}")


def service_names(names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """`names` checked and put in pipeline order (all services when None)."""
    if names is None:
        return PIPELINE_ORDER
    wanted = []
    for name in names:
        key = name.strip().lower()
        if key not in SERVICES:
            raise ValidationError(
                f"no pipeline service named {name!r}; choose one of {', '.join(PIPELINE_ORDER)}"
            )
        wanted.append(key)
    return tuple(n for n in PIPELINE_ORDER if n in wanted)
