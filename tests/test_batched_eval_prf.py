"""alpha-nDCG, check_subtopics and PRF's expanded texts are batched (no Python loop per query or judged document)
and give what the per-query code gave: the old code is kept here, verbatim, as the reference, and compared on
many random cases (ties, k past the pool, queries without subtopics, alpha 0 and 1, documents of several
subtopics, repeated labels, labels of mixed types, the forms that are checked one by one: sets, arrays, int ids)
to 1e-12, and on malformed subtopics error for error.  Whether the work is batched is counted, not timed: the
Python calls made (``sys.setprofile``) do not grow with the judged documents (alpha-nDCG, check_subtopics) or
the queries (PRF's joins)."""

from __future__ import annotations

import functools
import math
import operator
import sys
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import pytest

import ragkit.eval.diversity as div
from ragkit.errors import DataError
from ragkit.eval.diversity import RunLike, Subtopics, _as_run
from ragkit.pipelines import PRF
from ragkit.run import Run, _check_unique
from ragkit.types import Corpus, Ranking, State


# ---------------------------------------------------------------------- the reference: the code before batching
def _sum(values: Any) -> Any:
    """``sum`` as Python 3.11 adds floats, one after another (3.12's ``sum`` compensates its rounding, which the
    per-query code's ``+=`` in its DCG never did): the one change made to the reference below."""
    return functools.reduce(operator.add, values, 0)


def _ref_doc_lists(run: Any, k: int, measure: str) -> dict[str, list[str]]:
    if k < 1:
        raise DataError(f"{measure}: k must be >= 1, got {k}")
    run = _as_run(run, measure)
    for q, docs, _ in run:  # a document listed twice would gain twice (alpha-nDCG above 1): refused as evaluate does
        _check_unique(q, docs, measure)
    return {q: [str(d) for d in docs[:k]] for q, docs, _ in run}


# ragkit 0.x check_subtopics, as it was before it was batched: kept verbatim in the library as the path for other forms
# and malformed subtopics, so the batched path is checked against it
_ref_check_subtopics = div._check_subtopics_each


def _ref_alpha_ndcg(run: RunLike, subtopics: Subtopics, k: int = 10, alpha: float = 0.5) -> dict[str, float]:
    """ragkit 0.x alpha_ndcg, as it was before it was batched (the greedy ideal one query at a time)."""
    if not 0 <= alpha <= 1:
        raise DataError(f"alpha_ndcg: alpha must be in [0, 1], got {alpha}")
    lists = _ref_doc_lists(run, k, "alpha_ndcg")
    checked = _ref_check_subtopics(subtopics, "alpha_ndcg")
    depth = max([len(d) for d in lists.values()] + [sum(1 for ts in j.values() if ts) for j in checked.values()],
                default=0)
    disc = 1.0 / np.log2(np.arange(2, min(k, depth) + 2))  # no rank beyond the longest list or ideal ranking

    def dcg(docs: list[str], judged: Mapping[str, Sequence[Hashable]]) -> float:
        seen: dict[Hashable, int] = {}
        total = 0.0
        for r, d in enumerate(docs[:k]):
            g = 0.0
            for t in judged.get(d, ()):
                g += (1 - alpha) ** seen.get(t, 0)
                seen[t] = seen.get(t, 0) + 1
            total += g * disc[r]
        return total

    out = {}
    for q, judged in checked.items():
        if not any(judged.values()):
            continue
        ideal: list[str] = []
        seen: dict[Hashable, int] = {}
        pool = {d: list(ts) for d, ts in judged.items() if ts}
        while pool and len(ideal) < k:  # greedy ideal ordering
            best = max(pool, key=lambda d: (_sum((1 - alpha) ** seen.get(t, 0) for t in pool[d]), d))
            for t in pool.pop(best):
                seen[t] = seen.get(t, 0) + 1
            ideal.append(best)
        norm = dcg(ideal, judged)
        out[q] = dcg(lists.get(q, []), judged) / norm if norm > 0 else 0.0
    return out


# ---------------------------------------------------------------------- random cases
_LABELS: list[Hashable] = ["t0", "t1", "t2", "t3", 0, 1, 2.0, True, ("a", 1), "t10", None]


