"""The base of every contract model and the translation of pydantic errors into `ContractError`.

Models are frozen (a stage emits new messages instead of editing what it received), reject
unknown fields, and validate strictly: no string-to-number or bool-to-number coercion, so a
message means exactly what its JSON says. Enum fields alone accept their plain string value
in Python, so notebooks can write `side="buy"`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from tradeos_lab.errors import ContractError, TradeosError

_MAX_ERRORS = 3
_MAX_SHOWN_INPUT = 40


class ContractModel(BaseModel):
    """Frozen, strict, closed: the shape every payload and message shares."""

    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="forbid",
        allow_inf_nan=False,
    )

    RULES: ClassVar[tuple[str, ...]] = ()
    """Cross-field rules the validators enforce, copied into the JSON Schema as `x-rules`."""

    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {}
    """Extra JSON Schema keywords (e.g. `allOf` for conditional requirements)."""

    def __init__(self, **data: Any) -> None:
        """Build and validate; a bad field raises `ContractError` naming it."""
        try:
            super().__init__(**data)
        except PydanticValidationError as e:
            raise ContractError(f"{type(self).__name__}: {describe_errors(e)}") from e

    # Marks this as pydantic's own `__init__`, so JSON validation keeps its fast, JSON-mode path
    # instead of routing every parsed message through Python-mode `__init__`.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.RULES:
            target["x-rules"] = list(cls.RULES)
        target.update(cls.JSON_SCHEMA_EXTRA)
        return schema


def describe_errors(error: PydanticValidationError) -> str:
    """One line naming each failing field (the first few), what was wrong and what was given."""
    parts = []
    errors = error.errors(include_url=False)
    for item in errors[:_MAX_ERRORS]:
        loc = _loc(item["loc"])
        cause = item.get("ctx", {}).get("error")
        # our own errors (SymbolError, ...) carry an operator hint that ContractError adds again
        msg = cause.args[0] if isinstance(cause, TradeosError) else item["msg"]
        msg = str(msg).removeprefix("Value error, ")
        shown = _shown(item.get("input"))
        parts.append(f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}")
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS} more")
    return "; ".join(parts)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shown(value: object) -> str:
    # Echo small scalars only, cut short and ASCII-escaped: a 1 MB field or a look-alike letter
    # must stay readable in a log line.
    if value is None or isinstance(value, bool | int | float):
        return f" (got {value!r})"
    if isinstance(value, str):
        text = value if len(value) <= _MAX_SHOWN_INPUT else value[:_MAX_SHOWN_INPUT] + "..."
        return f" (got {text.encode('ascii', 'backslashreplace').decode()!r})"
    return ""
