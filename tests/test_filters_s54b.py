"""Filters and filter evaluation, re-review s54: ordered_float32 keeps a NaN probability NaN and a saved adapter with
non-finite parameters is refused at load; kept candidates are never shown below the threshold; subtopic_recall and
alpha_ndcg share their judged-pair matching; filter_report refuses a respelled query id as evaluate does; the Floyd
draws are uniform over subsets."""

from __future__ import annotations

import numpy as np
import pytest
from test_filters_s54 import _save_adapter

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.filters import CosineAdapter
from ragkit.filters.cosine_adapter import ordered_float32

register_encoder("s54b-bow", HashingEncoder(dim=64), replace=True)


def _flat(lengths):
    lengths = np.asarray(lengths, np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return lengths, starts, np.repeat(np.arange(len(lengths)), lengths)


# ---------------------------------------------------------------- 1. a NaN probability stays NaN; NaN saves refused
def test_ordered_float32_keeps_a_nan_probability_nan():
    lengths, starts, qidx = _flat([2, 3])
    got = ordered_float32(np.array([np.nan, .4, .9, np.nan, .2]), np.array([.5, .4, .9, .8, .7], np.float32),
                          lengths, starts, qidx)
    assert np.isnan(got[0]) and np.isnan(got[3])
    assert got[1] == np.float32(.4) and got[2] == np.float32(.9) and got[4] == np.float32(.2)


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory):
    return _save_adapter(tmp_path_factory, "s54b-bow")


@pytest.mark.parametrize("name, bad", [("adapter_weights", np.nan), ("adapter_feat_mean", np.inf),
                                       ("adapter_feat_std", np.nan)])
def test_adapter_load_refuses_non_finite_parameters(saved_adapter, tmp_path, name, bad):
    import shutil

    from conftest import reseal

    from ragkit.errors import ArtifactError

    folder = tmp_path / "ca"
    shutil.copytree(saved_adapter, folder)
    arr = np.load(folder / f"{name}.npy")
    arr.flat[0] = bad
    np.save(folder / f"{name}.npy", arr)
    reseal(folder)
    with pytest.raises(ArtifactError, match=rf"{name}\.npy: holds 1 non-finite value of {arr.size}; expected finite "
                                            "adapter parameters"):
        CosineAdapter.load(folder)


# ---------------------------------------------------------------- 2. kept candidates are not shown below the threshold
def _check_shown(p, c, lengths, t):
    lengths, starts, qidx = _flat(lengths)
    got = ordered_float32(p, c, lengths, starts, qidx)
    assert got.dtype == np.float32 and np.all((got >= 0) & (got <= 1))
    kept = p >= t
    assert np.all(got[kept] >= np.float32(t)), (t, p[kept], got[kept])
    same_q = qidx[1:] == qidx[:-1]
    assert np.all(np.diff(got)[same_q & (np.diff(c) < 0)] < 0), "a strict cosine fall must be a strict score fall"
    assert np.all(np.diff(got)[same_q & (np.diff(c) == 0)] == 0), "equal cosines must give equal scores"
    return got


@pytest.mark.parametrize("t", [0.5, 0.9])
def test_ordered_float32_shows_no_kept_candidate_below_the_threshold(t):
    eps = np.array([3e-9, 2e-9, 1e-9, 1e-10, 1e-10, 0.0, -1e-10, -2e-9])  # all round to float32(t); a cosine tie
    p = np.concatenate([t + eps, t + eps[:4], [t + 1e-9, t - 1e-9]])
    c = np.concatenate([[.9, .8, .7, .6, .6, .5, .4, .3], [.9, .8, .7, .6], [.9, .8]]).astype(np.float32)
    _check_shown(p, c, [8, 4, 2], t)
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(0, 12, 5)
        n = int(lengths.sum())
        parts = [np.sort(rng.integers(0, 4, m))[::-1] for m in lengths]  # cosine levels, ties included
        c = np.concatenate([x / 10 for x in parts] + [np.empty(0)]).astype(np.float32)
        p = np.concatenate([t + (x - 1.5) * rng.choice([1e-10, 1e-9, 1e-8]) for x in parts] + [np.empty(0)])
        if n:
            _check_shown(p, c, lengths, t)


# ---------------------------------------------------------------- 4. filter_report refuses respelled ids as evaluate
def test_filter_report_names_a_respelled_query_id():
    from ragkit.errors import DataError
    from ragkit.eval.filtering import filter_report
    from ragkit.run import Run

    with pytest.raises(DataError, match=r"^filter_report: none of the run's 1 queries \('001'\) is judged in the "
                                        r"qrels.*is judged as '1'"):
        filter_report(Run.from_dict({"001": {"d1": 0.9}}), {"1": {"d1": 1}})


# ---------------------------------------------------------------- 6. Floyd's draws: uniform over subsets, not only rows
def test_floyd_draws_every_subset_equally_often():
    from itertools import combinations

    from ragkit.eval.hubness import _floyd_counts

    rng = np.random.default_rng(7)
    n, seen = 30_000, {s: 0 for s in combinations(range(5), 2)}
    for _ in range(n):
        counts = _floyd_counts(rng, 1, 5, 2)  # one query: its subset
        assert counts.sum() == 2 and counts.max() == 1, counts  # two distinct documents
        seen[tuple(np.flatnonzero(counts).tolist())] += 1
    p = 1 / len(seen)
    sd = np.sqrt(n * p * (1 - p))
    assert all(abs(c - n * p) <= 5 * sd for c in seen.values()), seen
