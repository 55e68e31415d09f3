"""The fingerprint of the corpus a saved operator was fitted on covers its texts and titles, not just its
ids: ``load(path, corpus=<the same ids, edited texts>)`` was accepted, and the saved index (BM25's counts,
dense vectors, token vectors) then scored documents whose returned text was another.  Folders saved
before (ids only in ``params.json``) still load, their texts unchecked (logged once)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from conftest import HashedEncoder

from ragkit import _saves as saves_module
from ragkit._fingerprints import TEXTS_KEY, corpus_fingerprint, corpus_texts_digest
from ragkit.encoders import register_encoder
from ragkit.errors import ArtifactError
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus

register_encoder("fingerprint-hashed", HashedEncoder("fingerprint-hashed-v1", 16), replace=True)

TEXTS = ["apple pie with cream", "banana split", "cherry tart", "plum jam on toast", "pear cider"]
IDS = ["d0", "d1", "d2", "d3", "d4"]


def _corpus(texts: list[str] = TEXTS, titles: list[str] | None = None) -> Corpus:
    return Corpus(ids=IDS, texts=texts, titles=titles)


def _edited(at: int = 2, titles: list[str] | None = None) -> Corpus:
    texts = list(TEXTS)
    texts[at] = "EDITED " + texts[at]
    return _corpus(texts, titles)


@pytest.mark.parametrize("make", [lambda: BM25(k=3), lambda: Dense(model="fingerprint-hashed", k=3)],
                         ids=["bm25", "dense"])
def test_load_with_edited_texts_under_the_same_ids_is_refused(tmp_path, make):
    make().fit(_corpus()).save(tmp_path / "op")
    with pytest.raises(ArtifactError, match=r"the same 5 document ids with other texts or titles \(1 differ; the "
                                            r"first: document 'd2', row 2, its text\).*pass the corpus it was "
                                            r"fitted on.*or fit the operator again"):
        Operator.load(tmp_path / "op", corpus=_edited())
    loaded = Operator.load(tmp_path / "op", corpus=_corpus())  # the fitted corpus (an equal copy) loads
    assert loaded.corpus_.texts[2] == "cherry tart" and len(loaded.search(["cherry tart"]).doc_ids[0]) >= 1


def test_an_edited_title_is_refused_and_named(tmp_path):
    titles = ["", "", "", "t3", ""]
    BM25(k=2).fit(_corpus(titles=titles)).save(tmp_path / "b")
    with pytest.raises(ArtifactError, match=r"first: document 'd3', row 3, its title"):
        BM25.load(tmp_path / "b", corpus=_corpus(titles=["", "", "", "t3 edited", ""]))
    BM25.load(tmp_path / "b", corpus=_corpus(titles=titles))


def test_a_pipeline_load_with_edited_texts_is_refused(tmp_path):
    Pipeline([BM25(k=3)]).fit(_corpus()).save(tmp_path / "p")
    with pytest.raises(ArtifactError, match=r"other texts or titles \(1 differ; the first: document 'd4'"):
        Pipeline.load(tmp_path / "p", corpus=_edited(at=4))
    assert Pipeline.load(tmp_path / "p", corpus=_corpus()).search(["pear"]).doc_ids[0][0] == "d4"
    assert Pipeline.load(tmp_path / "p").search(["pear"]).doc_ids[0][0] == "d4"


def test_an_edited_corpus_jsonl_is_refused_even_unverified(tmp_path):
    BM25(k=1).fit(_corpus()).save(tmp_path / "b")
    path = tmp_path / "b" / "corpus.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[1]["text"] = "something else"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(ArtifactError, match=r"corpus\.jsonl: holds the 5 document ids this operator was fitted on, "
                                            r"but texts or titles that differ"):
        Operator.load(tmp_path / "b", verify=False)


def test_other_ids_name_the_first_one_that_differs(tmp_path):
    BM25(k=1).fit(_corpus()).save(tmp_path / "b")
    other = Corpus(ids=["d0", "d1", "x2", "d3", "d4"], texts=TEXTS)
    with pytest.raises(ArtifactError, match=r"given 5 documents with other ids; pass the corpus it was fitted on.*"
                                            r"or fit the operator on this corpus \(the first difference: row 2 is "
                                            r"document 'x2' in the given corpus, 'd2' in the fitted one\)"):
        BM25.load(tmp_path / "b", corpus=other)
    with pytest.raises(ArtifactError, match=r"row 4 is document 'd4', only in the fitted corpus"):
        BM25.load(tmp_path / "b", corpus=_corpus().subset(np.arange(4)))


def _write_old_format(folder):
    """``folder``'s params.json as ragkit wrote it before the texts' digest: ids only (checksums redone)."""
    from ragkit._files import folder_checksums
    from ragkit._saves import write_json

    meta = json.loads((folder / "params.json").read_text())
    meta.pop(TEXTS_KEY)
    write_json(folder / "params.json", meta)
    if (folder / saves_module.CHECKSUMS).is_file():
        (folder / saves_module.CHECKSUMS).unlink()
        write_json(folder / saves_module.CHECKSUMS, folder_checksums(folder))


def test_a_folder_saved_with_the_ids_only_fingerprint_still_loads(tmp_path, caplog, monkeypatch):
    BM25(k=2).fit(_corpus()).save(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "params.json").read_text())[TEXTS_KEY] == corpus_texts_digest(_corpus())
    _write_old_format(tmp_path / "b")
    monkeypatch.setattr(saves_module, "_UNCHECKED_TEXTS_SAID", False)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert BM25.load(tmp_path / "b").search(["cherry"]).doc_ids[0][0] == "d2"
        assert BM25.load(tmp_path / "b", corpus=_corpus()).search(["cherry"]).doc_ids[0][0] == "d2"
        BM25.load(tmp_path / "b", corpus=_edited())  # texts it cannot check: accepted, as before
    said = [r.getMessage() for r in caplog.records if "checked by their ids only" in r.getMessage()]
    assert len(said) == 1, said  # logged once
    with pytest.raises(ArtifactError, match="with other ids"):  # its ids are still checked
        BM25.load(tmp_path / "b", corpus=Corpus(ids=["a", "b", "c", "d", "e"], texts=TEXTS))


def test_the_ids_fingerprint_is_unchanged():
    """``params.json``'s ``corpus`` keeps the form earlier ragkit wrote and reads (so they load this one's saves)."""
    import hashlib

    assert corpus_fingerprint(_corpus()) == {"n": 5, "ids_sha1": hashlib.sha1("\x00".join(IDS).encode()).hexdigest()}


def test_the_texts_digest_tells_apart_what_a_plain_join_would_not():
    a = Corpus(ids=["a", "b"], texts=["x\x00y", "z"])
    b = Corpus(ids=["a", "b"], texts=["x", "y\x00z"])
    c = Corpus(ids=["a", "b"], texts=["xy", "z"])
    d = Corpus(ids=["a", "b"], texts=["x", "yz"])
    e = Corpus(ids=["a", "b"], texts=["z", "xy"], titles=["", ""])
    f = Corpus(ids=["a", "b"], texts=["xy", "z"], titles=["t", ""])
    digests = {corpus_texts_digest(x) for x in (a, b, c, d, e, f)}
    assert len(digests) == 6
    assert corpus_texts_digest(Corpus(ids=["q", "r"], texts=["x", "yz"], titles=["", ""])) == corpus_texts_digest(d)


def test_cli_eval_of_a_saved_pipeline_refuses_a_dataset_with_edited_texts() -> None:
    """``ragkit eval --pipeline SAVED --data D`` compared the ids only: a dataset whose texts changed under the same
    ids was scored with an index of the old texts."""
    from ragkit.cli._data import _check_same_corpus
    from ragkit.errors import RagkitError

    fitted = Corpus(ids=["a", "b"], texts=["red fox", "blue whale"])
    _check_same_corpus(fitted, Corpus(ids=["a", "b"], texts=["red fox", "blue whale"]), "saved/", "data/")
    with pytest.raises(RagkitError, match=r"--data data/ has the same 2 document ids with other texts or titles"):
        _check_same_corpus(fitted, Corpus(ids=["a", "b"], texts=["red fox", "grey whale"]), "saved/", "data/")
    with pytest.raises(RagkitError, match=r"--data data/ has 2 documents with other ids"):
        _check_same_corpus(fitted, Corpus(ids=["a", "c"], texts=["red fox", "blue whale"]), "saved/", "data/")
