"""Cache-Craft review fixes: the check layer's range, chunks counted as reused, ``alpha`` beside ``fraction``
in ``Generate``, and a system prompt holding ragkit's user-turn placeholder.

The tiny 4-layer test model (``tiny``, from ``test_cachecraft``) keeps this offline and cheap.
"""

from __future__ import annotations

import pytest
from test_cachecraft import TINY_CHUNKS, TINY_Q, tiny  # noqa: F401

from ragkit.errors import ParamError

pytest.importorskip("transformers")


def test_check_layer_0_is_refused_at_construction():
    """Layer 0's values do not depend on the context: every deviation was 0, the tokens ranked by position
    (cacheblend put its whole budget on the first chunk; the deviation selection was the boundary one)."""
    from ragkit.generators.local import LocalGenerator

    with pytest.raises(ParamError, match=r"check_layer=0; expected an int from 1 .*layer 0's values do not "
                                         r"depend on the context") as raised:
        LocalGenerator("unused-model-name", check_layer=0)
    assert raised.value.path == "check_layer"


def test_the_last_layer_as_check_layer_is_refused_at_load(tiny):  # noqa: F811
    """At the last layer every candidate ran every layer: a full recompute of each, while chunk_fraction and
    the cache's counters reported the share asked (the tiny model: 351/351 tokens computed, fractions 0.12-0.45)."""
    from ragkit.generators.local import LocalGenerator

    for bad in (3, 4):
        with pytest.raises(ParamError, match=rf"check_layer={bad}; expected a layer of the model from 1 to 2 "
                                             r"\(model .* has 4 layers; .*recomputed in full") as raised:
            LocalGenerator(tiny[0], check_layer=bad).load()
        assert raised.value.path == "check_layer"
    g = LocalGenerator(tiny[0], check_layer=2).load()  # the last one allowed: what it reports is what it computed
    for c in TINY_CHUNKS:
        g.prefill(g.segments("x?", [c]), "full", capture=True)
    seg = g.segments(TINY_Q, TINY_CHUNKS[::-1])
    pre = g.prefill(seg, "cachecraft", fraction=0.3, selector="cacheblend", new_variants=False)
    assert pre.n_computed < pre.n_prompt and min(pre.chunk_fraction) < 1


@pytest.fixture(scope="module")
def two_layers(tiny, tmp_path_factory):  # noqa: F811
    """The tiny model's config and tokenizer with 2 layers: no layer can be a check layer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_pretrained(tiny[0])
    cfg.num_hidden_layers = 2
    d = tmp_path_factory.mktemp("two") / "final"
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d)
    AutoTokenizer.from_pretrained(tiny[0]).save_pretrained(d)
    return str(d)


def test_a_model_of_two_layers_has_no_check_layer(two_layers):
    """Check layer 1 of 2 layers is the last: the deviation selection recomputed every candidate in full. It
    loads (mode full needs no check layer); the selections at a check layer are refused, the others run."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(two_layers).load()
    seg = g.segments(TINY_Q, TINY_CHUNKS)
    g.prefill(seg, "full", capture=True)
    seg2 = g.segments(TINY_Q, TINY_CHUNKS[::-1])
    for selector in ("cacheblend", "cachecraft"):
        with pytest.raises(ParamError, match=r"ranks tokens at a check layer, but the model has 2 layers") as raised:
            g.prefill(seg2, "cachecraft", fraction=0.3, selector=selector)
        assert raised.value.path == "selector"
    pre = g.prefill(seg2, "cachecraft", fraction=0.3, selector="fixed", new_variants=False)
    assert pre.n_computed < pre.n_prompt
    g.token_select = "stored"
    assert g.prefill(seg2, "cachecraft", fraction=0.3, selector="cachecraft", new_variants=False).n_computed < len(seg2)
    assert g.prefill(seg2, "naive").n_computed < len(seg2)


def test_a_chunk_found_in_the_cache_but_recomputed_in_full_is_not_counted_reused(tiny):  # noqa: F811
    """It said '3/3 chunks reused' with chunk fractions [0, 1, 1]: two of them reused nothing."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    for c in TINY_CHUNKS:  # each alone: chunk 0 is exact where it sits, the others are not
        g.prefill(g.segments(TINY_Q, [c]), "full", capture=True)
    seg = g.segments(TINY_Q, TINY_CHUNKS)
    pre = g.prefill(seg, "cachecraft", fraction=1.0, selector="fixed", new_variants=False)
    assert pre.chunk_fraction == [0.0, 1.0, 1.0] and pre.hits == 3
    assert pre.cost.chunks_reused == 1
    assert " 1/3 chunks reused " in str(pre.cost)
    part = g.prefill(seg, "cachecraft", fraction=0.3, selector="fixed", new_variants=False)
    assert part.cost.chunks_reused == 3  # recomputed in part: reused


def test_generate_refuses_fraction_beside_alpha_with_the_cachecraft_selector():
    """alpha sets each chunk's share with the cachecraft selector: fraction was ignored without a word."""
    from ragkit.generators import Generate

    with pytest.raises(ParamError, match=r"fraction=0.5 has no effect with alpha=1.0: with selector 'cachecraft', "
                                         r"alpha sets .* overriding fraction"):
        Generate(alpha=1.0, fraction=0.5)
    Generate(alpha=1.0)  # each alone is fine
    Generate(fraction=0.5)
    Generate(fraction=0.5, selector="fixed")


def test_a_saved_generate_with_fraction_beside_alpha_still_loads(caplog):
    """Pipelines saved before the refusal held both (fraction unused): they load, with a warning."""
    import logging

    from ragkit.generators import Generate
    from ragkit.params import validate_params

    with caplog.at_level(logging.WARNING, logger="ragkit"):
        p = validate_params(Generate.Params, {"alpha": 1.0, "fraction": 0.5}, "generate", source="saved")
    assert p.alpha == 1.0 and p.fraction == 0.5
    assert any("has no effect with alpha" in r.getMessage() and "loads as it ran" in r.getMessage()
               for r in caplog.records)


def test_a_system_prompt_holding_the_user_turn_placeholder_is_kept(tiny):  # noqa: F811
    """ragkit's placeholder for the user turn in the system prompt: ValueError: too many values to unpack."""
    from ragkit.generators.local import LocalGenerator

    prompt = "Use marker \u2063RAGKIT\u2063 here, \u2063RAGKIT\u2063\u2063 too."
    g = LocalGenerator(tiny[0], system_prompt=prompt).load()
    seg = g.segments(TINY_Q, TINY_CHUNKS[:1])
    assert prompt in g.tokenizer_.decode(seg.system)
    assert g.tokenizer_.decode(seg.question).startswith("Question: " + TINY_Q)
    plain = LocalGenerator(tiny[0], system_prompt="Use marker here.").load().segments(TINY_Q, TINY_CHUNKS[:1])
    assert seg.question == plain.question and seg.chunks == plain.chunks
