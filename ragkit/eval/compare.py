"""Paired comparison of retrieval systems over the same queries (``ragkit compare``).

For every metric: each system's mean over the queries, its difference to a baseline system
with a percentile-bootstrap confidence interval over queries, and the two-sided p-value of a
paired randomisation test (Fisher's sign flip, the test Smucker, Allan & Carterette, CIKM 2007,
recommend for IR; :func:`ragkit.eval.metrics.paired_randomization_test`).  The p-values of all
(system, metric) comparisons of one call are corrected together by Holm's step-down method, so
"significant" keeps its meaning however many systems and metrics are compared.  A p-value where a system
differs from the baseline on at most 20 queries is exact (all ``2**k`` sign patterns of those ``k`` counted:
standard error 0); any other is a Monte Carlo estimate: its standard error ``sqrt(p (1 - p) / n_resamples)`` is
kept, and a Holm-corrected p-value within two standard errors of ``alpha`` is marked as such (its verdict could
flip with the seed).

Results come from ``ragkit eval -o`` JSON files (their per-query values) or from TREC run files
scored against judgements here (:func:`load_result`); every system must be scored on the same
queries of the same dataset and split, with the same ``relevance_level`` and ``ignore_identical_ids``, and
against the same judgements where both results record them (:func:`scored_qrels_fingerprint`: of the
judgements of the queries each result was scored on; ``ragkit eval -o`` records it, :func:`load_result` computes
it for a run file, :func:`~ragkit.eval.evaluate` keeps it on its ``EvalResult``), or the comparison is refused (a
result that records none, beside others that do, is compared with a warning that it could not be checked).
Results of an archive of several datasets (``ragkit eval --data cqadupstack``) are compared as BEIR reports them:
every mean weights each dataset equally
(a query of a dataset of ``n`` queries weighs ``1 / (n_datasets * n)``), the randomisation test's
statistic is that weighted mean difference, and the bootstrap resamples queries within each
dataset (stratified), so each dataset keeps its size in every resample.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ragkit._files import sha256_file
from ragkit.errors import DataError, InputTypeError, ParamError, RagkitError, some_ids
from ragkit.eval.metrics import (
    SIGN_FLIP_EXACT_MAX,
    _evaluate_noted,
    _exact_grid,
    _named_twice,
    _one_blas_thread,
    _twice_said,
    level_note,
    parse_metric,
    parse_metrics,
    say_once,
    sign_flip_pvalues,
    unjudged_note,
)
from ragkit.run import Run
from ragkit.types import as_qrels

__all__ = ["SystemResult", "Comparison", "compare", "load_result", "holm", "pipeline_kind", "eval_command",
           "scored_qrels_fingerprint"]

#: Metrics compared when none are named: BEIR's headline pair.
DEFAULT_COMPARE_METRICS = ("ndcg@10", "recall@100")
#: Sign flips (and bootstrap resamples) of :func:`compare` when none are given.  A raw p-value near 0.05
#: has a Monte Carlo standard error of 0.0022 at 10,000 (Holm multiplies it too: SciFact's BM25 vs hybrid
#: on 4 metrics gave p (Holm) 0.0513 with seed 0, 0.0457 at 200,000, and 1 or 4 verdicts of significance
#: by seed); 0.0005 at 200,000, which take ~0.4 s for 3 systems x 4 metrics on SciFact's 300 queries.
DEFAULT_RESAMPLES = 200_000
#: Below this many queries on which a system and the baseline differ, :meth:`Comparison.warnings` says so: the
#: bootstrap interval and the p-value of a metric rest on those few queries only.
_FEW_DIFFER = 10
#: What ``ragkit eval`` scored every result with before its JSON recorded it (``settings``).
_EVAL_DEFAULT_SCORING = {"relevance_level": 1, "ignore_identical_ids": True}
#: The prefix of :func:`scored_qrels_fingerprint`'s fingerprints.  ``ragkit eval`` files written before it recorded
#: ``"sha256:..."``, a fingerprint of the whole split (before ``--limit``): :func:`compare` checks fingerprints of one
#: kind only against each other, and says which results it could not check.
SCORED_FINGERPRINT_KIND = "sha256-scored"


def _n_queries(n: int) -> str:
    """``1 query``, ``2 queries`` (the headers' and notes' count)."""
    return f"{n} quer{'y' if n == 1 else 'ies'}"


def scored_qrels_fingerprint(qrels: Mapping[str, Mapping[str, int]], queries: Any) -> str:
    """``"sha256-scored:<64 hex digits>"`` identifying the judgements of ``queries`` (an iterable of query ids: the
    queries a result was scored on, its per-query keys) in ``qrels`` (checked: string ids, integer grades): the
    SHA-256 of :func:`~ragkit.eval.metrics.qrels_fingerprint`'s lines of those queries only (ids of ``queries``
    without judgement add nothing).  ``ragkit eval -o`` records it (``settings.qrels_fingerprint``) for the queries
    it scored (the first ``--limit`` of them), :func:`load_result` for the judged queries a run file is scored on,
    so that :func:`compare` refuses results scored against other judgements of the same queries, whichever subset
    of the split the qrels given hold (different queries have a check of their own).  One pass over the judgements
    of ``queries`` (~0.5-0.9 s per million qrels lines)."""
    picked = {q: qrels[q] for q in queries if q in qrels}
    from ragkit.eval.metrics import qrels_fingerprint as whole

    return f"{SCORED_FINGERPRINT_KIND}:" + whole(picked).split(":", 1)[1]


def _fingerprint_kind(fingerprint: str) -> str:
    """What ``fingerprint`` is a fingerprint of: its prefix (``"sha256-scored"``, or ``"sha256"``: an older
    ``ragkit eval``'s of its whole split)."""
    return fingerprint.split(":", 1)[0]


@dataclass(frozen=True)
class SystemResult:
    """One system's per-query metric values: ``per_query[metric][query_id] -> value``.

    ``dataset`` and ``split`` (when known, e.g. read from ``ragkit eval -o``) let
    :func:`compare` refuse results of different data, and ``relevance_level`` and
    ``ignore_identical_ids`` (how the values were scored, :func:`~ragkit.eval.evaluate`'s arguments)
    results scored differently; ``None`` is unknown and compares with anything.  ``groups`` maps every
    query id to its dataset for results of several datasets (ids ``"<dataset>/<query>"`` as
    :func:`load_result` builds them), ``None`` for one dataset.  ``depth`` is how many documents per query
    the result was searched for, when known (``ragkit eval --depth``, recorded in its JSON): a metric whose
    cut-off is deeper counts only that many (:attr:`Comparison.shallow` marks it).  ``max_ranked`` is the most
    documents it ranked for one query (recorded by ``ragkit eval``, counted in a TREC run file): where ``depth``
    is unknown the shallow mark reads it, so a pipeline whose last step keeps 10 is marked without ``--depth``
    (where ``depth`` is known, rankings shorter than it hold every document that matched: not marked).
    ``qrels_fingerprint`` identifies the judgements it was scored against (:func:`scored_qrels_fingerprint`;
    ``None``: unknown): :func:`compare` refuses two of one kind that differ.
    ``corpus_fingerprint`` identifies the documents it searched (``ragkit eval -o``'s ``settings.corpus_fingerprint``:
    :func:`~ragkit.eval.provenance.corpus_digest_text`; ``None``: unknown, as for a TREC run file or an older
    file): :meth:`Comparison.warnings` says when two known ones differ (not refused: a smaller corpus may be meant).
    ``ranked_queries`` are the queries a TREC run file ranks documents for (``None``: all it was scored on).
    ``source`` is the file it was read from as given (:func:`load_result`), ``source_resolved`` its absolute path
    (links resolved) and ``source_sha256`` the SHA-256 of its bytes as read (``None``: not read from a file), all
    three recorded by :meth:`Comparison.to_dict`, so that a comparison names exactly what it compared.
    ``ignored_judged`` is how many judged-relevant documents with their query's id a TREC run file's scoring
    dropped (``ignore_identical_ids``: :attr:`EvalResult.ignored_judged <ragkit.eval.metrics.EvalResult>`), ``None``
    where unknown (a ``ragkit eval -o`` JSON file, a result built by hand).
    """

    name: str
    per_query: Mapping[str, Mapping[str, float]] = field(repr=False)
    dataset: str | None = None
    split: str | None = None
    groups: Mapping[str, str] | None = field(default=None, repr=False)
    relevance_level: int | None = None
    ignore_identical_ids: bool | None = None
    depth: int | None = None
    source: str | None = None
    max_ranked: int | None = None
    qrels_fingerprint: str | None = None
    ranked_queries: frozenset[str] | None = field(default=None, repr=False)
    corpus_fingerprint: str | None = None
    source_resolved: str | None = None
    source_sha256: str | None = None
    ignored_judged: int | None = None

    def values(self, metric: str) -> Mapping[str, float]:
        """Per-query values of ``metric`` in any spelling :func:`parse_metric` reads."""
        want = parse_metric(metric)
        for name, vals in self.per_query.items():
            try:
                if parse_metric(name) == want:
                    return vals
            except DataError:  # a key that is no metric name: not this one
                continue
        raise DataError(f"{self.name}: holds no per-query values of {metric!r}; it holds "
                        f"{', '.join(self.per_query) or 'none'}")


def load_result(path: str | os.PathLike[str], *, qrels: Mapping[str, Mapping[str, int]] | Any | None = None,
                metrics: Sequence[str] = DEFAULT_COMPARE_METRICS,
                name: str | None = None, dataset: str | None = None, split: str | None = None,
                relevance_level: int = 1, ignore_identical_ids: bool = True,
                qrels_fingerprint: str | None = None, note_identical: bool = True) -> SystemResult:
    """A :class:`SystemResult` from a ``ragkit eval -o`` JSON file, or from a TREC run file
    scored here against ``qrels`` on ``metrics`` (with :func:`~ragkit.eval.evaluate`'s
    ``relevance_level`` and ``ignore_identical_ids``; a run file holds no judgements; ``dataset`` and
    ``split`` name where ``qrels`` come from, so that :func:`compare` can check it; the result carries the
    ``relevance_level`` and ``ignore_identical_ids`` it was scored with).  The result of either kind of file
    records its path as given (``source``) and resolved (``source_resolved``), and the SHA-256 of its bytes
    (``source_sha256``: one more read of the file, ~0.5 s per GB).  A JSON file of another
    ``dataset`` or ``split`` than the ones given is a :class:`DataError`; its scoring settings are the
    ones its ``settings`` record (``relevance_level`` and ``ignore_identical_ids`` are not checked against
    it here, they score run files: :func:`compare` refuses results scored differently).  A JSON file
    without them (written before ``ragkit eval`` recorded them) was scored with the defaults ragkit eval
    always used then: ``relevance_level=1``, ``ignore_identical_ids=True``.  A run file's result carries the
    :func:`scored_qrels_fingerprint` of the judged queries it is scored on; ``qrels_fingerprint``, when given, is
    that fingerprint computed already (``scored_qrels_fingerprint(qrels, qrels)``: ``ragkit compare`` computes it
    once for all its run files), taken as is.  A run file's result counts the judged-relevant documents with their
    query's id its scoring dropped (``ignored_judged``), which :func:`~ragkit.eval.evaluate`'s warning says unless
    ``note_identical=False`` (``ragkit compare`` says it per file in its own words)."""
    path = Path(path)

    def not_results(kind: str | None) -> None:  # a pipeline given where its results belong (a.yaml b.yaml)
        if kind is not None:
            raise DataError(f"{path} is {kind}, not results: evaluate it first "
                            f"({eval_command(path, dataset, split)}), then compare the .json files it writes")

    if path.is_dir():
        not_results(pipeline_kind(path))
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a 'ragkit eval -o' JSON file or a TREC run file")
    name = name or str(path)
    resolved, digest = str(path.resolve()), sha256_file(path)  # (what was read, for Comparison.to_dict)
    if holds_json(path):
        try:
            payload = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            not_results(pipeline_kind(path))  # YAML in flow style: {pipeline: [...]}
            raise DataError(f"{path}: not valid JSON ({e}); expected a 'ragkit eval -o' results file") from None
        not_results("a pipeline in JSON" if _is_pipeline_doc(payload) else None)
        result = replace(_from_payload(payload, path, name), source=str(path), source_resolved=resolved,
                         source_sha256=digest)
        for key, want in (("dataset", dataset), ("split", split)):  # --data/--split name what every result is of
            got = getattr(result, key)
            if want is not None and got is not None and got != want:
                raise DataError(f"{path}: results of {key} {got!r}, but {want!r} was given (--data / --split); "
                                f"compare results of the {key} given, or leave it out")
        return result
    not_results(pipeline_kind(path))
    if qrels is None:
        raise DataError(f"{path}: a TREC run file holds no judgements; give the dataset to score it against "
                        "(ragkit compare --data NAME_OR_FOLDER --split SPLIT)")
    if qrels_fingerprint is not None and not isinstance(qrels_fingerprint, str):
        raise ParamError(f"load_result: qrels_fingerprint must be None or what scored_qrels_fingerprint(qrels, qrels) "
                         f"returns ('sha256-scored:...'), got {type(qrels_fingerprint).__name__} "
                         f"{qrels_fingerprint!r:.60}")
    run = Run.read_trec(path)
    qrels = as_qrels(qrels, "load_result")  # (once: the scores and the level note read it)
    judged = [q for q in run.query_ids if q in qrels]
    named = (f"split {split!r}" if split else "", f"dataset {dataset!r}" if dataset else "")
    where = " of ".join(x for x in named if x)
    if not judged:
        raise DataError(f"{path}: ranks documents for {len(run.query_ids)} queries "
                        f"({some_ids(list(run.query_ids)) or 'none'}), none of them judged in the "
                        f"{where or 'judgements given'} ({len(qrels)} judged queries, e.g. {some_ids(list(qrels))}); "
                        "score a run of the same dataset and split")
    scores = _evaluate_noted(run, qrels, list(metrics), relevance_level=relevance_level,  # (its own notes below)
                             ignore_identical_ids=ignore_identical_ids, note_unsearched=False, note_level=False,
                             note_identical=note_identical, qrels_checked=True, who=str(path),
                             fingerprint=qrels_fingerprint is None)
    scored = next(iter(scores.per_query.values()), {})
    # (every judged query is scored, so this is the fingerprint of all of qrels' judgements)
    fingerprint = qrels_fingerprint if qrels_fingerprint is not None else scores.qrels_fingerprint
    ran = set(run.query_ids)
    lacking = [q for q in scored if q not in ran]
    unjudged, _ = unjudged_note(list(run.query_ids), scored, lacking, f"in the {where}" if where else "")
    if lacking:  # a run written with --limit, or of query ids spelled otherwise ('1' for '001')
        logging.getLogger("ragkit").info(
            "%s ranks documents for %d of the %d judged queries; the others score 0 (as trec_eval -c): %s", path,
            len(scored) - len(lacking), len(scored),
            unjudged or "a run written with --limit is compared on every judged query")
    elif unjudged:
        logging.getLogger("ragkit").info("%s: %s; they are left out of the comparison", path, unjudged)
    said = level_note(qrels, relevance_level)
    if said:  # (about the judgements: said once, however many run files they score)
        say_once(said, f"{where or 'judgements given'}: {said}")
    # (no depth, which the file does not say; the longest ranking it holds marks metrics cut deeper)
    return SystemResult(name, scores.per_query, dataset, split, relevance_level=int(relevance_level),
                        ignore_identical_ids=bool(ignore_identical_ids), source=str(path), source_resolved=resolved,
                        source_sha256=digest,
                        max_ranked=max((len(d) for d in run.doc_ids), default=0), qrels_fingerprint=fingerprint,
                        ranked_queries=frozenset(q for q, d in zip(run.query_ids, run.doc_ids)
                                                 if len(d) and q in scored), ignored_judged=scores.ignored_judged)


def holds_json(path: str | os.PathLike[str]) -> bool:
    """Whether the file ``path`` begins as a JSON object does (``{``, after a UTF-8 byte-order mark and
    whitespace): what :func:`load_result` reads as a ``ragkit eval -o`` JSON file, anything else as a TREC run
    file.  Reads its first 4 KiB."""
    with open(path, "rb") as f:  # (a UTF-8 byte-order mark, as some editors save JSON with, is no part of it)
        return f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{"


#: The largest file :func:`pipeline_kind` reads as YAML (a pipeline file is a few hundred bytes; run files
#: can be gigabytes, and a YAML parser reads ~1 MB/s).
_MAX_PIPELINE_BYTES = 1 << 20


def _trec_line(line: bytes) -> bool:
    """Whether ``line`` is a line of a TREC run file: 6 columns, the fifth a number (what
    :meth:`Run.read_trec <ragkit.run.Run.read_trec>` reads)."""
    parts = line.split()
    if len(parts) != 6:
        return False
    try:
        return float(parts[4]) == float(parts[4])  # (not NaN)
    except ValueError:
        return False


def pipeline_kind(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is when it holds a pipeline rather than results: ``"a pipeline YAML file"`` (YAML whose
    document is a mapping with a ``pipeline`` list, or a list of steps: what ``ragkit eval --pipeline`` reads),
    ``"a saved pipeline folder"`` (``Pipeline.save``'s) or ``"a saved operator folder"`` (``Operator.save``'s);
    ``None`` for anything else, read as before (a ``ragkit eval -o`` JSON file, whose ``pipeline`` is a string,
    or a TREC run file).  A file whose first non-blank line is a TREC run line (6 columns, the fifth a number) is
    not parsed unless it ends in ``.yaml`` / ``.yml``; nor is one over 1 MiB."""
    p = Path(path)
    try:
        if p.is_dir():
            if (p / "manifest.json").is_file() or (p / "pipeline.yaml").is_file():
                return "a saved pipeline folder"
            return "a saved operator folder" if (p / "params.json").is_file() else None
        if not p.is_file() or p.stat().st_size > _MAX_PIPELINE_BYTES:
            return None
        with open(p, "rb") as f:
            head = f.read(4096)
    except (OSError, ValueError):  # unreadable, a name too long, a NUL byte
        return None
    first = next((line for line in head.splitlines() if line.strip()), b"")
    if _trec_line(first) and p.suffix.lower() not in (".yaml", ".yml"):
        return None
    if head.lstrip()[:1] in (b"{", b"["):  # JSON (a ragkit eval -o file): read as JSON, which YAML would read the
        # same, at C speed (the YAML parser took ~2.5 s for a 1 MB results file)
        try:
            doc = json.loads(p.read_bytes())
        except (OSError, ValueError):
            pass  # YAML flow syntax, which is no JSON: the YAML parser below decides
        else:
            return "a pipeline YAML file" if _is_pipeline_doc(doc) else None
    from ragkit.pipelines.yaml import parse_yaml_text

    try:
        doc, _ = parse_yaml_text(p)
    except RagkitError:  # not YAML (nor UTF-8): not a pipeline file
        return None
    return "a pipeline YAML file" if _is_pipeline_doc(doc) else None


def _is_pipeline_doc(doc: Any) -> bool:
    """Whether a parsed YAML or JSON document is a pipeline: a mapping whose ``pipeline`` is a list of steps
    (a ``ragkit eval -o`` file's ``pipeline`` is the YAML as a string), or such a list alone."""
    steps = doc.get("pipeline") if isinstance(doc, Mapping) else doc
    return isinstance(steps, list) and any(isinstance(s, (Mapping, list)) for s in steps)


def eval_command(pipeline: str | os.PathLike[str], data: str | None = None, split: str | None = None,
                 output: str | os.PathLike[str] | None = None, extra: Sequence[str] = ()) -> str:
    """The ``ragkit eval`` command line that writes the results of ``pipeline`` (a YAML file or a saved folder)
    for ``ragkit compare``: ``--data`` (``DATASET`` when ``None``) and ``--split`` (``test``), ``-o`` ``output``
    (default: the file's stem or the folder's name, ``.json``, in the working folder), then ``extra`` options
    (``--relevance-level 2``); every argument quoted for this system's shell (a POSIX shell's rules, or
    Windows': :func:`~ragkit._files.shell_quote`)."""
    from ragkit._files import shell_join, shell_quote

    p = Path(pipeline)
    out = output if output is not None else f"{p.stem if p.suffix else p.name}.json"
    return " ".join(["ragkit eval", "--data", shell_quote(data) if data else "DATASET",
                     shell_join(["--split", split or "test", "--pipeline", os.fspath(pipeline), "-o", os.fspath(out),
                                 *extra])])


def _from_payload(payload: Any, path: Path, name: str) -> SystemResult:
    per_query = payload.get("per_query") if isinstance(payload, dict) else None
    if per_query is None and isinstance(payload, dict) and isinstance(payload.get("subsets"), dict):
        return _from_subsets(payload, path, name)
    return SystemResult(name, _checked_per_query(per_query, str(path)), payload.get("dataset"), payload.get("split"),
                        **_scoring(payload, path))


def _scoring(payload: dict, path: Path) -> dict[str, Any]:
    """``relevance_level`` and ``ignore_identical_ids`` as ``payload['settings']`` records them (``ragkit eval
    -o``); a key it lacks: ragkit eval's default, which every result scored before it was recorded used.  And
    ``depth``: the ``--depth`` it searched at (``None``: not given, or not recorded); ``max_ranked``: the most
    documents it ranked for a query (``payload['max_ranked']``); ``qrels_fingerprint``: its judgements' and
    ``corpus_fingerprint``: its corpus's (each ``None`` in files written before it was recorded)."""
    settings = payload.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise DataError(f"{path}: 'settings' must be an object, got {type(settings).__name__}; expected the JSON "
                        "'ragkit eval -o' writes")
    out = {key: settings.get(key, default) for key, default in _EVAL_DEFAULT_SCORING.items()}
    level, ignore = out["relevance_level"], out["ignore_identical_ids"]
    depth = out["depth"] = settings.get("depth")  # ragkit eval --depth (None: the pipeline's own, not recorded)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise DataError(f"{path}: settings.depth must be a number of documents >= 1 or null, got {depth!r}")
    ranked = out["max_ranked"] = payload.get("max_ranked")  # the longest ranking scored (None: not recorded)
    if ranked is not None and (isinstance(ranked, bool) or not isinstance(ranked, int) or ranked < 0):
        raise DataError(f"{path}: max_ranked must be a number of documents >= 0 or null, got {ranked!r}")
    fp = out["qrels_fingerprint"] = settings.get("qrels_fingerprint")  # (None: written before it was recorded)
    if fp is not None and not isinstance(fp, str):
        raise DataError(f"{path}: settings.qrels_fingerprint must be a string such as 'sha256:...' or null, got "
                        f"{fp!r}")
    corpus = out["corpus_fingerprint"] = settings.get("corpus_fingerprint")  # (None: not recorded)
    if corpus is not None and not isinstance(corpus, str):
        raise DataError(f"{path}: settings.corpus_fingerprint must be a string such as 'blake2b:...' or null, got "
                        f"{corpus!r}")
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise DataError(f"{path}: settings.relevance_level must be an integer grade >= 1, got {level!r}")
    if not isinstance(ignore, bool):
        raise DataError(f"{path}: settings.ignore_identical_ids must be true or false, got {ignore!r}")
    return out


def _checked_per_query(per_query: Any, where: str) -> dict[str, dict[str, float]]:
    """``per_query``, which must map metric names to ``{query id: finite number}``."""
    if not isinstance(per_query, dict) or not per_query:
        raise DataError(f"{where}: no 'per_query' values; expected the JSON 'ragkit eval -o' writes")
    for metric, vals in per_query.items():
        if not isinstance(vals, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in vals.values()):
            raise DataError(f"{where}: per_query[{metric!r}] must map query ids to numbers")
        _check_finite(vals, f"{where}: per_query[{metric!r}]")
    return per_query


def _from_subsets(payload: dict, path: Path, name: str) -> SystemResult:
    """The results of ``ragkit eval --data <archive>`` (``subsets``: each dataset's ``per_query``) as one
    :class:`SystemResult` whose query ids are ``"<dataset>/<query>"``, grouped by dataset."""
    subsets = payload["subsets"]
    if not subsets:
        raise DataError(f"{path}: 'subsets' is empty; expected the per-dataset results 'ragkit eval' writes")
    for sub, res in subsets.items():
        _checked_per_query(res.get("per_query") if isinstance(res, dict) else None, f"{path}: subsets[{sub!r}]")
    first = subsets[next(iter(subsets))]["per_query"]
    metrics = [m for m in first if all(m in r["per_query"] for r in subsets.values())]
    if not metrics:
        raise DataError(f"{path}: its datasets share no metric; expected the per-dataset results 'ragkit eval' writes")
    per_query = {m: {f"{sub}/{q}": v for sub, r in subsets.items() for q, v in r["per_query"][m].items()}
                 for m in metrics}
    # every metric's queries (a metric may cover queries another does not, as one dataset's results may: compare
    # draws each set of queries on its own), each in its dataset
    groups = {f"{sub}/{q}": sub for sub, r in subsets.items() for m in metrics for q in r["per_query"][m]}
    return SystemResult(name, per_query, payload.get("dataset"), payload.get("split"), groups,
                        **_scoring(payload, path))


def _check_finite(vals: Mapping[str, float], where: str) -> None:
    """Refuse NaN or infinite per-query values (a mean, an interval and a test of them mean nothing),
    naming ``where`` and the queries."""
    arr = np.fromiter(vals.values(), np.float64, len(vals))
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        ids = list(vals)
        shown = ", ".join(f"{ids[i]!r}: {arr[i]}" for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise DataError(f"{where}: {len(bad)} of the {len(arr)} per-query values are not finite numbers ({shown}); "
                        "expected numbers such as 0.5; drop those queries from every result or give them a value")


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of the p-values ``p`` (any shape; NaN entries are left out
    and stay NaN): the i-th smallest of ``m`` becomes ``max_{j<=i} min(1, (m - j + 1) p_(j))``."""
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    flat = p.reshape(-1)
    live = np.flatnonzero(~np.isnan(flat))
    order = live[np.argsort(flat[live], kind="stable")]
    m = len(order)
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * flat[order]))
    out.reshape(-1)[order] = adj
    return out


def _holm_se(p: np.ndarray, se: np.ndarray) -> np.ndarray:
    """Monte Carlo standard error of each Holm-adjusted p-value (:func:`holm`; same shape as ``p``, NaN
    where ``p`` is NaN): the adjusted value of the i-th smallest is ``(m - j + 1) p_(j)`` for the ``j <= i``
    that sets the running maximum, so its error is ``(m - j + 1)`` times ``se`` of that ``p_(j)``."""
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    flat, err = p.reshape(-1), np.asarray(se, np.float64).reshape(-1)
    live = np.flatnonzero(~np.isnan(flat))
    order = live[np.argsort(flat[live], kind="stable")]
    m = len(order)
    mult = m - np.arange(m)
    scaled = mult * flat[order]
    rises = scaled >= np.maximum.accumulate(scaled)  # where the running maximum is set (again)
    setter = np.maximum.accumulate(np.where(rises, np.arange(m), 0))
    out.reshape(-1)[order] = mult[setter] * err[order][setter]
    return out


def _bootstrap_ci(diff: np.ndarray, strata: list[np.ndarray], confidence: float, n_resamples: int,
                  seed: int, block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval, per column of ``diff`` (``(n_queries, k)``), of the mean over
    ``strata`` (index arrays partitioning its rows, one per dataset, weighted equally) of each stratum's mean:
    queries resampled with replacement within their stratum.  One stratum is the plain bootstrap of
    ``diff.mean(0)``.  Returns ``(low, high)``, each ``(k,)``.

    Each block of ``block`` resamples (default: ~2 MB of ``(block, n_queries)`` int64 indices, as much
    again of counts) draws its indices (:func:`_uniform_indices`, stratum after stratum), counts how often
    each query was drawn (one ``np.bincount``) and takes every column's resampled means at once as
    ``counts @ (weight * diff)``, the weights ``1 / (n_strata * stratum size)``, on a grid on which those sums
    are exact (:func:`~ragkit.eval.metrics._exact_grid`, a change below 1e-12 of the largest ``|diff|``):
    every column is resampled with the same draws and gets, bit for bit, what it would alone with ``seed``
    and ``block``.  5,000 queries x 200,000 resamples: ~4 s for 2 columns, ~5 s for 8 (drawing int64 indices
    and gathering each column's: ~7 s and ~15 s)."""
    diff = np.asarray(diff, np.float64)
    n, k = diff.shape
    if block is not None and (isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1):
        raise ParamError(f"compare: block must be a positive number of resamples, got {block!r}")
    weight = np.zeros(n)
    for idx in strata:
        weight[idx] = 1.0 / (len(strata) * len(idx))
    grid, _ = _exact_grid(diff * weight[:, None], 2 * np.abs(diff).max(0))  # every |partial sum| <= max |diff|
    rng = np.random.default_rng(seed)
    block = int(block) if block is not None else max(1, (1 << 18) // n)  # 2 MB: cache-sized, one BLAS thread
    rows = np.arange(block, dtype=np.int64)[:, None] * n  # where each resample's counts start in the flat bincount
    flat = np.empty((block, n), np.int64)
    drawn = np.empty(block * max(map(len, strata)), np.uint32)
    direct = len(strata) == 1 and np.array_equal(strata[0], np.arange(n))  # draws are the queries: no mapping
    means = np.empty((k, n_resamples))  # a column's resampled means contiguous: its quantiles are taken in place
    with _one_blas_thread():
        for s in range(0, n_resamples, block):  # blocks of resamples, then strata (datasets): never queries
            b = min(block, n_resamples - s)
            at = 0
            for idx in strata:
                draw = _uniform_indices(rng, len(idx), drawn[:b * len(idx)].reshape(b, len(idx)))
                flat[:b, at:at + len(idx)] = draw if direct else idx[draw]
                at += len(idx)
            flat[:b] += rows[:b]  # (a copy and an int64 add: 2x faster than one mixed-type add)
            counts = np.bincount(flat[:b].reshape(-1), minlength=b * n).reshape(b, n)
            means[:, s:s + b] = (counts.astype(np.float64) @ grid).T  # (k, b): exact sums of exact products
    tail = (1 - confidence) / 2
    # column by column, partitioning the means in place (no second copy of n_resamples x k floats)
    lo, hi = np.array([np.quantile(m, [tail, 1 - tail], overwrite_input=True) for m in means]).T.reshape(2, k)
    return lo, hi


def _uniform_indices(rng: np.random.Generator, m: int, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` (a C-contiguous uint32 array) with indices drawn uniformly from ``range(m)`` with
    replacement from ``rng``'s bit generator and return it.  For ``m <= 65536``: Lemire's multiply-shift
    (``u * m >> 16``) on 16-bit pieces ``u`` of its raw 64-bit words, rejecting the ``2**16 % m`` values of
    ``u`` whose product's low 16 bits fall below ``2**16 % m`` (they would favour some indices; 0.8% at
    ``m = 5000``, redrawn in order until none is left), so each index is exactly uniform, at 2 bytes of the
    stream per index, ~2x faster than ``rng.integers``; larger ``m``: ``rng.integers``."""
    if m > 1 << 16:
        out[...] = rng.integers(0, m, size=out.shape, dtype=np.uint32)
        return out
    flat, limit = out.reshape(-1), (1 << 16) % m
    u = rng.bit_generator.random_raw(-(-len(flat) // 4)).astype("<u8", copy=False).view(np.uint16)[:len(flat)]
    np.multiply(u, np.uint32(m), out=flat, dtype=np.uint32)  # u * m < 2**32
    low = flat.view(np.uint16)[0 if sys.byteorder == "little" else 1::2]  # each product's low 16 bits
    todo = np.flatnonzero(low < limit)  # positions to draw again, in order
    while len(todo):
        u = rng.bit_generator.random_raw(-(-len(todo) // 4)).astype("<u8", copy=False).view(np.uint16)[:len(todo)]
        again = np.multiply(u, np.uint32(m), dtype=np.uint32)
        ok = (again & 0xFFFF) >= limit
        flat[todo[ok]] = again[ok]
        todo = todo[~ok]
    flat >>= 16
    return out


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found; arrays are ``(n_systems, n_metrics)``, the baseline's row holds
    its means and NaN elsewhere.

    ``delta`` is mean(system) - mean(baseline) over the shared queries, ``ci_low``/``ci_high`` its
    bootstrap interval at ``confidence``, ``p_value`` the raw two-sided paired randomisation
    p-value and ``p_holm`` the same after Holm's correction over every comparison in the table.
    ``p_se`` and ``p_holm_se`` are their Monte Carlo standard errors (``sqrt(p (1 - p) / n_resamples)``, 0 for
    an exact p-value, where the system differs from the baseline on at most 20 queries; Holm's multiplier times
    that of the p-value that sets the adjusted one): ``near_alpha`` marks a ``p_holm`` within two of them of
    ``alpha``, whose verdict another seed could flip.

    What reproduces it: ``seed``, ``dataset`` and ``split`` (when the results record them), each system's
    ``sources`` (the file read), ``depths`` (the ``--depth`` it was evaluated at, ``None`` when not given or not
    recorded) and ``fingerprints`` (of the qrels each was scored against, ``None`` when unknown: a JSON file of an
    older ``ragkit eval``, an ``EvalResult``); ``corpora``: each one's corpus fingerprint (``None`` when
    unknown), of which :meth:`warnings` says when they differ.  ``max_ranked``: the most documents each ranked
    for one query, when known; :attr:`shallow` reads it where the depth is unknown.  ``coverage``: sentences
    :meth:`warnings` adds on TREC run files that rank few of the same queries.  ``n_differ`` counts the queries
    on which each system's value differs from the baseline's (NaN in the baseline's row).  :meth:`warnings` says
    what makes a row misleading.

    What reruns it, besides: ``relevance_level`` and ``ignore_identical_ids`` (how the results were scored, where
    known: :func:`compare` refuses results scored otherwise), each system's ``source_resolved`` (its file resolved)
    and ``source_sha256`` (of the bytes read), ``data`` and ``data_resolved`` (``ragkit compare --data`` as given
    and the folder it names, ``None`` in Python) and ``date`` (when :func:`compare` ran: ISO 8601 with the time
    zone's offset) and ``versions``, ragkit's and its libraries' then (:func:`~ragkit.eval.provenance.versions`:
    the p-values are ragkit's resampling code's).
    """

    systems: list[str]
    metrics: list[str]
    baseline: int
    n_queries: int
    n_datasets: int
    means: np.ndarray
    delta: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    p_holm: np.ndarray
    alpha: float
    confidence: float
    n_resamples: int
    p_se: np.ndarray
    p_holm_se: np.ndarray
    seed: int | None = None
    dataset: str | None = None
    split: str | None = None
    sources: tuple[str | None, ...] = ()
    depths: tuple[int | None, ...] = ()
    n_differ: np.ndarray | None = field(default=None, repr=False)
    coverage: tuple[str, ...] = ()
    fingerprints: tuple[str | None, ...] = ()
    max_ranked: tuple[int | None, ...] = ()
    corpora: tuple[str | None, ...] = ()
    relevance_level: int | None = None
    ignore_identical_ids: bool | None = None
    source_resolved: tuple[str | None, ...] = ()
    source_sha256: tuple[str | None, ...] = ()
    data: str | None = None
    data_resolved: str | None = None
    date: str | None = None
    versions: dict[str, str] | None = None

    def _cuts(self) -> list[tuple[int | None, bool]]:
        """Each system's ``(rankings cut to, whether by --depth)``: its depth when known (a ranking shorter than it
        holds every document that matched), else its longest ranking (``(None, False)``: neither known)."""
        out: list[tuple[int | None, bool]] = []
        for i in range(len(self.systems)):
            depth = self.depths[i] if i < len(self.depths) else None
            ranked = self.max_ranked[i] if i < len(self.max_ranked) else None
            out.append((depth, True) if depth is not None else (ranked, False))
        return out

    @property
    def shallow(self) -> np.ndarray:
        """``(n_systems, n_metrics)`` bool: the system's pipeline cut its rankings shorter than the metric's
        cut-off (``recall@100`` of a ``--depth 10`` result counts 10 documents at most), so a difference on that
        metric measures that cut, not the system.  The cut is the ``--depth`` searched where known (rankings
        shorter than it because few documents match are not marked), else the longest ranking (``max_ranked``: a
        pipeline whose last step keeps 10, or one that found few documents)."""
        cut = np.array([parse_metric(m)[1] for m in self.metrics])
        depth = np.array([np.inf if d is None else d for d, _ in self._cuts()])
        return depth[:, None] < cut[None, :]

    def warnings(self) -> list[str]:
        """One sentence per metric whose cut-off is deeper than a system's rankings were cut (:attr:`shallow`;
        ``!`` in ``ragkit compare``'s table), worded by cause: the ``--depth`` searched (evaluate again deeper), or
        rankings shorter than the cut-off without a known depth (the pipeline's ``k``, or few documents matching);
        then one per TREC run file that shares under half of the queries it or the baseline ranks (``coverage``),
        then one when the results were evaluated on different corpora (:meth:`corpora_differ`)."""
        out = []
        shallow, cuts = self.shallow, self._cuts()
        for j, m in enumerate(self.metrics):
            if not shallow[:, j].any():
                continue
            cut = parse_metric(m)[1]
            marked = np.flatnonzero(shallow[:, j]).tolist()
            deep = [i for i in marked if cuts[i][1]]
            short = [i for i in marked if not cuts[i][1]]
            why = []
            if deep:
                who = ", ".join(f"{self.systems[i]} ranked at most {cuts[i][0]}" for i in deep)
                why.append(f"{who} documents per query, fewer than its cut-off of {cut}: its values "
                           f"count only those, so a difference on {m} measures the depth searched, not the system; "
                           f"evaluate every system with --depth {cut} or more to compare them on {m}")
            if short:
                who = ", ".join(f"{self.systems[i]} ranked at most {cuts[i][0]}" for i in short)
                why.append(f"{who} documents per query, fewer than its cut-off of {cut} (rankings shorter than the "
                           f"cut-off: the pipeline's k, or few documents matching), so a difference on {m} may "
                           f"measure how many documents each ranked, not how well; to rank more, raise the pipeline's "
                           f"k or evaluate with --depth {cut} (a ranking shorter than --depth holds every document "
                           f"that matched)")
            out.append(f"! {m}: " + "; ".join(why))
        differ = self.corpora_differ()
        return out + list(self.coverage) + ([differ] if differ else [])

    def corpora_differ(self) -> str:
        """A sentence naming the results whose corpus fingerprints (``corpora``, as ``ragkit eval -o`` records them)
        differ, grouped by corpus, or ``""`` (all alike, or fewer than two known: results of an older ragkit, TREC
        run files)."""
        groups: dict[str, list[str]] = {}
        for i, s in enumerate(self.systems):
            fp = self.corpora[i] if i < len(self.corpora) else None
            if fp is not None:
                src = self.sources[i] if i < len(self.sources) else None
                groups.setdefault(fp, []).append(src or s)
        if len(groups) < 2:
            return ""
        said = "; ".join(f"{' and '.join(names)} ({fp})" for fp, names in groups.items())
        return (f"the results were evaluated on different corpora: {said}; their differences measure the corpus "
                "as well as the system (the documents searched differ: another copy, version or subset of the "
                "dataset); compare results of the same corpus unless that is what is meant")

    def few_differ(self) -> list[str]:
        """One sentence per (system, metric) on which the system differs from the baseline on fewer than 10
        queries (``k of N queries``): the interval and the p-value rest on those few."""
        out: list[str] = []
        if self.n_differ is None:
            return out
        base = self.systems[self.baseline]
        for i, s in enumerate(self.systems):
            for j, m in enumerate(self.metrics):
                if i == self.baseline or not self.n_differ[i, j] < _FEW_DIFFER:
                    continue
                k = int(self.n_differ[i, j])
                out.append(f"{m}: {s} and {base} score {'the' if self.n_queries == 1 else 'all'} "
                           f"{_n_queries(self.n_queries)} alike" if k == 0 else
                           f"{m}: {s} and {base} differ on {k} of {_n_queries(self.n_queries)}: the interval and the "
                           f"p-value rest on {'that one' if k == 1 else f'those {k}'} (an exact sign-flip test of "
                           f"{k} difference{'' if k == 1 else 's'} gives no p-value below {2.0 ** (1 - k):.3g})")
        return out

    @property
    def significant(self) -> np.ndarray:
        """``(n_systems, n_metrics)`` bool: Holm-corrected p-value below ``alpha``."""
        return np.nan_to_num(self.p_holm, nan=1.0) < self.alpha

    @property
    def near_alpha(self) -> np.ndarray:
        """``(n_systems, n_metrics)`` bool: Holm-corrected p-value within two Monte Carlo standard errors
        of ``alpha`` (significant or not, the verdict is not settled by ``n_resamples`` sign flips)."""
        gap = np.abs(np.nan_to_num(self.p_holm, nan=np.inf) - self.alpha)
        return gap < 2 * np.nan_to_num(self.p_holm_se, nan=0.0)

    @property
    def marks(self) -> np.ndarray:
        """``(n_systems, n_metrics)`` str, the verdict for a table: ``"*"`` significant, ``"*?"`` significant
        but within two standard errors of ``alpha``, ``"?"`` not significant but as near, ``""`` otherwise."""
        sig, near = self.significant, self.near_alpha
        return np.where(sig, np.where(near, "*?", "*"), np.where(near, "?", ""))

    def note(self) -> str:
        """A sentence on the ``near_alpha`` verdicts and the resamples that would settle them, or ``""``."""
        near = self.near_alpha
        if not near.any():
            return ""
        gap = np.abs(self.p_holm - self.alpha)[near]
        # standard errors shrink as 1 / sqrt(n): the n at which every gap is 2 (of the new) standard errors
        need = float(np.max(self.n_resamples * (2 * self.p_holm_se[near] / np.maximum(gap, 1e-300)) ** 2))
        more = (f"at {'this p-value' if near.sum() == 1 else 'these p-values'}, about "
                f"{int(np.ceil(need * (1 - 1e-9) / 1000) * 1000):,} resamples would settle "
                f"{'it' if near.sum() == 1 else 'them'}" if need <= 10**7 else
                f"{'it lies' if near.sum() == 1 else 'they lie'} too near alpha for 10,000,000 resamples to settle")
        return (f"?: {int(near.sum())} Holm-corrected p-value{'' if near.sum() == 1 else 's'} within two Monte Carlo "
                f"standard errors of alpha {self.alpha:g} at {self.n_resamples:,} resamples, so another seed may give "
                f"the other verdict; {more}")

    def __repr__(self) -> str:
        n_tests = (len(self.systems) - 1) * len(self.metrics)
        of = "/".join(x for x in (self.dataset, self.split) if x)
        return (f"<Comparison of {len(self.systems)} systems ({', '.join(self.systems)}) on "
                f"{', '.join(self.metrics)} over {_n_queries(self.n_queries)}{f' of {of}' if of else ''}, baseline "
                f"{self.systems[self.baseline]}: {int(self.significant.sum())} of {n_tests} differences significant "
                f"(Holm, alpha {self.alpha:g}); print() it for the table>")

    def header(self) -> str:
        """The line above the table: what was scored (dataset / split, queries, datasets averaged), the
        baseline, the test and its correction, and what the marks mean."""
        n_tests = (len(self.systems) - 1) * len(self.metrics)
        where = (f"{_n_queries(self.n_queries)} of {self.n_datasets} datasets, each weighted equally (BEIR's mean; "
                 f"the bootstrap resamples within each)" if self.n_datasets > 1 else _n_queries(self.n_queries))
        of = " / ".join(x for x in (self.dataset, self.split) if x)
        return (f"{of + ': ' if of else ''}{where} · baseline {self.systems[self.baseline]} · paired randomisation "
                f"test ({self.n_resamples:,} sign flips), exact where at most {SIGN_FLIP_EXACT_MAX} queries differ, "
                f"Holm-corrected over {n_tests} comparison"
                f"{'' if n_tests == 1 else 's'} · * p (Holm) < {self.alpha:g} · ? within 2 Monte Carlo standard "
                "errors of it")

    def __str__(self) -> str:
        """The table ``ragkit compare`` prints (metric, system, mean, difference to the baseline with its
        interval, p and Holm's p with its mark), as plain text, with its header and notes."""
        lines = [self.header()]
        head = ["metric", "system", "mean", "Δ", f"{self.confidence:.0%} CI", "p", "p (Holm)"]
        rows: list[list[str] | None] = []
        shallow, marks = self.shallow, self.marks
        for j, m in enumerate(self.metrics):
            for i, s in enumerate(self.systems):
                cells = [(f"{m} !" if shallow[:, j].any() else m) if i == 0 else "", f"{s} !" if shallow[i, j] else s,
                         f"{self.means[i, j]:.4f}"]
                cells += ([f"{self.delta[i, j]:+.4f}", f"[{self.ci_low[i, j]:+.3f}, {self.ci_high[i, j]:+.3f}]",
                           format_p(self.p_value[i, j]), f"{format_p(self.p_holm[i, j])} {marks[i, j]}".rstrip()]
                          if i != self.baseline else [""] * 4)
                rows.append(cells)
            rows.append(None)  # a blank line between metrics
        width = [max(len(c) for c in col) for col in zip(head, *(r for r in rows if r is not None))]

        def line(cells: list[str]) -> str:
            # (names left, numbers right, Holm's p left: its mark follows it)
            return "  ".join(c.ljust(w) if k in (0, 1, 6) else c.rjust(w)
                             for k, (c, w) in enumerate(zip(cells, width))).rstrip()

        lines += ["", line(head), "  ".join("-" * w for w in width)]
        lines += [line(r) if r is not None else "" for r in rows[:-1]]
        note = self.note()
        lines += ([f"note: {note}"] if note else []) + [f"warning: {w}" for w in self.warnings()]
        lines += [f"note: {few}" for few in self.few_differ()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what was compared and how, enough to run the comparison again (``dataset``, ``split``,
        ``data`` and ``data_resolved`` (``--data`` as given and the folder it named; ``None``: not given),
        ``relevance_level`` and ``ignore_identical_ids`` (how the results were scored; ``None``: unknown),
        ``metrics``, ``n_resamples``, ``seed``, ``alpha``, ``confidence``, ``date`` (when it ran: ISO 8601 with the
        time zone's offset), ``versions`` (ragkit's, its git commit in a checkout, Python's and its libraries':
        :func:`~ragkit.eval.provenance.versions`, read when :func:`compare` ran), each system's ``source``
        file as given, ``depth`` (``--depth``, ``None``: not given or unknown), and where known ``source_resolved``
        (its absolute path), ``sha256`` (of its bytes as read), ``max_ranked`` (the most documents it ranked for
        one query), ``qrels_fingerprint`` and ``corpus_fingerprint``) and one record per (system, metric)."""
        rows = []
        shallow = self.shallow
        for i, s in enumerate(self.systems):
            for j, m in enumerate(self.metrics):
                rec: dict[str, Any] = {"system": s, "metric": m, "mean": float(self.means[i, j])}
                if i != self.baseline:
                    rec.update(delta=float(self.delta[i, j]), ci=[float(self.ci_low[i, j]), float(self.ci_high[i, j])],
                               p_value=float(self.p_value[i, j]), p_se=float(self.p_se[i, j]),
                               p_holm=float(self.p_holm[i, j]), p_holm_se=float(self.p_holm_se[i, j]),
                               significant=bool(self.significant[i, j]), near_alpha=bool(self.near_alpha[i, j]))
                    if self.n_differ is not None:
                        rec["n_differ"] = int(self.n_differ[i, j])
                if shallow[i, j]:
                    rec["shallow"] = True  # ranked fewer documents than the metric's cut-off
                rows.append(rec)
        note = self.note()
        known = {"source_resolved": self.source_resolved, "sha256": self.source_sha256, "max_ranked": self.max_ranked,
                 "qrels_fingerprint": self.fingerprints, "corpus_fingerprint": self.corpora}  # (where not None)
        systems = [{"name": s, "source": _nth(self.sources, i), "depth": _nth(self.depths, i),
                    **{key: v for key, seq in known.items() if (v := _nth(seq, i)) is not None}}
                   for i, s in enumerate(self.systems)]
        warnings, few = self.warnings(), self.few_differ()
        return {"dataset": self.dataset, "split": self.split, "data": self.data, "data_resolved": self.data_resolved,
                "relevance_level": self.relevance_level, "ignore_identical_ids": self.ignore_identical_ids,
                "metrics": list(self.metrics), "systems": systems,
                "baseline": self.systems[self.baseline], "n_queries": self.n_queries, "n_datasets": self.n_datasets,
                "mean": "each dataset weighted equally" if self.n_datasets > 1 else "over queries", "alpha": self.alpha,
                "confidence": self.confidence, "n_resamples": self.n_resamples, "seed": self.seed,
                "test": "paired randomisation (sign flip), two-sided, Holm-corrected",
                "p_se": f"Monte Carlo standard error, sqrt(p (1 - p) / n_resamples), 0 where p is exact (at most "
                        f"{SIGN_FLIP_EXACT_MAX} queries differ: all sign patterns counted); near_alpha: p_holm "
                        "within two of alpha", **({"note": note} if note else {}),
                **({"warnings": warnings} if warnings else {}),
                **({"few_differ": few} if few else {}), "date": self.date, "versions": self.versions, "rows": rows}


def _nth(seq: Sequence[Any], i: int) -> Any:
    """``seq[i]``, or None past its end (a per-system tuple left empty: not known)."""
    return seq[i] if i < len(seq) else None


def format_p(p: float) -> str:
    """A p-value for a table, to 4 decimals; one below 0.0001 as ``"<0.0001"`` (the smallest Monte Carlo p-value,
    ``1 / (n_resamples + 1)``, printed as 0.0000 at 200,000 resamples: a p-value is never 0)."""
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


def _baseline_index(results: Sequence[SystemResult], baseline: int | str) -> int:
    """``baseline`` as an index into ``results``: a name is looked up among the systems' names."""
    if not isinstance(baseline, str):
        return baseline
    names = [r.name for r in results]
    if baseline not in names:
        close = difflib.get_close_matches(baseline, names, n=1)
        raise ParamError(f"compare: baseline {baseline!r} is not one of the systems ({', '.join(map(repr, names))})"
                         + (f"; did you mean {close[0]!r}?" if close else ""))
    return names.index(baseline)


def _check_args(results: Sequence[SystemResult], metrics: Sequence[str], baseline: int, n_resamples: int,
                alpha: float, confidence: float) -> None:
    if len(results) < 2:
        raise ParamError(f"compare: needs at least two results, got {len(results)}")
    names = [r.name for r in results]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ParamError(f"compare: {', '.join(twice)} given twice; name each system once")
    if isinstance(baseline, bool) or not isinstance(baseline, (int, np.integer)) or not 0 <= baseline < len(results):
        raise ParamError(f"compare: baseline must be the index of one of the {len(results)} results or a system's "
                         f"name, got {baseline!r}")
    if isinstance(metrics, str) or not metrics:
        raise ParamError(f"compare: metrics must be a non-empty list of names such as ['ndcg@10'], got {metrics!r}")
    parsed = parse_metrics(metrics)  # every name it cannot read, in one message
    repeated = _named_twice(metrics, parsed)
    if repeated:  # the same comparison twice in one table: Holm would count it twice
        raise ParamError(f"compare: metrics {_twice_said(repeated)}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or not 1 <= n_resamples <= 10**7:
        raise ParamError(f"compare: n_resamples must be an integer in [1, 10,000,000], got {n_resamples!r}")
    for label, v in (("alpha", alpha), ("confidence", confidence)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1:
            raise ParamError(f"compare: {label} must be a number in (0, 1), got {v!r}")
    for key in ("dataset", "split"):  # a list of datasets in any order is the same datasets
        seen = {",".join(sorted(str(getattr(r, key)).split(","))) for r in results if getattr(r, key) is not None}
        if len(seen) > 1:
            which = ", ".join(f"{r.name}: {getattr(r, key)!r}" for r in results if getattr(r, key) is not None)
            if key == "dataset" and _same_data(results):  # one dataset in folders of other names (a copy)
                logging.getLogger("ragkit").info(
                    "compare: the results name different datasets (%s), but record the same qrels and corpus "
                    "fingerprints: compared as one dataset", which)
                continue
            raise DataError(f"compare: the results are of different {key}s ({which}); compare results of one {key}")
    for key, fix, py in (("relevance_level", "--relevance-level N", "relevance_level=N"),
                         ("ignore_identical_ids", "--keep-identical-ids or not", "ignore_identical_ids=True or False")):
        known = [r for r in results if getattr(r, key) is not None]
        if len({getattr(r, key) for r in known}) > 1:  # the same run scored twice would differ "significantly"
            which = ", ".join(f"{r.name}: {key}={getattr(r, key)!r}" for r in known)
            raise DataError(f"compare: the results were scored with different {key} ({which}), so their per-query "
                            f"values differ by how they were scored, not only by system; score them alike (ragkit eval "
                            f"{fix}; for TREC run files, ragkit compare {fix}; in Python, evaluate(run, qrels, "
                            f"metrics, {py}))")


def _same_data(results: Sequence[SystemResult]) -> bool:
    """Whether every one of ``results`` records a qrels fingerprint of the queries it scored
    (:func:`scored_qrels_fingerprint`) and a corpus fingerprint, and each is the same for all: one dataset's
    judgements and documents, whatever the folders it was read from were named."""
    qrels = {r.qrels_fingerprint for r in results}
    corpora = {r.corpus_fingerprint for r in results}
    first = results[0].qrels_fingerprint
    return (len(qrels) == 1 == len(corpora) and first is not None and None not in corpora
            and _fingerprint_kind(first) == SCORED_FINGERPRINT_KIND)


def _unchecked_why(r: SystemResult) -> str:
    """Why ``r``'s judgements cannot be checked against the other results', by what it was read from: the end of
    a sentence whose subject is ``r`` (``"records no qrels fingerprint (...)"``)."""
    if r.qrels_fingerprint is not None:  # the older "sha256:" of the whole split (before --limit)
        kind = _fingerprint_kind(r.qrels_fingerprint)
        return (f"records a fingerprint of its whole split ({kind}: a 'ragkit eval -o' file of an older ragkit), not "
                "of the queries it scored")
    if r.source is None:
        return ("records no qrels fingerprint (a result built in Python: an EvalResult made by hand or by an older "
                "ragkit's evaluate(), or a SystemResult given no qrels_fingerprint=scored_qrels_fingerprint(qrels, "
                "queries))")
    return "records no qrels fingerprint (a 'ragkit eval -o' file written before it was recorded)"


def _unchecked_said(results: Sequence[SystemResult]) -> str:
    """Why each of ``results`` cannot be checked, the results of one reason said together: ``"py records no
    qrels fingerprint (...)"``, ``"each of a.json and b.json records no qrels fingerprint (...)"``."""
    groups: dict[str, list[str]] = {}
    for r in results:
        groups.setdefault(_unchecked_why(r), []).append(r.source or r.name)
    return "; ".join(f"{names[0]} {why}" if len(names) == 1 else
                     f"each of {', '.join(names[:-1])} and {names[-1]} {why}" for why, names in groups.items())


def _check_fingerprints(results: Sequence[SystemResult]) -> None:
    """Refuse results whose judgements differ (:func:`scored_qrels_fingerprint`, compared within each kind of
    fingerprint, after the queries were checked alike); warn (``ragkit`` logger, WARNING: a Python caller sees it
    without configuring logging) of the results that could not be checked against those that record one: those
    of no fingerprint of the kind most of them record (none when none records one)."""
    kinds: dict[str, list[SystemResult]] = {}
    for r in results:
        if r.qrels_fingerprint is not None:
            kinds.setdefault(_fingerprint_kind(r.qrels_fingerprint), []).append(r)
    for known in kinds.values():
        other = next((r for r in known[1:] if r.qrels_fingerprint != known[0].qrels_fingerprint), None)
        if other is not None:  # the same dataset name and split, other judgements: a copy with other grades
            a, b = known[0], other

            def said(r: SystemResult) -> str:
                return f"{r.source or r.name} ({r.qrels_fingerprint})"

            raise DataError(f"compare: {said(a)} and {said(b)} were scored against different qrels: their judgements "
                            "differ (another copy or version of the dataset, or of its qrels file) though the dataset "
                            "and split may be named alike, so their per-query values differ by judgements, not only "
                            "by system; score every result against the same qrels (ragkit eval --data, and for TREC "
                            "run files ragkit compare --data, of one folder; in Python, evaluate(run, qrels) with the "
                            "same qrels)")
    if not kinds:  # (none to check the others against: files of an older ragkit eval, SystemResults built by hand)
        return
    main = kinds.get(SCORED_FINGERPRINT_KIND) or max(kinds.values(), key=len)
    unchecked = [r for r in results if not any(r is m for m in main)]
    if unchecked:  # an older ragkit eval's file, or a result built in Python: nothing to check it with
        logging.getLogger("ragkit").warning(
            "compare: %s; so whether %s scored against the same judgements as %s could not be checked",
            _unchecked_said(unchecked), "it was" if len(unchecked) == 1 else "they were",
            ", ".join(r.source or r.name for r in main))


def _check_held(results: Sequence[SystemResult], metrics: Sequence[str], m: str) -> None:
    """Refuse ``m`` (one of ``metrics``) when some result holds no per-query values of it, naming the metrics
    every result holds (what ``-m`` can name): files of ``ragkit eval --k 5,10`` hold no ``recall@100``, one of
    the defaults."""
    def held(r: SystemResult) -> dict[tuple[str, int], str]:  # parsed metric -> its name in r
        out: dict[tuple[str, int], str] = {}
        for name in r.per_query:
            try:
                out.setdefault(parse_metric(name), name)
            except DataError:  # a key that is no metric name
                continue
        return out

    have = [held(r) for r in results]
    want = parse_metric(m)
    lacking = [r for r, h in zip(results, have) if want not in h]
    if lacking:
        shared = [name for pm, name in have[0].items() if all(pm in h for h in have[1:])]
        default = [parse_metric(d) for d in DEFAULT_COMPARE_METRICS] == [parse_metric(x) for x in metrics]
        r = lacking[0]
        others = (f" (nor {'does' if len(lacking) == 2 else 'do'} {', '.join(x.name for x in lacking[1:])})"
                  if len(lacking) > 1 else "")
        why = (f"{m} is one of the metrics compared when none are named ({', '.join(DEFAULT_COMPARE_METRICS)}); "
               if default else "")
        fix = (f"name metrics every result holds with -m/--metrics (compare(..., metrics=[...]) in Python): "
               f"they share {', '.join(shared)}" if shared else
               "the results share no metric: score them on the same metrics (ragkit eval --k / --metrics)")
        raise DataError(f"compare: {r.name}: holds no per-query values of {m!r}{others}; it holds "
                        f"{', '.join(r.per_query) or 'none'}; {why}{fix}")


def _only(ids: set[str], where: str) -> str:
    """``"N only in <where>"``, with examples when there are any."""
    return f"{len(ids)} only in {where}" + (f", e.g. {some_ids(sorted(ids))}" if ids else "")


def _same_queries(results: Sequence[SystemResult], metric: str) -> list[str]:
    """The query ids every result scored on ``metric`` (the first's order); refused if they differ."""
    first = results[0].values(metric)
    for r in results[1:]:
        other = r.values(metric)
        if other.keys() != first.keys():
            only_a, only_b = first.keys() - other.keys(), other.keys() - first.keys()
            raise DataError(
                f"compare: {results[0].name} and {r.name} scored {metric} on different queries ({len(first)} and "
                f"{len(other)}; {_only(only_a, 'the first')}; {_only(only_b, 'the second')}); compare runs of the "
                "same split, without --limit or with the same one")
    if not first:
        raise DataError(f"compare: {results[0].name} holds no query for {metric}")
    return list(first)


def _strata(results: Sequence[SystemResult], queries: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """``(strata, weights)`` of ``queries``: one index array per dataset and each query's weight
    ``1 / (n_datasets * n_queries_of_its_dataset)`` (one dataset: ``1 / n``).  Results of one
    dataset and of several cannot be compared."""
    first = results[0].groups
    for r in results[1:]:
        if (r.groups is None) != (first is None) or dict(r.groups or {}) != dict(first or {}):
            def kind(x: SystemResult) -> str:
                return f"{len(set(x.groups.values()))} datasets" if x.groups else "one dataset"

            raise DataError(f"compare: {results[0].name} holds results of {kind(results[0])}, {r.name} of {kind(r)}; "
                            "compare results of the same datasets")
    if first is None:
        return [np.arange(len(queries))], np.full(len(queries), 1.0 / len(queries))
    _, label = np.unique([first[q] for q in queries], return_inverse=True)
    strata = [np.flatnonzero(label == g) for g in range(label.max() + 1)]
    size = np.bincount(label)
    return strata, 1.0 / (len(strata) * size[label])


def _as_results(results: Any) -> list[SystemResult]:
    """``results`` as a list of :class:`SystemResult`: a sequence of them, or a mapping ``{name: SystemResult or
    EvalResult}`` (each named by its key, an :class:`~ragkit.eval.EvalResult` taken with its per-query values);
    anything else is an :class:`InputTypeError` saying how to build what :func:`compare` reads."""
    from ragkit.eval.metrics import EvalResult

    how = ("give {name: EvalResult}, e.g. compare({'bm25': evaluate(run1, qrels), 'hybrid': evaluate(run2, qrels)}), "
           "or SystemResult(name, ev.per_query) for each, or load_result(path) of a 'ragkit eval -o' file")
    if isinstance(results, Mapping):
        out = []
        for key, r in results.items():
            if not isinstance(key, str):
                raise InputTypeError(f"compare: results[{key!r}]: a system's name must be a string, got "
                                     f"{type(key).__name__}; {how}")
            if isinstance(r, EvalResult):  # with how and against what it was scored, checked as a JSON file's
                out.append(SystemResult(key, r.per_query, relevance_level=r.relevance_level,
                                        ignore_identical_ids=r.ignore_identical_ids,
                                        qrels_fingerprint=r.qrels_fingerprint))
            elif isinstance(r, SystemResult):
                out.append(r if r.name == key else replace(r, name=key))
            else:
                raise InputTypeError(f"compare: results[{key!r}] is {type(r).__name__}, expected an EvalResult (what "
                                     f"evaluate returns) or a SystemResult; {how}")
        return out
    if isinstance(results, (str, bytes, Path)) or not isinstance(results, Sequence):
        raise InputTypeError(f"compare: results must be two or more SystemResults or a mapping {{name: EvalResult}}, "
                             f"got {type(results).__name__}; {how}")
    for i, r in enumerate(results):
        if isinstance(r, SystemResult):
            continue
        if isinstance(r, EvalResult):
            raise InputTypeError(f"compare: results[{i}] is an EvalResult, which holds no system name; name each "
                                 f"system: {how}")
        if isinstance(r, (str, Path)):
            raise InputTypeError(f"compare: results[{i}] is the path {str(r)!r}; read it first with "
                                 f"load_result({str(r)!r}) (a TREC run file also needs qrels=...)")
        raise InputTypeError(f"compare: results[{i}] is {type(r).__name__}, expected a SystemResult; {how}")
    return list(results)


def compare(results: Sequence[SystemResult] | Mapping[str, Any], metrics: Sequence[str] = DEFAULT_COMPARE_METRICS,
            *, baseline: int | str = 0, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, alpha: float = 0.05,
            confidence: float = 0.95) -> Comparison:
    """Compare every system with ``results[baseline]`` on each metric, over the same queries.

    Parameters
    ----------
    results : two or more :class:`SystemResult` (e.g. from :func:`load_result`), or a mapping
        ``{name: EvalResult}`` (what :func:`~ragkit.eval.evaluate` returns, each named by its key and checked
        like a JSON file for the ``relevance_level`` and ``ignore_identical_ids`` it was scored with and the
        judgements it was scored against, its ``qrels_fingerprint``; the
        mapping's order gives the indices ``baseline`` counts; a :class:`SystemResult` there takes the key as
        its name).  An :class:`~ragkit.eval.EvalResult` alone names no system: a list of them is an
        :class:`~ragkit.errors.InputTypeError` saying so
    metrics : metric names (``ndcg@10``, ``recall@100``, ...); each result must hold them (one a result lacks,
        e.g. the default ``recall@100`` in results of ``ragkit eval --k 5,10``, is a :class:`DataError` naming
        the metrics every result holds, to name instead: ``ragkit compare -m``)
    baseline : the reference system: its index in ``results``, or its name (``baseline="bm25"``)
    n_resamples : sign flips of the randomisation test and bootstrap resamples of the interval
        (default 200,000: a p-value near 0.05 has a Monte Carlo standard error of 0.0005; where a system
        differs from the baseline on at most 20 queries, the p-value is exact and takes no sign flips)
    seed : seeds both (the same call gives the same numbers)
    alpha : significance level applied to the Holm-corrected p-values
    confidence : level of the bootstrap interval of each difference

    Everything is checked (names unique, same dataset and split, scored with the same relevance_level
    and ignore_identical_ids, every metric held by every result, the same queries) before any
    resampling.  Every (system, metric) pair of the metrics scored on the same queries shares one draw of
    random signs and of bootstrap indices (each pair gets the numbers it would alone, e.g. the p-value of
    :func:`~ragkit.eval.metrics.paired_randomization_test` with ``seed`` and the same ``n_resamples``: its
    default is 10,000, this one's 200,000), each vectorised over queries and
    resamples: 3 systems x 4 metrics on SciFact's 300 queries take ~0.4 s at 200,000 (5,000 queries: ~5 s).
    """
    from ragkit.eval.provenance import timestamp, versions

    results = _as_results(results)
    baseline = _baseline_index(results, baseline)
    _check_args(results, metrics, baseline, n_resamples, alpha, confidence)
    queries: dict[str, list[str]] = {}
    for m in metrics:  # each held by every result (else: the metrics they share), then on the same queries
        _check_held(results, metrics, m)
        queries[m] = _same_queries(results, m)
    _check_fingerprints(results)  # (after the queries: other queries are said as such, not as other judgements)
    for m in metrics:  # before any resampling, naming the system (the test would name neither)
        for r in results:
            _check_finite(r.values(m), f"compare: {r.name}: {m}")
    shape = (len(results), len(metrics))
    means, delta, lo, hi, p, n_differ = (np.full(shape, np.nan) for _ in range(6))
    n_sets = 1
    together: dict[tuple[str, ...], list[int]] = {}  # metrics scored on the same queries: one draw for all
    for j, m in enumerate(metrics):
        together.setdefault(tuple(queries[m]), []).append(j)
    others = [i for i in range(len(results)) if i != baseline]
    for qs, js in together.items():
        strata, w = _strata(results, list(qs))
        n_sets = len(strata)
        vals = np.stack([[np.fromiter(map(r.values(metrics[j]).__getitem__, qs), np.float64, len(qs)) for j in js]
                         for r in results])  # (n_systems, len(js), n_queries)
        means[:, js] = [[_mean_as_evaluated(r, metrics[j]) for j in js] for r in results]
        diff = (vals[others] - vals[baseline]).reshape(-1, len(qs)).T  # (n_queries, pairs): system-major pairs
        delta[np.ix_(others, js)] = (w @ diff).reshape(len(others), len(js))
        n_differ[np.ix_(others, js)] = np.count_nonzero(diff, axis=0).reshape(len(others), len(js))
        tested = diff if n_sets == 1 else diff * (w * (len(w) / w.sum()))[:, None]  # the weighted mean's statistic
        order = sorted(range(len(qs)), key=qs.__getitem__)  # paired_randomization_test's query order
        p[np.ix_(others, js)] = sign_flip_pvalues(tested[order], n_resamples=n_resamples, seed=seed).reshape(
            len(others), len(js))
        low, high = _bootstrap_ci(diff, strata, confidence, n_resamples, seed)
        lo[np.ix_(others, js)], hi[np.ix_(others, js)] = (x.reshape(len(others), len(js)) for x in (low, high))
    n_q = len(queries[metrics[0]])
    p_se = np.where(n_differ <= SIGN_FLIP_EXACT_MAX, 0.0, np.sqrt(p * (1 - p) / n_resamples))  # exact: no error
    known = {key: next((getattr(r, key) for r in results if getattr(r, key) is not None), None)
             for key in ("dataset", "split", "relevance_level", "ignore_identical_ids")}  # (checked alike above)
    return Comparison([r.name for r in results], list(metrics), int(baseline), n_q, n_sets, means, delta, lo, hi, p,
                      holm(p), alpha, confidence, n_resamples, p_se, _holm_se(p, p_se), seed=int(seed),
                      dataset=known["dataset"], split=known["split"], sources=tuple(r.source for r in results),
                      depths=tuple(r.depth for r in results), max_ranked=tuple(r.max_ranked for r in results),
                      n_differ=n_differ,
                      coverage=_coverage(results, baseline),
                      fingerprints=tuple(r.qrels_fingerprint for r in results),
                      corpora=tuple(r.corpus_fingerprint for r in results),
                      relevance_level=known["relevance_level"], ignore_identical_ids=known["ignore_identical_ids"],
                      source_resolved=tuple(r.source_resolved for r in results),
                      source_sha256=tuple(r.source_sha256 for r in results),
                      date=timestamp(), versions=versions())


def _mean_as_evaluated(r: SystemResult, metric: str) -> float:
    """``r``'s mean of ``metric`` computed as :func:`~ragkit.eval.evaluate` and ``ragkit eval`` compute theirs, so
    that the two agree to the last digit: ``np.mean`` of its per-query values in their own order (one dataset), or
    (``groups``: several datasets) the plain sum of each dataset's ``np.mean``, in the order the datasets come,
    divided by their number (``ragkit eval``'s mean over the datasets of an archive)."""
    vals = r.values(metric)
    arr = np.fromiter(vals.values(), np.float64, len(vals))
    if r.groups is None:
        return float(np.mean(arr))
    _, first, label = np.unique(np.array(list(map(r.groups.__getitem__, vals))), return_index=True,
                                return_inverse=True)
    per_set = [float(np.mean(arr[label == g])) for g in np.argsort(first, kind="stable")]  # in the datasets' order
    return sum(per_set) / len(per_set)


def _coverage(results: Sequence[SystemResult], baseline: int) -> tuple[str, ...]:
    """One sentence per system that ranks documents for fewer than half of the queries it and the baseline rank
    together (``ranked_queries``, known for TREC run files): the queries only one of them ranks score 0 for the
    other (trec_eval's ``-c``), so its difference measures which queries were searched, not how well.  (A
    ``ragkit eval --limit`` JSON file is scored on its queries only, and refused when they are not the others'.)"""
    base = results[baseline]
    out = []
    for r in results:
        if r is base or r.ranked_queries is None or base.ranked_queries is None:
            continue
        both, either = len(r.ranked_queries & base.ranked_queries), len(r.ranked_queries | base.ranked_queries)
        if either and 2 * both < either:
            out.append(f"{r.name} and {base.name} both rank documents for only {both} of the {either} queries either "
                       f"ranks ({len(r.ranked_queries)} and {len(base.ranked_queries)}); every query one of them "
                       "does not rank scores 0 for it (trec_eval -c), so the differences measure which queries each "
                       "run searched, not how well; compare runs of the same queries (a run written with --limit "
                       "against one of every query: write both with the same --limit, or neither)")
    return tuple(out)
