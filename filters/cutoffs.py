"""Cut-offs: keep the top ``k`` of each ranking."""

from __future__ import annotations

from pydantic import Field

from ragkit.operator import Operator
from ragkit.options import PARAM
from ragkit.params import Params
from ragkit.registry import register
from ragkit.types import State

__all__ = ["TopK"]


class TopKParams(Params):
    k: int = Field(10, ge=1, description="Results kept per query.")


def cut_k(op: Operator, state: State) -> int:
    """How many documents a cut-off or reranker keeps: its own ``k`` option exactly, else its ``k``
    parameter raised to the call's ``k`` (the final number of results: no step before the end
    keeps fewer, as retrievers fetch at least ``k``)."""
    own = op.opt(state, "k")
    if own is not None:
        return int(own)
    call_k = state.options.get("k")
    return max(int(op.params.k), int(call_k)) if call_k is not None else int(op.params.k)


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
    Params = TopKParams
    stateless = True
    example = {"k": 5}
    run_options = {"k": PARAM}

    def _call(self, state: State) -> State:
        k = cut_k(self, state)
        out = state.copy()
        out.rankings = [r.head(k) for r in (state.rankings or [])] if state.rankings is not None else None
        return out
