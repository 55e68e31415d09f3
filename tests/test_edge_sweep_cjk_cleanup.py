"""Edge-case sweep: rule_router on unspaced Chinese / Japanese text, muvera's codebook on duplicate documents
(scikit-learn's raw ConvergenceWarning), and a garbage-collected fitted ``sharded`` (TemporaryDirectory's
ResourceWarning)."""

from __future__ import annotations

import gc
import logging
import os
import warnings

import pytest

from ragkit.pipelines.routers import RuleRouter
from ragkit.types import Corpus, State

JA = ["細胞のタンパク質はアポトーシスを調節する", "がん細胞の増殖"]


def _ragkit_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ragkit" and r.levelno == logging.WARNING]


def test_rule_router_counts_each_ideograph_and_kana_as_a_word():
    """Old code: an unspaced sentence was one ``\\w+`` run, one word: both were 'short'."""
    s = State.of(JA)
    assert RuleRouter(rules=[{"label": "short", "max_words": 3}], default="long")(s).values["label"] == ["long", "long"]
    r = RuleRouter(rules=[{"label": "7", "min_words": 7, "max_words": 7}], default="-")
    assert r.labels(JA) == ["-", "7"]  # がん細胞の増殖: 7 characters, 7 words
    # letters, digits and marks runs as before; a Devanagari word is one word with its vowel signs (\\w+ split it)
    three = RuleRouter(rules=[{"label": "3", "min_words": 3, "max_words": 3}], default="-")
    assert three.labels(["gene expression x", "cafe\u0301 au lait", "covid-19 now", "हिन्दी भाषा", "foo_bar"]) == [
        "3", "3", "3", "-", "-"]
    assert RuleRouter(rules=[{"label": "2", "max_words": 2, "min_words": 2}], default="-").labels(
        ["हिन्दी भाषा", "がんcell"]) == ["2", "-"]  # がん cell: 3 words


def test_rule_router_keywords_of_ideographs_match_inside_unspaced_text():
    """Old code: ``細胞`` never matched inside ``がん細胞の増殖`` (no \\w boundary there): both were 'other'."""
    s = State.of(JA)
    assert RuleRouter(rules=[{"label": "cells", "keywords": ["細胞"]}], default="other")(s).values["label"] == [
        "cells", "cells"]
    spaced = RuleRouter(rules=[{"label": "c", "keywords": ["がん 細胞"]}], default="-")  # spaces between them: optional
    assert spaced.labels(JA + ["がん 細胞", "がん"]) == ["-", "c", "c", "-"]
    assert RuleRouter(rules=[{"label": "c", "keywords": ["アポトーシス"]}], default="-").labels(JA) == ["c", "-"]
    # a Latin keyword next to kana: the kana bound the word, as BM25's unicode tokenizer splits it
    assert RuleRouter(rules=[{"label": "c", "keywords": ["cell"]}], default="-").labels(
        ["がんcellの増殖", "がんcellsの"]) == ["c", "-"]
    # an ideograph keyword next to Latin letters or digits: the ideograph bounds it (review: iPS細胞 was missed)
    assert RuleRouter(rules=[{"label": "c", "keywords": ["細胞"]}], default="-").labels(
        ["iPS細胞の研究", "細胞DNA", "3細胞", "細い"]) == ["c", "c", "c", "-"]
    # but a combining mark after it makes another character: は is not the start of a decomposed ぱ (は + U+309A)
    assert RuleRouter(rules=[{"label": "c", "keywords": ["は"]}], default="-").labels(
        ["は\u309aい", "はい", "iPSはい"]) == ["-", "c", "c"]


def test_rule_router_latin_keywords_still_match_whole_words_in_any_batch():
    r = RuleRouter(rules=[{"label": "c", "keywords": ["cell", "c++", "covid-19", "foo_bar"]}], default="-")
    texts = ["cells", "c++ x", "c", "COVID 19", "covid19", "foo_bar", "foo bar", "xfoo_bar", "a cell"]
    want = ["-", "c", "-", "c", "-", "c", "-", "-", "c"]
    assert r.labels(texts) == want  # (as the old code labels them)
    # a combining mark is part of its word (old code: 'cell' + U+0301 matched 'cell', the mark being no \w)
    assert r.labels(["cell\u0301", "cafe\u0301"]) == ["-", "-"]
    # the same texts in a batch holding non-ASCII ones (scanned apart, with the full patterns) read the same
    assert r.labels(texts + ["é cell", "écell"]) == want + ["c", "-"]
    assert r.labels([t + " é" for t in texts]) == want
    assert r.labels([]) == []


def test_muvera_duplicate_documents_say_it_in_ragkit_words(caplog, monkeypatch, tmp_path):
    """Old code: scikit-learn's ConvergenceWarning ("Number of distinct clusters (7) found smaller than
    n_clusters (16)") and no word from ragkit."""
    from ragkit.retrievers import Muvera

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))  # (no cached codebook: the fit runs k-means)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="ragkit"):
        warnings.simplefilter("always")
        Muvera(k=5, candidates=20, k_sim=3, d_proj=8, r_reps=4, prune=10, centroids=16).fit(
            Corpus.from_texts(["cell protein apoptosis"] * 10))
    assert [str(w.message) for w in caught if "ConvergenceWarning" in type(w.message).__name__] == []
    msgs = _ragkit_warnings(caplog)
    assert any(m.startswith("muvera.fit: k-means found ") and " distinct clusters of the 16 asked" in m
               and "duplicate documents" in m for m in msgs), msgs


def test_fit_codebook_warns_only_where_asked():
    import numpy as np

    from ragkit.retrievers.centroids import fit_codebook

    data = np.tile(np.eye(4, dtype=np.float32), (8, 1))  # 4 distinct rows, 32 tokens
    logger = logging.getLogger("ragkit")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert fit_codebook(data, 8).shape == (8, 4)  # (a caller that does not ask: silent)
            assert records == []
            fit_codebook(data, 8, where="here")
        assert [str(w.message) for w in caught if "ConvergenceWarning" in type(w.message).__name__] == []
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "here: k-means found 4 distinct clusters of the 8 asked (the 32 token vectors hold fewer distinct points: "
        "duplicate documents); the other 4 are empty and never used"]


def _sharded():
    from ragkit._sharded import Sharded

    return Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, k=5, backend="local").fit(
        Corpus.from_texts(["a b", "c d", "e"]))


def _resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning) and "ragkit-shards" in
            str(w.message)]


def test_garbage_collected_sharded_removes_its_folder_quietly():
    """Old code: ``ResourceWarning: Implicitly cleaning up <TemporaryDirectory '/tmp/ragkit-shards-...'>``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = _sharded()
        folder = s._dir.name
        assert os.path.isdir(folder)
        del s
        gc.collect()
    assert _resource_warnings(caught) == []
    assert not os.path.exists(folder)


def test_sharded_copy_keeps_the_folder_until_the_last_goes_quietly():
    import copy

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = _sharded()
        folder = s._dir.name
        c = copy.deepcopy(s)
        del s
        gc.collect()
        assert os.path.isdir(folder)  # the copy still borrows it
        assert c(State(["a b"])).rankings[0].rows[:1].tolist() == [0]
        c.fit(Corpus.from_texts(["x y", "z"]))  # refitted: the borrowed folder goes (the copy was its last holder)
        assert not os.path.exists(folder)
        del c
        gc.collect()
    assert _resource_warnings(caught) == []
