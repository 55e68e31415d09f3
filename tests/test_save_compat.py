"""Saves of older ragkit versions say when they may rank differently from when they were saved, and saved
parameters that disagree with the stored index are refused (review of save compatibility):

* a BM25 save of format 1 (no ``weights.json``: docs x terms float32 counts, written before 2026-12; its vocabulary
  may hold Porter's empty stem) warns once, naming the folder, and a pipeline's note no longer says it "ranks as
  saved";
* an int8 HNSW index of format 1 (queries coded otherwise before a8eb881 / ae21541) warns likewise; new saves
  write index format 2;
* ``params.json`` naming another dtype / metric than ``index.json`` records, or another stemmer than the BM25
  ``weights.json`` records, is an ArtifactError naming the file, the parameter and both values;
* a manifest without ``fitted``, or with a ``format_version`` of ``true`` or ``-1``, is refused as such.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import edit_json, reseal

from ragkit.errors import ArtifactError
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.retrievers._index_files import FORMAT
from ragkit.types import Corpus

TEXTS = ["red apples are sweet", "green pears and red apples", "the patient's heart pumps blood",
         "blood cells carry oxygen", "apples keep doctors away", "oxygen for the heart", "red red blood of the heart",
         "apples apples apples"]
QUERIES = ["red apples", "heart blood", "oxygen"]


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS)


def _as_format_1_bm25(step: Path, bm: BM25, own: bool) -> None:
    """Rewrite the BM25 folder ``step`` (a current save of ``bm``) as the ragkit at 54b8e7b wrote it (the layout of
    /tmp/rv_compat/saves_old): ``params.json`` of format 1 (no corpus fingerprints), ``vocab.json`` and docs x terms
    float32 counts ``tf_data`` / ``tf_indices`` / ``tf_indptr``; its tokenizer kept Porter's empty stem (of
    "patient's") as a term, counted in the document's length.  ``own``: saved on its own (no checksums then;
    a pipeline's step keeps only these files)."""
    meta = json.loads((step / "params.json").read_text())
    for p in step.iterdir():
        if p.name != "corpus.jsonl":
            p.unlink()
    tf = bm.tf_.tocsr()
    empty = np.zeros((tf.shape[0], 1), np.float32)
    empty[TEXTS.index("the patient's heart pumps blood"), 0] = 1
    tf = sp.csr_matrix(sp.hstack([tf, sp.csr_matrix(empty)]), dtype=np.float32)
    np.save(step / "tf_data.npy", tf.data.astype(np.float32))
    np.save(step / "tf_indices.npy", tf.indices)
    np.save(step / "tf_indptr.npy", tf.indptr)
    (step / "vocab.json").write_text(json.dumps([*bm.terms(), ""]))
    old = {"fitted": True, "format_version": 1, "operator": "bm25", "ragkit_version": "0.1.0",
           "params": meta["params"]}
    (step / "params.json").write_text(json.dumps(old, indent=2, sort_keys=True))
    assert own == (step / "corpus.jsonl").is_file()


def _ranked(run: Any) -> tuple[list[list[int]], list[float]]:
    return [r.rows.tolist() for r in run.rankings], np.round(np.concatenate(run.scores), 9).tolist()


def _older(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "was written by an older ragkit (" in r.getMessage()]


# ---------------------------------------------------------------- 1. BM25 of format 1
def test_a_format_1_bm25_save_warns_once_naming_its_folder(corpus, tmp_path, caplog):
    bm = BM25(k=5).fit(corpus)
    bm.save(tmp_path / "bm")
    _as_format_1_bm25(tmp_path / "bm", bm, own=True)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        loaded = Operator.load(tmp_path / "bm", verify=False)  # (format 1 wrote no checksums)
        Operator.load(tmp_path / "bm", verify=False)
    said = _older(caplog)
    assert len(said) == 1, said  # once per folder
    assert str(tmp_path / "bm") in said[0] and "no weights.json" in said[0]
    assert "may rank differently from when it was saved" in said[0] and "fit it again" in said[0]
    assert "empty term" in said[0]
    assert loaded._older_save is not None
    assert len(loaded.search(QUERIES).rankings) == 3  # it still loads and searches
    # saved again: today's layout (its weights saved), which loads and ranks as saved, without a note
    loaded.save(tmp_path / "again")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        again = Operator.load(tmp_path / "again")
    assert again._older_save is None and not _older(caplog)
    assert _ranked(again.search(QUERIES)) == _ranked(loaded.search(QUERIES))


