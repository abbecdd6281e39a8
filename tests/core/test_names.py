"""One canonical spelling of symbols and names: validated as typed (ASCII only), then normalised."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradeos_lab.cli import main
from tradeos_lab.errors import SymbolError, ValidationError
from tradeos_lab.symbols import canonical_name, canonical_symbol

LOOK_ALIKES = ["\u017fPY", "\u0131BM", "\u0410APL", "AAPL\u200b", "\uff21\uff21PL"]


def test_a_pair_has_one_spelling_whatever_the_separator_and_case() -> None:
    assert {canonical_symbol(s) for s in ("BTC-USD", "BTC/USD", "btc/usd", "Btc-Usd")} == {
        "BTC-USD"
    }
    assert canonical_symbol("brk.b") == "BRK.B"


@pytest.mark.parametrize("raw", LOOK_ALIKES)
def test_non_ascii_symbols_are_refused_before_they_are_upper_cased(raw: str) -> None:
    with pytest.raises(SymbolError, match="not a ticker"):
        canonical_symbol(raw)


@pytest.mark.parametrize("raw", ["", "-AAPL", "AA PL", "A" * 21, "AAPL;", None, 42])
def test_malformed_symbols_raise_symbol_error(raw: object) -> None:
    with pytest.raises(SymbolError):
        canonical_symbol(raw)


def test_names_are_lower_case_and_accept_what_messages_accept() -> None:
    assert canonical_name("Momentum") == canonical_name("momentum") == "momentum"
    assert canonical_name("momo:v2") == "momo:v2"
    assert canonical_name("tca@2/eu-west_1.a") == "tca@2/eu-west_1.a"


@pytest.mark.parametrize(
    "raw", ["", ":lead", "has space", "x" * 65, "caf\u00e9", "\u0131ngestion", "a|b", None, 3]
)
def test_bad_names_raise_validation_error_naming_what(raw: object) -> None:
    with pytest.raises(ValidationError, match="strategy"):
        canonical_name(raw, "strategy")


_TICKER_CHARS = st.sampled_from("ABCXYZabcxyz0189./-")


@given(st.builds(str.__add__, st.sampled_from("ABCxyz09"), st.text(_TICKER_CHARS, max_size=19)))
def test_canonical_symbols_are_fixed_points(raw: str) -> None:
    once = canonical_symbol(raw)
    assert canonical_symbol(once) == once
    assert once == raw.upper().replace("/", "-")


@given(st.text(min_size=1, max_size=20).filter(lambda t: not t.isascii()))
def test_any_non_ascii_text_is_refused_as_symbol_and_as_name(raw: str) -> None:
    with pytest.raises(SymbolError):
        canonical_symbol(raw)
    with pytest.raises(ValidationError):
        canonical_name(raw)


@pytest.mark.parametrize("raw", ["\u017fPY", "\u0131BM"])
def test_the_cli_refuses_a_look_alike_symbol_instead_of_upper_casing_it(
    raw: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", str(tmp_path / "lab"), "lake", "gaps", raw])
    assert exit_info.value.code == 1
    assert "not a ticker" in capsys.readouterr().err


def test_a_name_in_a_message_is_spelled_like_everywhere_else() -> None:
    from tradeos_lab.contracts import Audit

    audit = Audit(
        actor="user:ops",
        action="Kill_Switch.Engaged",
        target="kill:strategy:momo",
        old_value=None,
        new_value=None,
        reason="drawdown",
    )
    assert audit.action == "kill_switch.engaged"
    with pytest.raises(ValueError, match="ASCII"):
        Audit(
            actor="user:ops",
            action="kill_switch.\u0131",
            target="kill:global:*",
            old_value=None,
            new_value=None,
            reason="x",
        )
