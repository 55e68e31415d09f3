"""``--pipeline`` / ``--index``: resolving a YAML file, saved folder or operator name into a pipeline, the
checks and notes on what it holds, and the file and line of errors raised after its load."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from ragkit.cli._console import _note
from ragkit.errors import RagkitError


def _path_like(spec: str) -> bool:
    """Whether ``spec`` reads as a path (a separator or a suffix), not as an operator's name such as ``bm25``."""
    return any(c in spec for c in "/\\") or bool(Path(spec).suffix)


def no_such_pipeline(spec: str, shown: str, what: str) -> RagkitError:
    """The error for a pipeline path ``spec`` that does not exist, said as ``shown: what (expected ...)``.  A
    relative ``examples/...`` path (the help's and the README's examples) where this folder has no ``examples/``
    adds that the folder comes with the source repository: an installed wheel has no ``examples/``."""
    parts = Path(spec).parts
    hint = ("; examples/ is a folder of ragkit's source repository, not of the installed package: run from the "
            "repository's root, or copy the file" if parts[:1] == ("examples",) and not Path(parts[0]).is_dir()
            else "")
    return RagkitError(f"{shown}: {what} (expected a pipeline YAML file, a folder written by Pipeline.save / "
                       f"Operator.save, or an operator name such as bm25){hint}")


def resolve_pipeline(spec: str):
    """``(pipeline, fitted)`` from a YAML file, a saved folder or a registered operator name.

    A saved folder is one written by ``Pipeline.save`` (``manifest.json``) or by
    ``Operator.save`` (``params.json``; loaded as a one-operator pipeline).
    """
    from ragkit import registry
    from ragkit.pipelines import Pipeline

    path = Path(spec)
    if path.is_dir():
        return _load_folder(path)
    if path.is_file():
        return Pipeline.from_yaml(path), False
    if path.suffix in (".yaml", ".yml") and not path.exists():  # (not YAML text: refused below as a path)
        raise no_such_pipeline(spec, f"--pipeline {spec}", "no such file")
    if path.suffix in (".yaml", ".yml"):
        return Pipeline.from_yaml(path), False
    if _is_yaml_text(spec):
        return Pipeline.from_yaml(spec), False
    if _path_like(spec):  # a path, not an operator name: it does not exist
        raise no_such_pipeline(spec, f"--pipeline {spec}", "no such file or folder")
    if spec.lower() in registry.structural_keys():
        raise RagkitError(f"--pipeline {spec!r}: a structural key of pipeline YAML, not an operator; write the "
                          f"pipeline in a YAML file (e.g. '- {spec.lower()}: {{...}}') and pass its path")
    return Pipeline([registry.get(spec, path="--pipeline")()]), False


#: A message that starts with a path inside a pipeline's YAML (``pipeline[0].parallel.branches[1].bm25.filter: ``)
_YAML_PATH = re.compile(r"pipeline\[\d+\][^\s:]*: ")


def _in_file(e: RagkitError, spec: str) -> RagkitError:
    """``e``, raised after the pipeline ``--pipeline spec`` was loaded (by its fit, by a search), with the name
    of the YAML file ``spec`` and the line of the path its message starts with, as its load's errors read:
    ``p.yaml: line 5: pipeline[0].parallel.branches[1].bm25.filter: field 'year' ...``.  Unchanged when
    ``spec`` is no YAML file (a saved folder, an operator name, YAML text), when the message starts with no
    YAML path, or when the file no longer parses (it is read again, now)."""
    import yaml

    from ragkit.pipelines.yaml import _with_lines

    message = str(e)
    if not _YAML_PATH.match(message):
        return e
    try:
        if not Path(spec).is_file():
            return e
        root = yaml.compose(Path(spec).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, ValueError, yaml.YAMLError):
        return e
    lined = _with_lines(message, root) if root is not None else message
    e.args = (f"{spec}: {lined}" if "\n" not in lined else f"{spec}:\n{lined}", *e.args[1:])
    return e


