"""Session 54's second round of generation fixes: the reuse modes probe a model's forward once (Granite's and
Cohere's scales and Cohere's interleaved rotary are refused, not run wrongly), a prompt too long for the context is
told so before any sliding-window advice, ``ChunkVariant.cfo`` with ``alpha`` needs the new chunks' lengths, and
``ragkit ask`` names the sources its answer read."""

from __future__ import annotations

import pytest
from test_generate_s54 import A, _tiny_model


# ---------------------------------------------------------------- 1. a behavioural probe of the reuse passes
@pytest.mark.parametrize(("family", "over", "why"), [
    ("granite", {}, r"last logits up to [\d.e+-]+ off those of its own forward"),
    ("cohere", {}, r"last logits up to [\d.e+-]+ off those of its own forward"),
    ("cohere", {"logit_scale": 1.0}, r"keys moved \d+ positions by rotate_half re-rotation are up to [\d.e+-]+ off"),
])
def test_a_reuse_mode_refuses_a_model_its_passes_run_differently(tmp_path, family, over, why):
    """Old code: accepted (Llama's attributes), then cachecraft at fraction 1 differed from full by |dlogit| ~10."""
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(_tiny_model(tmp_path / family, family, **over), max_chunk_tokens=64).load()
    with pytest.raises(ParamError, match=rf"mode 'cachecraft' runs the decoder layers of a Llama-like layout itself, "
                                         rf"and model type '{family}' \(.*\) does not fit it: .*{why}.*; use mode "
                                         r"'full' or 'prefix'") as e:
        g.generate("What causes scurvy?", A, mode="cachecraft", max_new_tokens=2)
    assert e.value.path == "mode"
    with pytest.raises(ParamError, match="capture=True runs"):
        g.prefill(g.segments("What causes scurvy?", A), "full", capture=True)
    for mode in ("full", "prefix"):  # these run the model's own forward
        assert isinstance(g.generate("What causes scurvy?", A, mode=mode, max_new_tokens=2), str)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
def test_the_reuse_probe_accepts_llama_like_models(tmp_path, family):
    from ragkit.generators.local import _PROBED, LocalGenerator

    g = LocalGenerator(_tiny_model(tmp_path / family, family), max_chunk_tokens=64).load()
    seg = g.segments("What causes scurvy?", A)
    full = g.prefill(seg, "full")
    g.prefill(g.segments("x", A[::-1]), "full", capture=True)
    re = g.prefill(seg, "cachecraft", fraction=1.0, selector="fixed", new_variants=False)
    assert float((re.logits - full.logits).abs().max()) < 1e-4
    assert g.model in _PROBED and _PROBED[g.model] is None


def test_the_reuse_probe_runs_once_per_model(tmp_path, monkeypatch):
    from ragkit.generators.local import _PROBE_LEN, LocalGenerator

    folder = _tiny_model(tmp_path / "ll", "llama")
    g = LocalGenerator(folder, max_chunk_tokens=64).load()
    calls: list[int] = []
    real = LocalGenerator._empty_kv

    def spy(self, T):
        calls.append(T)
        return real(self, T)

    monkeypatch.setattr(LocalGenerator, "_empty_kv", spy)
    g.prefill(g.segments("Why?", A), "full", capture=True)
    h = LocalGenerator(folder, max_chunk_tokens=64).load()  # the same loaded model: not probed again
    h.prefill(h.segments("How?", A), "naive")
    assert calls.count(_PROBE_LEN) == 1 and min(calls[1:]) > _PROBE_LEN  # (the prompts: longer)


# ---------------------------------------------------------------- 2. the context before the sliding window
def test_a_prompt_over_the_context_and_the_window_is_told_the_context(tmp_path):
    """Old code: 'longer than its sliding attention window ...; use mode 'full'', which then refused it."""
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(_tiny_model(tmp_path / "mi", "mistral", sliding_window=16, max_position_embeddings=128),
                       system_prompt="Be brief.", max_chunk_tokens=64).load()
    seg = g.segments("What causes scurvy?", A * 2)
    assert len(seg) > 200
    for mode in ("cachecraft", "full"):
        with pytest.raises(ParamError, match=rf"the prompt is {len(seg):,} tokens .* which leaves no room in the "
                                             "model's context of 128 tokens") as e:
            g.prefill(seg, mode)
        assert "sliding" not in str(e.value)


# ---------------------------------------------------------------- 3. ChunkVariant.cfo with alpha and a chunk added
def _variant():
    import numpy as np
    import torch

    from ragkit.caches.chunk_kv import ChunkVariant

    return ChunkVariant(keys=torch.zeros(2, 1, 4, 8), values=torch.zeros(2, 1, 4, 8), start=20, prefix_ids=("a", "b"),
                        prefix_lens=(5, 7), inter=np.array([[2.0, 6.0], [1.0, 3.0]], dtype=np.float32),
                        intra=np.ones(2, dtype=np.float32), sys_inter=np.ones(2, dtype=np.float32), sys_len=4,
                        token_scores=np.ones(4, dtype=np.float32), cci=0.8, sys_id="s", exact=True)


def test_cfo_with_alpha_needs_the_lengths_of_an_added_chunk():
    """Old code: kappa counted as 1 (CFO 0.0, the generator 0.4 for the same reuse)."""
    from ragkit.caches.chunk_kv import fix_overhead
    from ragkit.errors import ParamError

    v = _variant()
    with pytest.raises(ParamError, match=r"new_prefix holds 1 chunk\(s\) not in the variant's prefix \(first 'x'\) "
                                         "and no new_lens; expected new_lens") as e:
        v.cfo(["a", "x", "b"], alpha=1.0)
    assert e.value.path == "new_lens"
    assert v.cfo(["a", "x", "b"], alpha=1.0, new_lens=[5, 12, 7]) == \
        pytest.approx(fix_overhead(v, ["a", "x", "b"], [5, 12, 7], "s", 1.0)[0])
    assert v.cfo(["b", "a"], alpha=1.0) == pytest.approx(fix_overhead(v, ["b", "a"], [7, 5], "s", 1.0)[0])


# ---------------------------------------------------------------- 4. ragkit ask cuts the pipeline once
@pytest.mark.parametrize("then", [None, KeyboardInterrupt()])
def test_ask_cuts_the_pipeline_at_its_generate_step_once(tmp_path, monkeypatch, then):
    """Old code: two generation_cut calls per ask (the second built a Pipeline and dropped it)."""
    from test_generate_s54 import _cli, _corpus_file, _Engine

    import ragkit.pipelines._compose as compose
    from ragkit.generators.operator import Generate

    engine = _Engine(pieces=("Cats sleep",), then=then)
    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", engine))
    calls: list[int] = []
    real = compose.generation_cut

    def spy(steps):
        calls.append(len(steps))
        return real(steps)

    monkeypatch.setattr(compose, "generation_cut", spy)
    res = _cli("ask", "-p", "bm25", "--data", _corpus_file(tmp_path / "docs"), "Do cats sleep?")
    assert res.exit_code == (0 if then is None else 130), res.output
    assert "sources: d2 (Cats)" in res.stdout, res.stdout
    assert len(calls) == 1