def _random_case(rng: np.random.Generator, form: str = "plain") -> tuple[dict[str, dict[str, float]], dict]:
    """A run ``{q: {doc: score}}`` and subtopics over few documents ("d0".."d12": "d2" sorts after "d10") and
    few labels, so that gains tie often; some queries judge nothing, label nothing, or are not in the run."""
    n_q = int(rng.integers(1, 7))
    n_labels = int(rng.integers(1, len(_LABELS) + 1))
    labels = _LABELS[:n_labels] if rng.random() < 0.5 else ["t0", "t1", "t2"][:n_labels]
    docs = [f"d{i}" for i in range(int(rng.integers(1, 14)))]
    subtopics: dict[Any, Any] = {}
    run: dict[str, dict[str, float]] = {}
    for i in range(n_q):
        q = f"q{i}"
        judged: dict[Any, Any] = {}
        for d in rng.permutation(docs)[:int(rng.integers(0, len(docs) + 1))].tolist():
            n = int(rng.choice([0, 1, 1, 2, 3, 5]))
            ts = [labels[j] for j in rng.integers(0, len(labels), n)]  # repeats allowed: counted once
            judged[d] = tuple(ts) if rng.random() < 0.2 else ts
        if form == "sets":  # forms checked one document at a time: sets, arrays, int ids, another Mapping
            judged = {d: set(ts) if j % 3 == 0 else (np.array([str(t) for t in ts]) if j % 3 == 1 else ts)
                      for j, (d, ts) in enumerate(judged.items())}
            judged = {int(d[1:]) if j % 2 else d: ts for j, (d, ts) in enumerate(judged.items())}
        if rng.random() < 0.85:
            subtopics[q] = judged
        if rng.random() < 0.85:
            listed = rng.permutation(docs + ["x1", "x2"])[:int(rng.integers(0, len(docs) + 3))].tolist()
            scores = rng.integers(0, 3, len(listed)).astype(float) if rng.random() < 0.3 else rng.random(len(listed))
            run[q] = dict(zip(listed, scores.tolist()))  # (tied scores: trec_eval's order, as Run.from_dict)
    if form == "sets" and subtopics:
        subtopics[next(iter(subtopics))] = _ReadOnly(subtopics[next(iter(subtopics))])
    return run, subtopics


class _ReadOnly(Mapping):
    """A Mapping that is no dict (checked one document at a time)."""

    def __init__(self, d: dict) -> None:
        self._d = d

    def __getitem__(self, key: Any) -> Any:
        return self._d[key]

    def __iter__(self) -> Any:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)


def _same_scores(got: dict[str, float], want: dict[str, float]) -> None:
    assert list(got) == list(want)
    for q in want:
        assert abs(got[q] - want[q]) <= 1e-12, (q, got[q], want[q])


@pytest.mark.parametrize("form", ["plain", "sets"])
def test_alpha_ndcg_gives_the_per_query_values_on_random_cases(form: str) -> None:
    rng = np.random.default_rng(7 if form == "plain" else 8)
    alphas = [0.0, 1.0, 0.5, 0.3, 1 / 3, 0.9, 0, 1]
    for case in range(400):
        run, subtopics = _random_case(rng, form)
        k = int(rng.choice([1, 2, 3, 5, 10, 20, 10**12]))
        alpha = alphas[case % len(alphas)] if case < 2 * len(alphas) else float(rng.random())
        as_run = Run.from_dict(run)
        for given in (run, as_run):
            _same_scores(div.alpha_ndcg(given, subtopics, k=k, alpha=alpha),
                         _ref_alpha_ndcg(given, subtopics, k=k, alpha=alpha))
        assert div.check_subtopics(subtopics, "t") == _ref_check_subtopics(subtopics, "t")


