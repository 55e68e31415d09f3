"""MaxSim reranker: rescore any ranking with exact multi-vector (Chamfer) similarity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from ragkit._flat import pad_rows
from ragkit._topk import desc_order
from ragkit.operator import Operator
from ragkit.options import PARAM, resolve_k
from ragkit.registry import register
from ragkit.retrievers.fde import chamfer_pairs
from ragkit.retrievers.muvera import TokenOperatorMixin, TokenParams
from ragkit.types import Corpus, Ranking, State, TrainSet

__all__ = ["MaxSim", "MaxSimParams"]


class MaxSimParams(TokenParams):
    k: int | None = Field(default=None,
                          ge=1, description="Keep this many documents after rescoring (None = all; a call's "
                                            "k raises it, as for every reranker before the end).")


@register
class MaxSim(TokenOperatorMixin, Operator):
    """Rerank each incoming ranking by exact Chamfer / MaxSim over token vectors.

    ``score(Q, P) = sum_{q in Q} max_{p in P} <q, p>`` with L2-normalised per-token vectors
    of a sentence-transformers model (:mod:`ragkit.encoders.tokens`).  All query-candidate
    pairs of the batch are scored with one chunked batched ``matmul``; the documents are
    re-sorted (ties: lower corpus row first) and their ``fields`` follow them.  Optional
    query-side ball carving (``ball_carve_tau``) shrinks the query token set first.  A blank
    document of an input ranking (empty, whitespace or invisible characters only, title and text)
    has no tokens, so no similarity to the query (Chamfer ``-inf``): it is left out of the reranked
    ranking, as ``muvera`` and ``maxsim_exact`` never return one (a score of 0.0 put it above every
    candidate of negative score; ``-inf`` or a float32 floor would break the finite-score check
    every operator's output passes, and score fusion's normalisation).  A query without tokens keeps
    its ranking and scores as given.

    Khattab & Zaharia, "ColBERT", SIGIR 2020; Dhulipala et al., "MUVERA", arXiv 2405.19504
    (ball carving, Chamfer notation).

    Examples
    --------
    >>> from ragkit.filters import MaxSim
    >>> MaxSim(k=10)
    MaxSim(k=10)
    """

    name = "maxsim"
    kind = "reranker"
    reads_rankings = True  # it reorders the rankings of the steps before it: refused before the first retriever
    Params = MaxSimParams
    params: MaxSimParams
    example = {"k": 10}
    run_options = {"k": PARAM}

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        self._fit_tokens(corpus, train)

    def _call(self, state: State) -> State:
        out = state.copy()
        if len(state) == 0:  # (no rankings: Operator.__call__ refuses them, as for every step that reads them)
            return out
        assert state.rankings is not None
        rows = pad_rows(state.rankings, max(map(len, state.rankings), default=0), -1)[0]  # (-1 past a shorter one)
        if rows.shape[1] == 0:
            return out
        qd, qo, qw = self.rerank_query(self.query_tokens(state))
        sc = chamfer_pairs(qd, qo, self.tokens_.data, self.tokens_.offsets, rows, q_weights=qw,
                           where=self.name)
        order = desc_order(sc, rows)
        tokenless = np.diff(qo) == 0  # (special_tokens: drop, an empty text) every score 0: keep the order
        order[tokenless] = np.arange(rows.shape[1])
        # its own k option exactly, else its k raised to the call's; None (keep all) for a k of None without one
        k = resolve_k(self.opt(state, "k"), self.params.k, state.options.get("k"), self.name)
        rankings = []
        for r, o, s, keep in zip(state.rankings, order, sc, tokenless):  # Ranking objects (work is done above)
            o = o[:len(r)]
            if not keep:  # a blank candidate (no tokens: -inf, sorted last) is left out; a NaN is not (it fails
                o = o[~np.isneginf(s[o])]  # the finite-score check of the output, where dropping it hid it)
            o = o[:k] if k is not None else o
            new = r.take(o)
            rankings.append(Ranking(new.rows, new.scores if keep else s[o], new.fields))
        out.rankings = rankings
        return out

    def _save(self, folder: Path) -> None:
        self._save_tokens(folder)

    def _load(self, folder: Path, mmap: bool = False) -> None:
        self._load_tokens(folder, mmap)
