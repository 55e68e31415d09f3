"""BM25 review s53: set_collection refuses what a save's load refuses (avgdl inf / NaN / a bool)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import DataError
from ragkit.retrievers import BM25
from ragkit.types import Corpus

TEXTS = ["red apples and pears", "green pears", "red cars", "blue sky over the sea", "apples of the sky"]


@pytest.mark.parametrize("avgdl", [math.inf, -math.inf, math.nan, 0.0, -1.0, True, False, np.bool_(True),
                                   np.float32("inf"), "3.0", None])
def test_set_collection_refuses_an_avgdl_a_load_refuses(avgdl: object) -> None:
    """Was: avgdl=inf (or True) was taken, and the save it made held an avgdl its load refused."""
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    with pytest.raises(DataError, match=r"^bm25\.set_collection: expected avgdl a finite number > 0 \(the average "
                                        r"document length\), got .*\("):
        bm.set_collection(bm.idf_, avgdl)  # type: ignore[arg-type]
    assert bm.collection_ is None


@pytest.mark.parametrize("avgdl", [3.0, 3, np.float32(2.5), np.int64(4), np.float64(1e-3)])
def test_set_collection_takes_a_finite_positive_avgdl_and_its_save_loads(tmp_path: Path, avgdl: object) -> None:
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    bm.set_collection(bm.idf_ * 1.5, avgdl)  # type: ignore[arg-type]
    bm.save(tmp_path / "bm")
    back = BM25.load(tmp_path / "bm")
    assert back.collection_ is not None and back.collection_["avgdl"] == float(avgdl)  # type: ignore[arg-type]
    a, b = bm.search(["red sky"]), back.search(["red sky"])
    assert a.doc_ids[0].tolist() == b.doc_ids[0].tolist() and np.array_equal(a.scores[0], b.scores[0])


def test_set_collection_names_a_wrong_idf() -> None:
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    n = len(bm.vocab_)
    with pytest.raises(DataError, match=rf"^bm25\.set_collection: expected {n} finite idf values .*got idf of "
                                        rf"shape \({n - 1},\)$"):
        bm.set_collection(bm.idf_[:-1], 3.0)
    with pytest.raises(DataError, match=r"holding values that are not finite$"):
        bm.set_collection(np.where(np.arange(n) == 0, np.nan, bm.idf_), 3.0)
