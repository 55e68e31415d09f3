"""Edges of generation: no chunk to answer from, ``max_new_tokens=0``, a chunk cache of another model named
readably (and refused before the model loads), and ``generate`` settings that have no effect in their mode.

The tiny 4-layer test model (``tiny``, from ``test_cachecraft``) keeps this offline and cheap.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from test_cachecraft import TINY_CHUNKS, TINY_Q, tiny  # noqa: F401

from ragkit.errors import ParamError

pytest.importorskip("transformers")


# ----------------------------------------------------------------------------- no chunk to answer from
@pytest.mark.parametrize("chunks", [[], [""], ["  \n", "\t"]])
@pytest.mark.parametrize("mode", ["cachecraft", "naive", "full"])
def test_no_chunk_answers_empty_without_running_the_model(tiny, chunks, mode):  # noqa: F811
    """Old code: the model ran (loaded first) and answered from no source, where the generate step skips a
    query that retrieved nothing and RagkitGenerator answers '' without the model."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0])
    seen: list[object] = []
    assert g.generate(TINY_Q, chunks, mode=mode, max_new_tokens=4, on_token=seen.append,
                      on_prefill=seen.append) == ""
    assert g.model_ is None and seen == []  # not even loaded
    assert list(g.stream(TINY_Q, chunks, mode=mode, max_new_tokens=4)) == []
    assert g.model_ is None


def test_blank_chunks_beside_others_are_left_out(tiny):  # noqa: F811
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0])
    want = g.generate(TINY_Q, TINY_CHUNKS[:2], mode="full", max_new_tokens=3)
    assert g.generate(TINY_Q, ["", TINY_CHUNKS[0], " ", TINY_CHUNKS[1]], mode="full", max_new_tokens=3) == want


def test_no_chunk_still_checks_the_arguments(tmp_path):
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(str(tmp_path / "no-such-model"))
    for kw, path in [({"mode": "bogus"}, "mode"), ({"selector": "bogus"}, "selector"), ({"fraction": 2}, "fraction"),
                     ({"max_new_tokens": 0}, "max_new_tokens")]:
        with pytest.raises(ParamError) as raised:
            g.generate(TINY_Q, [], **kw)
        assert raised.value.path == path
    with pytest.raises(ParamError, match="chunks is one str"):
        g.generate(TINY_Q, "")


def test_the_langchain_backend_does_not_call_its_model_without_a_chunk():
    fake = pytest.importorskip("langchain_core.language_models.fake_chat_models")
    from ragkit.generators.langchain_chat import LangChainGenerator

    class Refusing(fake.FakeListChatModel):
        def invoke(self, *a, **kw):  # noqa: ANN002, ANN003, ANN201
            raise AssertionError("the chat model was called without a chunk")

        def stream(self, *a, **kw):  # noqa: ANN002, ANN003, ANN201
            raise AssertionError("the chat model was called without a chunk")

    gen = LangChainGenerator(Refusing(responses=["made up"]))
    for chunks in ([], [""], [" "]):
        assert gen.generate(TINY_Q, chunks) == ""
        assert gen.generate(TINY_Q, chunks, on_token=print) == ""
        assert list(gen.stream(TINY_Q, chunks)) == []
    answered = LangChainGenerator(fake.FakeListChatModel(responses=["ok"]))
    assert answered.generate(TINY_Q, ["", "Scurvy."]) == "ok"


def test_the_generate_step_skips_a_query_whose_documents_are_blank():
    """Old code: the chat model (or local model) was asked with only blank chunks."""
    fake = pytest.importorskip("langchain_core.language_models.fake_chat_models")
    from ragkit.generators.operator import NO_DOCUMENT, NO_TEXT, Generate
    from ragkit.types import Corpus, Ranking, State

    corpus = Corpus.from_records([{"_id": "d0", "text": " "}, {"_id": "d1", "text": "Scurvy: no vitamin C."}])
    op = Generate(backend="langchain", top_k=1).with_chat_model(fake.FakeListChatModel(responses=["C", "C"]))
    op.fit(corpus)
    rk = [Ranking(np.array([0, 1]), np.array([2.0, 1.0], np.float32)),
          Ranking(np.array([1, 0]), np.array([2.0, 1.0], np.float32)),
          Ranking(np.zeros(0, np.int64), np.zeros(0, np.float32))]
    out = op(State(["q0", "q1", "q2"], rankings=rk))
    assert out.values["answer"] == ["", "C", ""]
    assert out.values["answer_skipped"] == [NO_TEXT, None, NO_DOCUMENT]


