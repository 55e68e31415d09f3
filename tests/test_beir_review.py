"""A review of ragkit on BEIR's quirks: hand-downloaded and renamed zips, datasets whose queries are
documents (ArguAna, Quora: searched one deeper, the --run file as scored), --trace scored as the table,
evaluate's silent drop of judged documents, a qrels line ending in a tab, a local zip said 'downloaded'."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import random
import re
import threading
import zipfile
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from ragkit import evaluate, load_beir
from ragkit.errors import DataError, ParamError
from ragkit.eval import beir_subsets, download_beir
from ragkit.eval.beir import read_qrels
from ragkit.retrievers import BM25


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _dataset(root: Path, docs: list[dict], queries: list[dict], qrels: str) -> Path:
    """A BEIR folder: ``docs`` and ``queries`` as JSON lines, ``qrels`` the test split's rows (header added)."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def _forum(root: Path, forum: str) -> Path:
    """A small CQADupStack forum: 30 documents, 6 judged queries (ids apart from the documents')."""
    docs = [{"_id": str(i), "title": f"{forum} {i}", "text": f"topic{i % 6} word{i} {forum}"} for i in range(30)]
    queries = [{"_id": str(100 + i), "text": f"topic{i} question"} for i in range(6)]
    rows = "".join(f"{100 + i}\t{d}\t1\n" for i in range(6) for d in (i, i + 6))
    return _dataset(root / forum, docs, queries, rows)


def _zip(folder: Path, archive: Path, top: str | None) -> Path:
    """Zip ``folder``'s files into ``archive`` under the top folder ``top`` (None: at the top)."""
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                rel = f.relative_to(folder).as_posix()
                z.write(f, f"{top}/{rel}" if top else rel)
    return archive


def _arguana(root: Path, n: int = 40, others: int = 200, seed: int = 5) -> Path:
    """ArguAna's layout: each query is an argument that is in the corpus under the query's id, and the
    counter-argument (a few of its words) is the relevant document."""
    r = random.Random(seed)
    voc = [f"w{i}" for i in range(300)]

    def text(m: int) -> str:
        return " ".join(r.choice(voc) for _ in range(m))

    docs, queries, rows = [], [], []
    for i in range(n):
        arg = text(30)
        counter = " ".join(r.sample(arg.split(), 4)) + " " + text(26)
        docs += [{"_id": f"a{i}-pro", "text": arg}, {"_id": f"a{i}-con", "text": counter}]
        queries.append({"_id": f"a{i}-pro", "text": arg})
        rows.append(f"a{i}-pro\ta{i}-con\t1\n")
    docs += [{"_id": f"other-{i}", "text": text(30)} for i in range(others)]
    return _dataset(root, docs, queries, "".join(rows))


