"""Review of the examples and the public API (stop 55): the three thread counts read 0 and -1 alike as all cores,
the Dense and MUVERA descriptions, the no-judged-document warning of a small run, and the examples' own lines
(quantized's width without a model load, diverse's ILD ratio and times, sharded's public import)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from conftest import run_example

from ragkit import Run, evaluate
from ragkit.errors import ParamError
from ragkit.retrievers import BM25, Dense

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _describe(name: str) -> str:
    from ragkit._reference import _describe_operator

    return _describe_operator(name)


# 1. threads: 0 and -1 both mean all cores ------------------------------------------------------------------------

def test_bm25_n_jobs_below_minus_1_is_refused():
    with pytest.raises(ParamError, match=r"n_jobs: expected a value >= -1"):
        BM25(n_jobs=-2)


@pytest.mark.parametrize("threads", [0, -1])
def test_dense_threads_0_and_minus_1_are_all_cores(threads):
    """``Dense(threads=-1)`` was refused (``>= 0``) while BM25 read -1 as all cores; usearch's all cores is 0."""
    dense = Dense(threads=threads)
    assert dense.params.threads == threads
    assert dense._new_index().threads == 0
    assert Dense(threads=3)._new_index().threads == 3
    with pytest.raises(ParamError, match="threads"):
        Dense(threads=-2)


# (BM25's n_jobs and KnnEmbed's fit_threads of 0 / -1: tests/test_cpus.py)


@pytest.mark.parametrize("op, field", [("bm25", "n_jobs"), ("dense", "threads"), ("knn_embed", "fit_threads")])
def test_each_thread_count_says_0_or_minus_1_is_all_cores(op, field):
    text = _describe(op)
    found = re.search(rf"\n  {field}: .*?(?=\n  \S|\Z)", text, re.S)
    assert found, text
    block = " ".join(found.group(0).split())
    assert ">= -1" in block and "0 or -1 = all cores" in block, block


# 3, 4. descriptions ---------------------------------------------------------------------------------------------

def test_dense_dtype_and_metric_descriptions_leave_the_aliases_to_also_read():
    fields = Dense.Params.model_fields
    assert fields["metric"].description == "cos: cosine of unit vectors; ip: raw inner product."
    assert "read as those" not in (fields["dtype"].description or "")
    text = " ".join(_describe("dense").split())
    assert "also read: cosine as cos; dot, inner_product as ip" in text


def test_muvera_cites_muvera_first_then_plaid_for_prune():
    text = _describe("muvera")
    paper = text[text.index("Paper:"):text.index("Parameters")]
    entries = [" ".join(e.split()) for e in paper.split("  - ")[1:]]
    assert len(entries) == 2, paper
    assert entries[0].startswith("Dhulipala et al., \"MUVERA: Multi-Vector Retrieval via Fixed Dimensional "
                                 "Encodings\", NeurIPS 2024, arXiv 2405.19504"), entries
    assert entries[1].startswith("Santhanam et al., \"PLAID") and "CIKM 2022, arXiv 2205.09707" in entries[1]
    assert "prune" in entries[1], entries


# 5, 6, 8. docstrings ----------------------------------------------------------------------------------------------

def test_module_docstring_names_qrels_and_model_loading():
    import ragkit

    doc = " ".join((ragkit.__doc__ or "").split())
    assert "``Qrels`` Relevance judgements, ``{query_id: {doc_id: grade}}``" in doc
    assert "BEIR and pytrec_eval" in doc
    assert "``MODEL_LOADING`` The process-wide re-entrant lock" in doc and "from_pretrained" in doc


def test_cache_stats_documents_every_field():
    from dataclasses import fields

    from ragkit.caches import CacheStats

    doc = CacheStats.__doc__ or ""
    missing = [f.name for f in fields(CacheStats) if f"\n    {f.name} : int\n" not in doc]
    assert not missing, missing


def test_run_docstring_gives_lengths_and_trace():
    doc = " ".join((Run.__doc__ or "").split())
    assert "doc_ids : list (length n_q) of ndarray of str (object dtype), shape (n_i,)" in doc
    assert "scores : list (length n_q) of ndarray of float32, shape (n_i,)" in doc
    assert "trace : list of TraceEvent or None With ``search(..., trace=True)``" in doc


