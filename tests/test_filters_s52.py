"""Session 52's review of the filters: DBNorm's bank partitions tiled along the documents too (the same results,
products of hundreds of bank rows), a per-search score_threshold no score can reach refused as the parameter is,
cosine_adapter's threshold choice on ragkit.eval's pr_curve (the same thresholds), the cut-offs' sort check on
first_unsorted's rule, and val_fraction above one half refused."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
from test_cosine_adapter_small import _two_relevant

import ragkit.filters.dbnorm as dbn
from ragkit._flat import first_unsorted, unsorted_at
from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.errors import ConfigError, DataError, ParamError
from ragkit.filters import CosineAdapter, ScoreThreshold
from ragkit.filters.cosine_adapter import choose_threshold
from ragkit.filters.dbnorm import bank_log_partition
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus, Ranking, State

register_encoder("filters-s52-hash32", HashingEncoder(dim=32), replace=True)


# ---------------------------------------------------------------------- 1. bank_log_partition tiled
def _one_tile(docs: np.ndarray, bank: np.ndarray, beta: float, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    """``bank_log_partition`` over one tile: the whole bank against every document in one product (a budget of
    exactly ``n_b x n_docs`` scores), the reference the tiled runs must equal."""
    return bank_log_partition(docs, bank, beta, max_chunk_floats=max(1, len(bank) * len(docs)), **kw)


def _quantised(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Vectors of quarters in [-0.5, 0.5]: their products are exact in float32, so ties are real ties (equal
    in any summation order) and many documents share one score."""
    return (rng.integers(-2, 3, (n, d)) / 4).astype(np.float32)


@pytest.mark.parametrize("seed", range(10))
def test_bank_log_partition_tiled_equals_the_bank_only_chunks(seed):
    """Tiles along the documents too give the activation sets of before exactly (ties to the lower document
    row, across tiles as within one), and log Z to float rounding: the bank blocks are larger (up to 512 rows
    instead of max_chunk_floats // n_docs), so each block's log-sum-exp is shifted by another column maximum
    and summed over other rows before the logaddexp across blocks (float32 exponentials: ~1e-7 relative)."""
    rng = np.random.default_rng(seed)
    n, n_b, d = int(rng.integers(1, 1500)), int(rng.integers(2, 1200)), int(rng.integers(1, 8))
    docs, bank = _quantised(rng, n, d), _quantised(rng, n_b, d)
    if seed % 3 == 0:  # continuous vectors: the same matrix products must give the same cosines
        docs = rng.standard_normal((n, 16)).astype(np.float32)
        bank = rng.standard_normal((n_b, 16)).astype(np.float32)
        docs /= np.linalg.norm(docs, axis=1, keepdims=True)
        bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    rows = rng.integers(-1, n, n_b) if seed % 2 else None  # self terms dropped, across tiles too
    for chunk in (int(rng.choice([300, 1000])), int(rng.choice([1 << 14, 1 << 16])), 1 << 23):
        for k in (1, 3) if chunk > 1000 else (int(rng.choice([1, 2, 7])),):
            try:
                old = _one_tile(docs, bank, 2.0, bank_rows=rows, activation_k=k)
            except DataError:  # a document with no bank term left: refused by both
                with pytest.raises(DataError, match="no bank term"):
                    bank_log_partition(docs, bank, 2.0, bank_rows=rows, activation_k=k, max_chunk_floats=chunk)
                continue
            new = bank_log_partition(docs, bank, 2.0, bank_rows=rows, activation_k=k, max_chunk_floats=chunk)
            np.testing.assert_allclose(new[0], old[0], rtol=1e-7, atol=0)
            assert new[1].tolist() == old[1].tolist(), (chunk, k)


def test_bank_log_partition_ties_across_document_tiles_go_to_the_lower_row():
    """Twin documents in different tiles: the first tile's wins a bank item's activation slot."""
    docs = np.tile(np.eye(4, dtype=np.float32), (300, 1))  # row r is e_(r % 4): 300 twins of each
    bank = np.eye(4, dtype=np.float32)
    for k in (1, 2):
        _, act = bank_log_partition(docs, bank, 1.0, activation_k=k, max_chunk_floats=4 * 7)  # tiles of 7
        assert np.flatnonzero(act).tolist() == ([0, 1, 2, 3] if k == 1 else [0, 1, 2, 3, 4, 5, 6, 7])


