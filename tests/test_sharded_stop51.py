"""A sharded BM25 checks the script of its documents once, on the whole corpus (not once per shard, each with
its own shard's figures)."""

from __future__ import annotations

import logging

import pytest

from ragkit.retrievers import BM25
from ragkit.scale import Sharded
from ragkit.types import Corpus

_GREEK = "NF-κB and TNF-α signalling in β cells"  # letters outside ASCII: ~9% of the characters


def _corpus(n: int, greek: list[int]) -> Corpus:
    texts = [_GREEK if i in greek else f"protein expression in cell line {i} under stress" for i in range(n)]
    return Corpus(ids=[f"d{i}" for i in range(n)], texts=texts)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "letters outside ASCII" in r.getMessage()]


def test_a_tiny_shard_above_the_share_does_not_warn_where_the_whole_corpus_is_below(caplog):
    corpus = _corpus(20, greek=[0, 10])  # 10% of the corpus; 50% of each 2-document shard holding one
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        BM25().fit(corpus)
        assert _warnings(caplog) == []  # (one index: below the share)
        Sharded(retriever={"bm25": {}}, n_shards=10, backend="local").fit(corpus)
    assert _warnings(caplog) == []


def test_a_corpus_above_the_share_warns_once_with_the_whole_corpus_figures(caplog):
    corpus = _corpus(20, greek=list(range(0, 20, 2)))  # 50% of the corpus, and of every shard
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        BM25().fit(corpus)
        one = _warnings(caplog)
        caplog.clear()
        Sharded(retriever={"bm25": {}}, n_shards=4, backend="local").fit(corpus)
    sharded = _warnings(caplog)
    assert len(one) == 1 and "50% of the documents (20 sampled)" in one[0]
    assert sharded == one  # once, with the whole corpus's figures (not "(5 sampled)" per shard)


def test_a_unicode_tokenizer_does_not_warn_sharded(caplog):
    corpus = _corpus(20, greek=list(range(20)))
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Sharded(retriever={"bm25": {"tokenizer": "unicode"}}, n_shards=4, backend="local").fit(corpus)
    assert _warnings(caplog) == []


def test_a_shard_fit_skips_the_check_only_inside_the_shard_context(caplog):
    from ragkit.retrievers.bm25 import _shard_fit

    corpus = _corpus(4, greek=[0, 1])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        with _shard_fit():
            BM25().fit(corpus)
        assert _warnings(caplog) == []
        BM25().fit(corpus)  # the context was reset on leaving
    assert len(_warnings(caplog)) == 1
