"""BEIR files in odd shapes (a review's datasets): a qrels header with an extra column, query ids judged without
their leading zeros, a gzip-compressed corpus, a JSON array for JSON lines, judged documents the corpus lacks in
write_beir, ids holding tabs / line breaks or empty, and numbers for texts in corpus.jsonl."""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import pytest

from ragkit import Corpus, Queries, load_beir
from ragkit.errors import DataError
from ragkit.eval import read_corpus, read_queries, write_beir
from ragkit.eval.beir import read_qrels

_DOCS = [{"_id": "d1", "title": "", "text": "cells divide"}, {"_id": "d2", "title": "t", "text": "proteins fold"},
         {"_id": "d3", "title": None, "text": "genes express"}]
_QUERIES = [{"_id": "q1", "text": "cell division"}, {"_id": "q2", "text": "protein folding"}]


def _dataset(root: Path, docs: list[dict] = _DOCS, queries: list[dict] = _QUERIES,
             qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n") -> Path:
    """A BEIR folder of ``docs`` and ``queries`` (JSON lines) and the test split's ``qrels`` (the whole file)."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


# ------------------------------------------------------------------ 1. a qrels header names its columns
def test_a_qrels_header_naming_beir_columns_reads_them_by_name_extra_columns_ignored(tmp_path):
    """``query-id corpus-id score annotators`` with rows ``q d 1 1`` was read as trec_eval's ``qid iter doc rel``:
    document '1' judged 1 for every query (no score without a word)."""
    f = tmp_path / "a.tsv"
    f.write_text("query-id\tcorpus-id\tscore\tannotators\nq1\td1\t1\t3\nq1\td2\t0\t1\nq2\td3\t2\t1\n")
    assert read_qrels(f) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    f.write_text("query-id\tcorpus-id\tscore\tnote\nq1\td1\t1\tsure\n")  # a text column: no "relevance 'sure'"
    assert read_qrels(f) == {"q1": {"d1": 1}}
    f.write_text("score corpus-id query-id\n1 d1 q1\n2 d2 q2\n")  # by name, in any order, space-separated too
    assert read_qrels(f) == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    f.write_text("query-id\tcorpus-id\tscore\tannotators\nq1\td1\t1\t3\nq1\td2\t1\n")  # a line short of a column
    with pytest.raises(DataError, match=re.escape(f"{f}:3: expected 4 tab-separated columns 'query-id corpus-id "
                                                  "score annotators', as the header on line 1 names them, got 3")):
        read_qrels(f)


def test_a_qrels_file_without_a_beir_header_keeps_the_trec_eval_rule(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("q1 0 d1 1\nq2 0 d2 2\n")  # no header: trec_eval's 'qid iter docid rel'
    assert read_qrels(f) == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    f.write_text("qid\titer\tdocno\trel\nq1\t0\td1\t1\n")  # a header of other names: read by position
    assert read_qrels(f) == {"q1": {"d1": 1}}


def test_load_beir_scores_a_qrels_file_with_an_annotators_column(tmp_path):
    root = _dataset(tmp_path / "ds", qrels="query-id\tcorpus-id\tscore\tannotators\nq1\td1\t1\t1\nq2\td2\t1\t2\n")
    assert load_beir(root).qrels() == {"q1": {"d1": 1}, "q2": {"d2": 1}}


# ------------------------------------------------------------------ 2. query ids judged without leading zeros
def test_judged_query_ids_spelt_without_leading_zeros_are_hinted_at(tmp_path):
    queries = [{"_id": "0001", "text": "cell division"}, {"_id": "0002", "text": "protein folding"}]
    root = _dataset(tmp_path / "ds", queries=queries, qrels="query-id\tcorpus-id\tscore\n1\td1\t1\n2\td2\t1\n")
    with pytest.raises(DataError) as e:
        load_beir(root).qrels()
    said = str(e.value)
    assert "test.tsv:2: 2 judged query ids (the first, '1', on this line) are not in" in said, said
    assert "'1' is '0001' in queries.jsonl? (2 of the 2 ids name a query of queries.jsonl once leading zeros" in said
    root = _dataset(tmp_path / "other", qrels="query-id\tcorpus-id\tscore\nq9\td1\t1\n")  # no respelling: no hint
    with pytest.raises(DataError) as e:
        load_beir(root).qrels()
    assert "in queries.jsonl?" not in str(e.value)


# ------------------------------------------------------------------ 3. gzip
def test_a_gzip_compressed_corpus_is_said_to_need_gunzip(tmp_path):
    root = _dataset(tmp_path / "ds")
    corpus = root / "corpus.jsonl"
    (root / "corpus.jsonl.gz").write_bytes(gzip.compress(corpus.read_bytes()))
    corpus.unlink()
    with pytest.raises(DataError, match=re.escape(f"{corpus}: file not found; found corpus.jsonl.gz beside it: "
                                                  "gunzip it")):
        load_beir(root)
    with pytest.raises(DataError, match="found corpus.jsonl.gz beside it: gunzip it"):
        read_corpus(corpus)
    with pytest.raises(DataError, match=re.escape(f"{root / 'corpus.jsonl.gz'}: is gzip-compressed; expected "
                                                  "plain UTF-8 text: gunzip it first")):  # was "not UTF-8"
        read_corpus(root / "corpus.jsonl.gz")
    qrels = root / "qrels" / "test.tsv"
    (root / "qrels" / "dev.tsv").write_bytes(gzip.compress(qrels.read_bytes()))
    with pytest.raises(DataError, match="dev.tsv: is gzip-compressed"):
        read_qrels(root / "qrels" / "dev.tsv")


# ------------------------------------------------------------------ 4. a JSON array for JSON lines
@pytest.mark.parametrize("layout", ["per_line", "one_line", "pretty", "after_blank_lines"])
def test_a_json_array_is_said_to_be_one(tmp_path, layout):
    root = _dataset(tmp_path / "ds")
    text = {"per_line": "[" + ",\n".join(json.dumps(d) for d in _DOCS) + "]\n",
            "one_line": json.dumps(_DOCS),
            "pretty": json.dumps(_DOCS, indent=2),
            "after_blank_lines": "\n  \n" + json.dumps(_DOCS)}[layout]
    (root / "corpus.jsonl").write_text(text)
    line = 3 if layout == "after_blank_lines" else 1
    with pytest.raises(DataError, match=re.escape(f"{root / 'corpus.jsonl'}:{line}: this is a JSON array; expected "
                                                  "JSON Lines: one object per line")):
        load_beir(root)
    (root / "queries.jsonl").write_text(json.dumps(_QUERIES, indent=1))
    with pytest.raises(DataError, match=r"queries\.jsonl:1: this is a JSON array"):
        read_queries(root / "queries.jsonl")


# ------------------------------------------------------------------ 5. write_beir writes what load_beir reads
def test_write_beir_writes_judgements_of_documents_the_corpus_lacks_as_load_beir_keeps_them(tmp_path, caplog):
    corpus = Corpus.from_texts(["cells divide", "proteins fold"], ids=["d1", "d2"])
    qrels = {"test": {"q1": {"d1": 1, "gone": 1}, "q2": {"d2": 1}}}
    root = write_beir(tmp_path / "ds", corpus, {"q1": "cells", "q2": "proteins"}, qrels)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        ds = load_beir(root)
        assert ds.qrels("test") == qrels["test"]
    assert "1 judged document is not in corpus.jsonl (e.g. 'gone', judged for query 'q1')" in caplog.text


# ------------------------------------------------------------------ 6. ids with tabs, line breaks, or empty
@pytest.mark.parametrize("bad, said", [("doc\t1", "holds a tab"), ("doc\n1", "holds a line feed"),
                                       ("doc\r1", "holds a carriage return"), ("", "'_id' is empty")])
def test_a_file_id_with_a_tab_a_line_break_or_empty_is_refused_naming_the_line(tmp_path, bad, said):
    docs = [*_DOCS[:2], {**_DOCS[2], "_id": bad}]
    root = _dataset(tmp_path / "ds", docs=docs)
    with pytest.raises(DataError, match=re.escape(f"{root / 'corpus.jsonl'}:3: ") + ".*" + re.escape(said)):
        load_beir(root)
    queries = [_QUERIES[0], {**_QUERIES[1], "_id": bad}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    with pytest.raises(DataError, match=re.escape(f"{root / 'queries.jsonl'}:2: ") + ".*" + re.escape(said)):
        read_queries(root / "queries.jsonl")


@pytest.mark.parametrize("bad, said", [("doc\t1", "holds a tab"), ("a\nb", "holds a line feed"),
                                       ("a\r", "holds a carriage return"), ("", "is '', an empty id")])
def test_corpus_and_queries_refuse_an_id_with_a_tab_a_line_break_or_empty(bad, said):
    with pytest.raises(DataError, match=r"Corpus\.ids\[1\] .*" + re.escape(said)):
        Corpus(ids=["a", bad], texts=["x", "y"])
    with pytest.raises(DataError, match=r"Queries\.ids\[1\] .*" + re.escape(said)):
        Queries(["q", bad], ["x", "y"])
    assert Corpus(ids=["a b", "c"], texts=["x", "y"]).ids.tolist() == ["a b", "c"]  # a space is another matter


# ------------------------------------------------------------------ 7. a number for a text
@pytest.mark.parametrize("key, value, kind", [("text", 12345, "int"), ("text", 1.5, "float"), ("title", True, "bool"),
                                              ("title", ["a"], "list")])
def test_a_number_or_list_for_a_text_or_title_is_refused_as_corpus_refuses_it(tmp_path, key, value, kind):
    docs = [*_DOCS[:1], {**_DOCS[1], key: value}, _DOCS[2]]
    root = _dataset(tmp_path / "ds", docs=docs)
    with pytest.raises(DataError, match=re.escape(f"{root / 'corpus.jsonl'}:2: {key!r} must be a string, got {kind}")):
        load_beir(root)
    with pytest.raises(DataError, match="string"):  # as the corpus built in Python refuses it
        Corpus(ids=["a"], texts=[value]) if key == "text" else Corpus(ids=["a"], texts=["x"], titles=[value])


def test_a_null_title_or_text_reads_as_empty(tmp_path):
    docs = [{"_id": "d1", "title": None, "text": "cells"}, {"_id": "d2", "title": "t", "text": None}]
    corpus = read_corpus(_dataset(tmp_path / "ds", docs=docs) / "corpus.jsonl")
    assert corpus.titles.tolist() == ["", "t"] and corpus.texts.tolist() == ["cells", ""]
