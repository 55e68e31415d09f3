"""What RagkitRetriever takes as ``pipeline=`` and ``corpus=``, turned into an operator and a
:class:`~ragkit.types.Corpus`, and the settings (``k``, ``search_kwargs``) a saved retriever keeps beside its
pipeline (``retriever.json``), read with it from one save."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from langchain_core.documents import Document

from ragkit._files import user_path
from ragkit._saves import read_json
from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.operator import Operator
from ragkit.types import Corpus, ids_and_texts

#: the file of a saved retriever's own settings (``k``, ``search_kwargs``) beside its pipeline's
RETRIEVER_FILE = "retriever.json"


def as_corpus(corpus: Any) -> Corpus:
    """A :class:`~ragkit.types.Corpus` from a Corpus, LangChain ``Document``s, plain strings or records, or a
    mapping ``{doc_id: text}`` (a pandas ``Series`` indexed by string ids too; :func:`ragkit.types.ids_and_texts`).
    One string (its characters would be the documents), one Document or record, and a DataFrame are
    errors (:class:`DataError`) saying what to pass."""
    if isinstance(corpus, Corpus):
        return corpus
    if isinstance(corpus, Document) or (isinstance(corpus, Mapping) and "text" in corpus
                                        and ("_id" in corpus or "id" in corpus)):
        raise DataError(f"corpus: got one {'Document' if isinstance(corpus, Document) else 'record'} "
                        f"({corpus!r:.80}); wrap it in a list")
    ids, items = ids_and_texts(corpus, "corpus")  # (refuses one string, a DataFrame, None)
    if not items:
        raise DataError("corpus: got an empty collection; expected documents to index")
    if ids is not None:  # {doc_id: text}: the Corpus checks each text
        return Corpus.from_texts(items, ids=ids)
    if all(isinstance(x, Document) for x in items):
        return Corpus.from_documents(items)
    if all(isinstance(x, str) for x in items):
        return Corpus.from_texts(items)
    if all(isinstance(x, dict) for x in items):
        return Corpus.from_records(items)
    kinds = sorted({type(x).__name__ for x in items})
    raise DataError(f"corpus: expected a Corpus, LangChain Documents, strings or records (dicts), got {kinds}")


#: a ``pipeline=`` string that can only be meant as an operator's name: no path separator, suffix or YAML syntax
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def load_pipeline_like(source: Any) -> Operator:
    """An operator from an operator, a saved pipeline/operator folder, a YAML file, YAML text or a registered
    operator's name (``"bm25"``: that operator with its default parameters)."""
    if isinstance(source, Operator):
        return source
    if isinstance(source, os.PathLike):  # any path object (as save / load take): a Path
        source = Path(os.fsdecode(source))
    if not isinstance(source, (str, Path)):
        raise ParamError(
            f"pipeline: expected a ragkit operator/pipeline, a saved pipeline folder, a YAML file, YAML text or an "
            f"operator's name ('bm25'), got {type(source).__name__} ({source!r:.60})"
        )
    path = user_path(source, "pipeline") if isinstance(source, Path) or "\n" not in str(source) else None
    if path is not None and path.is_dir():
        if (path / "manifest.json").is_file():
            from ragkit.pipelines.store import load_pipeline

            return load_pipeline(path)
        if (path / "params.json").is_file():
            return Operator.load(path)
        raise ParamError(f"pipeline: {path} is a folder but holds neither a saved pipeline (manifest.json) "
                         f"nor a saved operator (params.json)")
    from ragkit import registry
    from ragkit.pipelines import load_yaml

    if path is not None and not path.exists() and str(source).strip().lower() in registry.names():
        return registry.get(str(source).strip().lower())()  # an operator's name, as `ragkit --pipeline bm25`
    name = str(source).strip()
    if path is not None and not path.exists() and _BARE_NAME.fullmatch(name):  # no path, no YAML: a misspelled name
        if name.lower() in registry.structural_keys():
            raise ParamError(f"pipeline: {name!r} is a structural key of pipeline YAML, not an operator (and no file "
                             f"or folder has that name); give the pipeline as YAML (e.g. 'pipeline: [{{{name.lower()}: "
                             "{...}}]') or an operator's name such as 'bm25'", "pipeline")
        try:
            registry.get(name, path="pipeline")  # unknown: the registry's error, with the closest names
        except ParamError as e:
            raise ParamError(f"pipeline: no file or folder is named {name!r}, and {str(e).removeprefix('pipeline: ')}",
                             "pipeline") from None
    if path is not None and not path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        raise ParamError(f"pipeline: YAML file {path} does not exist")
    return load_yaml(str(path) if path is not None and path.is_file() else str(source))


def _saved_settings(source: Any) -> dict[str, Any]:
    """``k`` and ``search_kwargs`` from the ``retriever.json`` of a folder given as ``pipeline=`` (``{}`` for
    any other ``pipeline=``), read alone; a malformed file is an :class:`ArtifactError` naming it.  A saved
    pipeline's folder (what :meth:`RagkitRetriever.save` writes) is read with its pipeline instead
    (:func:`_load_with_settings`), both from one save."""
    if isinstance(source, os.PathLike):
        source = os.fsdecode(source)
    if not isinstance(source, str) or "\n" in source or not (user_path(source, "pipeline") / RETRIEVER_FILE).is_file():
        return {}
    path = user_path(source, "pipeline") / RETRIEVER_FILE
    return _checked_settings(path, read_json(path))


