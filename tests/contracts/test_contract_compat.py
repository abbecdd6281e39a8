"""The compatibility check: incompatible schema changes fail unless they move to a new major."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tradeos_lab.contracts.compat import (
    check_compatibility,
    flatten,
    lock_entry,
    schema_key,
    updated_lock,
)
from tradeos_lab.contracts.export import (
    LOCK_FILE,
    SCHEMAS_DIR,
    export,
    load_lock,
    load_tree,
    render,
)

ROOT = Path(__file__).resolve().parents[2] / "data_contracts"
TREE = load_tree(ROOT)
LOCK = load_lock(ROOT)


def tree_with(name: str, document: dict[str, Any], *, keep_old: bool = False) -> list[Any]:
    """The committed schemas with `name` replaced by (or, with `keep_old`, joined by) `document`."""
    others = [doc for file, doc in TREE.items() if keep_old or file != name]
    return [*others, document]


def bar() -> dict[str, Any]:
    return copy.deepcopy(TREE["market_data.bar.v1.json"])


def payload_def(document: dict[str, Any], name: str = "Bar") -> dict[str, Any]:
    definition: dict[str, Any] = document["$defs"][name]
    return definition


def test_the_committed_tree_is_compatible_with_the_lock() -> None:
    assert check_compatibility(TREE.values(), LOCK) == []


def test_the_lock_covers_every_committed_schema() -> None:
    assert set(LOCK["schemas"]) == {schema_key(doc) for doc in TREE.values()}
    assert updated_lock(LOCK, TREE.values()) == LOCK


def test_flatten_names_nested_array_and_map_fields() -> None:
    fields = flatten(TREE["signal.modified.v1.json"])
    assert fields["payload.modifiers"].type == "array"
    assert fields["payload.modifiers[].name"].required
    assert fields["payload.modifiers[].name"].parent == "payload.modifiers[]"
    assert fields["payload.modifiers[].reason"].type == "null|string"
    assert not fields["payload.regime"].required
    assert fields["payload.direction"].enum == ("flat", "long", "short")
    assert fields["produced_at"].type == "string(date-time)"
    raw = flatten(TREE["signal.raw.v1.json"])
    assert raw["payload.features{}"].type == "number"
    audit = flatten(TREE["audit.v1.json"])
    assert audit["payload.new_value"].type == "any"
    assert audit["payload.new_value"].required


# ---- breaking changes without a major bump fail -----------------------------------------------


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0", "1.0.1"])
def test_removing_a_required_field_without_a_major_bump_fails(version: str) -> None:
    document = bar()
    del payload_def(document)["properties"]["close"]
    payload_def(document)["required"].remove("close")
    document["x-version"] = version
    problems = check_compatibility(tree_with("market_data.bar.v1.json", document), LOCK)
    assert any("required field payload.close was removed" in p for p in problems), problems


def test_renaming_a_required_field_fails() -> None:
    document = bar()
    definition = payload_def(document)
    definition["properties"]["close_price"] = definition["properties"].pop("close")
    definition["required"] = [f if f != "close" else "close_price" for f in definition["required"]]
    problems = check_compatibility(tree_with("market_data.bar.v1.json", document), LOCK)
    assert any("payload.close was removed or renamed" in p for p in problems)
    assert any("required field payload.close_price was added" in p for p in problems)


@pytest.mark.parametrize(
    ("field", "new_type", "expected"),
    [
        ("close", {"type": "string"}, "from number to string"),
        ("close", {"anyOf": [{"type": "number"}, {"type": "null"}]}, "from number to null|number"),
        ("ts", {"type": "string"}, "from string(date-time) to string"),
        ("trade_count", {"type": "number"}, "from integer|null to number"),
    ],
)
def test_retyping_a_field_without_a_major_bump_fails(
    field: str, new_type: dict[str, Any], expected: str
) -> None:
    document = bar()
    payload_def(document)["properties"][field] = new_type
    document["x-version"] = "1.1.0"
    problems = check_compatibility(tree_with("market_data.bar.v1.json", document), LOCK)
    assert any(f"payload.{field} was retyped {expected}" in p for p in problems), problems


def test_retyping_an_envelope_field_fails() -> None:
    document = bar()
    document["properties"]["produced_at"] = {"type": "integer"}
    problems = check_compatibility(tree_with("market_data.bar.v1.json", document), LOCK)
    assert any("field produced_at was retyped" in p for p in problems)


def test_making_a_required_field_optional_fails() -> None:
    document = bar()
    payload_def(document)["required"].remove("volume")
    problems = check_compatibility(tree_with("market_data.bar.v1.json", document), LOCK)
    assert any("payload.volume became optional" in p for p in problems)


def test_adding_a_required_field_without_a_major_bump_fails() -> None:
    document = bar()
    payload_def(document)["properties"]["exchange"] = {"type": "string"}
    payload_def(document)["required"].append("exchange")
    document["x-version"] = "1.1.0"
    problems = check_compatibility(tree_with("market_data.bar.v1.json", document), LOCK)
    assert problems == [
        "market_data.bar@1: required field payload.exchange was added without a major version bump"
    ]


def test_removing_an_enum_value_without_a_major_bump_fails() -> None:
    document = copy.deepcopy(TREE["order.v1.json"])
    payload_def(document, "OrderStatus")["enum"].remove("expired")
    problems = check_compatibility(tree_with("order.v1.json", document), LOCK)
    assert any("enum values ['expired'] of payload.status were removed" in p for p in problems)


def test_deleting_an_old_major_from_the_tree_fails() -> None:
    remaining = [doc for file, doc in TREE.items() if file != "fill.v1.json"]
    problems = check_compatibility(remaining, LOCK)
    assert problems == ["fill@1: in the lock but its schema file is gone (old majors stay)"]


def test_lowering_the_version_fails() -> None:
    lock = updated_lock(LOCK, [bar() | {"x-version": "1.3.0"}])
    problems = check_compatibility(tree_with("market_data.bar.v1.json", bar()), lock)
    assert problems == ["market_data.bar@1: version went back from 1.3.0 to 1.0.0"]


# ---- compatible changes pass with the right bump -----------------------------------------------


def test_a_breaking_change_passes_when_it_moves_to_a_new_major() -> None:
    document = bar()
    del payload_def(document)["properties"]["close"]
    payload_def(document)["required"].remove("close")
    payload_def(document)["properties"]["volume"] = {"type": "string"}
    document["x-version"] = "2.0.0"
    document["$id"] = document["$id"].replace(":v1", ":v2")
    tree = tree_with("market_data.bar.v2.json", document, keep_old=True)
    assert check_compatibility(tree, LOCK) == []
    new_lock = updated_lock(LOCK, tree)
    assert "payload.close" in new_lock["schemas"]["market_data.bar@1"]["required"]
    assert "payload.close" not in new_lock["schemas"]["market_data.bar@2"]["required"]
    assert check_compatibility(tree, new_lock) == []


def test_adding_an_optional_field_passes_with_a_minor_bump_and_fails_without() -> None:
    document = bar()
    payload_def(document)["properties"]["exchange"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
    }
    same_version = check_compatibility(tree_with("market_data.bar.v1.json", document), LOCK)
    assert any("bump the minor version" in p for p in same_version)
    patch_only = document | {"x-version": "1.0.1"}
    assert check_compatibility(tree_with("market_data.bar.v1.json", patch_only), LOCK)
    minor = document | {"x-version": "1.1.0"}
    assert check_compatibility(tree_with("market_data.bar.v1.json", minor), LOCK) == []


def test_an_optional_object_with_required_inner_fields_is_a_compatible_addition() -> None:
    document = bar() | {"x-version": "1.1.0"}
    payload_def(document)["properties"]["venue"] = {
        "anyOf": [
            {
                "type": "object",
                "properties": {"mic": {"type": "string"}},
                "required": ["mic"],
            },
            {"type": "null"},
        ],
        "default": None,
    }
    assert check_compatibility(tree_with("market_data.bar.v1.json", document), LOCK) == []


def test_adding_an_enum_value_passes_with_a_minor_bump_and_fails_without() -> None:
    document = copy.deepcopy(TREE["risk_event.v1.json"])
    payload_def(document, "RiskKind")["enum"].append("margin_call")
    unchanged = check_compatibility(tree_with("risk_event.v1.json", document), LOCK)
    assert any("bump the minor version" in p for p in unchanged)
    bumped = document | {"x-version": "1.1.0"}
    assert check_compatibility(tree_with("risk_event.v1.json", bumped), LOCK) == []


def test_a_doc_only_change_passes_without_any_bump() -> None:
    document = bar()
    document["description"] = "Bars, now with better words."
    payload_def(document)["properties"]["close"]["description"] = "Last trade of the bar."
    assert check_compatibility(tree_with("market_data.bar.v1.json", document), LOCK) == []


def test_lock_entry_records_required_fields_with_their_json_types() -> None:
    entry = lock_entry(TREE["fill.v2.json"])
    assert entry["version"] == "2.0.0"
    assert entry["stream"] == "fills.raw"
    assert entry["required"]["payload.quantity"] == "number"
    assert entry["required"]["causation_id"] == "null|string"
    assert entry["enums"]["payload.liquidity"] == ["maker", "taker", "unknown"]
    assert entry["optional"] == {}


# ---- the export refuses to write a breaking change ---------------------------------------------


def test_export_writes_nothing_when_the_lock_forbids_the_models(tmp_path: Path) -> None:
    """A lock that knows a field the models dropped: the export must refuse, not rewrite."""
    root = tmp_path / "data_contracts"
    assert export(root) == []
    lock_path = root / LOCK_FILE
    lock = json.loads(lock_path.read_text("utf-8"))
    lock["schemas"]["fill@1"]["required"]["payload.venue"] = "string"
    lock_path.write_text(render(lock), "utf-8")
    before = {p.name: p.read_text("utf-8") for p in (root / SCHEMAS_DIR).iterdir()}
    problems = export(root)
    assert problems == [
        "fill@1: required field payload.venue was removed or renamed without a major version bump"
    ]
    assert json.loads(lock_path.read_text("utf-8")) == lock
    assert {p.name: p.read_text("utf-8") for p in (root / SCHEMAS_DIR).iterdir()} == before
