"""``BM25.add`` while searches on other threads cache query words (a service adding documents as it serves)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ragkit.retrievers import BM25
from ragkit.types import Corpus

DOCS = Corpus(ids=["a", "b", "c"], texts=["red apples and pears", "green pears", "blue sky"])


class _Searched(str):
    """A cached query word whose hashing stands for another thread's search caching more unknown words at
    that moment (``_s2u.update``), as ``add`` walks the set."""

    owner: BM25
    calls = 0

    def __hash__(self) -> int:
        _Searched.calls += 1
        self.owner._s2u.add(f"{str(self)}-{_Searched.calls}")
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


def test_add_while_searches_cache_unknown_words() -> None:
    """``add`` walked the live set of unknown query words, which a search on another thread was extending:
    "Set changed size during iteration" on every add, for as long as unknown words kept coming (100 of 100
    adds failed under a stream of unknown query words)."""
    r = BM25(k=5).fit(DOCS)
    r.search(["zebra quokka"])
    _Searched.owner = r
    word = _Searched("quagga")
    r._s2u.add(word)
    assert r._s2i is not None
    r._s2i[word] = -1
    r.add(Corpus(ids=["d"], texts=["a zebra in the sky"]))
    assert r.search(["zebra"]).doc_ids[0].tolist() == ["d"]


def test_a_word_cached_as_unknown_during_an_add_is_indexed(monkeypatch: Any) -> None:
    """A search between ``add`` installing its word cache and counting the new documents cached a word of
    those documents as not indexed (-1); the add then counted it as no term, and no query found it there."""
    r = BM25(k=5).fit(DOCS)
    texts = r._texts

    def searched_meanwhile(corpus: Corpus) -> Any:
        out = texts(corpus)
        r.search(["kumquat"])  # another thread's search, in the gap
        return out

    monkeypatch.setattr(r, "_texts", searched_meanwhile)
    r.add(Corpus(ids=["d"], texts=["a kumquat tree"]))
    fresh = BM25(k=5).fit(Corpus(ids=["a", "b", "c", "d"], texts=[*DOCS.texts, "a kumquat tree"]))
    got, want = r.search(["kumquat"]), fresh.search(["kumquat"])
    assert got.doc_ids[0].tolist() == want.doc_ids[0].tolist() == ["d"]
    np.testing.assert_array_equal(got.scores[0], want.scores[0])
