"""Review of the s50 commits (a): numpy float32 metadata and filters alike everywhere.

- a filter given as an operator parameter (``BM25(filter={"w": np.float32(0.1)})``) went through ``.item()``
  (``0.10000000149011612``), which finds none of the documents a corpus keeps ``np.float32(0.1)`` for as ``0.1``;
- a float32 numpy column (or pandas float32 Series) and numpy scalars inside list / dict values matched
  ``{"w": 0.1}`` after a save only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


@pytest.mark.parametrize("column", [np.array([0.1, 0.25], np.float32), np.array([0.1, 0.25], np.float16),
                                    pd.Series([0.1, 0.25], dtype="float32")], ids=["f32", "f16", "pandas-f32"])
def test_a_float32_column_filters_alike_before_and_after_a_save(tmp_path, column):
    c = Corpus(ids=["a", "b"], texts=["x", "y"], metadata={"w": column})
    before = c.mask({"w": 0.1}).tolist()
    assert _saved(c, tmp_path).mask({"w": 0.1}).tolist() == before == [True, False]
    assert c.mask({"w": np.float32(0.1)}).tolist() == [True, False]


def test_a_float32_column_keeps_its_nan():
    c = Corpus(ids=["a", "b"], texts=["x", "y"], metadata={"w": np.array([0.1, np.nan], np.float32)})
    assert c.metadata["w"].dtype == np.float64 and c.metadata["w"][0] == 0.1 and np.isnan(c.metadata["w"][1])
    assert c.mask({"w": None}).tolist() == [False, True]


def test_numpy_scalars_inside_list_and_dict_values_filter_alike_before_and_after_a_save(tmp_path):
    c = Corpus(ids=["a", "b"], texts=["x", "y"], metadata={"w": [[np.float32(0.1)], [0.25]]})
    before = c.mask({"w": 0.1}).tolist()
    assert _saved(c, tmp_path).mask({"w": 0.1}).tolist() == before == [True, False]
    d = Corpus(ids=["a", "b"], texts=["x", "y"],
               metadata={"info": [{"w": np.float32(0.1), "n": [np.int64(2), np.float32("nan")]}, {"w": 1}]})
    assert d.metadata["info"].tolist() == [{"w": 0.1, "n": [2, None]}, {"w": 1}]
    assert _saved(d, tmp_path).metadata["info"].tolist() == d.metadata["info"].tolist()
    tags = [["red", "big"], ["blue"]]
    kept = Corpus(ids=["a", "b"], texts=["x", "y"], metadata={"tags": tags}).metadata["tags"][0]
    assert kept == tags[0] and kept is not tags[0]  # (plain tags kept as they are, copied since 0208d02: the
    # caller's lists changed afterwards no longer reach the corpus behind its filter codes)


# ------------------------------------------------------------------ 3. a PCA counts the documents with text only
def _with_blanks(n_blank: int, n_text: int) -> Corpus:
    texts = [""] * n_blank + [f"cell protein {i} gene {i * 7}" for i in range(n_text)]
    return Corpus(ids=[f"d{i}" for i in range(n_blank + n_text)], texts=texts)


def test_a_pca_counts_the_documents_with_text_and_names_the_blank_ones():
    from ragkit.encoders import HashingEncoder, register_encoder
    from ragkit.errors import DataError, ParamError
    from ragkit.retrievers import Dense

    register_encoder("fixes-a-hash", HashingEncoder(dim=32), replace=True)
    for n_text, span in ((2, "at most 1 dimensions.*or choose at most pca:1"), (1, "at most 0 dimensions.*or fit "
                                                                                   "with reduce: none")):
        # 5 blank + 2 with text fitted the PCA on 2 vectors; 5 blank + 1: 'PCA needs at least 2 vectors, got 1'
        with pytest.raises(ParamError, match=rf"(?s)^dense\.reduce: 'pca:4' fits 4 principal components on the "
                                             rf"corpus, which has {5 + n_text} documents, 5 of them blank \('d0', "
                                             rf"'d1', 'd2', \.\.\.: empty.*never indexed, so {n_text} with text: "
                                             rf"centred, they span {span}") as e:
            Dense(model="fixes-a-hash", reduce="pca:4").fit(_with_blanks(5, n_text))
        assert "at least 5 documents with text" in str(e.value)
    with pytest.raises(ParamError, match=r"which has 4 documents, 3 of them blank .* so 1 with text"):
        Dense(model="fixes-a-hash", reduce="pca:2").fit(_with_blanks(3, 1))
    with pytest.raises(DataError, match=r"all 5 documents of the corpus are blank"):
        Dense(model="fixes-a-hash", reduce="pca:4").fit(_with_blanks(5, 0))
    with pytest.raises(ParamError, match=r"which has 3 documents: centred, they span at most 2 dimensions"):
        Dense(model="fixes-a-hash", reduce="pca:4").fit(_with_blanks(0, 3))  # (no blank one: as before)
    assert Dense(model="fixes-a-hash", reduce="pca:4").fit(_with_blanks(5, 5)).index_.n_alive == 5


# ------------------------------------------------------------------ 4. dbnorm of no document: fit_banks's banks
def test_dbnorm_of_no_document_describes_its_banks_as_dbnorm_dense_does():
    """DBNorm kept its own empty-corpus branch (``dim: None``), where fit_banks gives dbnorm_dense's (the width)."""
    from ragkit.encoders import HashingEncoder, register_encoder
    from ragkit.filters.dbnorm import DBNorm, DBNormDense

    register_encoder("fixes-a-hash", HashingEncoder(dim=32), replace=True)
    empty = Corpus(ids=[], texts=[])
    rerank, dense = DBNorm(model="fixes-a-hash").fit(empty), DBNormDense(model="fixes-a-hash", k=5).fit(empty)
    assert {**rerank.info_, "penalty_shift": 0.0} == dense.info_ and rerank.info_["dim"] == 32
    assert len(rerank.log_z_q_) == len(rerank.active_g_) == 0
