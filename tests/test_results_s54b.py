"""Session 54's last fixes: a rewriter's values['query_text'] that is not a list is refused naming it whatever
follows (a bm25 after it failed with numpy's "truth value of an array is ambiguous"); filter_report with a
reference none of whose queries is judged gives evaluate's respelled-id hint."""
from __future__ import annotations

import numpy as np
import pytest

from ragkit import Corpus, Pipeline, Run
from ragkit.errors import DataError
from ragkit.eval.filtering import filter_report
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.registry import register
from ragkit.retrievers import BM25


@register
class _ArrayRewriteB(Operator):
    """Writes its rewrites as a numpy array (a rewriter at fault)."""

    name = "s54_array_rewrite_b"
    kind = "rewriter"

    class Params(Params):
        pass

    def _fit(self, corpus, train=None, upstream=None):
        return self

    def _call(self, state):
        out = state.copy()
        out.values["query_text"] = np.array(["cats"] * len(state.queries), dtype=object)
        return out


def test_an_array_query_text_before_bm25_names_the_rewriter() -> None:
    pipe = Pipeline([_ArrayRewriteB(), BM25(k=2)]).fit(Corpus(ids=["a", "b"], texts=["cats sit", "dogs run"]))
    with pytest.raises(DataError, match=r"^pipeline\[0\]\.s54_array_rewrite_b: _ArrayRewriteB._call "
                                        r"\('s54_array_rewrite_b'\) returned values\['query_text'\] as ndarray"):
        pipe.search(["dogs", "cats"])


def test_filter_report_with_a_reference_names_respelled_query_ids() -> None:
    run = Run.from_dict({"001": {"d1": 0.9}})
    with pytest.raises(DataError, match=r"filter_report: none of the run's 1 queries.*is judged as '1'"):
        filter_report(run, {"1": {"d1": 1}}, reference=run)
