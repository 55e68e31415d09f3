"""``copy.deepcopy`` (and pickle) of a fitted :class:`VectorIndex` / ``Dense``.

Was: a deep copy of an HNSW index failed (``TypeError: cannot pickle 'usearch.compiled.Index'``), and the deep
copy of a ``rescore=True`` index held the original's float-vectors scratch file and folder (``_tmp`` /
``_floats_own``): the copy's ``add`` grew or deleted the original's file, and once the original was collected (its
scratch folder removed) the copy's ``add`` raised FileNotFoundError.  Now the graph is the copy's own
(``Index.copy``, or a fresh view of an unchanged mapped file), the copy owns no scratch file of the original, and
read-only (memory-mapped) arrays are shared.
"""

from __future__ import annotations

import copy
import gc
import os
import pickle

import numpy as np
import pytest
from conftest import HashedEncoder, file_mapped

from ragkit import Corpus
from ragkit.encoders import register_encoder
from ragkit.retrievers import Dense
from ragkit.retrievers._index import VectorIndex

register_encoder("deepcopy-hashed", HashedEncoder("deepcopy-hashed-v1", 16), replace=True)
TEXTS = ["red apple pie", "green apple", "running shoes", "blue shoes for runners", "apple crumble",
         "a runner's diary", "pie crust", "shoe laces", "orchard apples", "marathon training"]
QUERIES = ["apple", "shoes", "runner", "pie"]


def _corpus(texts: list[str] = TEXTS, start: int = 0) -> Corpus:
    return Corpus(ids=[f"d{start + i}" for i in range(len(texts))], texts=texts)


def _dense(search: str, rescore: bool) -> Dense:
    d = Dense(model="deepcopy-hashed", k=4, search=search, rescore=rescore, dtype="i8" if rescore else "f32",
              exact_max=0 if search == "hnsw" else 10_000)
    d.fit(_corpus())
    return d


def _answers(d: Dense) -> dict[str, dict[str, float]]:
    return d.search(QUERIES, k=4).to_dict()


@pytest.mark.parametrize("search, rescore", [("hnsw", False), ("hnsw", True), ("exact", True)])
def test_a_deep_copy_of_dense_is_its_own(search, rescore):
    """The copy answers as the original; add/remove on it leave the original's results (and scratch file) as
    they were; it goes on working after the original is deleted and collected."""
    d = _dense(search, rescore)
    before = _answers(d)
    own = d.index_._floats_own
    size = os.path.getsize(own) if own is not None else None
    twin = copy.deepcopy(d)
    ix, tx = d.index_, twin.index_
    assert tx is not ix and _answers(twin) == before
    if search == "hnsw":
        assert tx.usearch is not ix.usearch and len(tx.usearch) == len(ix.usearch)
    assert tx._floats_own is None and tx._tmp is None  # the original's scratch file and folder are not the copy's
    if rescore:
        assert tx.floats is ix.floats  # a read-only memory map: shared, not read into memory
    twin.add(_corpus(["apple tart", "trail running shoes"], start=100))
    twin.remove(["d0", "d2"])
    assert list(next(iter(twin.search(["apple tart"], k=1).to_dict().values()))) == ["d100"]
    assert _answers(d) == before
    if own is not None:  # the original's scratch file: neither grown nor deleted by the copy
        assert os.path.getsize(own) == size and ix._floats_own == own
        assert tx._floats_own is not None and os.path.dirname(tx._floats_own) != os.path.dirname(own)
    # the original edits its own index, not the copy's
    d.add(_corpus(["apple strudel"], start=200))
    assert "d200" not in {doc for hits in twin.search(["apple strudel"], k=12).to_dict().values() for doc in hits}
    del d, ix
    gc.collect()  # the original gone (its scratch folder removed): the copy still adds, removes and searches
    twin.add(_corpus(["orange marmalade"], start=300))
    twin.remove(["d1"])
    hits = twin.search(["orange marmalade"], k=1).to_dict()
    assert list(next(iter(hits.values()))) == ["d300"]


