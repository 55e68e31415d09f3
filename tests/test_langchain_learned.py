"""``RagkitRetriever(pipeline=..., corpus=...)`` with a pipeline that learned from judged training queries: on the
documents it was fitted on, what it learned is kept (a deep copy of it); on other documents without ``train=``,
refused before anything is fitted, saying what ``corpus=`` does and the two ways out; with ``train=``, learned
again on a fresh copy, the caller's pipeline untouched.  A step that learns only from judged queries (a
``cosine_adapter``) fitted through ``corpus=`` without ``train=`` is refused in the retriever's terms."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402

from ragkit import Corpus, TrainSet  # noqa: E402
from ragkit.errors import ParamError, RagkitError  # noqa: E402
from ragkit.integrations.langchain import RagkitRetriever  # noqa: E402
from ragkit.pipelines import Parallel, Pipeline  # noqa: E402
from ragkit.pipelines.fusion import RRF  # noqa: E402
from ragkit.retrievers import BM25  # noqa: E402

TEXTS = ["red apples", "green apple pie", "running shoes", "a runner runs"]
IDS = ["a", "b", "c", "d"]
FUSER = "pipeline[0].parallel.fuse.rrf"


def _corpus() -> Corpus:
    return Corpus.from_texts(TEXTS, ids=IDS)


def _other() -> Corpus:
    return Corpus.from_texts(["blue cars", "fast red car", "a slow bus", "buses and cars"], ids=["w", "x", "y", "z"])


def _train() -> TrainSet:
    return TrainSet({"q1": "apple", "q2": "runs", "q3": "red apple"},
                    {"q1": {"b": 1}, "q2": {"d": 1}, "q3": {"a": 1}})


def _learned_pipe() -> Pipeline:
    """BM25 twice fused by a learned RRF, fitted on :func:`_corpus` with three judged queries."""
    pipe = Pipeline([Parallel([BM25(k=5), BM25(k=5, stemmer="none")], fuse=RRF(learn=True, folds=2))])
    pipe.fit(_corpus(), _train())
    assert FUSER in pipe.learned()
    return pipe


def test_another_corpus_without_train_is_refused_saying_what_and_how():
    """Was: refitted a fresh copy on the documents and dropped the learned weights (``learned() == {}``), with
    only a logger line about ``fit`` that named neither the retriever nor ``corpus=``."""
    pipe = _learned_pipe()
    before = pipe.learned()
    with pytest.raises(RagkitError) as err:
        RagkitRetriever(pipeline=pipe, corpus=_other(), k=2)
    said = str(err.value)
    assert isinstance(err.value, ParamError)
    for part in ("RagkitRetriever", "learned from 3 judged training queries", FUSER, "corpus=",
                 "drops what it learned", "Leave corpus= out", "add_documents", "train=TrainSet"):
        assert part in said, (part, said)
    assert pipe.learned() == before and pipe.corpus_.ids.tolist() == IDS  # the caller's pipeline: not refitted


@pytest.mark.parametrize("same", ["object", "equal"])
def test_the_corpus_it_was_fitted_on_keeps_what_it_learned(same):
    """The very documents it searches (the same Corpus, or one equal to it): a copy of the fitted pipeline, what
    it learned kept; its own index (adding documents through the retriever leaves the caller's pipeline as is)."""
    pipe = _learned_pipe()
    docs = pipe.corpus_ if same == "object" else _corpus()
    r = RagkitRetriever(pipeline=pipe, corpus=docs, k=2)
    assert r.pipeline.learned() == pipe.learned() != {}
    assert r.pipeline is not pipe
    assert r.invoke("apple pie")[0].id == "b"
    r.add_documents([Document(page_content="apple crumble", id="e")])
    assert [d.id for d in r.invoke("crumble")][:1] == ["e"]
    assert pipe.corpus_.ids.tolist() == IDS and pipe.learned() != {}


def test_train_given_learns_again_on_a_copy_leaving_the_callers_pipeline():
    """Was: a fitted pipeline (a composite, stateless itself) was refitted in place: the caller's ``pipe``
    changed corpus and lost what it had learned."""
    pipe = _learned_pipe()
    before = pipe.learned()
    train = TrainSet({"p1": "red car", "p2": "bus", "p3": "cars"}, {"p1": {"x": 1}, "p2": {"y": 1}, "p3": {"z": 1}})
    r = RagkitRetriever(pipeline=pipe, corpus=_other(), train=train, k=2)
    assert r.pipeline is not pipe and FUSER in r.pipeline.learned()
    assert r.invoke("bus")[0].id == "y"
    assert pipe.learned() == before and pipe.corpus_.ids.tolist() == IDS


def test_a_fitted_pipeline_that_learned_nothing_is_refitted_on_a_copy():
    pipe = Pipeline([BM25(k=3)]).fit(_corpus())
    r = RagkitRetriever(pipeline=pipe, corpus=_other(), k=1)
    assert r.pipeline is not pipe and r.invoke("bus")[0].id == "y"
    assert pipe.corpus_.ids.tolist() == IDS


def test_a_saved_folder_that_learned(tmp_path):
    """A folder of a learned pipeline: on its own documents, loaded with what it learned (was: refitted without
    it); on others, refused naming the folder."""
    pipe = _learned_pipe()
    pipe.save(tmp_path / "saved")
    r = RagkitRetriever(pipeline=tmp_path / "saved", corpus=_corpus(), k=2)
    assert r.pipeline.learned() == pipe.learned()
    with pytest.raises(ParamError, match="learned from 3 judged training queries") as err:
        RagkitRetriever(pipeline=str(tmp_path / "saved"), corpus=_other(), k=2)
    assert str(tmp_path / "saved") in str(err.value)


def test_an_assigned_corpus_is_refused_and_the_retriever_kept():
    pipe = _learned_pipe()
    r = RagkitRetriever(pipeline=pipe, k=2)
    with pytest.raises(ParamError, match="Leave corpus= out"):
        r.corpus = _other()
    assert r.pipeline is pipe and r.invoke("apple pie")[0].id == "b"
    with pytest.raises(ParamError, match="Leave corpus= out"):
        RagkitRetriever.from_texts(["blue cars", "a slow bus"], pipeline=pipe)


def test_a_step_that_learns_only_from_judged_queries_is_refused_in_the_retrievers_terms():
    """Was: the Cosine Adapter's own ``fit`` error, "fit(corpus, train=...) (command line: --train-split)"."""
    yaml = "pipeline:\n  - dense: {k: 5}\n  - cosine_adapter: {target: recall, target_value: 0.9}\n"
    with pytest.raises(ParamError) as err:
        RagkitRetriever(pipeline=yaml, corpus=_corpus(), k=2)
    said = str(err.value)
    assert said.startswith("RagkitRetriever: corpus= fits the pipeline") and "train=TrainSet(queries, qrels)" in said
    assert "pipeline[1].cosine_adapter" in said and "with corpus=" in said
    assert "--train-split" not in said and "fit(corpus" not in said


# ---------------------------------------------------------------- the copy of a learned pipeline on its own documents
# Was: a deep copy of the whole fitted pipeline: twice its memory, a memory-mapped index (``mmap=True``) read into
# memory in the copy (its codes a memmap of no file), and an HNSW graph not copied at all (usearch's index does not
# pickle: TypeError).  Now read-only arrays (memory maps, corpus columns) and the Corpus are shared, the graph is
# mapped again from its file (or copied); edits through the retriever leave the caller's pipeline as it was.

from conftest import HashedEncoder, file_mapped  # noqa: E402

from ragkit.encoders import register_encoder  # noqa: E402
from ragkit.operator import Operator  # noqa: E402
from ragkit.retrievers import Dense  # noqa: E402

register_encoder("lc-learned-hashed", HashedEncoder("lc-learned-hashed-v1", 16), replace=True)
QUERIES = ["apple", "runs", "red apple pie", "shoes for a runner"]


def _dense_learned(search: str = "exact", rescore: bool = False) -> Pipeline:
    """BM25 and a dense retriever (hashed vectors) fused by a learned RRF, fitted on :func:`_corpus`."""
    dense = Dense(model="lc-learned-hashed", k=5, search=search, rescore=rescore, dtype="i8" if rescore else "f32",
                  exact_max=0 if search == "hnsw" else 10_000)
    pipe = Pipeline([Parallel([BM25(k=5), dense], fuse=RRF(learn=True, folds=2))])
    pipe.fit(_corpus(), _train())
    assert FUSER in pipe.learned()
    return pipe


def _answers(op: Operator) -> dict[str, dict[str, float]]:
    return op.search(QUERIES, k=4).to_dict()


def _edit_through(r: RagkitRetriever) -> None:
    """Documents added and deleted through the retriever (the copy's index grows, then loses rows)."""
    r.add_documents([Document(page_content="apple crumble", id="e"), Document(page_content="runner shoes", id="f")])
    assert [d.id for d in r.invoke("crumble")][:1] == ["e"]
    r.delete(["a", "f"])
    assert "a" not in [d.id for d in r.invoke("red apples", k=4)]


@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_a_memory_mapped_pipeline_is_shared_not_read_into_memory(tmp_path, search):
    """``Operator.load(..., mmap=True)`` then the retriever on its documents: the copy's codes are the caller's
    map of the file (was: read into memory, a memmap of no file), its corpus the caller's, its graph a view of
    the same file.  Edits through the retriever: the caller's
    pipeline answers as before, and can still be edited itself."""
    import numpy as np

    _dense_learned(search).save(tmp_path / "saved")
    loaded = Operator.load(tmp_path / "saved", mmap=True)
    ix = loaded.steps[0].branches[1].index_
    before = _answers(loaded)
    r = RagkitRetriever(pipeline=loaded, corpus=_corpus(), k=2)
    twin = r.pipeline.steps[0].branches[1].index_
    assert r.pipeline is not loaded and twin is not ix and r.pipeline.learned() == loaded.learned()
    assert r.pipeline.steps[0].branches[1].corpus_ is loaded.steps[0].branches[1].corpus_
    if search == "exact":
        assert isinstance(twin.codes, np.memmap) and file_mapped(twin.codes) and twin.codes is ix.codes
    else:
        assert twin.usearch is not ix.usearch and twin._view and len(twin.usearch) == len(ix.usearch)
    assert _answers(r.pipeline) == before
    _edit_through(r)
    assert _answers(loaded) == before and loaded.corpus_.ids.tolist() == IDS
    caller = RagkitRetriever(pipeline=loaded, k=2)  # the caller's own edits: its index, not the retriever's
    caller.add_documents([Document(page_content="apple tart", id="g")])
    assert [d.id for d in caller.invoke("tart")][:1] == ["g"] and "g" not in [d.id for d in r.invoke("tart", k=6)]


@pytest.mark.parametrize("search, rescore", [("exact", False), ("exact", True), ("hnsw", False)])
def test_edits_through_the_retriever_leave_the_callers_pipeline_as_it_was(search, rescore):
    """A pipeline fitted in memory: the retriever's copy is its own where an edit writes in place (the HNSW
    graph: was a TypeError, usearch's index does not deep-copy; the float vectors file of ``rescore``: grown in
    place, the caller's, while the copy held its name); the caller answers as before, and both can go on being
    edited, the caller's pipeline dropped or not."""
    import gc

    pipe = _dense_learned(search, rescore)
    before = _answers(pipe)
    r = RagkitRetriever(pipeline=pipe, corpus=_corpus(), k=2)
    assert r.pipeline.learned() == pipe.learned() and _answers(r.pipeline) == before
    _edit_through(r)
    assert _answers(pipe) == before and pipe.corpus_.ids.tolist() == IDS
    mine = RagkitRetriever(pipeline=pipe, k=2)
    mine.add_documents([Document(page_content="apple tart", id="g")])
    assert [d.id for d in mine.invoke("tart")][:1] == ["g"]
    del pipe, mine
    gc.collect()  # the caller's pipeline gone (its scratch folder removed): the retriever's copy still edits
    r.add_documents([Document(page_content="blue running shoes", id="h")])
    assert [d.id for d in r.invoke("blue running shoes")][:1] == ["h"]


def test_equal_corpora_with_nan_inside_metadata_values_are_the_same_documents():
    """Was: two corpora built apart from the same records, one metadata value a dict holding NaN, were called
    different (``{"v": nan} == {"v": nan}`` is False), and the retriever refused the learned pipeline on its own
    documents.  A missing value equals any missing value at any depth; other differences still count."""
    from ragkit.integrations._copies import _same_documents

    nan = float("nan")

    def corpus(meta: list[object]) -> Corpus:
        return Corpus(ids=IDS, texts=TEXTS, metadata={"x": meta})

    meta = [{"v": nan}, None, {"l": [1, nan]}, {"w": [{"u": nan}]}]
    pipe = Pipeline([Parallel([BM25(k=5), BM25(k=5, stemmer="none")], fuse=RRF(learn=True, folds=2))])
    pipe.fit(corpus(meta), _train())
    r = RagkitRetriever(pipeline=pipe, corpus=corpus([{"v": float("nan")}, None, {"l": [1, float("nan")]},
                                                     {"w": [{"u": float("nan")}]}]), k=2)
    assert r.pipeline.learned() == pipe.learned() != {}
    assert _same_documents(corpus(meta), corpus([{"v": None}, nan, {"l": [1, None]}, {"w": [{"u": None}]}]))
    for other in ([{"v": 1.0}, None, {"l": [1, nan]}, {"w": [{"u": nan}]}],
                  [{"v": nan}, None, {"l": [1, 2]}, {"w": [{"u": nan}]}],
                  [{"v": nan}, None, {"l": [1, nan]}, {"w": [{"u": nan, "t": 1}]}],
                  [{"v": nan}, {}, {"l": [1, nan]}, {"w": [{}]}]):
        assert not _same_documents(corpus(meta), corpus(other)), other
    with pytest.raises(ParamError, match="learned from 3 judged training queries"):
        RagkitRetriever(pipeline=pipe, corpus=corpus([{"v": 2.0}, None, {"l": [1, nan]}, {"w": [{"u": nan}]}]), k=2)
