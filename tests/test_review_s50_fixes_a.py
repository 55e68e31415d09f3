"""Review of the s50 commits (a): numpy float32 metadata and filters alike everywhere.

- a filter given as an operator parameter (``BM25(filter={"w": np.float32(0.1)})``) went through ``.item()``
  (``0.10000000149011612``), which finds none of the documents a corpus keeps ``np.float32(0.1)`` for as ``0.1``.
"""

from __future__ import annotations

import numpy as np

from ragkit.eval.beir import read_corpus
from ragkit.retrievers import BM25
from ragkit.types import Corpus


def _saved(c: Corpus, tmp_path) -> Corpus:
    c.save(tmp_path / "c.jsonl")
    return read_corpus(tmp_path / "c.jsonl")


def test_a_float32_filter_parameter_finds_float32_metadata(tmp_path):
    c = Corpus(ids=["a", "b"], texts=["vitamin c", "vitamin d"],
               metadata={"w": [np.float32(0.1), np.float32(0.25)]})
    bm = BM25(k=5, filter={"w": np.float32(0.1)})
    assert bm.params.filter == {"w": 0.1} and "{w: 0.1}" in bm.to_yaml()
    assert list(bm.fit(c).search(["vitamin"]).doc_ids[0]) == ["a"]
    assert list(BM25(k=5, filter={"w": [np.float32(0.25), np.int64(7)]}).fit(c).search(["vitamin"]).doc_ids[0]) \
        == ["b"]
    assert BM25(filter={"w": np.array(np.float32(0.1))}).params.filter == {"w": 0.1}  # (a 0-d array)
