"""A rewriter's values['query_text'] of another length than the batch is refused naming the rewriter (State.texts
zipped it short, and the step after it was blamed: "BM25._call returned 1 rankings for 2 queries")."""
from __future__ import annotations

import pytest

from ragkit import Corpus, Pipeline
from ragkit.errors import DataError
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.registry import register
from ragkit.retrievers import BM25


@register
class _ShortRewrite(Operator):
    """Rewrites every batch to one text, whatever its size (a rewriter at fault)."""

    name = "s54_short_rewrite"
    kind = "rewriter"

    class Params(Params):
        pass

    def _fit(self, corpus, train=None, upstream=None):
        return self

    def _call(self, state):
        out = state.copy()
        out.values["query_text"] = ["cats"]
        return out


def test_a_query_text_of_another_length_names_the_rewriter() -> None:
    pipe = Pipeline([_ShortRewrite(), BM25()]).fit(Corpus(ids=["a", "b"], texts=["cats sit", "dogs run"]))
    with pytest.raises(DataError, match=r"^pipeline\[0\]\.s54_short_rewrite: _ShortRewrite._call "
                                        r"\('s54_short_rewrite'\) returned values\['query_text'\] of 1 entries for 2 "
                                        r"queries"):
        pipe.search(["dogs", "cats"])
    assert pipe.search(["dogs"]).doc_ids[0].tolist()[0] == "a"  # (one query: one entry, as expected)
