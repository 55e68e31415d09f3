"""Fixes of the s56 eval review: diversity input checks, qrels layouts, re-downloads, compare's
subsets, provenance revisions and dirty trees, the Run's unique-id flag."""

from __future__ import annotations

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


@pytest.mark.parametrize("text, line, want, got", [
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\t0\n", 3, 3, 4),  # was {'q1': {'d1': 1, '1': 0}}
    ("q1\td1\t1\nq1\t0\td2\t1\n", 2, 3, 4),
    ("q1 0 d1 1\nq1 d2 1\n", 2, 4, 3),
])
def test_read_qrels_refuses_mixed_column_counts(tmp_path, text, line, want, got) -> None:
    from ragkit.eval._read import read_qrels

    p = tmp_path / "qrels.tsv"
    p.write_text(text)
    first = 2 if text.startswith("query-id") else 1
    want_re = rf"qrels.tsv:{line}: expected {want} (tab-separated )?columns as on line {first}.*got {got}"
    with pytest.raises(DataError, match=want_re):
        read_qrels(p)


def test_read_qrels_one_layout_still_reads(tmp_path) -> None:
    from ragkit.eval._read import read_qrels

    p = tmp_path / "qrels.tsv"
    p.write_text("query-id\tcorpus-id\tscore\nq1\t0\td1\t1\nq1\t0\td2\t2\n")  # trec_eval lines under BEIR's header
    assert read_qrels(p) == {"q1": {"d1": 1, "d2": 2}}
    p.write_text("q1\td1\t1\nq2 0 d2 2\n")  # trec_eval's whitespace-separated lines among BEIR's
    assert read_qrels(p) == {"q1": {"d1": 1}, "q2": {"d2": 2}}
