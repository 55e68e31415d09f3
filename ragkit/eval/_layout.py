"""What a BEIR dataset folder holds: a dataset's name, its files, the datasets of a folder of several, and
what a folder lacks of a whole one."""

from __future__ import annotations

import re
from pathlib import Path

#: A dataset's name as BEIR spells it (``scifact``, ``msmarco-v2``, ``dbpedia-entity``): a file name, never a path
_NAME = r"[A-Za-z0-9][\w.-]*"
#: ``<archive>/<sub>``: one dataset of an archive that holds several, e.g. ``cqadupstack/android``
_SUB_NAME = re.compile(rf"({_NAME})/({_NAME})")


def _folders(root: Path) -> list[str]:
    """Names of the folders directly in ``root``, sorted; hidden ones and macOS's ``__MACOSX`` left out."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def _subsets(folder: Path) -> list[str]:
    """The datasets of a folder that holds several (its folders with a ``corpus.jsonl``), sorted;
    ``[]`` for a single dataset (a ``corpus.jsonl`` of its own) or anything else."""
    if not folder.is_dir() or (folder / "corpus.jsonl").is_file():
        return []
    return [s for s in _folders(folder) if (folder / s / "corpus.jsonl").is_file()
            and not any((folder / s / f).is_file() for f in ("manifest.json", "params.json"))]  # (a saved pipeline)


def _is_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds a BEIR dataset, or several."""
    return (folder / "corpus.jsonl").is_file() or bool(_subsets(folder))


def _lacks(folder: Path) -> list[str]:
    """What ``folder`` lacks of a whole BEIR dataset, or of a whole archive of several (every folder of it a
    dataset, when one of its folders is one): ``["queries.jsonl"]``, ``["android/qrels/<split>.tsv"]``; ``[]``
    when it is complete.  A cached download missing some is an incomplete earlier download (a copy cut short):
    downloaded again, never trusted; an unpacked archive missing some is refused (:func:`_check_layout`)."""
    if not _subsets(folder):
        return _layout_missing(folder)
    return [f"{s}/{f}" for s in _folders(folder) for f in _layout_missing(folder / s)]


def _layout_missing(root: Path) -> list[str]:
    """What ``root`` lacks of the BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""
    missing = [f for f in ("corpus.jsonl", "queries.jsonl") if not (root / f).is_file()]
    if not list((root / "qrels").glob("*.tsv")):
        missing.append("qrels/<split>.tsv")
    return missing
