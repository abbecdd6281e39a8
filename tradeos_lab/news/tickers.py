"""Which tickers an article names: cashtags (`$AAPL`) and the words of a symbol list.

Every ticker comes out in its canonical spelling (`tradeos_lab.symbols`). A pair in the symbol
list (BTC-USD) is also found by its base (`BTC`, `$BTC`), the way news writes about it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from tradeos_lab.errors import SymbolError
from tradeos_lab.symbols import PAIR_SEPARATOR, canonical_symbol

#: Tickers taken from one article at most: a post listing a hundred cashtags says nothing
#: about any one of them.
MAX_TICKERS: Final = 10

# A cashtag is `$` and 1-6 letters (then optionally .X or -X: $BRK.B), not inside a word and not
# a dollar amount ($100).
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:[.\-][A-Za-z]{1,3})?)(?![\w$])")
_WORD_EDGE = r"(?<![\w$.\-/]){}(?![\w/]|[.\-]\w)"


class TickerFinder:
    """Finds the tickers of a text; `symbols` are the ones also spotted without a `$`."""

    def __init__(self, symbols: Iterable[str]) -> None:
        self.symbols = tuple(dict.fromkeys(canonical_symbol(s) for s in symbols))
        aliases: dict[str, str] = {}
        for symbol in self.symbols:
            aliases[symbol] = symbol
            aliases[symbol.replace(PAIR_SEPARATOR, "/")] = symbol
            base, sep, _quote = symbol.partition(PAIR_SEPARATOR)
            if sep:
                aliases.setdefault(base, symbol)
        self._aliases = aliases
        words = sorted(aliases, key=len, reverse=True)
        self._words = (
            re.compile("|".join(_WORD_EDGE.format(re.escape(w)) for w in words)) if words else None
        )

    def find(self, text: str) -> list[str]:
        """The tickers `text` names, in order of first mention, at most `MAX_TICKERS`. Symbol
        words count in capitals only ("SPY", not "spy"); cashtags in any case."""
        found: dict[int, str] = {}
        for match in _CASHTAG.finditer(text):
            tag = match.group(1).upper()
            symbol = self._aliases.get(tag)
            if symbol is None:
                try:
                    symbol = canonical_symbol(tag)
                except SymbolError:
                    continue
            found.setdefault(match.start(), symbol)
        if self._words is not None:
            for match in self._words.finditer(text):
                found.setdefault(match.start(), self._aliases[match.group(0)])
        ordered = [found[i] for i in sorted(found)]
        return list(dict.fromkeys(ordered))[:MAX_TICKERS]
