"""One rule each: "sorted best first" (a rise of float rounding passes everywhere: check_result, the score
cut-offs, the filters' cosine checks) and the run-time ``k`` (a per-call operator ``k`` option is held to the
rule of the call's ``k``; retrievers, cut-offs and fusers resolve it by one helper); ``ragkit._flat``'s
``__all__`` lists what other modules import from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from ragkit import Corpus, _flat
from ragkit._flat import first_unsorted
from ragkit._results import _ranking_problem
from ragkit.errors import DataError, ParamError
from ragkit.filters import RelativeThreshold, ScoreThreshold, TopK
from ragkit.filters.cutoffs import cut_k
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.pipelines import RRF, WeightedFusion
from ragkit.retrievers import BM25
from ragkit.types import Ranking, State

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["apple pie recipe", "apple pie recipe x", "apple pie", "cherry tart apple", "apple pie recipe", "grape juice"]


class _JitterParams(Params):
    pass


class _Jitter(Operator):
    """A reranker that rescales the second score by (1 + 3e-7): float rounding, a tiny rise over the first."""

    name = "jitter_stop52"
    kind = "reranker"
    reads_rankings = True
    Params = _JitterParams
    stateless = True

    def _call(self, state: State) -> State:
        out = state.copy()
        out.rankings = [Ranking(r.rows, np.r_[r.scores[:1], r.scores[1:2] * np.float32(1 + 3e-7), r.scores[2:]]
                                .astype(np.float32)) for r in (state.rankings or [])]
        return out


def _corpus() -> Corpus:
    return Corpus(ids=[f"d{i}" for i in range(len(TEXTS))], titles=[""] * len(TEXTS), texts=TEXTS)


@pytest.mark.parametrize("tail", [TopK(k=3), ScoreThreshold(threshold=0.1), RelativeThreshold(alpha=0.1)],
                         ids=["top_k", "score_threshold", "relative_threshold"])
def test_a_rise_of_float_rounding_that_check_result_passes_passes_the_cutoffs_too(tail):
    """Was: top_k took it, score_threshold raised 'query 0 of the batch is not (0.7163 before 0.7163)'."""
    pipe = BM25(k=5) | _Jitter() | tail
    pipe.fit(_corpus())
    s = pipe.search(["apple pie recipe"]).scores[0]
    assert len(s) >= 3 and s[1] > s[0]  # the rise is there, and passed


def test_a_real_rise_is_still_refused_by_the_cutoff_with_both_scores_told_apart():
    st = State(["q"], rankings=[Ranking([0, 1, 2], np.array([0.7163017, 0.7163100, 0.1], np.float32))])
    with pytest.raises(DataError) as err:
        ScoreThreshold(threshold=0.1)(st)
    shown = re.search(r"\(([-\d.e+]+) before ([-\d.e+]+)\)", str(err.value))
    assert shown is not None, str(err.value)
    assert shown.group(1) != shown.group(2), str(err.value)  # was '(0.7163 before 0.7163)'


def _three_rules(scores: np.ndarray) -> tuple[bool, bool, bool]:
    """Whether check_result's rule, the cut-offs' and the filters' first_unsorted call one ranking unsorted."""
    scores = np.asarray(scores, np.float32)
    qidx = np.zeros(len(scores), np.int64)
    by_result = _ranking_problem(np.arange(len(scores)), scores, np.array([len(scores)]), "sorted") is not None
    try:
        ScoreThreshold(threshold=-1e9)(State(["q"], rankings=[Ranking(np.arange(len(scores)), scores)]))
        by_cutoff = False
    except DataError:
        by_cutoff = True
    return by_result, by_cutoff, first_unsorted(scores, qidx) is not None


@pytest.mark.parametrize("scores, unsorted", [
    ([0.5, 0.5, 0.4], False),
    ([0.7163017, 0.7163019, 0.1], False),  # 2e-7: rounding (the cut-off refused it)
    ([1000.0, 1000.0005, 3.0], False),  # 5e-4 of 1000: rounding (first_unsorted's absolute 1e-6 refused it)
    ([1e-8, 5e-7, 0.0], False),  # under the 1e-6 floor near 0
    ([0.5, 0.51, 0.4], True),
    ([1000.0, 1000.01, 3.0], True),
    ([-2.0, -1.9, -3.0], True),
])
def test_the_three_sorted_checks_are_one_rule(scores, unsorted):
    assert _three_rules(np.array(scores)) == (unsorted, unsorted, unsorted)


