"""Sentiment scorers: one protocol, VADER by default, a FinBERT-class model where its weights are.

A scorer turns text into a score in [-1, 1] (negative bearish, positive bullish) and has a
`name` that travels with every score, so scores of two models are never mixed up. VADER ships
its lexicon inside its package, so the default needs no download. `finbert:PATH` loads a
sequence-classification model (e.g. ProsusAI/finbert) from local weights with `transformers`;
when either is missing it is a `ConfigError` saying what to install or download.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tradeos_lab.errors import ConfigError

#: Characters of an article a scorer reads: the headline and the start of the body carry the
#: sentiment; VADER's cost grows with the text.
SCORED_CHARS = 4000


@runtime_checkable
class SentimentScorer(Protocol):
    """Text in, sentiment in [-1, 1] out."""

    name: str

    def score(self, text: str) -> float: ...


class VaderScorer:
    """VADER (Hutto and Gilbert, 2014): a lexicon and rules tuned on social-media text; its
    compound score is already in [-1, 1]."""

    name = "vader"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, text: str) -> float:
        compound = float(self._analyzer.polarity_scores(text[:SCORED_CHARS])["compound"])
        return min(1.0, max(-1.0, compound)) if math.isfinite(compound) else 0.0


class FinbertScorer:
    """A FinBERT-class classifier (labels positive / negative / neutral) from local weights:
    the score is P(positive) - P(negative)."""

    name = "finbert"

    def __init__(self, weights: str | Path) -> None:
        path = Path(weights).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"news_scorer finbert: no model weights at {path} (a directory with config.json "
                "and the weights, e.g. a download of ProsusAI/finbert); use news_scorer=vader "
                "without them"
            )
        try:
            from transformers import pipeline
        except ImportError as e:
            raise ConfigError(
                "news_scorer finbert needs the `transformers` package (and torch), which is not "
                "installed; use news_scorer=vader or install them"
            ) from e
        self._classify: Any = pipeline("text-classification", model=str(path), top_k=None)

    def score(self, text: str) -> float:
        results = self._classify(text[:SCORED_CHARS], truncation=True)
        labels = results[0] if results and isinstance(results[0], list) else results
        probability = {str(r["label"]).lower(): float(r["score"]) for r in labels}
        value = probability.get("positive", 0.0) - probability.get("negative", 0.0)
        return min(1.0, max(-1.0, value))


def open_scorer(spec: str) -> SentimentScorer:
    """The scorer the `news_scorer` setting names: `vader` or `finbert:PATH`."""
    name, _, path = spec.partition(":")
    if name == "vader" and not path:
        return VaderScorer()
    if name == "finbert" and path:
        return FinbertScorer(path)
    raise ConfigError(f"unknown news scorer {spec!r}; choose vader or finbert:PATH")
