"""A lab for the apps' tests: the machine's Redis (this test's namespace) and a fresh PostgreSQL
records database, with the kill switches armed."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.lab import Lab
from tradeos_lab.settings import Settings, SharedRedisServerWarning


@pytest.fixture
def apps_lab(server_settings: Settings) -> Iterator[Lab]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(server_settings, start=False)
    operator.arm(lab, actor="user:test", reason="apps test")
    yield lab
    lab.close()