# 7. a run with no judged document ----------------------------------------------------------------------------------

def _unjudged_warnings(run, qrels, caplog) -> list[str]:  # noqa: ANN001
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate(run, qrels, ["ndcg@10"])
    return [r.getMessage() for r in caplog.records if "is judged in the qrels" in r.getMessage()]


def test_a_small_run_that_misses_is_not_only_said_to_be_of_another_corpus(caplog):
    """One query missing its one judged document was asked "is it a run of another corpus, or are its document
    ids written otherwise?" only."""
    said = _unjudged_warnings(Run.from_dict({"q1": {"d2": 1.0}}), {"q1": {"d1": 1}}, caplog)
    assert len(said) == 1 and said[0].endswith("or did it simply miss them?"), said
    assert "none of the 1 document id the run retrieves for its 1 query ('d2')" in said[0], said
    # many queries but few ids retrieved: still small
    few = {f"q{i}": {f"x{i}": 1.0} for i in range(12)}
    said = _unjudged_warnings(few, {f"q{i}": {f"d{i}": 1} for i in range(12)}, caplog)
    assert len(said) == 1 and said[0].endswith("or did it simply miss them?"), said


def test_a_large_run_of_no_judged_document_still_suggests_another_corpus(caplog):
    run = {f"q{i}": {f"x{i}_{j}": float(20 - j) for j in range(20)} for i in range(12)}  # 12 queries, 240 ids
    said = _unjudged_warnings(run, {f"q{i}": {f"d{i}": 1} for i in range(12)}, caplog)
    assert len(said) == 1, said
    assert said[0].endswith("is it a run of another corpus, or are its document ids written otherwise than the "
                            "judgements'?"), said
    assert "simply miss" not in said[0]


# 1, 9. examples -----------------------------------------------------------------------------------------------------

_run = run_example


def test_quantized_reads_the_width_from_the_index_not_the_model(monkeypatch):
    """``dense.encoder.dim`` loaded MiniLM (about 10 s) for a width the cached vectors already gave."""
    from ragkit.encoders.sentence import Encoder

    def no_load(self):  # noqa: ANN001, ANN202
        raise AssertionError("quantized.py loaded the model for its width")

    monkeypatch.setattr(Encoder, "dim", property(no_load))
    code, out, err = _run(EXAMPLES / "quantized.py", "--limit", "3")
    assert code is None, err[-2000:]
    n = int(out.split(" documents (")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert f"(float32 vectors: {n * 384 * 4 / 1024:,.1f} KiB" in out, out


def test_diverse_prints_the_ild_ratio_and_its_times():
    import json

    code, out, err = _run(EXAMPLES / "diverse.py", "--limit", "3", "--json")
    assert code is None, err[-2000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert got["ild_ratio"] == pytest.approx(got["ild@10"] / got["dense_ild@10"])
    assert got["fit_s"] > 0 and got["search_s"] >= 0
    code, out, err = _run(EXAMPLES / "diverse.py", "--limit", "3")
    assert code is None, err[-2000:]
    assert f"{got['ild_ratio']:.2f}x dense's" in out and ", search " in out and "(fit " in out, out


def test_sharded_imports_the_public_sharded(monkeypatch):
    """sharded.py imported Sharded from ``ragkit.scale``; README imports it from ``ragkit.retrievers``."""
    import ragkit.retrievers
    import ragkit.scale

    sharded = ragkit.scale.Sharded

    def private(**kw):  # noqa: ANN003, ANN202
        raise AssertionError("sharded.py imported Sharded from ragkit.scale")

    monkeypatch.setattr(ragkit.scale, "Sharded", private)
    monkeypatch.setattr(ragkit.retrievers, "Sharded", lambda **kw: sharded(**{**kw, "backend": "local"}))
    code, out, err = _run(EXAMPLES / "sharded.py", "--limit", "4")
    assert code is None and "merged ranking of the 2 shards equals one BM25 index's" in out, (code, out, err)