# ----------------------------------------------------------------------------- max_new_tokens
@pytest.mark.parametrize("bad", [0, -1])
def test_max_new_tokens_below_1_is_refused_before_any_work(tmp_path, bad):
    """Old code: max_new_tokens=0 loaded the model, ran the whole prefill and answered '' (the generate step,
    RagkitGenerator and ragkit ask refuse it)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(str(tmp_path / "no-such-model"))  # a load would fail: the check comes first
    with pytest.raises(ParamError, match=rf"LocalGenerator.generate.max_new_tokens: expected a positive integer, "
                                         rf"got {bad}") as raised:
        g.generate(TINY_Q, TINY_CHUNKS, max_new_tokens=bad)
    assert raised.value.path == "max_new_tokens"
    with pytest.raises(ParamError, match="expected a positive integer"):
        list(g.stream(TINY_Q, TINY_CHUNKS, max_new_tokens=bad))


# ----------------------------------------------------------------------------- a cache of another model
def test_the_manifest_names_the_model_readably_and_the_mismatch_shows_it(tmp_path):
    from ragkit.caches import ChunkKVCache
    from ragkit.caches.chunk_kv import CacheModelMismatchError

    d = tmp_path / "kv"
    ChunkKVCache("file-aaa", "tok", disk_dir=d, model_name="/models/a.gguf")
    meta = json.loads((d / "manifest.json").read_text())
    assert meta["model_name"] == "/models/a.gguf" and meta["model_id"] == "file-aaa"
    with pytest.raises(CacheModelMismatchError, match=r"written for model 'file-aaa' \(/models/a.gguf\) with "
                                                      r"tokenizer 'tok', but it was opened for model 'st-bbb' "
                                                      r"\(/models/b\)"):
        ChunkKVCache("st-bbb", "tok", disk_dir=d, model_name="/models/b")
    # a manifest of an older ragkit (no model_name) still loads, and a mismatch names the fingerprint alone
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text('{"model_id": "file-aaa", "tokenizer_id": "tok", "format_version": 1}')
    ChunkKVCache("file-aaa", "tok", disk_dir=old, model_name="/models/a.gguf")
    with pytest.raises(CacheModelMismatchError, match=r"written for model 'file-aaa' with tokenizer"):
        ChunkKVCache("st-bbb", "tok", disk_dir=old)
    with pytest.raises(CacheModelMismatchError, match=r"holds rows of model 'file-aaa' \(/models/a.gguf\).*given to "
                                                      r"model 'st-bbb' \(/models/b\)"):
        ChunkKVCache("file-aaa", "tok", model_name="/models/a.gguf").check_owner("st-bbb", "tok",
                                                                                 model_name="/models/b")
    import pickle

    assert pickle.loads(pickle.dumps(ChunkKVCache("m", "t", model_name="x"))).model_name == "x"


def test_a_cache_of_another_model_is_refused_before_the_model_loads(tiny, tmp_path, monkeypatch):  # noqa: F811
    """Old code: the manifest named the models by fingerprints only ('st-82e26d71e1807a15'), and ``ragkit ask``
    refused the folder only after the retrieval's fit and the model's load."""
    from ragkit.generators import Generate, local
    from ragkit.generators.local import LocalGenerator

    d = tmp_path / "kv"
    g = LocalGenerator(tiny[0], disk_dir=str(d)).load()
    meta = json.loads((d / "manifest.json").read_text())
    assert meta["model_name"] == os.path.realpath(tiny[0]) and meta["model_id"] == g.model_id_
    assert local.source_fingerprint(tiny[0], None) == (g.model_id_, os.path.realpath(tiny[0]))

    def no_load(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(local, "_load_model", no_load)
    monkeypatch.setattr(local, "_LOADED", {})
    Generate(model=tiny[0], cache_dir=str(d)).check_source()  # its own model: fine
    with pytest.raises(ParamError, match=rf"generate.cache_dir: .*written for model '{meta['model_id']}' "
                                         rf"\({os.path.realpath(tiny[0])}\), but the generate step's model is "
                                         rf"'st-[0-9a-f]+' \({os.path.realpath(tiny[1])}\); use another cache "
                                         r"folder for this model") as raised:
        Generate(model=tiny[1], cache_dir=str(d)).check_source()
    assert raised.value.path == "generate.cache_dir"


# ----------------------------------------------------------------------------- settings without effect
@pytest.mark.parametrize("kw, field, said", [
    ({"mode": "full", "storage_dtype": "float32"}, "storage_dtype", "mode 'full' keeps no chunk cache"),
    ({"mode": "full", "storage_dtype": "float32"}, "storage_dtype", "no effect without mode: cachecraft or naive"),
    ({"mode": "prefix", "storage_dtype": "float32"}, "storage_dtype", "prefix cache holds the model's float32"),
    ({"mode": "full", "cache_budget_mb": 10}, "cache_budget_mb", "mode 'full' caches nothing"),
    ({"mode": "full", "cache_budget_mb": None}, "cache_budget_mb", "mode 'full' caches nothing"),
    ({"alpha": 1.0, "fraction": 0.5}, "fraction", "fraction=0.5 has no effect with alpha=1.0"),
    ({"mode": "full", "fraction": 0.5}, "fraction", "no effect without mode: cachecraft"),
    ({"mode": "naive", "selector": "fixed"}, "selector", "no effect without mode: cachecraft"),
    ({"selector": "fixed", "alpha": 0.5}, "alpha", "no effect without mode and selector: cachecraft"),
    ({"disk_half_life_s": 60}, "disk_half_life_s", "no effect without cache_dir"),
])
def test_generate_refuses_each_setting_given_without_effect(kw, field, said):
    """Old code: storage_dtype or cache_budget_mb in the full mode, fraction beside alpha were kept without a
    word.  A value other than the default counts (as Params.refuse_unused judges every operator)."""
    from ragkit.generators import Generate

    with pytest.raises(ParamError, match=f"generate.{field}: .*{said}") as raised:
        Generate(**kw)
    assert raised.value.path == f"generate.{field}"


def test_ragkit_generator_refuses_them_as_the_generate_step(tiny):  # noqa: F811
    pytest.importorskip("langchain_core")
    from ragkit.integrations.langchain import RagkitGenerator

    with pytest.raises(ValueError, match="RagkitGenerator.storage_dtype: .*mode 'full' keeps no chunk cache"):
        RagkitGenerator(model=tiny[0], mode="full", storage_dtype="float32")
    with pytest.raises(ValueError, match="RagkitGenerator.fraction: fraction=0.5 has no effect with alpha"):
        RagkitGenerator(model=tiny[0], alpha=1.0, fraction=0.5)
    RagkitGenerator(model=tiny[0], alpha=1.0, fraction=0.3)  # the default, written out: accepted
    RagkitGenerator(model=tiny[0], mode="prefix", cache_budget_mb=8)


@pytest.mark.parametrize("kw", [{"mode": "full"}, {"mode": "prefix", "cache_budget_mb": 8},
                                {"mode": "naive", "storage_dtype": "float32"}, {"alpha": 1.0},
                                {"fraction": 0.5, "selector": "fixed"}, {"mode": "full", "top_k": 2}])
def test_what_to_yaml_writes_loads_again(kw, tmp_path, caplog):
    from ragkit.generators import Generate
    from ragkit.params import validate_params
    from ragkit.pipelines import Pipeline

    op = Generate(**kw)
    again = Pipeline.from_yaml(op.to_yaml())
    assert again.steps[0].params == op.params
    with caplog.at_level(logging.WARNING, logger="ragkit"):  # a saved operator's params.json: every field
        saved = validate_params(Generate.Params, op.params.model_dump(mode="json"), "generate", source="saved")
    assert saved == op.params and not caplog.records
    assert op.params.updated(top_k=3).top_k == 3
    # a full dump builds again (review: Generate(**Generate(mode="full").params.model_dump()) was refused,
    # "fraction=0.3 has no effect without mode: cachecraft", 0.3 being the default)
    assert Generate(**op.params.model_dump()).params == op.params
    assert Generate.Params.model_validate(op.params.model_dump()) == op.params


@pytest.mark.parametrize("kw", [{"mode": "full", "fraction": 0.3, "selector": "cachecraft", "storage_dtype": "float16"},
                                {"alpha": 1.0, "fraction": 0.3}, {"mode": "prefix", "cache_dir": None},
                                {"disk_half_life_s": 3600, "disk_budget_mb": 4096}])
def test_a_default_written_out_is_accepted_as_by_every_operator(kw):
    """Review: Generate(mode="full", fraction=0.3) was refused although 0.3 is the default, where every other
    operator (Params.refuse_unused) accepts its defaults given explicitly."""
    from ragkit.generators import Generate

    op = Generate(**kw)
    assert op.params == Generate(**{k: v for k, v in kw.items() if k in op.params.non_default()}).params


def test_a_saved_generate_with_a_setting_without_effect_still_loads(caplog):
    """Pipelines saved before the rules held such settings: they load as they ran, with a warning."""
    from ragkit.generators import Generate
    from ragkit.params import validate_params

    with caplog.at_level(logging.WARNING, logger="ragkit"):
        p = validate_params(Generate.Params, {**Generate(mode="full").params.model_dump(mode="json"),
                                              "storage_dtype": "float32", "cache_budget_mb": 10}, "generate",
                            source="saved")
    assert p.storage_dtype == "float32" and p.cache_budget_mb == 10
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "storage_dtype='float32' has no effect" in said and "cache_budget_mb=10.0 has no effect" in said
