"""pyproject.toml and environment.yml install the same packages with the same version ranges."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# conda-forge spells a few packages differently from PyPI
CONDA_NAMES = {"redis-py": "redis", "prometheus_client": "prometheus-client"}


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(.*)", requirement).groups()  # type: ignore[union-attr]
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_pins_what_pyproject_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, spec = _split(dep)
            conda[CONDA_NAMES.get(name, name)] = spec
        else:
            for pip_dep in dep["pip"]:
                if not pip_dep.startswith("-e"):
                    name, spec = _split(pip_dep)
                    conda[name] = spec
    assert any(isinstance(d, dict) and '-e ".[dev]"' in d["pip"] for d in env["dependencies"])
    for name, spec in wanted.items():
        assert name in conda, f"{name} is missing from environment.yml"
        assert conda[name] == spec, f"{name}: pyproject {spec!r}, environment.yml {conda[name]!r}"
    assert conda["python"].startswith(">=3.11")
