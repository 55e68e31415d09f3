"""Dense with blank documents (slot -1): compact and document_vectors never index a table with -1.

Review of b0ed71f: ``np.where(slots >= 0, remap[slots], -1)`` and ``fv[slots]`` read the last row for a blank
document's -1, and raised IndexError on an index of no slot (blank documents only, or all the others removed)."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.retrievers import Dense
from ragkit.types import Corpus


@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_compact_and_document_vectors_with_blank_documents(search: str):
    only_blank = Dense(k=3, search=search).fit(Corpus(ids=["a", "b"], texts=["", " "]))
    only_blank.compact()
    assert only_blank.document_vectors().shape == (2, 384) and not only_blank.document_vectors().any()
    assert [len(r) for r in only_blank.search(["cell"]).rankings] == [0]

    dense = Dense(k=3, search=search).fit(Corpus(ids=["a", "b", "r"], texts=["cell protein", " ", "folding study"]))
    dense.remove(["r"])
    for _ in range(2):
        dense.compact()
        vecs = dense.document_vectors()
        assert vecs.shape == (2, 384) and not vecs[1].any() and abs(float(np.linalg.norm(vecs[0])) - 1) < 1e-5
    assert [dense.corpus_.ids[i] for i in dense.search(["cell"]).rankings[0].rows] == ["a"]
