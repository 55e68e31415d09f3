"""The tensor mechanics of the prefill passes: the KV-cache keyword and output field of each transformers
release, RoPE re-encoding of stored keys (:func:`rerotate_keys`), the cache that scatters a pass's fresh
keys/values into full-length rows, and the water-filling of a recompute budget over chunks.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch


def _cache_kwarg(module: torch.nn.Module) -> str:
    """The keyword a model or decoder layer takes its KV cache by: ``cache`` (transformers >= 5.24, where
    ``past_key_values`` is deprecated, to be removed in 5.40) or ``past_key_values`` (older releases)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _output_cache(out: object) -> Any:
    """The KV cache a model's forward returned: the output's ``cache`` field (transformers >= 5.24, where
    reading ``past_key_values`` logs a deprecation warning on every first use in a process, and the name
    goes in 5.40), or ``past_key_values`` on older releases (whose outputs have no ``cache`` field)."""
    fields = getattr(out, "__dataclass_fields__", {})
    return getattr(out, "cache") if "cache" in fields else getattr(out, "past_key_values")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rerotate_keys(keys: torch.Tensor, delta: int | torch.Tensor, rotary_emb: torch.nn.Module) -> torch.Tensor:
    """Move post-RoPE keys by ``delta`` positions with the model's own rotary module.

    RoPE rotations compose additively, so ``k' = k cos(Δθ) + rotate_half(k) sin(Δθ)``, with
    ``cos``/``sin`` returned by ``rotary_emb`` for position ``Δ`` (the frequencies of any rope
    scaling of the config included; Δ may be negative).  ``keys`` has shape
    ``(..., n_tokens, head_dim)``.

    The stored keys already carry the rotary module's ``attention_scaling`` (not 1 for
    ``yarn`` and ``longrope``), which ``rotary_emb`` multiplies into its ``cos``/``sin``; it
    is divided out here so that it is applied once.  Dynamic NTK scaling (``rope_type
    "dynamic"``) changes its frequencies with the sequence length beyond
    ``original_max_position_embeddings``, so there rotations do not compose: re-rotation is
    exact only while every position stays within ``original_max_position_embeddings``.
    """
    d = torch.as_tensor(delta, dtype=torch.long).reshape(1, 1)
    cos, sin = rotary_emb(keys, position_ids=d)  # (1, 1, head_dim), times attention_scaling
    scale = float(getattr(rotary_emb, "attention_scaling", 1.0) or 1.0)
    cos, sin = (cos[0, 0] / scale).to(keys.dtype), (sin[0, 0] / scale).to(keys.dtype)
    return keys * cos + _rotate_half(keys) * sin


class _ScatterCache:
    """Duck-typed cache for one pass: writes fresh k/v rows at absolute positions ``idx``
    into preassembled full-length tensors and returns the full tensors to attention."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], idx: torch.Tensor) -> None:
        self.keys, self.values, self.idx = keys, values, idx

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args: object, **kw: object):
        self.keys[layer_idx].index_copy_(2, self.idx, k.to(self.keys[layer_idx].dtype))
        self.values[layer_idx].index_copy_(2, self.idx, v.to(self.values[layer_idx].dtype))
        return self.keys[layer_idx], self.values[layer_idx]


def _waterfill(weights: np.ndarray, caps: np.ndarray, total: float) -> np.ndarray:
    """Fractions ``r_i`` in [0, 1] with ``sum r_i caps_i ~= total``, ``r_i`` proportional to
    ``weights_i`` where not capped at 1 (budget of capped chunks goes to the others)."""
    r = np.zeros_like(weights, dtype=float)
    free = weights > 0
    remaining = float(total)
    for _ in range(len(weights) + 1):
        if not free.any() or remaining <= 0:
            break
        w = weights * free
        scale = remaining / float((w * caps).sum())
        cand = w * scale
        over = free & (cand >= 1.0)
        if not over.any():
            r[free] = cand[free]
            break
        r[over] = 1.0
        remaining -= float(caps[over].sum())
        free &= ~over
    return np.clip(r, 0.0, 1.0)
