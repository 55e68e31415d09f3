"""Cut-offs: keep the top ``k`` of each ranking."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import Field

from ragkit.operator import Operator
from ragkit.options import PARAM, resolve_k
from ragkit.params import Params
from ragkit.registry import register
from ragkit.types import State

__all__ = ["TopK"]


class TopKParams(Params):
    k: int = Field(default=10, ge=1, description="Results kept per query.")


class _KParams(Protocol):
    @property
    def k(self) -> int: ...


class _Cutter(Protocol):
    """An operator whose parameters have an int ``k`` (top_k, mmr; maxsim's ``k`` may be None: it reads
    :func:`~ragkit.options.resolve_k` itself)."""

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> _KParams: ...

    def opt(self, state: State, key: str, default: Any = None) -> Any: ...


def cut_k(op: _Cutter, state: State) -> int:
    """How many documents a cut-off or reranker keeps: its own ``k`` option exactly, else its ``k``
    parameter raised to the call's ``k`` (the final number of results: no step before the end
    keeps fewer, as retrievers fetch at least ``k``): :func:`~ragkit.options.resolve_k`, the rule of
    :meth:`Operator.k_for <ragkit.operator.Operator.k_for>` too."""
    k = resolve_k(op.opt(state, "k"), op.params.k, state.options.get("k"), op.name)  # (each checked)
    assert k is not None  # (None only for a k parameter of None, which a _Cutter's int k is not)
    return k


@register
class TopK(Operator):
    """Keep the ``k`` best documents of each ranking.

    A per-call ``k`` (``search(queries, k=...)``, the final number of results) raises ``k``, so that
    no step before the end keeps fewer than the call asks for; this operator's own option
    (``top_k={"k": 3}``) sets it exactly.

    Examples
    --------
    >>> from ragkit.types import Ranking, State
    >>> TopK(k=1)(State(["q"], rankings=[Ranking([3, 1], [.9, .1])])).rankings[0].rows.tolist()
    [3]
    """

    name = "top_k"
    kind = "filter"
    reads_rankings = True  # it cuts the rankings of the steps before it: refused before the first retriever
    Params = TopKParams
    params: TopKParams
    stateless = True
    example = {"k": 5}
    run_options = {"k": PARAM}

    def _call(self, state: State) -> State:
        k = cut_k(self, state)
        out = state.copy()
        out.rankings = [r.head(k) for r in (state.rankings or [])] if state.rankings is not None else None
        return out
