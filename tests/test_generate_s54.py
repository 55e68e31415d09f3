"""Session 54's generation fixes: ``ragkit ask`` retrieves once (the generate step names the sources it reads),
the reuse modes refuse a model whose layout they do not handle and apply Gemma2's logit softcapping, Cache-Craft's
CFO with ``alpha`` counts chunks inserted before a reused one, a cut chunk is tokenised once, and the context-window
error names the system prompt when it alone is too long."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_ask_service import DOCS, _cli, _corpus_file, _Engine as _AskEngine


class _Engine(_AskEngine):
    """Stands for the local LLM (test_ask_service's stand-in), counting its loads."""

    def __init__(self, pieces=("ok",), then: BaseException | None = None) -> None:
        super().__init__(pieces, then)
        self.loads = 0

    def load(self) -> "_Engine":
        self.loads += 1
        return self


def _spy_bm25(monkeypatch) -> list[int]:
    from ragkit.retrievers import BM25

    calls: list[int] = []
    real = BM25._call

    def spy(self, state, *a, **kw):
        calls.append(len(state.queries))
        return real(self, state, *a, **kw)

    monkeypatch.setattr(BM25, "_call", spy)
    return calls


# ---------------------------------------------------------------- 1. ragkit ask retrieves once
@pytest.mark.parametrize("then", [None, KeyboardInterrupt()])
def test_ask_runs_the_retrieval_once(tmp_path, monkeypatch, then):
    """Old code: two BM25 searches per ask (one for the sources, one inside the pipeline's search)."""
    from ragkit.generators.operator import Generate

    engine = _Engine(pieces=("Cats sleep",), then=then)
    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", engine))
    calls = _spy_bm25(monkeypatch)
    res = _cli("ask", "-p", "bm25", "--data", _corpus_file(tmp_path / "docs"), "Do cats sleep?")
    assert res.exit_code == (0 if then is None else 130), res.output
    assert res.stdout.startswith("Cats sleep\n") and "sources: d2 (Cats)" in res.stdout, res.stdout
    assert calls == [1] and engine.loads == 1


def test_ask_that_matches_nothing_retrieves_once_and_loads_no_model(tmp_path, monkeypatch):
    from ragkit.generators.operator import Generate

    engine = _Engine()
    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", engine))
    calls = _spy_bm25(monkeypatch)
    res = _cli("ask", "-p", "bm25", "--data", _corpus_file(tmp_path / "docs"), "what is the of and")
    assert res.exit_code == 2 and "sources" not in res.output, res.output
    assert "no document of the 3 matched the question 'what is the of and', so there is nothing to answer from" \
        in res.output
    assert calls == [1] and engine.loads == 0


def test_generate_reports_each_querys_sources_before_answering():
    from ragkit.generators.operator import NO_DOCUMENT, Generate
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    corpus = Corpus([d for d, _, _ in DOCS], [x for _, _, x in DOCS], [t for _, t, _ in DOCS])
    events: list[tuple] = []

    class Engine(_Engine):
        def generate(self, question, chunks, **kw):
            events.append(("answer", question))
            return "ok"

    gen = Generate(top_k=1, mode="full")
    pipe = Pipeline([BM25(k=3), gen])
    pipe.fit(corpus)
    gen.engine_ = Engine()
    run = pipe.search(["Do cats sleep?", "the of and"],
                      generate={"on_sources": lambda qi, ids: events.append(("sources", qi, ids))})
    assert events == [("sources", 0, ["d2"]), ("answer", "Do cats sleep?"), ("sources", 1, [])]
    assert run.values["answer_skipped"] == [None, NO_DOCUMENT]


# ---------------------------------------------------------------- 2. models of other layouts
A = ["Scurvy is caused by a lack of vitamin C.", "Sailors ate citrus fruit on long voyages."]


def _tiny_model(folder: Path, family: str, **over):
    """A tiny random-weight causal LM of ``family`` with a byte-level tokenizer, saved to ``folder`` (no download)."""
    import tokenizers
    import torch
    import transformers as tf

    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab["<eos>"] = len(vocab)
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    common = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, max_position_embeddings=512)
    config_cls, model_cls, extra = {
        "phi": (tf.PhiConfig, tf.PhiForCausalLM, {"partial_rotary_factor": 0.5}),
        "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, {}),
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, {"num_key_value_heads": 2, "initializer_range": 0.5}),
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM,
                   {"num_key_value_heads": 2, "head_dim": 8, "final_logit_softcapping": 3.0,
                    "initializer_range": 0.5}),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, {"num_key_value_heads": 2, "initializer_range": 0.5}),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM, {"num_key_value_heads": 2, "initializer_range": 0.5}),
        "granite": (tf.GraniteConfig, tf.GraniteForCausalLM,
                    {"num_key_value_heads": 2, "embedding_multiplier": 12.0, "logits_scaling": 8.0,
                     "initializer_range": 0.5}),
        "cohere": (tf.CohereConfig, tf.CohereForCausalLM, {"num_key_value_heads": 2, "initializer_range": 0.5}),
    }[family]
    torch.manual_seed(0)
    model_cls(config_cls(**{**common, **extra, **over})).save_pretrained(folder)
    tf.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>").save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("family", ["phi", "gpt_neox"])