def test_first_unsorted_names_the_query_and_ignores_the_step_between_two_queries():
    c = np.array([0.9, 0.1, 0.8, 0.2, 0.3], np.float32)  # query 0: 0.9, 0.1; query 1: 0.8, 0.2, 0.3 (rises)
    qidx = np.array([0, 0, 1, 1, 1])
    assert first_unsorted(c, qidx) == 1
    assert first_unsorted(c[:4], qidx[:4]) is None


# ---------------------------------------------------------------------- run-time k
def _pipe():
    pipe = BM25(k=5) | TopK(k=2)
    pipe.fit(_corpus())
    return pipe


@pytest.mark.parametrize("op", ["top_k", "bm25"])
@pytest.mark.parametrize("bad", ["3", 3.0, 2.5, True, 0, -1, [3]])
def test_a_per_call_operator_k_is_held_to_the_rule_of_the_calls_k(op, bad):
    pipe = _pipe()
    with pytest.raises(ParamError) as top:
        pipe.search(["apple pie"], k=bad)
    with pytest.raises(ParamError) as own:
        pipe.search(["apple pie"], **{op: {"k": bad}})
    assert str(own.value) == f"search option {op}.k: expected a positive integer, got {bad!r}"
    assert own.value.path == f"options.{op}.k"
    assert f"positive integer, got {bad!r}" in str(top.value)  # the same rule, refused at the top level too


def test_numpy_integers_are_a_k_at_the_top_level_and_per_operator_alike():
    pipe = _pipe()
    assert len(pipe.search(["apple pie"], k=np.int64(3)).doc_ids[0]) == 3
    assert len(pipe.search(["apple pie"], top_k={"k": np.int64(3)}).doc_ids[0]) == 3
    assert len(pipe.search(["apple pie"], bm25={"k": np.int32(1)}).doc_ids[0]) == 1


@pytest.mark.parametrize("bad", ["3", 3.0, True])
def test_an_operator_called_on_a_state_checks_its_own_k_option_where_it_reads_it(bad):
    """Was: top_k read int('3') (and int(3.5), 3) where bm25 refused the same option."""
    st = State(["q"], rankings=[Ranking([0, 1, 2, 3], [0.9, 0.8, 0.7, 0.6])], options={"top_k": {"k": bad}})
    with pytest.raises(ParamError, match=re.escape(f"options.top_k.k: expected a positive integer, got {bad!r}")):
        TopK(k=2)(st)


def _k_of(kind: str, own, param, call_k):
    """What each of the three readers of the rule makes of one (own option, parameter, call's k)."""
    options = {**({"k": call_k} if call_k is not None else {})}
    mine = {"k": own} if own is not None else None
    if kind == "retriever":
        bm = BM25(k=param).fit(_corpus())
        return bm.k_for(State(["q"], options={**options, **({"bm25": mine} if mine else {})}))
    if kind == "cutoff":
        return cut_k(TopK(k=param), State(["q"], options={**options, **({"top_k": mine} if mine else {})}))
    return RRF(top_k=param)._top(State(["q"], options=options))


@pytest.mark.parametrize("kind", ["retriever", "cutoff", "fuser"])
def test_one_rule_resolves_k_for_retrievers_cutoffs_and_fusers(kind):
    assert _k_of(kind, None, 4, None) == 4
    assert _k_of(kind, None, 4, 2) == 4  # the call's k raises the parameter, never lowers it
    assert _k_of(kind, None, 4, 7) == 7
    assert _k_of(kind, None, 4, np.int64(7)) == 7
    if kind != "fuser":  # (a fuser has no k option of its own: its k is the RRF constant or none)
        assert _k_of(kind, 2, 4, 7) == 2  # its own option, exactly
    for bad in ("7", 7.5, True):  # was: int() for the cut-off's and the fuser's (7, 7, 1)
        with pytest.raises(ParamError, match=re.escape(f"options.k: expected a positive integer, got {bad!r}")):
            _k_of(kind, None, 4, bad)


def test_a_fusers_top_k_is_raised_to_the_calls_k_and_none_keeps_all():
    assert WeightedFusion(top_k=3)._top(State(["q"], options={"k": 5})) == 5
    assert RRF()._top(State(["q"], options={"k": 5})) is None


# ---------------------------------------------------------------------- ragkit._flat.__all__
def test_flat_all_lists_every_name_other_modules_import_from_it():
    imported: set[str] = set()
    for path in ROOT.rglob("*.py"):
        if any(part in {".venv", "node_modules", ".git"} for part in path.parts) or path.name == "_flat.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "ragkit._flat":
                imported |= {a.name for a in node.names}
    assert {"check_rows_in_corpus", "check_dense_rankings", "first_unsorted"} <= imported
    assert imported <= set(_flat.__all__), sorted(imported - set(_flat.__all__))
    assert all(hasattr(_flat, name) for name in _flat.__all__)
