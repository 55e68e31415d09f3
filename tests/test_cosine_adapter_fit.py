"""Cosine Adapter fit (review): the threshold's target reached or not, the power form's convergence, the
unfitted message and the runnable class example."""

from __future__ import annotations

import doctest
import logging

import numpy as np
import pytest
from test_filters import adapter_case

from ragkit.encoders import get_encoder
from ragkit.errors import NotFittedError
from ragkit.filters import CosineAdapter
from ragkit.filters.cosine_adapter import choose_threshold, threshold_reached
from ragkit.types import Ranking, State

KEY = get_encoder().key  # cheap: the model is not loaded


def _sharp(n_q: int = 240, k: int = 100, d: int = 32, seed: int = 0, flat: bool = False):
    """Cosines in a narrow MiniLM-like band below each query's top (0.45-0.65), relevance a steep logistic of the
    gap to the top with a query-dependent offset: the power form a*x^p+b fitted on such data slid along the
    (large a, -b; small p) valley and stopped at max_iter 500 unconverged (as on 240 SciFact train queries).
    ``flat``: relevance drawn at random (10%), whatever the cosine: no cut-off is precise."""
    def draw(rng, i, qv):
        top = 0.55 + 0.1 * qv[i, 1]
        c = np.sort(top - rng.gamma(2.0, 0.05, k))[::-1].astype(np.float32)
        p = np.full(k, 0.1) if flat else 1 / (1 + np.exp(-(40 * (c - top) + 2 + 1.5 * qv[i, 0])))
        return c, rng.random(k) < p

    return adapter_case(n_q, k, d, 2000, seed, draw)


@pytest.fixture(scope="module")
def sharp():
    return _sharp()


# ----------------------------------------------------------------------------- 1. the target, reached or not
def test_choose_threshold_warns_when_the_precision_target_is_out_of_reach(caplog):
    """It returned the most precise cut-off (0.8, precision 0.5) for a 0.9 target without a word."""
    probs, labels = np.array([.9, .8, .7]), np.array([0, 1, 0])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        t = choose_threshold(probs, labels, "precision", 0.9)
    assert t == 0.8
    hits = [r.getMessage() for r in caplog.records if r.name == "ragkit"]
    assert len(hits) == 1, hits
    assert "target precision 0.9" in hits[0] and "3 held-out candidate pairs (1 relevant)" in hits[0]
    assert "0.8, which reaches precision 0.5 at recall 1" in hits[0]
    assert threshold_reached(probs, labels, t) == {"precision": 0.5, "recall": 1.0}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):  # reached: silent
        assert choose_threshold(probs, labels, "precision", 0.5) == 0.8
        assert choose_threshold(probs, labels, "recall", 0.95) == 0.8
    assert not [r for r in caplog.records if r.name == "ragkit"]


def test_threshold_reached_of_an_empty_kept_set():
    assert threshold_reached(np.array([.2, .1]), np.array([1, 0]), 0.5) == {"precision": 0.0, "recall": 0.0}


def test_fit_records_what_the_threshold_reached(sharp, caplog):
    corpus, train, state = sharp
    ad = CosineAdapter(target="recall", target_value=0.9).fit(corpus, train, upstream=state)
    got = ad.info_["threshold_achieved"]
    assert set(got) == {"precision", "recall"} and got["recall"] >= 0.9 and 0 < got["precision"] <= 1
    assert ad.info_["threshold_pairs"] == 100 * ad.info_["threshold_queries"]
    corpus, train, state = _sharp(n_q=60, k=30, d=8, flat=True)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        ad = CosineAdapter(target="precision", target_value=0.8).fit(corpus, train, upstream=state)
    got = ad.info_["threshold_achieved"]
    assert got["precision"] < 0.8  # out of reach on random labels: recorded, and said
    hits = [r.getMessage() for r in caplog.records if "no threshold reaches the target precision 0.8" in r.getMessage()]
    assert len(hits) == 1 and f"on the {ad.info_['threshold_pairs']} out-of-fold candidate pairs" in hits[0]
    assert f"precision {got['precision']:.4g}" in hits[0]


