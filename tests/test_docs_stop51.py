"""What ``help()`` and ``inspect`` show of the public classes: the constructors' real parameters (not
``*args, **kwargs``, nor private fields), an informative ``repr`` of :class:`PrefixCache`, and a docstring
on every public member a reviewer found without one (the shapes, dtypes and citations they give)."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from ragkit import Corpus, Queries
from ragkit.eval import BeirDataset, load_beir


def _names(obj: object) -> list[str]:
    return list(inspect.signature(obj).parameters)


def test_corpus_signature_names_its_columns():
    sig = inspect.signature(Corpus)
    assert list(sig.parameters) == ["ids", "texts", "titles", "metadata"]
    assert sig.parameters["titles"].default is None and sig.parameters["metadata"].default is None
    assert sig.parameters["ids"].default is inspect.Parameter.empty
    # the signature shown is the one the constructor takes: the dataclass's fields, by name
    assert list(sig.parameters) == [f.name for f in dataclasses.fields(Corpus) if f.init]
    c = Corpus(**sig.bind(["a", "b"], ["x", "y"], titles=None, metadata={"lang": ["en", "fr"]}).arguments)
    assert c.ids.tolist() == ["a", "b"] and list(c.metadata["lang"]) == ["en", "fr"]


def test_queries_signature_names_ids_and_texts():
    assert _names(Queries) == ["ids", "texts"] == [f.name for f in dataclasses.fields(Queries) if f.init]
    q = Queries(**inspect.signature(Queries).bind(["1"], ["what"]).arguments)
    assert q.ids == ["1"] and q.texts == ["what"]


def test_corpus_and_queries_still_refuse_one_argument():
    from ragkit.errors import InputTypeError

    with pytest.raises(InputTypeError):
        Corpus(["a", "b"])  # type: ignore[call-arg]
    with pytest.raises(InputTypeError):
        Queries(["a", "b"])  # type: ignore[call-arg]


def _tiny_beir(folder: Path) -> Path:
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in [("d1", "apples"), ("d2", "pears"), ("d3", "plums")]))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                  for q, t in [("q1", "apple"), ("q2", "pear"), ("q3", "fig")]))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return folder


def test_beir_dataset_signature_hides_its_private_fields(tmp_path):
    assert _names(BeirDataset) == ["path", "corpus"]
    data = load_beir(_tiny_beir(tmp_path / "tiny"))
    assert data.queries("test").ids == ["q1", "q2"]
    assert "_queries" not in repr(data) and "_warned" not in repr(data)
    # a copy with another corpus, or a dataset built by hand, reads the folder's queries as load_beir does
    again = dataclasses.replace(data, corpus=data.corpus)
    assert again.queries("test").texts == ["apple", "pear"]
    by_hand = BeirDataset(data.path, data.corpus)
    assert by_hand.queries("test").ids == ["q1", "q2"] and by_hand.qrels("test") == data.qrels("test")
    with pytest.raises(TypeError):
        BeirDataset(data.path, data.corpus, _queries={})  # type: ignore[call-arg]


def test_prefix_cache_repr_says_what_it_holds():
    torch = pytest.importorskip("torch")
    from ragkit.caches import PrefixCache

    empty = PrefixCache()
    assert repr(empty) == "PrefixCache(entries=0, bytes=0, hits=0, misses=0)"
    cache = PrefixCache(budget_bytes=1 << 20)
    ids = np.arange(8)
    rows = torch.zeros((2, 1, 8, 4))
    cache.put(ids, [4, 8], rows, rows)
    assert cache.longest(ids, [4, 8])[0] == 8
    nbytes = 2 * rows.numel() * rows.element_size()
    assert cache.nbytes == nbytes
    assert repr(cache) == f"PrefixCache(entries=1, bytes={nbytes}, budget_bytes={1 << 20}, hits=1, misses=0)"


def _members() -> list[tuple[str, object]]:
    """The public members the review found undocumented."""
    pytest.importorskip("torch")
    from ragkit.caches import CacheStats, ChunkVariant, PrefixCache
    from ragkit.eval import diversity, filtering, metrics
    from ragkit.eval.hubness import HubnessReport
    from ragkit.filters.cosine_adapter import CosineAdapter
    from ragkit.filters.dbnorm import DBNorm, DBNormDense
    from ragkit.filters.mmr import MMR
    from ragkit.retrievers.knn_embed import KnnEmbed
    from ragkit.retrievers.muvera import MaxSimExact, Muvera

    return [
        ("MaxSimExact.scores", MaxSimExact.scores), ("MaxSimExact.token_encoder", MaxSimExact.token_encoder),
        ("Muvera.fde_config", Muvera.fde_config), ("Muvera.dim", Muvera.dim),
        ("CosineAdapter.n_params", CosineAdapter.n_params), ("DBNorm.dual", DBNorm.dual),
        ("DBNormDense.encoder", DBNormDense.encoder), ("MMR.encoder", MMR.encoder),
        ("ChunkVariant.n_tokens", ChunkVariant.n_tokens), ("ChunkVariant.nbytes", ChunkVariant.nbytes),
        ("ChunkVariant.mean_cfo", ChunkVariant.mean_cfo), ("CacheStats.hit_rate", CacheStats.hit_rate),
        ("CacheStats.as_dict", CacheStats.as_dict), ("PrefixCache.nbytes", PrefixCache.nbytes),
        ("FilterReport.to_dict", filtering.FilterReport.to_dict),
        ("HubnessReport.to_dict", HubnessReport.to_dict),
        ("KnnEmbed.with_params", KnnEmbed.with_params),
        ("distinct_clusters", diversity.distinct_clusters), ("cluster_entropy", diversity.cluster_entropy),
        ("per_query_ndcg", metrics.per_query_ndcg),
    ]


def test_reviewed_members_have_docstrings():
    # (not inherited from a base class: each member's own)
    missing = [name for name, member in _members()
               if not (getattr(member, "fget", member).__doc__ or "").strip()]
    assert missing == []


def test_langchain_encoder_members_are_documented_and_typed():
    pytest.importorskip("langchain_core")
    from ragkit.integrations.langchain import LangChainEmbeddingsEncoder

    for name in ("dim", "store"):
        prop = inspect.getattr_static(LangChainEmbeddingsEncoder, name)
        assert (prop.fget.__doc__ or "").strip(), name
        assert inspect.signature(prop.fget).return_annotation is not inspect.Signature.empty, name


def test_docstrings_give_shapes_and_citations():
    pytest.importorskip("torch")
    from ragkit.caches import ChunkKVCache, ChunkVariant, chunk_kv
    from ragkit.eval import diversity, filtering, metrics
    from ragkit.retrievers import fde
    from ragkit.types import State

    for fn in (fde.fde_documents, fde.fde_queries, fde.chamfer_scores, fde.chamfer_pairs, fde.ball_carve):
        doc = inspect.getdoc(fn) or ""
        assert "offsets" in doc or "_off" in doc, fn.__name__
        assert "int64" in doc and "(n_" in doc, fn.__name__
    assert "2405.19504" in (inspect.getdoc(fde.FDEConfig) or "")
    assert "2405.19504" in (fde.__doc__ or "")  # the citation the config repeats is the module's
    store_doc = inspect.getdoc(ChunkKVCache) or ""
    assert "Cache-Craft" in store_doc and "2502.15734" in store_doc
    for fn in (chunk_kv.order_penalty, chunk_kv.cache_fix_overhead, chunk_kv.prefix_overlap):
        assert "Cache-Craft" in (fn.__doc__ or ""), fn.__name__
    variant_doc = inspect.getdoc(ChunkVariant) or ""
    for field in ("inter", "intra", "sys_inter", "token_scores", "keys, values"):
        assert f"{field} :" in variant_doc, field
    assert "ignored_judged :" in (inspect.getdoc(metrics.EvalResult) or "")
    assert "corpus_ids" in (metrics.per_query_ndcg.__doc__ or "")
    assert "labels" in (filtering.expected_calibration_error.__doc__ or "")
    assert "float64" in (diversity.cluster_entropy.__doc__ or "")
    assert "int64" in (Corpus.row_of.__doc__ or "")
    assert "float32" in (inspect.getdoc(State) or "")
