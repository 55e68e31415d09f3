"""Cache-Craft context variants made by reuse passes, and the local generator's model checks.

1. A chunk recomputed in full at a new position after exact rows is stored as a variant of its new context
   (the old code kept only the variant of the first context a chunk was seen in: a prompt that met its
   chunks in another order first stayed approximate for good).
2. A folder that is no model is a ParamError naming it (was a bare ValueError from transformers).
3. A name that is neither a folder nor in the Hugging Face cache fails at once where the hub cannot be
   reached (transformers retried for ~50 s).
4. ``fit`` refuses a missing model path (was refused at the first search).

The variant tests load SmolLM2-135M (``slow``: a few seconds from its dequantized copy); the others load
no model, or the tiny 4-layer checkpoints of ``tests/test_cachecraft.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from test_cachecraft import CHUNKS, QUESTION, TINY_CHUNKS, TINY_Q, needs_model, tiny  # noqa: F401

from ragkit.errors import ParamError

#: three chunks of ``CHUNKS`` in another order: every chunk moves (cut to 12 tokens: a short prompt, a fast test)
ORDER_A, ORDER_B = [0, 1, 2], [2, 0, 1]
N = len(ORDER_B)


def _dlogit(a, b) -> float:
    return float((a.logits - b.logits).abs().max())


def _prompts(g):
    return (g.segments(QUESTION, [CHUNKS[i] for i in ORDER_A]),
            g.segments(QUESTION, [CHUNKS[i] for i in ORDER_B]))


# ----------------------------------------------------------------------------- 1. variants of new contexts
@needs_model
@pytest.mark.slow
def test_a_chunk_recomputed_in_full_in_a_new_order_is_stored_as_a_variant_of_it():
    """Old code: the chunks of B, recomputed in full after exact rows, were thrown away (their stored variant was
    of A's context), so B at the default fraction kept being fixed from A's variants: ~40% of its tokens
    computed again at every prefill, its logits off by ~1."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(max_chunk_tokens=12).load()
    a, b = _prompts(g)
    g.prefill(a, "cachecraft")  # all misses: stored exact, in A's order
    full = g.prefill(b, "full")
    before = g.prefill(b, "cachecraft")
    assert _dlogit(before, full) > 1e-2 and before.n_computed > len(b.question)  # fixed from A's variants
    again = g.prefill(b, "cachecraft", fraction=1.0)  # every chunk recomputed in full after exact rows
    assert again.chunk_fraction == [1.0] * N and _dlogit(again, full) < 1e-3
    keys, starts = g._chunk_keys(b), b.starts()
    for i, key in enumerate(keys):
        variants = g.chunk_cache.lookup(key)
        assert len(variants) == 2, i  # A's context and B's
        (mine,) = [v for v in variants if v.prefix_ids == tuple(keys[:i])]
        assert mine.exact and mine.start == starts[i]
    after = g.prefill(b, "cachecraft")  # the default fraction: B's own variants, reused as they are
    assert after.chunk_fraction == [0.0] * N and after.n_computed == len(b.question)
    assert _dlogit(after, full) < 1e-3
    # A keeps its own variants
    assert g.prefill(a, "cachecraft").chunk_fraction == [0.0] * N


@needs_model
@pytest.mark.slow
def test_a_prompt_met_again_gets_closer_to_full_at_the_default_fraction():
    """With budgets reaching ``full_threshold``, each prefill of B stores the chunks it recomputed in full: the
    next one reuses them exactly and computes fewer tokens (old code: every prefill of B alike)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(max_chunk_tokens=12, full_threshold=0.3).load()
    a, b = _prompts(g)
    g.prefill(a, "cachecraft")
    full = g.prefill(b, "full")
    first = g.prefill(b, "cachecraft")
    assert first.chunk_fraction[0] == 1.0  # its first chunk recomputed in full (right after the system prompt)
    assert len(g.chunk_cache.lookup(g._chunk_keys(b)[0])) == 2
    second = g.prefill(b, "cachecraft")
    assert second.chunk_fraction[0] == 0.0  # reused exactly
    assert second.n_computed < first.n_computed
    assert _dlogit(second, full) <= _dlogit(first, full)


def test_new_variants_false_stores_the_misses_only(tiny):  # noqa: F811
    """What a benchmark comparing fractions on one store state needs: a 100% recompute leaves the store as it was
    (the default stores the chunks it recomputed in full after exact rows, which later prefills then reuse)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    for c in TINY_CHUNKS:  # every chunk captured alone
        g.prefill(g.segments(TINY_Q, [c]), "full", capture=True)
    seg = g.segments(TINY_Q, TINY_CHUNKS)
    keys = g._chunk_keys(seg)
    full = g.prefill(seg, "full")
    for _ in range(2):
        re = g.prefill(seg, "cachecraft", fraction=1.0, selector="fixed", new_variants=False)
        assert re.chunk_fraction == [0.0, 1.0, 1.0] and _dlogit(re, full) < 1e-3  # chunk 0: the exact prefix hit
    assert [len(g.chunk_cache.lookup(k)) for k in keys] == [1, 1, 1]
    assert _dlogit(g.prefill(seg, "naive"), full) > 1e-2
    g.prefill(seg, "cachecraft", fraction=1.0, selector="fixed")
    assert [len(g.chunk_cache.lookup(k)) for k in keys] == [1, 2, 2]
    naive = g.prefill(seg, "naive")  # every chunk now has an exact variant of this context
    assert naive.chunk_fraction == [0.0, 0.0, 0.0] and _dlogit(naive, full) < 1e-3


# ----------------------------------------------------------------------------- 2. a folder that is no model
def _not_a_model(tmp_path: Path) -> Path:
    """A folder that looks like a model's (a config.json) but holds none."""
    bad = tmp_path / "notamodel"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    return bad


def test_a_folder_that_is_no_model_is_a_param_error_naming_it(tmp_path):
    """Old code: transformers' bare ValueError ("Couldn't instantiate the backend tokenizer ...")."""
    pytest.importorskip("transformers")
    from ragkit.generators.local import LocalGenerator

    bad = _not_a_model(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (bad, empty):
        with pytest.raises(ParamError, match=rf"could not load the model {re.escape(repr(os.path.realpath(folder)))}; "
                                             r"expected a model folder, a GGUF file or a Hugging Face model id \(\w+"
                           ) as raised:
            LocalGenerator(str(folder)).load()
        assert raised.value.path == "model" and "\n" not in str(raised.value)


def test_cli_ask_with_a_folder_that_is_no_model_exits_2(tmp_path):
    pytest.importorskip("transformers")
    from typer.testing import CliRunner

    from ragkit.cli import app

    bad = _not_a_model(tmp_path)
    docs = tmp_path / "corpus.jsonl"
    docs.write_text("\n".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) for i, t in enumerate(CHUNKS)))
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"pipeline:\n  - bm25: {{}}\n  - generate: {{model: {bad}, max_new_tokens: 4}}\n")
    res = CliRunner().invoke(app, ["ask", "--pipeline", str(pipe), "--data", str(docs), QUESTION])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "could not load the model" in res.output and "notamodel" in res.output
    assert "Traceback" not in res.output


