"""BEIR datasets: read the standard folder layout, or download an official archive by name.

Layout (Thakur et al., "BEIR", NeurIPS 2021 Datasets and Benchmarks)::

    <name>/corpus.jsonl        {"_id", "title", "text", "metadata"?} per line
    <name>/queries.jsonl       {"_id", "text"} per line
    <name>/qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score, with a header line

``load_beir("scifact")`` looks for a folder of that name in ``$RAGKIT_BEIR_DIR``, the
ragkit cache and ``../shared/data/beir``; otherwise it downloads
``{base_url}/{name}.zip`` (``$RAGKIT_BEIR_URL`` overrides the official address) into the
cache and unzips it.  Every error names the file and line.

Only the dataset's files (``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv``, per dataset folder) are unpacked
from an archive, downloaded or local; one whose files would unpack to more than 64 GiB
(``$RAGKIT_BEIR_MAX_UNZIPPED`` changes it: ``200G``), or a member to over 100 times its compressed size (a zip
bomb), is refused before anything is written.  A split is a name (``qrels/<split>.tsv``), never a path.

Some archives hold several datasets, one folder each (CQADupStack: ``cqadupstack/<forum>/``
for 12 forums, reported as the mean of each metric over them).  ``beir_subsets("cqadupstack")``
lists them and ``load_beir("cqadupstack/android")`` loads one, downloading the whole archive
once when it is not found locally.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ragkit._checks import _kind
from ragkit._files import (
    file_above,
    first_time,
    remove_stale_tempdirs,
    shared_tempdir,
    user_path,
    utf8_lines,
)
from ragkit.errors import DataError, InputTypeError, ParamError, some_ids
from ragkit.eval._download import (
    _DOWNLOAD_PREFIX,
    BEIR_URL as BEIR_URL,
    MAX_UNZIPPED as MAX_UNZIPPED,
    DownloadError,
    _beirs_own,
    _unpacked,
    cache_dir,
    download_beir,
    max_unzipped as max_unzipped,
)
from ragkit.eval._layout import _SUB_NAME, _folders, _is_dataset, _lacks, _layout_missing, _subsets
from ragkit.eval._lines import _gz_hint, _not_found, _read_jsonl
from ragkit.eval._read import (
    _read_qrels,
    is_jsonl_query_file,
    read_corpus,
    read_qrels,
    read_queries,
    read_query_file,
    starts_json_object as starts_json_object,
)
from ragkit.eval.metrics import respelled, respelt_pair
from ragkit.types import (
    GRADE_MAX,
    GRADE_MIN,
    ID_BREAK,
    Corpus,
    Qrels,
    Queries,
    TrainSet,
    grade_range_error,
)

_log = logging.getLogger(__name__)

__all__ = ["BeirDataset", "load_beir", "beir_qrels", "beir_subsets", "read_corpus", "read_queries", "read_query_file",
           "read_qrels", "download_beir", "cache_dir", "write_beir"]


@dataclass
class BeirDataset:
    """A BEIR dataset folder: the corpus, and queries and qrels per split.

    ``queries(split)`` returns only the queries judged in that split, in file order.

    Parameters
    ----------
    path : Path
        The dataset's folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
    corpus : Corpus
        Its documents.  :func:`load_beir` builds both, reading the query texts too; a dataset built
        here reads ``path / "queries.jsonl"`` when its queries are first asked for.
    """

    path: Path
    corpus: Corpus
    # {query id: text} of queries.jsonl (load_beir reads it; None: read when first asked for)
    _queries: dict[str, str] | None = field(init=False, repr=False, default=None)
    _warned: set[str] = field(init=False, repr=False, default_factory=set)  # splits whose unknown judged docs were said

    @property
    def name(self) -> str:
        """The dataset's name: its folder's (``"scifact"``)."""
        return self.path.resolve().name  # ("." names the folder it is)

    @property
    def splits(self) -> list[str]:
        """The splits that have judgements (``qrels/<split>.tsv``), sorted: ``["dev", "test", "train"]``."""
        return sorted(p.stem for p in (self.path / "qrels").glob("*.tsv"))

    def qrels(self, split: str = "test") -> Qrels:
        """Judgements of ``split``.  A query id that ``queries.jsonl`` lacks is a :class:`DataError`
        (that query could not be searched).  A judged document that ``corpus.jsonl`` lacks is kept,
        as BEIR and pytrec_eval keep it: no run can retrieve it, so it counts as not found (it
        lowers recall and the ideal DCG holds it), and a warning on the ``ragkit`` logger says how
        many documents there are and how many judgements name them (official ArguAna judges 1 such
        document), and how many of those are graded 0 (not relevant: they change no score).  Kept even
        when the corpus holds none of the relevant documents (every score 0); ``ragkit eval`` refuses
        that case (:meth:`_qrels` with ``refuse``)."""
        return self._qrels(split, refuse=False)

    def _qrels(self, split: str, refuse: bool) -> Qrels:
        """:meth:`qrels`; ``refuse``: refused with a :class:`DataError` instead of the warning where the corpus
        holds none of the documents the split judges relevant (graded 1 or more): a corpus and qrels whose ids are
        written otherwise (``'doc12'`` and ``'12'``), or of two datasets, where every metric of every run would be
        0 (``ragkit eval`` asks so before any fit).  Some of them missing stays the warning; qrels with no grade of
        1 or more are not refused (:func:`~ragkit.eval.metrics.level_note` says so)."""
        path = _qrels_file(self.path, split)
        qrels, first_line, line_of = _read_qrels(path)  # (read_qrels', with the lines to name: one parse)
        texts = self._query_texts()
        bad_q = [q for q in qrels if q not in texts]
        if bad_q:  # (qrels keep the order queries are first judged in: bad_q[0] is the first offending row)
            n, where = len(bad_q), f"{path}:{first_line[bad_q[0]]}"
            which = (f"query id {bad_q[0]!r}, judged on this line, is" if n == 1 else
                     f"{n} judged query ids (the first, {bad_q[0]!r}, on this line) are")
            raise DataError(f"{where}: {which} not in {self.path / 'queries.jsonl'}; expected every query the qrels "
                            "judge to be there (a query without its text cannot be searched)"
                            + _respelt_queries(bad_q, texts))
        bad_d = self.unknown_judged(qrels)
        if not bad_d or (split in self._warned and not refuse):  # (queries(split) reads them too: said once)
            return qrels
        rel = [(q, d) for q, d in bad_d if qrels[q][d] > 0]  # (one graded 0 changes no score, found or not)
        (q, d), n, r = (rel or bad_d)[0], len(bad_d), len(rel)
        line = line_of.get((q, d))
        at = f"; {d!r} is judged for query {q!r} on line {line} of {path.name}" if line else ""
        if refuse and r and r == sum(g > 0 for rel_q in qrels.values() for g in rel_q.values()):
            m = len({d for _, d in rel})
            of = f"; {r} judgements" if r != m else ""
            eg = f"e.g. {d!r}, judged for query {q!r}" + (f" on line {line}" if line else "")
            some = some_ids(self.corpus.ids[:4].tolist())  # (", ..." after 3 when there are more)
            raise DataError(f"{path}: none of the {m} document{'s' if m > 1 else ''} the qrels judge relevant (graded "
                            f"1 or more{of}; {eg}) {'is' if m == 1 else 'are'} in {self.path / 'corpus.jsonl'}, whose "
                            f"{len(self.corpus):,} documents are {some}: no run can retrieve one, so every metric "
                            "would be 0 for every query; expected the qrels of this corpus, with its document ids "
                            "written as corpus.jsonl writes them" + self._respelt_docs([d for _, d in rel]))
        if split in self._warned:
            return qrels
        self._warned.add(split)
        m = len({d for _, d in bad_d})
        docs = (f"{m} judged document{'s' if m > 1 else ''}" + (f" ({n} judgements)" if n != m else "")
                + f" {'are' if m > 1 else 'is'} not in corpus.jsonl")
        eg = f"e.g. {d!r}, judged for query {q!r}"
        they = "they count" if len({d for _, d in rel}) > 1 else "it counts"
        if r == n:
            said = f"{docs} ({eg}); kept, as BEIR keeps them: no run can retrieve {'them' if m > 1 else 'it'}, so"
        elif r == 0:
            said = (f"{docs} ({eg}), {'all ' if n > 1 else ''}graded 0 (not relevant), so "
                    f"{'they change' if n > 1 else 'it changes'} no score; kept, as BEIR keeps them")
        else:
            judgements = f" judgement{'s' if r > 1 else ''}" if n != m else ""
            said = (f"{docs}: {r}{judgements} graded 1 or more ({eg}) and {n - r} graded 0 (not relevant, which "
                    f"change{'' if n - r > 1 else 's'} no score); kept, as BEIR keeps them: no run can retrieve the "
                    f"{'documents of the ' if n != m else ''}{r} graded 1 or more, so")
        _log.warning(f"{path}: {said}" + (f" {they} as not found" if r else "") + at
                     + self._respelt_docs([d for _, d in (rel or bad_d)]))
        return qrels

    def _respelt_docs(self, unknown: list[str]) -> str:
        """``"; is '14717500' meant? ('14717500 ' names ...)"``: the clause on the judged document ids ``unknown``
        (which the corpus lacks) that name a document of the corpus once leading zeros, case and surrounding
        spaces are set aside (:func:`~ragkit.eval.metrics.respelled`), ``""`` when none does.  The corpus's ids are
        looked through only when it holds at most :data:`_RESPELL_MAX` documents (a warning's hint is not worth
        seconds)."""
        if len(self.corpus) > _RESPELL_MAX:
            return ""
        pairs = respelled(list(dict.fromkeys(unknown)), self.corpus.ids.tolist())
        if not pairs:
            return ""
        (u, j), k = pairs[0], len(pairs)
        return (f"; is {j!r} meant? ({respelt_pair(u, j, 'is', ' in corpus.jsonl').rstrip('?')}: {k} of the "
                f"judged ids the corpus lacks name{'' if k > 1 else 's'} a document of corpus.jsonl once leading "
                "zeros, case and spaces are set aside; write the qrels' document ids as corpus.jsonl does)")

    def unknown_judged(self, qrels: Mapping[str, Mapping[str, int]]) -> list[tuple[str, str]]:
        """``(query id, document id)`` of every judgement in ``qrels`` (any grade) whose document the
        corpus lacks, in qrels order."""
        lut = self.corpus._lookup()
        return [(q, d) for q, rel in qrels.items() for d in rel if d not in lut]

    def queries(self, split: str = "test") -> Queries:
        """The queries judged in ``split`` (:meth:`qrels`), in ``queries.jsonl`` order: a query no judgement
        of the split names is left out (BEIR scores only judged queries).  A split the folder lacks is a
        :class:`DataError` naming those it has."""
        judged = self.qrels(split)
        texts = self._query_texts()
        ids = [q for q in texts if q in judged]
        return Queries(ids, [texts[q] for q in ids])

    def _query_texts(self) -> dict[str, str]:
        """``{query id: text}`` of ``queries.jsonl``, read once (:func:`load_beir` reads it as it loads)."""
        if self._queries is None:
            self._queries = read_queries(self.path / "queries.jsonl")
        return self._queries

    def train_set(self, split: str = "train", *, allow_test: bool = False) -> TrainSet:
        """The judged queries of ``split`` as a :class:`TrainSet` for ``fit(corpus, train=...)``.

        The test split (``qrels/test.tsv``, however it is reached: a link to it under another name too) is a
        :class:`ParamError` (learning from the queries a score is reported on inflates it; ``ragkit eval
        --train-split test`` and ``ragkit train --split test`` refuse it too) unless ``allow_test=True`` says so
        on purpose.  A split is a name, never a path (:func:`check_split_name`)."""
        path = _qrels_file(self.path, split)
        if not allow_test and is_test_qrels(self.path, path):
            how = "" if split == "test" else f" (its qrels file {path} is qrels/test.tsv)"
            raise ParamError(f"train_set: split {split!r}{how} holds the queries BEIR scores are reported on; learning "
                             "from them inflates those scores (ragkit eval --train-split and ragkit train refuse it "
                             f"too). Learn from another split ({self._other_splits()}), or pass allow_test=True to "
                             "train on the test queries on purpose", "train_set.split")
        return TrainSet(self.queries(split), self.qrels(split))

    def _other_splits(self) -> str:
        """The splits other than ``test``, for an error message: ``this dataset has 'dev', 'train'``."""
        others = [s for s in self.splits if not is_test_qrels(self.path, self.path / "qrels" / f"{s}.tsv")]
        return f"this dataset has {', '.join(map(repr, others))}" if others else "this dataset has none but test"


#: the most documents a corpus may hold for :meth:`BeirDataset.qrels`'s warning of judged documents it lacks to
#: look for them spelled otherwise among its ids (a Python pass over them: about 1 s per million)
_RESPELL_MAX = 2_000_000


def _respelt_queries(judged: list[str], queries: Mapping[str, str]) -> str:
    """``"; '1' is '0001' in queries.jsonl? (...)"``: the clause on the ``judged`` query ids (of a qrels file) that
    name a query of ``queries`` once leading zeros, case and spaces are set aside (:func:`respelled`, as run
    files' ids are hinted at), ``""`` when none does."""
    pairs = respelled(judged, queries)
    if not pairs:
        return ""
    (u, j), k = pairs[0], len(pairs)
    return (f"; {u!r} is {j!r} in queries.jsonl? ({k} of the {len(judged)} ids name{'' if k > 1 else 's'} a query of "
            "queries.jsonl once leading zeros, case and spaces are set aside; write the qrels' query ids as "
            "queries.jsonl does)")


def _line_of_id(path: Path, wanted: str) -> int | None:
    """The line of ``path`` (a JSON Lines file of ``_id`` records, or a query TSV) whose id is ``wanted``, ``None``
    when none is (or the file cannot be read); for an error only: the file is read again."""
    try:
        if path.suffix.casefold() != ".tsv" and is_jsonl_query_file(path):
            return next((n for n, rec in _read_jsonl(path) if str(rec["_id"]) == wanted), None)
        return next((n for n, _, line in utf8_lines(path, "") if line.partition("\t")[0].strip() == wanted), None)
    except (OSError, DataError):
        return None


def check_run_ids(run: str, ids: Sequence[str], what: str, source: str | os.PathLike[str], *,
                  lookup: Path | None = None, fix: str | None = None) -> None:
    """Refuse, before any fit or search, an id of ``ids`` (``what``: ``"document id"``, ``"query id"``, read from
    ``source``: ``corpus.jsonl``, a ``--queries`` file, an index's corpus) that the TREC run file ``run`` (the
    option writing it: ``"--run t.run"``) could not hold: empty, or holding whitespace, which would split the
    file's columns.  One regex pass over the ids joined (:func:`ragkit.run.check_trec_ids`'s); only an id that
    fails it is looked for in ``lookup`` (a JSON Lines file or TSV), for the message to name its line.  ``fix``:
    how to mend it, when not by writing the id without whitespace in ``lookup`` (or ``source``)."""
    from ragkit.run import _unwritable

    ids = ids if isinstance(ids, list) else list(ids)
    bad = _unwritable(ids, "\x00".join(ids))
    if bad is None:
        return
    line = _line_of_id(lookup, bad) if lookup is not None and lookup.is_file() else None
    where = f"{lookup}:{line}" if line is not None else os.fspath(source)
    if not bad:
        why = "is empty"
    else:
        at = next((i for i, c in enumerate(bad) if c.isspace()), 0)
        why = (f"holds whitespace ({bad[at]!r} at character {at + 1} of {len(bad)}"
               + (", its end" if at == len(bad) - 1 else ", its start" if at == 0 else "") + ")")
    raise DataError(f"{where}: {run}: cannot write a TREC run file: {what} {bad!r} {why}, which would break the "
                    "file's columns (separated by whitespace); refused before any work: "
                    + (fix or f"write the id without whitespace in {lookup.name if lookup is not None else source}")
                    + ", or leave out --run (-o writes JSON, which holds any id)")


def is_test_qrels(folder: Path, qrels_file: Path) -> bool:
    """Whether ``qrels_file`` is the test split's judgements of the dataset ``folder`` (``qrels/test.tsv``):
    the same file, however it is named (a link, another spelling of the path), so that no split name
    reaches the test queries for training."""
    test = folder / "qrels" / "test.tsv"
    try:
        return test.is_file() and os.path.samefile(qrels_file, test)
    except OSError:
        return False


#: a split's name: the stem of ``qrels/<split>.tsv``, never a path
_SPLIT_NAME = re.compile(r"[^/\\.\x00][^/\\\x00]*")


def check_split_name(split: object, where: str, folder: Path | None = None) -> str:
    """``split`` when it names a split (``qrels/<split>.tsv``): a non-empty string without ``/``, ``\\`` or a NUL
    that does not begin with ``.``; else a :class:`DataError` starting with ``where`` that says what was given,
    what is expected and, when ``folder`` (a dataset folder) is given, the splits it has.  Every split
    ``load_beir``'s dataset, :func:`beir_qrels`, :func:`write_beir` and ``ragkit eval`` / ``train`` /
    ``compare`` take passes here: ``'./test'`` or ``'../qrels/test'`` would otherwise read the test split
    under another name."""
    if isinstance(split, str) and _SPLIT_NAME.fullmatch(split):
        return split
    have = ""
    if folder is not None and (folder / "qrels").is_dir():
        have = f"; the splits of {folder} are {sorted(p.stem for p in (folder / 'qrels').glob('*.tsv'))}"
    what = f"split name {split!r}" if isinstance(split, str) else f"split {type(split).__name__} {split!r:.60}"
    raise DataError(f"{where}: {what} is not a file name; a split names the judgements qrels/<split>.tsv of a "
                    "dataset, not a path: expected a name such as 'train', 'dev' or 'test' (no '/', '\\' or "
                    f"leading '.'){have}")


#: what a file name may not hold on Windows (NTFS, FAT): ``dev:v2.tsv`` would write the stream ``v2.tsv`` of a
#: file ``dev`` there (a trailing dot or space, which Windows drops, never ends the name ``qrels/<split>.tsv``)
_NOT_IN_WINDOWS_NAMES = re.compile(r'[:*?"<>|\x01-\x1f]')
#: the device names Windows reserves, whatever the extension (``con.tsv`` is the console)
_WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10))})


