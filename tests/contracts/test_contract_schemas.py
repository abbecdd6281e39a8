"""The committed data_contracts/ tree: schemas match the models, samples match both."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from tradeos_lab.contracts import MESSAGE_TYPES, STREAM_SCHEMAS, decode, encode, schema_for
from tradeos_lab.contracts.export import (
    LOCK_FILE,
    SCHEMAS_DIR,
    check,
    export,
    generated_schemas,
    load_tree,
    main,
    render,
    schema_filename,
)
from tradeos_lab.contracts.messages import parse_version
from tradeos_lab.contracts.types import SYMBOL_PATTERN, Symbol
from tradeos_lab.errors import SymbolError
from tradeos_lab.keys import Stream
from tradeos_lab.symbols import validate_symbol

_SYMBOL: TypeAdapter[str] = TypeAdapter(Symbol)

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "data_contracts"
SAMPLE_FILES = sorted((ROOT / "samples").glob("*.json"))


def validator(document: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        document, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    root = tmp_path / "data_contracts"
    shutil.copytree(ROOT, root)
    return root


# ---- drift -------------------------------------------------------------------------------------


def test_committed_schemas_are_exactly_what_the_models_export() -> None:
    for name, document in generated_schemas().items():
        committed = (ROOT / SCHEMAS_DIR / name).read_text("utf-8")
        assert committed == render(document), f"{name} drifted: run the export"


def test_the_committed_tree_passes_the_export_check() -> None:
    assert check(ROOT) == []


def test_export_check_fails_when_a_schema_file_drifts(tree_copy: Path) -> None:
    path = tree_copy / SCHEMAS_DIR / "fill.v2.json"
    document = json.loads(path.read_text("utf-8"))
    document["$defs"]["Fill"]["properties"]["fee"]["type"] = "string"
    path.write_text(render(document), "utf-8")
    problems = check(tree_copy)
    assert any("fill.v2.json differs from the models" in p for p in problems)
    assert any("payload.fee was retyped from number to string" in p for p in problems)
    assert main(["--check", "--root", str(tree_copy)]) == 1


def test_export_check_fails_when_a_schema_file_is_missing_or_misnamed(tree_copy: Path) -> None:
    folder = tree_copy / SCHEMAS_DIR
    (folder / "order.v1.json").rename(folder / "order.v3.json")
    problems = check(tree_copy)
    assert any("order.v1.json is missing" in p for p in problems)
    assert any("order.v3.json holds order@1; name it order.v1.json" in p for p in problems)


def test_export_check_fails_when_the_lock_is_stale(tree_copy: Path) -> None:
    lock_path = tree_copy / LOCK_FILE
    lock = json.loads(lock_path.read_text("utf-8"))
    del lock["schemas"]["position@1"]
    lock_path.write_text(render(lock), "utf-8")
    assert any(f"{LOCK_FILE} does not match" in p for p in check(tree_copy))


def test_export_writes_a_fresh_tree_that_then_passes_its_check(tmp_path: Path) -> None:
    root = tmp_path / "data_contracts"
    assert export(root) == []
    assert sorted(p.name for p in (root / SCHEMAS_DIR).iterdir()) == sorted(generated_schemas())
    assert check(root) == []
    committed_lock = json.loads((ROOT / LOCK_FILE).read_text("utf-8"))
    assert json.loads((root / LOCK_FILE).read_text("utf-8")) == committed_lock


def test_export_runs_as_a_module_and_its_check_exit_code_reports_drift(tree_copy: Path) -> None:
    command = [sys.executable, "-m", "tradeos_lab.contracts.export", "--check", "--root"]
    ok = subprocess.run([*command, str(tree_copy)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    (tree_copy / SCHEMAS_DIR / "audit.v1.json").write_text("{}\n", "utf-8")
    bad = subprocess.run([*command, str(tree_copy)], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "audit.v1.json" in bad.stderr


# ---- the schemas themselves --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(generated_schemas()))
def test_every_schema_is_valid_draft_2020_12_with_its_headers(name: str) -> None:
    document = json.loads((ROOT / SCHEMAS_DIR / name).read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(document)
    cls = schema_for(document["x-schema"], parse_version(document["x-version"])[0])
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"].endswith(f"{cls.SCHEMA}:v{cls.major()}")
    assert document["x-version"] == cls.VERSION
    assert document["x-stream"] == cls.STREAM.value
    assert name == schema_filename(cls.SCHEMA, cls.major())
    envelope = {"schema", "version", "message_id", "correlation_id", "causation_id"}
    assert envelope | {"producer", "produced_at", "payload"} == set(document["required"])


def test_every_message_type_has_a_committed_schema() -> None:
    names = {p.name for p in (ROOT / SCHEMAS_DIR).glob("*.json")}
    assert {schema_filename(c.SCHEMA, c.major()) for c in MESSAGE_TYPES} <= names


# ---- golden samples ----------------------------------------------------------------------------


def load_samples(path: Path) -> list[dict[str, Any]]:
    documents = json.loads(path.read_text("utf-8"))
    assert isinstance(documents, list)
    assert documents, f"{path.name} holds no sample"
    return documents


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_golden_sample_validates_against_its_json_schema(path: Path) -> None:
    schema = json.loads((ROOT / SCHEMAS_DIR / path.name).read_text("utf-8"))
    check_one = validator(schema)
    for document in load_samples(path):
        check_one.validate(document)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_golden_sample_decodes_with_the_models_and_reencodes_identically(
    path: Path,
) -> None:
    for document in load_samples(path):
        stream = Stream(json.loads((ROOT / SCHEMAS_DIR / path.name).read_text())["x-stream"])
        message = decode(json.dumps(document), stream=stream)
        assert schema_filename(message.SCHEMA, message.major()) == path.name
        assert json.loads(encode(message)) == document


def test_every_stream_and_every_schema_has_golden_samples() -> None:
    sampled = {p.name for p in SAMPLE_FILES}
    assert {schema_filename(c.SCHEMA, c.major()) for c in MESSAGE_TYPES} <= sampled
    covered = {
        Stream(json.loads((ROOT / SCHEMAS_DIR / n).read_text())["x-stream"]) for n in sampled
    }
    assert covered == set(Stream) == set(STREAM_SCHEMAS)


def test_golden_samples_form_causal_chains() -> None:
    """Every causation id points at a sample of the same correlation, produced no later."""
    by_id: dict[str, dict[str, Any]] = {}
    for path in SAMPLE_FILES:
        for document in load_samples(path):
            by_id[document["message_id"]] = document
    linked = 0
    for document in by_id.values():
        parent_id = document["causation_id"]
        if parent_id is None:
            continue
        parent = by_id[parent_id]
        assert parent["correlation_id"] == document["correlation_id"]
        assert parent["produced_at"] <= document["produced_at"]
        linked += 1
    assert linked >= 8  # bar -> raw -> modified -> intent -> order -> fills -> position


@pytest.mark.parametrize(
    ("schema", "change"),
    [
        ("intent", {"order_type": "limit", "limit_price": None}),
        ("intent", {"order_type": "market"}),  # the sample carries a limit price
        ("intent", {"side": "hold"}),
        ("market_data.bar", {"symbol": "AAPL'; DROP TABLE x;--"}),
        ("signal.raw", {"features": {"bad key": 1.0}}),
        ("fill", {"price": "172.97"}),
        ("fill", {"surprise": 1}),
    ],
)
def test_the_json_schema_and_the_models_both_reject_bad_samples(
    schema: str, change: dict[str, Any]
) -> None:
    path = ROOT / "samples" / f"{schema}.v1.json"
    document = load_samples(path)[0]
    document["payload"] = document["payload"] | change
    schema_doc = json.loads((ROOT / SCHEMAS_DIR / path.name).read_text("utf-8"))
    assert list(validator(schema_doc).iter_errors(document))
    with pytest.raises(ValueError):  # ContractError is a ValueError
        decode(json.dumps(document))


@given(text=st.text(st.characters(blacklist_characters="\n"), max_size=24))
def test_a_symbol_the_contracts_accept_is_one_the_schema_pattern_admits_in_canonical_spelling(
    text: str,
) -> None:
    try:
        _SYMBOL.validate_python(text)
        accepted = True
    except (ValueError, SymbolError):
        accepted = False
    # The schema admits '/' (v1 readers may still send it); the contracts take only the one
    # canonical spelling, upper-case with '-' between the two legs of a pair.
    assert accepted == (re.search(SYMBOL_PATTERN, text) is not None and "/" not in text)


@given(text=st.from_regex(r"\A[A-Z0-9][A-Z0-9./-]{0,19}\Z"))
def test_every_string_the_symbol_pattern_admits_has_one_canonical_spelling(text: str) -> None:
    assert validate_symbol(text) == text.replace("/", "-")


def test_load_tree_reads_every_committed_schema() -> None:
    assert set(load_tree(ROOT)) == {p.name for p in (ROOT / SCHEMAS_DIR).glob("*.json")}
