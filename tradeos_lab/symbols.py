"""Validation of tickers, names and timeframes: the one place deciding what may reach a store or
SQL, and the one canonical spelling of a symbol and of a name, applied at every entry point (the
CLI, the kill switches, messages, the tiers), so `BTC/USD` and `btc-usd`, or `Momo` and `momo`,
are one instrument and one strategy everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from functools import lru_cache

from tradeos_lab.errors import SymbolError, ValidationError

# ASCII only, so look-alike Unicode (a Cyrillic A) never passes; '.', '-' and '/' for BRK.B,
# BTC-USD, BTC/USD. Twenty characters cover every exchange ticker and crypto pair we know of.
_TICKER = re.compile(r"[A-Z0-9][A-Z0-9.\-/]{0,19}")


def validate_symbol(symbol: object) -> str:
    """The canonical spelling of `symbol` (see `canonical_symbol`); every store, tier and message
    goes through here, so `BTC/USD`, `btc-usd` and `BTC-USD` are one instrument everywhere."""
    return canonical_symbol(symbol)


def _checked_ticker(symbol: str) -> str:
    if not _TICKER.fullmatch(symbol):
        shown = symbol.encode("ascii", "backslashreplace").decode()
        raise SymbolError(
            f"symbol {shown!r} is not a ticker: use A-Z, 0-9, '.', '-' or '/', starting with a "
            "letter or digit"
        )
    return symbol


# The raw text of a symbol as a user or a caller may spell it: the same characters in any case.
# Validated before any normalisation, because `str.upper` maps non-ASCII letters onto ASCII ones
# (U+017F long s -> 'S', U+0131 dotless i -> 'I'): upper-casing first lets `\u017fPY` pass as
# `SPY`.
_RAW_TICKER = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-/]{0,19}")
# Pairs are spelled BASE-QUOTE (BTC-USD); '/' is accepted as the same separator.
PAIR_SEPARATOR = "-"


def canonical_symbol(symbol: object) -> str:
    """The canonical spelling of a ticker or pair: the raw text is validated first (ASCII only),
    then upper-cased, with '/' spelled as the one pair separator '-'. Raises `SymbolError`."""
    if not isinstance(symbol, str):
        raise SymbolError(f"symbol must be a string, got {type(symbol).__name__}")
    return _canonical_ticker(symbol)


# Every message field, key and row passes through these checks, and a running pipeline sees the
# same few symbols and names over and over: each spelling is checked once (a refusal raises and
# is not kept).
_SPELLINGS_KEPT = 4096


@lru_cache(maxsize=_SPELLINGS_KEPT)
def _canonical_ticker(symbol: str) -> str:
    if not symbol:
        raise SymbolError("symbol is empty")
    if len(symbol) > 20:
        raise SymbolError(f"symbol is {len(symbol)} characters long; at most 20 are allowed")
    if not symbol.isascii() or not _RAW_TICKER.fullmatch(symbol):
        shown = symbol.encode("ascii", "backslashreplace").decode()
        raise SymbolError(
            f"symbol {shown!r} is not a ticker: use ASCII letters, digits, '.', '-' or '/', "
            "starting with a letter or digit"
        )
    return _checked_ticker(symbol.upper().replace("/", PAIR_SEPARATOR))


# Names of strategies, services, workers, subscribers, signals, dependencies...: ASCII letters and
# digits first, then also '_', '.', ':', '@', '/' and '-' (`momo:v2`, `tca@2`), at most 64.
_RAW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/\-]{0,63}")


def canonical_name(value: object, what: str = "name") -> str:
    """The canonical spelling of a machine name: the raw text is validated first (ASCII only),
    then lower-cased, so `Momo` and `momo` are one strategy. Raises `ValidationError` naming
    `what` was bad."""
    canonical = _canonical_name(value) if isinstance(value, str) else None
    if canonical is None:
        shown = (
            value.encode("ascii", "backslashreplace").decode() if isinstance(value, str) else value
        )
        raise ValidationError(
            f"bad {what} {shown!r}: 1-64 ASCII letters, digits, '_', '.', ':', '@', '/' or '-', "
            "starting with a letter or digit"
        )
    return canonical


@lru_cache(maxsize=_SPELLINGS_KEPT)
def _canonical_name(value: str) -> str | None:
    """`value` lower-cased, or None when it is not a name."""
    if not value.isascii() or not _RAW_NAME.fullmatch(value):
        return None
    return value.lower()


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
