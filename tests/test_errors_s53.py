"""DataError declares its ``path`` (a place in the options, as ParamError's), default ""."""

from __future__ import annotations

import pickle

from ragkit.errors import DataError


def test_a_data_error_has_a_path_attribute_that_defaults_to_empty():
    """Old code: DataError had no path; options.py set one with setattr and readers used getattr(e, "path", ...)."""
    assert DataError("bad corpus").path == ""
    e = DataError("search option bm25.filter.year: ...", path="options.bm25.filter")
    assert e.path == "options.bm25.filter" and str(e) == "search option bm25.filter.year: ..."
    back = pickle.loads(pickle.dumps(DataError("x")))
    assert str(back) == "x" and back.path == ""


def test_search_refuses_a_relevance_level_no_judgement_reaches_before_any_step_runs(monkeypatch):
    """Old code: the trace refused it after the first step's work, naming ``evaluate``, not ``search``."""
    import pytest

    from ragkit.errors import ParamError
    from ragkit.pipelines import Pipeline
    from ragkit.types import Corpus

    corpus = Corpus.from_records([{"_id": "d0", "text": "cats and dogs"}, {"_id": "d1", "text": "dogs bark"}])
    p = Pipeline.from_yaml("pipeline:\n  - bm25: {k: 2}\n").fit(corpus)
    calls: list[int] = []
    bm25 = type(p.steps[0])
    real = bm25._call
    monkeypatch.setattr(bm25, "_call", lambda self, state: calls.append(1) or real(self, state))
    with pytest.raises(ParamError, match=r"^search: relevance_level 2 counts no judgement as relevant: the qrels' "
                                         r"highest grade is 1"):
        p.search(["cats"], qrels={"q0": {"d0": 1}}, relevance_level=2, trace=True)
    assert calls == []
    with pytest.raises(ParamError) as raised:  # (the trace computes recall and nDCG only: no MAP, MRR or P)
        p.search(["cats"], qrels={"q0": {"d0": 1}}, relevance_level=2, trace=True)
    assert str(raised.value).endswith("so the trace's recall would be 0; give a level of at most 1")
    run = p.search(["cats"], qrels={"q0": {"d0": 2}}, relevance_level=2, trace=True)  # a grade reaches it
    assert calls == [1] and run.trace is not None
    with pytest.raises(ParamError, match=r"^search: relevance_level must be an integer grade >= 1, got 0"):
        p.search(["cats"], relevance_level=0)


def test_the_short_list_note_blames_no_cut_off_the_run_time_k_raised():
    """Old code (11cf701): with --depth 10, a top_k of k=3 was named as cutting the lists, though the search's
    k=10 raises every cut-off to 10 (ragkit.options.resolve_k); a fuser's top_k was never named."""
    from ragkit.cli._pipeline import _short_ks
    from ragkit.pipelines import Pipeline

    p = Pipeline.from_yaml("pipeline:\n  - bm25: {k: 20}\n  - top_k: {k: 3}\n")
    assert _short_ks(p, 10) == ["pipeline[1].top_k k=3"]
    assert _short_ks(p, 10, searched_at=10) == []
    assert _short_ks(p, 30, searched_at=10) == ["pipeline[0].bm25 k=20", "pipeline[1].top_k k=10"]
    fused = Pipeline.from_yaml("pipeline:\n  - parallel:\n      branches: [[bm25: {k: 50}], [bm25: {k: 50}]]\n"
                               "      fuse: {rrf: {k: 60, top_k: 5}}\n")
    assert _short_ks(fused, 10) == ["pipeline[0].parallel.fuse.rrf top_k=5"]
