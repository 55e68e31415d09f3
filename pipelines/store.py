"""Save and load fitted pipelines as a folder of plain files (no pickle).

Layout::

    my-pipeline/
      pipeline.yaml        the pipeline, as ``to_yaml()`` writes it
      corpus.jsonl         the corpus it was fitted on (once, shared by all operators)
      manifest.json        format and ragkit versions, leaf path -> folder, SHA-256 of every file
      ops/00-bm25/         one folder per distinct operator: params.json + its artifacts

An operator object used in two places is saved once and loaded as one object again.
The folder is written under a temporary name and renamed into place, so an interrupted
save never destroys the previous one.  ``load`` verifies every checksum first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragkit._files import folder_checksums, verify_checksums
from ragkit.errors import ArtifactError, ParamError
from ragkit.operator import (
    _LOST_MANIFEST,
    FORMAT_VERSION,
    Operator,
    _saved_pipeline_above,
    atomic_dir,
    checksums_verified,
    read_json,
    write_json,
)
from ragkit.pipelines._compose import Pipeline
from ragkit.pipelines.yaml import dump_yaml, load_yaml, walk_leaves
from ragkit.types import Corpus

__all__ = ["save_pipeline", "load_pipeline"]


def save_pipeline(pipe: Pipeline, path: str | Path, *, extra: dict[str, Any] | None = None) -> None:
    """Write ``pipe`` (fitted or not) to the folder ``path`` atomically.

    ``extra``: more JSON files written into the folder, ``{file name: JSON value}`` (a
    ``RagkitRetriever``'s settings), listed in the manifest's checksums like the pipeline's own."""
    from ragkit import __version__
    from ragkit.pipelines._compose import shared_corpus

    if not pipe.steps:  # pipeline.yaml would read `pipeline: []`, which no load accepts
        raise ParamError(f"{path}: expected a pipeline of at least one operator to save, got an empty Pipeline([])")
    # the documents every fitted step searches (after an add / remove on them, the edited ones);
    # steps that disagree are refused here, before the folder is touched
    corpus = shared_corpus(pipe)
    with atomic_dir(path) as tmp:
        (tmp / "pipeline.yaml").write_text(dump_yaml(pipe), encoding="utf-8")
        if corpus is not None:
            corpus.save(tmp / "corpus.jsonl")
        folders: dict[int, str] = {}
        nodes: dict[str, str] = {}
        for node_path, leaf in walk_leaves(pipe):
            if id(leaf) not in folders:
                folder = f"ops/{len(folders):02d}-{leaf.name}"
                (tmp / folder).mkdir(parents=True)
                leaf.save_into(tmp / folder, with_corpus=False)
                folders[id(leaf)] = folder
            nodes[node_path] = folders[id(leaf)]
        for name, value in (extra or {}).items():
            if (tmp / name).exists() or name == "manifest.json" or Path(name).name != name:
                raise ParamError(f"{path}: extra file {name!r} would replace a file of the saved pipeline")
            write_json(tmp / name, value)
        write_json(tmp / "manifest.json", {
            "format_version": FORMAT_VERSION, "ragkit_version": __version__, "fitted": corpus is not None,
            "nodes": nodes, "sha256": folder_checksums(tmp),
        })


def load_pipeline(path: str | Path, *, corpus: Corpus | None = None, mmap: bool = False,
                  verify: bool = True) -> Pipeline:
    """Load a folder written by :func:`save_pipeline`; checksums are verified first.

    ``corpus``: the corpus the pipeline was fitted on, when the caller already holds it
    (it must have the saved corpus's number of documents); otherwise ``corpus.jsonl`` is read.
    """
    folder = Path(path)
    if not folder.is_dir():
        what = "a file, not a folder (a pipeline YAML file? Pipeline.from_yaml reads it)" if folder.exists() else \
            "it does not exist"
        raise ArtifactError(f"{folder}: not a saved pipeline folder ({what})")
    if not (folder / "manifest.json").is_file():
        if (folder / "params.json").is_file():
            above = _saved_pipeline_above(folder)
            raise ArtifactError(f"{folder}: a saved operator, not a pipeline (no manifest.json): " + (
                f"one step of the saved pipeline at {above}, load that folder" if above is not None else
                "load it with Operator.load"))
        if (folder / "pipeline.yaml").is_file() and (folder / "ops").is_dir():
            raise ArtifactError(f"{folder}: {_LOST_MANIFEST}")
        raise ArtifactError(f"{folder}: no manifest.json: not a folder written by Pipeline.save")
    manifest = read_json(folder / "manifest.json")
    shapes = (("format_version", int), ("fitted", bool), ("sha256", dict), ("nodes", dict))
    bad = [key for key, kind in shapes if key in manifest and not isinstance(manifest[key], kind)] if isinstance(
        manifest, dict) else ["(the whole file)"]
    if bad:
        raise ArtifactError(f"{folder / 'manifest.json'}: {bad[0]} has the wrong type; expected a JSON object with "
                            "format_version (integer), fitted (boolean), sha256 and nodes (objects): save the "
                            "pipeline again")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(f"{folder}: written by a newer ragkit (format {manifest['format_version']}); "
                            "upgrade ragkit")
    if verify:
        digests = manifest.get("sha256", {})
        if "pipeline.yaml" not in digests:  # every save lists its files: a changed manifest lost them
            raise ArtifactError(f"{folder / 'manifest.json'}: lists no checksums of the saved files (sha256) to "
                                "verify them against; the folder was changed after saving: save the pipeline again, "
                                "or load it unchecked with verify=False")
        verify_checksums(folder, digests)
    if not manifest.get("fitted"):
        corpus = None
    elif corpus is None:
        from ragkit.eval.beir import read_corpus

        corpus = read_corpus(folder / "corpus.jsonl", allow_empty=True)
    nodes: dict[str, str] = manifest.get("nodes", {})
    loaded: dict[str, Operator] = {}

    def make_leaf(node_path: str, cls: type[Operator], params: Any) -> Operator:
        sub = nodes.get(node_path)
        if sub is None:
            raise ArtifactError(f"{folder / 'manifest.json'}: no saved operator for {node_path}")
        if sub not in loaded:
            # (the manifest's checksums, verified above, cover the step's files)
            loaded[sub] = Operator.load(folder / sub, corpus=corpus, mmap=mmap, verify=False) if corpus is not None \
                else cls.load(folder / sub, corpus=None, mmap=mmap, verify=False)
        op = loaded[sub]
        if type(op) is not cls or op.params != cls(params).params:  # the step runs its params.json's parameters
            raise ArtifactError(f"{folder / 'pipeline.yaml'}: {node_path} is {{{cls.name}: {dict(params)}}}, but "
                                f"{folder / sub / 'params.json'} holds {{{op.name}: {op.params.non_default()}}}; the "
                                "folder was changed after saving: save the pipeline again")
        return op

    with checksums_verified(verify):  # the manifest's checksums, verified above, cover the steps' files
        pipe = load_yaml(folder / "pipeline.yaml", make_leaf=make_leaf)
    if corpus is not None:
        pipe.corpus_ = corpus
    return pipe
