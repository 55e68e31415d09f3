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
