"""Saving and loading: composites save as pipelines, saves never replace a folder that is not a ragkit save."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import ArtifactError, ParamError
from ragkit.operator import Operator
from ragkit.pipelines import RRF, Parallel, Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus

TEXTS = ["red apples are sweet", "green pears and red apples", "the heart pumps blood", "blood cells carry oxygen",
         "apples keep doctors away", "oxygen for the heart"]
QUERIES = ["red apples", "heart blood", "oxygen"]


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS)


def _rows(run) -> list[list[int]]:
    return [r.rows.tolist() for r in run.rankings]


def test_composite_saves_as_a_pipeline_and_loads_back(corpus, tmp_path):
    hybrid = (BM25(k=4) + BM25(k=4, variant="okapi")).fit(corpus)
    assert isinstance(hybrid, Parallel)
    want = hybrid.search(QUERIES)
    hybrid.save(tmp_path / "h")
    for loaded in (Operator.load(tmp_path / "h"), Pipeline.load(tmp_path / "h")):
        got = loaded.search(QUERIES)
        assert _rows(got) == _rows(want)
        np.testing.assert_allclose(np.concatenate(got.scores), np.concatenate(want.scores))


def test_save_refuses_a_folder_that_is_not_a_ragkit_save(corpus, tmp_path):
    bm = BM25(k=2).fit(corpus)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a ragkit save"):
        bm.save(mine)
    with pytest.raises(ArtifactError, match="not a ragkit save"):
        Pipeline([bm]).save(mine)
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="is not a folder"):
        bm.save(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    bm.save(empty)  # an empty folder, or an earlier save, is replaced
    bm.save(empty)
    assert _rows(Operator.load(empty).search(QUERIES)) == _rows(bm.search(QUERIES))


def test_pipeline_load_uses_the_corpus_it_is_given(corpus, tmp_path, monkeypatch):
    pipe = Pipeline([BM25(k=3)]).fit(corpus)
    pipe.save(tmp_path / "p")
    import ragkit.eval.beir as beir

    monkeypatch.setattr(beir, "read_corpus", lambda path: pytest.fail(f"read {path} although a corpus was given"))
    loaded = Pipeline.load(tmp_path / "p", corpus=corpus)
    assert loaded.corpus_ is corpus and _rows(loaded.search(QUERIES)) == _rows(pipe.search(QUERIES))


def test_parallel_branch_names_must_be_unique():
    with pytest.raises(ParamError, match=r"parallel.names: \['a'\] name more than one branch"):
        Parallel([BM25(), BM25(variant="okapi")], fuse=RRF(), names=["a", "a"])


def test_atomic_file_keeps_the_old_file_when_a_write_fails(tmp_path):
    from ragkit._files import atomic_file

    target = tmp_path / "run.trec"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]
    with atomic_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".trec" and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]
    link = tmp_path / "latest.trec"  # a link is written through: its target changes, the link stays
    link.symlink_to(target)
    with atomic_file(link) as tmp:
        tmp.write_text("newer")
    assert link.is_symlink() and target.read_text() == "newer" and link.read_text() == "newer"


def test_operator_folder_whose_corpus_was_changed_is_refused(tmp_path):
    import json

    from ragkit.errors import ArtifactError
    from ragkit.operator import Operator
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=1).fit(Corpus.from_texts(["apple pie", "banana split", "cherry tart"])).save(tmp_path / "b")
    lines = (tmp_path / "b" / "corpus.jsonl").read_text().splitlines()
    a, b = json.loads(lines[0]), json.loads(lines[1])
    a["_id"], b["_id"] = b["_id"], a["_id"]
    (tmp_path / "b" / "corpus.jsonl").write_text("\n".join([json.dumps(a), json.dumps(b)] + lines[2:]) + "\n")
    with pytest.raises(ArtifactError, match=r"corpus\.jsonl: checksum mismatch"):  # the folder's checksums
        Operator.load(tmp_path / "b")
    with pytest.raises(ArtifactError, match=r"corpus\.jsonl: holds 3 documents whose ids differ"):
        Operator.load(tmp_path / "b", verify=False)  # the fingerprint in params.json still catches it


def test_a_pipeline_follows_its_edited_retrievers_and_refuses_ones_that_disagree(tmp_path):
    from ragkit.errors import DataError
    from ragkit.filters import TopK
    from ragkit.operator import Operator
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    c = Corpus.from_texts(["apple pie", "banana split", "cherry tart"])
    b = BM25(k=2)
    p = (b | TopK(k=1)).fit(c)
    p.save(tmp_path / "p")
    b.add(Corpus.from_texts(["date cake"], ids=["new-1"]))  # edited on its own after the pipeline's fit
    assert p.search(["date cake"]).doc_ids[0].tolist() == ["new-1"]
    p.save(tmp_path / "p")
    assert Operator.load(tmp_path / "p").search(["date cake"]).doc_ids[0].tolist() == ["new-1"]
    two = BM25(k=2).fit(c) + BM25(k=2).fit(Corpus.from_texts(["x y", "y z"]))
    with pytest.raises(DataError, match=r"branches\[1\]\.bm25 searches 2 documents and .*branches\[0\]\.bm25 3"):
        Pipeline([two]).search(["x"])
    with pytest.raises(DataError, match="cannot be merged"):
        two.save(tmp_path / "p")  # refused before the earlier save is touched
    assert Operator.load(tmp_path / "p").search(["date cake"]).doc_ids[0].tolist() == ["new-1"]


@pytest.mark.parametrize("edit", [lambda m: m.update(sha256="abc"), lambda m: m.update(format_version="1"),
                                  lambda m: m.update(nodes=[])])
def test_a_malformed_pipeline_manifest_is_an_artifact_error(tmp_path, edit):
    import json

    Pipeline([BM25(k=1)]).fit(Corpus.from_texts(["apple pie", "banana split"])).save(tmp_path / "p")
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    edit(manifest)
    (tmp_path / "p" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"manifest\.json: \w+ has the wrong type"):
        Pipeline.load(tmp_path / "p")



@pytest.mark.parametrize("where", [".", "sub"])
def test_saving_over_the_working_folder_leaves_the_process_in_the_new_one(corpus, tmp_path, monkeypatch, where):
    """``save(".")`` replaces the folder the process works in: the process follows it to the new
    folder (it was left in the deleted old one, where every relative path failed); from a
    subfolder the new save lacks, it lands in the new folder itself."""
    folder = tmp_path / "saved"
    BM25(k=5).fit(corpus).save(folder)
    (folder / "sub").mkdir()
    monkeypatch.chdir(folder / where)
    BM25(k=7).fit(corpus).save(Path(".") if where == "." else folder)
    assert Path.cwd() == folder.resolve()
    assert Operator.load(".").params.k == 7


def test_loading_the_wrong_folder_says_what_it_is_and_what_to_do(corpus, tmp_path):
    """A step folder inside a saved pipeline, a pipeline folder given to BM25.load, a file given to
    Pipeline.load and an operator folder given to Pipeline.load each say what they are (they said
    'corpus.jsonl: file not found', 'params.json: file not found', 'it does not exist')."""
    pipe = Pipeline([BM25(k=3)]).fit(corpus)
    pipe.save(tmp_path / "p")
    step = next(p for p in (tmp_path / "p").rglob("params.json")).parent
    with pytest.raises(ArtifactError, match=r"one step of the saved pipeline at .*p \(its documents are saved "
                                            r"there\): load that folder with Pipeline.load"):
        Operator.load(step)
    with pytest.raises(ArtifactError, match="a saved pipeline, not a single operator: load it with Pipeline.load"):
        BM25.load(tmp_path / "p")
    (tmp_path / "x.yaml").write_text("pipeline: [bm25: {}]\n")
    with pytest.raises(ArtifactError, match=r"x\.yaml: not a saved pipeline folder \(a file, not a folder"):
        Pipeline.load(tmp_path / "x.yaml")
    with pytest.raises(ArtifactError, match="a saved operator, not a pipeline .*one step of the saved pipeline"):
        Pipeline.load(step)
    BM25(k=3).fit(corpus).save(tmp_path / "op")
    with pytest.raises(ArtifactError, match="a saved operator, not a pipeline .*load it with Operator.load"):
        Pipeline.load(tmp_path / "op")
    with pytest.raises(ArtifactError, match="no such folder"):
        BM25.load(tmp_path / "nope")
    assert Operator.load(tmp_path / "op").search(QUERIES).doc_ids  # the right folders still load


def test_an_operator_folder_carries_checksums(tmp_path):
    """Operator.save writes checksums.json (SHA-256 of every file); load verifies them first, as
    Pipeline.load does with its manifest, so a changed byte is refused before it is read."""
    import json

    from ragkit.errors import ArtifactError
    from ragkit.operator import Operator
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=1).fit(Corpus.from_texts(["apple pie", "banana split", "cherry tart"])).save(tmp_path / "b")
    digests = json.loads((tmp_path / "b" / "checksums.json").read_text())
    assert {"params.json", "corpus.jsonl"} <= set(digests) and "checksums.json" not in digests
    assert Operator.load(tmp_path / "b").search(["cherry"]).doc_ids[0].tolist() == ["2"]
    name = sorted(set(digests) - {"params.json", "corpus.jsonl"})[0]  # one of BM25's own files
    target = tmp_path / "b" / name
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{name}: checksum mismatch; the file was changed or truncated"):
        Operator.load(tmp_path / "b")
    (tmp_path / "b" / "checksums.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match=r"checksums\.json: expected a JSON object"):
        Operator.load(tmp_path / "b")


@pytest.mark.parametrize("swap", [True, False])
def test_a_save_replaces_the_previous_one_whole(tmp_path, monkeypatch, swap):
    """Saving over an earlier save: on Linux the folders are swapped in one step (the path never
    goes missing); where that is unavailable, two renames; either way the new save is there,
    nothing of the old one is left beside it, and a process inside the folder follows it."""
    from ragkit import _saves
    from ragkit.operator import Operator
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    corpus = Corpus.from_texts(["apple pie", "banana split", "cherry tart"])
    BM25(k=1).fit(corpus).save(tmp_path / "b")
    calls = []
    real = _saves._exchange
    monkeypatch.setattr(_saves, "_exchange", lambda a, b: calls.append(1) or (real(a, b) if swap else False))
    monkeypatch.chdir(tmp_path / "b")
    BM25(k=2).fit(corpus).save(tmp_path / "b")
    assert calls == [1] and Operator.load(tmp_path / "b").params.k == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary or old folder left
    assert Path.cwd() == (tmp_path / "b").resolve() and Path("params.json").is_file()
    if sys.platform.startswith("linux") and swap:  # this machine's file system swaps folders
        a, b = tmp_path / "x", tmp_path / "y"
        a.mkdir(), b.mkdir(), (a / "in-x").touch()
        assert real(a, b) and (b / "in-x").exists() and not any(a.iterdir())


def test_a_save_never_deletes_files_it_did_not_write(corpus, tmp_path):
    """A save inside an earlier save's folder, or a user's file there, was deleted without a word when
    the earlier save was replaced: the README promises a save never replaces a folder of other files."""
    BM25(k=2).fit(corpus).save(tmp_path / "p")
    BM25(k=3).fit(corpus).save(tmp_path / "p")  # its own files only: replaced
    BM25(k=4).fit(corpus).save(tmp_path / "p" / "inner")
    (tmp_path / "p" / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match=r"an earlier ragkit save that also holds \d+ files it did not write "
                                            r"\('inner/checksums.json', .*replacing the save would delete them"):
        BM25(k=5).fit(corpus).save(tmp_path / "p")
    assert (tmp_path / "p" / "notes.txt").read_text() == "mine" and Operator.load(tmp_path / "p").params.k == 3
    pipe = Pipeline([BM25(k=2)]).fit(corpus)
    pipe.save(tmp_path / "q")
    (tmp_path / "q" / "ops" / "extra.npy").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"holds 1 files it did not write \('ops/extra.npy'\)"):
        pipe.save(tmp_path / "q")


def test_a_folder_that_lost_its_checksums_is_not_loaded_unchecked(corpus, tmp_path):
    """With checksums.json deleted (or a manifest without sha256), edited files loaded with verify=True."""
    import json

    BM25(k=2).fit(corpus).save(tmp_path / "op")
    (tmp_path / "op" / "checksums.json").unlink()
    with pytest.raises(ArtifactError, match=r"no checksums.json .* load it unchecked with verify=False"):
        Operator.load(tmp_path / "op")
    assert Operator.load(tmp_path / "op", verify=False).params.k == 2
    Pipeline([BM25(k=2)]).fit(corpus).save(tmp_path / "p")
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    for digests in ({}, None):
        if digests is None:
            manifest.pop("sha256")
        else:
            manifest["sha256"] = digests
        (tmp_path / "p" / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match="lists no checksums of the saved files"):
            Pipeline.load(tmp_path / "p")
    assert Pipeline.load(tmp_path / "p", verify=False).steps[0].params.k == 2


def test_a_saved_dense_refuses_another_encoder_and_reordered_slots(tmp_path):
    """A model name registered again with another encoder loaded and silently changed the rankings
    (query vectors from another space); reordered slots.npy mapped rows to other documents."""
    from ragkit.encoders import register_encoder, unregister_encoder
    from ragkit.retrievers import Dense

    class Seeded:
        dim = 8

        def __init__(self, seed: int) -> None:
            self.seed, self.key = seed, f"seeded-{seed}"

        def encode(self, texts, **_):
            import zlib

            return np.stack([np.random.default_rng(zlib.crc32(f"{self.seed}{t}".encode())).normal(size=8)
                             for t in texts]).astype(np.float32)

        encode_queries = encode

    docs = Corpus.from_texts([f"document {i}" for i in range(20)])
    register_encoder("swap-me", Seeded(0), replace=True)
    try:
        dense = Dense(model="swap-me", k=5).fit(docs)
        dense.remove(iter(["3", "4"]))  # any iterable of ids (a generator was taken as one id)
        dense.remove({"5": None}.keys())
        assert len(dense.corpus_) == 17
        dense.save(tmp_path / "d")
        assert Operator.load(tmp_path / "d").search(["document 1"]).doc_ids[0].tolist() == \
            dense.search(["document 1"]).doc_ids[0].tolist()
        register_encoder("swap-me", Seeded(1), replace=True)
        with pytest.raises(ArtifactError, match=r"dense was fitted with the encoder 'seeded-0', but model 'swap-me' is "
                                                r"now 'seeded-1'"):
            Operator.load(tmp_path / "d")
        unregister_encoder("swap-me")  # a new process that forgot to register it: said so, not "is now '...|msl='"
        with pytest.raises(ArtifactError, match=r"custom encoder 'seeded-0' registered as 'swap-me', and no encoder "
                                                r"is registered as 'swap-me' in this process"):
            Operator.load(tmp_path / "d")
        register_encoder("swap-me", Seeded(0), replace=True)
        slots = np.load(tmp_path / "d" / "slots.npy")
        np.save(tmp_path / "d" / "slots.npy", slots[::-1].copy())
        with pytest.raises(ArtifactError, match="slots.npy does not list the index's live vectors in order"):
            Operator.load(tmp_path / "d", verify=False)
    finally:
        unregister_encoder("swap-me")


def test_a_saved_pipeline_whose_yaml_disagrees_with_its_steps_is_refused(corpus, tmp_path):
    """With verify=False, an edited pipeline.yaml (k: 0, or k: 9) loaded: its parameters were neither
    validated nor used (each step runs its params.json's)."""
    Pipeline([BM25(k=2)]).fit(corpus).save(tmp_path / "p")
    text = (tmp_path / "p" / "pipeline.yaml").read_text()
    (tmp_path / "p" / "pipeline.yaml").write_text(text.replace("bm25: {k: 2}", "bm25: {k: 9}"))
    with pytest.raises(ArtifactError, match=r"pipeline.yaml: pipeline\[0\]\.bm25 is \{bm25: \{'k': 9\}\}, but "
                                            r".*params.json holds \{bm25: \{'k': 2\}\}"):
        Pipeline.load(tmp_path / "p", verify=False)
    (tmp_path / "p" / "pipeline.yaml").write_text(text.replace("bm25: {k: 2}", "bm25: {k: 0}"))
    with pytest.raises((ArtifactError, ParamError), match=r"k"):
        Pipeline.load(tmp_path / "p", verify=False)


def test_a_bad_saved_parameter_names_its_params_json(corpus, tmp_path):
    """A load refused a bad params.json with only 'bm25.k: expected ...', naming no file."""
    import json

    BM25(k=2).fit(corpus).save(tmp_path / "op")
    meta = json.loads((tmp_path / "op" / "params.json").read_text())
    meta["params"]["k"] = 0
    (tmp_path / "op" / "params.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"op/params.json: bm25.k: expected a positive integer, got 0"):
        Operator.load(tmp_path / "op", verify=False)
    for bad, why in ((5, r"expected a JSON object \(operator, params, fitted\), got int"),
                     ({**meta, "operator": "bm99"}, r"op/params.json: unknown operator 'bm99'")):
        (tmp_path / "op" / "params.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match=why):
            Operator.load(tmp_path / "op", verify=False)


def test_a_save_inside_a_saved_pipeline_is_refused_and_saves_are_readable_by_others(corpus, tmp_path):
    """A save into a step folder replaced it (checksums then failed the whole pipeline's load); saved
    folders were owner-only (renamed from mkdtemp), whatever the umask."""
    import os
    import stat

    pipe = Pipeline([BM25(k=2)]).fit(corpus)
    pipe.save(tmp_path / "p")
    (step,) = [p for p in (tmp_path / "p" / "ops").iterdir() if p.is_dir()]
    for inside in (step, tmp_path / "p" / "new-sub"):
        with pytest.raises(ArtifactError, match=r"inside the saved pipeline at .*a save here would break"):
            BM25(k=3).fit(corpus).save(inside)
    assert Pipeline.load(tmp_path / "p").steps[0].params.k == 2
    old = os.umask(0o022)
    try:
        BM25(k=2).fit(corpus).save(tmp_path / "op")
        pipe.save(tmp_path / "p2")
    finally:
        os.umask(old)
    for folder in (tmp_path / "op", tmp_path / "p2"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


def test_a_pipeline_that_lost_its_manifest_says_so(corpus, tmp_path):
    Pipeline([BM25(k=2)]).fit(corpus).save(tmp_path / "p")
    (tmp_path / "p" / "manifest.json").unlink()
    for load in (Operator.load, Pipeline.load):
        with pytest.raises(ArtifactError, match=r"lost its manifest.json, which holds its layout and checksums"):
            load(tmp_path / "p", verify=False)


def test_atomic_file_refuses_a_path_that_is_no_regular_file(tmp_path: Path):
    """The final rename replaced whatever had the name: a FIFO became a regular file (and ``-o
    /dev/null`` as root would replace the device); now refused before the block runs."""
    import os

    from ragkit._files import atomic_file
    from ragkit.run import Run
    from ragkit.types import Ranking

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    ran = []
    for target in (fifo, tmp_path / "folder", tmp_path / "dangling"):
        with pytest.raises(ArtifactError, match=r"exists and is not a regular file \(a folder, pipe or device\)"):
            with atomic_file(target):
                ran.append(target)
    assert ran == [] and fifo.is_fifo() and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    run = Run.from_rankings(["q1"], [Ranking(np.array([0]), np.array([1.0], np.float32))], np.array(["d1"]))
    with pytest.raises(ArtifactError, match="folder: exists and is not a regular file"):
        run.write_trec(tmp_path / "folder")
    (tmp_path / "ok.txt").write_text("old")
    with atomic_file(tmp_path / "ok.txt") as tmp:
        tmp.write_text("new")
    assert (tmp_path / "ok.txt").read_text() == "new"


def test_a_save_killed_midway_leaves_no_partial_copy_for_good(tmp_path, corpus):
    """A save killed midway (SIGKILL, an out-of-memory kill) left its hidden temporary folder beside the
    target for good, however many saves followed; the next save removes it (a folder of a live process
    or another host is left alone)."""
    import os
    import signal
    import socket
    import subprocess
    import textwrap

    target = tmp_path / "ix"
    BM25().fit(corpus).save(target)
    script = textwrap.dedent(f"""
        import os, signal
        import ragkit.retrievers.bm25 as bm25
        from ragkit.retrievers import BM25
        from ragkit.types import Corpus
        def die(self, folder):
            os.kill(os.getpid(), signal.SIGKILL)
        bm25.BM25._save = die
        BM25().fit(Corpus.from_texts({TEXTS!r})).save({str(target)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".ix.tmp-")]
    assert len(left) == 1 and left[0].startswith(f".ix.tmp-{proc.pid}@{socket.gethostname()}"), left
    assert Operator.load(target).search(["red apples"]).doc_ids[0].size  # the earlier save is intact
    live = tmp_path / f".ix.tmp-{os.getpid()}@{socket.gethostname()}-live"  # this process: still running
    other = tmp_path / f".ix.tmp-{proc.pid}@another-host-xyz"  # another machine's, on a shared disk
    live.mkdir(), other.mkdir()
    BM25().fit(corpus).save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ix", live.name, other.name])
    assert Operator.load(target).search(["red apples"]).doc_ids[0].size


def test_a_save_that_fills_the_disk_names_the_folder_and_keeps_the_earlier_save(tmp_path, corpus, monkeypatch):
    """A full disk during a save raised numpy's bare ``OSError: 15222 requested and 13280 written`` (or
    ``[Errno 28]``), naming no folder or file; the earlier save survived but the message did not say so."""
    import errno

    import ragkit._saves as saves

    target = tmp_path / "ix"
    BM25().fit(corpus).save(target)
    before = sorted(p.name for p in target.iterdir())
    real = np.save

    for exc in (OSError("15222 requested and 13280 written"),
                OSError(errno.ENOSPC, "No space left on device", "tf_data.npy")):
        def full(file, *a, exc=exc, **k):  # noqa: ANN001, ANN002, ANN003
            raise exc
        monkeypatch.setattr(saves.np, "save", full)
        with pytest.raises(ArtifactError, match=rf"{target}: the save could not be written \(.*\); an earlier save "
                                                r"there is unchanged: free space"):
            BM25().fit(corpus).save(target)
        monkeypatch.setattr(saves.np, "save", real)
        assert sorted(p.name for p in target.iterdir()) == before and not [
            p for p in tmp_path.iterdir() if p.name != "ix"]
    monkeypatch.setattr(saves.np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as info:  # another error (a network disk's EIO) is left as it is: retryable
        BM25().fit(corpus).save(target)
    assert not isinstance(info.value, ArtifactError)


def test_a_chunk_cache_folder_is_not_taken_for_a_saved_pipeline(tmp_path, corpus):
    """A chunk KV-cache folder's manifest.json (model, tokenizer, format_version) was taken for a pipeline's:
    ``pipe.save(cache_dir)`` replaced the folder, deleting the cached chunks and a user's notes beside them,
    and a save into a folder below it was refused as "inside the saved pipeline"."""
    import json

    cache = tmp_path / "kv"
    cache.mkdir()
    (cache / "manifest.json").write_text(json.dumps({"model_id": "m", "tokenizer_id": "t", "format_version": 1}))
    (cache / "notes.txt").write_text("mine")
    pipe = Pipeline([BM25()]).fit(corpus)
    with pytest.raises(ArtifactError, match="a non-empty folder that is not a ragkit save"):
        pipe.save(cache)
    assert sorted(p.name for p in cache.iterdir()) == ["manifest.json", "notes.txt"]
    pipe.save(cache / "pipe")  # a folder of its own below it
    assert Pipeline.load(cache / "pipe").search(["red apples"]).doc_ids[0].size
    pipe.save(tmp_path / "p")  # a real pipeline save is still replaced by the next save, and guards what is inside
    pipe.save(tmp_path / "p")
    with pytest.raises(ArtifactError, match="inside the saved pipeline at"):
        pipe.save(tmp_path / "p" / "inner")


def test_load_with_the_fitted_documents_in_another_order_says_so(tmp_path, corpus):
    """``load(path, corpus=<the same ids, shuffled>)`` said "other ids"; an index's rows are positions,
    so the order matters, and the error now says that the ids are the same and the order is not."""
    BM25(k=3).fit(corpus).save(tmp_path / "b")
    shuffled = corpus.subset(np.arange(len(corpus))[::-1])
    with pytest.raises(ArtifactError, match=r"given \d+ documents with the same ids in another order \(its rows are "
                                            r"positions in the fitted order\); pass the corpus it was fitted on, in "
                                            r"its order"):
        BM25.load(tmp_path / "b", corpus=shuffled)
    with pytest.raises(ArtifactError, match=r"given \d+ documents with other ids; pass the corpus"):
        BM25.load(tmp_path / "b", corpus=corpus.subset(np.arange(len(corpus) - 1)))


def test_write_trec_writes_into_a_named_pipe_and_a_device(tmp_path):
    """``Run.write_trec`` refused a named pipe or ``/dev/stdout`` (its temporary file cannot be renamed over one),
    while ``ragkit eval --run`` wrote into them with its own copy of the check; now ``write_trec`` writes
    straight into a character device or a pipe (:func:`ragkit._files.text_output`), and the command calls it."""
    import os
    import threading

    from ragkit.run import Run

    run = Run.from_dict({"q1": {"d1": 2.0, "d2": 1.0}})
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    run.write_trec(fifo, tag="t")
    reader.join(10)
    assert got == ["q1 Q0 d1 1 2 t\nq1 Q0 d2 2 1 t\n"] and fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file left beside it
    run.write_trec(os.devnull)
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)
