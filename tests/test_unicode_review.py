"""Unicode review: a lone surrogate (bytes decoded with ``errors="surrogateescape"``) in a query id, a run's ids or a
metadata value is refused when it comes in, naming where, not by a bare ``UnicodeEncodeError`` at the first save;
``--run -`` / ``-o -`` write UTF-8 whatever the locale's encoding, and human tables print what the terminal can show;
``RagkitRetriever.load`` of a missing folder says so; ids that differ only in Unicode normalization (NFC / NFD) are
hinted at, shown with ``ascii``."""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from ragkit import Corpus, Queries, Run
from ragkit.errors import ArtifactError, DataError
from ragkit.retrievers import BM25

SUR = "\udcc3"  # what errors="surrogateescape" makes of the byte 0xC3
NFC = "caf\xe9"
NFD = unicodedata.normalize("NFD", NFC)


def _corpus() -> Corpus:
    return Corpus(ids=["a", "b"], texts=["ok text", "other words"])


# ------------------------------------------------------------------ 7. surrogates in query and run ids
def test_queries_refuse_a_surrogate_in_an_id():
    """``Queries(ids=["q\\udcc3"], ...)`` was accepted (texts were checked, ids not), and its run's write_trec failed
    with a bare UnicodeEncodeError."""
    with pytest.raises(DataError, match=r"Queries\.ids\[1\] is 'q\\udcc3', which holds a lone surrogate '\\udcc3'.*"
                                        r"decode the source with its real encoding"):
        Queries(ids=["ok", "q" + SUR], texts=["ok", "ok"])


def test_search_refuses_a_surrogate_query_id_before_searching(tmp_path):
    bm25 = BM25().fit(_corpus())
    with pytest.raises(DataError, match="lone surrogate"):
        bm25.search({"q" + SUR: "ok"})


def test_run_from_dict_refuses_surrogate_ids():
    with pytest.raises(DataError, match=r"Run\.query_ids\[0\] is 'q\\udcc3'.*lone surrogate"):
        Run.from_dict({"q" + SUR: {"d": 1.0}})
    with pytest.raises(DataError, match=r"query 'q2': Run\.doc_ids\[1\]\[1\] is 'd\\udcc3'.*lone surrogate"):
        Run.from_dict({"q1": {"d": 1.0}, "q2": {"e": 2.0, "d" + SUR: 1.0}})


def test_run_constructor_refuses_a_surrogate_document_id():
    with pytest.raises(DataError, match=r"query 'q': Run\.doc_ids\[0\]\[0\].*lone surrogate"):
        Run(["q"], [np.array(["x" + SUR], dtype=object)], [np.array([1.0], dtype=np.float32)])


def test_write_trec_refuses_a_surrogate_by_name(tmp_path):
    """A run whose arrays were changed after it was built: write_trec's own check names the id, and writes nothing
    (was: UnicodeEncodeError from the file's encoder)."""
    run = Run.from_dict({"q": {"d": 1.0}})
    run.doc_ids[0] = np.array(["d" + SUR], dtype=object)
    path = tmp_path / "r.trec"
    with pytest.raises(DataError, match=r"cannot write a TREC run file: document ids\[0\] is 'd\\udcc3'"):
        run.write_trec(path)
    assert not path.exists()


# ------------------------------------------------------------------ 8. surrogates in metadata
@pytest.mark.parametrize("values, row, kind", [
    ([SUR, "ok"], 0, "a str"),
    (["ok", ["x", SUR]], 1, "a list"),
    ([None, {"k": SUR}], 1, "a dict"),
    ([1, SUR], 1, "a str"),
    ([None, SUR], 1, "a str"),
    ([3, [SUR]], 1, "a list"),
    (["x", [SUR]], 1, "a list"),
    (np.array(["a", "b" + SUR]), 1, "a str"),
])
def test_corpus_refuses_a_surrogate_in_metadata(values, row, kind):
    """A metadata value holding a lone surrogate was accepted; Corpus.save then failed with a bare
    UnicodeEncodeError naming neither the document nor the field."""
    doc = ["a", "b"][row]
    with pytest.raises(DataError, match=rf"metadata field 'm' of document '{doc}' \(row {row}\) holds a lone "
                                        rf"surrogate '\\udcc3' \({kind} .*no save could write it: decode the source"):
        Corpus(ids=["a", "b"], texts=["x", "y"], metadata={"m": values})


def test_corpus_refuses_a_surrogate_in_a_metadata_field_name():
    with pytest.raises(DataError, match=r"metadata field 'm\\udcc3' holds a lone surrogate .* in its name"):
        Corpus(ids=["a", "b"], texts=["x", "y"], metadata={"m" + SUR: ["1", "2"]})