# ----------------------------------------------------------------------------- 3. names of the Hugging Face hub
def test_a_name_neither_here_nor_in_the_hf_cache_fails_at_once_offline(monkeypatch):
    """Old code: "my-model" went to the hub, which transformers retried for ~50 s offline."""
    pytest.importorskip("transformers")
    import ragkit.generators.local as local
    from ragkit.generators import _model_source

    monkeypatch.setattr(_model_source, "_hub_unreachable", lambda timeout=3.0: "https://huggingface.co")
    t0 = time.perf_counter()
    with pytest.raises(ParamError, match=r"could not load the model 'ragkit-no-such-model'.* is not a folder here nor "
                                         r"a model in the Hugging Face cache, and the hub \(https://huggingface.co\) "
                                         r"cannot be reached to download it"):
        local.LocalGenerator("ragkit-no-such-model").load()
    assert time.perf_counter() - t0 < 20


class _Fake:
    """Stands for AutoTokenizer / AutoModelForCausalLM: records the calls; ``cached`` names what the HF cache holds."""

    calls: list[tuple[str, str, bool]] = []
    cached: set[str] = set()

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def from_pretrained(self, name: str, **kw):
        local_only = bool(kw.get("local_files_only", False))
        self.calls.append((self.kind, name, local_only))
        if local_only and name not in self.cached:
            raise OSError(f"{name} is not in the cache")
        return self

    def eval(self):
        return self


def test_hub_ids_are_read_from_the_hf_cache_first_and_downloaded_only_where_the_hub_answers(monkeypatch):
    transformers = pytest.importorskip("transformers")
    from ragkit.generators import _model_source

    monkeypatch.setattr(transformers, "AutoTokenizer", _Fake("tok"))
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", _Fake("model"))
    monkeypatch.setattr(_Fake, "calls", [])
    monkeypatch.setattr(_Fake, "cached", {"org/cached"})
    probes: list[float] = []
    monkeypatch.setattr(_model_source, "_hub_unreachable", lambda timeout=3.0: probes.append(timeout))
    _model_source._pretrained("org/cached")  # in the cache: no request at all
    assert _Fake.calls == [("tok", "org/cached", True), ("model", "org/cached", True)] and probes == []
    _Fake.calls.clear()
    _model_source._pretrained("gpt2")  # not cached, the hub reachable: downloaded by name
    assert _Fake.calls == [("tok", "gpt2", True), ("tok", "gpt2", False), ("model", "gpt2", False)]
    assert len(probes) == 1


def test_hub_unreachable_checks_offline_mode_proxies_and_the_endpoint(monkeypatch):
    pytest.importorskip("huggingface_hub")
    import socket

    from huggingface_hub import constants

    from ragkit.generators import _model_source

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy",
                "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    tried: list[tuple] = []

    def no_network(address, timeout=None):
        tried.append(address)
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example:8443")
    assert _model_source._hub_unreachable() == "https://hub.example:8443" and tried == [("hub.example", 8443)]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert "HF_HUB_OFFLINE" in str(_model_source._hub_unreachable()) and len(tried) == 1
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # set after huggingface_hub read it: still offline, as the encoder's check (hub_offline) reads it; no probe
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert "offline mode is set" in str(_model_source._hub_unreachable()) and len(tried) == 1
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # the proxy decides: no probe
    assert _model_source._hub_unreachable() is None and len(tried) == 1


# ----------------------------------------------------------------------------- 4. fit checks the model path
def test_fit_refuses_a_missing_model_path_and_loads_no_model(tmp_path):
    """Old code: the fit passed and the path was refused at the first search."""
    from ragkit.generators import Generate
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    corpus = Corpus.from_records([{"_id": f"d{i}", "text": t} for i, t in enumerate(CHUNKS)])
    with pytest.raises(ParamError, match=r"generate.model: .*nope' does not exist; expected an existing model folder"):
        Pipeline([BM25(), Generate(model=str(tmp_path / "nope"))]).fit(corpus)
    with pytest.raises(ParamError, match="nope' does not exist"):
        Generate(model=str(tmp_path / "nope")).fit(corpus)
    folder = tmp_path / "model"  # exists: passes the check, and nothing is loaded at the fit
    folder.mkdir()
    gen = Generate(model=str(folder))
    Pipeline([BM25(), gen]).fit(corpus)
    assert gen.engine_.model_ is None