def _checked_settings(path: Path, saved: Any) -> dict[str, Any]:
    """``saved``, the JSON value of the settings file ``path``, checked: ``{"k": int >= 1, "search_kwargs": {...}}``
    (:class:`ArtifactError` naming ``path`` otherwise)."""
    k = saved.get("k") if isinstance(saved, dict) else None
    if not (isinstance(saved, dict) and set(saved) == {"k", "search_kwargs"} and type(k) is int and k >= 1
            and isinstance(saved["search_kwargs"], dict)):
        raise ArtifactError(f"{path}: expected {{\"k\": an integer >= 1, \"search_kwargs\": an object}}, got "
                            f"{json.dumps(saved)[:120]}; save the retriever again")
    return saved


def _saved_pipeline_folder(source: Any) -> Path | None:
    """The folder ``pipeline=source`` names when it holds a saved pipeline (``manifest.json``: what
    :meth:`RagkitRetriever.save` and ``Pipeline.save`` write), else ``None``."""
    if isinstance(source, os.PathLike):
        source = os.fsdecode(source)
    if not isinstance(source, str) or "\n" in source:
        return None
    path = user_path(source, "pipeline")
    return path if path.is_dir() and (path / "manifest.json").is_file() else None


def source_identity(source: Any) -> Any:
    """A hashable identity of ``pipeline=source`` for a cache of the retrievers built from it: for a saved folder
    (``manifest.json``, or an operator's ``params.json``) or a file, its resolved path and its manifest's (the
    file's) inode, modification time and size, so that a folder saved again is a new identity; for other text
    (YAML text, an operator's name), the text itself; ``None`` for anything else (an operator: not cached)."""
    if isinstance(source, os.PathLike):
        source = os.fsdecode(source)
    if not isinstance(source, str):
        return None
    if "\n" in source:
        return ("text", source)
    try:
        path = user_path(source, "pipeline").resolve()
        marker = next((m for m in (path / "manifest.json", path / "params.json") if m.is_file()), None) \
            if path.is_dir() else path if path.is_file() else None
        if marker is None:
            return ("text", source)
        st = marker.stat()
    except (OSError, ValueError, ParamError):
        return None
    return ("path", str(path), st.st_ino, st.st_mtime_ns, st.st_size)


def _load_with_settings(source: Any) -> tuple[Operator, dict[str, Any]]:
    """The operator ``pipeline=source`` names (:func:`load_pipeline_like`) and the settings of the
    ``retriever.json`` beside it (:func:`_saved_settings`; ``{}`` without one).

    A saved pipeline's folder is read as one load (:func:`~ragkit.pipelines.store.load_unreplaced`, as
    ``load_pipeline`` reads it: the folder's shared lock held, its manifest's identity compared before and
    after, loaded again when another process saved the folder again meanwhile), the settings file included
    and its bytes checked against the manifest's checksum: the pipeline and its ``k`` / ``search_kwargs``
    (a default filter) always come from one save.  Read apart, a save landing between the two gave a
    retriever the pipeline of one save with the ``k`` and filter of the next."""
    folder = _saved_pipeline_folder(source)
    if folder is None:
        return load_pipeline_like(source), _saved_settings(source)
    from ragkit._saves import restore_interrupted_save
    from ragkit.pipelines.store import load_unreplaced

    restore_interrupted_save(folder)
    return load_unreplaced(folder, "manifest.json", lambda: _pipeline_and_settings(folder))


def _pipeline_and_settings(folder: Path) -> tuple[Operator, dict[str, Any]]:
    """One read of the saved pipeline ``folder`` (checksums verified) and of its ``retriever.json`` (``{}``
    where the save wrote none), as the files are now: :func:`_load_with_settings` retries it when the folder
    was replaced meanwhile.  The settings' bytes are those the manifest's ``sha256`` lists; a file it does
    not list, or lists with other bytes, is an :class:`ArtifactError` (the folder was changed after saving,
    or another save replaced the file between the two reads)."""
    from ragkit.pipelines.store import SHA_RECORD, _load_pipeline

    pipe = _load_pipeline(folder, None, False, True)  # (verifies every listed file, retriever.json included)
    path = folder / RETRIEVER_FILE
    digests = read_json(folder / "manifest.json").get("sha256", {})  # (its shape checked by _load_pipeline)
    digest = digests.get(RETRIEVER_FILE)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if digest is None:  # a folder of Pipeline.save: no settings of a retriever's
            return pipe, {}
        raise ArtifactError(f"{path}: listed in {SHA_RECORD} but missing; the folder was changed after saving: "
                            "save the retriever again") from None
    if digest is None:
        raise ArtifactError(f"{path}: not listed in {SHA_RECORD}, yet the load reads it (the retriever's k and "
                            "search_kwargs); RagkitRetriever.save lists it: the folder was changed after saving: "
                            "remove the file or save the retriever again")
    if hashlib.sha256(data).hexdigest() != digest:
        raise ArtifactError(f"{path}: checksum mismatch; the file was changed or truncated after saving: save the "
                            "retriever again")
    try:
        saved = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # (bytes the checksum lists: a save never writes them)
        raise ArtifactError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:120]}); save the retriever "
                            "again") from None
    return pipe, _checked_settings(path, saved)