@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_a_deep_copy_of_a_memory_mapped_index_shares_the_maps(tmp_path, search):
    """An index loaded with ``mmap=True``: the copy shares the read-only maps (codes, float vectors) and views the
    same unchanged usearch file; its edits leave the original as it was."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    VectorIndex(search=search, exact_max=0 if search == "hnsw" else 10_000, rescore=True).build(x).save(tmp_path)
    ix = VectorIndex.load(tmp_path, mmap=True)
    before = ix.search(x[:5], 3)
    twin = copy.deepcopy(ix)
    assert twin.floats is ix.floats and file_mapped(twin.floats)
    if search == "exact":
        assert twin.codes is ix.codes
    else:
        assert twin._view and twin.usearch is not ix.usearch and len(twin.usearch) == len(ix.usearch)
    slots = twin.add(rng.standard_normal((4, 8)).astype(np.float32))
    twin.remove(np.array([0, 1]))
    assert slots.tolist() == [64, 65, 66, 67]
    for a, b in zip(ix.search(x[:5], 3), before):
        np.testing.assert_array_equal(a, b)
    assert getattr(ix, "_view", False) == (search == "hnsw") and ix.n_slots == 64


def test_a_pickled_index_owns_no_scratch_file_of_the_original():
    """Pickling keeps no scratch ownership: an unpickled copy's edit never grows or deletes the original's
    float-vectors file; an HNSW index pickles too (its graph as usearch's bytes)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    ix = VectorIndex(search="exact", rescore=True).build(x)
    own, size = ix._floats_own, os.path.getsize(ix._floats_own)
    back = pickle.loads(pickle.dumps(ix))
    assert back._floats_own is None and back._tmp is None
    back.add(rng.standard_normal((3, 8)).astype(np.float32))
    assert os.path.isfile(own) and os.path.getsize(own) == size and back._floats_own != own
    graph = VectorIndex(search="hnsw", exact_max=0).build(x)
    again = pickle.loads(pickle.dumps(graph))
    for a, b in zip(again.search(x[:4], 3), graph.search(x[:4], 3)):
        np.testing.assert_array_equal(a, b)
    again.add(x[:2])
    assert len(again.usearch) == 42 and len(graph.usearch) == 40


# ---------------------------------------------------------------- RagkitRetriever: deepcopy and model_copy(deep=True)
# Was: a plain deep copy of the retriever's pipeline (``copy.deepcopy``; ``model_copy(deep=True)``: pydantic's own,
# which skips ``__deepcopy__``): a memory-mapped index read into memory in the copy and its Corpus copied.  Now both
# go through the sharing copy the retriever makes of a learned pipeline (``_sharing_copy``).


@pytest.mark.parametrize("how", ["deepcopy", "model_copy"])
@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_a_deep_copy_of_a_retriever_shares_the_maps_and_edits_apart(tmp_path, search, how):
    from langchain_core.documents import Document

    from ragkit.integrations.langchain import RagkitRetriever
    from ragkit.operator import Operator

    _dense(search, rescore=False).save(tmp_path / "saved")
    r = RagkitRetriever(pipeline=Operator.load(tmp_path / "saved", mmap=True), k=2)
    before = [[d.id for d in r.invoke(q)] for q in QUERIES]
    twin = copy.deepcopy(r) if how == "deepcopy" else r.model_copy(deep=True)
    ix, tx = r.pipeline.index_, twin.pipeline.index_
    assert twin.pipeline is not r.pipeline and tx is not ix
    assert twin.pipeline.corpus_ is r.pipeline.corpus_  # immutable: shared
    if search == "exact":
        assert tx.codes is ix.codes and file_mapped(tx.codes)  # was: read into memory (a memmap of no file)
    else:
        assert tx.usearch is not ix.usearch and tx._view  # a fresh view of the same file
    assert [[d.id for d in twin.invoke(q)] for q in QUERIES] == before
    twin.add_documents([Document(page_content="apple tart", id="t1")])
    twin.delete(["d0"])
    assert [d.id for d in twin.invoke("apple tart")][:1] == ["t1"]
    assert [[d.id for d in r.invoke(q)] for q in QUERIES] == before
    r.add_documents([Document(page_content="apple strudel", id="s1")])  # each its own lock and index
    assert "s1" not in [d.id for d in twin.invoke("apple strudel", k=12)]
