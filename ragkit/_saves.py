"""An operator's save folder: written whole or not at all (:class:`atomic_dir`, an earlier save a killed one left
aside put back: :func:`restore_interrupted_save`), its JSON and ``.npy`` files (:func:`write_json`,
:func:`load_array`, ...), and what a load checks of a folder before it reads it (a ragkit save or not, its
``params.json``'s types, the corpus given with it)."""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ragkit import _files
from ragkit._files import (
    GATE_FILES,
    _cmd_shell,
    atomic_file,
    check_npy_size,
    file_above,
    folder_lock,
    owner_ended,
    remove_tree,
    save_unwritable,
    shared_tempdir,
    shell_quote,
    user_path,
)
from ragkit._fingerprints import TEXTS_KEY, corpus_fingerprint, corpus_texts_digest
from ragkit.errors import ArtifactError, ParamError, some_ids
from ragkit.registry import _builtin
from ragkit.types import Corpus

if TYPE_CHECKING:
    from ragkit.operator import Operator

__all__ = ["CHECKSUMS", "FORMAT_VERSION", "restore_interrupted_save", "atomic_dir", "write_json", "read_json",
           "saved_fit_report", "save_arrays", "load_array"]


CHECKSUMS = "checksums.json"  # written by Operator.save beside params.json
TRAINED = "trained_queries"  # <TRAINED>.npy beside params.json: digests of the queries a fit learned from

#: 2: a saved bm25 holds its weights (terms x docs) beside its counts (version 1 folders still load)
FORMAT_VERSION = 2

_log = logging.getLogger("ragkit")

_UNCHECKED_TEXTS_SAID = False


def _check_given_corpus(folder: Path, meta: Mapping[str, Any], corpus: Corpus) -> None:
    """Refuse (:class:`ArtifactError`) ``corpus``, given to ``load(folder, corpus=...)``, unless it is the corpus
    the operator saved in ``folder`` was fitted on (``meta``: its ``params.json``): the same ids in the same order
    (``meta["corpus"]``), and the same titles and texts (``meta[TEXTS_KEY]``; a folder saved before ragkit recorded
    them has ids only: then its texts are not checked, which is logged once).  The error says whether the ids or
    the texts differ and the first document that does (from the saved ``corpus.jsonl``, the folder's or its
    pipeline's, when there is one)."""
    global _UNCHECKED_TEXTS_SAID
    fitted = f"{folder}: fitted on a corpus of {meta['corpus']['n']:,} documents, but load(corpus=...) was given"
    if corpus_fingerprint(corpus) != meta["corpus"]:
        how, first, same_as = _how_ids_differ(folder, corpus)
        if same_as is not None:  # the saved corpus.jsonl has these very ids: it is not the fitted corpus either
            it = "the pipeline" if _saved_pipeline_above(folder) is not None else "the operator"
            raise ArtifactError(
                f"{fitted} {len(corpus):,} documents {how}, the very ids, in the same order, that {same_as} holds: "
                f"so that file is not the corpus it was fitted on either (params.json records the SHA-1 of the fitted "
                "ids): the folder was changed after it was saved (its corpus.jsonl replaced or edited, or a step "
                f"folder copied from another save), which a load with verify=True refuses by its checksums: save "
                f"{it} again from where it was fitted, or fit {it} again")
        raise ArtifactError(f"{fitted} {len(corpus):,} documents {how}; pass the corpus it was fitted on, in its "
                            f"order (or none: the folder holds it), or fit the operator on this corpus{first}")
    if TEXTS_KEY not in meta:
        if not _UNCHECKED_TEXTS_SAID:
            _UNCHECKED_TEXTS_SAID = True
            _log.warning(f"{folder}: saved by an earlier ragkit, which recorded the ids of the documents it was "
                         "fitted on but not their texts: the documents it loads with are checked by their ids "
                         "only, not their texts (save it again to record both; said once)")
        return
    if corpus_texts_digest(corpus) != meta[TEXTS_KEY]:
        raise ArtifactError(f"{fitted} the same {len(corpus):,} document ids with other texts or titles"
                            f"{_how_texts_differ(folder, corpus)}: its index scores the texts it was fitted on; pass "
                            "the corpus it was fitted on (or none: the folder holds it), or fit the operator again "
                            "on the edited corpus")


def _saved_corpus(folder: Path) -> Corpus | None:
    """The corpus saved with the operator in ``folder`` (its ``corpus.jsonl``, or its pipeline's), if readable."""
    found = _saved_corpus_file(folder)
    return None if found is None else found[1]


def _saved_corpus_file(folder: Path) -> tuple[Path, Corpus] | None:
    """:func:`_saved_corpus` and the file it was read from."""
    whole = _saved_pipeline_above(folder)
    for saved in (folder / "corpus.jsonl", *((whole / "corpus.jsonl",) if whole is not None else ())):
        if saved.is_file():
            from ragkit.eval.beir import read_corpus

            try:
                return saved, read_corpus(saved, allow_empty=True)
            except Exception:  # noqa: BLE001 - only said in an error about another matter: leave it out
                return None
    return None


