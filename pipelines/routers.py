"""Routers: operators that label each query, for :class:`~ragkit.pipelines.Route`.

A router (``kind = "router"``) writes one label per query into ``state.values["label"]``;
``Route`` splits the batch by label, runs each label's branch on its part and merges the
results back in the original order (Modular RAG's "conditional" pattern, Gao et al.,
arXiv 2407.21059, section on routing).

* :class:`RuleRouter` (``rule_router``): ordered rules on the query text (regex, number of
  words, keywords); the first rule that matches gives the label.
* :class:`ScoreRouter` (``score_router``): a threshold on a feature of the rankings already
  in the state (top-1 score, top-1 minus top-2 gap, or the gap relative to the top-1
  score), so a cheap first retriever decides whether a query needs the expensive branch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from functools import cached_property, lru_cache
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ragkit.errors import DataError, ParamError
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.pipelines._learned import LearnedThreshold, threshold_or_learn_problem
from ragkit.registry import register
from ragkit.types import State

__all__ = ["RuleRouter", "ScoreRouter", "Rule", "ranking_feature"]

_ASCII_WORD = re.compile(r"\w+")
_SEP = "\0"  # joins a batch's texts: a non-word character that no keyword pattern crosses


@lru_cache(maxsize=1)
def _word_parts() -> tuple[str, str, re.Pattern[str]]:
    """``(ideographs, marks, word)``: the character-class bodies of the ideographs and kana and of the combining
    marks, and the pattern of a word: an ideograph or kana alone (a run of them is a sentence, not a word:
    Chinese and Japanese are written unspaced), or a run of word characters (``\\w``: letters, digits, ``_``)
    and combining marks (Devanagari vowel signs, a decomposed accent), as BM25's ``unicode`` tokenizer splits
    words (which also splits at ``_``).  Built on first use (the marks' ranges take a pass over the code points,
    ~0.3 s)."""
    from ragkit.retrievers.bm25 import _IDEOGRAPHS, _char_ranges

    marks = _char_ranges()[0]
    return _IDEOGRAPHS, marks, re.compile(rf"[{_IDEOGRAPHS}]|(?:[^\W{_IDEOGRAPHS}]|[{marks}])+")


def _word(ascii: bool = False) -> re.Pattern[str]:
    """The pattern of a word (:func:`_word_parts`); ``ascii``: one that reads only ASCII texts, as that one reads
    them (``\\w+``: an ASCII text holds no ideograph and no mark)."""
    return _ASCII_WORD if ascii else _word_parts()[2]


class Rule(Params):
    """One routing rule: every condition given must hold (AND); at least one is required."""

    label: str = Field(min_length=1, description="Label given to the queries this rule matches.")
    regex: str | None = Field(default=None, description="Python regular expression searched in the query text.")
    keywords: list[str] | None = Field(default=None, min_length=1, description=(
        "Matches when any of these words or phrases occurs as whole words; a keyword of several words "
        "('heart disease', 'covid-19') matches those words in sequence, whatever non-word characters "
        "separate them in the query."))
    min_words: int | None = Field(default=None, ge=0, description="Matches queries with at least this many words.")
    max_words: int | None = Field(default=None, ge=0, description="Matches queries with at most this many words.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"regex {v!r} does not compile: {e}") from None
        return v

    @field_validator("keywords")
    @classmethod
    def _has_words(cls, v: list[str] | None) -> list[str] | None:
        empty = [k for k in v or [] if not re.search(r"\w", k)]
        if empty:
            raise ValueError(f"keywords {empty} contain no word characters (letters, digits, '_'), so they can never "
                             "match; keywords match whole words")
        return v

    @model_validator(mode="after")
    def _has_condition(self) -> "Rule":
        if self.regex is None and self.keywords is None and self.min_words is None and self.max_words is None:
            raise ValueError(f"rule {self.label!r} has no condition; give regex, keywords, min_words or max_words")
        if self.min_words is not None and self.max_words is not None and self.min_words > self.max_words:
            raise ValueError(f"rule {self.label!r}: min_words ({self.min_words}) > max_words ({self.max_words}) "
                             "can never match")
        return self


class RuleRouterParams(Params):
    rules: list[Rule] = Field(min_length=1, description="Ordered rules; the first that matches gives the label.")
    default: str = Field(default="default", min_length=1, description="Label of queries no rule matches.")
    ignore_case: bool = Field(default=True, description="Case-insensitive regex and keyword matching.")


@register
class RuleRouter(Operator):
    """Label queries by ordered rules on their text (regex, word count, keywords).

    Each rule's conditions are ANDed; rules are tried in order and the first match wins;
    unmatched queries get ``default``.  A word is a run of letters, digits, ``_`` and combining
    marks, or a single Chinese or Japanese character (ideograph or kana: that script is written
    unspaced, so ``"がん細胞の増殖"`` is 7 words), as BM25's ``unicode`` tokenizer splits words.
    A keyword matches whole words, and a keyword of several words (``"heart disease"``,
    ``"covid-19"``) matches them in sequence, separated by any non-word characters
    (``"covid 19"``, ``"COVID-19"``); a keyword of ideographs or kana (``"細胞"``) matches
    them inside unspaced text, with or without spaces between them.  Writes
    ``state.values["label"]`` (list of str, length n_q); rankings are untouched.
    Rule-based routing is one of the routing kinds listed by Modular RAG (Gao et al.,
    arXiv 2407.21059).

    Examples
    --------
    >>> from ragkit.types import State
    >>> r = RuleRouter(rules=[{"label": "short", "max_words": 3}], default="long")
    >>> r(State(["gene expression", "what causes the flu in winter"])).values["label"]
    ['short', 'long']
    >>> RuleRouter(rules=[{"label": "covid", "keywords": ["covid-19"]}]).labels(["COVID 19 vaccines", "covid"])
    ['covid', 'default']
    """

    name = "rule_router"
    kind = "router"
    Params = RuleRouterParams
    params: RuleRouterParams
    stateless = True
    example = {"rules": [{"label": "short", "max_words": 6}, {"label": "cells", "keywords": ["cell", "cells"]}],
               "default": "other"}

    def possible_labels(self) -> list[str]:
        """Every label this router can give: the rules' labels, then ``default``; less those of rules
        (or the default) that earlier rules always match first (:meth:`shadowed`)."""
        shadowed = self._shadowed
        rules = self.params.rules
        labels = [r.label for i, r in enumerate(rules) if i not in shadowed]
        if len(rules) not in shadowed:
            labels.append(self.params.default)
        return list(dict.fromkeys(labels))

    def label_param(self, label: str) -> str | None:
        """The parameter that gives ``label`` (``rules[0].label``, or ``default`` for the label of the queries no
        rule matches), for errors that point at where a label is written; ``None`` for a label it never gives."""
        i = next((i for i, r in enumerate(self.params.rules) if r.label == label), None)
        if i is not None:
            return f"rules[{i}].label"
        return "default" if label == self.params.default else None

    def shadowed(self) -> dict[str, str]:
        """The labels this router can never give, each with why: every rule giving it (or, for ``default``,
        the fall-through) matches only queries that earlier rules already match.

        Only what can be decided from the rules themselves counts (conservatively: a label this
        reports can never be given; one it does not report may still be unreachable): a rule is
        covered by the earlier rules that hold each of its regex / keyword conditions too (the same
        regex, a superset of its keywords, or none) and whose word-count ranges together hold its range.
        """
        rules = self.params.rules
        out: dict[str, str] = {}
        reachable = set(self.possible_labels())
        for j, by in self._shadowed.items():
            label = rules[j].label if j < len(rules) else self.params.default
            if label in reachable:  # another rule (or the default) gives it
                continue
            what = (f"rules[{j}] {_shown(rules[j])} never matches" if j < len(rules) else
                    f"default ({label!r}) is never given")
            earlier = ", ".join(f"rules[{i}] {_shown(rules[i])}" for i in by)
            out[label] = "; ".join(filter(None, [out.get(label), (
                f"{what}: the earlier {earlier} {'matches' if len(by) == 1 else 'match'} every query it would "
                f"{'match' if j < len(rules) else 'get'} first")]))
        return out

    @cached_property
    def _shadowed(self) -> dict[int, list[int]]:
        """Rules (by index; ``len(rules)`` for the default) that earlier rules always match first, each with
        those earlier rules."""
        rules = self.params.rules
        out: dict[int, list[int]] = {}
        for j in range(len(rules) + 1):
            rule = rules[j] if j < len(rules) else None
            lo = (rule.min_words or 0) if rule else 0
            hi = _word_max(rule) if rule is not None else _NO_MAX
            spans = sorted((rules[i].min_words or 0, _word_max(rules[i]), i) for i in range(j)
                           if _implies(rule, rules[i]))
            by: list[int] = []
            reach = lo  # reach: the fewest words not yet matched by an earlier rule, from lo up
            for a, b, i in spans:
                if a > reach or reach > hi:
                    break
                if b >= reach:
                    by.append(i)
                    reach = b + 1
            if reach > hi:
                out[j] = by
        return out

    @cached_property
    def _compiled(self) -> list[tuple[str, re.Pattern | None, tuple[str, ...] | None, int | None, int | None]]:
        flags = re.IGNORECASE if self.params.ignore_case else 0
        return [(r.label, None if r.regex is None else re.compile(r.regex, flags),
                 None if r.keywords is None else tuple(r.keywords), r.min_words, r.max_words)
                for r in self.params.rules]

    def labels(self, texts: list[str]) -> list[str]:
        """The label of each text.

        Word counts and keywords are matched on the whole batch at once (one scan of the
        texts joined by a separator; the ASCII texts and the others apart, the ASCII ones with
        the plain ``\\w`` patterns, which read them as the full ones do, several times faster);
        a rule's ``regex`` is searched text by text, since a user's pattern could match across
        the separator.
        """
        n = len(texts)
        # the texts as written (str.lower turns some letters into two characters, e.g. 'İ' into 'i' and a
        # combining dot, which splits a word): case is ignored by the keyword pattern's IGNORECASE
        plain = np.fromiter(map(str.isascii, texts), bool, n)
        parts = [(rows, ascii, *_join(texts if len(rows) == n else [texts[i] for i in rows.tolist()]))
                 for rows, ascii in ((np.flatnonzero(plain), True), (np.flatnonzero(~plain), False)) if len(rows)]

        def counts(pattern: Callable[[bool], re.Pattern[str]]) -> np.ndarray:
            out = np.zeros(n, np.int64)
            for rows, ascii, joined, starts in parts:
                out[rows] = _match_counts(pattern(ascii), joined, starts)
            return out

        ignore_case = self.params.ignore_case
        n_words: np.ndarray | None = None  # counted once, for the first rule that reads them
        labels = np.full(n, None, dtype=object)
        open_ = np.ones(n, bool)
        for label, rx, kw, lo, hi in self._compiled:
            m = open_.copy()
            if lo is not None or hi is not None:
                if n_words is None:
                    n_words = counts(_word)
                if lo is not None:
                    m &= n_words >= lo
                if hi is not None:
                    m &= n_words <= hi
            if kw is not None:
                m &= counts(functools.partial(_keyword_pattern, kw, ignore_case)) > 0
            if rx is not None:
                m &= np.fromiter((rx.search(t) is not None for t in texts), bool, n)
            labels[m] = label
            open_ &= ~m
        labels[open_] = self.params.default
        return labels.tolist()

    def _call(self, state: State) -> State:
        out = state.copy()
        out.values["label"] = self.labels(list(state.queries))
        return out


_NO_MAX = 1 << 62  # a word-count bound above any query's


def _word_max(rule: Rule) -> int:
    """The most words a query ``rule`` matches can have (:data:`_NO_MAX`: no bound)."""
    return _NO_MAX if rule.max_words is None else rule.max_words


def _implies(rule: Rule | None, earlier: Rule) -> bool:
    """Whether every query ``rule`` (``None``: any query) matches meets ``earlier``'s regex and keyword
    conditions (its word counts aside): ``earlier`` has none, or the same regex, or a superset of the keywords."""
    if earlier.regex is not None and (rule is None or rule.regex != earlier.regex):
        return False
    if earlier.keywords is not None and (rule is None or rule.keywords is None
                                         or not set(rule.keywords) <= set(earlier.keywords)):
        return False
    return True


def _shown(rule: Rule) -> str:
    """A rule as it is written in YAML, e.g. ``{label: short, max_words: 4}``."""
    given = rule.model_dump(exclude_none=True)
    return "{" + ", ".join(f"{k}: {'[' + ', '.join(v) + ']' if isinstance(v, list) else v}"
                           for k, v in given.items()) + "}"


@lru_cache(maxsize=256)
def _keyword_pattern(keywords: tuple[str, ...], ignore_case: bool, ascii: bool = False) -> re.Pattern[str]:
    """One pattern matching any keyword as whole words: each keyword's words (:func:`_word_parts`) in
    sequence, separated by non-word characters (not the batch separator), e.g. ``covid-19`` ->
    ``covid[^\\w\\0]+19``; next to an ideograph or kana the separator may be empty (``細胞`` -> ``細[^\\w\\0]*胞``,
    found in unspaced ``がん細胞の``), and an ideograph or kana bounds a word, on either side (``cell`` is found in
    ``がんcellの`` and ``細胞`` in ``iPS細胞の``, as BM25's ``unicode`` tokenizer splits them); the punctuation a
    keyword starts or ends with is matched as written (``c++``, ``c#`` and ``.net`` are not ``c`` and ``net``);
    ``ignore_case``: Unicode case-insensitive (``re.IGNORECASE``, as a rule's ``regex``).  ``ascii``: a pattern
    that reads only ASCII texts, as the full one reads them (``\\w`` words and bounds: where they differ, an
    ideograph or a mark, the keyword holds a character no ASCII text has), without the full one's large character
    classes (~4x slower to scan)."""
    if ascii:
        ideograph, word, sep, inside, marks = None, _ASCII_WORD, r"[^\w\0]", r"\w", ""  # (no free end: no marks read)
    else:
        ideographs, marks, word = _word_parts()
        ideograph = re.compile(f"[{ideographs}]")
        sep = rf"[^\w\0{marks}]"
        inside = rf"[^\W{ideographs}]|[{marks}]"  # a character inside a word that an ideograph does not bound
    phrases = set()
    for k in keywords:
        words = list(word.finditer(k))
        core = re.escape(words[0].group())
        for a, b in zip(words, words[1:]):
            cjk = ideograph is not None and (ideograph.fullmatch(a.group()) or ideograph.fullmatch(b.group()))
            core += sep + ("*" if cjk else "+") + re.escape(b.group())
        lead, trail = k[:words[0].start()].lstrip(), k[words[-1].end():].rstrip()
        # an end at an ideograph is a word's end whatever touches it (細胞 in iPS細胞の), but for a combining mark
        # after it, which makes another character of it (は + U+309A is ぱ, decomposed): bounded elsewhere only
        free_start = not lead and ideograph is not None and ideograph.fullmatch(words[0].group())
        free_end = not trail and ideograph is not None and ideograph.fullmatch(words[-1].group())
        phrases.add(("" if free_start else rf"(?<!{inside})") + re.escape(lead) + core + re.escape(trail)
                    + (rf"(?![{marks}])" if free_end else rf"(?!{inside})"))
    return re.compile("|".join(sorted(phrases, key=lambda p: (-len(p), p))), re.IGNORECASE if ignore_case else 0)


def _join(texts: list[str]) -> tuple[str, np.ndarray]:
    """The texts joined by ``_SEP``, and each text's start offset in the joined string."""
    lens = np.fromiter(map(len, texts), np.int64, len(texts)) + 1
    return _SEP.join(texts), np.cumsum(lens) - lens


def _match_counts(pattern: re.Pattern, joined: str, starts: np.ndarray) -> np.ndarray:
    """Number of (non-overlapping) matches of ``pattern`` in each text of ``_join``'s string."""
    pos = np.fromiter((m.start() for m in pattern.finditer(joined)), np.int64)
    return np.bincount(np.searchsorted(starts, pos, side="right") - 1, minlength=len(starts))


def ranking_feature(state: State, feature: str) -> np.ndarray:
    """Per-query feature of the current rankings, float64 ``(n_q,)``; NaN where undefined.

    ``top1``: best score; ``gap``: best minus second score; ``rel_gap``: gap / |best|.
    """
    if state.rankings is None:
        raise ParamError("score_router: there are no rankings to score; put a retriever (e.g. bm25) before the "
                         "route, or use rule_router")
    n = len(state)
    lens = np.fromiter((len(r) for r in state.rankings), np.int64, n)
    s1 = np.full(n, np.nan)
    s2 = np.full(n, np.nan)
    has1, has2 = lens >= 1, lens >= 2
    if has1.any():
        s1[has1] = [state.rankings[i].scores[0] for i in np.flatnonzero(has1)]
    if has2.any():
        s2[has2] = [state.rankings[i].scores[1] for i in np.flatnonzero(has2)]
    if feature == "top1":
        return s1
    with np.errstate(invalid="ignore"):  # two infinite scores of one sign: no gap (NaN), as too few results
        gap = s1 - s2
    if feature == "gap":
        return gap
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.abs(s1) > 0, gap / np.abs(s1), np.nan)


def _undefined_feature(state: State, feature: str) -> str:
    """Why ``feature`` (:func:`ranking_feature`) is undefined for every query of ``state``, the training queries a
    router learns from: their rankings are too short (``gap``, ``rel_gap``: fewer than 2 results), or their scores
    give none (no finite top score, no non-zero one for ``rel_gap``)."""
    n = len(state)
    longest = max((len(r) for r in state.rankings or []), default=0)
    queries = f"{n} usable training quer{'ies' if n != 1 else 'y'}"
    need = 1 if feature == "top1" else 2
    if longest < need:
        return (f"{feature!r} needs {'a result' if need == 1 else 'the top two results'} of each query's ranking, "
                f"but no training query's ranking has {need} (the longest has {longest}; {queries}), so every "
                f"threshold learns the same (every query routed below); retrieve at least "
                f"{'1 document' if need == 1 else f'{need} documents'} before the route (the k of the retriever "
                f"before it){', or use feature: top1' if need == 2 else ''}")
    return (f"{feature!r} is undefined (NaN or infinite) for every one of the {queries}: their top scores give no "
            f"{feature} (the longest ranking has {longest} results), so every threshold learns the same; use "
            "another feature")


class ScoreRouterParams(Params):
    feature: Literal["top1", "gap", "rel_gap"] = Field(
        default="top1", description="Ranking feature: best score, best minus second score, or that gap / best score.")
    threshold: float | None = Field(default=None, description="Queries whose feature is >= threshold get label 'above' "
                                                              "(give a threshold or learn=true, not both).")
    above: str = Field(default="easy",
                       min_length=1, description="Label when feature >= threshold (confident first stage).")
    below: str = Field(default="hard",
                       min_length=1, description="Label otherwise, and for rankings with too few results.")
    learn: bool = Field(default=False,
                        description="Learn the threshold at fit from the training split: the one whose "
                                    "routing maximises mean nDCG@10 of the training queries (minus cost).")
    cost: float = Field(default=0.0,
                        ge=0, description="When learning: nDCG@10 a query may lose to stay out of the 'below' "
                                          "branch (the price of the expensive branch, per query).")

    @model_validator(mode="after")
    def _distinct(self) -> "ScoreRouterParams":
        if self.above == self.below:
            raise ValueError(f"above and below must be different labels, both are {self.above!r}")
        problem = threshold_or_learn_problem(self.threshold, self.learn, self.cost)
        if problem:
            raise ValueError(problem)
        if self.feature == "rel_gap" and self.threshold is not None and self.threshold < 0:
            # (above 1 is reachable: scores (-2, -7) have a gap of 2.5 times |best|)
            raise ValueError(f"threshold for feature 'rel_gap' must be >= 0 (the gap is never negative), got "
                             f"{self.threshold}")
        return self


@register
class ScoreRouter(LearnedThreshold, Operator):
    """Label queries by how confident the rankings already in the state are.

    Put a cheap retriever first and route on its scores, so easy queries skip the
    expensive branch, e.g. ``bm25 | Route(ScoreRouter(threshold=25), {"easy": TopK(k=100), "hard": hybrid})``.

    ``feature`` is computed per query from ``state.rankings`` (see :func:`ranking_feature`);
    scores are in the upstream retriever's units (BM25 scores, cosine similarities).
    Writes ``state.values["label"]``; rankings are untouched.  Score-based routing follows
    Modular RAG's routing-by-difficulty pattern (Gao et al., arXiv 2407.21059); the
    top-score and score-gap features are classic query-performance predictors
    (Cronen-Townsend et al., SIGIR 2002, for the clarity idea; the gap as in Shtok et al.,
    TOIS 2012).

    Examples
    --------
    >>> from ragkit.filters import TopK
    >>> from ragkit.pipelines import Route
    >>> from ragkit.retrievers import BM25
    >>> from ragkit.types import Corpus, State
    >>> bm25 = BM25(k=3).fit(Corpus.from_texts(["red apples", "green pears", "red cars"]))
    >>> [round(float(r.scores[0]), 2) for r in bm25(State(["green pears", "red apple"])).rankings]  # top1 feature
    [1.03, 0.76]
    >>> ScoreRouter(feature="top1", threshold=1.0)(bm25(State(["green pears", "red apple"]))).values["label"]
    ['easy', 'hard']
    >>> pipe = bm25 | Route(ScoreRouter(threshold=1.0), {"easy": TopK(k=1), "hard": TopK(k=2)})
    >>> [d.tolist() for d in pipe.search(["green pears", "red apple"]).doc_ids]
    [['1'], ['0', '2']]
    """

    name = "score_router"
    kind = "router"
    Params = ScoreRouterParams
    params: ScoreRouterParams
    stateless = True
    #: routes on the rankings of the steps before its route: a route with no retriever before it is
    #: refused when the pipeline is built (:func:`~ragkit.pipelines._checks.unranked_router`)
    reads_rankings = True
    unranked_hint = " (e.g. bm25), or route on the query text with rule_router"
    example = {"feature": "top1", "threshold": 20.0}
    #: okapi BM25's top scores on the conformance slice straddle 20 (8 of 12 queries above), where the default
    #: BM25's stay below it (the threshold stays 20.0: pipeline-file error hints quote this example)
    upstream_example = [{"bm25": {"k": 20, "variant": "okapi", "k1": 1.5, "b": 0.75}}]

    def possible_labels(self) -> list[str]:
        """Every label this router can give: ``above`` and ``below``."""
        return [self.params.above, self.params.below]

    def label_param(self, label: str) -> str | None:
        """The parameter that gives ``label`` (``above`` or ``below``); ``None`` for a label it never gives."""
        return "above" if label == self.params.above else "below" if label == self.params.below else None

    def learn_routes(self, state: State, gains: dict[str, np.ndarray]) -> None:
        """Choose the threshold from the training queries in ``state``.

        ``gains[label]`` is each training query's nDCG@10 when routed to that label's branch
        (``(n_q,)``).  Every cut between two observed feature values is tried at once
        (sorted cumulative sums); the best mean gain minus ``cost`` x share routed ``below``
        wins, ties going to the lower threshold (more queries on the cheap ``above`` branch).

        A cut that puts every training query on one side learns that side for every query: the
        threshold is ``-inf`` for "everything above" (each query with a feature is routed ``above``;
        one without, too few results, stays ``below`` as always) and ``inf`` for "everything below",
        not the lowest or highest training feature, which would route a new query beyond the
        training ones to the other side than the one learned.  A training query without a feature
        goes ``below`` whatever the threshold: it counts in the objective but not in that decision,
        so training queries that all go ``above`` beside some without a feature learn ``-inf`` too.
        ``learned.json`` keeps them as ``-Infinity`` / ``Infinity`` (Python's ``json``, read back as
        the same floats).
        :class:`~ragkit.pipelines.Route` gives it its usable training queries only (a judgement
        > 0 of a document of the corpus, as the fusers learn from), with a warning on the
        ``ragkit`` logger when fewer than 10.
        """
        if not self.params.learn:
            return
        raw = ranking_feature(state, self.params.feature)
        if len(raw) and not np.isfinite(raw).any():
            raise DataError(f"{self.name}.feature: {_undefined_feature(state, self.params.feature)}")
        f = np.nan_to_num(raw, nan=-np.inf)
        ga, gb = np.asarray(gains[self.params.above], float), np.asarray(gains[self.params.below], float)
        order = np.argsort(f, kind="stable")
        fs, da = f[order], (ga - gb)[order]
        n = len(f)
        # cut c: the c lowest-feature queries go below, the rest above (c = 0..n)
        above_gain = np.concatenate([[0.0], np.cumsum(da[::-1])])[::-1]       # sum of (ga - gb) over the top n - c
        objective = (gb.sum() + above_gain - self.params.cost * np.arange(n + 1)) / max(n, 1)
        valid = np.ones(n + 1, bool)
        valid[1:n] = fs[1:] > fs[:-1]                                         # cut only between distinct values
        # a query without a feature (NaN: no results, or too few for a gap) scores below every threshold, so
        # "everything above" cannot be expressed when such a query is there: its cut is not a choice
        valid[0] = not (n and np.isneginf(fs[0]))
        best = int(np.flatnonzero(valid)[np.argmax(objective[valid])])
        # the queries without a feature (sorted first) go below whatever the threshold: the cut just past them
        # is "everything above" for the others, so they count in the objective but not in that decision
        featureless = int(np.count_nonzero(np.isneginf(fs)))
        if best == featureless < n:
            t = -np.inf                  # everything above: every query with a feature, whatever its value
        elif best == n:
            t = np.inf if n else 0.0     # everything below: every query, whatever its feature
        else:
            t = float((fs[best - 1] + fs[best]) / 2)
        self.threshold_ = t
        self.learned_ = {"threshold": t, "train_ndcg@10": float((objective[best] * max(n, 1)
                                                                 + self.params.cost * best) / max(n, 1)),
                         "share_below": best / max(n, 1),
                         "all_above_ndcg@10": float(ga.mean()) if n else 0.0,
                         "all_below_ndcg@10": float(gb.mean()) if n else 0.0}

    def _call(self, state: State) -> State:
        self._check_learned()
        f = ranking_feature(state, self.params.feature) if len(state) else np.empty(0)
        above = ~np.isnan(f) & (f >= self.threshold)  # no feature (too few results): below, even at -inf
        out = state.copy()
        out.values["label"] = np.where(above, self.params.above, self.params.below).astype(object).tolist()
        return out