def test_metadata_without_surrogates_still_saves(tmp_path):
    meta = {"city": ["Z\xfcrich", "\u6771\u4eac"], "tags": [["a", "\xe9"], None], "year": [2020, None],
            "d": [{"k": "\U0001F600"}, None], "f": np.array([1.5, np.nan]), "mix": ["x", 5]}
    c = Corpus(ids=["a", "b"], texts=["x", "y"], metadata=meta)
    c.save(tmp_path / "c.jsonl")
    BM25().fit(c).save(tmp_path / "bm")
    assert json.loads((tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()[1])["metadata"]["city"] == \
        "\u6771\u4eac"


def test_langchain_add_documents_refuses_a_surrogate_in_metadata(tmp_path):
    """README: RagkitRetriever refuses at add time a value its save could not write; a surrogate got in, and
    r.save(...) failed with a bare UnicodeEncodeError."""
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from ragkit.integrations.langchain import RagkitRetriever

    r = RagkitRetriever.from_documents([Document(page_content="Die Stra\xdfe", metadata={"stadt": "M\xfcnchen"},
                                                 id="s")], pipeline=BM25(), k=3)
    with pytest.raises(DataError, match=r"metadata field 'stadt' of document 'x' .*lone surrogate"):
        r.add_documents([Document(page_content="x", metadata={"stadt": SUR}, id="x")])
    r.save(tmp_path / "lc")  # nothing was added: the save writes
    assert r.get_by_ids(["x"]) == []


# ------------------------------------------------------------------ 11. RagkitRetriever.load of a missing folder
def test_langchain_load_of_a_missing_folder_says_so(tmp_path):
    pytest.importorskip("langchain_core")
    from ragkit.integrations.langchain import RagkitRetriever

    with pytest.raises(ArtifactError, match=r"nonexistent: no such folder; expected a folder written by "
                                            r"RagkitRetriever\.save"):
        RagkitRetriever.load(tmp_path / "nonexistent")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArtifactError, match=r"f: a file, not a folder"):
        RagkitRetriever.load(tmp_path / "f")


# ------------------------------------------------------------------ 9. standard output in a non-UTF-8 locale
def _index(tmp_path: Path) -> Path:
    c = Corpus(ids=[NFC, "\u6771\u4eac"], texts=["Die Stra\xdfe ist lang", "\u6771\u4eac Stra\xdfe"])
    BM25(tokenizer="unicode").fit(c).save(tmp_path / "idx")
    return tmp_path / "idx"


def _cli(*args: object, charset: str = "latin-1"):
    """The command line with a standard output of ``charset`` (``PYTHONIOENCODING=latin-1``, a C locale)."""
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner(charset=charset).invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_run_dash_writes_utf8_whatever_stdout_encoding(tmp_path):
    """``--run -`` wrote the locale's bytes (0xe9 for e-acute: Run.read_trec refuses the file) and failed with a
    traceback on a character the encoding lacks."""
    idx = _index(tmp_path)
    (tmp_path / "q.jsonl").write_text(json.dumps({"_id": "\u6771\u4eac-" + NFC, "text": "Stra\xdfe"}) + "\n",
                                      encoding="utf-8")
    res = _cli("search", "--index", idx, "--queries", tmp_path / "q.jsonl", "--run", "-")
    assert res.exit_code == 0, (res.output, res.exception)
    (tmp_path / "out.trec").write_bytes(res.stdout_bytes)
    run = Run.read_trec(tmp_path / "out.trec")
    assert run.query_ids == ["\u6771\u4eac-" + NFC]
    assert set(run.doc_ids[0].tolist()) == {NFC, "\u6771\u4eac"}


def test_json_dash_is_utf8_json(tmp_path):
    idx = _index(tmp_path)
    (tmp_path / "q.tsv").write_text("\u6771\u4eac\tStra\xdfe\n", encoding="utf-8")
    res = _cli("search", "--index", idx, "--queries", tmp_path / "q.tsv", "-o", "-")
    assert res.exit_code == 0, (res.output, res.exception)
    assert json.loads(res.stdout_bytes.decode("utf-8"))["results"][0]["query_id"] == "\u6771\u4eac"


def test_search_table_shows_what_the_terminal_can(tmp_path):
    """``ragkit search --index idx 東京`` exited 1 with a traceback ending in UnicodeEncodeError in a Latin-1
    locale: the table shows the characters Latin-1 lacks as escapes."""
    idx = _index(tmp_path)
    res = _cli("search", "--index", idx, "\u6771\u4eac")
    assert res.exit_code == 0, (res.output, res.exception)
    out = res.stdout_bytes.decode("latin-1")
    assert "\\u6771\\u4eac" in out and "Stra\xdfe" in out


# ------------------------------------------------------------------ 6. NFC / NFD hints
def test_respelled_sets_unicode_normalization_aside():
    from ragkit.eval.metrics import respelled, respelt_pair

    assert respelled([NFD, "x"], [NFC]) == [(NFD, NFC)]
    assert respelt_pair(NFD, NFC) == ("'cafe\\u0301' is judged as 'caf\\xe9'? (one text in two Unicode normalization "
                                      "forms, NFD and NFC, which look alike: write both in one, e.g. "
                                      "unicodedata.normalize('NFC', id))")
    assert respelt_pair("1", "001") == "'1' is judged as '001'?"


def test_evaluate_names_normalization_forms_of_query_ids():
    from ragkit.eval import evaluate

    with pytest.raises(DataError, match=r"'cafe\\u0301' is judged as 'caf\\xe9'\? \(one text in two Unicode "
                                        r"normalization forms, NFD and NFC"):
        evaluate(Run.from_dict({NFD: {"d": 1.0}}), {NFC: {"d": 1}}, ["ndcg@10"])


def test_evaluate_warns_of_normalization_forms_of_document_ids(caplog):
    from ragkit.eval import evaluate

    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate(Run.from_dict({"q": {NFD: 1.0}}), {"q": {NFC: 1}}, ["ndcg@10"])
    assert "'cafe\\u0301' is judged as 'caf\\xe9'? (one text in two Unicode normalization forms" in caplog.text