def _how_ids_differ(folder: Path, corpus: Corpus) -> tuple[str, str, Path | None]:
    """How ``corpus``'s ids differ from those of the corpus saved in ``folder`` (``corpus.jsonl``, the
    folder's or its pipeline's, when there is one): "with the same ids in another order" (an index's rows are
    positions) or "with other ids"; the first row where they differ (``""`` when no corpus is saved); and that
    file when it holds exactly ``corpus``'s ids, in order (else ``None``): the ids differ from the fitted ones,
    whose fingerprint ``params.json`` records, though they are the saved file's (the folder was changed since)."""
    found = _saved_corpus_file(folder)
    if found is None:
        return "with other ids", "", None
    file, saved = found
    ids, given = saved.ids, corpus.ids
    if len(ids) == len(given) and np.array_equal(ids, given):
        return "with other ids", "", file
    m = min(len(ids), len(given))
    rows = np.flatnonzero(ids[:m] != given[:m])
    if len(rows):
        r = int(rows[0])
        first = f" (the first difference: row {r} is document {given[r]!r} in the given corpus, {ids[r]!r} in the " \
                "fitted one)"
    else:  # one is the start of the other
        r = m
        first = f" (the first difference: row {r} is document {(given if len(given) > m else ids)[r]!r}, only in " \
                f"the {'given' if len(given) > m else 'fitted'} corpus)"
    if len(ids) == len(given) and np.array_equal(np.sort(ids), np.sort(given)):
        return "with the same ids in another order (its rows are positions in the fitted order)", first, None
    return "with other ids", first, None


def _how_texts_differ(folder: Path, corpus: Corpus) -> str:
    """The first document of ``corpus`` whose text or title differs from the corpus saved in ``folder`` (the
    folder's ``corpus.jsonl`` or its pipeline's), as `` (the first: document 'id', its text)``; ``""`` when the
    folder holds no corpus (of these ids) to compare with."""
    saved = _saved_corpus(folder)
    if saved is None or not np.array_equal(saved.ids, corpus.ids):
        return ""
    texts, titles = saved.texts != corpus.texts, saved.titles != corpus.titles
    rows = np.flatnonzero(texts | titles)
    if not len(rows):
        return ""
    r = int(rows[0])
    what = "text" if texts[r] else "title"
    return f" ({len(rows):,} differ; the first: document {corpus.ids[r]!r}, row {r}, its {what})"


#: What reading a JSON file that may not be ragkit's raises: no such file (or no access), not JSON, or JSON
#: nested thousands deep (:func:`read_json` words each of them for a file ragkit must read)
_UNREADABLE = (OSError, ValueError, RecursionError)


def _is_ragkit_save(folder: Path) -> bool:
    """Whether ``folder`` holds a ragkit save: an operator's ``params.json`` or a pipeline's
    ``manifest.json`` that parses and carries ragkit's ``format_version`` (a file merely named so is
    somebody else's, and so is a chunk KV-cache folder's ``manifest.json``: a save would delete it)."""
    try:
        meta = json.loads((folder / "params.json").read_text(encoding="utf-8"))
        if isinstance(meta, dict) and "format_version" in meta and "operator" in meta:
            return True
    except _UNREADABLE:
        pass
    return _is_pipeline_manifest(folder / "manifest.json")


