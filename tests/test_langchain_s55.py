"""RagkitRetriever's add, review s55: one encoding per encoder key however the steps of that key are placed (an MMR
before a Dense, two Dense), handing each step the vectors its own add would have encoded; a kNN-Embed fitted with
fit_vectors refused before any encoding."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import Document

from ragkit.encoders import HashingEncoder, register_encoder, unregister_encoder
from ragkit.errors import DataError
from ragkit.filters.mmr import MMR
from ragkit.integrations.langchain import RagkitRetriever
from ragkit.pipelines import RRF, Parallel, Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.retrievers.knn_embed import KnnEmbed
from ragkit.types import Corpus

SPY = "s55-lc-spy"
TEXTS = [f"text {['cell', 'river'][i % 2]} number {i}" for i in range(60)]
NEW = ["new cell protein text", "new river water text"]


class _Spy(HashingEncoder):
    """Hashing vectors scaled by a length per text (not unit rows: a dot-product model's, which a ``metric="ip"``
    index ranks by), counting its encode calls."""

    calls: list[int]

    def encode(self, texts, **kw):
        self.calls.append(len(texts))
        vecs = np.asarray(super().encode(texts, **kw), dtype=np.float32)
        return vecs * np.array([1.0 + len(t) % 5 for t in texts], dtype=np.float32)[:, None]


@pytest.fixture
def spy(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    enc = _Spy(dim=32)
    enc.calls = []
    register_encoder(SPY, enc, replace=True)
    try:
        yield enc
    finally:
        unregister_encoder(SPY)


_SHAPES = {
    # MMR comes first in the walk: its vectors (unit rows) are not the Dense ip index's
    "mmr-before-dense": lambda: Pipeline([Parallel([Pipeline([BM25(k=10), MMR(model=SPY, k=5)]),
                                                    Dense(model=SPY, k=5, metric="ip")], fuse=RRF())]),
    "two-dense": lambda: Pipeline([Parallel([Dense(model=SPY, k=5), Dense(model=SPY, k=6, metric="ip")],
                                            fuse=RRF())]),
    "dense-pca|mmr": lambda: Pipeline([Dense(model=SPY, k=10, reduce="pca:8"), MMR(model=SPY, k=5)]),
}


def _leaves(r):
    from ragkit.pipelines.yaml import walk_leaves

    return [leaf for _, leaf in walk_leaves(r.pipeline)]


@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_add_encodes_once_per_key_and_hands_each_step_its_vectors(spy, monkeypatch, shape):
    """Parallel([BM25 | MMR, Dense]) and two Dense on one encoder key encoded the added documents twice ([2, 2]): the
    Dense branch of the encoding ahead never looked for the key's vectors, it only wrote them.  Once now; and every
    step ends as an add that encodes for itself (no encoding ahead) leaves it: the Dense of metric="ip" gets the
    encoder's vectors, not MMR's unit rows."""
    r = RagkitRetriever.from_texts(TEXTS, pipeline=_SHAPES[shape](), k=5)
    spy.calls.clear()
    r.add_texts(NEW, ids=["n1", "n2"])
    assert spy.calls == [2], spy.calls

    ref = RagkitRetriever.from_texts(TEXTS, pipeline=_SHAPES[shape](), k=5)
    monkeypatch.setattr(RagkitRetriever, "_encode_ahead", lambda self, new: {})  # each step's add encodes
    ref.add_texts(NEW, ids=["n1", "n2"])
    for got, want in zip(_leaves(r), _leaves(ref), strict=True):
        assert got.corpus_.ids.tolist() == want.corpus_.ids.tolist()
        if isinstance(got, Dense):
            ix, ref_ix = got.index_, want.index_
            assert ix.backend == ref_ix.backend == "numpy" and ix.n_slots == ref_ix.n_slots == 62
            np.testing.assert_allclose(np.asarray(ix.codes)[:62], np.asarray(ref_ix.codes)[:62], atol=1e-5)
        elif isinstance(got, MMR):
            np.testing.assert_allclose(np.asarray(got.vectors_), np.asarray(want.vectors_), atol=1e-6)
    for q in [*NEW, "text cell number 3", "river"]:
        a, b = r.invoke(q), ref.invoke(q)
        assert [d.id for d in a] == [d.id for d in b], q
        np.testing.assert_allclose([d.metadata["score"] for d in a], [d.metadata["score"] for d in b], atol=1e-5)
    assert "n1" in {d.id for d in r.invoke("new cell protein text")}


def test_add_to_a_knn_embed_fitted_on_given_vectors_is_refused_before_any_encoding(spy):
    """A KnnEmbed fitted with fit_vectors takes only vectors of its space in an add, which add_texts cannot give: it
    was refused by knn_embed.add itself, after the documents were encoded (twice) and Dense had added them (then
    undone).  Refused now before any encoding, naming the step, with nothing edited."""
    spy.cache_enabled = True
    c = Corpus.from_texts(TEXTS, ids=[f"d{i}" for i in range(60)])
    knn = KnnEmbed(model=SPY, k=5, n_clusters=3).fit_vectors(
        c, np.random.default_rng(0).standard_normal((60, 32)).astype(np.float32))
    dense = Dense(model=SPY, k=5).fit(c)
    pipe = Pipeline([Parallel([dense, knn], fuse=RRF())])
    pipe.corpus_ = c
    r = RagkitRetriever(pipeline=pipe, k=5)
    spy.calls.clear()
    with pytest.raises(DataError) as e:
        r.add_texts(["new cell"], ids=["n1"])
    said = str(e.value)
    assert said.startswith("add_texts: pipeline[0].parallel.branches[1].knn_embed: knn_embed.add: no vectors given "
                           "for the 1 new document, but this retriever was fitted with fit_vectors"), said
    assert "encoding them with 's55-lc-spy' would cluster and score them in another space" in said, said
    assert spy.calls == []
    assert len(dense.corpus_) == 60 and len(knn.corpus_) == 60 and dense.index_.n_slots == 60
    with pytest.raises(DataError, match=r"^add_documents: .*knn_embed\.add: no vectors given for the 2 new documents"):
        r.add_documents([Document(page_content=t) for t in NEW])
    assert spy.calls == []
    r.delete(["d0"])  # (a removal needs no vectors: still edits)
    assert len(dense.corpus_) == 59 and len(knn.corpus_) == 59