def test_bank_log_partition_products_take_hundreds_of_bank_rows_at_large_n_docs(monkeypatch):
    """At 40k documents, 8M floats held 209 bank rows per product over every document (20 at 400k), each
    re-reading the whole document matrix; tiled, every product takes 512 bank rows (or the bank's last ones)
    within the same budget of scores."""
    shapes: list[tuple[int, int]] = []
    real = getattr(dbn, "_bank_scores", None)

    def spy(block, docs_t, beta):  # noqa: ANN001, ANN202
        shapes.append((block.shape[0], docs_t.shape[1]))
        return real(block, docs_t, beta)

    monkeypatch.setattr(dbn, "_bank_scores", spy, raising=False)
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((40_000, 4)).astype(np.float32)
    bank = rng.standard_normal((1200, 4)).astype(np.float32)
    bank_log_partition(docs, bank, 3.0)
    assert shapes, "bank_log_partition made no product through _bank_scores"
    assert all(r * w <= 1 << 23 for r, w in shapes), shapes
    assert {r for r, _ in shapes} == {512, 1200 - 1024}, shapes  # two blocks of 512, then the bank's last 176
    assert sum(w for r, w in shapes if r == 512) == 2 * 40_000 and sum(w for r, w in shapes if r == 176) == 40_000


def test_bank_log_partition_small_corpora_keep_one_pass_over_the_documents(monkeypatch):
    """Where max_chunk_floats // n_docs bank rows reach 512 (or the whole bank), products still span every
    document, with the bank rows per product of before (max_chunk_floats // n_docs): the same products in the
    same order, so the results of before to the bit."""
    shapes: list[tuple[int, int]] = []
    real = dbn._bank_scores
    monkeypatch.setattr(dbn, "_bank_scores", lambda b, t, beta: shapes.append((b.shape[0], t.shape[1]))
                        or real(b, t, beta))
    rng = np.random.default_rng(1)
    docs = rng.standard_normal((5000, 8)).astype(np.float32)
    bank = rng.standard_normal((3000, 8)).astype(np.float32)
    new = bank_log_partition(docs, bank, 3.0)
    assert {w for _, w in shapes} == {5000} and shapes[0][0] == (1 << 23) // 5000
    ref = _one_tile(docs, bank, 3.0)
    np.testing.assert_allclose(new[0], ref[0], rtol=1e-6, atol=0)  # (float32 sums: BLAS rounds by the block's shape)
    assert new[1].tolist() == ref[1].tolist()


# ---------------------------------------------------------------------- 2. per-search score_threshold
def _dense_threshold() -> Pipeline:
    corpus = Corpus([f"d{i}" for i in range(40)], [f"w{i % 7} v{i % 5} u{i}" for i in range(40)])
    return (Dense(model="filters-s52-hash32", k=10) | ScoreThreshold(threshold=0.1)).fit(corpus)


def test_a_per_search_threshold_no_cosine_reaches_is_refused_naming_the_option():
    """ScoreThreshold(threshold=5) after dense is refused at fit, but search(score_threshold={"threshold": 5})
    returned empty rankings silently."""
    pipe = _dense_threshold()
    assert any(len(r) for r in pipe.search(["w1 v2"], score_threshold={"threshold": 0.0}).rankings)
    with pytest.raises((ParamError, ConfigError), match=r"score_threshold\.threshold.*5\.0.*outside \[-1, 1\].*"
                       r"pipeline\[0\]\.dense.*keeps no documents") as err:
        pipe.search(["w1 v2"], score_threshold={"threshold": 5})
    assert "given per search" in str(err.value)
    with pytest.raises(ParamError, match=r"keeps its top 2 \(k_min\)"):
        pipe.search(["w1 v2"], score_threshold={"threshold": 5, "k_min": 2})
    pipe.search(["w1 v2"], score_threshold={"threshold": -5})  # below the range: keeps everything, as at fit