def test_alpha_ndcg_ties_go_to_the_largest_id_as_before() -> None:
    """Every judged document of equal gain, the ideal's order decided by the tie rule alone ("d9" before
    "d10", as strings), and a case where the tie rule changes the ideal's DCG."""
    sub = {"q": {f"d{i}": ["t0", "t1"][i % 2:] for i in range(12)}}
    run = {"q": {f"d{i}": float(i) for i in range(12)}}
    for k in (1, 3, 12, 30):
        for alpha in (0.0, 0.5, 1.0):
            _same_scores(div.alpha_ndcg(run, sub, k=k, alpha=alpha), _ref_alpha_ndcg(run, sub, k=k, alpha=alpha))
    # a and b tie at rank 1; b (the larger id) leaves t1's second document c a smaller gain than a would
    sub2 = {"q": {"a": ["t0"], "b": ["t1"], "c": ["t1", "t2"], "e": ["t0", "t3"]}}
    for k in (1, 2, 3, 4):
        _same_scores(div.alpha_ndcg({"q": {"a": 2.0, "c": 1.0}}, sub2, k=k),
                     _ref_alpha_ndcg({"q": {"a": 2.0, "c": 1.0}}, sub2, k=k))


def test_alpha_ndcg_edge_inputs_as_before() -> None:
    sub = {"q": {"a": ["t1"], "b": []}, "none": {"a": []}, "empty": {}, "absent": {"z": ["t", "u", "t"]}}
    for run in ({}, {"q": {}}, {"q": {"b": 1.0, "a": 0.5}}, {"other": {"a": 1.0}}):
        for alpha in (0, 0.5, 1):
            got = div.alpha_ndcg(run, sub, k=3, alpha=alpha)
            _same_scores(got, _ref_alpha_ndcg(run, sub, k=3, alpha=alpha))
            assert "none" not in got and "empty" not in got and got["absent"] == 0.0
    assert div.alpha_ndcg({"q": {"a": 1.0}}, {}, k=3) == {} == _ref_alpha_ndcg({"q": {"a": 1.0}}, {}, k=3)
    assert div.alpha_ndcg({"q": {"a": 1.0}}, {"q": {"a": []}}, k=3) == {}


# ---------------------------------------------------------------------- malformed subtopics: the same error
_MALFORMED: list[Any] = [
    [("q1", "a", "t")], "q1", None,
    {"q1": {"a": "topic1", "b": "topic2"}}, {"q1": {"a": b"t"}}, {"q1": {"a": None}}, {"q1": {"a": 3}},
    {"q1": {"a": [["t"]]}}, {"q1": {"a": ["t", {"x": 1}]}}, {"q1": ["a", "b"]}, {"q1": {"a": np.array([["t"]])}},
    {"q1": {1: ["t"], "1": ["u"]}}, {1: {"a": ["t"]}, "1": {"a": ["u"]}}, {math.nan: {"a": ["t"]}},
    {"q1": {math.nan: ["t"]}}, {"q1": {"a": [("t", ["x"])]}},
    # two problems: the first one met is named
    {"q0": {"a": ["t"]}, "q1": {"a": [["t"]], "b": "s"}, "q2": 5},
    {"q0": {"a": ["t"], "b": None}, "q1": 5},
    {1: {"a": ["t"]}, "1": {"a": "s"}},
    {"q0": {"a": ("t", [1])}, "q1": {"a": [["t"]]}},
]


@pytest.mark.parametrize("bad", _MALFORMED, ids=range(len(_MALFORMED)))
def test_malformed_subtopics_raise_the_same_error_as_before(bad: Any) -> None:
    def outcome(f: Callable[[], Any]) -> tuple[type, str]:
        with pytest.raises(Exception) as info:
            f()
        return info.type, str(info.value)

    run = {"q1": {"a": 1.0}}
    assert outcome(lambda: div.check_subtopics(bad, "who")) == outcome(lambda: _ref_check_subtopics(bad, "who"))
    assert outcome(lambda: div.alpha_ndcg(run, bad, k=2)) == outcome(lambda: _ref_alpha_ndcg(run, bad, k=2))


def test_check_subtopics_returns_new_lists() -> None:
    """As before, each document's labels are a new list (the caller's list is not handed back)."""
    mine = ["t", "u"]
    out = div.check_subtopics({"q": {"a": mine, "b": ("t", "t", 1, True)}}, "t")
    assert out == {"q": {"a": ["t", "u"], "b": ["t", 1]}} and out["q"]["a"] is not mine
    assert type(out["q"]["b"]) is list