def test_a_reuse_mode_refuses_a_model_of_another_layout(tmp_path, family):
    """Old code: AttributeError ('PhiModel' object has no attribute 'norm'; GPT-NeoX: no num_key_value_heads)."""
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(_tiny_model(tmp_path / family, family), max_chunk_tokens=64).load()
    with pytest.raises(ParamError, match=rf"mode 'cachecraft' runs the decoder layers of a Llama-like layout itself, "
                                         rf"and model type '{family}' \(.*\) does not fit it: .*; use mode 'full' or "
                                         r"'prefix'"):
        g.generate("What causes scurvy?", A, mode="cachecraft", max_new_tokens=2)
    with pytest.raises(ParamError, match="mode 'naive' runs"):
        g.prefill(g.segments("What causes scurvy?", A), "naive")
    with pytest.raises(ParamError, match="capture=True runs"):
        g.prefill(g.segments("What causes scurvy?", A), "full", capture=True)
    for mode in ("full", "prefix"):  # these run the model's own forward
        assert isinstance(g.generate("What causes scurvy?", A, mode=mode, max_new_tokens=2), str)


def test_gemma2_full_recompute_matches_full_with_its_logit_softcapping(tmp_path):
    """Old code: the reuse pass skipped final_logit_softcapping (max |dlogit| ~0.7 at softcap 3)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(_tiny_model(tmp_path / "g2", "gemma2"), max_chunk_tokens=64).load()
    seg = g.segments("What causes scurvy?", A)
    full = g.prefill(seg, "full")
    g.prefill(g.segments("x", A[::-1]), "full", capture=True)
    re = g.prefill(seg, "cachecraft", fraction=1.0, selector="fixed", new_variants=False)
    assert float((re.logits - full.logits).abs().max()) < 1e-4


def test_a_prompt_longer_than_the_sliding_window_is_refused_in_the_reuse_modes(tmp_path):
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(_tiny_model(tmp_path / "g2", "gemma2", sliding_window=16), max_chunk_tokens=64).load()
    seg = g.segments("What causes scurvy?", A)
    with pytest.raises(ParamError, match=rf"the prompt is {len(seg)} tokens, longer than its sliding attention "
                                         "window of 16 tokens"):
        g.prefill(seg, "cachecraft")
    g.prefill(seg, "full")


# ---------------------------------------------------------------- 3. CFO with alpha and a chunk inserted before
CHUNKS = ["Vitamin D regulates calcium absorption in the gut and is needed for bone mineralisation.",
          "Randomised trials of vitamin D supplements in older adults found no reduction in hip fractures.",
          "Scurvy is caused by a lack of vitamin C and was common among sailors on long voyages."]


def test_alpha_recomputes_a_chunk_reused_after_a_chunk_inserted_before_it(tmp_path):
    """Old code: C's variant after [A], reused after [A, B] with alpha=1: beta = 1, gamma = 0, so CFO 0 (no token
    of C recomputed although it never attended to B)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(_tiny_model(tmp_path / "ll", "llama"), max_chunk_tokens=64, alpha=1.0).load()
    a, c, b = CHUNKS
    g.prefill(g.segments("Does vitamin D prevent fractures?", [a, c]), "full", capture=True)  # C's variant after [A]
    seg = g.segments("Does vitamin D prevent fractures?", [a, b, c])
    keys = g._chunk_keys(seg)
    (v,) = g.chunk_cache.lookup(keys[2])
    assert v.prefix_ids == (keys[0],) and v.exact
    need, exact = g._need(v, keys[:2], [len(x) for x in seg.chunks[:2]], g._sys_id(seg))
    assert not exact and need > 0
    re = g.prefill(seg, "cachecraft", selector="cachecraft", new_variants=False)
    assert re.chunk_fraction[2] > 0