def _trec(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        q, _, d, _, s, _ = line.split()
        run.setdefault(q, {})[d] = float(s)
    return run


# ---------------------------------------------------------------------- 1. a folder inside a local zip
def test_a_dataset_inside_a_hand_downloaded_multi_dataset_zip_loads_and_evaluates(tmp_path, monkeypatch):
    """``ragkit eval --data cqadupstack.zip`` unpacked, then failed on 'cqadupstack.zip/android: BEIR folder
    not found', and so did ``load_beir("cqadupstack.zip/android")``, while beir_subsets listed the forums."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    for forum in ("android", "english"):
        _forum(tmp_path / "cqadupstack", forum)
    (tmp_path / "dl").mkdir()
    archive = _zip(tmp_path / "cqadupstack", tmp_path / "dl" / "cqadupstack.zip", "cqadupstack")
    assert beir_subsets(archive) == ["android", "english"]
    ds = load_beir(f"{archive}/android")
    assert ds.name == "android" and ds.corpus.ids.tolist()[:2] == ["0", "1"] and len(ds.queries()) == 6
    assert load_beir(archive / "cqadupstack" / "english").name == "english"  # as a zip tool shows the path
    with pytest.raises(DataError, match=r"cqadupstack\.zip/gis: .*cqadupstack\.zip has no folder 'gis'; it holds "
                                        r"the datasets android, english \(load one as '.*cqadupstack\.zip/android'\)"):
        load_beir(archive / "gis")
    res = _cli("eval", "--data", archive, "-p", "bm25", "--k", "5", "-o", tmp_path / "zip.json")
    assert res.exit_code == 0, res.output
    folder = _cli("eval", "--data", tmp_path / "cqadupstack", "-p", "bm25", "--k", "5", "-o", tmp_path / "dir.json")
    assert folder.exit_code == 0, folder.output
    z, d = (json.loads((tmp_path / f).read_text()) for f in ("zip.json", "dir.json"))
    assert z["metrics"] == d["metrics"] and sorted(z["subsets"]) == ["android", "english"]
    assert z["dataset"] == "cqadupstack" and "BEIR scores cqadupstack as the mean over its 12" in res.output
    one = _cli("eval", "--data", f"{archive}/android", "-p", "bm25", "--k", "5")
    assert one.exit_code == 0 and "android / test (6 queries)" in one.output, one.output


# ---------------------------------------------------------------------- 2. a renamed zip
def test_a_renamed_zip_loads_as_the_dataset_of_its_top_folder(tmp_path, monkeypatch):
    """A browser's ``nfcorpus (1).zip`` (its top folder: nfcorpus) was "1 BEIR datasets (nfcorpus), not one",
    and the path suggested, '.../nfcorpus (1).zip/nfcorpus', did not load either."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    src = _forum(tmp_path / "src", "nfcorpus")
    (tmp_path / "dl").mkdir()
    for stem in ("nfcorpus (1)", "nfcorpus-v2"):
        archive = _zip(src, tmp_path / "dl" / f"{stem}.zip", "nfcorpus")
        ds = load_beir(archive)
        assert ds.name == "nfcorpus" and len(ds.corpus) == 30 and beir_subsets(archive) == []
        assert load_beir(f"{archive}/nfcorpus").path == ds.path  # the path inside the zip, as a zip tool shows it
    res = _cli("eval", "--data", tmp_path / "dl" / "nfcorpus (1).zip", "-p", "bm25", "--k", "5")
    assert res.exit_code == 0 and "nfcorpus / test (6 queries)" in res.output, res.output
    # a renamed archive of several datasets keeps them
    for forum in ("android", "english"):
        _forum(tmp_path / "cqa", forum)
    multi = _zip(tmp_path / "cqa", tmp_path / "dl" / "cqadupstack (1).zip", "cqadupstack")
    assert beir_subsets(multi) == ["android", "english"] and load_beir(f"{multi}/english").name == "english"
    # a folder holding one dataset in a folder of its own is not "1 BEIR datasets", and the path said loads
    _forum(tmp_path / "one", "android")
    with pytest.raises(DataError, match=r"one: holds one BEIR dataset, in its folder 'android'; load it as "
                                        r"'(.*/one/android)'$") as e:
        load_beir(tmp_path / "one")
    assert "datasets" not in str(e.value)
    assert load_beir(str(e.value).rsplit("'", 2)[1]).name == "android"


# ---------------------------------------------------------------------- 3 and 4. queries that are documents
def test_eval_searches_one_deeper_where_queries_are_documents_and_writes_the_run_as_scored(tmp_path):
    """ArguAna: the query's own document was dropped after a k search, so recall@k counted k - 1 documents
    (BEIR searches top_k + 1 and skips it); the --run file kept it at rank 1, so trec_eval on the file
    disagreed with the table."""
    root = _arguana(tmp_path / "arguana")
    yaml = tmp_path / "bm25.yaml"
    yaml.write_text("pipeline:\n  - bm25: {k: 20}\n")
    res = _cli("eval", "--data", root, "-p", yaml, "--k", "10,20", "-o", tmp_path / "a.json",
               "--run", tmp_path / "a.trec")
    assert res.exit_code == 0, res.output
    a = json.loads((tmp_path / "a.json").read_text())
    ds = load_beir(root)
    queries, qrels = ds.queries(), ds.qrels()
    beir = evaluate(BM25(k=21).fit(ds.corpus).search(queries), qrels, ["recall@20", "ndcg@10"]).scores
    short = evaluate(BM25(k=20).fit(ds.corpus).search(queries), qrels, ["recall@20"]).scores
    assert a["metrics"]["recall@20"] == pytest.approx(beir["recall@20"], abs=1e-12) == 0.675
    assert short["recall@20"] == 0.625  # what ragkit eval reported before: 19 documents per query
    assert a["metrics"]["ndcg@10"] == pytest.approx(beir["ndcg@10"], abs=1e-12)
    run = _trec(tmp_path / "a.trec")  # the run as scored: 20 documents each, none the query's own
    assert {len(docs) for docs in run.values()} == {20} and not any(q in docs for q, docs in run.items())
    import pytrec_eval

    ev = pytrec_eval.RelevanceEvaluator(qrels, {"recall.20", "ndcg_cut.10"}).evaluate(run)
    assert sum(v["recall_20"] for v in ev.values()) / len(ev) == pytest.approx(a["metrics"]["recall@20"], abs=1e-12)
    assert sum(v["ndcg_cut_10"] for v in ev.values()) / len(ev) == pytest.approx(a["metrics"]["ndcg@10"], abs=1e-12)
    from ragkit.eval.compare import load_result

    from_file = load_result(tmp_path / "a.trec", qrels=qrels, metrics=["recall@20", "ndcg@10"], name="file")
    from_json = load_result(tmp_path / "a.json", metrics=["recall@20", "ndcg@10"], name="json")
    for m in ("recall@20", "ndcg@10"):
        assert from_file.per_query[m] == pytest.approx(from_json.per_query[m], abs=1e-12)
    # --depth: one deeper than asked, cut back to it
    deep = _cli("eval", "--data", root, "-p", "bm25", "--k", "10,20", "--depth", "20", "-o", tmp_path / "d.json")
    assert deep.exit_code == 0 and json.loads((tmp_path / "d.json").read_text())["metrics"] == a["metrics"]
    # --keep-identical-ids: the run as searched, the query's own document scored and written
    kept = _cli("eval", "--data", root, "-p", yaml, "--k", "10,20", "--keep-identical-ids", "-o", tmp_path / "k.json",
                "--run", tmp_path / "k.trec")
    assert kept.exit_code == 0, kept.output
    k_run = _trec(tmp_path / "k.trec")
    assert {len(docs) for docs in k_run.values()} == {20} and all(q in docs for q, docs in k_run.items())
    assert json.loads((tmp_path / "k.json").read_text())["metrics"]["recall@20"] == short["recall@20"]
    assert "--keep-identical-ids" in _cli("eval", "--help").output


def test_drop_identical_ids_keeps_rankings_and_cuts_after_the_drop():
    from ragkit.eval.metrics import drop_identical_ids
    from ragkit.types import Corpus

    corpus = Corpus.from_records([{"_id": i, "text": t} for i, t in
                                  (("q1", "a b"), ("d1", "a"), ("d2", "a b c"), ("q2", "b"), ("d3", "c"))])
    run = BM25(k=3).fit(corpus).search({"q1": "a b", "q2": "b c", "q9": "zzz"})
    assert "q1" in run.doc_ids[0].tolist()
    cut = drop_identical_ids(run, 2)
    assert [d.tolist() for d in cut.doc_ids] == [[x for x in run.doc_ids[i].tolist() if x != q][:2]
                                                  for i, q in enumerate(run.query_ids)]
    assert [corpus.ids[r.rows].tolist() for r in cut.rankings] == [d.tolist() for d in cut.doc_ids]
    assert all(len(s) == len(d) for s, d in zip(cut.scores, cut.doc_ids))
    assert drop_identical_ids(cut) is cut  # nothing to drop: the same run


# ---------------------------------------------------------------------- 5. --trace scored as the table
def test_the_trace_scores_with_the_relevance_level_and_identical_ids_of_the_table(tmp_path):
    """--trace computed its recall and nDCG at level 1 with identical ids dropped, whatever --relevance-level
    and --keep-identical-ids said: its last step disagreed with the table."""
    docs = [{"_id": "d1", "text": "alpha beta"}, {"_id": "d2", "text": "alpha"}, {"_id": "d3", "text": "gamma"},
            {"_id": "1", "text": "delta"}, {"_id": "2", "text": "epsilon"}]
    root = _dataset(tmp_path / "graded", docs, [{"_id": "q1", "text": "beta"}, {"_id": "1", "text": "delta"}],
                    "q1\td1\t2\nq1\td3\t1\n1\t1\t2\n")
    level2, kept = ["--relevance-level", "2"], ["--keep-identical-ids"]
    for extra in (level2, kept, level2 + kept):
        res = _cli("eval", "--data", root, "-p", "bm25", "--trace", "-o", tmp_path / "t.json", *extra)
        assert res.exit_code == 0, res.output
        out = json.loads((tmp_path / "t.json").read_text())
        assert out["trace"][-1]["recall"] == pytest.approx(out["metrics"]["recall@100"], abs=1e-12), extra
        assert out["trace"][-1]["ndcg"] == pytest.approx(out["metrics"]["ndcg@10"], abs=1e-12), extra
    ds = load_beir(root)
    qrels = ds.qrels()
    run = BM25().fit(ds.corpus).search(ds.queries(), trace=True, qrels=qrels, relevance_level=2,
                                       ignore_identical_ids=False)
    want = evaluate(run, qrels, ["recall@100", "ndcg@10"], relevance_level=2, ignore_identical_ids=False).scores
    assert (run.trace[-1].recall, run.trace[-1].ndcg) == pytest.approx((want["recall@100"], want["ndcg@10"]))
    assert want["recall@100"] == 1.0  # (level 1 and ids dropped: 0.25)


# ---------------------------------------------------------------------- 6. evaluate says what it dropped
def test_evaluate_warns_when_judged_documents_share_their_query_id(tmp_path, caplog, monkeypatch):
    """MS MARCO-like numeric ids: the passage judged for query 5 can be passage 5, which evaluate dropped
    without a word (nDCG 0.0 instead of 0.398); only EvalResult.ignored_judged showed it."""
    import ragkit.eval.metrics as metrics

    monkeypatch.setattr(metrics, "_WARNED", set(), raising=False)
    run = {"1": {"1": 2.0, "7": 1.0}, "2": {"9": 1.0}}
    qrels = {"1": {"1": 1}, "2": {"9": 1}}
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        r = evaluate(run, qrels, ["ndcg@10"])
        evaluate(run, qrels, ["ndcg@10"])  # the same judgements: said once
        kept = evaluate(run, qrels, ["ndcg@10"], ignore_identical_ids=False)
    said = [rec.getMessage() for rec in caplog.records if rec.name.startswith("ragkit")]
    assert r.ignored_judged == 1 and r.scores["ndcg@10"] == 0.5 and kept.scores["ndcg@10"] == 1.0
    assert len(said) == 1 and "1 judged-relevant document has its query's id" in said[0]
    assert "ignore_identical_ids=False" in said[0]


# ---------------------------------------------------------------------- 7. a trailing tab
def test_a_qrels_line_ending_in_a_tab_reads_as_beir_reads_it(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\t\nq1\td1\t1\t\nq1\td2\t0\t\t\r\nq2\td3\t2\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t\t\n")  # an empty relevance column is still an error
    with pytest.raises(DataError, match=r"test\.tsv:2: expected 3 tab-separated columns"):
        read_qrels(path)


# ---------------------------------------------------------------------- 8. a local zip is unpacked, not downloaded
def test_a_local_zip_is_said_to_be_unpacked(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    archive = _zip(_forum(tmp_path / "src", "scifact"), tmp_path / "scifact.zip", "scifact")
    with caplog.at_level(logging.INFO, logger="ragkit"):
        load_beir(archive)
    said = " ".join(rec.getMessage() for rec in caplog.records)
    assert f"unpacking {archive}" in said and "downloading" not in said


def test_the_train_report_searches_one_deeper_where_queries_are_documents(tmp_path):
    """``ragkit train``'s held-out report scored recall@100 on 99 documents of ArguAna-like queries, as
    ragkit eval did."""
    import numpy as np

    root = _arguana(tmp_path / "arguana", n=100, others=400, seed=3)
    (root / "qrels" / "train.tsv").write_text((root / "qrels" / "test.tsv").read_text())
    res = _cli("train", "--data", root, "-p", "bm25", "--out", tmp_path / "out", "--report")
    assert res.exit_code == 0, res.output
    ds = load_beir(root)
    train = ds.train_set("train")
    held = train.queries[sorted(np.random.default_rng(0).permutation(100)[:20].tolist())]  # the report's fold
    qrels = {q: train.qrels[q] for q in held.ids}
    fitted = BM25().fit(ds.corpus)
    deeper, short = (evaluate(fitted.search(held, k=k), qrels, ["recall@100"]).scores["recall@100"] for k in (101, 100))
    assert (round(deeper, 4), round(short, 4)) == (0.95, 0.9)
    assert re.search(rf"unlearned\s*│\s*\d\.\d+\s*│\s*{deeper:.4f}", res.output), res.output


def test_the_deeper_search_deepens_each_retriever_by_one_not_to_the_pipeline_s_depth():
    """Without --depth the one-deeper search ran at the pipeline's longest ranking + 1: two fused bm25 k: 10
    branches (rankings of up to 20) were searched 17 deep each, and 43 of 50 queries ranked other documents.
    Each retriever now searches its own k + 1 (BEIR's top_k + 1), the run cut back to the first search's depth."""
    import numpy as np

    from ragkit.cli._scoring import _Scoring, _search_scored
    from ragkit.eval.metrics import drop_identical_ids
    from ragkit.pipelines.yaml import load_yaml
    from ragkit.types import Corpus, Queries

    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(words, 8)) for _ in range(120)]
    corpus = Corpus([f"d{i}" for i in range(120)], texts, metadata={"half": [i % 2 for i in range(120)]})
    queries = Queries([f"d{i}" for i in range(0, 120, 6)], [texts[i] for i in range(0, 120, 6)])  # ids = doc ids
    branches = "[[bm25: {{k: {k}}}], [bm25: {{k: {k}, filter: {{half: 1}}}}]]"  # (two different rankings)
    pipe = load_yaml(f"pipeline:\n - parallel: {{branches: {branches.format(k=3)}}}\n").fit(corpus)
    first = pipe.search(queries)
    depth = max(len(d) for d in first.doc_ids)
    assert depth > 4  # (the fused depth is deeper than each retriever's k + 1)
    got = _search_scored(pipe, queries, {}, corpus, _Scoring(), trace=False)
    plus_one = load_yaml(f"pipeline:\n - parallel: {{branches: {branches.format(k=4)}}}\n").fit(corpus)
    want = drop_identical_ids(plus_one.search(queries), depth)
    assert [d.tolist() for d in got.doc_ids] == [d.tolist() for d in want.doc_ids]
    assert all(q not in d for q, d in zip(got.query_ids, got.doc_ids))


def test_eval_reports_the_metrics_asked_for(tmp_path):
    """`ragkit eval` had no --metrics: r_cap, hole and acc (BEIR's evaluate_custom) were reachable from Python
    and `ragkit compare` only.  --metrics names each metric with its cut-off; with --k it is refused."""
    root = _forum(tmp_path, "android")
    res = _cli("eval", "--data", root, "-p", "bm25", "-m", "nDCG@5, hole@5,r_cap@10", "-o", tmp_path / "m.json")
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "m.json").read_text())
    assert list(got["metrics"]) == ["ndcg@5", "hole@5", "r_cap@10"]
    assert got["settings"]["metrics"] == list(got["metrics"])
    ds = load_beir(root)
    want = evaluate(BM25().fit(ds.corpus).search(ds.queries()), ds.qrels(), ["ndcg@5", "hole@5", "r_cap@10"]).scores
    assert got["metrics"] == pytest.approx(want, abs=1e-12)
    assert "hole@5" in res.output and "map@" not in res.output
    both = _cli("eval", "--data", root, "-p", "bm25", "--k", "5", "-m", "ndcg@5")
    assert both.exit_code != 0 and "--k 5 and --metrics ndcg@5" in both.output
    for bad, says in (("ndcg", "unknown metric 'ndcg'"), ("ndcg@5,NDCG@5", "name the same metric"),
                      (" , ", "expected names")):
        out = _cli("eval", "--data", root, "-p", "bm25", "-m", bad)
        assert out.exit_code != 0 and says in out.output, out.output


