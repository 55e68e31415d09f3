"""BM25 review s53: set_collection refuses what a save's load refuses (avgdl inf / NaN / a bool)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.retrievers import BM25
from ragkit.retrievers.bm25 import Tokenizer
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


@pytest.mark.parametrize(("kwargs", "arg", "given", "choices"), [
    ({"stopwords": "english"}, "stopwords", "'english'", "'lucene', 'none'"),
    ({"stopwords": "Lucene"}, "stopwords", "'Lucene'", "'lucene', 'none'"),
    ({"stopwords": None}, "stopwords", "None", "'lucene', 'none'"),
    ({"split": "regex"}, "split", "'regex'", "'alnum', 'unicode', 'whitespace'"),
    ({"split": "Unicode"}, "split", "'Unicode'", "'alnum', 'unicode', 'whitespace'"),
    ({"stemmer": "porter2"}, "stemmer", "'porter2'", "'porter', 'english', 'none'"),
    ({"stemmer": "Porter"}, "stemmer", "'Porter'", "'porter', 'english', 'none'"),
])
def test_tokenizer_refuses_a_value_outside_the_params_choices(kwargs: dict[str, object], arg: str, given: str,
                                                               choices: str) -> None:
    """Was: Tokenizer(stopwords="english") removed no stopword, split="regex" split as alnum, both silently, and
    stemmer="porter2" raised PyStemmer's KeyError "Stemming algorithm 'porter2' not found"."""
    field = "tokenizer" if arg == "split" else arg
    with pytest.raises(ParamError, match=rf"^Tokenizer: {arg} {re.escape(given)} is not one of "
                                         rf"{re.escape(choices)} \(the choices of BM25Params\.{field}\)$") as e:
        Tokenizer(**kwargs)  # type: ignore[arg-type]
    assert e.value.path == f"Tokenizer.{arg}"


def test_tokenizer_positional_arguments_are_stopwords_stemmer_split() -> None:
    """Tokenizer("porter") is stopwords="porter": refused (it removed no stopword), not taken as a stemmer."""
    with pytest.raises(ParamError, match=r"^Tokenizer: stopwords 'porter' is not one of"):
        Tokenizer("porter")


def test_tokenizer_choices_are_the_params_choices() -> None:
    """Every combination of BM25Params' values makes a Tokenizer (one source of the choices)."""
    from typing import get_args

    from ragkit.retrievers.bm25 import BM25Params

    fields = BM25Params.model_fields
    for stop in get_args(fields["stopwords"].annotation):
        for stem in get_args(fields["stemmer"].annotation):
            for split in get_args(fields["tokenizer"].annotation):
                assert Tokenizer(stop, stem, split)(["The cats"])[0][-1] in {"cat", "cats"}
    assert Tokenizer("lucene", "none")(["the x"]) == [["x"]]
    assert Tokenizer("none", "porter", "whitespace")(["x"]) == [["x"]]


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_naming_the_weights_only(tmp_path: Path, mmap: bool, bad: float) -> None:
    """Was: "corrupt BM25 arrays: document ids 0..4 (the corpus has 5), weights that are not finite ...": the ids
    (sound, checked before) were named, and read whole again for the message."""
    BM25(k=3).fit(Corpus.from_texts(TEXTS)).save(tmp_path / "bm")
    w = np.load(tmp_path / "bm" / "weights.npy")
    w[[1, 3]] = bad
    np.save(tmp_path / "bm" / "weights.npy", w)
    with pytest.raises(ArtifactError) as e:
        BM25.load(tmp_path / "bm", mmap=mmap, verify=False)
    msg = str(e.value)
    assert "document ids" not in msg and "corpus" not in msg
    assert msg == (f"{tmp_path / 'bm' / 'weights.npy'}: corrupt BM25 arrays: weights that are not finite (2 of "
                   f"{len(w):,}; weight {float(bad)!r} at posting 1; expected finite float64 weights); save the index "
                   "again")
