"""Typical user code, type-checked (never run) by ``tests/test_typing.py``: ragkit's hints must accept
what its documentation shows and give precise types back (``assert_type`` fails mypy otherwise)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from typing_extensions import assert_type

from ragkit import (
    BeirDataset,
    Corpus,
    EvalResult as TopEvalResult,
    Operator,
    Pipeline,
    Queries,
    Run,
    TrainSet,
    evaluate,
    load_beir,
)
from ragkit.eval import EvalResult
from ragkit.eval.metrics import check_relevance_level
from ragkit.filters import MMR, CosineAdapter, TopK
from ragkit.integrations.langchain import RagkitRetriever
from ragkit.pipelines import RRF, Loop, Parallel, Route, RuleRouter, TopKStable
from ragkit.retrievers import BM25, Dense, KnnEmbed, Muvera
from ragkit.retrievers.bm25 import BM25Params
from ragkit.retrievers.dense import DenseParams


def build_and_search(folder: Path) -> float:
    # a corpus from plain Python lists (the constructor copies them into read-only arrays)
    corpus = Corpus(ids=["a", "b"], texts=["Vitamin D", "bone density"], metadata={"year": [2020, 2021]})
    assert_type(corpus.ids, np.ndarray)
    assert_type(corpus.titles, np.ndarray)  # empty strings when none were given
    assert_type(Corpus.from_texts(["x", "y"], year=[1, 2]), Corpus)
    assert_type(corpus.subset([1]), Corpus)

    # each operator's parameters are its own pydantic model
    bm25 = BM25(k=100)
    assert_type(bm25.params, BM25Params)
    assert_type(bm25.params.k, int)
    dense = Dense(k=100, dtype="i8")
    assert_type(dense.params, DenseParams)

    # composition and the fitted pipeline
    hybrid = (bm25 + dense) | RRF(k=60)
    assert_type(hybrid, Pipeline)
    assert_type(bm25 + dense, Parallel)  # a + b is a Parallel (its fuse, names, branches typed)
    assert_type(Parallel(bm25), Parallel)  # one operator alone is one branch, as Pipeline(bm25) is one step
    assert_type(Pipeline(bm25), Pipeline)
    pipe = Pipeline([Parallel([bm25, Muvera(k=100)], fuse=RRF()), MMR(k=10), TopK(k=10)])
    looped = Pipeline([Loop(Pipeline([KnnEmbed(k=10)]), until=TopKStable(), max_iters=3)])
    assert_type(looped, Pipeline)
    assert_type(Loop(bm25, until=TopKStable()).fit(corpus), Loop)  # every composite's fit returns itself
    routed = Route(RuleRouter(rules=[{"label": "short", "max_words": 3}], default="long"), {"short": [], "long": dense})
    assert_type(routed.fit(corpus), Route)
    assert_type(Parallel([bm25, dense]).fit(corpus), Parallel)
    Pipeline(bm25).fit(corpus, _seen=None)  # type: ignore[call-arg]  # (the tree walk's own: not public)
    fitted = pipe.fit(corpus)
    assert_type(fitted, Pipeline)
    run = fitted.search(["does vitamin D help bones?"], k=10)
    assert_type(run, Run)
    assert_type(run.doc_ids[0], np.ndarray)

    # evaluation on BEIR
    data = load_beir(folder)
    result = evaluate(pipe.fit(data.corpus).search(data.queries("test")), data.qrels("test"), ["ndcg@10", "recall@100"])
    assert_type(result, EvalResult)
    assert_type(result.scores["ndcg@10"], float)

    # learning from judged queries, saving and loading
    train = TrainSet(Queries(["q1"], ["vitamin D"]), {"q1": {"a": 1}})
    assert_type(TrainSet({"q1": "vitamin D"}, folder / "qrels.tsv").queries, Queries)  # a mapping, a path
    learned = Pipeline([bm25, CosineAdapter()]).fit(corpus, data.train_set("train"))
    learned.fit(corpus, train)
    learned.save(folder / "saved")
    assert_type(Pipeline.load(folder / "saved"), Pipeline)
    assert_type(BM25.load(folder / "bm25"), BM25)

    # LangChain
    retriever = RagkitRetriever(pipeline=learned, k=5)
    docs = retriever.invoke("Vitamin D prevents fractures")
    return float(docs[0].metadata["score"]) + result.scores["ndcg@10"]


def documented_inputs(pipe: Pipeline, texts: pd.Series, where: os.PathLike[str]) -> Run:
    # a pandas Series of texts indexed by query id, as TrainSet takes it too
    assert_type(BM25().search(texts), Run)
    assert_type(TrainSet(texts, {"q1": {"a": 1}}).queries, Queries)
    # every save / load takes a str or any os.PathLike
    pipe.save(where)
    BM25().save(where)
    assert_type(Pipeline.load(where), Pipeline)
    assert_type(BM25.load(where), BM25)
    return pipe.search(texts)


def typed_inputs(run: Run, qrels: Mapping[str, Mapping[str, int]], data: BeirDataset, folder: Path) -> float:
    # judgements held read-only (a Mapping, as search and TrainSet take them) are accepted by the eval functions
    result = evaluate(run, qrels)
    assert_type(result, TopEvalResult)  # EvalResult and BeirDataset are importable from ragkit itself
    check_relevance_level(qrels, 1)
    assert_type(data.unknown_judged(qrels), list[tuple[str, str]])

    # RagkitRetriever's fields: the constructor takes an operator, a YAML file or a saved folder; once built the
    # pipeline is an Operator
    retriever = RagkitRetriever.load(folder / "index")
    assert_type(retriever.pipeline, Operator)
    assert_type(retriever.train, TrainSet | None)
    RagkitRetriever(pipeline="bm25", corpus={"d1": "vitamin D"}, k=2)
    RagkitRetriever(pipeline=folder / "saved", corpus=["vitamin D", "bone density"])
    RagkitRetriever(pipeline=1)  # type: ignore[arg-type]  # (no pipeline: refused by the type checker too)
    # assigned as the constructor takes it (the README's reload in place), read back as the fitted Operator
    retriever.pipeline = folder / "index"
    retriever.pipeline = "app-index"
    retriever.pipeline = BM25(k=5)
    retriever.pipeline = 1  # type: ignore[assignment]  # (no pipeline: refused by the type checker too)
    assert_type(retriever.pipeline, Operator)
    assert_type(retriever.model_copy(update={"pipeline": "app-index"}), RagkitRetriever)
    return result["ndcg@10"]
