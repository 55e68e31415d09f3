"""Cosine Adapter fitted on few judged queries: the threshold is chosen on out-of-fold probabilities of every
training query, not on one 20% split, and fit warns when the target rests on too few candidates."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_filters import adapter_case

from ragkit._flat import flatten
from ragkit.encoders import get_encoder
from ragkit.filters import CosineAdapter
from ragkit.filters.cosine_adapter import fold_assignment, positives_needed

KEY = get_encoder().key  # cheap: the model is not loaded


def _two_relevant(n_q: int, seed: int, hard: float = 0.15, per_query: int = 2, k: int = 30):
    """Each query has ``per_query`` relevant candidates: among its top 3, or (share ``hard``) anywhere below.
    Twenty to forty such queries give the adapter a handful of hard positives: one 20% split of them
    often holds none, and its threshold for recall 0.95 then keeps only the top of each list."""
    def draw(rng, i, qv):
        c = np.sort(rng.uniform(0.2, 0.9, k))[::-1].astype(np.float32)
        rel = np.zeros(k, bool)
        for _ in range(per_query):
            rel[rng.integers(3, k) if rng.random() < hard else rng.integers(0, 3)] = True
        return c, rel

    return adapter_case(n_q, k, 8, 600, seed, draw)


def _recall_on(ad: CosineAdapter, case) -> float:
    """Share of the relevant candidates of ``case``'s queries that ``ad``'s threshold keeps."""
    _, train, state = case
    rows, c, lengths, starts, qidx = flatten(state.rankings)
    probs = ad._proba_flat(state.vectors[KEY], c, lengths, starts, qidx)
    q = np.asarray(state.query_ids)[qidx]
    relevant = np.array([f"d{r}" in train.qrels[qq] for qq, r in zip(q.tolist(), rows.tolist())])
    return float((probs[relevant] >= ad.threshold_).mean())


@pytest.fixture(scope="module")
def fresh():
    return _two_relevant(1000, 999)  # new queries of the same distribution


def _thin(caplog) -> list[str]:  # noqa: ANN001
    return [r.getMessage() for r in caplog.records if r.name == "ragkit" and "fitted on little" in r.getMessage()]


def test_threshold_chosen_out_of_fold_meets_the_target_on_new_queries(fresh):
    """Chosen on one 20% split (5 queries, 8-10 relevant candidates), the threshold for recall 0.95 was
    the weakest held-out positive's probability: 0.28 on seed 0, keeping 58% of new queries' relevant
    candidates (mean over the 8 seeds 0.82, worst 0.58).  Out of fold over all 25 queries: mean 0.95."""
    got = []
    for seed in range(8):
        corpus, train, state = _two_relevant(25, seed)
        ad = CosineAdapter(target_value=0.95, max_iter=200).fit(corpus, train, upstream=state)
        info = ad.info_
        assert info["folds"] == 5 and info["held_out"] and info["threshold_queries"] == 25 == info["train_queries"]
        assert info["threshold_positives"] == info["positives"] and info["threshold_pairs"] == 25 * 30
        assert info["threshold_achieved"]["recall"] >= 0.95  # on the out-of-fold probabilities
        got.append(_recall_on(ad, fresh))
    assert np.mean(got) >= 0.92, got
    assert min(got) >= 0.83, got


def test_the_adapter_kept_is_fitted_on_every_training_query():
    """The threshold's folds only choose the cut-off: the adapter kept is the one an explicit threshold
    gives (every query learned), not one fitted on 80% of them."""
    corpus, train, state = _two_relevant(30, 0)
    chosen = CosineAdapter(max_iter=200).fit(corpus, train, upstream=state)
    given = CosineAdapter(max_iter=200, threshold=chosen.threshold_).fit(corpus, train, upstream=state)
    np.testing.assert_allclose(chosen.weights_, given.weights_)
    np.testing.assert_allclose(chosen.feat_mean_, given.feat_mean_)
    assert "folds" not in given.info_ and given.info_["train_queries"] == 30
    assert CosineAdapter(max_iter=200, val_fraction=0.5).fit(corpus, train, upstream=state).info_["folds"] == 2


def test_fit_warns_when_the_target_rests_on_too_few_candidates(caplog):
    """30 queries with one relevant candidate each: recall 0.95 means keeping the weakest of them or so
    (fewer than 2/(1-0.95) = 40); the former split (6 queries, 6 relevant: at least 5) said nothing."""
    corpus, train, state = _two_relevant(30, 1, hard=0.1, per_query=1)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        ad = CosineAdapter(target_value=0.95, max_iter=200).fit(corpus, train, upstream=state)
    said = _thin(caplog)
    assert len(said) == 1, said
    assert ("a threshold for recall 0.95 chosen on 30 relevant candidates (out-of-fold over 5 folds; about 40 "
            "needed for that target") in said[0]
    assert ad.info_["threshold_positives"] == 30
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):  # recall 0.9 needs 20: enough
        CosineAdapter(target_value=0.9, max_iter=200).fit(corpus, train, upstream=state)
    assert not _thin(caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):  # precision counts the kept candidates
        ad = CosineAdapter(target="precision", target_value=0.98, max_iter=200).fit(corpus, train, upstream=state)
    said = _thin(caplog)
    kept = ad.info_["threshold_kept"]
    assert kept < 100 and len(said) == 1
    assert (f"a threshold for precision 0.98 chosen on {kept} kept candidate{'' if kept == 1 else 's'} "
            "(out-of-fold over 5 folds; about 100 needed") in said[0]


def test_positives_needed():
    assert positives_needed("recall", 0.95) == 40
    assert positives_needed("recall", 0.9) == 20
    assert positives_needed("precision", 0.8) == 10
    assert positives_needed("recall", 0.5) == 5  # never below MIN_POSITIVES
    assert positives_needed("recall", 1.0) == 200  # a target of 1 counts as 0.99


def test_fold_assignment_is_seeded_and_puts_a_positive_query_in_every_fold():
    has_pos = np.r_[np.ones(7, bool), np.zeros(20, bool)]
    f = fold_assignment(has_pos, 5, 3)
    assert f.min() == 0 and f.max() == 4
    assert all(has_pos[f == i].any() and has_pos[f != i].any() for i in range(5))
    np.testing.assert_array_equal(f, fold_assignment(has_pos, 5, 3))
    assert not np.array_equal(f, fold_assignment(has_pos, 5, 4))
    assert fold_assignment(np.r_[True, True, False], 5, 0).max() == 1  # no more folds than positive queries
    assert (fold_assignment(np.r_[True, False, False], 5, 0) == -1).all()  # one: nothing to hold out