def _check_portable_splits(splits: Sequence[str]) -> None:
    """Refuse (:class:`DataError`, before anything is written) split names a dataset written by :func:`write_beir`
    could not keep on every system its folder may be copied to: two equal but for case (``test`` and ``Test``:
    one file ``qrels/test.tsv`` on Windows' and macOS's file systems, the second overwriting the first), a
    character Windows refuses in a file name (``: * ? " < > |``, a control character), or a name Windows
    reserves for a device (``con``, ``nul``, ``com1``, ...)."""
    import unicodedata

    seen: dict[str, str] = {}
    for split in splits:
        bad = _NOT_IN_WINDOWS_NAMES.search(split)
        if bad is not None:
            if bad.group() == ":":
                what = (f"holds ':', which Windows reads in a file name as naming a stream of another file "
                        f"(qrels/{split}.tsv would be a stream of the file qrels/{split.split(':')[0]})")
            else:
                what = f"holds {bad.group()!r}, which a file name cannot hold on Windows"
            raise DataError(f"write_beir: split name {split!r} {what}; expected a name that is a file name on every "
                            "system (letters, digits, '-', '_'), such as 'dev_v2'")
        if split.split(".")[0].lower() in _WINDOWS_DEVICES:
            raise DataError(f"write_beir: split name {split!r} is a device name on Windows (qrels/{split}.tsv "
                            "names the device there, not a file); expected another name, such as 'dev' or 'test'")
        other = seen.setdefault(unicodedata.normalize("NFC", split).lower(), split)
        if other != split:
            raise DataError(f"write_beir: split names {other!r} and {split!r} differ only in case (or in how their "
                            "accents are encoded); on Windows' and "
                            f"macOS's file systems qrels/{other}.tsv and qrels/{split}.tsv are one file (the second "
                            "would overwrite the first): give them names that differ otherwise")