def test_alpha_cfo_is_eq12_when_no_chunk_was_added():
    import numpy as np
    import torch

    from ragkit.caches.chunk_kv import ChunkVariant, cache_fix_overhead, fix_overhead, order_penalty, prefix_overlap

    inter = np.array([[2.0, 6.0], [1.0, 3.0]], dtype=np.float32)
    v = ChunkVariant(keys=torch.zeros(2, 1, 4, 8), values=torch.zeros(2, 1, 4, 8), start=20, prefix_ids=("a", "b"),
                     prefix_lens=(5, 7), inter=inter, intra=np.ones(2, dtype=np.float32),
                     sys_inter=np.ones(2, dtype=np.float32), sys_len=4, token_scores=np.ones(4, dtype=np.float32),
                     cci=0.8, sys_id="s", exact=True)
    for new in (["b", "a"], ["b"]):  # reordered, one dropped: no token added before the chunk
        lens = [7, 5][: len(new)]
        eq12 = cache_fix_overhead(0.8, prefix_overlap(inter, v.prefix_ids, new), order_penalty(v.prefix_ids, new), 1.0)
        assert fix_overhead(v, new, lens, "s", 1.0) == (pytest.approx(eq12), False)
    added = fix_overhead(v, ["a", "x", "b"], [5, 12, 7], "s", 1.0)[0]  # half the new prefix's tokens are new
    assert added == pytest.approx(0.8 * (1 - 1.0 * 0.5))


# ---------------------------------------------------------------- 4. a cut chunk is tokenised once
AWKWARD = [
    "Vitamin D regulates calcium absorption. " * 40,
    "Scurvy!!! ... ??? " * 30 + "end.",
    "naïve café — “quoted” ‘text’ – ☃ 🙂🙂 " * 20,
    "中文文本，没有空格。日本語のテキスト。" * 30,
    "line one\nline two\n\n\nline three\r\n\tindented\t" * 25,
    "x" * 3000,
    "1234567890 " * 60 + "   \n\n  ",
    "   leading and trailing spaces   " * 20,
    "tokens: <|im_end|> <|im_start|> </s> " * 20,
    "word" + "\n\n" * 200 + "tail",
]


@pytest.fixture(scope="module")
def smol():
    from ragkit.generators.local import LocalGenerator

    return LocalGenerator(max_chunk_tokens=64).load()


@pytest.mark.parametrize("n", [3, 17, 64])
def test_a_cut_chunk_equals_the_old_two_encoding_cut(smol, n):
    from ragkit.generators.local import CHUNK_SEP

    smol.max_chunk_tokens = n
    try:
        seg = smol.segments("What is it?", AWKWARD)
    finally:
        smol.max_chunk_tokens = 64
    tok = smol.tokenizer_
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    sep = enc(CHUNK_SEP)
    for text, got in zip(AWKWARD, seg.chunks):
        whole = enc(text.strip() + CHUNK_SEP)
        old = whole if len(whole) <= n else enc(text.strip())[: n - len(sep)] + sep
        assert list(got) == old, text[:40]


def test_a_cut_chunk_is_tokenised_once(smol, monkeypatch, caplog):
    """Old code: a cut chunk was encoded twice (with its separator, then alone), and the separator per prompt."""
    smol.segments("What is it?", ["a chunk"])  # (the system segment is tokenised once per system prompt)
    tok = smol.tokenizer_
    texts: list[str] = []
    real = type(tok).__call__

    def spy(self, text, *a, **kw):
        texts.append(text)
        return real(self, text, *a, **kw)

    monkeypatch.setattr(type(tok), "__call__", spy)
    smol.segments("What is it?", AWKWARD[:3])
    body = [t for t in texts if not t.startswith("Question: ")]
    assert len(body) == 3, body


# ---------------------------------------------------------------- 5. a system prompt longer than the context
def test_a_system_prompt_too_long_for_the_context_is_named(tmp_path):
    """Old code: 'the question is 23 tokens ... shorten the question' for a short question."""
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(_tiny_model(tmp_path / "ll", "llama"), system_prompt="Be brief. " * 60,
                       max_chunk_tokens=64).load()
    with pytest.raises(ParamError, match=r"the system prompt is [\d,]+ tokens .*leaves no room in the model's "
                                         r"context of 512 tokens, whatever the question and chunks; shorten "
                                         "system_prompt") as e:
        g.generate("Why?", A, mode="full", max_new_tokens=2)
    assert e.value.path == "system_prompt" and "question is" not in str(e.value)
