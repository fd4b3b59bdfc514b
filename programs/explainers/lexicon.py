"""A human-lexicon reference: each word's rated valence (VADER's, -4 .. 4; Hutto and Gilbert 2014), scaled by 1/4
to an explanation's [-1, 1], 0 where the lexicon does not rate the word.

It asks no model: what it reaches through a program's probe is what word polarities that know only the words
themselves reach, the bar a word-polarity self-explanation has to clear to show it knows more than a lexicon (and
the source of the lexicon demos, :mod:`programs.demos`)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from programs.types import Attribution

LEXICON_SCALE = 4.0  # VADER's valences span -4 .. 4


@cache
def lexicon_valences() -> dict[str, float]:
    """VADER's human-rated word valences (-4 .. 4), read once from the package."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return dict(SentimentIntensityAnalyzer().lexicon)


def lexicon_values(tokens: Sequence[str]) -> tuple[float, ...]:
    """Each token's valence scaled to [-1, 1]; 0 where unrated. The lexicon is lower-case; the study's
    sentences are not."""
    valences = lexicon_valences()
    return tuple(valences.get(token.lower(), 0.0) / LEXICON_SCALE for token in tokens)


class LexiconExplainer:
    def texts(self, tokens: Sequence[str]) -> list[str]:
        """A lexicon explanation asks the model nothing."""
        return []

    def explain(self, tokens: Sequence[str], probe: object = None) -> Attribution:
        return Attribution(lexicon_values(tokens), "lexicon", info={"lexicon": "VADER", "scale": 1 / LEXICON_SCALE})
