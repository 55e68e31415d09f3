"""Fixes of the s56 eval review: diversity input checks, qrels layouts, re-downloads, compare's
subsets, provenance revisions and dirty trees, the Run's unique-id flag."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ragkit.errors import DataError
from ragkit.eval.diversity import intra_list_diversity, near_duplicate_rate
from ragkit.run import Run
from ragkit.types import Ranking


def _rankings() -> list[Ranking]:
    return [Ranking(np.array([0, 1, 2]), np.array([3, 2, 1], np.float32)),
            Ranking(np.array([2, 3]), np.array([2, 1], np.float32))]


@pytest.mark.parametrize("measure", [intra_list_diversity, near_duplicate_rate])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_diversity_refuses_nonfinite_vectors(measure, bad) -> None:
    v = np.random.default_rng(0).normal(size=(5, 4))
    v[2, 1] = bad
    what = "NaN" if np.isnan(bad) else "inf"
    with pytest.raises(DataError, match=rf"row 2 \(ranking 0, rank 3\) holds {what}"):
        measure(_rankings(), v, k=3)


def test_diversity_nonfinite_names_the_query_of_a_run() -> None:
    v = np.random.default_rng(0).normal(size=(5, 4))
    v[3, 0] = np.nan
    run = Run.from_rankings(["qa", "qb"], _rankings(), np.array([f"d{i}" for i in range(5)]))
    with pytest.raises(DataError, match=r"row 3 \(query 'qb', rank 2\) holds NaN"):
        intra_list_diversity(run, v, k=3)


def test_diversity_nonfinite_rows_not_ranked_or_huge_finite_pass() -> None:
    v = np.random.default_rng(0).normal(size=(6, 4))
    v[5] = np.nan  # never ranked: not looked at
    v[4] = 1e30  # finite in float64, its float32 squares overflow: still a cosine
    r = [Ranking(np.array([0, 4]), np.array([2, 1], np.float32))]
    out = intra_list_diversity(r, v, k=2)
    assert np.isfinite(out).all()


def test_download_again_replaces_a_damaged_copy_of_the_same_size(tmp_path, monkeypatch) -> None:
    import io
    import json
    import zipfile

    from ragkit.eval import download_beir

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("sf/corpus.jsonl", "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i}"})
                                              + "\n" for i in range(5)))
        z.writestr("sf/queries.jsonl", json.dumps({"_id": "q1", "text": "document"}) + "\n")
        z.writestr("sf/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    www = tmp_path / "www"
    www.mkdir()
    (www / "sf.zip").write_bytes(buf.getvalue())
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    final = download_beir("sf", base_url=www.as_uri())
    good = (final / "corpus.jsonl").read_bytes()
    (final / "corpus.jsonl").write_bytes(good.replace(b"document 3", b"documenX 3"))  # same size, damaged
    assert download_beir("sf", base_url=www.as_uri()) == final
    assert (final / "corpus.jsonl").read_bytes() == good
    assert os.listdir(tmp_path / "cache" / "beir") == ["sf"]  # the damaged copy went with the temporary folder


def test_compare_multi_dataset_metrics_on_different_queries(tmp_path) -> None:
    import json

    from ragkit.eval.compare import compare, load_result

    a = {"dataset": "cqa", "split": "test", "subsets": {
        "x": {"per_query": {"ndcg@10": {"q1": 0.5, "q2": 0.1}, "recall@100": {"q1": 0.5, "q2": 0.2, "q3": 0.3}}},
        "y": {"per_query": {"ndcg@10": {"q1": 0.4}, "recall@100": {"q1": 0.4}}}}}
    b = json.loads(json.dumps(a).replace("0.5", "0.6"))
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    c = compare([load_result(tmp_path / "a.json"), load_result(tmp_path / "b.json")], ["ndcg@10", "recall@100"],
                n_resamples=200)  # was KeyError 'x/q3'
    # each dataset weighted equally: x's mean difference (0.1 on one of its 2 or 3 queries) and y's (0)
    assert c.delta[1] == pytest.approx([0.1 / 2 / 2, 0.1 / 3 / 2])
    assert c.means[0] == pytest.approx([(0.3 + 0.4) / 2, ((0.5 + 0.2 + 0.3) / 3 + 0.4) / 2])


def test_models_record_the_revision_of_a_cached_hub_id_not_made_here(tmp_path, monkeypatch) -> None:
    from ragkit.eval import provenance
    from ragkit.pipelines import Pipeline

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--s56-org--s56-model"
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "snapshots" / sha / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    pipe = Pipeline.from_yaml("pipeline:\n  - dense: {model: s56-org/s56-model}\n")  # no encoder made (no fit)
    [rec] = provenance.models(pipe)
    assert rec["model"] == "s56-org/s56-model" and rec["fingerprint"] is None
    assert rec["revision"] == sha


@pytest.mark.parametrize("call, said", [
    (lambda v: intra_list_diversity(_rankings(), v[:, 0], k=2), r"vectors of shape \(5,\); expected a 2-d array"),
    (lambda v: near_duplicate_rate(_rankings(), v[None], k=2), r"vectors of shape \(1, 5, 4\); expected a 2-d array"),
    (lambda v: intra_list_diversity(_rankings(), v, k=2.5), r"k must be >= 1 and an integer \(the cut-off\), got 2.5"),
    (lambda v: near_duplicate_rate(_rankings(), v, k=True), r"k must be >= 1 and an integer \(the cut-off\), got True"),
    (lambda v: near_duplicate_rate(_rankings(), v, k=2, threshold=1.5), r"threshold must be a cosine in \[-1, 1\], "
                                                                        r"got 1.5"),
    (lambda v: near_duplicate_rate(_rankings(), v, k=2, threshold=float("nan")), r"threshold must be a cosine"),
])
def test_diversity_checks_its_arguments(call, said) -> None:
    v = np.random.default_rng(0).normal(size=(5, 4))
    with pytest.raises(DataError, match=said):
        call(v)


def test_alpha_ndcg_refuses_a_fractional_k() -> None:
    from ragkit.eval.diversity import alpha_ndcg, subtopic_recall

    run = {"q1": {"d1": 1.0}}
    with pytest.raises(DataError, match=r"alpha_ndcg: k must be >= 1 and an integer"):
        alpha_ndcg(run, {"q1": {"d1": ["a"]}}, k=2.5)
    with pytest.raises(DataError, match=r"subtopic_recall: k must be >= 1 and an integer"):
        subtopic_recall(run, {"q1": {"d1": ["a"]}}, k=2.5)


def test_run_knows_its_ids_are_distinct_only_while_they_are_its_own(tmp_path) -> None:
    from ragkit.eval.metrics import _cut_run

    run = Run.from_dict({"q1": {f"d{i}": float(i) for i in range(30)}, "q2": {"d1": 1.0}})
    assert run._unique_ids_known()  # dict keys: each document once, not looked at again when cut
    assert _cut_run(run, 5)._unique_ids_known()
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\n")
    assert Run.read_trec(tmp_path / "run.trec")._unique_ids_known()
    by_hand = Run(["q1"], [np.array(["a", "b"], dtype=object)], [np.array([2.0, 1.0], np.float32)])
    assert not by_hand._unique_ids_known()
    run.doc_ids[0] = np.array([f"d{i % 3}" for i in range(30)], dtype=object)  # replaced in place: looked at again
    assert not run._unique_ids_known()
    run.doc_ids = [np.array(["x"] * 30, dtype=object), run.doc_ids[1]]
    assert not run._unique_ids_known()


def test_a_cut_run_is_not_called_distinct_where_a_short_query_went_unchecked() -> None:
    """_cut_run looks at the queries longer than k only (a shorter one is kept whole): its cut was flagged as
    holding each id once all the same, so cutting it again at a smaller k skipped a repeat in the short query."""
    from ragkit.eval.metrics import _cut_run

    long = np.array([f"d{i}" for i in range(20)], dtype=object)
    short = np.array(["a", "b", "a"], dtype=object)  # a document twice, in a query of 3 <= k
    run = Run(["q1", "q2"], [long, short], [np.linspace(1, 0, 20).astype(np.float32),
                                            np.array([3.0, 2.0, 1.0], np.float32)])
    cut = _cut_run(run, 5)
    assert cut is not run and not cut._unique_ids_known()
    assert _cut_run(cut, 2) is cut  # (the repeat seen at the smaller cut: kept for to_dict to name)


def test_evaluate_still_names_a_document_twice_in_a_hand_built_run() -> None:
    from ragkit.eval import evaluate

    ids = np.array([f"d{i}" for i in range(20)] + ["d3"], dtype=object)
    run = Run(["q1"], [ids], [np.linspace(1, 0, 21).astype(np.float32)])
    with pytest.raises(DataError, match="d3"):
        evaluate(run, {"q1": {"d1": 1}}, ["ndcg@10"])


@pytest.mark.skipif(__import__("shutil").which("git") is None, reason="needs git")
def test_ragkit_commit_marks_an_untracked_module_in_the_package(tmp_path, monkeypatch) -> None:
    import subprocess

    from ragkit.eval import provenance

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True, timeout=60).stdout.strip()

    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)
    git("init", "-q")
    (tmp_path / "ragkit").mkdir()
    (tmp_path / "ragkit" / "__init__.py").write_text("")
    (tmp_path / ".gitignore").write_text("__pycache__/\n")
    git("add", "ragkit/__init__.py", ".gitignore")
    git("commit", "-qm", "one")
    sha = git("rev-parse", "HEAD")
    (tmp_path / "scratch.py").write_text("")  # untracked, but no part of the package
    (tmp_path / "ragkit" / "__pycache__").mkdir()
    (tmp_path / "ragkit" / "__pycache__" / "x.pyc").write_bytes(b"")  # ignored
    assert provenance.ragkit_commit(tmp_path) == sha
    (tmp_path / "ragkit" / "new module.py").write_text("X = 1\n")  # was recorded as clean
    assert provenance.ragkit_commit(tmp_path) == sha + "+untracked"
    (tmp_path / "ragkit" / "__init__.py").write_text("import os\n")
    assert provenance.ragkit_commit(tmp_path) == sha + "+modified"


@pytest.mark.parametrize("text, line", [
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\t0\n", 3),  # was {'q1': {'d1': 1, '1': 0}}
    ("q1\td1\t1\nq1\td2\t2\tx\n", 2),
])
def test_read_qrels_refuses_a_4_column_line_among_3_column_ones_that_is_no_trec_line(tmp_path, text, line) -> None:
    from ragkit.eval._read import read_qrels

    p = tmp_path / "qrels.tsv"
    p.write_text(text)
    first = 2 if text.startswith("query-id") else 1
    with pytest.raises(DataError, match=rf"qrels.tsv:{line}: expected 3 columns as on line {first} .*got 4"):
        read_qrels(p)


def test_read_qrels_reads_trec_lines_among_beirs_as_before(tmp_path) -> None:
    from ragkit.eval._read import read_qrels

    p = tmp_path / "qrels.tsv"
    p.write_text("q1\td1\t1\nq2\t0\td3\t1\nq2 Q0 d4 2\n")
    assert read_qrels(p) == {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 2}}