def _cli_advice(e: Exception, option: str, use: Any = None) -> Exception:
    """``e``, an error of :meth:`Operator.load` (``saved/ops/00-bm25: one step of ...``), with its advice for a Python
    caller (``load that folder with Pipeline.load('/x/saved')``) said for the command line from the pipeline's folder
    the error carries (:class:`~ragkit.operator._StepFolderError`): ``--index saved/ops/00-bm25: ...: give the
    pipeline's folder: --index /x/saved`` (``use(folder)``: another wording, ``ragkit validate /x/saved``, the
    message left starting with the path).  Unchanged when it is no such error."""
    from ragkit._files import shell_quote
    from ragkit.operator import _StepFolderError

    message = str(e)
    if not isinstance(e, _StepFolderError) or not message.endswith(e.python_advice):
        return e
    folder = shell_quote(str(e.pipeline_folder))
    said = use(folder) if use is not None else f"{option} {folder}"
    text = f"{message.removesuffix(e.python_advice)}give the pipeline's folder: {said}"
    e.args = (f"{option} {text}" if use is None else text, *e.args[1:])
    return e


def _load_folder(path: Path, option: str = "--pipeline", use: Any = None):
    """``(pipeline, fitted)`` from a folder written by ``Pipeline.save`` or ``Operator.save``; a step's folder of a
    saved pipeline is refused with the pipeline's folder given as ``option`` (or as ``use(folder)`` says:
    :func:`_cli_advice`)."""
    from ragkit.errors import ArtifactError
    from ragkit.operator import Operator
    from ragkit.pipelines import Pipeline

    if (path / "manifest.json").is_file() or (path / "params.json").is_file():
        try:
            op = Operator.load(path)  # a pipeline folder loads as a Pipeline
        except ArtifactError as e:
            raise _cli_advice(e, option, use) from None
        pipe = op if isinstance(op, Pipeline) else Pipeline([op])
        if hasattr(op, "corpus_"):
            pipe.corpus_ = op.corpus_
        return pipe, hasattr(pipe, "corpus_")
    others = ", a pipeline YAML file or an operator name such as bm25" if option == "--pipeline" else ""
    raise RagkitError(f"{option} {path}: a folder, but neither a saved pipeline (no manifest.json) nor a saved "
                      f"operator (no params.json); expected a folder written by Pipeline.save or Operator.save{others}")


def _check_retrieves(pipe: Any, option: str) -> None:
    """Refuse, before any fit (a reranker's encodes the corpus, a generator's loads an LLM), a pipeline
    that would rank nothing: no retriever in it, or a generate step first."""
    from ragkit.pipelines._compose import iter_leaves

    leaves = list(iter_leaves(pipe))
    if not any(leaf.kind == "retriever" for leaf in leaves):
        names = ", ".join(sorted({leaf.name or type(leaf).__name__.lower() for leaf in leaves}))
        raise RagkitError(f"{option}: the pipeline has no retriever (its operators: {names}), so no query would get "
                          "a document; start it with one, e.g. bm25 or dense")
    _without_generation(pipe, option, note=False)


def _note_unlearned(pipe: Any) -> None:
    """Say on stderr which operators fit differently without training queries (no --train-split): ``learn:
    true`` ones fit with the parameters as given, learning nothing, and those that read the training queries
    themselves (:attr:`Operator.uses_training_queries` without learning: ``dbnorm``'s query bank) fit with
    pseudo-queries drawn from the corpus instead.  One that cannot fit without judged queries (a
    ``score_router`` with no threshold) is left to the fit's error."""
    from ragkit.pipelines.yaml import walk_leaves

    idle: list[str] = []
    banks: dict[str, Any] = {}
    for path, leaf in walk_leaves(pipe):
        if leaf.train_refusal() is not None:
            continue
        if getattr(leaf.params, "learn", False):
            idle.append(path)
        elif leaf.uses_training_queries:
            banks[path] = leaf
    if idle:
        one = len(idle) == 1
        _note(f"note: {', '.join(idle)} {'learns' if one else 'learn'} from judged queries; without "
              f"--train-split {'it fits' if one else 'they fit'} with the parameters as given, learning nothing")
    if banks:
        one = len(banks) == 1
        pseudo = all(getattr(leaf.params, "query_bank", None) == "train" for leaf in banks.values())
        instead = ("with pseudo-queries (sentences drawn from the corpus) as the query bank instead" if pseudo else
                   "without them")
        _note(f"note: {', '.join(banks)} {'reads' if one else 'read'} the training queries themselves; without "
              f"--train-split {'it fits' if one else 'they fit'} {instead}, which scores differently; pass "
              f"--train-split train to give {'it' if one else 'them'} the queries"
              + (" (or set query_bank: pseudo to choose pseudo-queries)" if pseudo else ""))


def _uses_training(pipe: Any) -> bool:
    """Whether fitting ``pipe`` with training queries differs from fitting it without
    (:attr:`Operator.uses_training_queries` of any of its operators)."""
    from ragkit.pipelines._compose import iter_leaves

    return any(leaf.uses_training_queries for leaf in iter_leaves(pipe))


