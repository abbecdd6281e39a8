"""Regenerate `data_contracts/schemas/` from the models and keep `compat.lock.json` honest.

    python -m tradeos_lab.contracts.export           # write schemas and lock (refuses breaks)
    python -m tradeos_lab.contracts.export --check   # exit 1 on drift or an incompatible change

The models are the source; the committed JSON Schemas are their published form for consumers
that are not Python. Old majors' files are never touched: they stay in the tree and in the lock.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tradeos_lab.contracts.compat import check_compatibility, schema_key, updated_lock
from tradeos_lab.contracts.messages import MESSAGE_TYPES, Envelope, parse_version
from tradeos_lab.errors import ContractError

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS_DIR = "schemas"
LOCK_FILE = "compat.lock.json"


def schema_filename(name: str, major: int) -> str:
    return f"{name}.v{major}.json"


def json_schema(cls: type[Envelope[Any]]) -> dict[str, Any]:
    """The published JSON Schema (draft 2020-12) of one message class."""
    generated = cls.model_json_schema(by_alias=True, mode="validation")
    generated.pop("title", None)
    major = cls.major()
    doc: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:tradeos-lab:data-contracts:{cls.SCHEMA}:v{major}",
        "title": f"{cls.SCHEMA} v{major}",
        "description": generated.pop("description", ""),
        "x-schema": cls.SCHEMA,
        "x-version": cls.VERSION,
        "x-stream": cls.STREAM.value,
        **generated,
    }
    _close_maps(doc)
    return doc


def generated_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema document, for every message class of this package."""
    return {schema_filename(c.SCHEMA, c.major()): json_schema(c) for c in MESSAGE_TYPES}


def render(doc: Mapping[str, Any]) -> str:
    """The committed text of a JSON document: stable, diff-friendly."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def default_root() -> Path:
    """`data_contracts/` of the source tree, else of the working directory."""
    beside_package = Path(__file__).resolve().parents[2] / "data_contracts"
    return beside_package if beside_package.is_dir() else Path.cwd() / "data_contracts"


def load_tree(root: Path) -> dict[str, dict[str, Any]]:
    """File name -> schema document of every committed schema that parses."""
    return _read_tree(root)[0]


def _read_tree(root: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Well-formed schema documents by file name, and a problem for each malformed file."""
    folder = root / SCHEMAS_DIR
    docs: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text("utf-8"))
            schema_filename(str(doc["x-schema"]), parse_version(str(doc["x-version"]))[0])
        except (ValueError, KeyError, TypeError, ContractError):
            problems.append(
                f"{SCHEMAS_DIR}/{path.name} is not a schema with x-schema and x-version"
            )
            continue
        docs[path.name] = doc
    return docs, problems


def load_lock(root: Path) -> dict[str, Any]:
    path = root / LOCK_FILE
    return json.loads(path.read_text("utf-8")) if path.is_file() else {"schemas": {}}


def check(root: Path) -> list[str]:
    """Every way the tree disagrees with the models or the lock; empty when all is well."""
    tree, problems = _read_tree(root)
    for name, doc in generated_schemas().items():
        path = root / SCHEMAS_DIR / name
        if not path.is_file():
            problems.append(f"{SCHEMAS_DIR}/{name} is missing: run the export")
        elif path.read_text("utf-8") != render(doc):
            problems.append(f"{SCHEMAS_DIR}/{name} differs from the models: run the export")
    for name, doc in tree.items():
        expected = schema_filename(doc["x-schema"], parse_version(doc["x-version"])[0])
        if name != expected:
            problems.append(f"{SCHEMAS_DIR}/{name} holds {schema_key(doc)}; name it {expected}")
    lock = load_lock(root)
    problems.extend(check_compatibility(tree.values(), lock))
    if updated_lock(lock, tree.values()) != lock:
        problems.append(f"{LOCK_FILE} does not match the schemas: run the export")
    return problems


def export(root: Path) -> list[str]:
    """Write the models' schemas and the lock; write nothing and return problems on a break."""
    generated = generated_schemas()
    committed, problems = _read_tree(root)
    tree = {**committed, **generated}
    lock = load_lock(root)
    problems += check_compatibility(tree.values(), lock)
    if problems:
        return problems
    folder = root / SCHEMAS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in generated.items():
        (folder / name).write_text(render(doc), "utf-8")
    (root / LOCK_FILE).write_text(render(updated_lock(lock, tree.values())), "utf-8")
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tradeos_lab.contracts.export", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 on drift or a break"
    )
    parser.add_argument("--root", type=Path, default=None, help="the data_contracts directory")
    args = parser.parse_args(argv)
    root: Path = args.root or default_root()
    problems = check(root) if args.check else export(root)
    for problem in problems:
        print(f"data_contracts: {problem}", file=sys.stderr)
    if problems:
        return 1
    done = "schemas and lock match the models" if args.check else "schemas and lock written"
    print(f"data_contracts: {done} ({root})")
    return 0


def _close_maps(node: Any) -> None:
    """A map with patterned keys admits no other keys (pydantic leaves that open)."""
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_maps(value)


if __name__ == "__main__":
    raise SystemExit(main())
