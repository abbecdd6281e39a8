"""Strategies by name: the built-ins, a notebook's own classes, and classes in files.

`register(cls)` puts a `Strategy` subclass under its `name` (usable as a class decorator), after
which backtests and the live pipeline find it by that name. `get_strategy(ref)` resolves a
registered name, `package.module:Class`, or `path/to/file.py:Class`.

Names are the project's machine names (`tradeos_lab.contracts.types.Name`) in lower case, so a
strategy is spelled one way in the registry, on the bus and in the records.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from tradeos_lab.contracts.types import Name
from tradeos_lab.errors import ValidationError
from tradeos_lab.strategies.base import Strategy

S = TypeVar("S", bound=type[Strategy[Any]])

_NAME = TypeAdapter(Name)
_REGISTRY: dict[str, type[Strategy[Any]]] = {}


def validate_strategy_name(name: object) -> str:
    """Return `name` when it is a lower-case machine name, raise `ValidationError` otherwise."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"strategy name must be a non-empty string, got {name!r}")
    try:
        _NAME.validate_python(name)
    except PydanticValidationError:
        raise ValidationError(
            f"strategy name {name!r} is not a machine name: letters, digits and _ . : @ / -, "
            "starting with a letter or digit, at most 64 characters"
        ) from None
    if name != name.lower():
        raise ValidationError(f"strategy name {name!r} must be lower-case ({name.lower()!r})")
    return name


def register(cls: S, *, replace: bool = False) -> S:
    """Register a `Strategy` subclass under its `name`; returns the class (a decorator too).

    Re-running the notebook cell that defines a class registers its new version; a different
    class under a taken name is refused unless `replace=True`.
    """
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)) or cls is Strategy:
        raise ValidationError(f"only Strategy subclasses can be registered, got {cls!r}")
    name = validate_strategy_name(cls.name)
    if cls.lookback < 1:
        raise ValidationError(f"strategy {name!r} has lookback {cls.lookback}; it must be >= 1")
    taken = _REGISTRY.get(name)
    same_definition = taken is not None and (taken.__module__, taken.__qualname__) == (
        cls.__module__,
        cls.__qualname__,
    )
    if taken is not None and taken is not cls and not same_definition and not replace:
        raise ValidationError(
            f"strategy name {name!r} is taken by {taken.__module__}:{taken.__qualname__}; "
            "choose another name or register with replace=True"
        )
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered strategy (a notebook experiment that is done)."""
    if _REGISTRY.pop(name, None) is None:
        raise ValidationError(f"no strategy named {name!r} is registered")


def strategy_names() -> list[str]:
    """Every registered strategy name, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_strategy(ref: str) -> type[Strategy[Any]]:
    """The strategy class for a registered name, `module:Class` or `path.py:Class`."""
    _load_builtins()
    if not isinstance(ref, str) or not ref:
        raise ValidationError(f"strategy reference must be a non-empty string, got {ref!r}")
    if ref in _REGISTRY:
        return _REGISTRY[ref]
    if ":" not in ref:
        known = ", ".join(sorted(_REGISTRY))
        raise ValidationError(
            f"unknown strategy {ref!r}; choose one of {known}, or give module:Class or "
            "path.py:Class"
        )
    where, _, class_name = ref.rpartition(":")
    module = _load_file(Path(where)) if where.endswith(".py") else _import(where)
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)) or cls is Strategy:
        raise ValidationError(f"{ref!r} does not name a Strategy subclass")
    return cls


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ValidationError(f"cannot import strategy module {module_name!r}: {e}") from None


def _load_file(path: Path) -> Any:
    """Import a strategy file as a module of its own (named after its resolved path, so two
    files with one name do not collide); a changed file is read again."""
    if not path.is_file():
        raise ValidationError(f"strategy file {str(path)!r} does not exist")
    resolved = path.resolve()
    module_name = "tradeos_strategy_" + re.sub(r"\W", "_", str(resolved))
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise ValidationError(f"strategy file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise ValidationError(f"strategy file {str(path)!r} failed to import: {e!r}") from e
    return module


def _load_builtins() -> None:
    """The built-ins register themselves on import; importing here keeps the registry complete
    for callers that imported only this module."""
    importlib.import_module("tradeos_lab.strategies.builtins")
