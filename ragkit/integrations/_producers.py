"""Which retrievers of a pipeline produced each query's documents, for the ``operators`` of their metadata."""

from __future__ import annotations

from typing import Any, Mapping

from ragkit.operator import Operator


def _retriever_names(op: Operator) -> list[str]:
    """The retrievers of the tree ``op`` (:func:`_retriever_leaves`), or ``op``'s own name for a tree without one."""
    return _retriever_leaves(op) or [op.name or type(op).__name__.lower()]


class _Producers:
    """Which retrievers produced each query's documents, for the ``operators`` of their metadata.

    Built once per pipeline (:func:`_producers_of`): ``fixed`` (every query: the tree's retrievers, a tree
    without ``route``), or a ``route`` that is a step of the top-level pipeline (the tree's only one), whose
    label per query the run keeps in ``values["route"]``: the taken branch's retrievers with those outside
    the route; ``None`` for every query in any other tree with a ``route`` (not known)."""

    def __init__(self, fixed: list[str] | None, route: Any = None, outside: list[str] | None = None) -> None:
        self.fixed = fixed
        self.route = route
        self.outside = outside or []

    def of(self, values: Mapping[str, list[Any]], n: int) -> list[list[str] | None]:
        """The retrievers of each of ``n`` queries (``None``: not known), from the run's ``values``."""
        if self.route is None:
            return [self.fixed] * n
        labels = values.get("route")
        if labels is None or len(labels) != n:
            return [None] * n
        by_label: dict[str, list[str] | None] = {}
        for label in set(map(str, labels)):  # a few labels; their branches' names once each
            branch = self._branch(label)
            by_label[label] = None if branch is None else list(dict.fromkeys(self.outside + _retriever_leaves(branch)))
        return [by_label[str(x)] for x in labels]

    def _branch(self, label: str) -> Operator | None:
        """The branch a query labelled ``label`` takes (as ``Route`` chooses it), or None."""
        route = self.route
        if label in route.branches:
            return route.branches[label]
        if route.default_label is not None:
            return route.branches[route.default_label]
        return route.default


def _retriever_leaves(op: Operator) -> list[str]:
    """The names of the retrievers of the tree ``op``, each once, in the order of its leaves."""
    from ragkit.pipelines._compose import iter_leaves

    return list(dict.fromkeys(leaf.name for leaf in iter_leaves(op) if leaf.kind == "retriever"))


def _producers_of(op: Operator) -> _Producers:
    """:class:`_Producers` of the tree ``op`` (walked once, when the retriever is built)."""
    from ragkit.pipelines._compose import Pipeline, Route

    routes, seen, stack = [], set(), [op]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Route):
            routes.append(node)
        stack.extend(node.children())
    if not routes:
        return _Producers(_retriever_names(op))
    steps = op.steps if isinstance(op, Pipeline) else [op]
    top = [s for s in steps if isinstance(s, Route)]
    if len(routes) == 1 and len(top) == 1 and top[0] is routes[0]:
        outside = [name for s in steps if s is not routes[0] for name in _retriever_leaves(s)]
        return _Producers(None, routes[0], outside)
    return _Producers(None)
