"""The prompt of a local generator: the default system message, its per-segment token ids
(:class:`PromptSegments`), the check of a question and its chunks, and the warning about chunks cut short.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ragkit._text import is_blank
from ragkit.errors import ParamError

#: (the logger of ragkit.generators.local, where these lines were: what its filters and handlers read)
_log = logging.getLogger("ragkit.generators.local")


DEFAULT_SYSTEM = (
    "You are a helpful assistant. Answer the question using the documents below. "
    "Be concise."
)


@dataclass
class PromptSegments:
    """Token ids of one prompt, per segment."""

    system: list[int]
    chunks: list[list[int]]
    question: list[int]

    def ids(self) -> np.ndarray:
        return np.asarray(self.system + [t for c in self.chunks for t in c] + self.question, dtype=np.int64)

    def starts(self) -> list[int]:
        """Start offset of each chunk."""
        out, p = [], len(self.system)
        for c in self.chunks:
            out.append(p)
            p += len(c)
        return out

    @property
    def question_start(self) -> int:
        return len(self.system) + sum(len(c) for c in self.chunks)

    def __len__(self) -> int:
        return self.question_start + len(self.question)


def _check_prompt(question: object, chunks: object, where: str = "LocalGenerator") -> None:
    """Raise :class:`ParamError` (its message starting with ``where``) unless ``question`` is a str holding text
    (a blank one would be answered from the chunks alone) and ``chunks`` a sequence of str (a single str would be
    taken character by character)."""
    if not isinstance(question, str):
        raise ParamError(f"{where}: question={question!r}; expected a str", "question")
    if is_blank(question):  # (empty, or whitespace and invisible characters only: as the encoders read it)
        raise ParamError(f"{where}: question={question!r} is blank; expected a question, got an empty one",
                         "question")
    if isinstance(chunks, (str, bytes)):
        raise ParamError(f"{where}: chunks is one {type(chunks).__name__} ({chunks[:40]!r}...); expected a "
                         "list of str, one per chunk: wrap it in a list ([text])", "chunks")
    try:
        items = list(chunks)  # type: ignore[call-overload]
    except TypeError:
        raise ParamError(f"{where}: chunks={chunks!r}; expected a list of str, one per chunk",
                         "chunks") from None
    bad = next((i for i, c in enumerate(items) if not isinstance(c, str)), None)
    if bad is not None:
        raise ParamError(f"{where}: chunks[{bad}] is {items[bad]!r} ({type(items[bad]).__name__}); expected "
                         "a str per chunk", "chunks")


def _source_chunks(question: str, chunks: Sequence[str], who: str, log: logging.Logger | None = None,
                   skipped: str = "") -> list[str]:
    """The chunks of ``chunks`` that hold text (blank ones dropped: they hold no source; blank as
    :func:`ragkit._text.is_blank` says, the rule for questions too), after
    :func:`_check_prompt` (``who``: whose call, starting its messages).  With none left, the caller answers
    ``''`` without running the model; with ``log`` that is logged there at INFO level (``skipped``: what is
    not done)."""
    _check_prompt(question, chunks, who)
    kept = [c for c in chunks if not is_blank(c)]
    if not kept and log is not None:
        log.info(f"{who}: no chunk holding text to answer from: the answer is '' ({skipped})")
    return kept


def warn_cut(owner: object, who: str, cut: list[tuple[int, int]], n_chunks: int, limit_said: str, limit: int,
             unit: str, advice: str) -> None:
    """Log that ``cut`` chunks (position, length in ``unit``) of ``n_chunks`` were cut to ``limit`` units, less
    than half of each: a warning the first time for ``owner`` (a generator), then at INFO level (a batch of
    questions over long contexts said it once per question)."""
    shown = ", ".join(f"chunk {i} ({n:,} {unit})" for i, n in cut[:5]) + (
        f" and {len(cut) - 5} more" if len(cut) > 5 else "")
    lost = sum(n for _, n in cut) - len(cut) * limit
    again = getattr(owner, "_cut_warned", False)
    _log.log(logging.INFO if again else logging.WARNING,
             f"{who}: {len(cut)} of {n_chunks} chunk{'' if n_chunks == 1 else 's'} cut to {limit_said}, less than "
             f"half of each: {shown}; the model does not see the rest ({lost:,} {unit}). {advice}, or pass long "
             "documents as separate chunks (one string per document or passage), not joined into one"
             + ("" if again else " (said once as a warning; later cuts by this generator are logged at INFO level)"))
    owner.__dict__["_cut_warned"] = True
