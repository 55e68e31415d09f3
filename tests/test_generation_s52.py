"""Generation review s52: the Cache-Craft costing of a stored variant, blank questions, the tokenizer identity,
the prompt's segments.

Fast tests use hand-built variants or the 4-layer ``tiny`` checkpoints of ``test_cachecraft`` (no SmolLM2 load).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cachecraft import TINY_CHUNKS, TINY_Q, tiny  # noqa: F401

from ragkit.caches import ChunkVariant


def _var(**kw) -> ChunkVariant:
    base = dict(keys=torch.zeros(2, 1, 4, 2), values=torch.zeros(2, 1, 4, 2), start=10, prefix_ids=("A",),
                prefix_lens=(5,), inter=np.ones((2, 1), np.float32), intra=np.ones(2, np.float32), cci=0.6,
                sys_id="S")
    base.update(kw)
    return ChunkVariant(**base)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- one CFO (was: two that disagreed)
def test_variant_cfo_is_the_cfo_the_generator_uses():
    """Old code: ``ChunkVariant.cfo`` ignored the system prompt and exactness (0.00 for an inexact variant and for an
    exact one of another system prompt, where the generator's CFO was 0.20 and 0.60)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(alpha=1.0)
    cases = [(_var(exact=False), ["A"], "S"), (_var(), ["A"], "S2"), (_var(), ["A"], "S"), (_var(), ["B"], "S"),
             (_var(prefix_ids=(), prefix_lens=(), inter=np.zeros((2, 0), np.float32)), ["B"], "S")]
    for v, new_prefix, sys_id in cases:
        assert v.cfo(new_prefix, 1.0, sys_id=sys_id) == pytest.approx(g._need(v, new_prefix, [5], sys_id)[0])
    inexact, other_sys = cases[0][0], cases[1][0]
    assert inexact.cfo(["A"]) > 0  # its own system prompt by default: its rows are approximate, so not free
    assert other_sys.cfo(["A"], sys_id="S2") > 0 and other_sys.cfo(["A"]) == 0.0
