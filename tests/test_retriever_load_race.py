"""RagkitRetriever.load (or ``RagkitRetriever(pipeline=folder)``) of a folder that another process saves again
meanwhile: the pipeline and the retriever's ``k`` / ``search_kwargs`` (``retriever.json``) come from one save.

The pipeline was read under ``load_unreplaced`` (the folder's shared lock, the manifest's identity compared before
and after), ``retriever.json`` afterwards, unprotected and unchecked: a save landing between the two gave the
pipeline of one save with the ``k`` and default filter of the next (a reviewer's three processes, two saving
``k=3`` / ``k=7`` retrievers of different documents to one folder in a loop, one loading: 7 mixed loads of 1,564).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402

from ragkit.errors import ArtifactError  # noqa: E402
from ragkit.integrations.langchain import RagkitRetriever  # noqa: E402
from ragkit.retrievers import BM25  # noqa: E402

TEXTS = ["cats purr on warm laps", "cells divide by mitosis", "cats and dogs as pets", "protein folding in cells",
         "dogs fetch sticks", "mitochondria power cells"]


def _retriever(tag: str) -> RagkitRetriever:
    """Save "a": documents a0..a5, k=3, filter tenant a; save "b": documents b0..b5, k=5, filter tenant b."""
    docs = [Document(page_content=t, id=f"{tag}{i}", metadata={"tenant": tag}) for i, t in enumerate(TEXTS)]
    return RagkitRetriever(pipeline=BM25(k=10), corpus=docs, k=3 if tag == "a" else 5,
                           search_kwargs={"filter": {"tenant": tag}})


def _which(r: RagkitRetriever) -> tuple[str, str, str]:
    """(the save its documents come from, the save its k comes from, the save its filter comes from)."""
    docs = str(r.pipeline.corpus_.ids[0])[0]
    return docs, "a" if r.k == 3 else "b", r.search_kwargs["filter"]["tenant"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _retriever("a").save(tmp_path / "app")
    return tmp_path / "app"


def test_a_save_between_the_pipeline_and_its_settings_does_not_mix_them(folder, monkeypatch):
    """A save of "b" landing right after the pipeline's protected load (before the old code read retriever.json):
    the loaded retriever is all "a" (its pipeline, k and filter), never "a"'s documents with "b"'s k and filter."""
    from ragkit.pipelines import store

    real = store.load_unreplaced
    other = _retriever("b")
    calls = []

    def then_save(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        if not calls:
            calls.append(1)
            other.save(folder)  # (the load's lock released: this save swaps at once)
        return out

    monkeypatch.setattr(store, "load_unreplaced", then_save)
    for load in (lambda: RagkitRetriever.load(folder), lambda: RagkitRetriever(pipeline=str(folder))):
        calls.clear()
        _retriever("a").save(folder)
        r = load()
        assert calls  # the save landed during the load
        assert _which(r) == ("a", "a", "a")
        assert {d.id[0] for d in r.invoke("cats cells")} == {"a"} and len(r.invoke("cats cells")) == 3
    assert _which(RagkitRetriever.load(folder)) == ("b", "b", "b")  # the later save loads whole too


def test_a_save_inside_the_load_makes_it_load_again(folder, monkeypatch):
    """Without ``flock`` (some network file systems; here switched off) a save of "b" lands inside the load,
    between the pipeline's files and retriever.json: the manifest's identity changed, so the load is made
    again, and gives "b" whole."""
    from ragkit.pipelines import store

    @contextlib.contextmanager
    def no_flock(*args: Any, **kwargs: Any):
        yield False

    real = store._load_pipeline
    other = _retriever("b")
    calls = []

    def then_save(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            other.save(folder)
        return out

    monkeypatch.setattr(store, "folder_lock", no_flock)
    monkeypatch.setattr(store, "_load_pipeline", then_save)
    r = RagkitRetriever.load(folder)
    assert len(calls) == 2  # loaded again once the save was seen
    assert _which(r) == ("b", "b", "b")


def test_settings_changed_after_the_checksums_were_verified_are_refused(folder, monkeypatch):
    """retriever.json rewritten in place (same manifest: no save) after the pipeline's checksums were verified
    and before it is read: its bytes are checked against the manifest's checksum, not taken unchecked."""
    from ragkit.pipelines import store

    real = store._load_pipeline

    def then_edit(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        (folder / "retriever.json").write_text(json.dumps({"k": 9, "search_kwargs": {}}))
        return out

    monkeypatch.setattr(store, "_load_pipeline", then_edit)
    with pytest.raises(ArtifactError, match=r"retriever.json: checksum mismatch"):
        RagkitRetriever.load(folder)


def test_settings_the_manifest_does_not_list_are_refused(folder, tmp_path):
    """A retriever.json dropped into a folder of Pipeline.save (not listed in its checksums) is not read
    unchecked; a folder of Pipeline.save alone still wraps with no settings."""
    from ragkit.pipelines import Pipeline

    Pipeline([_retriever("a").pipeline]).save(tmp_path / "plain")
    r = RagkitRetriever(pipeline=tmp_path / "plain")
    assert r.k == 4 and r.search_kwargs == {}  # (the defaults)
    (tmp_path / "plain" / "retriever.json").write_text(json.dumps({"k": 2, "search_kwargs": {}}))
    with pytest.raises(ArtifactError, match=r"plain/retriever.json: not listed in manifest.json's sha256"):
        RagkitRetriever.load(tmp_path / "plain")


_WORKER = textwrap.dedent("""
    import sys, time
    from langchain_core.documents import Document
    from ragkit.integrations.langchain import RagkitRetriever
    from ragkit.retrievers import BM25
    role, path, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    texts = [f"document {i} about topic {i % 7} and words {i % 11}" for i in range(60)]
    end = time.time() + secs
    if role in "ab":
        docs = [Document(page_content=t, id=f"{role}{i}", metadata={"tenant": role}) for i, t in enumerate(texts)]
        r = RagkitRetriever(pipeline=BM25(k=20), corpus=docs, k=3 if role == "a" else 5,
                            search_kwargs={"filter": {"tenant": role}})
        while time.time() < end:
            r.save(path)
        print("saved")
    else:
        n = mixed = 0
        while time.time() < end:
            r = RagkitRetriever.load(path)
            got = {str(r.pipeline.corpus_.ids[0])[0], "a" if r.k == 3 else "b", r.search_kwargs["filter"]["tenant"]}
            n += 1
            mixed += len(got) > 1
        print(f"loads {n} mixed {mixed}")
""")


@pytest.mark.slow
def test_two_processes_saving_while_one_loads_never_mix_two_saves(folder, tmp_path):
    """The reviewer's race, shortened: processes "a" and "b" save to one folder in a loop while a third loads it."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(script), role, str(folder), "12"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for role in ("a", "b", "load")]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    n, mixed = (int(x) for x in outs[2][0].split()[1::2])
    assert n > 0 and mixed == 0, outs[2][0]
