"""Fixes from a diff review: Generate's dump round-trip, hex integers too long to print, hidden folders beside
an operator's save, RAGKIT_CACHE_SHARED, the chunk-cache hint's parameter name, deeply nested checksums, the
sharded retriever named in cosine-reader refusals, and search-option errors located as constructors' are."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from pydantic import ValidationError

from ragkit import Operator, Pipeline
from ragkit.encoders import cache as cache_mod
from ragkit.encoders.cache import EmbeddingCache, text_digests
from ragkit.errors import ConfigError, ParamError
from ragkit.retrievers import BM25
from ragkit.types import Corpus

CORPUS = Corpus(ids=[f"d{i}" for i in range(8)], texts=[f"word{i} common text {i % 3}" for i in range(8)])


# ----------------------------------------------------------------------------- 1. Generate's dump builds again
@pytest.mark.parametrize("kw", [{"mode": "full"}, {"mode": "prefix"}, {"alpha": 1.0}, {"mode": "naive"}, {}])
def test_a_full_generate_dump_builds_again(kw):
    """Review: Generate(**Generate(mode="full").params.model_dump()) was refused ("generate.fraction:
    fraction=0.3 has no effect without mode: cachecraft"), 0.3 being the default."""
    from ragkit.generators import Generate, GenerateParams

    p = Generate(**kw).params
    assert Generate(**p.model_dump()).params == p
    assert GenerateParams.model_validate(p.model_dump()) == p
    assert Generate(mode="full", fraction=0.3).params == Generate(mode="full").params


# ----------------------------------------------------------------------------- 2. integers too long to print
@pytest.mark.parametrize("literal, digits", [("0x" + "f" * 5000, "5,000"), ("0b" + "1" * 20000, "20,000"),
                                             ("9" * 200, "200")])
def test_a_long_yaml_integer_in_any_base_is_a_config_error_with_its_line(literal, digits):
    """Review: a 5,000-digit hex literal was built (the digit limit is for base 10 only) and the error about it
    crashed with "Exceeds the limit (4300 digits) for integer string conversion"."""
    from ragkit.pipelines.yaml import load_yaml

    with pytest.raises(ConfigError, match=rf"line 2, column 15: .*an integer of {digits} digits"):
        load_yaml("pipeline:\n  - bm25: {k: " + literal + "}\n")


def test_a_huge_python_integer_is_named_by_its_length():
    from ragkit.params import shown

    with pytest.raises(ParamError, match=r"bm25\.k: expected an integer within .*, got an integer of 5,001 digits"):
        BM25(k=10**5000)
    with pytest.raises(ParamError, match=r"bm25\.k: .*got a negative integer of 5,001 digits"):
        BM25(k=-(10**5000))
    assert shown(10**100 - 1) == "9" * 100 and shown(10**100) == "an integer of 101 digits"
    assert shown([10**5000]) == "a list holding an integer too long to print"


# ----------------------------------------------------------------------------- 3. hidden folders beside a save
@pytest.mark.parametrize("planted", [".ipynb_checkpoints/x-checkpoint.ipynb", ".git/HEAD", ".git/refs/heads/main"])
def test_a_hidden_folder_beside_an_operator_save_still_loads(tmp_path, planted):
    f = tmp_path / "op"
    BM25().fit(CORPUS).save(f)
    (f / planted).parent.mkdir(parents=True, exist_ok=True)
    (f / planted).write_text("x")
    assert Operator.load(f).search(["word1"])


# ----------------------------------------------------------------------------- 4. RAGKIT_CACHE_SHARED
@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no user ids on this platform")
def test_a_cache_shared_on_purpose_is_not_warned_of(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "_SHARED_SAID", set())
    digests = text_digests(["a", "b"])
    EmbeddingCache(tmp_path, "model").put(digests, np.ones((2, 4), np.float32))
    folder = EmbeddingCache(tmp_path, "model").folder
    folder.chmod(0o777)
    with pytest.warns(RuntimeWarning, match="writable by every user.*set RAGKIT_CACHE_SHARED=1"):
        EmbeddingCache(tmp_path, "model").get(digests)
    monkeypatch.setattr(cache_mod, "_SHARED_SAID", set())
    for word in ("1", "true", " Yes ", "ON"):
        monkeypatch.setenv("RAGKIT_CACHE_SHARED", word)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            EmbeddingCache(tmp_path, "model").get(digests)
    for word in ("0", "off", ""):
        monkeypatch.setenv("RAGKIT_CACHE_SHARED", word)
        assert cache_mod.env_cache_shared() is False
    monkeypatch.setenv("RAGKIT_CACHE_SHARED", "y")
    with pytest.raises(ParamError, match=r"RAGKIT_CACHE_SHARED: expected 1, true, yes or on .*got 'y'"):
        EmbeddingCache(tmp_path, "model").get(digests)


# ----------------------------------------------------------------------------- 5. the hint names cache_dir
def test_the_chunk_cache_mismatch_hint_names_generates_parameter():
    import inspect

    from ragkit.generators import Generate

    source = inspect.getsource(Generate._check_cache_model)
    assert "(cache_dir; ragkit ask: --cache-dir)" in source and "disk_dir" not in source


# ----------------------------------------------------------------------------- 6. nested checksums.json
def test_saving_over_a_save_with_deeply_nested_checksums_is_no_recursion_error(tmp_path):
    f = tmp_path / "op"
    BM25().fit(CORPUS).save(f)
    (f / "checksums.json").write_text("[" * 100_000 + "]" * 100_000)
    BM25().fit(CORPUS).save(f)  # (was a bare RecursionError): no record to compare with, as for invalid JSON
    assert Operator.load(f).search(["word1"])


# ----------------------------------------------------------------------------- 7. the sharded retriever named
@pytest.mark.parametrize("inner, fix", [("knn_embed: {merge: interleave}", "set merge: score on "
                                         r"pipeline\[0\]\.sharded\.retriever\.knn_embed"),
                                        ("dense: {metric: ip}", r"set metric: cos on pipeline\[0\]\.sharded\."
                                         r"retriever\.dense")])
def test_a_cosine_reader_after_a_sharded_retriever_names_the_inner_node(inner, fix):
    with pytest.raises(ConfigError, match=fix):
        Pipeline.from_yaml(f"pipeline:\n  - sharded: {{n_shards: 2, retriever: {{{inner}}}}}\n  - dbnorm: {{}}\n")


# ----------------------------------------------------------------------------- 9. option errors located
def test_a_search_option_refused_by_a_rule_names_the_option_it_refuses():
    from ragkit.options import _param_error
    from ragkit.retrievers.muvera import MuveraParams

    cases = [({"k": 300}, "k"), ({"k": 300, "candidates": 100}, "candidates"), ({"prune": 5, "k": 10}, "prune")]
    for given, field in cases:
        with pytest.raises(ValidationError) as raised:
            MuveraParams().updated(**given)
        err = _param_error(raised.value, "muvera", given, "")
        assert str(err).startswith(f"search option muvera.{field}: ") and err.path == f"options.muvera.{field}"
