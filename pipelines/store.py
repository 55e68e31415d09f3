"""Save and load fitted pipelines as a folder of plain files (no pickle).

Layout::

    my-pipeline/
      pipeline.yaml        the pipeline, as ``to_yaml()`` writes it
      corpus.jsonl         the corpus it was fitted on (once, shared by all operators)
      manifest.json        format and ragkit versions, leaf path -> folder, SHA-256 of every file
      ops/00-bm25/         one folder per distinct operator: params.json + its artifacts

An operator object used in two places is saved once and loaded as one object again.
The folder is written under a temporary name and renamed into place, so an interrupted
save never destroys the previous one; a save whose steps' documents changed while it was written
(an edit on another thread) is refused before it replaces anything.  ``load`` verifies every
checksum first, and loads again when the folder was replaced (saved again) while it read it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from ragkit import registry
from ragkit._files import folder_checksums, folder_lock, saved_relpath, verify_checksums
from ragkit._fingerprints import corpus_fingerprint
from ragkit._locks import guarded_any
from ragkit._saves import (
    _LOST_MANIFEST,
    CLASS_KEY,
    FORMAT_VERSION,
    REGISTERED_KEY,
    _interrupted_save,
    _old_save_hint,
    _saved_pipeline_above,
    atomic_dir,
    read_json,
    restore_interrupted_save,
    saved_differs,
    write_json,
)
from ragkit.errors import ArtifactError, ArtifactNotFoundError, ConfigError, DataError, ParamError
from ragkit.operator import _CHECKSUMS_VERIFIED, Operator, check_flag, checksums_verified
from ragkit.params import validate_params
from ragkit.pipelines._compose import Pipeline
from ragkit.pipelines.yaml import dump_yaml, load_yaml, walk_leaves
from ragkit.types import Corpus

__all__ = ["save_pipeline", "load_pipeline", "load_unreplaced"]

_log = logging.getLogger("ragkit")

#: loads of one folder that another process replaced (saved again) meanwhile, before the load gives up
LOAD_TRIES = 5

T = TypeVar("T")


def save_pipeline(pipe: Pipeline, path: str | Path, *, extra: dict[str, Any] | None = None) -> None:
    """Write ``pipe`` (fitted or not) to the folder ``path`` atomically.

    ``extra``: more JSON files written into the folder, ``{file name: JSON value}`` (a
    ``RagkitRetriever``'s settings), listed in the manifest's checksums like the pipeline's own."""
    from ragkit import __version__
    from ragkit.pipelines._compose import shared_corpus

    if not pipe.steps:  # pipeline.yaml would read `pipeline: []`, which no load accepts
        raise ParamError(f"{path}: expected a pipeline of at least one operator to save, got an empty Pipeline([])")
    with guarded_any(pipe, *pipe.steps):  # a RagkitRetriever's edits of the tree wait for the save, it for them
        # the documents every fitted step searches (after an add / remove on them, the edited ones);
        # steps that disagree are refused here, before the folder is touched
        corpus = shared_corpus(pipe)
        text = dump_yaml(pipe)
        _check_reads_back(pipe, text, path)  # before the folder is touched
        with atomic_dir(path) as tmp:
            (tmp / "pipeline.yaml").write_text(text, encoding="utf-8")
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
            if corpus is not None:  # before the save replaces anything: every step written from `corpus`
                _check_unedited(pipe, corpus, folders, tmp, path)
            for name, value in (extra or {}).items():
                if (tmp / name).exists() or name == "manifest.json" or Path(name).name != name:
                    raise ParamError(f"{path}: extra file {name!r} would replace a file of the saved pipeline")
                write_json(tmp / name, value)
            write_json(tmp / "manifest.json", {
                "format_version": FORMAT_VERSION, "ragkit_version": __version__, "fitted": corpus is not None,
                "nodes": nodes, "sha256": folder_checksums(tmp),
            })


class _QuietThread(logging.Filter):
    """Drops the records the thread that made it logs (and only those: other threads log as ever)."""

    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.ident


def _check_reads_back(pipe: Pipeline, text: str, path: str | Path) -> None:
    """Refuse (:class:`ConfigError`) to save ``pipe`` when ``text``, the ``pipeline.yaml`` the save would write,
    is one this ragkit refuses to load: the folder could not be loaded.  Read as a load reads it, each step its
    parameters validated as saved values, the steps themselves ``pipe``'s own (no model or encoder is loaded
    or built: a few milliseconds); the notes building the tree logs (a route's shadowed branches), said when
    ``pipe`` was built, are not said again."""
    leaves = dict(walk_leaves(pipe))

    def make_leaf(node_path: str, cls: type[Operator], params: Any) -> Operator:
        op = leaves.get(node_path)
        if _saved_step_agrees(op, cls, params, node_path.rsplit(".", 1)[0]) is None:
            has = (f"{{{op.name}: {op.params.non_default()}}}" if type(op) is cls else
                   type(op).__name__ if op is not None else "no step")
            raise ConfigError(f"{node_path}: the YAML names {{{cls.name}: {dict(params or {})}}} where the pipeline "
                              f"has {has}; a load would refuse the folder (\"changed after saving\")", path=node_path)
        assert op is not None  # (else _saved_step_agrees said None)
        return op

    quiet, log = _QuietThread(), logging.getLogger("ragkit")
    log.addFilter(quiet)
    try:
        load_yaml(text, make_leaf=make_leaf)
    except (ConfigError, ParamError) as e:
        raise ConfigError(f"{path}: not saved: the pipeline.yaml it would write is one this ragkit refuses to load, "
                          f"so the folder could not be loaded ({e}); build the pipeline so that "
                          f"Pipeline.from_yaml(pipeline.to_yaml()) reads it, and save that (and please report "
                          f"this: a pipeline ragkit builds should read back)", path=e.path) from None
    finally:
        log.removeFilter(quiet)


def _saved_step_agrees(op: Operator | None, cls: type[Operator], params: Any, where: str = "") -> set[str] | None:
    """The parameters a ``pipeline.yaml`` node ``{cls.name: params}`` names, when ``op`` is the step it stands
    for: of the class ``cls`` and running each of them (as the class builds them: ``sharded`` sets its own ``k``
    from its retriever's); else ``None``, a step the load refuses (the folder "changed after saving").  The
    ``params`` are validated as saved values (:class:`ParamError` at ``where`` when they are not).  The load's
    check of each step, and the save's of the ``pipeline.yaml`` it would write (:func:`_check_reads_back`)."""
    given = validate_params(cls.Params, params, cls.name, where, source="saved")
    if op is None or type(op) is not cls:
        return None
    named, built = given.model_fields_set, cls(given).params
    return None if any(getattr(built, key) != getattr(op.params, key) for key in named) else set(named)


def _check_unedited(pipe: Pipeline, corpus: Corpus, folders: dict[int, str], tmp: Path, path: str | Path) -> None:
    """Refuse (:class:`DataError`) a save whose fitted steps did not all hold ``corpus`` (the documents written
    to ``corpus.jsonl``) for its whole length: a step folder under ``tmp`` (``folders``: id(leaf) -> folder)
    recording another corpus fingerprint in its ``params.json``, or a step that searches other documents
    now (an ``add`` / ``remove`` on another thread while the save was written: its files may mix the
    documents before and after it).  The earlier save at ``path`` is left as it was."""
    from ragkit.pipelines._compose import iter_leaves

    want = corpus_fingerprint(corpus)
    for leaf in iter_leaves(pipe):
        now = getattr(leaf, "corpus_", None)
        if leaf.stateless or now is None or id(leaf) not in folders:
            continue
        written = read_json(tmp / folders[id(leaf)] / "params.json").get("corpus")
        if written == want and (now is corpus or corpus_fingerprint(now) == want):
            continue
        got = written if written != want else corpus_fingerprint(now)
        raise DataError(f"{path}: not saved: {leaf.name}'s documents changed while the pipeline was being written "
                        f"({want['n']:,} documents saved, {got['n']:,} {'in its files' if written != want else 'now'}"
                        "; an add / remove on another thread?); the earlier save there is unchanged: save again "
                        "between edits (RagkitRetriever.save waits for the retriever's own edits)")


def _identity(folder: Path, marker: str) -> tuple[int, ...] | None:
    """What changes when a save replaces ``folder``: the inodes of the folder and of its ``marker`` file
    (rewritten by every save), the marker's modification time (ns) and size; ``None`` when either is missing."""
    try:
        d, m = os.stat(folder), os.stat(folder / marker)
    except OSError:
        return None
    return d.st_ino, m.st_ino, m.st_mtime_ns, m.st_size


def load_unreplaced(folder: Path, marker: str, load: Callable[[], T], what: str = "load") -> T:
    """``load()``, whose files all come from one save of ``folder``.

    Where ``flock`` works, the load holds a shared lock on the folder (:func:`~ragkit._files.folder_lock`)
    that a save's swap waits for, so the folder is not replaced meanwhile.  Beyond that (no ``flock``, a
    save that waited too long), ``marker`` (a file every save writes anew: ``manifest.json``, an
    operator's ``checksums.json``) is noted before and compared after; when another process replaced the
    folder meanwhile (its files may then be read half from each save, failing as "checksum mismatch" or
    "truncated"), it loads again, up to :data:`LOAD_TRIES` times, then raises :class:`ArtifactError`
    saying so.  An error of a load during which the folder was not replaced is raised as it is."""
    error: BaseException | None = None
    for attempt in range(LOAD_TRIES):
        with folder_lock(folder, exclusive=False):  # a save's swap of ``folder`` waits for this load
            before = _identity(folder, marker)
            try:
                out = load()
            except Exception as e:  # noqa: BLE001 - raised unless the folder was replaced under the load
                if _identity(folder, marker) == before:
                    raise
                error = e
            else:
                if _identity(folder, marker) == before:
                    return out
                error = None
        time.sleep(0.005 * 2 ** attempt)  # (a save in progress: give its swap time to land)
    raise ArtifactError(f"{folder}: the folder was replaced (saved again, by another process?) during each of "
                        f"{LOAD_TRIES} tries to {what} it; retry once the saves are done"
                        + (f" (last error: {type(error).__name__}: {error})" if error is not None else "")) from error


def load_pipeline(path: str | Path, *, corpus: Corpus | None = None, mmap: bool = False,
                  verify: bool = True) -> Pipeline:
    """Load a folder written by :func:`save_pipeline`; checksums are verified first.

    ``corpus``: the corpus the pipeline was fitted on, when the caller already holds it
    (it must have the saved corpus's number of documents); otherwise ``corpus.jsonl`` is read.
    A save replacing the folder during the load (another process) makes it load again
    (:func:`load_unreplaced`): every file comes from one save.

    Every step folder the manifest names must lie inside ``path`` (symbolic links resolved), whether or
    not ``verify``; with ``verify``, every file the load reads (``pipeline.yaml``, ``corpus.jsonl``, every
    file of a step's folder) must be listed in the manifest's checksums, inside the folder and no
    symbolic link (:func:`_check_listed`).  Saves are trusted input as far as the native index files go: a
    crafted index file (e.g. a usearch graph) passes its checksum, written by the same author, and can
    crash the process, so load folders only from people you trust.
    """
    folder = Path(path)
    mmap = check_flag(mmap, "mmap", "Pipeline.load")  # (verify="no" would be true, and verify)
    verify = check_flag(verify, "verify", "Pipeline.load")
    restore_interrupted_save(folder)
    return load_unreplaced(folder, "manifest.json", lambda: _load_pipeline(folder, corpus, mmap, verify))


def _load_pipeline(folder: Path, corpus: Corpus | None, mmap: bool, verify: bool) -> Pipeline:
    """One load of ``folder`` (:func:`load_pipeline`), its files read as they are now."""
    if not folder.is_dir():
        what = "a file, not a folder (a pipeline YAML file? Pipeline.from_yaml reads it)" if folder.exists() else \
            "it does not exist" + _old_save_hint(folder)
        raise (ArtifactError if folder.exists() else ArtifactNotFoundError)(  # (a FileNotFoundError too)
            f"{folder}: not a saved pipeline folder ({what})")
    if not (folder / "manifest.json").is_file():
        interrupted = _interrupted_save(folder)
        if interrupted is not None:
            raise ArtifactError(f"{folder}: {interrupted}")
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
    version = manifest.get("format_version", 1)
    if isinstance(version, bool) or version < 1:  # (true is an int to Python; formats count from 1)
        raise ArtifactError(f"{folder / 'manifest.json'}: format_version is {json.dumps(version)}; expected an "
                            f"integer >= 1 (the save format; this ragkit writes {FORMAT_VERSION}): the folder was "
                            "changed after saving: save the pipeline again")
    if "fitted" not in manifest:  # (every save writes it: without it the steps' documents would not be read)
        raise ArtifactError(f"{folder / 'manifest.json'}: manifest.json lacks 'fitted'; expected true or false "
                            "(whether the pipeline was saved fitted, with its documents in corpus.jsonl; every save "
                            "writes it): the folder was changed after saving: save the pipeline again")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(f"{folder}: written by a newer ragkit (format {manifest['format_version']}); "
                            "upgrade ragkit")
    nodes = _checked_nodes(folder, manifest.get("nodes", {}))
    if verify:
        digests = manifest.get("sha256", {})
        if "pipeline.yaml" not in digests:  # every save lists its files: a changed manifest lost them
            what = (f"lists the checksums (sha256) of {len(digests)} files but none of pipeline.yaml, which the "
                    "load reads (the steps and their order); every save lists it") if digests else \
                "lists no checksums of the saved files (sha256) to verify them against; every save lists them"
            raise ArtifactError(f"{folder / 'manifest.json'}: {what}: the folder was changed after saving: save the "
                                "pipeline again, or load it unchecked with verify=False")
        _check_listed(folder, digests, nodes, corpus_read=bool(manifest.get("fitted")) and corpus is None)
        verify_checksums(folder, digests, SHA_RECORD)
    _refuse_unknown_steps(folder, nodes, manifest.get("ragkit_version"))
    if not manifest.get("fitted"):
        corpus = None
    elif corpus is None:
        from ragkit.eval.beir import read_corpus

        corpus = read_corpus(folder / "corpus.jsonl", allow_empty=True)
    loaded: dict[str, Operator] = {}
    made: set[str] = set()  # the node paths of the steps built: all of them when only the steps' order is refused
    changed: list[tuple[Path, str, Operator, set[str]]] = []  # each step's _changed_defaults, once all are loaded

    def make_leaf(node_path: str, cls: type[Operator], params: Any) -> Operator:
        sub = nodes.get(node_path)
        if sub is None:
            raise ArtifactError(f"{folder / 'manifest.json'}: no saved operator for {node_path}")
        first = sub not in loaded
        if first and corpus is None:
            _refuse_fitted_step(folder, sub, node_path)
        if first:
            # (the manifest's checksums, verified above, cover every file of the step's folder: _check_listed)
            loaded[sub] = Operator.load(folder / sub, corpus=corpus, mmap=mmap, verify=False) if corpus is not None \
                else cls.load(folder / sub, corpus=None, mmap=mmap, verify=False)
        op = loaded[sub]
        # the step runs its params.json's parameters: the ones pipeline.yaml names must agree with them; the ones
        # it leaves out were the defaults when it was saved, which may have changed since (see _changed_defaults)
        named = _saved_step_agrees(op, cls, params)
        if named is None:  # (the save checked that its pipeline.yaml reads back as its steps: _check_reads_back)
            why = saved_differs(manifest, cls.__name__, "reads them otherwise", "may read them otherwise",
                                _CHECKSUMS_VERIFIED.get(), "the pipeline", "the two files", "either",
                                record="manifest.json's checksums", agreed=", whose save checked that they agreed")
            raise ArtifactError(f"{folder / 'pipeline.yaml'}: {node_path} is {{{cls.name}: {dict(params)}}}, but "
                                f"{folder / sub / 'params.json'} holds {{{op.name}: {op.params.non_default()}}}; "
                                f"{why}")
        if first:
            changed.append((folder / sub, node_path, op, named))
        made.add(node_path)
        return op

    # the manifest's checksums, verified above, cover the steps' files; a load inside an outer grant (a folder whose
    # manifest its caller has checked: search_distributed's chunks) counts as verified too
    with checksums_verified(verify or _CHECKSUMS_VERIFIED.get()):
        try:
            pipe = load_yaml(folder / "pipeline.yaml", make_leaf=make_leaf)
        except ConfigError as e:
            if nodes and made >= set(nodes):  # every step loaded: the order of the steps is what is refused
                raise ConfigError(f"{e}\n{_order_refused_hint(folder, nodes)}", path=e.path) from None
            raise
    # (said once every step is loaded: whether the pipeline ranks as saved depends on all of them)
    older = [f"{node_path} ({op._older_save})" for _, node_path, op, _ in changed if op._older_save is not None]
    for step, node_path, op, named in changed:
        _changed_defaults(step, node_path, op, named, older)
    if corpus is not None:
        pipe.corpus_ = corpus
    return pipe


def _refuse_unknown_steps(folder: Path, nodes: dict[str, str], saved_by: object) -> None:
    """Refuse (:class:`ArtifactError`, one line per step) the steps of the pipeline saved at ``folder`` whose
    operator (the last part of its node path in ``manifest.json``'s ``nodes``, ``pipeline[0].my_bm25``, the file
    the error names) is not registered in this process: a save writes registered names only, so each is a
    plugin's operator whose module is not imported (said so, not with the YAML reader's "did you mean", which
    would load another operator); ``saved_by``: the manifest's ``ragkit_version``."""
    known = set(registry.names())  # (the built-in families and the plugins' entry points, loaded)
    unknown = [(path, name) for path in nodes if (name := path.rsplit(".", 1)[-1]) not in known]
    if unknown:
        lines = [f"{folder / 'manifest.json'}: nodes: "
                 f"{registry.saved_unknown(name, path, saved_by, *_step_class(folder / nodes[path]))}"
                 for path, name in unknown]
        cut = registry.PLUGIN_HINT
        lines[:-1] = [line[:line.index(f" {cut}")] if cut in line else line for line in lines[:-1]]
        raise ArtifactError("\n".join(lines))


def _step_class(step: Path) -> tuple[object, object]:
    """The class a step's ``params.json`` records as the one that saved it and whether it was the registered one
    (``CLASS_KEY``, ``REGISTERED_KEY``); ``(None, None)`` where the file is missing, unreadable or holds no record
    (an older save): the caller's error is about the step's operator, not its file."""
    try:
        meta = read_json(step / "params.json")
    except ArtifactError:
        return None, None
    return (meta.get(CLASS_KEY), meta.get(REGISTERED_KEY)) if isinstance(meta, dict) else (None, None)


def _refuse_fitted_step(folder: Path, sub: str, node_path: str) -> None:
    """Refuse (:class:`ArtifactError`) the step ``sub`` of the pipeline saved at ``folder`` whose manifest says
    it was saved unfitted (``"fitted": false``) while the step's ``params.json`` says fitted: the manifest was
    changed after saving (the step would otherwise say to load the pipeline that is being loaded)."""
    meta = read_json(folder / sub / "params.json") if (folder / sub / "params.json").is_file() else None
    if isinstance(meta, dict) and meta.get("fitted") is True:
        raise ArtifactError(f"{folder / 'manifest.json'}: says \"fitted\": false (saved unfitted, without "
                            f"documents), but {folder / sub / 'params.json'} holds a fitted step ({node_path}); the "
                            "folder was changed after saving: save the pipeline again")


#: how errors name the manifest's checksums
SHA_RECORD = "manifest.json's sha256"


def _order_refused_hint(folder: Path, nodes: dict[str, str]) -> str:
    """What to do with a saved pipeline whose steps all load but whose order of steps this ragkit refuses (a
    shape an earlier ragkit accepted, such as ``[bm25, prf]`` or ``[bm25, parallel: {branches: [dense]}]``)."""
    steps = ", ".join(f"{sub} ({path})" for path, sub in sorted(nodes.items(), key=lambda kv: kv[1]))
    return (f"{folder}: saved by a ragkit that accepted this order of steps, which this one refuses (above); its "
            f"fitted steps still load one by one, without a refit: Operator.load(folder / step, corpus="
            f"read_corpus(folder / 'corpus.jsonl'), verify=False) for each step folder ({steps}); build the "
            "pipeline again from them as the error says, and save it")


def _changed_defaults(step: Path, node_path: str, op: Operator, named: set[str], older: list[str]) -> None:
    """Log (once per step of a load, on the ``ragkit`` logger) the parameters of the loaded step ``op`` that
    ``pipeline.yaml`` leaves out (``named``: the ones it gives) although their saved value (``params.json``,
    in the folder ``step``) is not today's default: the default changed since the save (mmr's ``fetch_k``
    200 -> None).  The step keeps its saved value, as fitted; a new save writes it into ``pipeline.yaml``.
    ``older``: the steps (``"pipeline[0].bm25 (why)"``) that warned they were written by an older ragkit and may rank
    differently from when they were saved (:attr:`Operator._older_save`): then the note does not say the
    pipeline ranks as saved."""
    changed = []
    for key, field in type(op.params).model_fields.items():
        if key in named or field.is_required():
            continue
        saved, default = getattr(op.params, key), field.get_default(call_default_factory=True)
        if saved != default:
            changed.append(f"{key}={saved!r} (today's default: {default!r})")
    if not changed:
        return
    if older:
        _log.warning(f"{step}: {node_path} was saved when its defaults differed: it keeps its saved "
                     f"{', '.join(changed)}, as fitted; but the pipeline may rank differently from when it was "
                     f"saved, as {'; '.join(older)} warned above (written by an older ragkit): fit it again and "
                     "save it to rank as today (which also writes these values into its pipeline.yaml)")
    else:
        _log.warning(f"{step}: {node_path} was saved when its defaults differed: it keeps its saved "
                     f"{', '.join(changed)}, so the pipeline loads and ranks as saved; save it again to write "
                     "these values into its pipeline.yaml (and silence this note)")


def _checked_nodes(folder: Path, nodes: dict[str, Any]) -> dict[str, str]:
    """The manifest's ``nodes`` (``{node path: step folder}``), each folder normalised, after checking that it
    lies inside ``folder`` once symbolic links are resolved, and is not ``folder`` itself: a crafted manifest
    would otherwise load a step from elsewhere (``../other``, an absolute path), or this pipeline again as its
    own step (``.``, which recursed until Python's limit).  :class:`ArtifactError` naming the node otherwise."""
    where = folder / "manifest.json"
    base = os.path.realpath(folder)
    out: dict[str, str] = {}
    for node_path, sub in nodes.items():
        if not isinstance(sub, str) or not sub:
            raise ArtifactError(f"{where}: nodes[{node_path!r}] is {sub!r:.120}; expected the step's folder, a path "
                                "inside the saved pipeline (e.g. 'ops/00-bm25'): save the pipeline again")
        try:
            rel = saved_relpath(folder, sub, f"manifest.json's nodes[{node_path!r}]")
        except ArtifactError:
            rel = None
        real = os.path.realpath(folder / rel) if rel is not None else ""
        if real == base or os.path.normpath(sub) == ".":
            raise ArtifactError(f"{where}: nodes[{node_path!r}] is {sub!r:.200}, the saved pipeline's own folder (a "
                                "step cannot be the pipeline itself); ragkit writes 'ops/NN-name': save the pipeline "
                                "again")
        link = _first_link(folder, rel) if rel is not None else None
        if link is not None and os.path.commonpath([base, real]) != base:
            raise ArtifactError(f"{where}: nodes[{node_path!r}] is {sub!r:.200}, a folder outside the saved pipeline "
                                f"{folder}: it is reached through the symbolic link {link} (to {os.readlink(link)}); "
                                "ragkit never writes links into a save, and refuses a step reached through a link "
                                "leading out of it (verify=False too): copy the step's folder itself into the save, "
                                "or save the pipeline again")
        if rel is None or os.path.commonpath([base, real]) != base:
            raise ArtifactError(f"{where}: nodes[{node_path!r}] is {sub!r:.200}, a folder outside the saved pipeline "
                                f"{folder}; a step loads only from a folder inside it (ragkit writes 'ops/NN-name'): "
                                "refusing to load it (the folder was not written, or was changed after saving, by "
                                "ragkit)")
        out[node_path] = rel
    return out


def _first_link(folder: Path, rel: str) -> Path | None:
    """The first symbolic link on the way from ``folder`` to ``folder / rel`` (``rel`` normalised, inside it:
    :func:`~ragkit._files.saved_relpath`), ``folder / rel`` included; ``None`` when there is none."""
    at = folder
    for part in Path(rel).parts:  # (a loop over the few parts of a step's path)
        at = at / part
        if at.is_symlink():
            return at
    return None


def _check_listed(folder: Path, digests: dict[str, Any], nodes: dict[str, str], corpus_read: bool) -> None:
    """Refuse (:class:`ArtifactError`) a load with ``verify`` of files the manifest's checksums do not cover:
    a checksum path outside ``folder`` (:func:`~ragkit._files.saved_relpath`), a step folder reached through
    a symbolic link, a file (or link) in a step's folder that the checksums do not list (the steps load with
    ``verify=False``, trusting the manifest: an operator reads an optional file it finds there), and
    ``corpus.jsonl`` unlisted when it is read (``corpus_read``).  Files of the folder that the load does not
    read (a README beside the save) may stay unlisted; ragkit's own saves list every file they write."""
    listed = {saved_relpath(folder, rel, SHA_RECORD) for rel in digests}
    if corpus_read and "corpus.jsonl" not in listed:
        raise ArtifactError(f"{folder / 'corpus.jsonl'}: not listed in {SHA_RECORD}, yet the load reads it (the "
                            "documents); every save lists it: the folder was changed after saving: save the pipeline "
                            "again, or load it unchecked with verify=False")
    owner = {rel: node_path for node_path, rel in reversed(nodes.items())}  # (the first node of each folder)
    for rel, node_path in owner.items():
        check_listed_files(folder, rel, listed, node_path, f"{node_path}'s step", SHA_RECORD,
                           "save the pipeline again")


def check_listed_files(folder: Path, rel: str, listed: set[str], who: str, reader: str, record: str, again: str,
                       own: str | None = None, users_files: bool = False) -> None:
    """Refuse (:class:`ArtifactError`) the folder ``folder / rel`` (``rel``: ``"."`` for ``folder`` itself) that
    ``who`` (``"the operator"``, a pipeline's node ``"pipeline[0].bm25"``; ``reader``: what reads its files,
    ``"the operator"``, ``"pipeline[0].bm25's step"``) loads with ``verify``, when it is reached through
    a symbolic link, holds one (file or folder, at any depth), or holds a file whose path relative to ``folder``
    is not in ``listed`` (the paths of ``record``, the save's checksums, normalised) other than ``own`` (the
    record's own file): an operator reads the optional files it finds in its folder, unchecked otherwise.
    ``again`` says what to do (``"save the pipeline again"``).  Shared by :func:`_check_listed` (each step of a
    pipeline) and ``Operator.load`` (an operator's own folder).

    ``users_files`` (an operator's own folder, where a user may keep files beside the save, which a save never
    deletes): unlisted notes at the top (``*.md``, ``*.txt``, ``*.rst``, hidden files such as ``.DS_Store``:
    no operator reads one) stay allowed, and so do hidden folders at the top (``.git``, ``.ipynb_checkpoints``)
    that hold none of the listed files, and another ragkit save inside it (a folder holding its own
    ``checksums.json`` or ``manifest.json`` that holds none of the listed files: not read by this load)."""
    base = os.path.realpath(folder)
    top = folder / rel
    if os.path.realpath(top) != os.path.normpath(os.path.join(base, rel)):
        raise ArtifactError(f"{top}: {who}'s folder is reached through a symbolic link; ragkit never writes links "
                            f"into a save, and loads no folder through one: {again}")
    for root, dirs, files in os.walk(top):  # (not into linked folders: each is refused here)
        if users_files:  # (another save inside this one: its own files, which this load does not read)
            dirs[:] = [d for d in dirs if not _another_save(Path(root, d), folder, listed)]
        for name in (*dirs, *files):
            p = Path(root, name)
            if p.is_symlink():
                raise ArtifactError(f"{p}: a symbolic link (to {os.readlink(p)}) in {who}'s folder; ragkit never "
                                    f"writes links into a save, and loads no file through one: {again}")
        if users_files and root == str(top):  # (a hidden folder at the top: .git, .ipynb_checkpoints)
            dirs[:] = [d for d in dirs if not (d.startswith(".") and not _holds_listed(Path(root, d), folder, listed))]
        for name in files:
            p = Path(root, name)
            got = os.path.relpath(p, folder)
            if got not in listed and got != own and not (users_files and root == str(top) and (
                    name.startswith(".") or Path(name).suffix.lower() in _NOTES)):
                raise ArtifactError(f"{p}: not listed in {record}, yet {reader} would read it unchecked (an operator "
                                    "reads the files of its folder); every save lists them all: the folder was changed "
                                    f"after saving: remove the file or {again}, or load it unchecked with "
                                    "verify=False")


#: suffixes of a user's notes kept beside an operator's save (``check_listed_files``): no operator reads one
_NOTES = (".md", ".txt", ".rst")

#: folders that ragkit's operators read inside their own folder when they find them (a tuned model, the shards
#: of a sharded index): never taken for another save kept there (``_another_save``), whatever they hold
_READ_FOLDERS = re.compile(r"model|shard-\d+|ops")


def _holds_listed(sub: Path, folder: Path, listed: set[str]) -> bool:
    """Whether one of the paths ``listed`` (relative to ``folder``) lies below the folder ``sub``."""
    prefix = os.path.relpath(sub, folder) + os.sep
    return any(p.startswith(prefix) for p in listed)


def _another_save(sub: Path, folder: Path, listed: set[str]) -> bool:
    """Whether the folder ``sub`` (under the save ``folder``, whose record lists ``listed``) is another ragkit save
    kept inside it: its own ``checksums.json`` or ``manifest.json``, none of the listed files below it, and not a
    folder an operator reads (:data:`_READ_FOLDERS`: a planted ``model/x/`` with its own checksums would load as
    the tuned model)."""
    rel = os.path.relpath(sub, folder)
    if sub.is_symlink() or any(_READ_FOLDERS.fullmatch(part) for part in Path(rel).parts) or not (
            (sub / "checksums.json").is_file() or (sub / "manifest.json").is_file()):
        return False
    return not _holds_listed(sub, folder, listed)
