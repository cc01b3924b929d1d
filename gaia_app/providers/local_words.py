"""Words of a message, as the `local` provider reads them to choose tools and fill in values.

Plain rules, no model: words are compared lowercased, with a plural `s` and a possessive `'s`
taken off, and the small words every sentence has ("the", "get", "please") never count. A
name like `getWeather` or `open_castle-gate` splits into its words.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence

STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be been before being below between
both but by can could did do does doing down during each else few for from get gets got had has
have having he her here hers him his how i if in into is it its itself just let me more most my
no nor not now of off on once only or other our out over own please same set she should so some
such than that the their them then there these they this those through to too under until up
use using very was we were what when where which while who whom why will with would you your
value values return returns given
""".split())

# Words made up of letters (with inner apostrophes or hyphens), and numbers.
_TOKEN_RE = re.compile(r"[^\W\d_](?:[\w'-]*\w)?|-?\d+(?:\.\d+)?")
_NAME_PART_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")

# How far from a mention (in words) a value is looked for.
NEAR = 8
# What a string gets when the message offers no word at all.
FALLBACK_WORDS = ("lantern", "garden", "river", "castle", "meadow", "compass", "harbour", "orchard")


def normal(word: str) -> str:
    """The form words are compared in: lowercase, without a possessive or a plural `s`."""
    word = word.lower()
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def name_words(name: str) -> list[str]:
    """`getWeather`, `open_castle-gate` -> their words, in the compared form."""
    return [normal(part) for part in _NAME_PART_RE.findall(name)]


def content_words(text: str) -> set[str]:
    """The words of `text` that carry meaning, in the compared form."""
    return {normal(token) for token in _TOKEN_RE.findall(text or "")
            if not _NUMBER_RE.fullmatch(token) and normal(token) not in STOPWORDS}


def is_number(token: str) -> bool:
    return bool(_NUMBER_RE.fullmatch(token))


class Vocabulary:
    """The words and numbers of one message, to fill in values from.

    `avoid` holds words that should not become values (a tool's own name: "weather" is what
    was asked about, not where).
    """

    def __init__(self, text: str, avoid: Iterable[str] = ()) -> None:
        self.tokens: list[str] = _TOKEN_RE.findall(text or "")
        self.normals = [normal(token) for token in self.tokens]
        self.avoid = {normal(word) for word in avoid} - STOPWORDS
        self.present = set(self.normals)
        self.positions: dict[str, list[int]] = {}
        for index, key in enumerate(self.normals):
            self.positions.setdefault(key, []).append(index)
        # Worth a value: neither a small word, a number, nor one to avoid.
        self.content = [index for index, token in enumerate(self.tokens)
                        if not is_number(token) and self.normals[index] not in STOPWORDS | self.avoid]
        self.numbers = [index for index, token in enumerate(self.tokens) if is_number(token)]
        # Work that depends only on the keys, done once per keys (a value may be made often).
        self._words: dict[frozenset[str], tuple[list[int], list[int]]] = {}

    def _near(self, keys: Iterable[str], wanted) -> list[int]:
        """Indexes of tokens `wanted` accepts within NEAR words of a mention of one of `keys`,
        nearest first."""
        found: list[tuple[int, int, int]] = []
        for key in keys:
            for at in self.positions.get(key, ())[:64]:
                for index in range(max(0, at - NEAR), min(len(self.tokens), at + NEAR + 1)):
                    if index != at and wanted(index):
                        # Nearest first; at the same distance, the word after the key.
                        found.append((abs(index - at), 0 if index > at else 1, index))
        return list(dict.fromkeys(index for _distance, _side, index in sorted(found)))

    def _is_name(self, index: int) -> bool:
        """Capitalised other than at the start: a name (Paris, Ada)."""
        token = self.tokens[index]
        return index > 0 and token[0].isupper() and token != "I"

    def _candidates(self, keys: frozenset[str]) -> tuple[list[int], list[int]]:
        """(Words near a mention of `keys`, else names near what `avoid` holds; any words)."""
        if keys not in self._words:
            def meaningful(index: int) -> bool:
                return not is_number(self.tokens[index]) and self.normals[index] not in STOPWORDS | self.avoid | keys

            near = self._near(keys, meaningful) or [
                index for index in self._near(self.avoid, meaningful) if self._is_name(index)]
            words = [index for index in self.content if self.normals[index] not in keys]
            names = [index for index in words if self._is_name(index)]
            self._words[keys] = near, names or words
        return self._words[keys]

    def word_for(self, keys: Sequence[str], rng: random.Random) -> str:
        """A word for a value named by `keys`: the one next to where the message mentions
        them, else the name nearest to where it mentions what `avoid` holds (a tool's own
        words: "weather in Paris"), else a name it uses, else any word of it, else a stock word."""
        near, others = self._candidates(frozenset(normal(key) for key in keys) - STOPWORDS)
        if near:
            return self.tokens[near[0]]
        if others:
            return self.tokens[rng.choice(others)]
        return rng.choice(FALLBACK_WORDS)

    def numbers_for(self, keys: Sequence[str]) -> list[float]:
        """The numbers of the message: those next to a mention of `keys` first."""
        keys_set = {normal(key) for key in keys} - STOPWORDS
        near = self._near(keys_set, lambda index: is_number(self.tokens[index]))
        numbers = (float(self.tokens[index]) for index in dict.fromkeys(near + self.numbers[:64]))
        return [number for number in numbers if math.isfinite(number)]

    def mentioned(self, options: Sequence) -> object | None:
        """The first of `options` (enum values) the message mentions, if any."""
        for option in options:
            if isinstance(option, str) and option and all(
                    part in self.present for part in name_words(option) or [normal(option)]):
                return option
        return None