_DOCS = [{"_id": "d1", "title": "", "text": "apples"}, {"_id": "d2", "title": "t", "text": "pears"}]
_QUERIES = [{"_id": "q1", "text": "apples"}, {"_id": "q2", "text": "pears"}]


def test_train_set_refuses_the_test_split_unless_asked_for(tmp_path):
    """``BeirDataset.train_set("test")`` returned a TrainSet of the evaluated queries without a word, where
    ``ragkit eval --train-split test`` and ``ragkit train --split test`` refuse it."""
    from ragkit.errors import ParamError

    root = _dataset(tmp_path / "ds", _DOCS, _QUERIES, "q1\td1\t1\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td2\t1\n")
    ds = load_beir(root)
    with pytest.raises(ParamError) as e:
        ds.train_set("test")
    said = str(e.value)
    assert "split 'test'" in said and "allow_test=True" in said and "'train'" in said, said
    with pytest.raises(TypeError):
        ds.train_set("test", True)  # type: ignore[misc]  # (the opt-in is keyword-only)
    assert ds.train_set("test", allow_test=True).queries.ids == ["q1"]
    assert ds.train_set().queries.ids == ["q2"] and ds.train_set("train", allow_test=True).queries.ids == ["q2"]


def test_a_query_id_the_queries_lack_is_named_with_its_qrels_line(tmp_path):
    """The error said "1 query ids not in queries.jsonl", without the line of the qrels that judges it."""
    root = _dataset(tmp_path / "one", _DOCS, _QUERIES, "q1\td1\t1\nq9\td2\t1\nq9\td1\t0\n")
    with pytest.raises(DataError) as e:
        load_beir(root).qrels()
    said = str(e.value)
    assert f"{root / 'qrels' / 'test.tsv'}:3: query id 'q9', judged on this line, is not in" in said, said
    assert "query ids" not in said
    root = _dataset(tmp_path / "two", _DOCS, _QUERIES, "q1\td1\t1\nq8\td2\t1\nq9\td1\t1\nq8\td1\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv:3: 2 judged query ids \(the first, 'q8', on this line\) are"):
        load_beir(root).queries()