def test_a_pipeline_with_an_older_step_does_not_say_it_ranks_as_saved(corpus, tmp_path, caplog):
    pipe = Pipeline([BM25(k=5)]).fit(corpus)
    pipe.save(tmp_path / "p")
    (step,) = (tmp_path / "p").glob("ops/*-bm25")
    _as_format_1_bm25(step, pipe.steps[0], own=False)
    edit_json(step / "params.json", lambda m: m["params"].update(k1=1.5))  # a default that changed since
    edit_json(tmp_path / "p" / "manifest.json", lambda m: m.update(format_version=1))
    reseal(tmp_path / "p")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Pipeline.load(tmp_path / "p")
    assert len(_older(caplog)) == 1 and str(step) in _older(caplog)[0]
    notes = [r.getMessage() for r in caplog.records if "defaults differed" in r.getMessage()]
    assert len(notes) == 1, notes
    assert "ranks as saved" not in notes[0] and "may rank differently" in notes[0]
    assert "pipeline[0].bm25" in notes[0]


def test_a_lucene_save_weighed_before_the_n_docs_rule_warns_when_a_document_is_blank(tmp_path, caplog):
    corpus = Corpus.from_texts([*TEXTS, ""])
    BM25(k=5).fit(corpus).save(tmp_path / "bm")
    edit_json(tmp_path / "bm" / "weights.json", lambda m: (m["weights_of"].pop("n_docs"), m.pop("analysis")))
    reseal(tmp_path / "bm")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert Operator.load(tmp_path / "bm")._older_save is not None
    assert len(_older(caplog)) == 1 and "n_docs" in _older(caplog)[0]


def test_a_current_bm25_save_loads_without_a_note(corpus, tmp_path, caplog):
    Pipeline([BM25(k=5)]).fit(Corpus.from_texts(TEXTS[:2] + TEXTS[3:])).save(tmp_path / "p")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert Pipeline.load(tmp_path / "p").steps[0]._older_save is None
    assert not _older(caplog)


# ---------------------------------------------------------------- 2. int8 HNSW of index format 1
def test_an_int8_hnsw_index_of_format_1_warns_and_new_saves_write_format_2(corpus, tmp_path, caplog):
    Dense(k=5, search="hnsw", dtype="i8").fit(corpus).save(tmp_path / "d")
    assert json.loads((tmp_path / "d" / "index.json").read_text())["format"] == FORMAT == 2
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert Operator.load(tmp_path / "d")._older_save is None
    assert not _older(caplog)
    edit_json(tmp_path / "d" / "index.json", lambda m: (m.update(format=1), m.pop("i8_fitted_n")))
    reseal(tmp_path / "d")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        old = Operator.load(tmp_path / "d")
        Operator.load(tmp_path / "d")
    said = _older(caplog)
    assert len(said) == 1 and str(tmp_path / "d") in said[0] and "format 1" in said[0]
    assert "may rank slightly differently" in said[0]
    assert old.index_.older_query_coding and old._older_save is not None
    old.save(tmp_path / "d2")  # saved again: searched with today's coding from now on
    assert json.loads((tmp_path / "d2" / "index.json").read_text())["format"] == 2
    assert not Operator.load(tmp_path / "d2").index_.older_query_coding