def _qrels_file(folder: Path, split: str) -> Path:
    """``folder/qrels/<split>.tsv``; a split that is no name (:func:`check_split_name`), or one the folder
    lacks, is a :class:`DataError` naming those it has."""
    check_split_name(split, str(folder / "qrels"), folder)
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        qrels = folder / "qrels"  # (a folder without one: no split, nothing found beside)
        other = sorted(p.name for p in (qrels.iterdir() if qrels.is_dir() else ()) if p.stem == split and p.is_file()
                       and p.suffix.casefold() not in (".tsv", ".gz"))
        found = (f"; found qrels/{other[0]}, but a split's judgements are read from qrels/<split>.tsv: rename "
                 "a tab-separated file, or read it with ragkit.eval.read_qrels (a .csv by its header) and write "
                 f"the folder with ragkit.eval.write_beir(folder, corpus, queries, {{{split!r}: qrels}})"
                 if other else "")
        download = next((p for p in (folder, folder.parent) if _in_cache(p)), None)  # (an archive's sub-dataset)
        again = (f" ({download} is ragkit's download of {download.name!r}, in its cache: if "
                 f"{path.relative_to(download).as_posix()} was removed from it, delete that folder and the next load "
                 "downloads it again)" if download else "")
        raise DataError(f"{path}: no qrels for split {split!r}{_gz_hint(path)}{found}; available splits: "
                        f"{splits}{again}")
    return path