def test_documents_with_neither_text_nor_title_are_kept_with_one_warning(tmp_path, caplog):
    """An empty document (``text: null`` without a title, or both "") loaded without a word."""
    docs = [*_DOCS, {"_id": "e1", "text": None}, {"_id": "e2", "title": "", "text": ""},
            {"_id": "t1", "title": "only a title", "text": None}]
    root = _dataset(tmp_path / "ds", docs, _QUERIES, "q1\td1\t1\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        ds = load_beir(root)
    said = [rec.getMessage() for rec in caplog.records if rec.name.startswith("ragkit")]
    assert len(said) == 1 and "2 documents have no text and no title (e.g. 'e1')" in said[0], said
    assert list(ds.corpus.ids) == ["d1", "d2", "e1", "e2", "t1"]  # (kept, as BEIR keeps them)
    caplog.clear()
    root = _dataset(tmp_path / "fine", _DOCS, _QUERIES, "q1\td1\t1\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        load_beir(root)
    assert not [rec for rec in caplog.records if rec.name.startswith("ragkit")]


def test_a_qrels_file_with_cr_line_endings_is_said_to_have_them(tmp_path):
    """CR-only line endings read as one line: "expected 3 ... columns, got ['h', 'h', 'h\\rq1', ...]"."""
    path = tmp_path / "test.tsv"
    path.write_bytes(b"query-id\tcorpus-id\tscore\rq1\td1\t1\rq2\td2\t1\r")
    with pytest.raises(DataError, match=r"test\.tsv:1: a carriage return .* CR \(old Mac\) line endings"):
        read_qrels(path)
    path.write_bytes(b"q1 0 d1 1\rq2 0 d2 1\r")  # trec_eval's columns, split on whitespace
    with pytest.raises(DataError, match=r"CR \(old Mac\) line endings"):
        read_qrels(path)
    path.write_bytes(b"query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n")  # CRLF reads as ever
    assert read_qrels(path) == {"q1": {"d1": 1}}


def test_a_corpus_or_queries_file_with_cr_line_endings_is_said_to_have_them(tmp_path):
    """CR-only corpus.jsonl / queries.jsonl read as one line: "malformed JSON line (Extra data at column 151)"
    before; now the qrels reader's CR message, with a jsonl example.  (A query file of plain text lines
    read as one query holding every line.)"""
    from ragkit.eval.beir import read_corpus, read_queries, read_query_file

    root = tmp_path / "bad"
    root.mkdir()
    (root / "corpus.jsonl").write_bytes(b'{"_id": "d1", "title": "", "text": "cats"}\r'
                                        b'{"_id": "d2", "title": "", "text": "dogs"}\r')
    (root / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "cats"}\r{"_id": "q2", "text": "dogs"}\r')
    (root / "queries.txt").write_bytes(b"cats\rdogs\r")
    want = r"a carriage return \(\\r\) inside the line, at column 43: the file has CR \(old Mac\) line endings"
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: " + want + r".*< \S*/bad/corpus\.jsonl > new\.jsonl"):
        read_corpus(root / "corpus.jsonl")
    with pytest.raises(DataError, match=r"queries\.jsonl:1: a carriage return .* at column 30: .*CR \(old Mac\)"):
        read_queries(root / "queries.jsonl")
    with pytest.raises(DataError, match=r"queries\.txt:1: a carriage return .* at column 5: .*CR \(old Mac\)"):
        read_query_file(root / "queries.txt")
    (root / "corpus.jsonl").write_bytes(b'{"_id": "d1", "title": "", "text": "cats"}\r\n')  # CRLF reads as ever
    assert list(read_corpus(root / "corpus.jsonl").ids) == ["d1"]
    (root / "corpus.jsonl").write_bytes(b'{"_id": "d1",\r"text": "cats"}\n')  # a CR between tokens is JSON space
    assert list(read_corpus(root / "corpus.jsonl").texts) == ["cats"]
    (root / "corpus.jsonl").write_bytes(b'{"_id": "d1", "text": "cats"\n')  # other malformed lines: as before
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: malformed JSON line"):
        read_corpus(root / "corpus.jsonl")


def test_a_qrels_file_without_a_header_keeps_its_first_judgement(tmp_path):
    """(BEIR's loader drops line 1 whatever it holds; read_qrels skips it only when its score is no number.)"""
    path = tmp_path / "test.tsv"
    path.write_text("q1\td1\t1\nq2\td2\t1\n")
    assert read_qrels(path) == {"q1": {"d1": 1}, "q2": {"d2": 1}}


# ---------------------------------------------------------------------- 18. damaged and cut-short archives
enable_socket = pytest.mark.enable_socket if importlib.util.find_spec("pytest_socket") else (lambda f: f)


def _tiny_zip(name: str, compression: int = zipfile.ZIP_STORED) -> bytes:
    """A small BEIR archive ``<name>/...`` (a few hundred bytes)."""
    docs = "".join(json.dumps({"_id": f"d{i}", "text": f"word{i} " * 20}) + "\n" for i in range(4))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        z.writestr(f"{name}/corpus.jsonl", docs)
        z.writestr(f"{name}/queries.jsonl", json.dumps({"_id": "q1", "text": "word1 " * 20}) + "\n")
        z.writestr(f"{name}/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return buf.getvalue()


def _damage(data: bytes, member: str, byte: int) -> bytes:
    """``data`` (a zip) with the first stored byte of ``member`` set to ``byte``: a stored member then fails its
    CRC check, a deflated one (0xFF: a reserved block type) its decompression."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(member)
    out = bytearray(data)
    name_len, extra_len = int.from_bytes(out[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(out[info.header_offset + 28:info.header_offset + 30], "little")
    at = info.header_offset + 30 + name_len + extra_len
    out[at] = byte if out[at] != byte else byte ^ 1
    return bytes(out)


@pytest.fixture
def beir_server(tmp_path):
    """A local HTTP server over ``tmp_path / "www"``: yields ``(www, url, requests)``; a file ``<x>.cut`` beside
    ``<x>`` makes the server announce the whole of ``<x>`` (Content-Length) but send half and close."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *a):  # noqa: D102
            pass

        def do_GET(self):  # noqa: N802, D102
            requests.append(self.path)
            file = www / self.path.lstrip("/")
            if (www / (file.name + ".cut")).is_file():
                body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2])
                self.close_connection = True
                return
            super().do_GET()

    httpd = HTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()


@enable_socket
def test_a_damaged_download_is_a_data_error_naming_the_url(beir_server, tmp_path, monkeypatch):
    """Review: a bad CRC raised ``zipfile.BadZipFile: Bad CRC-32 for file 'sf/queries.jsonl'``, a damaged deflate
    stream ``zlib.error: Error -3``, naming no URL; ``ragkit eval --data`` printed a 136-line traceback."""
    www, url, _ = beir_server
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (www / "crc.zip").write_bytes(_damage(_tiny_zip("crc"), "crc/queries.jsonl", ord("X")))
    (www / "deflate.zip").write_bytes(_damage(_tiny_zip("deflate", zipfile.ZIP_DEFLATED), "deflate/corpus.jsonl",
                                              0xFF))
    for name, why in (("crc", r"BadZipFile: Bad CRC-32"), ("deflate", r"error: Error -3")):
        with pytest.raises(DataError, match=rf"{re.escape(url)}/{name}\.zip: the zip archive is damaged \({why}.*"
                                            r"nothing was cached; download it again"):
            download_beir(name, base_url=url)
    assert os.listdir(tmp_path / "cache" / "beir") == []  # no temporary folder, no dataset left behind
    monkeypatch.setenv("RAGKIT_BEIR_URL", url)
    res = _cli("eval", "--data", "crc", "-p", "bm25")
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    assert "crc.zip: the zip archive is damaged" in res.output and "download it again" in res.output, res.output


@enable_socket
def test_a_download_cut_short_says_so_with_its_byte_counts(beir_server, tmp_path, monkeypatch):
    """Review: a server that announced 365900 bytes and closed after half gave '.../sf.zip: not a zip archive
    (182950 bytes)', which reads as a wrong URL."""
    www, url, _ = beir_server
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    data = _tiny_zip("cut")
    (www / "cut.zip").write_bytes(data)
    (www / "cut.zip.cut").touch()
    with pytest.raises(DataError, match=rf"{re.escape(url)}/cut\.zip: download cut short: {len(data) // 2} of "
                                        rf"{len(data)} bytes; nothing was cached; try again"):
        download_beir("cut", base_url=url)
    assert os.listdir(tmp_path / "cache" / "beir") == []
    (www / "cut.zip.cut").unlink()  # the whole file: downloaded
    assert (download_beir("cut", base_url=url) / "corpus.jsonl").is_file()


@enable_socket
def test_download_beir_refuses_a_name_that_is_a_path(beir_server, tmp_path):
    """Review: ``download_beir('../sf', base_url=U)`` unpacked into the folder above its destination."""
    www, url, requests = beir_server
    (www / "sf.zip").write_bytes(_tiny_zip("sf"))
    dest = tmp_path / "d" / "beir"
    for name in ("../sf", "..", "a/../../sf", "..\\sf", "sub/sf", ""):
        with pytest.raises(ParamError, match=r"download_beir: name .* is not a dataset name; expected a name such "
                                             r"as 'scifact' .*no '/', '\\' or '\.\.'"):
            download_beir(name, base_url=url, dest=dest)
    assert not (tmp_path / "d").exists() and not (tmp_path / "sf").exists() and requests == []
    assert download_beir("sf", base_url=url, dest=dest) == dest / "sf"  # a name still downloads


@enable_socket
def test_a_folder_that_is_no_download_is_refused_before_fetching(beir_server, tmp_path):
    """Review: with a user's folder of the same name in the cache, download_beir fetched and unpacked the whole
    archive (gigabytes for some) before refusing to replace it."""
    www, url, requests = beir_server
    (www / "sf.zip").write_bytes(_tiny_zip("sf"))
    (tmp_path / "dest" / "sf").mkdir(parents=True)
    (tmp_path / "dest" / "sf" / "notes.txt").write_text("mine")
    (tmp_path / "dest" / "file").write_text("a file")
    for name in ("sf", "file"):
        with pytest.raises(DataError, match=rf"dest/{name}: exists and is not a BEIR download of '{name}'"):
            download_beir(name, base_url=url, dest=tmp_path / "dest")
    assert requests == [] and (tmp_path / "dest" / "sf" / "notes.txt").read_text() == "mine"


def test_a_damaged_local_zip_is_a_data_error_and_leaves_no_folder(tmp_path, monkeypatch):
    """Review: ``load_beir('x.zip')`` of a damaged zip raised BadZipFile / zlib.error, and a failed unzip left an
    empty ``beir-zip/<key>/`` folder in the cache (made before the zip was opened)."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    crc = tmp_path / "crc.zip"
    crc.write_bytes(_damage(_tiny_zip("crc"), "crc/queries.jsonl", ord("X")))
    deflate = tmp_path / "deflate.zip"
    deflate.write_bytes(_damage(_tiny_zip("deflate", zipfile.ZIP_DEFLATED), "deflate/corpus.jsonl", 0xFF))
    for archive, why in ((crc, r"BadZipFile: Bad CRC-32 for file 'crc/queries\.jsonl'"),
                         (deflate, r"error: Error -3")):
        with pytest.raises(DataError, match=rf"{re.escape(str(archive))}: the zip archive is damaged \({why}.*"
                                            r"nothing was unpacked; download the archive again"):
            load_beir(archive)
    notzip = tmp_path / "notzip.zip"
    notzip.write_text("<html>not a zip</html>")
    with pytest.raises(DataError, match=r"notzip\.zip: not a zip archive \(22 bytes\)"):
        load_beir(notzip)
    cache = tmp_path / "cache" / "beir-zip"
    assert not cache.exists() or os.listdir(cache) == []  # no empty beir-zip/<key>/ folders
    good = tmp_path / "good.zip"
    good.write_bytes(_tiny_zip("good"))
    assert load_beir(good).name == "good" and len(os.listdir(cache)) == 1