def _note_nothing_learns(option: str, so: str) -> None:
    """Say on stderr that no operator of the pipeline learns from training queries, and ``so`` what
    follows (``--train-split train changes nothing``)."""
    _note(f"note: {option}: no operator learns from training queries (dense or muvera adapt, learn: true, "
          f"cosine_adapter and dbnorm do), so {so}")


def _is_yaml_text(spec: str) -> bool:
    """Whether a ``--pipeline`` / ``validate`` argument is YAML text rather than a path or a name."""
    return "\n" in spec or spec.strip().startswith("pipeline:")


def _fewer_found(pipe: Any) -> list[str]:
    """Why ``pipe`` may return fewer documents than its ``k``, one clause per kind of step it holds: BM25
    (only documents sharing a term with the query), a filter step, a retriever's metadata filter.  A dense
    pipeline was told "BM25 returns only ...", and nothing of its filter."""
    from ragkit.pipelines._compose import iter_leaves
    from ragkit.retrievers import BM25

    leaves = list(iter_leaves(pipe))
    return [why for why, held in (
        ("BM25 returns only documents sharing a term with the query", any(isinstance(s, BM25) for s in leaves)),
        ("a filter step returns only those that pass it", any(s.kind == "filter" for s in leaves)),
        ("a metadata filter returns only documents that match it",
         any(s.kind == "retriever" and getattr(getattr(s, "params", None), "filter", None) is not None
             for s in leaves))) if held]


def _short_ks(pipe: Any, depth: int, searched_at: Optional[int] = None) -> list[str]:
    """The steps of ``pipe`` whose own cut-off is below ``depth`` (``"pipeline[0].bm25 k=50"``): the ``k`` of
    retrievers, rerankers and filters, a fuser's ``top_k`` (a fuser's ``k`` is RRF's constant and a judge's its
    own depth, neither a cut).  ``searched_at``: the run-time ``k`` the search was given, which raises every
    such cut-off to it (:func:`ragkit.options.resolve_k`): none is short when it reaches ``depth``."""
    from ragkit.pipelines.yaml import walk_leaves

    if searched_at is not None and searched_at >= depth:
        return []
    out = []
    for path, leaf in walk_leaves(pipe):
        field = "top_k" if leaf.kind == "fuser" else "k" if leaf.kind in ("retriever", "reranker", "filter") else None
        k = getattr(getattr(leaf, "params", None), field, None) if field else None
        if isinstance(k, int) and max(k, searched_at or 0) < depth:  # (said as raised: what cut the lists)
            out.append(f"{path} {field}={max(k, searched_at or 0)}")
    return out


def _without_generation(pipe: Any, option: str, note: bool = True) -> Any:
    """``pipe`` up to its first ``generate`` step: ``ragkit search`` shows documents and ``ragkit eval``
    / ``train`` score rankings, so they do not run a language model on every query for answers they
    would not print (``ragkit ask`` answers).  ``option`` names the pipeline in the errors (``--index DIR``
    or ``--pipeline P``); ``note``: say on stderr that the step is left out (a note, as every command's)."""
    from ragkit.pipelines import Pipeline
    from ragkit.pipelines._compose import generation_cut

    steps = list(pipe.steps)
    cut = generation_cut(steps)
    if cut is None:
        return pipe
    index = option.startswith("--index")
    if cut == 0:
        raise RagkitError(f"{option}: the {'saved ' if index else ''}pipeline starts with a generate step, which "
                          "has no documents to answer from; put a retriever before it")
    if note and index:
        _note("note: the pipeline's generate step is not run: search shows the documents; ragkit ask answers with "
              "them", style="dim")
    elif note:
        _note(f"note: {option}: the pipeline's generate step (and any step after it) is not run here: the rankings "
              "before it are scored; ragkit ask answers with them", style="dim")
    part = Pipeline(steps[:cut])
    if hasattr(pipe, "corpus_"):
        part.corpus_ = pipe.corpus_
    return part


def _rankings_only(pipe: Any) -> dict[str, Any]:
    """The search options that keep ``pipe``'s generate steps from running the language model: one
    inside a branch, route or loop (:func:`_without_generation` cuts the pipeline's own) passes the
    rankings on.  ``search`` shows rankings and ``eval`` / ``train`` score them: answers would be
    thrown away (an LLM answer per query of SciFact takes hours)."""
    from ragkit.generators.operator import rankings_only

    return rankings_only(pipe)
