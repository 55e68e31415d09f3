"""A rewriter's values['query_text'] that is not one str per query is refused naming the rewriter, whatever follows
it: of another length (State.texts zipped it short, and the step after it was blamed: "BM25._call returned 1 rankings
for 2 queries"), or an array (a bm25 after it failed with numpy's "truth value of an array is ambiguous");
filter_report with a reference none of whose queries is judged gives evaluate's respelled-id hint."""
from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from pydantic import Field

from ragkit import Corpus, Pipeline, Run
from ragkit.errors import DataError
from ragkit.eval.filtering import filter_report
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.registry import register
from ragkit.retrievers import BM25


@register
class _FaultyRewrite(Operator):
    """Rewrites every batch wrongly: to one text whatever its size (``short``), or as a numpy array (``array``)."""

    name = "s54_faulty_rewrite"
    kind = "rewriter"

    class Params(Params):
        form: Literal["short", "array"] = Field(default="short", description="How it rewrites wrongly: one "
                                                "text for any batch (short), or a numpy array (array).")

    def _fit(self, corpus, train=None, upstream=None):
        return self

    def _call(self, state):
        out = state.copy()
        n = len(state.queries)
        out.values["query_text"] = ["cats"] if self.params.form == "short" else np.array(["cats"] * n, dtype=object)
        return out


def _pipe(form: str) -> Pipeline:
    return Pipeline([_FaultyRewrite(form=form), BM25(k=2)]).fit(Corpus(ids=["a", "b"], texts=["cats sit", "dogs run"]))


def test_a_query_text_of_another_length_names_the_rewriter() -> None:
    pipe = _pipe("short")
    with pytest.raises(DataError, match=r"^pipeline\[0\]\.s54_faulty_rewrite: _FaultyRewrite._call "
                                        r"\('s54_faulty_rewrite'\) returned values\['query_text'\] of 1 entries for 2 "
                                        r"queries"):
        pipe.search(["dogs", "cats"])
    assert pipe.search(["dogs"]).doc_ids[0].tolist()[0] == "a"  # (one query: one entry, as expected)


def test_an_array_query_text_before_bm25_names_the_rewriter() -> None:
    with pytest.raises(DataError, match=r"^pipeline\[0\]\.s54_faulty_rewrite: _FaultyRewrite._call "
                                        r"\('s54_faulty_rewrite'\) returned values\['query_text'\] as ndarray"):
        _pipe("array").search(["dogs", "cats"])


def test_filter_report_with_a_reference_names_respelled_query_ids() -> None:
    run = Run.from_dict({"001": {"d1": 0.9}})
    with pytest.raises(DataError, match=r"filter_report: none of the run's 1 queries.*is judged as '1'"):
        filter_report(run, {"1": {"d1": 1}}, reference=run)
