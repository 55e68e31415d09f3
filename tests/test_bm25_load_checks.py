"""A saved BM25 folder whose files were edited and whose checksums were recomputed (so that checksum verification
passes): each inconsistency is an ArtifactError at load naming the file and what it should hold, never a crash in
scipy or numpy later, nor a load that silently searches wrong.  Was: duplicate terms in vocab.json loaded and the
first search raised scipy's "axis 1 index ... exceeds matrix dimension"; integer terms loaded and found nothing; a
string idf.npy crashed the load with a numpy ufunc error; an int8 (or NaN) idf.npy loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from ragkit._files import folder_checksums
from ragkit.errors import ArtifactError
from ragkit.operator import Operator
from ragkit.retrievers import BM25
from ragkit.types import Corpus

TEXTS = ["red apples and pears", "green pears", "red cars", "blue sky over the sea", "apples of the sky"]


def _saved(tmp_path: Path, collection: bool = False) -> Path:
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    if collection:
        bm.set_collection(bm.idf_ * 1.5, 3.0)
    bm.save(tmp_path / "bm")
    return tmp_path / "bm"


def _rehash(folder: Path) -> None:
    """Recompute the folder's checksums (what a crafted folder does to pass verification)."""
    (folder / "checksums.json").unlink()
    (folder / "checksums.json").write_text(json.dumps(folder_checksums(folder)))


def _npy(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / f"{name}.npy"
        np.save(path, make(np.load(path)), allow_pickle=False)
    return edit


def _vocab(make: Callable[[list[str]], Any]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "vocab.json"
        path.write_text(json.dumps(make(json.loads(path.read_text()))))
    return edit


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "vocab_repeated": (_vocab(lambda t: [t[0]] * len(t)), r"vocab\.json: expected distinct terms"),
    "vocab_one_repeat": (_vocab(lambda t: [*t[:-1], t[0]]), r"vocab\.json: expected distinct terms.* again at entry"),
    "vocab_ints": (_vocab(lambda t: list(range(len(t)))), r"vocab\.json: expected a JSON list of terms \(strings\)"),
    "vocab_null": (_vocab(lambda t: [*t[:-1], None]), r"vocab\.json: .*NoneType"),
    "vocab_object": (_vocab(lambda t: {"terms": t}), r"vocab\.json: expected a JSON list of terms"),
    "idf_str": (_npy("idf", lambda a: np.array(["x"] * len(a))), r"idf\.npy: .*dtype <U1 .*expected \d+ float"),
    "idf_int8": (_npy("idf", lambda a: a.astype(np.int8)), r"idf\.npy: .*dtype int8"),
    "idf_nan": (_npy("idf", lambda a: np.where(np.arange(len(a)) == 2, np.nan, a)), r"idf\.npy: a value nan"),
    "idf_2d": (_npy("idf", lambda a: np.stack([a, a], 1)), r"idf\.npy: an array of shape \(\d+, 2\)"),
    "idf_short": (_npy("idf", lambda a: a[:-1]), r"idf\.npy: an array of shape"),
    "lengths_str": (_npy("doc_lengths", lambda a: a.astype(str)), r"doc_lengths\.npy: .*dtype <U"),
    "lengths_negative": (_npy("doc_lengths", lambda a: -a), r"doc_lengths\.npy: a value -"),
    "lengths_inf": (_npy("doc_lengths", lambda a: a + np.inf), r"doc_lengths\.npy: a value inf"),
    "lengths_short": (_npy("doc_lengths", lambda a: a[:2]), r"doc_lengths\.npy: an array of shape \(2,\)"),
    "weights_nan": (_npy("weights", lambda a: np.where(np.arange(len(a)) == 1, np.nan, a)),
                    r"weights\.npy: a value nan at posting 1 \(1 of [\d,]+ not finite"),
    "weights_short": (_npy("weights", lambda a: a[:3]), r"weights\.npy: an array of shape \(3,\)"),
    "tf_data_int64": (_npy("tf_data", lambda a: a.astype(np.int64)), r"tf_data\.npy: dtype int64"),
    "layout": (lambda f: (f / "weights.json").write_text('{"layout": "docs_x_terms"}'), r"weights\.json: expected"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_bm25_folder_is_an_artifact_error_naming_the_file(tmp_path: Path, case: str) -> None:
    folder = _saved(tmp_path)
    edit, message = CASES[case]
    edit(folder)
    _rehash(folder)
    # (a memory-mapped load whose checksums verified does not read every weight: by design, bm25.py's _load)
    for mmap in (False,) if case == "weights_nan" else (False, True):
        with pytest.raises(ArtifactError, match=message):
            Operator.load(folder, mmap=mmap).search(["red apples"])


@pytest.mark.parametrize("case,message", [
    ("str", r"collection_idf\.npy: .*dtype <U"), ("nan", r"collection_idf\.npy: a value nan"),
    ("avgdl", r"collection\.json: expected a JSON object whose 'avgdl' is a finite number > 0")])
def test_crafted_collection_statistics_are_an_artifact_error(tmp_path: Path, case: str, message: str) -> None:
    folder = _saved(tmp_path, collection=True)
    idf = np.load(folder / "collection_idf.npy")
    if case == "str":
        np.save(folder / "collection_idf.npy", idf.astype(str))
    elif case == "nan":
        np.save(folder / "collection_idf.npy", idf * np.nan)
    else:
        (folder / "collection.json").write_text('{"avgdl": -1}')
    _rehash(folder)
    with pytest.raises(ArtifactError, match=message):
        Operator.load(folder).search(["red apples"])


def test_untouched_folder_loads_and_searches_as_saved(tmp_path: Path) -> None:
    """The checks refuse nothing ragkit writes: plain, with collection statistics, memory-mapped."""
    for collection in (False, True):
        folder = _saved(tmp_path / str(collection), collection)
        want = BM25.load(folder, mmap=False).search(["red apples", "sky"])
        for mmap in (False, True):
            got = Operator.load(folder, mmap=mmap).search(["red apples", "sky"])
            for a, b in zip(got.rankings, want.rankings):
                np.testing.assert_array_equal(a.rows, b.rows)
                np.testing.assert_array_equal(a.scores, b.scores)
