"""Validation of tickers and timeframes: the one place deciding what may reach a store or SQL."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

from tradeos_lab.errors import SymbolError, ValidationError

# ASCII only, so look-alike Unicode (a Cyrillic A) never passes; '.', '-' and '/' for BRK.B,
# BTC-USD, BTC/USD. Twenty characters cover every exchange ticker and crypto pair we know of.
_TICKER = re.compile(r"[A-Z0-9][A-Z0-9.\-/]{0,19}")


def validate_symbol(symbol: object) -> str:
    """Return `symbol` unchanged when it is a valid ticker, raise `SymbolError` otherwise."""
    if not isinstance(symbol, str):
        raise SymbolError(f"symbol must be a string, got {type(symbol).__name__}")
    if not symbol:
        raise SymbolError("symbol is empty")
    if len(symbol) > 20:
        raise SymbolError(f"symbol is {len(symbol)} characters long; at most 20 are allowed")
    if not _TICKER.fullmatch(symbol):
        shown = symbol.encode("ascii", "backslashreplace").decode()
        raise SymbolError(
            f"symbol {shown!r} is not a ticker: use A-Z, 0-9, '.', '-' or '/', starting with a "
            "letter or digit"
        )
    return symbol


def validate_symbols(symbols: str | Iterable[str]) -> list[str]:
    """One ticker or many, each checked by `validate_symbol`; order kept, repeats dropped (a
    filter or a plan needs each symbol once)."""
    chosen = [symbols] if isinstance(symbols, str) else symbols
    return list(dict.fromkeys(validate_symbol(s) for s in chosen))


class Timeframe(StrEnum):
    """Bar resolutions the workbench stores; the value is the canonical spelling."""

    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"

    @property
    def seconds(self) -> int:
        return _SECONDS[self]

    @classmethod
    def parse(cls, value: object) -> Timeframe:
        """Accept a `Timeframe` or its spelling; raise `ValidationError` naming the choices."""
        if isinstance(value, Timeframe):
            return value
        try:
            return cls(str(value))
        except ValueError:
            choices = ", ".join(t.value for t in cls)
            raise ValidationError(f"unknown timeframe {value!r}; choose one of {choices}") from None


_SECONDS = {
    Timeframe.M1: 60,
    Timeframe.M5: 300,
    Timeframe.M15: 900,
    Timeframe.H1: 3600,
    Timeframe.D1: 86400,
}