def _check_split_qrels(qrels: Any) -> None:
    """Refuse (an :class:`InputTypeError` for :func:`write_beir`) ``qrels`` that are no mapping
    ``{split: {query_id: {doc_id: grade}}}``; flat qrels (``{query_id: {doc_id: grade}}``, what
    :func:`read_qrels` returns) are told to be wrapped in a split."""
    flat = ""
    if isinstance(qrels, Mapping):
        bad = next(((s, rel) for s, rel in qrels.items() if not isinstance(rel, Mapping)
                    or any(not isinstance(j, Mapping) for j in rel.values())), None)
        if bad is None:
            return
        if isinstance(bad[1], Mapping):  # {query: {doc: grade}}: one level short
            flat = ' (flat qrels: pass {"test": qrels})'
    raise InputTypeError("write_beir: qrels: expected {split: {query_id: {doc_id: grade}}}, got "
                         f"{_kind(qrels)}{flat}")


def write_beir(folder: str | os.PathLike[str], corpus: Corpus, queries: Mapping[str, str] | Queries,
               qrels: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Path:
    """Write a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` per split.

    For slices of a dataset, or your own judged queries in the layout every BEIR tool reads.
    Written under a temporary name and renamed into place; an existing ``folder`` is refused.  What
    :func:`load_beir` would refuse (a judged query that ``queries`` lacks, a grade that is no integer, an id
    holding a tab or a line break) is refused before anything is written; a judged document that ``corpus``
    lacks is written, as ``load_beir`` keeps it (a slice of a corpus, or BEIR's own ArguAna, judges some).
    """
    folder = user_path(folder, "write_beir: folder")
    if folder.exists():
        raise DataError(f"{folder}: already exists; write_beir does not overwrite a dataset")
    blocker = file_above(folder)
    if blocker is not None:
        raise DataError(f"{folder}: {blocker} is a file, not a folder; a dataset cannot be written below it")
    if not isinstance(corpus, Corpus):
        raise InputTypeError(f"write_beir: corpus: expected a Corpus, got {_kind(corpus)}")
    if isinstance(queries, Queries):
        queries = dict(zip(queries.ids, queries.texts))
    if not isinstance(queries, Mapping):
        raise InputTypeError(f"write_beir: queries: expected a Queries or a mapping {{query_id: text}}, got "
                             f"{_kind(queries)}")
    _check_split_qrels(qrels)
    odd = next(((q, t) for q, t in queries.items() if not isinstance(t, str)), None)
    if odd is not None:
        raise DataError(f"write_beir: query {odd[0]!r} has the text {odd[1]!r:.60}; expected a string")
    for split in qrels:  # what load_beir would refuse (or a path) is refused before writing
        check_split_name(split, "write_beir")
    _check_portable_splits(list(qrels))
    for split, rel in qrels.items():
        if not rel:
            raise DataError(f"write_beir: qrels[{split!r}] judges no query; leave the split out")
        for q, judged in rel.items():
            for d, v in judged.items():
                if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                    raise DataError(f"write_beir: qrels[{split!r}][{q!r}][{d!r}] = {v!r} is not an integer "
                                    "relevance grade (0 not relevant, 1, 2, ... more relevant)")
                if not GRADE_MIN <= v <= GRADE_MAX:
                    raise DataError(grade_range_error(f"write_beir: qrels[{split!r}][{q!r}][{d!r}]", v))
        unknown = [q for q in rel if q not in queries]
        if unknown:
            raise DataError(f"write_beir: qrels[{split!r}] names {len(unknown)} queries not in queries, "
                            f"e.g. {unknown[0]!r}")
        broken = next((x for q, judged in rel.items() for x in (q, *judged) if ID_BREAK.search(str(x))), None)
        if broken is not None:  # a tab or line break in an id would split the TSV's columns or lines
            raise DataError(f"write_beir: qrels[{split!r}] id {broken!r} holds a tab or a line break, which a qrels "
                            "TSV cannot hold")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = shared_tempdir(folder.parent, f".{folder.name}.tmp-")
    try:
        corpus.save(tmp / "corpus.jsonl")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as f:
            for q, t in queries.items():
                f.write(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        for split, rel in qrels.items():
            with open(tmp / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
                f.write("query-id\tcorpus-id\tscore\n")
                f.writelines(f"{q}\t{d}\t{int(v)}\n" for q, docs in rel.items() for d, v in docs.items())
        os.replace(tmp, folder)
    except BaseException:  # nothing half-written is left beside the folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _candidates(name: str) -> list[Path]:
    out = []
    if os.environ.get("RAGKIT_BEIR_DIR"):
        out.append(Path(os.path.expanduser(os.environ["RAGKIT_BEIR_DIR"])) / name)
    out.append(cache_dir() / "beir" / name)
    here = Path.cwd()
    for base in (here, *here.parents[:3]):
        out.append(base / "shared" / "data" / "beir" / name)
    return out


#: The datasets of BEIR's archives of several, whose score is the mean over all of them (Thakur et al., 2021)
ARCHIVE_SUBSETS = {"cqadupstack": ("android", "english", "gaming", "gis", "mathematica", "physics", "programmers",
                                   "stats", "tex", "unix", "webmasters", "wordpress")}


def _in_cache(place: Path) -> bool:
    """Whether ``place`` (one of :func:`_candidates`) is in ragkit's own cache of downloads, not a user's folder."""
    return place.parent == cache_dir() / "beir"


#: The datasets BEIR's server distributes (Thakur et al., 2021): a name among them is downloaded when
#: not found locally, another one first checked against the local folders it may misspell
BEIR_NAMES = ("arguana", "climate-fever", "cqadupstack", "dbpedia-entity", "fever", "fiqa", "hotpotqa", "msmarco",
              "msmarco-v2", "nfcorpus", "nq", "quora", "scidocs", "scifact", "trec-covid", "webis-touche2020")


def _misspelt(name: str, roots: set[Path]) -> list[Path]:
    """The BEIR folders directly in ``roots`` whose name is close to ``name`` (a typo: ``sf_smal`` for
    ``./sf_small``; letter case aside: ``NFCorpus`` for ``nfcorpus``), closest first."""
    import difflib

    key = name.lower()
    near: list[Path] = []
    for root in sorted(r for r in roots if r.is_dir()):
        spelt: dict[str, list[str]] = {}  # (folder names, lowercase, to the folders: 'NF' and 'nf' may both be)
        for n in _folders(root):
            spelt.setdefault(n.lower(), []).append(n)
        near += [root / n for m in difflib.get_close_matches(key, list(spelt), n=3, cutoff=0.75) for n in spelt[m]
                 if _is_dataset(root / n)]
    return sorted(near, key=lambda p: -difflib.SequenceMatcher(None, key, p.name.lower()).ratio())


#: The (name, folder) pairs of BEIR names in other letters already said to be loaded lowercase (:func:`_find`)
_LOWERED: set[tuple[str, Path]] = set()


def _find(name: str, label: str, *, download: bool, base_url: str | None) -> Path:
    """The folder of dataset (or multi-dataset archive) ``name``: the first of :func:`_candidates` that
    holds it (in the cache: all of it, else it is downloaded again), else downloaded into the cache.
    ``label`` is what the caller asked for, for the errors.  A name BEIR does not distribute
    (:data:`BEIR_NAMES`) that is close to the name of a dataset folder of the user's (in the working folder,
    ``$RAGKIT_BEIR_DIR``, ``shared/data/beir``) is refused, naming the folder, before any download is tried;
    one close to a cached download's name is not (``fiqa2`` on a mirror beside a cached ``fiqa``): the
    download says whether the server has it, and its failure names the cached one.  A BEIR name in other
    letters (``SciFact``) that no folder bears is BEIR's lowercase name (``scifact``: its archives' names are
    lowercase), found or downloaded as such, with a note; never ``SciFact.zip``."""
    places = _candidates(name)
    lacking = {p: _lacks(p) for p in places if _in_cache(p) and p.exists()}
    found = next((p for p in places if (not lacking[p] if p in lacking else _is_dataset(p))), None)
    if found is not None:
        return found
    if name != name.lower() and name.lower() in BEIR_NAMES:
        found = _find(name.lower(), label, download=download, base_url=base_url)
        if first_time(_LOWERED, (name, found)):
            _log.warning(f"BEIR dataset {name!r}: no folder of that name; BEIR's dataset names are lowercase: "
                         f"loaded {name.lower()!r} ({found})")
        return found
    looked = ", ".join(str(p) + (f" (incomplete: no {', '.join(lacking[p])})" if lacking.get(p) else "")
                       for p in places)
    mine = {Path.cwd(), *(p.parent for p in places if not _in_cache(p))}
    near = [] if name.lower() in BEIR_NAMES else _misspelt(name, mine)
    if near:
        raise DataError(f"BEIR dataset {label!r}: no folder or dataset of that name (looked in {looked}); did you mean "
                        f"the folder {str(near[0])!r}? (nothing was downloaded)")
    if not download:
        incomplete = next((p for p in lacking if _is_dataset(p)), None)
        if incomplete is not None:  # nothing to replace it with: load_beir names the file it lacks
            return incomplete
        raise DataError(f"BEIR dataset {label!r} not found locally (looked in {looked}) and download=False")
    try:
        return download_beir(name, base_url=base_url)
    except (DataError, ParamError) as e:  # (ParamError: a name that is no file name, 'my data')
        cls = DownloadError if isinstance(e, DownloadError) else DataError  # (a failed download stays one)
        missing = getattr(e, "missing", False)
        cached = [p for p in _misspelt(name, {cache_dir() / "beir"}) if p.name != name] if missing else []
        # (one of that name is an incomplete download: 'looked in' says so)
        hint = f"; did you mean the cached dataset {cached[0].name!r} ({cached[0]})?" if cached else ""
        if missing and not cached and name.lower() not in BEIR_NAMES:
            hint, bad_name = _unknown_name(name, base_url)
            if bad_name:  # a typo of a BEIR name, or a name BEIR's own server lacks: bad input, not a retry
                cls = DataError
        elif not missing and not cached and name.lower() not in BEIR_NAMES:  # (no network, a server error)
            hint = _near_beir_name(name)  # a typo may be why: said, the failure left as it is (exit status 1)
        raise cls(f"BEIR dataset {label!r}: not found locally (looked in {looked}); {e}{hint}") from None


def _unknown_name(name: str, base_url: str | None) -> tuple[str, bool]:
    """For a name the server answered it has no archive of (HTTP 404) and BEIR does not distribute
    (:data:`BEIR_NAMES`): the hint to add to the error (``; did you mean the BEIR dataset 'scifact'?`` for
    ``scifcat``; from BEIR's own server, the names it has), and whether the name is bad input (exit status 2:
    asking again cannot help) rather than a failed download (1): so when it is a typo of a BEIR name, or when
    the server is BEIR's own, which holds only those.  Another server ($RAGKIT_BEIR_URL, ``base_url``) may
    host datasets of its own that it lacks for now: a name close to none of BEIR's stays a failed download."""
    hint = _near_beir_name(name)
    if hint:
        return hint, True
    if _beirs_own(base_url):
        return f"; BEIR's datasets are {', '.join(BEIR_NAMES)}", True
    return "", False


def _near_beir_name(name: str) -> str:
    """``; did you mean the BEIR dataset 'scifact'?`` for a name close to one BEIR distributes (``scifcat``:
    :data:`BEIR_NAMES`), else ``""``."""
    import difflib

    near = difflib.get_close_matches(name.lower(), BEIR_NAMES, n=1, cutoff=0.75)
    return f"; did you mean the BEIR dataset {near[0]!r}?" if near else ""


def _find_sub(archive: str, sub: str, *, download: bool, base_url: str | None) -> Path:
    """The folder of dataset ``sub`` of the multi-dataset archive ``archive``: found locally, else in the
    archive, downloaded whole (again, when the cache's copy of ``sub`` is incomplete).  A ``sub`` it does not
    hold is a :class:`DataError` listing those it does."""
    hit = next((p / sub for p in _candidates(archive) if (p / sub / "corpus.jsonl").is_file()
                and not (_in_cache(p) and _layout_missing(p / sub))), None)
    if hit is not None:
        return hit
    try:
        parent = _find(archive, f"{archive}/{sub}", download=download, base_url=base_url)
    except DataError as e:  # it may have been meant as a path: say that there is no such folder either
        cls = DownloadError if isinstance(e, DownloadError) else DataError  # (a failed download stays one)
        raise cls(f"{archive}/{sub}: no such folder ({Path(archive).absolute()} does not exist); as a "
                        f"dataset of a BEIR archive: {e}") from None
    subs = _subsets(parent)
    if not subs:
        raise DataError(f"BEIR dataset {archive!r} ({parent}) is a single dataset, without sub-datasets such as "
                        f"{sub!r}; load it as {archive!r}")
    if (parent / sub).is_dir():
        return parent / sub  # incomplete: load_beir names the file it lacks
    raise DataError(f"BEIR dataset {archive!r} ({parent}) has no sub-dataset {sub!r}; its {len(subs)} sub-datasets "
                    f"are {', '.join(subs)} (load one as '{archive}/{subs[0]}')")


def _not_a_folder(text: str) -> DataError:
    """The error for a path that is no folder.  Where its parent holds BEIR folders it lists them (the first
    20), with the closest to the name given (``./scifact_smal``: ``'scifact_small'``): as the sub-datasets of a
    BEIR archive where the parent is one (a download in the cache, or named as BEIR's archive, ``cqadupstack``),
    else as the folders there (``BEIR folders here: d1, d2``, of the working folder).  It names the dataset to
    pass when the path ends in a BEIR dataset's name (``data/scifact``: ``'scifact'``, which :func:`load_beir`
    finds in its cache or downloads)."""
    import difflib

    given = Path(text)
    parent, name = given.parent, given.name
    subs = _subsets(parent)
    hint = ""
    if subs:
        shown = ", ".join(subs[:20]) + (f" and {len(subs) - 20} more" if len(subs) > 20 else "")
        near = difflib.get_close_matches(name, subs, n=1)
        mean = f"; did you mean {str(given.with_name(near[0]))!r}?" if near else ""
        if _in_cache(parent) or parent.name.lower() in BEIR_NAMES:
            hint = f"; {parent} holds the sub-datasets {shown}{mean}"
        else:
            here = "here" if parent.resolve() == Path.cwd().resolve() else f"in {parent}"
            hint = f"; BEIR folders {here}: {shown}{mean}"
    if name.lower() in BEIR_NAMES:
        hint += f"; to find it by name (or download it), pass {name.lower()!r}"
    return DataError(f"{text}: BEIR folder not found{hint}")


def dataset_folder_of(file: Path) -> Path:
    """The dataset folder a BEIR file belongs to: its folder, or the one above ``qrels/``."""
    return file.parent.parent if file.parent.name == "qrels" else file.parent


def _locate(name_or_path: str | Path, *, download: bool, base_url: str | None) -> Path:
    """The folder ``name_or_path`` stands for: an existing folder, a dataset name (``scifact``) or
    ``<archive>/<sub>`` (``cqadupstack/android``), found locally or downloaded.  A leading ``~`` is the home
    folder."""
    path = user_path(name_or_path, "name_or_path")
    if path.is_dir():
        return path
    if path.is_file() and path.suffix.lower() == ".zip":
        return _unpacked(path)
    archive = _zip_above(path)
    if archive is not None:  # 'cqadupstack.zip/android': a folder inside a local zip, once unpacked
        return _in_archive(archive, path, name_or_path)
    if path.is_file():  # 'corpus.jsonl' in a dataset's folder would be taken for a name to download
        folder = dataset_folder_of(path.resolve())  # named only when it is a BEIR folder (not README.md's)
        hint = f": pass its folder, {str(folder)!r}" if (folder / "corpus.jsonl").is_file() else ""
        raise DataError(f"{name_or_path}: is a file; expected a BEIR dataset folder (corpus.jsonl, queries.jsonl, "
                        f"qrels/) or a dataset name{hint}")
    zip_path = next((p for p in (*reversed(path.parents), path) if p.suffix.lower() == ".zip" and not p.exists()), None)
    if zip_path is not None:  # 'fiqa.zip' is a file, never the name of a dataset to download ('fiqa.zip.zip')
        raise DataError(f"{name_or_path}: file not found ({zip_path.absolute()} does not exist); a name ending in .zip "
                        f"is a local BEIR zip archive's path; to download a dataset, give its name without .zip "
                        f"({zip_path.stem!r})")
    text = os.path.expanduser(str(name_or_path))
    # what a download killed midway left in the cache (its archive, gigabytes for some) is removed by the next
    # load by name, which may find the dataset without downloading it
    remove_stale_tempdirs(cache_dir() / "beir", _DOWNLOAD_PREFIX)
    sub = _SUB_NAME.fullmatch(text)
    if sub is not None and not Path(sub[1]).exists():  # 'data/x' beside an existing ./data is a path
        return _find_sub(sub[1], sub[2], download=download, base_url=base_url)
    if os.sep in text or "/" in text or text.startswith("."):
        raise _not_a_folder(text)
    return _find(text, text, download=download, base_url=base_url)


def _zip_above(path: Path) -> Path | None:
    """The local zip file ``path`` lies inside (``x.zip`` of ``x.zip/android``), or ``None``."""
    return next((p for p in path.parents if p.suffix.lower() == ".zip" and p.is_file()), None)


def _in_archive(archive: Path, path: Path, given: str | Path) -> Path:
    """The folder ``path`` (below the local zip ``archive``) names in the archive once unpacked, counted
    from the dataset (``cqadupstack.zip/android``) or from the archive's top folder, as a zip tool shows
    it (``cqadupstack.zip/cqadupstack/android``); one the archive lacks is a :class:`DataError` saying what
    it holds and how to load that."""
    root = _unpacked(archive)
    rest = path.relative_to(archive)
    for inner in (root / rest, root.parent / rest if rest.parts[0] == root.name else None):
        if inner is not None and inner.is_dir():
            return inner
    subs = _subsets(root)
    holds = (f"it holds the datasets {', '.join(subs)} (load one as '{archive}/{subs[0]}')" if subs else
             f"it holds one dataset, {root.name}: load it as '{archive}'")
    raise DataError(f"{given}: {archive} has no folder {rest.as_posix()!r}; {holds}")


def _sub_path(name_or_path: str | Path, folder: Path, sub: str) -> str:
    """How to load dataset ``sub`` of ``folder``, which ``name_or_path`` found: ``<name_or_path>/<sub>``
    where that loads (a folder, a name such as ``cqadupstack/android``, a path inside a zip), else the
    folder's own path."""
    given = f"{str(name_or_path).rstrip('/')}/{sub}"
    text = os.path.expanduser(given)
    if Path(text).is_dir() or _SUB_NAME.fullmatch(text) or _zip_above(Path(text)) is not None:
        return given
    return str(folder / sub)


def _check_name_or_path(value: object, caller: str) -> str | Path:
    """Refuse a ``name_or_path`` (of :func:`load_beir`, :func:`beir_qrels`, :func:`beir_subsets`: ``caller``)
    that is not a ``str`` or ``os.PathLike`` with a ``TypeError`` naming the argument (not pathlib's
    "expected str, bytes or os.PathLike object"); returns it as a ``str`` or :class:`~pathlib.Path`."""
    if not isinstance(value, (str, os.PathLike)):
        raise InputTypeError(f"{caller}: name_or_path: expected a BEIR dataset name ('scifact') or folder (a "
                             f"str or pathlib.Path), got {type(value).__name__} {value!r:.80}")
    # another os.PathLike (an os.DirEntry): a Path, so that messages name the path, not the object
    return value if isinstance(value, (str, Path)) else Path(os.fspath(value))


def load_beir(name_or_path: str | os.PathLike[str], *, download: bool = True,
              base_url: str | None = None) -> BeirDataset:
    """Load a BEIR dataset from a folder, or by name (found locally, else downloaded and cached).

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A dataset folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``); a local zip as BEIR
        distributes them (``scifact.zip``, unpacked once into ``<cache>/beir-zip/``); a dataset name
        (``"scifact"``); or, for one dataset of an archive that holds several, ``"<archive>/<sub>"``
        (``"cqadupstack/android"``; :func:`beir_subsets` lists them).  A name is looked for, in this order, in
        ``$RAGKIT_BEIR_DIR/<name>``, ``<cache>/beir/<name>`` and ``shared/data/beir/<name>`` under the working
        folder or one of its three parents.  ``<cache>`` is :func:`cache_dir`: ``$RAGKIT_CACHE``, else
        ``~/.cache/ragkit``.  A leading ``~`` in a path is the home folder.
    download : bool, default True
        Whether a name found nowhere is downloaded (``{base_url}/{name}.zip``, unpacked into
        ``<cache>/beir/<name>``, where later loads find it; a cached copy that is incomplete is downloaded
        again).  ``False``: a :class:`DataError` naming the places looked in instead.
    base_url : str, optional
        Where archives are downloaded from: ``$RAGKIT_BEIR_URL`` when unset, else BEIR's official server
        (:data:`BEIR_URL`).  A mirror, or a ``file://`` folder of zips.  To download with a longer timeout,
        call :func:`download_beir` first.

    Returns
    -------
    BeirDataset
        The dataset's ``corpus`` (read now) and query texts (read now); ``qrels(split)``, ``queries(split)`` and
        ``train_set(split)`` read a split's judgements when asked for.

    Raises
    ------
    DataError
        A folder or name holding several datasets (naming them), a file missing from the layout, or a line of
        a file that is not as BEIR writes it (naming the file and the line).

    Examples
    --------
    >>> from ragkit.eval import load_beir
    >>> ds = load_beir("scifact")  # doctest: +SKIP
    >>> len(ds.corpus), ds.splits  # doctest: +SKIP
    (5183, ['test', 'train'])
    >>> queries, qrels = ds.queries("test"), ds.qrels("test")  # doctest: +SKIP
    """
    name_or_path = _check_name_or_path(name_or_path, "load_beir")
    path = _locate_one(name_or_path, download=download, base_url=base_url)
    convert = ("convert the folder with ragkit.eval.write_beir(folder, corpus, queries, qrels) (qrels: {split: "
               "{query_id: {doc_id: grade}}}; read_query_file reads a TSV of queries, read_qrels a qrels .tsv or .csv)")
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (path / required).is_file():
            other = sorted(p.name for p in path.glob(f"{required.split('.')[0]}.*")  # (a .gz: _not_found says)
                           if p.is_file() and p.name != f"{required}.gz")
            raise _not_found(path / required, "; a BEIR folder holds corpus.jsonl, queries.jsonl and "
                                              "qrels/<split>.tsv" + (f"; found {', '.join(other)}, another format: "
                                                                     f"{convert}" if other else ""))
    if not (path / "qrels").is_dir():
        tables = sorted(p.name for p in path.iterdir() if p.suffix.casefold() in (".tsv", ".csv") and p.is_file())
        raise DataError(f"{path / 'qrels'}: folder not found; expected qrels/<split>.tsv files (BEIR's layout)"
                        + (f"; found {', '.join(tables)} beside corpus.jsonl" if tables else "") + f"; {convert}")
    corpus = read_corpus(path / "corpus.jsonl")
    _warn_empty_documents(corpus, path / "corpus.jsonl")
    data = BeirDataset(path=path, corpus=corpus)
    data._queries = read_queries(path / "queries.jsonl")  # (read now: a bad queries.jsonl is an error of the load)
    return data


def _warn_empty_documents(corpus: Corpus, path: Path) -> None:
    """One warning on the ``ragkit`` logger counting the documents with neither text nor title (``""`` or
    ``null`` both), with the first one's id; they are kept, as BEIR keeps them."""
    empty = (np.asarray(corpus.texts, dtype=object) == "") & (np.asarray(corpus.titles, dtype=object) == "")
    n = int(empty.sum())
    if n:
        first = corpus.ids[int(np.argmax(empty))]
        _log.warning(f"{path}: {n} document{'s have' if n > 1 else ' has'} no text and no title (e.g. {first!r}); "
                     f"kept, as BEIR keeps {'them' if n > 1 else 'it'}: {'they hold' if n > 1 else 'it holds'} no "
                     "words for a query to match")


def _locate_one(name_or_path: str | Path, *, download: bool, base_url: str | None) -> Path:
    """The folder of the one dataset ``name_or_path`` names (:func:`_locate`); a folder or name that holds
    several is a :class:`DataError` naming them."""
    path = _locate(name_or_path, download=download, base_url=base_url)
    subs = _subsets(path)
    if len(subs) == 1:
        raise DataError(f"{name_or_path}: holds one BEIR dataset, in its folder {subs[0]!r}; load it as "
                        f"{_sub_path(name_or_path, path, subs[0])!r}")
    if subs:
        one = _sub_path(name_or_path, path, subs[0])
        raise DataError(f"{name_or_path}: holds {len(subs)} BEIR datasets ({', '.join(subs)}), not one; load one as "
                        f"{one!r} (beir_subsets lists them; BEIR reports the mean of each metric over them)")
    return path


def beir_qrels(name_or_path: str | os.PathLike[str], split: str = "test", *, download: bool = True,
               base_url: str | None = None) -> tuple[str, Qrels]:
    """``(dataset name, judgements of split)`` of a BEIR dataset, found as :func:`load_beir` finds it,
    without reading its corpus or queries (``ragkit compare`` scores run files with them; a corpus
    can be gigabytes).  Their ids are not checked against the corpus, as ``BeirDataset.qrels`` does."""
    name_or_path = _check_name_or_path(name_or_path, "beir_qrels")
    return _folder_qrels(_locate_one(name_or_path, download=download, base_url=base_url), split)


def _folder_qrels(folder: Path, split: str) -> tuple[str, Qrels]:
    """:func:`beir_qrels` of a dataset folder found already (:func:`_locate_one`: ``ragkit compare`` locates
    ``--data`` once, and records the folder in its JSON too): ``(the folder's name, links resolved; the judgements
    of split)``."""
    return folder.resolve().name, read_qrels(_qrels_file(folder, split))


def beir_subsets(name_or_path: str | os.PathLike[str], *, download: bool = True,
                 base_url: str | None = None) -> list[str]:
    """The datasets of a BEIR archive that holds several, sorted; ``[]`` for anything else (one dataset).

    Found as :func:`load_beir` finds a dataset: a folder, or a name found locally, else downloaded
    and cached.  Load each as ``load_beir(f"{name}/{sub}")``; BEIR reports such an archive
    (CQADupStack) as the mean of each metric over its datasets.

    Examples
    --------
    >>> beir_subsets("cqadupstack")  # doctest: +SKIP
    ['android', 'english', 'gaming', 'gis', 'mathematica', 'physics', 'programmers', 'stats', 'tex', 'unix',
     'webmasters', 'wordpress']
    """
    name_or_path = _check_name_or_path(name_or_path, "beir_subsets")
    return _subsets(_locate(name_or_path, download=download, base_url=base_url))

