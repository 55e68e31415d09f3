"""Dense retrieval: normalised sentence embeddings searched exactly (numpy) or with usearch HNSW.

Designed so storage and search are parameters of one operator: the quantized variants
(``dtype``, ``rescore``, ``reduce``) extend :class:`DenseParams`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ragkit.encoders import DEFAULT_MODEL, Encoder, get_encoder, query_vectors
from ragkit.operator import Operator, load_array, rankings_from_matrix, save_arrays, topk_rows
from ragkit.params import Params
from ragkit.registry import register
from ragkit.types import Corpus, State, TrainSet

__all__ = ["Dense", "DenseParams"]


class DenseParams(Params):
    model: str = Field(DEFAULT_MODEL, description="Sentence-transformers model name or folder.")
    k: int = Field(100, ge=1, description="Results per query.")
    search: Literal["auto", "exact", "hnsw"] = Field("auto", description="exact numpy, usearch HNSW, or auto by size.")
    batch_size: int = Field(64, ge=1, description="Encoding batch size.")
    filter: dict[str, Any] | None = Field(None, description="Metadata filter {field: value or [values]}.")


@register
class Dense(Operator):
    """Dense retriever over normalised embeddings (cosine = inner product).

    Examples
    --------
    >>> from ragkit.retrievers import Dense
    >>> Dense(k=10)
    Dense(k=10)
    """

    name = "dense"
    kind = "retriever"
    Params = DenseParams
    example = {"k": 5}

    @property
    def encoder(self) -> Encoder:
        return get_encoder(self.params.model, batch_size=self.params.batch_size)

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        self.vectors_ = self.encoder.encode(corpus.full_texts)

    def query_vectors(self, state: State) -> np.ndarray:
        return query_vectors(state, self.encoder)

    def scores(self, q: np.ndarray) -> np.ndarray:
        """Exact cosine scores, shape ``(n_q, n_docs)``."""
        return q @ np.asarray(self.vectors_).T

    def _call(self, state: State) -> State:
        q = self.query_vectors(state)
        s = self.scores(q)
        mask = self.filter_mask(state)
        if mask is not None:
            s[:, ~mask] = -np.inf
        rows, sc = topk_rows(s, self.k_for(state))
        out = state.copy()
        out.rankings = rankings_from_matrix(rows, sc)
        return out

    def _save(self, folder: Path) -> None:
        save_arrays(folder, vectors=self.vectors_)

    def _load(self, folder: Path, mmap: bool = False) -> None:
        self.vectors_ = load_array(folder, "vectors", mmap=mmap)
