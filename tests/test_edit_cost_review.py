"""Edits of an index: BM25's add / remove stay equal to a refit while costing what the edit touches (runs of
postings copied, the duplicate-id check on the new ids, no rebuild of the word cache), and every operator's
``add`` refuses a metadata value of another kind than the field holds, before changing anything."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.errors import DataError
from ragkit.retrievers import (
    BM25,
    Dense,
    bm25 as bm25_module,  # noqa: I001
)
from ragkit.types import Corpus

register_encoder("edit-cost-hash", HashingEncoder(dim=16), replace=True)

_WORDS = ("cancer cells tumour growth vitamin protein gene mouse brain heart blood insulin virus immune therapy "
          "dose trial risk patients zebra quokka running runs ran").split()


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=int(rng.integers(0, 12)))) + f" w{i % 37} uniq{seed}x{i}"
            for i in range(n)]


def _corpus(ids: list[str], texts: list[str]) -> Corpus:
    return Corpus(ids=ids, texts=texts, metadata={"year": [2000 + i % 7 for i in range(len(ids))]})


def _answers(bm: BM25, queries: list[str]) -> list[tuple[list[str], list[float]]]:
    run = bm.search(queries)
    return [(run.doc_ids[i].tolist(), run.rankings[i].scores.tolist()) for i in range(len(queries))]


@pytest.mark.parametrize("variant", ["okapi", "lucene"])
@pytest.mark.parametrize("runs", [True, False], ids=["postings-in-runs", "postings-placed"])
def test_an_add_remove_sequence_scores_as_a_refit_bit_for_bit(monkeypatch, variant, runs):
    """Adds (one document, a batch, words new to the index, words a search had looked up before they were
    indexed: 'zebras' stems to an indexed 'zebra' only after the add) and removes, then the same ids and the
    same float64 scores as a fit on the documents left, and the same idf per term."""
    monkeypatch.setattr(bm25_module, "_RUNS_PER_POSTING", 1 if runs else 10**9, raising=False)
    texts, ids = _texts(260, 1), [f"d{i}" for i in range(260)]
    texts[200] = "zebra crossing " + texts[200]
    queries = ["cancer cells", "zebras crossing", "quokka", "w3 heart", "running dose", "newword"]
    bm = BM25(k=20, variant=variant).fit(_corpus(ids[:150], texts[:150]))
    bm.search(["zebras", "crossings", "newwords"])  # words not indexed yet, cached as such
    bm.add(_corpus(ids[150:151], texts[150:151]))
    bm.add(_corpus(ids[151:230], texts[151:230]))
    bm.remove(["d3", "d151", "d17"])
    bm.add(_corpus(["n1"], ["newword newword cancer"]))
    bm.remove("d229")
    bm.add(_corpus(ids[230:260], texts[230:260]))
    keep = [i for i in range(260) if ids[i] not in ("d3", "d151", "d17", "d229")]
    ref_ids = [ids[i] for i in keep if i < 230] + ["n1"] + ids[230:260]
    ref_texts = [texts[i] for i in keep if i < 230] + ["newword newword cancer"] + texts[230:260]
    ref = BM25(k=20, variant=variant).fit(_corpus(ref_ids, ref_texts))
    assert bm.corpus_.ids.tolist() == ref.corpus_.ids.tolist()
    assert _answers(bm, queries) == _answers(ref, queries)
    assert ("n1" in _answers(bm, ["newwords"])[0][0]) and ("d200" in _answers(bm, ["zebras"])[0][0])
    idf = dict(zip(bm.terms(), bm.idf_[[bm.vocab_[t] for t in bm.terms()]].tolist()))
    assert idf == dict(zip(ref.terms(), ref.idf_[[ref.vocab_[t] for t in ref.terms()]].tolist()))
    terms = sorted(ref.vocab_)
    assert sorted(bm.vocab_) == terms
    assert np.array_equal(bm.doc_freqs()[[bm.vocab_[t] for t in terms]],
                          ref.doc_freqs()[[ref.vocab_[t] for t in terms]])
    assert np.array_equal(bm.doc_lengths(), ref.doc_lengths())


def test_a_duplicate_id_is_refused_naming_it_and_nothing_changes():
    bm = BM25(k=5).fit(_corpus(["a", "b", "c"], ["red apple", "green pear", "blue car"]))
    with pytest.raises(DataError, match=r"bm25.add: 1 document id is already indexed \(e.g. \['b'\]\)"):
        bm.add(_corpus(["z", "b"], ["red", "pear"]))
    assert bm.corpus_.ids.tolist() == ["a", "b", "c"] and "z" not in bm.corpus_._lookup()


def _dense() -> Dense:
    return Dense(k=5, model="edit-cost-hash")


@pytest.mark.parametrize("make", [lambda: BM25(k=5), _dense], ids=["bm25", "dense"])
def test_add_refuses_a_metadata_value_of_another_kind_before_changing_anything(make):
    """Fitted with integer years, ``add`` of a document whose year is "2005" was accepted, and
    ``filter={"year": 2005}`` then missed it (a warning only); now a DataError names the operator, the field and
    the document, and the index is as it was."""
    op = make().fit(Corpus(ids=["a", "b"], texts=["red cancer", "blue cells"], metadata={"year": [2004, 2005]}))
    who = type(op).__name__.lower()
    before = (op.corpus_.ids.tolist(), op.search({"q": "cancer cells"}).to_dict())
    with pytest.raises(DataError, match=rf"{who}\.add: document 'n2': metadata 'year' is '2005' \(a string\), but "
                                        r"the field holds numbers"):
        op.add(Corpus(ids=["n2"], texts=["zzz cancer"], metadata={"year": ["2005"]}))
    assert (op.corpus_.ids.tolist(), op.search({"q": "cancer cells"}).to_dict()) == before
    op.add(Corpus(ids=["n3"], texts=["zzz cancer"], metadata={"year": [2005]}))  # the field's own kind
    op.add(Corpus(ids=["n4"], texts=["zzz"], metadata={"lang": ["en"]}))  # a field new to the index
    with pytest.raises(DataError, match=rf"{who}\.add: document 'n5': metadata 'lang' is 3"):
        op.add(Corpus(ids=["n5"], texts=["zzz"], metadata={"lang": [3], "year": [2001]}))
    assert "n3" in op.search({"q": "zzz cancer"}, filter={"year": 2005}).to_dict()["q"]
    assert "n5" not in op.corpus_._lookup()


def test_a_field_held_with_two_kinds_takes_either_and_the_kinds_are_read_once(monkeypatch):
    """A corpus may be fitted holding two kinds in a field (a filter warns): an add of either kind is no new
    mix.  The held corpus's kinds are read once and carried over to the grown corpus, not read from every
    document at each add."""
    import ragkit.metadata as metadata

    op = BM25(k=5).fit(Corpus(ids=["a", "b"], texts=["x", "y"], metadata={"year": [2005, "2005"]}))
    op.add(Corpus(ids=["c"], texts=["z"], metadata={"year": ["2006"]}))
    seen: list[int] = []
    real = metadata._column_kinds
    monkeypatch.setattr(metadata, "_column_kinds", lambda c, k: seen.append(len(c)) or real(c, k))
    for i in range(3):
        op.add(Corpus(ids=[f"n{i}"], texts=["z"], metadata={"year": [2007]}))
    assert seen == [1, 1, 1]  # the new document's column only, each add
    assert op.corpus_.metadata["year"].tolist() == [2005, "2005", "2006", 2007, 2007, 2007]


def test_corpus_concat_refuses_a_kind_the_field_does_not_hold():
    """Every operator's add grows its corpus through Corpus.concat (the cosine adapter's too), where the check
    is."""
    held = Corpus(ids=["a"], texts=["x"], metadata={"year": [2004]})
    with pytest.raises(DataError, match=r"cosine_adapter\.add: document 'b': metadata 'year' is '2005'"):
        held.concat(Corpus(ids=["b"], texts=["y"], metadata={"year": ["2005"]}), "cosine_adapter.add")
    assert held.concat(Corpus(ids=["b"], texts=["y"], metadata={"year": [None]})).metadata["year"].tolist() == [
        2004, None]


def test_cosine_adapter_add_names_itself_when_a_kind_is_refused() -> None:
    """The adapter's add grew its corpus through Corpus.concat without naming itself: the refusal said
    'Corpus.concat', not the operator whose add it was."""
    from ragkit.errors import DataError
    from ragkit.filters import CosineAdapter

    adapter = CosineAdapter()
    adapter.corpus_ = Corpus(ids=["a"], texts=["x"], metadata={"year": [2004]})
    adapter._check_fitted = lambda: None  # type: ignore[method-assign]  # (only its corpus is read)
    with pytest.raises(DataError, match="cosine_adapter.add"):
        adapter.add(Corpus(ids=["b"], texts=["y"], metadata={"year": ["2005"]}))
    with pytest.raises(DataError, match="already held"):
        adapter.add(Corpus(ids=["a"], texts=["y"], metadata={"year": [2005]}))
