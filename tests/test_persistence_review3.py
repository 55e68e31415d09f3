"""Saves of earlier ragkit versions, interrupted saves and crafted folders (review 3 of save / load)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import edit_json, reseal

from ragkit._saves import CHECKSUMS
from ragkit.errors import ArtifactError, DataError
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus

TEXTS = ["red apples are sweet", "green pears and red apples", "the heart pumps blood", "blood cells carry oxygen",
         "apples keep doctors away", "oxygen for the heart", "red red blood of the heart", "apples apples apples"]
QUERIES = ["red apples", "heart blood", "oxygen"]


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS)


def _rows(run) -> list[list[int]]:
    return [r.rows.tolist() for r in run.rankings]


def _ranked(run) -> tuple[list[list[int]], list[float]]:
    """Rows and scores (rounded), for rankings that must be the same."""
    return _rows(run), np.round(np.concatenate(run.scores), 9).tolist()


# ---------------------------------------------------------------- 1. a default changed since the save
def test_a_pipeline_saved_before_a_default_changed_loads_as_saved_with_a_note(corpus, tmp_path, caplog):
    """pipeline.yaml names only non-default parameters, params.json all: a step whose default changed since the
    save (mmr's fetch_k 200 -> None) was refused as "the folder was changed after saving", verify=False too.
    Here an earlier ragkit whose BM25 default was k1=1.5 wrote the pipeline: its YAML omits k1, its params.json
    says 1.5.  It loads as saved (k1=1.5, as fitted), with one note naming the step, the key and both values."""
    Pipeline([BM25(k=5)]).fit(corpus).save(tmp_path / "p")
    (params,) = (tmp_path / "p").glob("ops/*-bm25/params.json")
    edit_json(params, lambda m: m["params"].update(k1=1.5))  # what the earlier ragkit recorded
    reseal(tmp_path / "p")
    want = _ranked(BM25(k=5, k1=1.5).fit(corpus).search(QUERIES))
    assert want != _ranked(BM25(k=5).fit(corpus).search(QUERIES))  # (the value matters)
    for verify in (True, False):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ragkit"):
            pipe = Pipeline.load(tmp_path / "p", verify=verify)
        assert pipe.steps[0].params.k1 == 1.5 and pipe.steps[0].params.k == 5
        assert _ranked(pipe.search(QUERIES)) == want
        said = [r.getMessage() for r in caplog.records if "defaults differed" in r.getMessage()]
        assert len(said) == 1, said
        assert "pipeline[0].bm25" in said[0] and "k1=1.5 (today's default: 0.9)" in said[0]
        assert "loads and ranks as saved; save it again" in said[0]
    # saved again, its YAML names k1: no note any more
    pipe.save(tmp_path / "p2")
    assert "k1: 1.5" in (tmp_path / "p2" / "pipeline.yaml").read_text()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert _ranked(Pipeline.load(tmp_path / "p2").search(QUERIES)) == want
    assert not [r for r in caplog.records if "defaults differed" in r.getMessage()]


def test_a_key_pipeline_yaml_names_must_still_agree_with_params_json(corpus, tmp_path):
    Pipeline([BM25(k=5, k1=1.2)]).fit(corpus).save(tmp_path / "p")
    (params,) = (tmp_path / "p").glob("ops/*-bm25/params.json")
    edit_json(params, lambda m: m["params"].update(k1=1.5))
    reseal(tmp_path / "p")
    with pytest.raises(ArtifactError, match=r"pipeline.yaml: pipeline\[0\]\.bm25 is \{bm25: \{'k': 5, 'k1': 1.2\}\}, "
                                            r"but .*params.json holds .*'k1': 1.5.*the two files match "
                                            r"manifest\.json's checksums: the code that reads them may have changed"):
        Pipeline.load(tmp_path / "p")


# ---------------------------------------------------------------- 2. a save killed between its two renames
def _kill_between_renames(target: Path) -> None:
    """Save BM25 over ``target`` in a child process as a system without renameat2 does (two renames), killed
    between them: ``target`` missing, the earlier save at ``.<name>.old-*``."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import ragkit._saves as saves
        from ragkit.retrievers import BM25
        from ragkit.types import Corpus
        saves._exchange = lambda a, b: False
        rename = Path.rename
        def ren(self, to):
            out = rename(self, to)
            if ".old-" in str(to):
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        Path.rename = ren
        BM25(k=3, k1=2.0).fit(Corpus.from_texts({TEXTS!r})).save({str(target)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert not target.exists() and len(list(target.parent.glob(f".{target.name}.old-*"))) == 1


def test_a_save_killed_between_its_two_renames_is_restored_by_the_next_load_or_save(corpus, tmp_path, caplog):
    target = tmp_path / "ix"
    BM25(k=3).fit(corpus).save(target)
    want = _rows(Operator.load(target).search(QUERIES))
    _kill_between_renames(target)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert _rows(Operator.load(target).search(QUERIES)) == want  # the earlier save, put back
    assert any("renamed it back" in r.getMessage() for r in caplog.records)
    assert target.is_dir() and not list(tmp_path.glob(".ix.old-*"))
    _kill_between_renames(target)
    BM25(k=4).fit(corpus).save(target)  # a save restores it too, then replaces it: nothing is left beside it
    assert Operator.load(target).params.k == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_an_earlier_save_moved_aside_by_a_live_save_is_named_not_taken(corpus, tmp_path):
    """A save still running (here: this process's, by its temporary folder's name) may rename its new folder
    into place at any moment: the load does not take the earlier save back, it names it."""
    import socket

    BM25(k=3).fit(corpus).save(tmp_path / "ix")
    (tmp_path / "ix").rename(tmp_path / ".ix.old-abcd1234")
    (tmp_path / f".ix.tmp-{os.getpid()}@{socket.gethostname()}-abcd1234").mkdir()
    for load in (Operator.load, Pipeline.load):
        with pytest.raises(ArtifactError, match=r"\.ix\.old-abcd1234 holds an earlier save of it.*rename it back to "
                                                r"ix"):
            load(tmp_path / "ix")
    assert not (tmp_path / "ix").exists()


def test_an_earlier_save_left_beside_a_folder_saved_again_is_removed_by_the_next_save(corpus, tmp_path):
    """``.ix.old-*`` left by a killed save while ``ix`` was written again (so no load restored it) stayed for
    ever; the next save removes it once its save has ended, and leaves one a live save may still rename."""
    import shutil
    import socket

    BM25(k=3).fit(corpus).save(tmp_path / "ix")
    shutil.copytree(tmp_path / "ix", tmp_path / ".ix.old-abcd1234")  # its save ended: no temporary folder
    shutil.copytree(tmp_path / "ix", tmp_path / ".ix.old-live5678")
    (tmp_path / f".ix.tmp-{os.getpid()}@{socket.gethostname()}-live5678").mkdir()  # a save of this live process
    BM25(k=4).fit(corpus).save(tmp_path / "ix")
    assert Operator.load(tmp_path / "ix").params.k == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ix.old-live5678", f".ix.tmp-{os.getpid()}@"
                                                          f"{socket.gethostname()}-live5678", "ix"]


# ---------------------------------------------------------------- 3. crafted BM25 arrays, memory-mapped
def test_a_bm25_folder_with_out_of_range_ids_is_refused_memory_mapped_too(corpus, tmp_path):
    """Checksums recomputed over crafted document ids: a memory-mapped load skipped the range check, and the
    first search crashed the process (segmentation fault in scipy).  Run in a child: the old code dies."""
    BM25().fit(corpus).save(tmp_path / "ix")
    ind = np.load(tmp_path / "ix" / "tf_indices.npy")
    ind[:] = np.iinfo(ind.dtype).max
    np.save(tmp_path / "ix" / "tf_indices.npy", ind)
    reseal(tmp_path / "ix")
    for mmap in (True, False):
        code = textwrap.dedent(f"""
            from ragkit.errors import ArtifactError
            from ragkit.operator import Operator
            try:
                Operator.load({str(tmp_path / "ix")!r}, mmap={mmap}).search(["red apples"])
            except ArtifactError as e:
                print("REFUSED", e)
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 0, (mmap, proc.returncode, proc.stderr[-500:])
        assert "REFUSED" in proc.stdout and "corrupt BM25 arrays: document ids 2147483647..2147483647" in proc.stdout


# ---------------------------------------------------------------- 4. folders from before checksums
def test_an_operator_folder_from_before_checksums_says_how_to_load_it(corpus, tmp_path):
    BM25(k=3).fit(corpus).save(tmp_path / "ix")
    (tmp_path / "ix" / CHECKSUMS).unlink()
    edit_json(tmp_path / "ix" / "params.json", lambda m: m.update(format_version=1))
    with pytest.raises(ArtifactError, match=r"no checksums.json .*written by a ragkit from before checksums .*load it "
                                            r"with verify=False, then save it again"):
        Operator.load(tmp_path / "ix")
    Operator.load(tmp_path / "ix", verify=False).save(tmp_path / "ix")
    assert Operator.load(tmp_path / "ix").params.k == 3


# ---------------------------------------------------------------- 5. wrong types in params.json
@pytest.mark.parametrize("key, value, expected", [
    ("format_version", "2", "expected an integer"),
    ("corpus", "abc", r"expected an object \{\"n\""),
    ("corpus", {"ids_sha1": "00"}, r"expected an object \{\"n\""),
    ("fitted", "no", "expected true or false"),
    ("params", None, "expected an object of the operator's parameters"),
    ("operator", 5, "expected the operator's name"),
])
def test_a_params_json_key_of_the_wrong_type_is_an_artifact_error(corpus, tmp_path, key, value, expected):
    BM25(k=3).fit(corpus).save(tmp_path / "ix")
    edit_json(tmp_path / "ix" / "params.json", lambda m: m.update({key: value}))
    held = json.dumps(value)
    with pytest.raises(ArtifactError, match=rf"ix/params.json: '{key}' holds {__import__('re').escape(held)} "
                                            rf"\(a JSON \w+\); {expected}"):
        Operator.load(tmp_path / "ix", verify=False)


# ---------------------------------------------------------------- 6. learned attributes a load lacks
def test_a_built_in_operator_lacking_what_its_save_learned_says_upgrade(corpus, tmp_path):
    BM25(k=3).fit(corpus).save(tmp_path / "ix")
    edit_json(tmp_path / "ix" / "params.json", lambda m: m.update(learned=[*m["learned"], "future_table_"],
                                                                   ragkit_version="9.9.0"))
    with pytest.raises(ArtifactError, match=r"lacks future_table_ once loaded.*saved by a newer ragkit \(ragkit "
                                            r"9\.9\.0, this is .*upgrade ragkit") as e:
        Operator.load(tmp_path / "ix", verify=False)
    assert "must implement _save" not in str(e.value)


# ---------------------------------------------------------------- 7. messages
def test_dbnorm_method_dis_from_a_saved_folder_says_to_save_again(tmp_path, caplog):
    from ragkit.filters import DBNorm

    DBNorm().save(tmp_path / "db")
    edit_json(tmp_path / "db" / "params.json", lambda m: m["params"].update(method="dis"))
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert Operator.load(tmp_path / "db", verify=False).params.method == "dualis"
    said = [r.getMessage() for r in caplog.records if "'dis'" in r.getMessage()]
    assert len(said) == 1 and "save it again" in said[0] and "Write method" not in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        DBNorm(method="dis")
    assert "Write method: dualis" in caplog.records[0].getMessage()


def test_a_truncated_jsonl_line_is_worded_once(tmp_path):
    from ragkit.eval.beir import read_corpus

    (tmp_path / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "unfinished\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: malformed JSON line \(Unterminated string starting at "
                                        r"column \d+\)") as e:
        read_corpus(tmp_path / "corpus.jsonl")
    assert "at at" not in str(e.value)


def test_the_temporary_folder_of_an_interrupted_save_is_called_so(corpus, tmp_path):
    import shutil

    Pipeline([BM25(k=2)]).fit(corpus).save(tmp_path / "p")
    BM25(k=2).fit(corpus).save(tmp_path / "op")
    for src, name in (("p", ".p.tmp-99999999@some-host-ab12cd34"), ("op", ".op.tmp-99999999@host-ab12cd34")):
        tmp = tmp_path / name
        shutil.copytree(tmp_path / src, tmp)
        (tmp / ("manifest.json" if src == "p" else CHECKSUMS)).unlink()  # (written last: not yet)
        for load in (Operator.load, Pipeline.load):
            with pytest.raises(ArtifactError, match=rf"the temporary folder of a save of .*{src} \(process 99999999\) "
                                                    r"that did not complete.*safe to delete"):
                load(tmp)