def test_an_exact_f32_index_of_format_1_loads_without_a_note(corpus, tmp_path, caplog):
    Dense(k=5, search="exact").fit(corpus).save(tmp_path / "d")
    edit_json(tmp_path / "d" / "index.json", lambda m: m.update(format=1))
    reseal(tmp_path / "d")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert Operator.load(tmp_path / "d")._older_save is None
    assert not _older(caplog)


# ---------------------------------------------------------------- 3. params.json against the stored index
@pytest.mark.parametrize(("key", "value", "saved"), [("dtype", "f16", "'i8'"), ("metric", "ip", "'cos'")])
def test_dense_params_that_disagree_with_index_json_are_refused(corpus, tmp_path, key, value, saved):
    Dense(k=5, search="hnsw", dtype="i8").fit(corpus).save(tmp_path / "d")
    edit_json(tmp_path / "d" / "params.json", lambda m: m["params"].update({key: value}))
    reseal(tmp_path / "d")
    for verify in (True, False):
        with pytest.raises(ArtifactError) as e:
            Operator.load(tmp_path / "d", verify=verify)
        msg = str(e.value)
        assert msg.startswith(f"{tmp_path / 'd' / 'params.json'}: {key} is {value!r}")
        assert f"built with {key} {saved}" in msg and "index.json" in msg


def test_bm25_records_its_analysis_and_refuses_params_that_disagree(corpus, tmp_path):
    BM25(k=5).fit(corpus).save(tmp_path / "bm")
    analysis = json.loads((tmp_path / "bm" / "weights.json").read_text())["analysis"]
    assert analysis == {"tokenizer": "alnum", "stopwords": "lucene", "stemmer": "porter", "fields": "title_text"}
    edit_json(tmp_path / "bm" / "params.json", lambda m: m["params"].update(stemmer="none"))
    with pytest.raises(ArtifactError) as e:
        Operator.load(tmp_path / "bm", verify=False)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'bm' / 'params.json'}: stemmer is 'none'")
    assert "built with stemmer 'porter'" in msg and "weights.json" in msg


# ---------------------------------------------------------------- 4. manifest.json's fitted and format_version
def test_a_manifest_without_fitted_says_so(corpus, tmp_path):
    Pipeline([BM25(k=5)]).fit(corpus).save(tmp_path / "p")
    edit_json(tmp_path / "p" / "manifest.json", lambda m: m.pop("fitted"))
    with pytest.raises(ArtifactError, match=r"manifest\.json: manifest\.json lacks 'fitted'; expected true or false"):
        Pipeline.load(tmp_path / "p")


def test_a_manifest_saying_unfitted_over_fitted_steps_says_so(corpus, tmp_path):
    Pipeline([BM25(k=5)]).fit(corpus).save(tmp_path / "p")
    edit_json(tmp_path / "p" / "manifest.json", lambda m: m.update(fitted=False))
    with pytest.raises(ArtifactError, match=r"manifest\.json: says \"fitted\": false .* holds a fitted step"):
        Pipeline.load(tmp_path / "p", verify=False)


@pytest.mark.parametrize("version", [True, -1, 0])
def test_a_format_version_that_is_not_a_format_is_refused(corpus, tmp_path, version):
    Pipeline([BM25(k=5)]).fit(corpus).save(tmp_path / "p")
    edit_json(tmp_path / "p" / "manifest.json", lambda m: m.update(format_version=version))
    with pytest.raises(ArtifactError, match=rf"manifest\.json: format_version is {json.dumps(version)}; expected an "
                                            r"integer >= 1"):
        Pipeline.load(tmp_path / "p")
    BM25(k=5).fit(corpus).save(tmp_path / "o")
    edit_json(tmp_path / "o" / "params.json", lambda m: m.update(format_version=version))
    with pytest.raises(ArtifactError, match=r"params\.json: 'format_version' holds .*expected an integer >= 1"):
        Operator.load(tmp_path / "o", verify=False)