def _is_pipeline_manifest(path: Path) -> bool:
    """Whether ``path`` is the ``manifest.json`` :meth:`Pipeline.save` writes (``format_version``,
    ``nodes`` and ``sha256``), not another file of that name (a chunk KV-cache's, somebody else's)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except _UNREADABLE:
        return False
    return isinstance(meta, dict) and "format_version" in meta and "nodes" in meta and "sha256" in meta


def _foreign_files(folder: Path) -> list[str]:
    """Files under the ragkit save ``folder`` that its own record (``checksums.json``, or a pipeline
    manifest's ``sha256``) does not list: somebody else's, e.g. another save written inside it.
    Empty when the save keeps no record to compare with."""
    for name, key in ((CHECKSUMS, None), ("manifest.json", "sha256")):
        try:
            record = json.loads((folder / name).read_text(encoding="utf-8"))
        except _UNREADABLE:
            continue
        listed = record.get(key) if key is not None and isinstance(record, dict) else record
        if isinstance(listed, dict):
            own = {*listed, name}
            return sorted(rel for p in folder.rglob("*") if not p.is_dir()
                          and (rel := p.relative_to(folder).as_posix()) not in own and rel.replace("/", "\\") not in
                          own)
    return []


def _saved_pipeline_above(folder: Path) -> Path | None:
    """The nearest folder above ``folder`` holding a pipeline ``manifest.json``, if any."""
    for parent in Path(folder).resolve().parents:
        if (parent / "manifest.json").is_file() and _is_pipeline_manifest(parent / "manifest.json"):
            return parent
    return None


def _not_an_operator_folder(folder: Path) -> str:
    """Why ``folder`` cannot load as an operator (it has no ``params.json``), with what to do."""
    if not folder.exists():
        return "no such folder; expected one written by Operator.save" + _old_save_hint(folder)
    if not folder.is_dir():
        return ("a file, not a folder; an operator loads from the folder Operator.save wrote (a pipeline YAML "
                "file: Pipeline.from_yaml)")
    if (folder / "manifest.json").is_file():
        return "a saved pipeline, not a single operator: load it with Pipeline.load (or Operator.load)"
    interrupted = _interrupted_save(folder)
    if interrupted is not None:
        return interrupted
    if (folder / "pipeline.yaml").is_file() and (folder / "ops").is_dir():
        return _LOST_MANIFEST
    return "no params.json: not a folder written by Operator.save"


#: Why a saved pipeline's folder without its manifest cannot load (verify=False included).
_LOST_MANIFEST = ("a saved pipeline's folder (pipeline.yaml, ops/) that lost its manifest.json, which holds its "
                  "layout and checksums, so it cannot be loaded even with verify=False: save the pipeline again")


def _interrupted_save(folder: Path) -> str | None:
    """What to say of ``folder`` when it is the temporary folder of a save (``.<name>.tmp-<pid>@<host>-...``,
    :func:`~ragkit._files.shared_tempdir`), which is renamed into place once complete: one left behind is of a
    save that was killed (or failed) before then, and is no save; ``None`` for another folder."""
    match = re.fullmatch(r"\.(.+)\.tmp-(\d+)@[^/]*-[^-/]+", folder.name)
    if match is None or not folder.is_dir():
        return None
    return (f"the temporary folder of a save of {folder.with_name(match.group(1))} (process {match.group(2)}) that "
            "did not complete (killed, or failed, before renaming it into place): no save to load; the next save "
            "there removes it, and it is safe to delete")


def _before_checksums(folder: Path) -> str:
    """The end of the error for an operator folder without ``checksums.json``: why, and what to do.  Format 1
    folders (``params.json``) may be from a ragkit before checksums, which wrote none; later ones always do: the
    end then gives the shell command that loads it unchecked and saves it in place (the command line has no
    ``verify=False``)."""
    try:
        version = json.loads((folder / "params.json").read_text(encoding="utf-8")).get("format_version", 1)
    except (OSError, ValueError, AttributeError):
        version = None
    if isinstance(version, int) and not isinstance(version, bool) and version <= 1:
        where = json.dumps(str(folder.absolute()))  # (a Python string literal, in a shell-quoted program)
        said = ("; it may have been written by a ragkit from before checksums (its params.json says format 1), "
                "or changed after saving: if it is yours, load it with verify=False, then save it again (which "
                "writes them; in place, or to another folder), e.g. from a shell: python -c ")
        if not _cmd_shell():
            code = f"from ragkit import Operator; Operator.load({where}, verify=False).save({where})"
            return said + shell_quote(code)
        # Windows: a folder holding a file an operator loaded from it maps (or keeps open) cannot be renamed, so
        # a save in place by the process that loaded it would be refused: save beside it, then swap the names
        new = folder.absolute().with_name(f"{folder.name}-resaved")
        code = f"from ragkit import Operator; Operator.load({where}, verify=False).save({json.dumps(str(new))})"
        return (said + f"{shell_quote(code)}, then delete {folder.name} and rename {new.name} to {folder.name} (on "
                "Windows, a folder an operator loaded from it uses cannot be replaced by that operator's save)")
    return ("; the folder was changed after saving: save the operator again, or load it unchecked with "
            "verify=False")


def _check_meta_types(folder: Path, meta: Mapping[str, Any]) -> None:
    """Refuse (:class:`ArtifactError` naming the file, the key, what it holds and what was expected) the keys of
    a ``params.json`` (``meta``) that have the wrong type: a bare ``TypeError`` / ``KeyError`` of the load
    otherwise, or worse, ``"fitted": "no"`` loading as fitted and ``"params": null`` as the defaults."""
    def bad(key: str, expected: str) -> ArtifactError:
        value = meta[key]
        return ArtifactError(f"{folder / 'params.json'}: {key!r} holds {json.dumps(value, default=str)[:120]} (a "
                             f"JSON {_json_kind(value)}); expected {expected}; the folder was changed after saving, "
                             "or written by another program: save the operator again")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(meta["operator"], str):
        raise bad("operator", "the operator's name, a string such as \"bm25\"")
    if not isinstance(meta["params"], dict):
        raise bad("params", "an object of the operator's parameters ({\"k\": 10, ...})")
    if not isinstance(meta["fitted"], bool):
        raise bad("fitted", "true or false")
    if "format_version" in meta and not (is_int(meta["format_version"]) and meta["format_version"] >= 1):
        raise bad("format_version", f"an integer >= 1 (the save format; this ragkit writes {FORMAT_VERSION})")
    fingerprint = meta.get("corpus")
    if "corpus" in meta and not (isinstance(fingerprint, dict) and is_int(fingerprint.get("n"))
                                 and isinstance(fingerprint.get("ids_sha1"), str)):
        raise bad("corpus", "an object {\"n\": the number of documents fitted on, \"ids_sha1\": the SHA-1 of "
                            "their ids (hex)}")
    if TEXTS_KEY in meta and not isinstance(meta[TEXTS_KEY], str):
        raise bad(TEXTS_KEY, "the digest of the documents' texts, a hex string")
    if CLASS_KEY in meta and not (isinstance(meta[CLASS_KEY], str) and meta[CLASS_KEY].count(":") == 1
                                  and all(meta[CLASS_KEY].split(":"))):
        raise bad(CLASS_KEY, "the class that saved it, a string \"module:qualname\"")
    if REGISTERED_KEY in meta and not isinstance(meta[REGISTERED_KEY], bool):
        raise bad(REGISTERED_KEY, "true or false (whether the class that saved it was the registered one)")


def _json_kind(value: Any) -> str:
    """JSON's name for the type of a value ``json.loads`` gave."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    kinds: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return kinds.get(type(value), type(value).__name__)


def _old_saves(path: Path) -> list[Path]:
    """The folders ``.<name>.old-*`` beside ``path`` that hold a complete earlier save (``manifest.json``, or
    ``params.json``: :data:`~ragkit._files.GATE_FILES`), newest first: where a save by two renames
    (:class:`atomic_dir`, without :func:`_exchange`) keeps the earlier save between its renames."""
    prefix = f".{path.name}.old-"
    try:
        entries = [e for e in path.parent.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return []
    found = []
    for e in entries:
        try:
            if e.is_dir() and not e.is_symlink() and any((e / name).is_file() for name in GATE_FILES):
                found.append((e.stat().st_mtime_ns, e))
        except OSError:
            continue
    return [e for _, e in sorted(found, key=lambda t: t[0], reverse=True)]


def _saver_running(old: Path, path: Path) -> bool:
    """Whether the save that moved the earlier save at ``path`` to ``old`` (``.<name>.old-<8 characters of its
    temporary folder's name>``) may still run: its temporary folder is still there, and was made by a process
    of this host that still runs, or by another host (which this one cannot tell)."""
    suffix = old.name.rsplit(".old-", 1)[1]
    prefix = f".{path.name}.tmp-"
    try:
        tmps = [e.name for e in path.parent.iterdir() if e.name.startswith(prefix) and e.name.endswith(suffix)]
    except OSError:
        return True
    return not all(owner_ended(name, prefix) for name in tmps)


def restore_interrupted_save(path: Path) -> Path | None:
    """Put back the earlier save at ``path`` when a save killed between its two renames (a platform without
    :func:`_exchange`: macOS, Windows, NFS) left ``path`` missing and the earlier save as ``.<name>.old-*``
    beside it; returns the folder it renamed, logged (``None``: nothing to restore).

    Only a complete earlier save is restored, only while ``path`` is missing, and only once the save that
    moved it has ended (its process no longer runs on this host): under the same exclusive lock a save's
    swap holds (:func:`~ragkit._files.folder_lock`: a save between its renames holds it, so this waits for
    it).  A save of another host, or one still running, is left alone (the load's error then names the
    folder)."""
    if os.path.lexists(path):
        return None
    if not _old_saves(path):
        return None
    with folder_lock(path, exclusive=True):  # (a live save's swap holds it: this waits until it is done)
        for old in _old_saves(path):
            if os.path.lexists(path):
                return None
            if _saver_running(old, path):
                continue
            try:
                old.rename(path)
            except OSError:
                continue
            _log.warning(f"{path}: was missing: a save killed while it replaced the folder (between its two "
                         f"renames, on a system without an atomic swap) had left the earlier save as {old.name}; "
                         "renamed it back, so the earlier save is at its place again")
            return old
    return None


def _old_save_hint(path: Path) -> str:
    """For the error of a load of the missing ``path``: the earlier save an interrupted save left beside it, and
    how to put it back (where :func:`restore_interrupted_save` would not: a save that may still run)."""
    olds = _old_saves(path)
    if not olds:
        return ""
    return (f"; but {olds[0]} holds an earlier save of it, moved there by a save that has not completed (still "
            f"running, or run on another machine): once no save is running, rename it back to {path.name}")


class atomic_dir:
    """Context manager: yields a temporary sibling folder, renamed onto ``path`` on success.

    The previous folder (if any) is kept until the new one is complete, then replaced: on Linux
    the two are swapped in one atomic step (:func:`_exchange`), so ``path`` is never missing;
    elsewhere by two renames.  The new folder gets the permissions (and owner) of the one it replaces
    (a ``chmod 700`` stays), else those of a plain ``mkdir``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = user_path(path, "path")

    @staticmethod
    def check(path: str | Path) -> Path:
        """``path`` resolved, if a save may replace it: a new or empty folder, or an earlier ragkit
        save (``params.json`` / ``manifest.json``); anything else (a mount point, which no rename can replace,
        included) raises :class:`ArtifactError`.
        Call it before long work whose result will be saved there.  A leading ``~`` is the home folder."""
        return atomic_dir._check(path)[0]

    @staticmethod
    def _check(path: str | Path) -> tuple[Path, bool]:
        """:meth:`check`'s path, and whether an earlier ragkit save is there (what a failed save keeps)."""
        path = user_path(path, "path").resolve()
        if path.exists() and not path.is_dir():
            raise ArtifactError(f"{path}: exists and is not a folder; refusing to replace it with a ragkit save")
        if os.path.ismount(path):  # (a volume mounted there: the rename onto it fails with EBUSY, after all the work)
            raise ArtifactError(f"{path}: a mount point (a file system, e.g. a container's volume, is mounted there), "
                                "which a save cannot replace (it renames a complete folder into place): save into a "
                                f"folder inside it, e.g. {path / 'index'}")
        blocker = file_above(path)
        if blocker is not None:
            raise ArtifactError(f"{path}: {blocker} is a file, not a folder; a save cannot be written below it")
        whole = _saved_pipeline_above(path)
        if whole is not None:  # a step folder (or a folder below one): the pipeline's checksums list its files
            raise ArtifactError(f"{path}: inside the saved pipeline at {whole}; a save here would break that "
                                "pipeline: save into a folder of its own")
        if path.is_dir() and any(path.iterdir()):
            if not _is_ragkit_save(path):
                raise ArtifactError(
                    f"{path}: a non-empty folder that is not a ragkit save (no params.json or manifest.json written "
                    f"by ragkit); refusing to replace it: save into a new or empty folder")
            foreign = _foreign_files(path)
            if foreign:
                raise ArtifactError(
                    f"{path}: an earlier ragkit save that also holds {len(foreign)} files it did not write "
                    f"({some_ids(foreign)}); replacing the save would delete them: move them out, or save into a "
                    "new folder")
            return path, True
        return path, False

    def __enter__(self) -> Path:
        restore_interrupted_save(user_path(self.path, "path"))  # (this save then replaces it, and deletes it)
        self.path, self.replaces = self._check(self.path)  # (replaces: an earlier save, what a failure keeps)
        doing = f"creating the folder {self.path.parent}"
        try:  # (__exit__ does not run when __enter__ raises: a read-only or forbidden folder is named here, as there)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            doing = f"creating its temporary folder in {self.path.parent}"
            self.tmp = shared_tempdir(self.path.parent, f".{self.path.name}.tmp-")
        except OSError as e:
            named = save_unwritable(str(self.path), e, doing, "nothing was written, and an earlier save there is "
                                    "unchanged: make the folder writable (or save elsewhere) and save again")
            if named is e:
                raise  # (another OSError, a network file system's EIO, stays as it is, retryable)
            raise named from e
        return self.tmp

    def __exit__(self, exc_type: object, exc: BaseException | None = None, *rest: object) -> None:
        if exc_type is not None:
            self._discard(exc)
            return
        # a re-save keeps the folder's permissions (a chmod 700, a read-only 555) and owner, as atomic_file keeps a
        # file's: given once the block has written its files (a 555 given first refused them all); then every file
        # of the save on the disk before the rename makes it the save at ``path`` (its JSON files are, by
        # atomic_file; its arrays, np.save's, were not): after a power loss the renamed folder could hold empty or
        # zero-filled .npy files
        doing = f"giving it the permissions of {self.path.name}"
        try:
            if self.path.is_dir():
                _files._keep_mode(self.path, self.tmp)
            doing = "flushing its files to the disk"
            _files.fsync_tree(self.tmp)
        except BaseException as e:  # (a write-back that failed: ENOSPC, EIO) the save failed: as if the block had
            self._discard(e, doing)
            raise
        old = None
        try:  # a process working inside the replaced folder follows it to the new one
            inside: Path | None = Path.cwd().relative_to(self.path)
        except (ValueError, OSError):
            inside = None
        with folder_lock(self.path, exclusive=True):  # once the loads of the earlier save (if any) are done
            if self.path.exists() and _exchange(self.tmp, self.path):
                old = self.tmp  # swapped in one step: ``path`` never went missing; tmp now holds the old save
            else:
                self._swap_by_renames()
                old = self.old
        try:  # the rename on the disk too (the parent folder's entries): else, after a power loss, ``path`` could
            # come back as the earlier save, or as none, though this save had returned
            _files.fsync_path(self.path.parent)
        finally:
            if inside is not None:
                target = self.path / inside
                os.chdir(target if target.is_dir() else self.path)
            if old is not None:
                remove_tree(old)  # (read-only folders in it included: a save the user made 555)
            _remove_superseded_saves(self.path)

    def _discard(self, exc: BaseException | None, doing: str | None = None) -> None:
        """Delete the temporary folder of a save that failed with ``exc`` (raised in the block, or while ``doing``
        what follows it, e.g. flushing its files), and raise the :class:`ArtifactError` of a full disk, a quota, a
        read-only or forbidden folder (np.save's "15222 requested and 13280 written" has no errno), naming the
        file being written; another error (a network file system's EIO) is left to the caller to raise as it is,
        retryable."""
        remove_tree(self.tmp)
        if exc is None:
            return
        if doing is None:
            name = getattr(exc, "filename", None)
            try:
                name = Path(name).relative_to(self.tmp) if name else None
            except (ValueError, TypeError):
                pass
            doing = f"writing {name}" if name else None
        kept = "an earlier save there is unchanged" if self.replaces else "nothing was saved there"
        named = save_unwritable(str(self.path), exc, doing, f"{kept}: free space (or fix the cause) and save again")
        if named is not exc:
            raise named from exc

    def _swap_by_renames(self) -> None:
        """Put the complete new save (``self.tmp``) at ``self.path`` by two renames (the earlier save, if any,
        first moved aside to ``self.old``).  When a rename fails, the new save is deleted, the earlier one put
        back at ``self.path`` (or, if even that fails, left at ``self.old``, which the next load or save of
        ``self.path`` renames back), and the error raised: :meth:`_swap_failed`'s for a folder in use."""
        self.old: Path | None = None
        try:
            if self.path.exists():  # a short window in which ``path`` is missing
                aside = self.path.with_name(f".{self.path.name}.old-{self.tmp.name[-8:]}")
                self.path.rename(aside)
                self.old = aside
            self.tmp.rename(self.path)
        except OSError as e:
            put_back = True
            if self.old is not None:
                try:
                    self.old.rename(self.path)
                except OSError:
                    put_back = False
            remove_tree(self.tmp)  # (else a whole copy of the new save stays beside it)
            failed = self._swap_failed(e, put_back)
            if failed is e:
                raise
            raise failed from e

    def _swap_failed(self, e: OSError, put_back: bool) -> BaseException:
        """The error of a save whose complete new folder could not replace the earlier save at ``self.path``
        (``e``, from a rename): for a refused access (``PermissionError``: on Windows a folder holding a file a
        process maps or keeps open cannot be renamed), an :class:`ArtifactError` saying what may use it and
        what to do; for ``EBUSY`` (a mount point, whatever :meth:`check`'s ``os.path.ismount`` said), one saying to
        save into a folder inside it; another error (a network file system's EIO) as it is.  ``put_back``: whether
        the earlier save is at ``self.path`` again (else it is at ``self.old``)."""
        kept = (("nothing was changed: the earlier save is still there" if self.replaces else
                 f"nothing was changed at {self.path}") if put_back else
                f"the earlier save is at {self.old}: rename it back to {self.path.name} (the next load or save of "
                f"{self.path.name} does)")
        if e.errno == errno.EBUSY:  # a mount point check() did not see (os.path.ismount misses a bind mount of a
            # folder of the same file system) or a folder the system uses: no rename replaces it
            return ArtifactError(
                f"{self.path}: the new save could not replace the folder ({e.strerror or e}): it is busy, typically "
                "a mount point (a file system, e.g. a container's volume or a bind mount, is mounted there), which a "
                f"save cannot replace (it renames a complete folder into place): save into a folder inside it, e.g. "
                f"{self.path / 'index'}. The new save was not kept and {kept}")
        if not isinstance(e, PermissionError):
            _log.warning(f"{self.path}: the new save could not replace the earlier one ({e}); {kept}")
            return e
        return ArtifactError(
            f"{self.path}: the new save could not replace the earlier save in this folder ({e.strerror or e}): the "
            "folder, or a file in it, is in use or not yours to replace. On Windows a folder cannot be replaced "
            "while a file in it is memory-mapped or open: typically by an operator loaded from it (loaded with "
            "mmap=True; a Dense index keeping float vectors to rescore and a MUVERA or MaxSim index map their "
            "files whatever mmap says), or by another process serving or reading it. "
            f"The new save was not kept and {kept}. Save to another folder instead (then, once nothing uses this "
            "one, delete it and rename the new one in its place), or load with mmap=False where that releases the "
            "files")


def _remove_superseded_saves(path: Path) -> None:
    """Delete the earlier saves ``.<name>.old-*`` that saves killed between their two renames left beside ``path``
    once this save is at ``path`` (the next load or save renames one back while ``path`` is missing; one left
    while a later save had already written ``path`` stayed for ever): only those whose save has ended
    (:func:`_saver_running`), logged."""
    for old in _old_saves(path):
        if not _saver_running(old, path):
            remove_tree(old)
            _log.info(f"{path}: removed {old.name}, an earlier save a killed save had left beside it (this save "
                      "replaces it)")


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``): a
    reader sees either one, never neither.  False where the system or file system cannot (the
    caller then renames twice)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no libc symbol (glibc < 2.28, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file renamed into place (:func:`~ragkit._files.atomic_file`)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:  # (lists or objects nested thousands deep: no ragkit file is; a crafted one)
        raise ArtifactError(f"{path}: JSON nested too deeply to read (thousands of levels); not a file ragkit "
                            "writes") from None


def saved_fit_report(info: Any, where: str | Path) -> dict[str, Any]:
    """A fit report (an operator's ``info_``) read from a save at ``where``, without the fit's wall time
    (``"seconds"``: older saves hold it; it is no longer kept, so that two identical fits write identical files);
    an :class:`ArtifactError` naming ``where`` when it is no JSON object."""
    if not isinstance(info, dict):
        raise ArtifactError(f"{where}: expected a JSON object (what the fit reported), got {type(info).__name__}; "
                            "fit and save the pipeline again")
    return {k: v for k, v in info.items() if k != "seconds"}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_arrays(folder: Path, **arrays: np.ndarray) -> None:
    """Save arrays as ``<name>.npy`` (no pickle)."""
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)


def load_array(folder: Path, name: str, mmap: bool = False) -> np.ndarray:
    """Load ``<name>.npy`` with ``allow_pickle=False``; a missing or corrupt file raises ArtifactError."""
    path = folder / f"{name}.npy"
    try:
        check_npy_size(path)  # (before np.load allocates what the header claims)
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise ArtifactError(f"{path}: corrupt or truncated array ({e})") from None


def _version() -> str:
    from ragkit import __version__

    return __version__


#: params.json's key for the names of the attributes a fit learned (:func:`learned_attributes`)
LEARNED_KEY = "learned"
#: params.json's key for the class that saved the operator (``module:qualname``, :func:`ragkit.registry.class_path`)
CLASS_KEY = "class"
#: params.json's key for whether that class was the one registered under the operator's name (which
#: ``Operator.load`` builds: a folder saved by another is refused there, and loads with its class's own ``load``)
REGISTERED_KEY = "registered"
# (set by the base class's fit and load themselves, not by ``_fit`` / ``_load``)
_BASE_LEARNED = frozenset({"corpus_", "trained_on_"})


def learned_attributes(op: Operator) -> list[str]:
    """The names of the attributes ``op``'s fit learned: its public attributes ending in ``_`` (``table_``),
    but ``corpus_`` and ``trained_on_``, which the base class saves, and its class's :attr:`Operator.unsaved`.
    Recorded in ``params.json`` by :meth:`Operator.save`, so that :meth:`Operator.load` can say which ones
    ``_load`` did not restore."""
    skip = _BASE_LEARNED | type(op).unsaved
    return sorted(k for k in vars(op) if k.endswith("_") and not k.startswith("_") and k not in skip)


#: The files :meth:`Operator.save` writes in an operator's folder itself (``_save`` must not write them)
RESERVED_FILES = ("params.json", CHECKSUMS, "corpus.jsonl", f"{TRAINED}.npy", "manifest.json")


def check_savable(op: Operator) -> None:
    """Refuse (:class:`ParamError`) saving the fitted ``op`` whose fit learned attributes (:func:`learned_attributes`)
    that its class has no way to save: it keeps the base class's ``_save`` or ``_load``, which keep nothing, so
    the folder would load without them (refused then, after the save had replaced the earlier one)."""
    from ragkit.operator import Operator  # (ragkit.operator imports this module)

    cls = type(op)
    if cls._load is not Operator._load:  # (a _load may rebuild what it needs from the documents, unsaved)
        return
    learned = learned_attributes(op)
    if not learned:
        return
    them = "it" if len(learned) == 1 else "them"
    lacking = "neither _save nor _load" if cls._save is Operator._save else "_save but no _load"
    raise ParamError(
        f"{cls.__name__} ({op.name!r}) cannot be saved: its fit set {', '.join(learned)} (attributes ending in '_' "
        f"hold what a fit learned), but {cls.__name__} implements {lacking} (the base ones keep "
        f"nothing), so a load would lack {them}; nothing was written. Implement _save(folder), writing {them} as "
        f"plain files (np.save, JSON), and _load(folder, mmap=False), reading {them} back into the same attributes "
        f"(or rebuilding {them} from self.corpus_); one attached after a load goes in the class's "
        f"unsaved = frozenset({{...}})")


def _check_learned_loaded(op: Operator, folder: Path, meta: Mapping[str, Any]) -> None:
    """Refuse a loaded ``op`` that lacks an attribute its fit had learned (``meta[LEARNED_KEY]``, recorded at
    save): its class's ``_save`` / ``_load`` do not keep it (the base ones keep nothing), so its first search
    would fail on it, or answer without it."""
    names = meta.get(LEARNED_KEY)
    if not isinstance(names, list):  # (written before ragkit recorded them)
        return
    missing = [n for n in names if isinstance(n, str) and not hasattr(op, n)]
    if missing:
        cls = type(op).__name__
        them = "it" if len(missing) == 1 else "them"
        lacks = (f"{folder}: {cls} ({op.name!r}) lacks {', '.join(missing)} once loaded: its fit had set {them} "
                 f"(params.json records what a fit learned), but its _load did not restore {them}")
        if _builtin(type(op)):  # a built-in operator: its own _load is not the cause
            it = "the pipeline" if _saved_pipeline_above(folder) is not None else "the operator"
            raise ArtifactError(f"{lacks}; " + saved_differs(meta, cls, "learns more", "may learn otherwise",
                                                             bool(op._verified), it, "its files", "one of them",
                                                             refit="fit"))
        other = saved_by_other_ragkit(meta, cls, "learns more", "may learn otherwise")
        plugin = (f"{cls} must implement _save(folder), writing everything fit learned as plain files, and "
                  f"_load(folder, mmap=False), reading it back into the same attributes; then fit and save it again")
        raise ArtifactError(
            f"{lacks}; {plugin} (or {other}, or the package that defines {cls})" if other else
            f"{lacks}; {plugin} (or, when {cls}'s package was changed since the save, load it with the version that "
            f"saved it)")


def saved_params_refused(cls: type[Operator], folder: Path, meta: Mapping[str, Any], error: ParamError | None = None,
                         verified: bool = False) -> str:
    """Why the parameters of the ``params.json`` (``meta``) in ``folder`` are refused by ``cls`` (``error``, what
    was raised), and what to do, saying only what is known: for an operator of a plugin (``cls``, or one the
    parameters name, at a place of ``error.path``: ``sharded.retriever.my_bm25.x``), its ``Params`` may have
    changed since the save (load it with the version of the class that saved it, or refit and save); for a
    built-in one, the ragkit version that saved it (:func:`saved_by_other_ragkit`), or, saved by this very version
    number, that its files match the checksums written at save (``verified``: the folder is as saved, so the code
    that reads it changed, which a version number need not tell) or were not checked (``verify=False``: its
    params.json may have been edited).  A step of a saved pipeline says to save the pipeline again."""
    name = cls.__name__
    whole = _saved_pipeline_above(folder)
    it = "the pipeline" if whole is not None else "the operator"
    plugin = cls if not _builtin(cls) else _plugin_named(error.path if error is not None else "")
    if plugin is not None:  # a plugin's class (or one the parameters name)
        of = f"{plugin.__name__} ({plugin.__module__}.{plugin.__qualname__})"
        named = f", which {name}'s parameters name," if plugin is not cls else ""
        edited = "" if verified else ", or the folder was changed after saving (loaded with verify=False)"
        return (f"the parameters of {of}{named} changed since the folder was saved (its params.json holds those of "
                f"the {plugin.__name__} that saved it){edited}: load it with the version of {plugin.__name__} that "
                f"saved it, or fit {it} and save it again with this one")
    return saved_differs(meta, name, "takes other parameters", "may take other parameters", verified, it,
                         "its files", "its params.json", same="the saved parameters fail this ragkit's checks; ",
                         restore="restore its params.json, ")


def saved_differs(meta: Mapping[str, Any], cls: str, newer: str, other: str, verified: bool, it: str, files: str,
                  edited: str, *, refit: str = "", same: str = "", **options: str) -> str:
    """Why a built-in operator's saved files (``meta``: the ``params.json`` or ``manifest.json`` holding the
    ``ragkit_version`` that saved them) fail this ragkit's class ``cls``, and what to do: saved by another ragkit,
    :func:`saved_by_other_ragkit`'s clause (``newer``, ``other``) and ``(or <refit> and save it again with this
    one)`` (``refit``: ``"fit <it>"`` unless given); by this very version, ``same`` (what failed, said first) and
    :func:`same_version_save`'s text (``verified``, ``it``, ``files``, ``edited`` and its keyword ``options``).
    The one composition of the three loads that say it (:func:`saved_params_refused`, :func:`_check_learned_loaded`,
    ``Pipeline.load``'s step that disagrees with its ``pipeline.yaml``)."""
    by_other = saved_by_other_ragkit(meta, cls, newer, other)
    if by_other:
        return f"{by_other} (or {refit or f'fit {it}'} and save it again with this one)"
    return same + same_version_save(verified, it, files, edited, **options)


def same_version_save(verified: bool, it: str, files: str, edited: str, *, record: str = "the checksums its save wrote",
                      agreed: str = "", restore: str = "") -> str:
    """Why the folder of ``it`` (``"the operator"``, ``"the pipeline"``), saved by this very ragkit version number,
    fails this ragkit's load, saying only what is known, and what to do: ``verified``, its ``files`` match
    ``record`` (the checksums its save wrote), so they are as saved and the code that reads them changed without
    a new version number (a development checkout); else they were loaded with ``verify=False``, unchecked, so
    ``edited`` (``"its params.json"``) may have been edited.  ``agreed``: what the save checked, said after the
    version (``", whose save checked that they agreed"``); ``restore``: a first thing to do when unchecked
    (``"restore its params.json, "``).  The loads' wording wherever a folder's files disagree with this ragkit
    (:func:`saved_params_refused`, :func:`_check_learned_loaded`, ``Pipeline.load``'s steps), never "the folder
    was changed after saving", which the checksums would have refused."""
    said = f"saved by ragkit {_version()}, this one's version number{agreed}"
    if verified:
        return (f"{said}, and {files} match {record}: the code that reads them may have changed without a new "
                f"version number (a development checkout): fit {it} and save it again with this one")
    return (f"{said}; loaded with verify=False, {files} were not checked against {record} ({edited} may have been "
            f"edited since): load it verified to tell, {restore}or fit {it} and save it again")


def _plugin_named(path: str) -> type[Operator] | None:
    """The class of a plugin's operator (a registered class outside ragkit) named at a place of ``path`` (an
    error's path, ``sharded.retriever.my_bm25.x``), or None."""
    from ragkit import registry

    for part in re.split(r"[.\[\]]", path):
        known = registry._REGISTRY.get(part)
        if known is not None and not _builtin(known):
            return known
    return None


def saved_by_other_ragkit(meta: Mapping[str, Any], cls: str, newer: str, other: str) -> str:
    """Why a built-in operator's folder (its ``params.json``, ``meta``) may not suit this ragkit's class ``cls`` (a
    class name), by the ragkit version that saved it (``meta["ragkit_version"]``): a clause ending in what to do,
    the class of a newer ragkit described by ``newer`` (``"learns more"``: upgrade ragkit), of another one by
    ``other`` (``"may learn otherwise"``: load it with that version); ``""`` when this very version saved it
    (:func:`same_version_save` says what is known then).  A folder recording no version may be a newer ragkit's.
    The loads' wording for a learned attribute missing (:func:`_check_learned_loaded`), for parameters its class
    refuses (:meth:`Operator.load <ragkit.operator.Operator.load>`, a step of ``Pipeline.load`` included) and for a
    step that disagrees with its ``pipeline.yaml``."""
    saved_by, this = meta.get("ragkit_version"), _version()
    if isinstance(saved_by, str) and saved_by != this:
        order = _version_order(saved_by, this)
        if order is not None and order > 0:
            return (f"the folder was saved by a newer ragkit (ragkit {saved_by:.40}, this is {this}) whose {cls} "
                    f"{newer}: upgrade ragkit")
        return (f"the folder was saved by another ragkit (ragkit {saved_by:.40}, this is {this}), whose {cls} "
                f"{other}: load it with that version")
    if saved_by is None:
        return f"the folder may have been saved by a newer ragkit whose {cls} {newer}: upgrade ragkit"
    return ""  # saved by this very ragkit version: not a newer one


def _version_order(a: str, b: str) -> int | None:
    """``1`` when the version ``a`` is newer than ``b``, ``-1`` when older, ``0`` when their release numbers are
    equal; None when either does not start with one (``1.2.3``, ``0.1.0rc1``: the leading numbers are compared)."""
    def release(v: str) -> tuple[int, ...] | None:
        parts = []
        for piece in v.split("."):
            digits = len(piece) - len(piece.lstrip("0123456789"))
            if not digits:
                break
            parts.append(int(piece[:digits]))
            if digits < len(piece):
                break
        return tuple(parts) or None

    ra, rb = release(a), release(b)
    if ra is None or rb is None:
        return None
    return (ra > rb) - (ra < rb)
