"""Error texts carry the problem only; what the operator should do is the class's `action`."""

from __future__ import annotations

import pytest

from tradeos_lab import errors


def _all_error_classes() -> list[type[errors.TradeosError]]:
    found: list[type[errors.TradeosError]] = []
    pending: list[type[errors.TradeosError]] = [errors.TradeosError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == errors.__name__]


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda c: c.__name__)
def test_error_text_is_the_message_alone_and_the_action_an_attribute(
    cls: type[errors.TradeosError],
) -> None:
    error = cls("the lake gateway refused the request")
    assert str(error) == "the lake gateway refused the request"
    assert error.action and error.action not in str(error)
    assert repr(error).count("refused") == 1


def test_a_wrapped_error_repeats_no_action() -> None:
    inner = errors.DependencyUnavailable("flags Redis does not answer")
    outer = errors.StoreError(f"the lake owner failed: {inner}")
    assert str(outer) == "the lake owner failed: flags Redis does not answer"