# ----------------------------------------------------------------------------- 2. the power form converges
def test_power_form_converges_within_the_default_max_iter(sharp, caplog):
    """a*x^p+b stopped at 500 iterations unconverged here (and on 240 SciFact train queries: 1860 to converge);
    the centred form converges in about 120."""
    corpus, train, state = sharp
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        ad = CosineAdapter(form="power").fit(corpus, train, upstream=state)
    assert ad.info_["converged"], ad.info_
    assert ad.info_["iterations"] < 300, ad.info_
    assert not [r for r in caplog.records if "L-BFGS stopped" in r.getMessage()]
    assert 0 < ad.power_x0_ < 1
    p = ad.predict_proba(state.vectors[KEY][:4], np.tile(np.linspace(0.9, -0.9, 50), (4, 1)))
    assert np.all(np.diff(p, axis=1) <= 0) and np.all(p[:, 0] > p[:, -1])


@pytest.mark.parametrize("scale", [1.0, 1e-6])  # 1e-6: exponents near 0, the series branch of d g / d p
def test_power_form_gradient_matches_finite_differences(sharp, scale):
    corpus, train, state = sharp
    ad = CosineAdapter(form="power", max_iter=5).fit(corpus, train, upstream=state)
    rng = np.random.default_rng(1)
    n_q, D1 = 12, 6
    F1 = np.concatenate([rng.normal(size=(n_q, D1 - 1)), np.ones((n_q, 1))], axis=1)
    qidx = np.repeat(np.arange(n_q), 10)
    c = rng.uniform(-0.2, 0.9, len(qidx))
    y = (rng.random(len(qidx)) < 0.3).astype(np.float64)
    w = rng.normal(size=D1 * 3) * 0.3
    w.reshape(D1, 3)[-1, 2] = np.log(np.expm1(scale))  # p = scale where the other weights add little
    if scale < 1:
        w.reshape(D1, 3)[:-1, 2] = 0.0
    _, g = ad._loss_grad(w, F1, c, y, qidx)
    h = 1e-6
    num = np.array([(ad._loss_grad(w + h * e, F1, c, y, qidx)[0] - ad._loss_grad(w - h * e, F1, c, y, qidx)[0])
                    / (2 * h) for e in np.eye(len(w))])
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-8)


def test_power_adapter_saved_before_the_centre_keeps_its_map(sharp):
    """A save without power_x0 (before the centred form) maps with the former a*x^p+b."""
    corpus, train, state = sharp
    ad = CosineAdapter(form="power", max_iter=20).fit(corpus, train, upstream=state)
    ad.power_x0_ = None
    c = np.linspace(0.9, -0.5, 30)
    t, _ = ad._transform(c, np.full(30, 2.0))
    np.testing.assert_allclose(t, ((c + 1) / 2) ** 2)


# ----------------------------------------------------------------------------- 3. a runnable class example
def test_class_example_runs():
    tests = [t for t in doctest.DocTestFinder().find(CosineAdapter) if t.name.endswith("CosineAdapter")]
    assert tests and tests[0].examples
    assert not any(ex.options.get(doctest.SKIP) for ex in tests[0].examples), "the usage example is skipped"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    res = runner.run(tests[0])
    assert res.failed == 0 and res.attempted >= 10


# ----------------------------------------------------------------------------- 4. unfitted / predict_proba docs
def test_unfitted_adapter_says_it_needs_judged_queries():
    with pytest.raises(NotFittedError, match=r"call fit\(corpus, train=TrainSet\(queries, qrels\)\) first"):
        CosineAdapter().predict_proba(np.zeros((1, 4)), np.zeros((1, 3)))
    with pytest.raises(NotFittedError, match=r"fit\(corpus, train"):
        CosineAdapter()(State(["q"], rankings=[Ranking([0], [0.5])]))


def test_predict_proba_documents_its_shapes():
    doc = CosineAdapter.predict_proba.__doc__ or ""
    assert "Parameters" in doc and "Returns" in doc
    assert "qvecs : (B, d)" in doc and "cosines : (B, K)" in doc and "(B, K) float64" in doc
