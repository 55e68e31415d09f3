"""What routers and loop judges with a learnable threshold share (``threshold``, ``learn``, ``cost``).

The learning itself happens in the composite that owns them (:class:`~ragkit.pipelines.Route`
or :class:`~ragkit.pipelines.Loop`), which alone can run the branches or the body on the
training queries; it hands the per-query gains to the operator's own ``learn_*`` method,
which sets ``threshold_`` and ``learned_``.  This mixin gives the rest: the refusal to learn
without judged queries, the threshold in use, and saving / loading what was learned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from ragkit.errors import ParamError

__all__ = ["LearnedThreshold", "threshold_or_learn_problem"]


def threshold_or_learn_problem(threshold: float | None, learn: bool, cost: float) -> str | None:
    """Why ``threshold`` / ``learn`` / ``cost`` cannot go together, else ``None``: exactly one of a
    threshold and ``learn=true`` (a given threshold would be replaced by the learned one), and a
    ``cost`` only when learning (it weighs the learning's choice and nothing else)."""
    if threshold is None and not learn:
        return "threshold is required unless learn=true (then it is learned from the training split)"
    if threshold is not None and learn:
        return (f"threshold={threshold} and learn=true: a learned threshold replaces the given one; give a "
                "threshold, or learn=true without one")
    if cost and not learn:
        return f"cost={cost} applies only when learning (learn=true); without it, leave cost out"
    return None


class _ThresholdParams(Protocol):
    @property
    def threshold(self) -> float | None: ...

    @property
    def learn(self) -> bool: ...


class LearnedThreshold:
    """Mixin for operators whose params have ``threshold: float | None`` and ``learn: bool``."""

    params: _ThresholdParams
    name: ClassVar[str]
    #: set by a learning fit (the owner's ``learn_*`` method) or loaded
    threshold_: float
    learned_: dict[str, Any]

    @property
    def wants_upstream(self) -> bool:
        """A learning operator needs the training queries' state where it runs."""
        return bool(self.params.learn)

    @property
    def needs_train(self) -> bool:
        return bool(self.params.learn)

    def train_refusal(self) -> Exception | None:
        """``learn: true`` without judged queries is refused (see :meth:`Operator.train_refusal`)."""
        if not self.needs_train:
            return None
        return ParamError(f"{self.name}.learn: the threshold is learned from judged queries; fit the pipeline "
                          f"with fit(corpus, train=...) (command line: --train-split) or give a threshold")

    @property
    def threshold(self) -> float:
        """The threshold in use: the learned one after a learning fit, else the parameter."""
        learned = getattr(self, "threshold_", None)
        if learned is not None:
            return float(learned)
        if self.params.threshold is None:  # learn=true, nothing learned yet
            raise self._not_learned()
        return float(self.params.threshold)

    def _check_learned(self) -> None:
        if self.params.learn and getattr(self, "threshold_", None) is None:
            raise self._not_learned()

    def _not_learned(self) -> ParamError:
        return ParamError(f"{self.name}: learn=true but no threshold was learned; fit the pipeline with "
                          f"fit(corpus, train=...) first")

    def _save(self, folder: Path) -> None:
        if getattr(self, "learned_", None) is not None:
            from ragkit._saves import write_json

            write_json(folder / "learned.json", self.learned_)

    def _load(self, folder: Path, mmap: bool = False) -> None:
        if (folder / "learned.json").is_file():
            from ragkit._saves import read_json

            self.learned_ = read_json(folder / "learned.json")
            self.threshold_ = float(self.learned_["threshold"])