def test_a_score_threshold_shared_by_two_pipelines_is_checked_on_the_scores_of_the_one_it_runs_in():
    """The per-search check read the sources the last pipeline checked found for the step: a ScoreThreshold in a
    dense pipeline and a bm25 one refused BM25's threshold 5 naming the other pipeline's dense."""
    corpus = Corpus([f"d{i}" for i in range(40)], [f"w{i % 7} v{i % 5} u{i}" for i in range(40)])
    st = ScoreThreshold(threshold=0.1)
    dense = Dense(model="filters-s52-hash32", k=10).fit(corpus)
    (dense | st).fit(corpus)
    bm25 = BM25(k=10).fit(corpus)
    on_bm25 = Pipeline([bm25, st])
    out = on_bm25(State(["w1 v2"], options={"score_threshold": {"threshold": 5}}))
    assert all(float(s) >= 5 for r in out.rankings for s in r.scores)
    on_bm25.search(["w1 v2"], score_threshold={"threshold": 5})  # BM25's scale: not refused
    with pytest.raises((ParamError, ConfigError), match=r"5\.0.*outside \[-1, 1\].*pipeline\[0\]\.dense"):
        Pipeline([dense, st])(State(["w1 v2"], options={"score_threshold": {"threshold": 5}}))
    with pytest.raises((ParamError, ConfigError), match=r"5\.0.*outside \[-1, 1\].*pipeline\[0\]\.dense"):
        Pipeline([dense, st]).search(["w1 v2"], score_threshold={"threshold": 5})
    assert st(State(["q"], rankings=[Ranking([3, 1], [9.0, 1.0])], options={"score_threshold": {"threshold": 5}})
              ).rankings[0].rows.tolist() == [3]  # on its own: no scores reach it from a retriever, not checked


# ---------------------------------------------------------------------- 3. choose_threshold on pr_curve

def _old_choose_threshold(probs: np.ndarray, labels: np.ndarray, target: str, value: float,
                     *, pairs: str = "held-out") -> float:
    """``choose_threshold`` before it used ``pr_curve`` (HEAD at session 52), for equality checks."""
    order = np.argsort(-probs, kind="stable")
    p, y = probs[order], labels[order].astype(np.float64)
    tp = np.cumsum(y)
    if tp[-1] == 0:
        raise DataError("cosine_adapter: the held-out training queries have no relevant candidate; "
                        "cannot choose a threshold")
    # a cut-off t keeps every candidate with p >= t: only the last position of a run of equal
    # probabilities is a kept set (tied candidates are kept or dropped together)
    last = np.r_[np.nonzero(np.diff(p))[0], len(p) - 1]
    if target == "recall":
        i = int(np.searchsorted(tp[last], value * tp[-1] - 1e-9))
        return float(p[last[min(i, len(last) - 1)]])
    prec = tp[last] / (last + 1)
    ok = np.nonzero(prec >= value)[0]
    if len(ok):
        return float(p[last[int(ok[-1])]])
    i = int(np.argmax(prec))
    logging.getLogger("ragkit").warning(
        "cosine_adapter: no threshold reaches the target precision %.4g on the %d %s candidate pairs (%d "
        "relevant); using the most precise one, %.4g, which reaches precision %.4g at recall %.4g",
        value, len(p), pairs, int(tp[-1]), float(p[last[i]]), float(prec[i]), float(tp[last[i]] / tp[-1]))
    return float(p[last[i]])


def test_choose_threshold_on_pr_curve_equals_its_own_sweep(caplog):
    rng = np.random.default_rng(0)
    caplog.set_level(logging.WARNING, logger="ragkit")
    for trial in range(300):
        n = int(rng.integers(1, 400))
        probs = rng.random(n)
        if trial % 2:  # ties: few distinct probabilities
            probs = np.round(probs, int(rng.integers(0, 3)))
        if trial % 5 == 0:
            probs = probs.astype(np.float32)
        labels = (rng.random(n) < rng.random()).astype(np.int64)
        for target, value in (("recall", 0.95), ("recall", 1.0), ("recall", 0.3), ("precision", 0.5),
                              ("precision", 0.9), ("precision", 1.0)):
            if labels.sum() == 0:
                with pytest.raises(DataError, match="no relevant candidate"):
                    choose_threshold(probs, labels, target, value)
                continue
            caplog.clear()
            old = _old_choose_threshold(probs, labels, target, value)
            said = [r.getMessage() for r in caplog.records]
            caplog.clear()
            assert choose_threshold(probs, labels, target, value) == old, (trial, target, value)
            assert [r.getMessage() for r in caplog.records] == said


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_choose_threshold_refuses_non_finite_probabilities_in_its_own_words(bad):
    """NaN probabilities got pr_curve's refusal, "expected finite scores (drop padding first)", which speaks of
    ranking padding: choose_threshold says what they are, how many, where."""
    probs = np.array([0.9, bad, 0.7, 0.2])
    with pytest.raises(DataError, match=rf"cosine_adapter: 1 of the 4 out-of-fold candidate probabilities .*not "
                                        rf"finite \(first: {bad!r} at candidate 1\).*expected probabilities in "
                                        r"\[0, 1\]") as err:
        choose_threshold(probs, np.array([0, 1, 0, 1]), "recall", 0.95, pairs="out-of-fold")
    assert "padding" not in str(err.value)


