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


@register
class TopK(Operator):
    """Keep the ``k`` best documents of each ranking (a per-call ``k`` overrides it).

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
        own = self.opt(state, "k")  # this operator's own option wins over the call's k
        k = int(own if own is not None else (state.options.get("k") or self.params.k))
        out = state.copy()
        out.rankings = [r.head(k) for r in (state.rankings or [])] if state.rankings is not None else None
        return out
