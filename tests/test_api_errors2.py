"""The Python API says what went wrong and how to do it instead: an evaluation of a run that lacks judged queries
warns that they count as 0, ``compare`` takes ``{name: EvalResult}`` (and says so for a list of them), a
``Comparison`` prints as the table ``ragkit compare`` shows, an unfitted operator's search names the operator,
a fit on something that is no ``Corpus`` says how to build one, an encoder object given as ``model`` says how to
register it, and ``from ragkit import *`` leaves ``Sequence`` alone."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit import evaluate, load_beir
from ragkit.encoders import HashingEncoder
from ragkit.errors import InputTypeError, NotFittedError, ParamError
from ragkit.eval import compare
from ragkit.eval.beir import write_beir
from ragkit.eval.compare import Comparison, SystemResult, load_result
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.run import Run
from ragkit.types import Corpus

DOCS = ["stem cells grow", "protein folding in cells", "a study of cell growth", "folding proteins fast"]
QRELS = {f"q{i}": {f"d{i % 4}": 1} for i in range(8)}


def _run(seed: int, qids=tuple(QRELS)) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    return {q: {f"d{j}": float(rng.random()) for j in range(4)} for q in qids}


def _unsearched(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not in the run and count" in r.getMessage()]


# ---------------------------------------------------------------------- 1. judged queries the run lacks
def test_evaluate_warns_once_of_judged_queries_the_run_lacks(caplog):
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        part = evaluate(_run(0, ("q0", "q1")), QRELS, ["ndcg@10", "recall@100"])
    said = _unsearched(caplog)
    assert len(said) == 1  # once per call, not once per metric or query
    assert "6 of the 8 judged queries are not in the run and count as 0 (trec_eval -c)" in said[0]
    assert "{q: qrels[q] for q in run if q in qrels}" in said[0]
    assert len(part.per_query["ndcg@10"]) == 8  # the means are still over every judged query
    own = evaluate(_run(0, ("q0", "q1")), {q: QRELS[q] for q in ("q0", "q1")}, ["ndcg@10"])  # as the warning says
    assert own["ndcg@10"] == pytest.approx(4 * part["ndcg@10"])


def test_evaluate_names_run_query_ids_for_a_run_object(caplog):
    r = _run(0, ("q0",))
    run = Run(["q0"], [np.array(list(r["q0"]))], [np.array(list(r["q0"].values()))])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate(run, QRELS, ["ndcg@10"])
    said = _unsearched(caplog)
    assert len(said) == 1 and "7 of the 8" in said[0] and "for q in run.query_ids if q in qrels" in said[0]


def test_evaluate_is_silent_when_every_judged_query_is_in_the_run(caplog):
    run = _run(1)
    run["q1"] = {}  # searched, found nothing: in the run (it counts 0 as any answer of nothing)
    run["other"] = {"d0": 1.0}  # a query the qrels lack: skipped, as before
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate(run, QRELS, ["ndcg@10"])
    assert _unsearched(caplog) == []


def test_load_result_keeps_its_own_note_without_evaluates_warning(tmp_path, caplog):
    r = _run(2, ("q0", "q1", "q2"))
    path = tmp_path / "a.trec"
    Run(list(r), [np.array(list(d)) for d in r.values()], [np.array(list(d.values())) for d in r.values()]).write_trec(
        path)
    with caplog.at_level(logging.INFO, logger="ragkit"):
        load_result(path, qrels=QRELS, metrics=["ndcg@10"])
    assert _unsearched(caplog) == []  # ragkit compare's own words say it, once
    assert any("ranks documents for 3 of the 8 judged queries" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------- 2. compare EvalResults
def _evals() -> tuple:
    return tuple(evaluate(_run(s), QRELS, ["ndcg@10", "recall@100"]) for s in (3, 4))


def test_compare_takes_a_mapping_of_named_eval_results():
    e1, e2 = _evals()
    cmp = compare({"bm25": e1, "hybrid": e2}, n_resamples=500)
    assert cmp.systems == ["bm25", "hybrid"] and cmp.n_queries == 8
    assert cmp.means[0, 0] == pytest.approx(e1["ndcg@10"]) and cmp.means[1, 0] == pytest.approx(e2["ndcg@10"])
    same = compare([SystemResult("bm25", e1.per_query), SystemResult("hybrid", e2.per_query)], n_resamples=500)
    np.testing.assert_array_equal(cmp.p_value, same.p_value)
    renamed = compare({"x": SystemResult("old", e1.per_query), "y": e2}, n_resamples=100)
    assert renamed.systems == ["x", "y"]


def test_compare_refuses_unnamed_eval_results_saying_how_to_name_them():
    e1, e2 = _evals()
    with pytest.raises(InputTypeError, match=r"results\[0\] is an EvalResult, which holds no system name.*"
                                             r"compare\(\{'bm25': evaluate\(run1, qrels\)"):
        compare([e1, e2])
    with pytest.raises(InputTypeError, match=r"results\['b'\] is int, expected an EvalResult"):
        compare({"a": e1, "b": 3})
    with pytest.raises(InputTypeError, match=r"results\[1\] is the path 'b.json'; read it first with load_result"):
        compare([SystemResult("a", e1.per_query), "b.json"])


# ---------------------------------------------------------------------- 3. Comparison as text
def test_comparison_prints_the_table_and_reprs_in_one_line():
    e1, e2 = _evals()
    cmp = compare({"bm25": e1, "hybrid": e2}, n_resamples=500)
    assert isinstance(cmp, Comparison)
    text = str(cmp)
    assert "array(" not in text
    lines = text.splitlines()
    assert lines[0].startswith("8 queries · baseline bm25 · paired randomisation test (500 sign flips)")
    assert any(line.split()[:3] == ["metric", "system", "mean"] for line in lines)
    row = next(line for line in lines if line.startswith("ndcg@10"))
    assert row.split() == ["ndcg@10", "bm25", f"{cmp.means[0, 0]:.4f}"]
    hyb = next(line for line in lines if line.split()[:1] == ["hybrid"])
    assert f"{cmp.delta[1, 0]:+.4f}" in hyb and f"{cmp.p_holm[1, 0]:.4f}" in hyb
    r = repr(cmp)
    assert "\n" not in r and "array(" not in r and len(r) < 300
    assert "2 systems (bm25, hybrid)" in r and "8 queries" in r and "baseline bm25" in r


# ---------------------------------------------------------------------- 4. an unfitted operator's search
def test_unfitted_operator_search_names_the_operator():
    with pytest.raises(NotFittedError, match=r"^BM25 \('bm25'\) is not fitted yet; call fit\(corpus\) first"):
        BM25().search("x")


# ---------------------------------------------------------------------- 5. fit on what is no Corpus
@pytest.mark.parametrize("given, hint", [
    (DOCS, r"got list; for texts: Corpus\.from_texts\(texts\)"),
    ([{"_id": "d0", "text": "a"}], r"got list; for dicts with '_id' and 'text': Corpus\.from_records\(records\)"),
    ({"d0": "a"}, r"got dict; for \{doc_id: text\}: Corpus\.from_texts\(mapping\)"),
    ("stem cells", r"got str; for documents as strings use Corpus\.from_texts"),
])
def test_fit_on_no_corpus_says_how_to_build_one(given, hint):
    with pytest.raises(InputTypeError, match=r"bm25\.fit expects a ragkit Corpus, " + hint):
        BM25().fit(given)


def test_fit_on_a_beir_dataset_says_to_pass_its_corpus(tmp_path):
    corpus = Corpus(ids=[f"d{i}" for i in range(4)], texts=DOCS)
    data = load_beir(write_beir(tmp_path / "tiny", corpus, {"q0": "cells"}, {"test": {"q0": {"d0": 1}}}))
    with pytest.raises(InputTypeError, match=r"got BeirDataset; pass its corpus: fit\(data\.corpus\) \(and "
                                             r"train=data\.train_set\('train'\)"):
        Pipeline([BM25()]).fit(data)


def test_fit_on_a_dataframe_says_how_to_build_one():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"_id": ["d0"], "text": ["a"]})
    with pytest.raises(InputTypeError, match=r"got DataFrame; for a DataFrame: Corpus\(ids=df\['id'\], .*"
                                             r"Corpus\.from_records\(df\.to_dict\('records'\)\)"):
        BM25().fit(df)


# ---------------------------------------------------------------------- 6. an encoder object as model
def test_encoder_object_as_model_says_to_register_it():
    with pytest.raises(ParamError, match=r"dense\.model: expected a model name or folder, got the encoder object "
                                         r"HashingEncoder\(dim=8\).*register_encoder\('my-encoder', encoder\), then "
                                         r"pass model='my-encoder'"):
        Dense(model=HashingEncoder(dim=8))
    with pytest.raises(ParamError, match=r"expected a string, got 3"):  # other types: as before
        Dense(model=3)


def test_langchain_embeddings_as_model_says_to_wrap_and_register_it():
    fake = pytest.importorskip("langchain_core.embeddings").DeterministicFakeEmbedding(size=8)
    with pytest.raises(ParamError, match=r"dense\.model: expected a model name or folder, got the LangChain "
                                         r"Embeddings .*LangChainEmbeddingsEncoder\(embeddings, key='my-embedder'\)"
                                         r"\.register\('my-embedder'\), then pass model='my-embedder'"):
        Dense(model=fake)


# ---------------------------------------------------------------------- 8. star import
def test_star_import_leaves_sequence_alone():
    ns: dict = {}
    exec("from typing import Sequence\nfrom ragkit import *", ns)
    import typing

    assert ns["Sequence"] is typing.Sequence and "Pipeline" in ns
    from ragkit import Sequence  # still importable by name

    assert Sequence is Pipeline