# ---------------------------------------------------------------------- 4. the cut-offs' sort check
def test_first_unsorted_nan_last_is_the_cutoffs_rule():
    c = np.array([0.9, np.nan, 0.5, 0.7, 0.6, np.nan, np.nan], np.float32)
    qidx = np.array([0, 0, 0, 1, 1, 1, 1])
    assert first_unsorted(c, qidx) is None and unsorted_at(c, qidx) is None  # NaN rises nowhere
    assert unsorted_at(c, qidx, nan_last=True) == 1 and int(qidx[1 + 1]) == 0  # query 0: a number after its NaN
    assert unsorted_at(c[3:], qidx[3:], nan_last=True) is None
    st = State(["a", "b"], rankings=[Ranking([0, 1, 2], c[:3]), Ranking([3, 4], c[3:5])])
    with pytest.raises(DataError, match=r"query 0 of the batch is not \(nan before 0\.5\)"):
        ScoreThreshold(threshold=0.0)(st)


# ---------------------------------------------------------------------- 5. val_fraction above one half
@pytest.mark.parametrize("v", [0.7, 0.9, 0.99, 0.51])
def test_val_fraction_above_one_half_is_refused_saying_what_it_would_mean(v):
    """round(1 / v) is 1 for any v above 2/3 and 2 down to 0.4: max(2, ...) made 0.7, 0.9 and 0.99 all 2 folds
    of half the queries, silently."""
    with pytest.raises(ParamError, match=rf"val_fraction: val_fraction {v} .*2 folds of half the queries.*"
                                         r"expected a share in \(0, 0\.5\]"):
        CosineAdapter(val_fraction=v)
    with pytest.raises(ParamError, match=r"val_fraction"):
        Pipeline.from_yaml(f"pipeline:\n  - dense: {{}}\n  - cosine_adapter: {{val_fraction: {v}}}\n")
    CosineAdapter(val_fraction=0.5)


def test_a_save_with_val_fraction_above_one_half_loads_as_the_two_folds_it_was_fitted_with(tmp_path):
    """ragkit took val_fraction up to 1 before the (0, 0.5] bound, and fitted every share above one half as 2
    folds (max(2, round(1 / v))): such a save loads, read as 0.5, the same folds and threshold, while the
    constructor and YAML still refuse the share."""
    corpus, train, state = _two_relevant(20, 0)
    fitted = CosineAdapter(max_iter=200, val_fraction=0.5).fit(corpus, train, upstream=state)
    folder = tmp_path / "ad"
    fitted.save(folder)
    meta = json.loads((folder / "params.json").read_text())
    meta["params"]["val_fraction"] = 0.7  # as an earlier ragkit wrote it
    (folder / "params.json").write_text(json.dumps(meta, indent=2))
    sums = json.loads((folder / "checksums.json").read_text())
    sums["params.json"] = hashlib.sha256((folder / "params.json").read_bytes()).hexdigest()
    (folder / "checksums.json").write_text(json.dumps(sums, indent=2))
    loaded = Operator.load(folder)
    assert isinstance(loaded, CosineAdapter) and loaded.params.val_fraction == 0.5
    assert loaded.threshold_ == fitted.threshold_
    with pytest.raises(ParamError, match=r"val_fraction 0\.7 .*2 folds of half the queries"):
        CosineAdapter(val_fraction=0.7)
    with pytest.raises(ParamError, match=r"val_fraction 0\.7 .*2 folds of half the queries"):
        CosineAdapter(val_fraction="0.7")
    with pytest.raises(ParamError, match=r"val_fraction 0\.7 .*2 folds of half the queries"):
        Pipeline.from_yaml("pipeline:\n  - dense: {}\n  - cosine_adapter: {val_fraction: 0.7}\n")


def test_info_records_the_fold_shares_realised():
    """info_ recorded 1 / folds, derivable from info_["folds"] and not what the folds held: 31 queries in 3
    folds are 11, 10 and 10 of them."""
    corpus, train, state = _two_relevant(31, 0)
    info = CosineAdapter(max_iter=200, val_fraction=0.3).fit(corpus, train, upstream=state).info_
    assert info["folds"] == 3 and "fold_share" not in info
    assert sorted(info["fold_shares"]) == pytest.approx([10 / 31, 10 / 31, 11 / 31])
