"""Exact prefix caching, the baseline of Cache-Craft (ALGORITHMS.md §5.2).

A prompt's key/value rows are reusable only up to the first token that differs from a
cached prompt.  The store maps ``sha256(token ids[:k])`` at segment boundaries ``k`` to the
rows ``[0:k]`` of every layer (vLLM's block hashing and SGLang's radix tree do the same at a
finer grain).  Quality is identical to a full prefill by construction.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from ragkit.caches.chunk_kv import BUDGET_EXPECTED, budget_ok
from ragkit.errors import ParamError

__all__ = ["PrefixCache"]


def _h(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, np.int32).tobytes()).hexdigest()[:32]


class PrefixCache:
    """Longest-exact-prefix store with an LRU byte budget.

    Parameters
    ----------
    budget_bytes : int or None
        Memory budget of the stored rows (``None``: unbounded).  Least recently used
        prompts are dropped first; a prompt whose rows alone exceed the budget is not stored.

    A boundary shared by several stored prompts (the same system prompt and first chunks)
    stays indexed while any of them is stored.
    """

    def __init__(self, budget_bytes: int | None = None) -> None:
        if not budget_ok(budget_bytes):
            raise ParamError(f"PrefixCache: budget_bytes={budget_bytes!r}; expected {BUDGET_EXPECTED}", "budget_bytes")
        self.budget_bytes = None if budget_bytes is None else int(budget_bytes)
        self._entries: "OrderedDict[str, tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()
        # boundary hash -> {entry holding those rows: boundary}, the most recently stored entry last
        self._index: dict[str, dict[str, int]] = {}
        self._hashes: dict[str, list[str]] = {}  # entry -> its boundary hashes (pruned with the entry)
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def longest(self, ids: np.ndarray,
                boundaries: Sequence[int]) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """Longest cached prefix among ``boundaries`` (descending search).

        ``ids``: the prompt's token ids, shape ``(n_tokens,)``, integers (hashed as int32); ``boundaries``:
        prefix lengths in tokens (each at most ``n_tokens``) at which a prefix may be reused.  A hit counts
        in :attr:`hits` and makes its prompt the most recently used; a miss counts in :attr:`misses`.

        Returns ``(k, keys[..., :k, :], values[..., :k, :])`` with tensors of shape
        ``(n_layers, n_kv_heads, k, head_dim)``, or ``(0, None, None)``.
        """
        for k in sorted(boundaries, reverse=True):
            owners = self._index.get(_h(ids[:k]))
            if owners:
                entry = next(reversed(owners))
                self._entries.move_to_end(entry)
                K, V = self._entries[entry]
                self.hits += 1
                return k, K[:, :, :k], V[:, :, :k]
        self.misses += 1
        return 0, None, None

    def holds(self, ids: np.ndarray, boundaries: Sequence[int]) -> bool:
        """Whether the prompt :meth:`put` would store for ``ids`` and ``boundaries`` is stored (then ``put`` leaves
        it as is: a caller need not gather its rows); counts no hit and moves nothing."""
        return _h(ids[:max(boundaries)]) in self._entries

    def put(self, ids: np.ndarray, boundaries: Sequence[int], keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store rows ``[0:max(boundaries)]`` and index every boundary.

        ``ids``: the prompt's token ids, shape ``(n_tokens,)``, integers (hashed as int32); ``boundaries``:
        prefix lengths in tokens, as :meth:`longest` takes them; ``keys``, ``values``: the prompt's rows,
        shape ``(n_layers, n_kv_heads, n >= max(boundaries), head_dim)`` (keys after RoPE).  A prompt already
        stored is left as is; one whose rows alone exceed the budget is not stored."""
        top = max(boundaries)
        entry = _h(ids[:top])
        if entry in self._entries:
            return
        K, V = keys[:, :, :top].contiguous(), values[:, :, :top].contiguous()
        size = K.numel() * K.element_size() * 2
        if self.budget_bytes is not None and size > self.budget_bytes:
            return  # would empty the store and still not fit
        self._entries[entry] = (K, V)
        self._bytes += size
        hashes = [_h(ids[:k]) for k in boundaries]
        for h, k in zip(hashes, boundaries):
            owners = self._index.setdefault(h, {})
            owners.pop(entry, None)
            owners[entry] = k
        self._hashes[entry] = hashes
        while self.budget_bytes is not None and self._bytes > self.budget_bytes:
            old, (k_old, v_old) = self._entries.popitem(last=False)
            self._bytes -= k_old.numel() * k_old.element_size() * 2
            for h in self._hashes.pop(old, ()):
                owners = self._index.get(h, {})
                owners.pop(old, None)
                if not owners:  # no stored prompt holds this prefix any more
                    self._index.pop(h, None)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored key and value rows together (what ``budget_bytes`` bounds)."""
        return self._bytes

    def __repr__(self) -> str:
        budget = "" if self.budget_bytes is None else f", budget_bytes={self.budget_bytes}"
        return (f"PrefixCache(entries={len(self._entries)}, bytes={self._bytes}{budget}, hits={self.hits}, "
                f"misses={self.misses})")
