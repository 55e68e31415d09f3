"""A retrieval run: the rankings of a batch of queries, addressed by string ids.

A :class:`Run` is what ``pipeline.search(queries)`` returns and what
:func:`ragkit.evaluate` scores.  It converts to the ``{qid: {doc_id: score}}`` dict that
pytrec_eval and BEIR use, and reads/writes TREC run files
(``qid Q0 docid rank score tag``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ragkit._files import atomic_file
from ragkit.errors import DataError
from ragkit.types import Ranking, TraceEvent

__all__ = ["Run"]


@dataclass
class Run:
    """Rankings of a batch of queries.

    Attributes
    ----------
    query_ids : list of str, length n_q
    doc_ids : list of ndarray of str
        Per query, document ids best first.
    scores : list of ndarray of float32
        Per query, the aligned scores.
    rankings : list of Ranking or None
        The row-number rankings the run was made from (absent for a run read from a file).
    values : dict of str -> list
        Per-query values the pipeline produced (answers, route labels, loop iterations).
    trace : list of TraceEvent or None
    seconds : float or None
        Wall time of the search.
    """

    query_ids: list[str]
    doc_ids: list[np.ndarray]
    scores: list[np.ndarray]
    rankings: list[Ranking] | None = None
    values: dict[str, list[Any]] = field(default_factory=dict)
    trace: list[TraceEvent] | None = None
    seconds: float | None = None

    @classmethod
    def from_rankings(cls, query_ids: list[str], rankings: list[Ranking], corpus_ids: np.ndarray, **kw: Any) -> "Run":
        return cls(
            list(query_ids), [corpus_ids[r.rows] for r in rankings], [r.scores for r in rankings],
            rankings=rankings, **kw,
        )

    @classmethod
    def from_dict(cls, run: Mapping[str, Mapping[str, float]]) -> "Run":
        """From ``{qid: {doc_id: score}}`` (sorted by score, ties by doc id)."""
        qids, docs, scores = [], [], []
        for q, d in run.items():
            items = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))
            qids.append(str(q))
            docs.append(np.array([i for i, _ in items], dtype=object))
            scores.append(np.array([s for _, s in items], dtype=np.float32))
        return cls(qids, docs, scores)

    def __len__(self) -> int:
        return len(self.query_ids)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        return iter(zip(self.query_ids, self.doc_ids, self.scores))

    def __repr__(self) -> str:
        depth = max((len(d) for d in self.doc_ids), default=0)
        return f"Run({len(self)} queries, up to {depth} docs each)"

    def to_dict(self, k: int | None = None) -> dict[str, dict[str, float]]:
        """``{qid: {doc_id: score}}``, optionally cut to the top ``k``."""
        out: dict[str, dict[str, float]] = {}
        for q, d, s in self:
            d, s = (d[:k], s[:k]) if k is not None else (d, s)
            out[q] = dict(zip(d.tolist(), s.astype(float).tolist()))
        return out

    def head(self, k: int) -> "Run":
        """The run cut to the top ``k`` documents per query."""
        return Run(
            self.query_ids, [d[:k] for d in self.doc_ids], [s[:k] for s in self.scores],
            rankings=None if self.rankings is None else [r.head(k) for r in self.rankings],
            values=self.values, trace=self.trace, seconds=self.seconds,
        )

    def write_trec(self, path: str | Path, tag: str = "ragkit") -> None:
        """Write a TREC run file ``qid Q0 docid rank score tag`` (rank from 1)."""
        path = Path(path)
        with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for q, d, s in self:
                f.writelines(f"{q} Q0 {doc} {r} {score:.6f} {tag}\n" for r, (doc, score) in enumerate(zip(d, s), 1))

    @classmethod
    def read_trec(cls, path: str | Path) -> "Run":
        """Read a TREC run file; malformed lines raise :class:`DataError` with the line number."""
        run: dict[str, dict[str, float]] = {}
        if not Path(path).is_file():
            raise DataError(f"{path}: TREC run file not found")
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 6:
                    raise DataError(f"{path}:{n}: expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}")
                try:
                    score = float(parts[4])
                except ValueError:
                    raise DataError(f"{path}:{n}: score {parts[4]!r} is not a number") from None
                run.setdefault(parts[0], {})[parts[2]] = score
        return cls.from_dict(run)
