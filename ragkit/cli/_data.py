"""``--data`` and ``--split`` / ``--train-split``: dataset lists and folders checked, test-split learning
refused, and the evaluated split read and checked before any fit (:class:`_Split`)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ragkit._files import shell_quote
from ragkit.cli._outputs import _check_not_an_input
from ragkit.errors import RagkitError, some_ids


def _is_list(data: str) -> bool:
    """Whether ``--data`` names several datasets (``a,b``): a comma in it, and no path of that name (a folder's
    name may hold a comma)."""
    return "," in data and not Path(data).exists()


def _dataset_list(data: str) -> Optional[dict[str, str]]:
    """``--data a,b,...`` as ``{label: item}`` (the label: the dataset's folder name), or ``None`` for
    one dataset or archive (:func:`_is_list`: a path that exists is one, commas and all).  Blank, repeated or
    same-named items are refused; the datasets themselves are found by :func:`_eval_subsets`."""
    if not _is_list(data):
        return None
    _refuse_comma_folder(data)
    items = [x.strip() for x in data.split(",")]
    if not all(items):
        raise RagkitError(f"--data {data}: an empty item in the comma-separated list; expected dataset names or "
                          "folders such as scifact,nfcorpus")
    out: dict[str, str] = {}
    for item in items:
        label = Path(item.rstrip("/\\")).name or item
        if label in out:
            raise RagkitError(f"--data {data}: {item!r} and {out[label]!r} are both called {label!r}; each dataset "
                              "of a list is reported (and compared) by its folder's name: list each once")
        out[label] = item
    return out


def _refuse_comma_folder(data: str) -> None:
    """Refuse a ``--data`` list (``tinyds,ti,ny``) of which two or more items joined by their commas name a path
    that exists (the folder ``ti,ny``): split at every comma it would be read as ``ti`` and ``ny``, names to
    download, where a folder was meant."""
    parts = data.split(",")
    for width in range(len(parts) - 1, 1, -1):  # (the whole value names no path: _is_list)
        for i in range(len(parts) - width + 1):
            joined = ",".join(parts[i:i + width])
            found = next((Path(x) for x in dict.fromkeys((joined, joined.strip())) if x and Path(x).exists()), None)
            if found is not None:
                noun = "folder" if found.is_dir() else "file"
                split = " and ".join(repr(x.strip()) for x in parts[i:i + width])
                raise RagkitError(f"--data {data}: {str(found)!r} is a {noun} whose name holds a comma, and a list "
                                  f"cannot hold a {noun} name with a comma: it would be split into {split}; evaluate "
                                  f"it alone (--data {shell_quote(str(found))}), or give it a name without a comma (a "
                                  "link, such as ln -s) to list it")


def _check_listed(data: str, sources: dict[str, str], pipeline: str, output: Optional[Path]) -> None:
    """Each item of ``--data a,b,...`` must be one dataset (found, or downloaded, here) that ``--output``
    does not overwrite: an archive of several is refused (BEIR averages it first: evaluate it alone)."""
    from ragkit.eval.beir import beir_subsets

    for item in sources.values():
        _check_data_folder(item)
        subs = beir_subsets(item)
        if subs:
            raise RagkitError(f"--data {data}: {item} holds {len(subs)} datasets ({', '.join(subs)}); BEIR averages "
                              f"them first: evaluate it alone (--data {item}), or list one of them ({item}/{subs[0]})")
        _check_not_an_input(output, "--output", pipeline, item)


def _check_data_folder(data: str) -> None:
    """Refuse a ``--data`` that names a file (``corpus.jsonl``, a qrels file): a BEIR dataset is a
    folder, and the file's own folder is named when it is one."""
    from ragkit.eval.beir import dataset_folder_of

    path = Path(data)
    if not path.is_file() or path.suffix.lower() == ".zip":  # a zip as BEIR distributes them: unpacked
        return
    folder = dataset_folder_of(path)
    hint = f" (this file's dataset: --data {folder})" if (folder / "corpus.jsonl").is_file() else ""
    raise RagkitError(f"--data {data}: a file; expected a BEIR folder (corpus.jsonl, queries.jsonl and "
                      f"qrels/<split>.tsv) or a dataset name such as scifact{hint}")


def _check_split(option: str, split: str, data: Optional[str]) -> None:
    """Refuse, before any work, a ``--split`` / ``--train-split`` value that is no split name but a path
    (``./test``, ``../qrels/test``: :func:`~ragkit.eval.beir.check_split_name`, which every dataset read
    applies again); the splits of ``--data`` are named when it is a local folder."""
    from ragkit.eval.beir import check_split_name

    folder = Path(os.path.expanduser(data)) if data is not None else None
    check_split_name(split, f"{option} {split}", folder if folder is not None and folder.is_dir() else None)


def _refuse_test_split(ds: Any, split: str, option: str) -> None:
    """Refuse learning from ``split`` of the dataset ``ds`` when its judgements are the test split's
    (``qrels/test.tsv``, whatever the split is called: a link to it under another name too).  ``ds`` ``None``:
    the name alone is checked (``test``), before the dataset is read or downloaded; the commands check again
    with the dataset."""
    from ragkit.eval.beir import is_test_qrels

    path = ds.path / "qrels" / f"{split}.tsv" if ds is not None else None
    if split == "test" or (path is not None and is_test_qrels(ds.path, path)):
        how = "" if split == "test" else f" (its judgements, {path}, are qrels/test.tsv)"
        raise RagkitError(f"{option} {split}{how}: learning from the test split is refused (its scores are the ones "
                          "reported); use the train split")


def _check_same_corpus(fitted: Any, corpus: Any, pipeline: str, data: str) -> None:
    """A saved pipeline answers from the corpus it was fitted on: refuse to score it against
    another dataset's judgements (its rankings would name documents they do not describe)."""
    from ragkit._fingerprints import corpus_fingerprint, corpus_texts_digest

    if corpus_fingerprint(fitted) != corpus_fingerprint(corpus):
        how = f"{len(corpus):,} documents with other ids"
    elif corpus_texts_digest(fitted) != corpus_texts_digest(corpus):  # (its index scores the texts it was fitted on)
        how = f"the same {len(corpus):,} document ids with other texts or titles"
    else:
        return
    raise RagkitError(f"--pipeline {pipeline}: fitted on a corpus of {len(fitted):,} documents, but --data {data} "
                      f"has {how}; pass the pipeline's YAML to fit it on this dataset, or the folder saved for this "
                      "dataset")


@dataclass
class _Split:
    """One dataset's evaluated split, read and checked before any fit: the dataset (``None`` while
    released: :meth:`dataset` reads it again), its ``queries`` (the first ``--limit``), their
    ``qrels``, the ``--train-split`` set or ``None``, the load time in s, the ``--data`` it came from, the
    fingerprint of the judgements of the queries scored (after ``--limit``:
    :func:`~ragkit.eval.compare.scored_qrels_fingerprint`), and after ``--limit`` the ids of the documents the
    whole split judges (hole@k's judged documents, as in a run of every query; ``None``: those of ``qrels``)."""

    ds: Any
    queries: Any
    qrels: dict[str, dict[str, int]]
    train: Any
    t_load: float
    source: str
    fingerprint: Optional[str] = None
    annotated: Optional[frozenset[str]] = None

    def released(self) -> "_Split":
        """Drop the dataset's corpus (``ragkit eval`` on several datasets checks them all first, then
        holds one corpus at a time: BEIR's larger ones hold millions of documents each)."""
        self.ds = None
        return self

    def dataset(self) -> Any:
        """The dataset, read again (and timed as loading) when it was released."""
        if self.ds is None:
            from ragkit import load_beir

            t0 = time.perf_counter()
            self.ds = load_beir(self.source)
            self.t_load += time.perf_counter() - t0
        return self.ds


def _read_split(data: str, split: str, train_split: Optional[str], limit: Optional[int], run_file: Optional[Path],
                fitted: Any = None, pipeline: str = "", relevance_level: int = 1) -> _Split:
    """Load ``data`` and read what ``ragkit eval`` needs of it; a saved pipeline (``fitted``) must
    have been fitted on the dataset's corpus and not have learned from the evaluated queries, and ids
    a TREC ``run_file`` cannot hold are refused (naming their line of queries.jsonl or corpus.jsonl), and so are
    qrels none of whose relevant documents the corpus holds (:meth:`~ragkit.eval.beir.BeirDataset._qrels`:
    ids of another id space, every score 0), all before any fit."""
    from ragkit import load_beir

    t0 = time.perf_counter()
    ds = load_beir(data)
    if fitted is not None:
        _check_same_corpus(fitted.corpus_, ds.corpus, pipeline, data)
    qrels = ds._qrels(split, refuse=True)  # (refused when the corpus holds none of the relevant documents: all 0)
    queries = ds.queries(split)
    if train_split:
        _refuse_test_split(ds, train_split, "--train-split")
    train = ds.train_set(train_split) if train_split else None
    t_load = time.perf_counter() - t0
    from ragkit.eval.compare import scored_qrels_fingerprint
    from ragkit.eval.metrics import check_relevance_level

    annotated = None
    if limit is not None:
        queries = queries[:limit]
        # hole@k counts what no judgement of the split names, as in a run of the whole split
        annotated = frozenset(d for rel in qrels.values() for d in rel)
        qrels = {q: qrels[q] for q in queries.ids}
    # the judgements of the queries scored (every judged one of qrels: evaluate's per-query keys), as
    # load_result fingerprints a run file scored against the judgements given (the whole split, or these)
    fingerprint = scored_qrels_fingerprint(qrels, qrels)

    check_relevance_level(qrels, relevance_level, f"--relevance-level (--data {data})")  # not after the search
    taught = fitted.learned_from(queries) if fitted is not None else []
    if taught:  # (ragkit train --split train --out M, then ragkit eval --pipeline M --split train)
        raise RagkitError(f"--pipeline {pipeline}: learned from {len(taught)} of the evaluated --split {split} "
                          f"quer{'y' if len(taught) == 1 else 'ies'} ({some_ids(taught)}) when it was fitted, whose "
                          f"scores would not be held out; evaluate a split it did not learn from (a split other "
                          f"than --split {split})")
    if train is not None:  # learning from an evaluated query scores it on what it was taught
        taught = set(train.queries.ids)
        shared = [q for q in queries.ids if q in taught]
        if shared:
            raise RagkitError(f"--train-split {train_split}: holds {len(shared)} of the evaluated --split {split} "
                              f"quer{'y' if len(shared) == 1 else 'ies'} ({some_ids(shared)}), whose scores would not "
                              f"be held out; remove them from qrels/{train_split}.tsv or qrels/{split}.tsv")
        from ragkit.types import warn_same_text  # (not refused: SciFact's test split has 2 texts of train queries)

        warn_same_text(train.same_text(queries), len(queries), f"--split {split}",
                       f"a --train-split {train_split} query")
    if run_file is not None:  # ids a TREC file cannot hold: refused now, naming their line, not after the fit
        from ragkit.eval.beir import check_run_ids

        for what, ids, name in (("query id", queries.ids, "queries.jsonl"),
                                ("document id", ds.corpus.ids.tolist(), "corpus.jsonl")):
            check_run_ids(f"--run {run_file}", ids, what, ds.path / name, lookup=ds.path / name)
    return _Split(ds, queries, qrels, train, t_load, data, fingerprint, annotated)