# ---------------------------------------------------------------------- batched, counted not timed
def _python_calls(f: Callable[[], Any]) -> tuple[int, int]:
    """(Python function calls, calls of str.join from Python code) made while ``f`` runs."""
    counts = [0, 0]

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            counts[0] += 1
        elif event == "c_call" and getattr(arg, "__name__", "") == "join" and \
                isinstance(getattr(arg, "__self__", None), str):
            counts[1] += 1

    sys.setprofile(prof)
    try:
        f()
    finally:
        sys.setprofile(None)
    return counts[0], counts[1]


def _judged(n_q: int, n_docs: int) -> tuple[Run, dict[str, dict[str, list[int]]]]:
    ids = [f"d{j}" for j in range(n_docs)]
    run = Run.from_dict({f"q{i}": {d: float(n_docs - j) for j, d in enumerate(ids[::3])} for i in range(n_q)})
    return run, {f"q{i}": {d: [j % 3, (j + i) % 5] for j, d in enumerate(ids)} for i in range(n_q)}


def test_alpha_ndcg_and_check_subtopics_make_no_python_call_per_judged_document() -> None:
    """The greedy ideal called a key function per pooled document per rank, and check_subtopics ran a generator
    per document: ten times the judged documents are now the same number of Python calls."""
    small, large = _judged(4, 30), _judged(4, 300)
    for f in (lambda run, sub: div.alpha_ndcg(run, sub, k=10), lambda run, sub: div.check_subtopics(sub, "t")):
        few, many = _python_calls(lambda: f(*small))[0], _python_calls(lambda: f(*large))[0]
        assert many <= few + 20, (few, many)


# ---------------------------------------------------------------------- PRF's expanded texts
def _ref_join(words: np.ndarray, reps: np.ndarray, queries: Sequence[str]) -> list[str]:
    """PRF's texts as they were made: one join per query."""
    bounds = np.concatenate([[0], np.cumsum(reps)])
    return [" ".join(words[bounds[i]:bounds[i + 1]]) if reps[i] else queries[i] for i in range(len(queries))]


def test_prf_texts_are_the_per_query_joins() -> None:
    from pipelines.prf import _join_per_query

    rng = np.random.default_rng(3)
    vocab = np.array(["a", "bb", "", "é", "x y", "\t", "z\x00z", "q"], dtype=object)
    for case in range(300):
        n_q = int(rng.integers(0, 8))
        reps = rng.integers(0, 4, n_q) * (rng.random(n_q) < 0.7)
        pick = vocab[:6] if case % 3 else vocab  # a word holding a NUL: the per-query fallback
        words = pick[rng.integers(0, len(pick), int(reps.sum()))]
        queries = [f"query {i}" for i in range(n_q)]
        got = _join_per_query(words, reps, queries)
        assert got == _ref_join(words, reps, queries) and all(type(t) is str for t in got)


FRUIT = Corpus.from_texts([
    "apple apple apple banana banana cherry common common common common",
    "banana banana date date date elder common",
    "common fig", "common grape", "common lemon", "mango", "nut", "olive",
])


def _prf_state(n_q: int) -> State:
    qs = ["apple kiwi", "unknownword", "date", "banana fig"]
    rows = [[0, 1], [], [1, 0], [2, 0, 1]]
    return State([qs[i % 4] for i in range(n_q)],
                 rankings=[Ranking(np.array(rows[i % 4], np.int64), np.linspace(2, 1, len(rows[i % 4]),
                                                                                dtype=np.float32))
                           for i in range(n_q)])


def test_prf_keeps_a_query_without_expansion_and_joins_once() -> None:
    """A query with nothing to write (no known term, no feedback document) keeps its text; the texts are the
    per-query joins, made with a number of str.join calls that does not grow with the queries (one per query
    before)."""
    prf = PRF(fb_docs=2, fb_terms=2, original_query_weight=0.5, max_df=0.5, stemmer="none").fit(FRUIT)
    out = prf(_prf_state(8))
    texts = out.values["lexical_query"]
    assert texts[1] == texts[5] == "unknownword" and texts[0] != "apple kiwi"
    counts = prf._repetitions(prf.expansion_weights(_prf_state(8)))
    assert len(counts) and len(texts) == 8
    few, many = _python_calls(lambda: prf(_prf_state(8)))[1], _python_calls(lambda: prf(_prf_state(80)))[1]
    assert many == few, (few, many)
