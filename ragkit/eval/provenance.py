"""What ``ragkit eval -o`` records so that a result can be reproduced: the pipeline with every parameter
resolved (defaults included), the library versions and ragkit's git commit, the identity of each encoder
model, and fingerprints of the corpus and of the evaluated queries.

* :func:`resolved_pipeline`: the pipeline's YAML tree (``Pipeline.to_dict``'s nesting) with every operator's
  full parameters (``Params.model_dump(mode="json")``), so a later ragkit with other defaults is not read as
  this one's ``bm25: {}``.
* :func:`versions`: ragkit's version (and git commit in a checkout, ``+modified`` or ``+unknown``), Python's and
  the installed versions of the libraries results depend on, read from package metadata (nothing is imported:
  not torch).
* :func:`models`: each encoder model a step names, with the identity the embedding cache keys its vectors by
  (:func:`~ragkit.encoders.sentence.model_fingerprint`, read from the encoder the fit made).
* :func:`corpus_digest_text` / :func:`queries_fingerprint`: BLAKE2b digests of the documents (ids, titles,
  texts) and of the queries (ids, texts), hashed in chunks (no per-document hashing).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["resolved_pipeline", "versions", "ragkit_commit", "models", "corpus_digest_text", "queries_fingerprint",
           "combined_fingerprint", "FINGERPRINT_KIND", "LIBRARIES"]

#: The prefix of :func:`corpus_digest_text`'s and :func:`queries_fingerprint`'s values.
FINGERPRINT_KIND = "blake2b"

#: Distributions whose installed version :func:`versions` records (absent ones are left out).
LIBRARIES = ("numpy", "scipy", "usearch", "pydantic", "PyYAML", "PyStemmer", "pytrec-eval-terrier", "scikit-learn",
             "threadpoolctl", "torch", "transformers", "sentence-transformers", "tokenizers", "huggingface-hub",
             "safetensors", "accelerate", "rank-bm25", "bm25s", "faiss-cpu", "numba", "ray", "langchain-core", "gguf")

_HEX_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


# ---------------------------------------------------------------------------------------------- pipeline
def resolved_pipeline(pipe: Any) -> Any:
    """The YAML tree of ``pipe`` (the nesting of :meth:`Pipeline.to_dict <ragkit.pipelines.Pipeline.to_dict>`: a
    list of steps, ``{"parallel": {...}}``, ``{"route": {...}}``, ``{"loop": {...}}``, ``{name: params}``) with
    every parameter of every operator, defaults included (``{"bm25": {"k": 1000, "k1": 0.9, ...}}``, not
    ``{"bm25": {}}``); a parallel's fuser and branch names are given even where the YAML leaves them implicit.
    (:func:`ragkit.pipelines.yaml.to_node` with ``full``)."""
    from ragkit.pipelines.yaml import to_node

    return to_node(pipe, full=True)


# ---------------------------------------------------------------------------------------------- versions
def timestamp() -> str:
    """Now, as the result files record it: ISO 8601 to the second with the local time zone's offset
    (``2026-12-06T22:31:48+00:00``)."""
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")


def versions(libraries: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """``{"ragkit": version, "ragkit_commit": sha (in a git checkout only), "python": version, <library>:
    version, ...}``: the installed version of each of ``libraries`` (distribution names) that is installed, read
    from its package metadata (:mod:`importlib.metadata`: no library is imported, torch included)."""
    from ragkit import __version__

    out = {"ragkit": __version__}
    commit = ragkit_commit()
    if commit is not None:
        out["ragkit_commit"] = commit
    out["python"] = sys.version.split()[0]
    for name in libraries:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def ragkit_commit(root: str | os.PathLike[str] | None = None) -> str | None:
    """The commit checked out where ragkit runs from a git checkout (``root``: the folder holding the ``ragkit``
    package, by default this one's), read from ``.git`` (its ``HEAD``, the ref it names, ``packed-refs``; a
    worktree's ``.git`` file followed), with ``"+modified"`` appended when ``git status`` says tracked files
    differ from it, else ``"+untracked"`` when it lists files that are neither tracked nor ignored in the package
    folders (:data:`_PACKAGE_FOLDERS`: a new module the commit does not hold), ``"+unknown"`` when it could not
    tell (git not found, not answering within 5 s, refusing the folder: safe.directory's "dubious ownership", any
    other failure), nothing when it says neither; ``None`` outside a checkout (an installed ragkit) or where
    ``.git`` cannot be read."""
    base = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    git = base / ".git"
    try:
        if git.is_file():  # a worktree or a submodule: "gitdir: <path>"
            text = git.read_text(encoding="utf-8").strip()
            if not text.startswith("gitdir:"):
                return None
            git = (base / text.split(":", 1)[1].strip()).resolve()
        if not (git / "HEAD").is_file():
            return None
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        sha: str | None = head
        if head.startswith("ref:"):
            ref = head.split(":", 1)[1].strip()
            sha = None
            for folder in (git, common):
                if (folder / ref).is_file():
                    sha = (folder / ref).read_text(encoding="utf-8").strip()
                    break
            if sha is None and (common / "packed-refs").is_file():
                for line in (common / "packed-refs").read_text(encoding="utf-8").splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        sha = parts[0]
                        break
    except (OSError, UnicodeDecodeError):
        return None
    if sha is None or not _HEX_SHA.fullmatch(sha):
        return None
    state = _changes(base)
    return sha + ("+unknown" if state is None else state)


#: the folders of the checkout that hold the code ``import ragkit`` runs (pyproject's package-dir): an untracked
#: file in one of them is code the commit does not hold
_PACKAGE_FOLDERS = ("ragkit/", "retrievers/", "filters/", "caches/", "pipelines/")

#: seconds :func:`_changes` waits for ``git status``
_GIT_TIMEOUT = 5.0

#: variables that would point ``git`` at another repository, index or object store than ``base``'s (set in a git
#: hook, by a script): dropped from :func:`_changes`'s ``git status`` environment
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
                      "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX")


def _changes(base: Path) -> str | None:
    """What ``git status`` says of the checkout at ``base``: ``"+modified"`` where tracked files changed, else
    ``"+untracked"`` where files neither tracked nor ignored lie in a package folder (:data:`_PACKAGE_FOLDERS`;
    untracked files elsewhere, a script at the top, are no part of ragkit), else ``""``; ``None`` when it cannot
    tell: git not found, not answering within :data:`_GIT_TIMEOUT` seconds, exiting with an error (a folder
    safe.directory refuses: "dubious ownership", a damaged index).

    ``git --no-optional-locks`` (and ``GIT_OPTIONAL_LOCKS=0``): status neither takes the index's ``index.lock``
    nor rewrites the index, so a ``git add`` or commit run at the same time in that checkout does not fail with
    "Another git process seems to be running".  ``-z``: paths unquoted, each entry ended by a NUL."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    status = _git(base, env, "status", "--porcelain", "-z", "--untracked-files=no")
    if status is None:
        return None
    if status.strip(b"\0\n"):  # a tracked file changed (a rename's old path is part of the change too)
        return "+modified"
    # untracked files looked for in the package folders only (the whole tree's untracked walk reads every
    # folder git does not ignore: a large data folder, a virtual environment under another name)
    untracked = _git(base, env, "ls-files", "-z", "--others", "--exclude-standard", "--",
                     *(f.rstrip("/") for f in _PACKAGE_FOLDERS))
    if untracked is None:
        return None
    return "+untracked" if untracked.strip(b"\0\n") else ""


def _git(base: Path, env: dict[str, str], *args: str) -> bytes | None:
    """``git --no-optional-locks -C base args...``'s standard output, or ``None`` when git is not found, does not
    answer within :data:`_GIT_TIMEOUT` seconds or exits with an error."""
    try:
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(base), *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, timeout=_GIT_TIMEOUT,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


# ---------------------------------------------------------------------------------------------- models
def models(pipe: Any) -> list[dict[str, Any]]:
    """One record per step of ``pipe`` whose ``model`` parameter names an encoder: ``step`` (its path,
    ``pipeline[0].dense``), ``model`` (the name or path given), ``path`` (what was loaded: the packaged folder
    of ``all-MiniLM-L6-v2``, a fine-tuned copy after ``adapt``), and ``fingerprint``: the model identity the
    embedding cache keys its vectors by (:func:`~ragkit.encoders.sentence.model_fingerprint`: a content hash
    ``st-...`` of a model folder, ``file-...`` of a model file, the name itself for a hub id), read from the
    encoder the fit made (``None`` when none was made in this process: nothing is hashed here), or a registered
    encoder's ``key`` (with ``"registered": true``).  A hub id found in the Hugging Face cache adds
    ``revision``: the commit of the snapshot there."""
    from ragkit.encoders.custom import registered_encoder
    from ragkit.encoders.sentence import resolve_model
    from ragkit.pipelines.yaml import walk_leaves

    out = []
    for step, leaf in walk_leaves(pipe):
        name = getattr(getattr(leaf, "params", None), "model", None)
        if not isinstance(name, str):
            continue
        used = vars(leaf).get("model_path_") or name  # (a fine-tuned copy after an adapt fit)
        custom = registered_encoder(used)
        if custom is not None:
            key = getattr(custom, "key", None)
            out.append({"step": step, "model": name, "path": used, "fingerprint": key if isinstance(key, str) else None,
                        "registered": True})
            continue
        path = resolve_model(used)
        rec: dict[str, Any] = {"step": step, "model": name, "path": path, "fingerprint": _made_fingerprint(used, path)}
        if not Path(path).exists():  # a hub id (not a local folder or file), whether or not this process made
            # its encoder: the snapshot the cache would load
            revision = _hub_revision(path)
            if revision is not None:
                rec["revision"] = revision
        out.append(rec)
    return out


def _made_fingerprint(model: str, path: str) -> str | None:
    """The :func:`~ragkit.encoders.sentence.model_fingerprint` part of the key of an encoder (sentence or token)
    this process made for ``model`` (resolved to ``path``), else ``None``."""
    from ragkit.encoders.sentence import _ENCODERS
    from ragkit.encoders.tokens import _TOKEN_ENCODERS

    made: list[Any] = [*_ENCODERS.values(), *_TOKEN_ENCODERS.values()]
    for enc in made:
        if getattr(enc, "model_name", None) == model or getattr(enc, "path", None) == path:
            return str(enc.key).split("|", 1)[0]
    return None


def _hub_revision(model: str) -> str | None:
    """The commit of the Hugging Face cache's snapshot of hub id ``model`` (or ``sentence-transformers/<model>``),
    ``None`` when it is not cached (nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        for repo in (model, f"sentence-transformers/{model}"):
            found = try_to_load_from_cache(repo, "config.json")
            if isinstance(found, str):
                parts = Path(found).parts
                if "snapshots" in parts and parts.index("snapshots") + 1 < len(parts):
                    return parts[parts.index("snapshots") + 1]
    except Exception:  # noqa: BLE001 - not a valid hub id, no hub client: no revision to record
        return None
    return None


# ---------------------------------------------------------------------------------------------- data
def corpus_digest_text(corpus: Any) -> str:
    """``"blake2b:<32 hex digits>"`` identifying a :class:`~ragkit.types.Corpus`: its size, its ids in order and
    the digest of its titles and texts (:func:`~ragkit._fingerprints.corpus_texts_digest`, what a saved operator
    records; remembered per corpus), hashed in chunks: ~0.5 s per million documents.  ``ragkit eval -o``'s
    ``settings.corpus_fingerprint`` (not :func:`ragkit._fingerprints.corpus_fingerprint`, a saved operator's dict of
    its corpus's size and ids)."""
    from ragkit._fingerprints import corpus_texts_digest, hash_strings

    h = hashlib.blake2b(digest_size=16)
    h.update(f"corpus\t{len(corpus)}\n".encode())
    hash_strings(h, corpus.ids)
    h.update(corpus_texts_digest(corpus).encode())
    return f"{FINGERPRINT_KIND}:{h.hexdigest()}"


def queries_fingerprint(queries: Any) -> str:
    """``"blake2b:<32 hex digits>"`` identifying :class:`~ragkit.types.Queries`: their number, ids and texts in
    order, hashed in chunks."""
    from ragkit._fingerprints import hash_strings

    h = hashlib.blake2b(digest_size=16)
    h.update(f"queries\t{len(queries.ids)}\n".encode())
    hash_strings(h, queries.ids)
    hash_strings(h, queries.texts)
    return f"{FINGERPRINT_KIND}:{h.hexdigest()}"


def combined_fingerprint(parts: Mapping[str, str | None] | Iterable[tuple[str, str | None]]) -> str | None:
    """One fingerprint of several datasets' (``{dataset: fingerprint}``): the BLAKE2b of each name and its
    fingerprint, one line each, sorted; ``None`` when one is unknown."""
    items = list(parts.items() if isinstance(parts, Mapping) else parts)
    if not items or any(fp is None for _, fp in items):
        return None
    lines = sorted(f"{s}\t{fp}\n" for s, fp in items)
    return f"{FINGERPRINT_KIND}:" + hashlib.blake2b("".join(lines).encode("utf-8", "surrogatepass"),
                                                    digest_size=16).hexdigest()
