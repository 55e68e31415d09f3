"""Corpus, metadata filters and Run built by hand: copies and pickles stay read-only, nested metadata is the
corpus's own, ids from records follow the constructor's rules, and a Run's own methods work on what it accepts."""

from __future__ import annotations

import copy
import pickle

import pytest

from ragkit import Corpus


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda c: pickle.loads(pickle.dumps(c))], ids=["deepcopy", "pickle"])
def test_copied_or_unpickled_corpus_stays_read_only(clone) -> None:
    c = Corpus(ids=["a", "b", "c"], texts=["x", " ", "z"],
               metadata={"year": [2001, 2002, 2003], "tags": [["x"], [], ["y"]]})
    c.blank  # (worked out: pickled with the corpus)
    c.mask({"year": 2001})
    p = clone(c)
    arrays = [p.ids, p.texts, p.titles, p.metadata["year"], p.metadata["tags"], p.__dict__["_blank"]]
    assert not any(a.flags.writeable for a in arrays)
    with pytest.raises(ValueError, match="read-only"):
        p.ids[0] = "zzz"
    with pytest.raises(ValueError, match="read-only"):
        p.metadata["year"][1] = 1999
    assert p.blank.tolist() == [False, True, False] and not p.blank.flags.writeable
    assert p.mask({"year": 2002}).tolist() == [False, True, False]
