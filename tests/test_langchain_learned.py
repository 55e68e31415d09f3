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
