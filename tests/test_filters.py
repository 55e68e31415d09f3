"""Relevance filters (Cosine Adapter, score cut-offs), DBNorm and the hubness / filtering measures."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from ragkit._flat import cut_prefix, flatten
from ragkit.encoders import get_encoder
from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.eval.filtering import expected_calibration_error, filter_report, pr_curve, precision_at_recall
from ragkit.eval.hubness import hubness, k_occurrence, random_skewness, skewness
from ragkit.filters import CosineAdapter, DBNorm, RelativeThreshold, ScoreThreshold
from ragkit.filters.dbnorm import bank_log_partition, dbnorm_scores, pseudo_queries
from ragkit.operator import Operator
from ragkit.run import Run
from ragkit.types import Corpus, Queries, Ranking, State, TrainSet

KEY = get_encoder().key  # cheap: the model is not loaded


def adapter_case(n_q: int, k: int, d: int, n_docs: int, seed: int, draw):
    """``(corpus, train, state)`` of ``n_q`` synthetic queries with unit vectors ``qv (n_q, d)`` and ``k``
    candidates each among ``n_docs`` documents: ``draw(rng, i, qv) -> (cosines (k,) descending, relevant
    (k,) bool)`` makes query ``i``'s candidates (a query with none relevant is judged on an unretrieved one)."""
    rng = np.random.default_rng(seed)
    corpus = Corpus.from_texts([f"doc {i}" for i in range(n_docs)], ids=[f"d{i}" for i in range(n_docs)])
    qv = rng.normal(size=(n_q, d)).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    rankings, qrels = [], {}
    for i in range(n_q):
        rows = rng.choice(n_docs, k, replace=False)
        c, relevant = draw(rng, i, qv)
        rankings.append(Ranking(rows, c))
        qrels[f"q{i}"] = {f"d{r}": 1 for r in rows[relevant]} or {"d_unretrieved": 1}
    queries = Queries([f"q{i}" for i in range(n_q)], [f"query {i}" for i in range(n_q)])
    state = State(list(queries.texts), list(queries.ids), rankings=rankings, vectors={KEY: qv})
    return corpus, TrainSet(queries, qrels), state


def synthetic(n_q: int = 80, k: int = 30, d: int = 16, seed: int = 0):
    """Queries whose relevance depends on a query-specific cosine offset (what the adapter should learn)."""
    def draw(rng, i, qv):
        offset = 0.5 + 0.2 * qv[i, 0]  # cosine above which a document is relevant, depends on the query
        c = np.sort(rng.uniform(0.2, 0.9, k))[::-1].astype(np.float32)
        return c, c > offset + rng.normal(0, 0.03, k)

    return adapter_case(n_q, k, d, 400, seed, draw)


@pytest.fixture(scope="module")
def synth():
    return synthetic()


# ---------------------------------------------------------------------- Cosine Adapter
@pytest.mark.parametrize("form", ["linear", "sqrt", "quadratic", "power"])
def test_adapter_monotone_in_cosine(synth, form):
    corpus, train, state = synth
    ad = CosineAdapter(form=form, max_iter=200).fit(corpus, train, upstream=state)
    qv = state.vectors[KEY][:5]
    c = np.tile(np.linspace(0.95, -0.5, 60), (5, 1))  # sorted best first, like a ranking
    p = ad.predict_proba(qv, c)
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p, axis=1) <= 0), "probabilities must not increase as the cosine decreases"
    assert np.all(p[:, 0] > p[:, -1]), "the map must not be flat"
    # the call keeps the input order and scores are non-increasing
    out = ad(state.copy())
    for before, after in zip(state.rankings, out.rankings):
        np.testing.assert_array_equal(after.rows, before.rows[:len(after)])
        assert np.all(np.diff(after.scores) <= 0)
        np.testing.assert_array_equal(after.fields["cosine"], before.scores[:len(after)])


def test_adapter_learns_query_dependent_offset(synth):
    corpus, train, state = synth
    ad = CosineAdapter(list_features=False, threshold=0.5).fit(corpus, train, upstream=state)
    # two queries with different first coordinates: their 50% points must differ in the learned direction
    e = np.zeros((2, 16), np.float32)
    e[0, 0], e[1, 0] = 0.9, -0.9
    e[:, 1] = np.sqrt(1 - 0.81)
    c = np.tile(np.linspace(0.9, 0.2, 200), (2, 1))
    p = ad.predict_proba(e, c)
    mid = [c[i][np.argmin(np.abs(p[i] - 0.5))] for i in range(2)]
    assert mid[0] > mid[1] + 0.1, mid  # the true offsets are 0.68 and 0.32
    with pytest.raises(DataError, match=r"got qvecs \(3, 16\) and cosines \(2, 200\)"):
        ad.predict_proba(np.zeros((3, 16), np.float32), c)  # 5 vectors for 3 rows used the first 3, silently


def test_adapter_threshold_hits_target_on_train(synth):
    corpus, train, state = synth
    ad = CosineAdapter(target="recall", target_value=0.9).fit(corpus, train, upstream=state)
    assert ad.info_["held_out"] and 0 < ad.threshold_ < 1
    tight = CosineAdapter(target="recall", target_value=0.5).fit(corpus, train, upstream=state)
    assert tight.threshold_ > ad.threshold_
    kept = sum(len(r) for r in tight(state.copy()).rankings)
    assert kept < sum(len(r) for r in ad(state.copy()).rankings)
    # the target itself: about 90% of the relevant candidates of the training queries are kept
    ids = corpus.ids
    rep = filter_report(Run.from_rankings(state.query_ids, ad(state.copy()).rankings, ids), train.qrels,
                        reference=Run.from_rankings(state.query_ids, state.rankings, ids))
    assert 0.85 <= rep.recall < 1.0, rep


def test_adapter_learns_only_from_judged_queries(synth):
    """A training query without judgements is unjudged: its candidates were learned as irrelevant
    (biasing every probability low); one whose judgements are all 0 stays, a "no answer" query."""
    corpus, train, state = synth
    ids = list(train.queries.ids)
    half = {q: train.qrels[q] for q in ids[: len(ids) // 2]}
    zero = {**half, ids[-1]: {"d0": 0}}
    for qrels, n in ((half, len(half)), (zero, len(half) + 1)):
        ad = CosineAdapter(max_iter=50, threshold=0.5).fit(corpus, TrainSet(train.queries, qrels), upstream=state)
        assert ad.info_["train_queries"] == n  # a given threshold: no held-out split, every judged query learns
        assert ad.info_["pairs"] == sum(len(state.rankings[i]) for i, q in enumerate(ids) if q in qrels)


def test_adapter_list_features_read_the_training_depth(synth, tmp_path):
    """A deeper call (search(k) above the depth the adapter was trained at) keeps the probabilities of
    the shared candidates and the cut: the list features read the first ``depth_`` candidates only."""
    corpus, train, state = synth
    ad = CosineAdapter(max_iter=100).fit(corpus, train, upstream=state)
    assert ad.depth_ == 30
    deep = state.copy()
    rng = np.random.default_rng(1)
    deep.rankings = [Ranking(np.r_[r.rows, np.setdiff1d(np.arange(400), r.rows)[:30]],
                             np.r_[r.scores, np.sort(rng.uniform(-0.2, r.scores[-1], 30))[::-1]].astype(np.float32))
                     for r in state.rankings]
    a, b = ad(state.copy()), ad(deep)
    for x, y in zip(a.rankings, b.rankings):
        assert len(x) < 30 and x.equals(y)  # the same kept prefix, with the same probabilities
    ad.save(tmp_path / "ad")
    assert Operator.load(tmp_path / "ad").depth_ == 30


def test_adapter_trained_shallower_than_ten_keeps_its_probabilities_deeper(synth):
    """Trained on 5 candidates, the top-1 minus top-10 feature read the 10th of a deeper call."""
    corpus, train, state = synth
    short = state.copy()
    short.rankings = [Ranking(r.rows[:5], r.scores[:5]) for r in state.rankings]
    ad = CosineAdapter(max_iter=100).fit(corpus, train, upstream=short)
    assert ad.depth_ == 5
    qv = state.vectors[KEY]
    pad = np.full((len(state), 30), np.nan)
    for i, r in enumerate(state.rankings):
        pad[i, :len(r)] = r.scores
    np.testing.assert_array_equal(ad.predict_proba(qv, pad[:, :5]), ad.predict_proba(qv, pad)[:, :5])


def test_adapter_fit_refuses_rescored_input_as_search_does(synth):
    """``dense | mmr | cosine_adapter`` fitted on MMR's rank scores, then every search refused them."""
    corpus, train, state = synth
    rescored = state.copy()
    rescored.rankings = [Ranking(r.rows, np.linspace(1, 0, len(r)).astype(np.float32), {"cosine": r.scores})
                         for r in state.rankings]
    with pytest.raises(DataError, match="rescored them"):
        CosineAdapter().fit(corpus, train, upstream=rescored)


def test_adapter_predict_proba_checks_its_input(synth):
    corpus, train, state = synth
    ad = CosineAdapter(max_iter=50).fit(corpus, train, upstream=state)
    qv = state.vectors[KEY][:1]
    with pytest.raises(DataError, match="raw cosine scores in \\[-1, 1\\]"):
        ad.predict_proba(qv, np.array([[5.0, -7.0]]))
    with pytest.raises(DataError, match="row 0 has NaN before a value"):
        ad.predict_proba(qv, np.array([[0.9, np.nan, 0.5]]))
    with pytest.raises(DataError, match="row 0 is not sorted"):
        ad.predict_proba(qv, np.array([[0.5, 0.9]]))
    assert np.isnan(ad.predict_proba(qv, np.array([[0.9, 0.5, np.nan]]))[0, 2])


def test_adapter_refuses_no_positives(synth):
    corpus, train, state = synth
    unretrieved = {q: {f"d{next(i for i in range(400) if i not in set(r.rows.tolist()))}": 1}
                   for q, r in zip(train.queries.ids, state.rankings)}
    with pytest.raises(DataError, match=r"none of the 2400 retrieved training candidates \(80 queries\)"):
        CosineAdapter().fit(corpus, TrainSet(train.queries, unretrieved), upstream=state)
    # qrels of another id scheme: no query is usable, which is said as such (it read "none of the 0 retrieved
    # training candidates (0 queries)")
    elsewhere = TrainSet(train.queries, {q: {"d_not_in_corpus": 1} for q in train.queries.ids})
    with pytest.raises(DataError, match=r"none of the 80 training queries has a judged document in the corpus "
                                        r"\(400 documents; e.g. the qrels of query 'q0' name \['d_not_in_corpus'\]\)"):
        CosineAdapter().fit(corpus, elsewhere, upstream=state)
    with pytest.raises(DataError, match="no positive"):
        TrainSet(train.queries, {q: {"d1": 0} for q in train.queries.ids})
    with pytest.raises(DataError, match="needs judged training queries"):
        CosineAdapter().fit(corpus, None, upstream=state)


def test_adapter_refuses_non_cosines_and_wrong_dims(synth):
    corpus, train, state = synth
    bm25_like = state.copy()
    bm25_like.rankings = [Ranking(r.rows, r.scores * 20) for r in state.rankings]
    with pytest.raises(DataError, match="raw cosine"):
        CosineAdapter().fit(corpus, train, upstream=bm25_like)
    ad = CosineAdapter(threshold=0.5).fit(corpus, train, upstream=state)
    wrong = state.copy()
    wrong.vectors = {KEY: state.vectors[KEY][:, :8]}
    with pytest.raises(DataError, match="trained on 20 features"):
        ad(wrong)


def test_adapter_threshold_one_keeps_only_probability_one(synth):
    """The keep test reads the float64 probabilities: float32 rounds those above 1 - 6e-8 up to 1.0, and a
    threshold of 1 kept 386 of 2,400 candidates none of which has probability 1."""
    corpus, train, state = synth
    adapter = CosineAdapter(threshold=1.0).fit(corpus, train, upstream=state)
    proba = adapter.predict_proba(state.vectors[KEY], np.array([r.scores for r in state.rankings]))
    assert (proba >= 1.0).sum() == 0 and (proba.astype(np.float32) >= 1.0).sum() > 0  # the case exists
    assert sum(len(r) for r in adapter(state).rankings) == 0


def test_adapter_save_load_roundtrip(synth, tmp_path):
    corpus, train, state = synth
    ad = CosineAdapter(form="power", max_iter=100).fit(corpus, train, upstream=state)
    ad.save(tmp_path / "ad")
    names = sorted(p.name for p in (tmp_path / "ad").iterdir())
    assert "adapter_weights.npy" in names and "adapter.json" in names
    back = Operator.load(tmp_path / "ad")
    assert back.threshold_ == ad.threshold_
    a, b = ad(state.copy()), back(state.copy())
    for x, y in zip(a.rankings, b.rankings):
        assert x.equals(y)
    (tmp_path / "ad" / "adapter_weights.npy").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match=r"adapter_weights\.npy: checksum mismatch"):
        Operator.load(tmp_path / "ad")
    with pytest.raises(Exception, match="corrupt"):  # the array's own check, without the checksums
        Operator.load(tmp_path / "ad", verify=False)


def test_adapter_param_errors():
    with pytest.raises(ParamError, match="cosine_adapter.form"):
        CosineAdapter(form="cubic")
    with pytest.raises(ParamError, match="cosine_adapter.target_value"):
        CosineAdapter(target_value=1.5)


@pytest.mark.slow
def test_adapter_standalone_fit_equals_pipeline_fit(slice_data):
    from ragkit.retrievers import Dense

    corpus, queries, qrels, train = slice_data
    alone = CosineAdapter(train_k=20, max_iter=100).fit(corpus, train)
    pipe = (Dense(k=20) | CosineAdapter(train_k=20, max_iter=100)).fit(corpus, train)
    np.testing.assert_allclose(alone.weights_, pipe.steps[-1].weights_, rtol=1e-6, atol=1e-8)
    assert alone.threshold_ == pytest.approx(pipe.steps[-1].threshold_)
    run = pipe.search(queries)
    assert all(np.all(r.scores >= pipe.steps[-1].threshold_) for r in run.rankings)


# ---------------------------------------------------------------------- baselines
def test_score_and_relative_thresholds():
    st = State(["a", "b", "c"], rankings=[Ranking([3, 1, 2], [.9, .5, .1]), Ranking([5, 6], [.3, .2]),
                                           Ranking.empty()])
    out = ScoreThreshold(threshold=0.4)(st)
    assert [r.rows.tolist() for r in out.rankings] == [[3, 1], [], []]
    out = ScoreThreshold(threshold=0.4, k_min=1)(st)
    assert [r.rows.tolist() for r in out.rankings] == [[3, 1], [5], []]
    out = RelativeThreshold(alpha=0.6)(st)
    assert [r.rows.tolist() for r in out.rankings] == [[3], [5, 6], []]
    neg = State(["a"], rankings=[Ranking([1, 2, 3], [-.1, -.105, -.5])])
    assert RelativeThreshold(alpha=0.9)(neg).rankings[0].rows.tolist() == [1, 2]
    # an infinite top score: every document tied with it is kept, the rest dropped (inf - inf is NaN,
    # which kept only the first); a -inf top means every score is -inf: all kept
    inf = State(["a", "b"], rankings=[Ranking([1, 2, 3], [np.inf, np.inf, 5.0]), Ranking([4, 5], [-np.inf, -np.inf])])
    assert [r.rows.tolist() for r in RelativeThreshold(alpha=0.9)(inf).rankings] == [[1, 2], [4, 5]]
    with pytest.raises(ParamError, match="relative_threshold.alpha"):
        RelativeThreshold(alpha=0)
    assert len(st.rankings[0]) == 3  # input untouched
    # a cut-off keeps a prefix: a ranking not sorted best first (NaN last) is refused, not cut wrongly
    # ([NaN, .9, .8] at 0.5 kept the NaN document and dropped .8)
    ok = State(["a"], rankings=[Ranking([1, 2, 3], [.9, .9, np.nan])])
    assert ScoreThreshold(threshold=0.5)(ok).rankings[0].rows.tolist() == [1, 2]
    for scores in ([np.nan, .9, .8], [.2, .9, .8]):
        bad = State(["a", "b"], rankings=[Ranking([7], [1.0]), Ranking([1, 2, 3], scores)])
        for op in (ScoreThreshold(threshold=0.5), RelativeThreshold(alpha=0.9)):
            with pytest.raises(DataError, match=rf"{op.name} keeps a prefix .* query 1 of the batch is not"):
                op(bad)


# ---------------------------------------------------------------------- DBNorm
def _unit(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


DOCS = _unit([[1, 0], [0.8, 0.6], [0, 1], [-0.6, 0.8]])
QBANK = _unit([[1, 0.1], [0.9, 0.5], [0.2, 1]])


def _hand_log_z(bank, docs, beta, drop_self=False):
    out = []
    for g in range(len(docs)):
        z = 0.0
        for b in range(len(bank)):
            if drop_self and b == g:
                continue
            z += math.exp(beta * float(np.dot(bank[b], docs[g])))
        out.append(math.log(z))
    return np.array(out)


def test_bank_log_partition_by_hand():
    lz, act = bank_log_partition(DOCS, QBANK, 2.0)
    np.testing.assert_allclose(lz, _hand_log_z(QBANK, DOCS, 2.0), rtol=1e-6)
    # top-1 of each bank item: docs 0, 1, 2
    assert act.tolist() == [True, True, True, False]
    lz_g, act_g = bank_log_partition(DOCS, DOCS, 3.0, bank_rows=np.arange(4), max_chunk_floats=4)  # chunked
    np.testing.assert_allclose(lz_g, _hand_log_z(DOCS, DOCS, 3.0, drop_self=True), rtol=1e-6)
    # without self: doc0 -> 1, doc1 -> 0, doc2 -> 3, doc3 -> 2
    assert act_g.tolist() == [True, True, True, True]
    big, _ = bank_log_partition(DOCS, QBANK, 2000.0)  # no overflow: log space
    s_big = 2000.0 * (QBANK.astype(np.float64) @ DOCS.T.astype(np.float64))
    hand_big = s_big.max(0) + np.log(np.exp(s_big - s_big.max(0)).sum(0))
    np.testing.assert_allclose(big, hand_big, rtol=1e-6)
    # float16 vectors are scored in float32, as float32 ones; ties for an activation slot go to the lower row
    lz16, _ = bank_log_partition(DOCS.astype(np.float16), QBANK.astype(np.float16), 2.0)
    np.testing.assert_allclose(lz16, bank_log_partition(DOCS.astype(np.float16).astype(np.float32),
                                                        QBANK.astype(np.float16).astype(np.float32), 2.0)[0])
    twins = np.repeat(DOCS[:1], 3, axis=0)
    assert bank_log_partition(twins, DOCS[:1], 1.0)[1].tolist() == [True, False, False]


def test_dualis_and_ddis_by_hand():
    b1, b2 = 0.7, 3.0
    lzq, actq = bank_log_partition(DOCS, QBANK, b1)
    lzg, actg = bank_log_partition(DOCS, DOCS, b2, bank_rows=np.arange(4))
    q = _unit([[0.1, 1.0]])[0]
    s = DOCS @ q
    rows = np.arange(4)
    hq, hg = _hand_log_z(QBANK, DOCS, b1), _hand_log_z(DOCS, DOCS, b2, drop_self=True)
    # DualIS: product of the two inverted softmaxes, in log space
    expect = np.log(np.exp(b1 * s) / np.exp(hq) * np.exp(b2 * s) / np.exp(hg))
    top1 = np.full(4, int(np.argmax(s)))
    got = dbnorm_scores(s, rows, top1, "dualis", 20, b1, b2, lzq, actq, lzg, actg)
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    np.testing.assert_array_equal(dbnorm_scores(s, rows, top1, "dis", 20, b1, b2, lzq, actq, lzg, actg), got)
    # DDIS: a factor is normalised only if the raw top-1 is in that bank's activation set
    actq2 = actq.copy()
    actq2[top1[0]] = False
    got = dbnorm_scores(s, rows, top1, "ddis", 20, b1, b2, lzq, actq2, lzg, actg)
    expect_dyn = np.log(np.exp(b1 * s) * np.exp(b2 * s) / np.exp(hg))
    np.testing.assert_allclose(got, expect_dyn, rtol=1e-5)
    got = dbnorm_scores(s, rows, top1, "ddis", 20, b1, b2, lzq, actq, lzg, actg)
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    # IS / QB-Norm
    got = dbnorm_scores(s, rows, top1, "is", 2.0, b1, b2, lzq, actq, lzg, actg)
    np.testing.assert_allclose(got, 2.0 * s - lzq, rtol=1e-6)
    none = np.zeros(4, bool)
    np.testing.assert_allclose(dbnorm_scores(s, rows, top1, "qbnorm", 2.0, b1, b2, lzq, none, lzg, actg), 2.0 * s)


def test_dbnorm_scores_dual_methods_refuse_a_missing_gallery_bank():
    """The gallery bank's arrays are optional (is / qbnorm do without): a dual method given None says
    what is missing (it raised "'NoneType' object is not subscriptable"); the others still work."""
    lzq, actq = bank_log_partition(DOCS, QBANK, 1.0)
    s, rows, top1 = DOCS @ _unit([[0.1, 1.0]])[0], np.arange(4), np.zeros(4, np.int64)
    for method in ("dualis", "dis", "ddis"):
        with pytest.raises(ValueError, match="gallery bank's log_z_g and act_g"):
            dbnorm_scores(s, rows, top1, method, 2.0, 0.5, 3.0, lzq, actq, None, None)
    np.testing.assert_allclose(dbnorm_scores(s, rows, top1, "is", 2.0, 0.5, 3.0, lzq, actq, None, None),
                               2.0 * s - lzq, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown method 'DIS'; expected one of 'is', 'qbnorm', 'dualis'"):
        dbnorm_scores(s, rows, top1, "DIS", 2.0, 0.5, 3.0, lzq, actq, None, None)


def test_cut_prefix_computes_the_starts_it_is_not_given():
    """New scores and fields are flat arrays; without ``starts`` (optional) cut_prefix finds each
    ranking's place in them (it raised "'NoneType' object is not subscriptable")."""
    rankings = [Ranking([3, 1, 2], [.9, .5, .1]), Ranking([], []), Ranking([7, 8], [.8, .2])]
    _, scores, _, starts, _ = flatten(rankings)
    new = scores * 10
    n_keep = np.array([2, 0, 1])
    want = cut_prefix(rankings, n_keep, new_scores=new, starts=starts, fields={"cosine": scores})
    got = cut_prefix(rankings, n_keep, new_scores=new, fields={"cosine": scores})
    assert [r.rows.tolist() for r in got] == [r.rows.tolist() for r in want] == [[3, 1], [], [7]]
    assert [r.scores.tolist() for r in got] == [r.scores.tolist() for r in want]
    assert [r.fields["cosine"].tolist() for r in got] == [r.fields["cosine"].tolist() for r in want]


def test_dbnorm_refuses_empty_bank_and_wrong_dims():
    with pytest.raises(DataError, match="bank is empty"):
        bank_log_partition(DOCS, np.zeros((0, 2), np.float32), 1.0)
    with pytest.raises(DataError, match="dimension 3 but document vectors have 2"):
        bank_log_partition(DOCS, np.ones((2, 3), np.float32), 1.0)
    with pytest.raises(DataError, match="at least 2 items"):
        bank_log_partition(DOCS, DOCS[:1], 1.0, bank_rows=np.array([0]))


def test_dbnorm_bank_checks_finite_vectors_and_breaks_activation_ties_by_row():
    with pytest.raises(DataError, match=r"1 of the 2 bank vectors contain NaN or infinite values \(first at "
                                        r"position 1\)"):
        bank_log_partition(DOCS, np.array([[1, 0], [np.nan, 0]], np.float32), 1.0)
    with pytest.raises(DataError, match="document vectors contain NaN"):
        bank_log_partition(np.array([[1, 0], [0, np.inf]], np.float32), DOCS, 1.0)
    docs = np.tile(_unit([[1, 0]]), (12, 1))  # 12 identical documents: every activation slot is a tie
    for k in (1, 2, 5):
        _, active = bank_log_partition(docs, _unit([[1, 0.1]]), 1.0, activation_k=k)
        assert np.flatnonzero(active).tolist() == list(range(k))  # ties go to the lower rows, as documented


def test_dbnorm_demotes_a_hub():
    """A document close to every bank query loses its place to an equally close non-hub."""
    docs = _unit([[1, 1, 0], [1, 0, 0.05], [0, 1, 0]])  # doc0 is a hub between the two clusters
    bank = _unit([[1, 0.9, 0], [0.9, 1, 0], [1, 1, 0.1]])
    lz, act = bank_log_partition(docs, bank, 10.0)
    q = _unit([[1, 0.55, 0]])[0]
    s = docs @ q
    assert np.argmax(s) == 0
    new = dbnorm_scores(s, np.arange(3), np.zeros(3, int), "is", 10.0, 1, 1, lz, act, None, None)
    assert np.argmax(new) == 1


def test_dbnorm_operator_roundtrip(slice_data, tmp_path):
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    corpus, queries, qrels, train = slice_data
    pipe = (Dense(k=20) | DBNorm(method="ddis")).fit(corpus, train)
    op = pipe.steps[-1]
    assert op.info_["query_bank"] == "train" and op.info_["gallery_bank_size"] == len(corpus)
    a = pipe.search(queries)
    pipe.save(tmp_path / "p")
    b = Pipeline.load(tmp_path / "p").search(queries)
    for x, y in zip(a.rankings, b.rankings):
        assert x.equals(y)
    raw = Dense(k=20).fit(corpus).search(queries)
    for x, r in zip(a.rankings, raw.rankings):
        assert set(x.rows.tolist()) == set(r.rows.tolist())  # a reranker: same candidates
        assert np.all(np.diff(x.scores) <= 0)
    # no training queries -> pseudo-queries from the corpus
    op2 = DBNorm(method="is", query_bank_size=30).fit(corpus)
    assert op2.info_["query_bank"] == "pseudo" and op2.info_["query_bank_size"] == 30
    texts, rows = pseudo_queries(corpus, 5, seed=1)
    assert len(texts) == 5 and all(t for t in texts) and len(set(rows.tolist())) == 5


def test_dbnorm_samples_its_two_banks_independently_and_fits_an_empty_corpus(slice_data, monkeypatch):
    """Equal pseudo-query and gallery bank sizes drew the same documents (one seeded stream for both)."""
    import ragkit.filters.dbnorm as dbn
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    corpus, queries, _, _ = slice_data
    seen, real = [], dbn.bank_log_partition
    monkeypatch.setattr(dbn, "bank_log_partition", lambda *a, **kw: seen.append(kw["bank_rows"]) or real(*a, **kw))
    DBNorm(method="dualis", query_bank_size=50, gallery_bank_size=50).fit(corpus)
    q_rows, g_rows = seen
    assert len(q_rows) == len(g_rows) == 50 and len(np.intersect1d(q_rows, g_rows)) < 25
    empty = Pipeline([Dense(k=5), DBNorm(method="ddis")]).fit(corpus.subset(np.arange(0)))
    assert [len(r) for r in empty.search(queries).rankings] == [0] * len(queries)


# ---------------------------------------------------------------------- measures
def test_hubness_measures():
    rk = [Ranking([0, 1, 2], [3, 2, 1]), Ranking([0, 1, 3], [3, 2, 1]), Ranking([0, 4], [2, 1])]
    nk = k_occurrence(rk, n_docs=8, k=2)
    assert nk.tolist() == [3, 2, 0, 0, 1, 0, 0, 0]
    from scipy.stats import skew

    assert skewness(nk) == pytest.approx(skew(nk))
    rep = hubness(rk, 8, k=2, top=2)
    assert rep.never_retrieved == pytest.approx(5 / 8)
    assert rep.top_hubs == [(0, 3), (1, 2)] and rep.max_occurrence == 3
    assert rep.skewness_nonzero == pytest.approx(skew([3, 2, 1]))
    assert rep.top1pct_share == pytest.approx(3 / 6)
    with pytest.raises(DataError):
        k_occurrence(rk, n_docs=3, k=3)


def test_random_skewness_floor():
    # uniform random top-k: N_k is close to Poisson(n_q k / n_docs), skewness about 1 / sqrt(lambda)
    for n_q, skew_expected in ((300, 1.31), (2000, 0.51)):
        lam = n_q * 10 / 5183
        got = random_skewness(n_q, 5183, k=10, repeats=5, seed=3)
        assert got == pytest.approx(1 / np.sqrt(lam), abs=0.08) and got == pytest.approx(skew_expected, abs=0.08)
    assert random_skewness(50, 400, 5, repeats=3, seed=1) == random_skewness(50, 400, 5, repeats=3, seed=1)
    # a run where every query returns the same documents is far above the floor
    hub_run = [Ranking(np.arange(10), np.linspace(1, 0, 10)) for _ in range(300)]
    assert hubness(hub_run, 5183, k=10).skewness > 10 * random_skewness(300, 5183, repeats=3)
    with pytest.raises(DataError, match="k <= n_docs"):
        random_skewness(10, 5, k=6)



@pytest.mark.parametrize("n_q, n_docs, k", [(300, 5183, 10), (900, 5183, 3), (40, 50, 49), (7, 12, 12),
                                            (30, 400, 100)])
def test_random_skewness_is_the_simulation_one_query_at_a_time(n_q, n_docs, k):
    """The batched draws count the very documents a query-at-a-time simulation of the same random stream picks:
    the same value to the last bit.  Floyd's algorithm (a set per query) for a k, or the n_docs - k documents
    left out, whose square is at most 4 * n_docs; else a plain argpartition of the k smallest uniform draws
    (the batched path is torch.topk)."""
    rng = np.random.default_rng(5)
    m = min(k, n_docs - k)
    ref = []
    for _ in range(3):
        counts = np.zeros(n_docs, np.int64)
        if m * m <= 4 * n_docs:
            chunk = max(1, (1 << 22) // max(m, 1))
            for a in range(0, n_q if m else 0, chunk):
                sets: list[set[int]] = [set() for _ in range(min(chunk, n_q - a))]
                for j in range(n_docs - m, n_docs):
                    for s_, t in zip(sets, rng.integers(0, j + 1, len(sets)).tolist()):
                        s_.add(j if t in s_ else t)
                for s_ in sets:
                    counts[sorted(s_)] += 1
            if m < k:
                counts = n_q - counts
        else:
            chunk = max(1, (1 << 22) // n_docs)
            for a in range(0, n_q, chunk):
                for row in rng.random((min(chunk, n_q - a), n_docs)):  # one query at a time
                    counts[np.argpartition(row, k - 1)[:k]] += 1
        ref.append(skewness(counts))
    assert random_skewness(n_q, n_docs, k=k, repeats=3, seed=5) == float(np.mean(ref))

def test_filter_measures():
    probs = np.array([0.05, 0.15, 0.95, 0.85])
    labels = np.array([0, 0, 1, 1])
    # bins of width 1/15: each prob alone in its bin; ECE = mean |y - p|
    assert expected_calibration_error(probs, labels) == pytest.approx(np.mean([0.05, 0.15, 0.05, 0.15]))
    p, r, t = pr_curve(np.array([0.9, 0.8, 0.7, 0.7, 0.1]), np.array([1, 0, 1, 0, 1]))
    assert r.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1.0])
    assert p.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.6])
    assert precision_at_recall(p, r, 0.6) == pytest.approx(0.6)
    ref = Run(["q1", "q2"], [np.array(["a", "b", "c"]), np.array(["x", "y"])], [np.ones(3), np.ones(2)])
    kept = Run(["q1", "q2"], [np.array(["a"]), np.array([], dtype=object)], [np.ones(1), np.ones(0)])
    qrels = {"q1": {"a": 1, "c": 1, "z": 1}, "q2": {"y": 1}}
    rep = filter_report(kept, qrels, reference=ref)
    assert rep.precision == 1.0 and rep.recall == pytest.approx(1 / 3) and rep.empty == 0.5 and rep.mean_kept == 0.5
    assert filter_report(kept, qrels).recall == pytest.approx(1 / 4)


# ---------------------------------------------------------------------- edge cases found in review
def test_nan_cosines_are_refused_before_they_spoil_a_list():
    """One NaN passed the [-1, 1] check (nanmax) and emptied its query's list, or, at fit, gave
    NaN weights and threshold saved as if trained."""
    from ragkit._flat import check_cosines

    with pytest.raises(DataError, match=r"2 non-finite score\(s\) \(first in query 1 of the batch\)"):
        check_cosines(np.array([0.5, 0.2, np.nan, np.inf]), "cosine_adapter", np.array([0, 0, 1, 1]))
    with pytest.raises(DataError, match="scores up to 3"):
        check_cosines(np.array([0.5, 3.0]), "dbnorm")
    check_cosines(np.array([0.5, -1.0]), "dbnorm")


def test_choose_threshold_keeps_or_drops_ties_together():
    """A cut-off keeps every candidate with p >= t: the search ran over positions, so a tie
    straddling the chosen position was kept and the precision target missed."""
    from scipy.special import expit

    from ragkit.filters.cosine_adapter import choose_threshold

    probs, labels = np.array([0.9, 0.8, 0.8, 0.1]), np.array([1, 1, 0, 0])
    t = choose_threshold(probs, labels, "precision", 1.0)
    assert t == 0.9 and labels[probs >= t].mean() == 1.0
    probs, labels = np.array([expit(60.0), expit(40.0), 0.7]), np.array([1, 0, 1])  # saturated: a tie at 1.0
    t = choose_threshold(probs, labels, "precision", 0.9)
    assert labels[probs >= t].mean() == pytest.approx(2 / 3)  # the best kept set there is
    t = choose_threshold(np.array([0.9, 0.5, 0.5, 0.2]), np.array([1, 0, 1, 1]), "recall", 0.5)
    assert t == 0.5  # 0.9 keeps 1/3; the tie at 0.5 comes whole


def test_mmr_keeps_incoming_fields_and_adds_the_cosine(slice_data):
    from ragkit.filters import MMR
    from ragkit.pipelines import RRF, Parallel
    from ragkit.retrievers import BM25

    corpus, queries, _, _ = slice_data
    pipe = (Parallel([BM25(k=20), BM25(k=20, variant="okapi")], fuse=RRF(k=60)) | MMR(k=5, fetch_k=20)).fit(corpus)
    fused = pipe.steps[0](State.of(queries))
    out = pipe.search(queries)
    vecs, q = pipe.steps[1].vectors_, get_encoder().encode_queries(list(queries.texts))
    for i, (r, before) in enumerate(zip(out.rankings, fused.rankings)):
        assert {"cosine", *before.fields} == set(r.fields)
        pos = {row: j for j, row in enumerate(before.rows.tolist())}
        for name, col in before.fields.items():  # each field travels with its document
            np.testing.assert_array_equal(r.fields[name], col[[pos[x] for x in r.rows.tolist()]])
        np.testing.assert_allclose(r.fields["cosine"], vecs[r.rows] @ q[i], rtol=1e-5, atol=1e-6)


def test_filter_report_against_a_reference_stays_a_recall():
    qrels = {"q1": {"a": 1}, "q2": {"x": 1, "y": 1}}
    ref = Run(["q1"], [np.array(["a", "b"])], [np.ones(2)])
    kept = Run(["q1", "q2"], [np.array(["a"]), np.array(["x", "y"])], [np.ones(1), np.ones(2)])
    with pytest.raises(DataError, match=r"1 judged queries of the filtered run are not in the reference run"):
        filter_report(kept, qrels, reference=ref)
    ref = Run(["q1", "q2"], [np.array(["a", "b"]), np.array(["x", "z"])], [np.ones(2), np.ones(2)])
    rep = filter_report(kept, qrels, reference=ref)  # y was kept but the reference never retrieved it
    assert rep.recall == 1.0 and rep.precision == 1.0
    assert all(type(v) is float for v in (rep.precision, rep.recall, rep.mean_kept, rep.empty))  # not numpy's


def test_filter_report_against_a_reference_matches_a_loop_over_documents():
    """Recall within the reference (a set of the reference's relevant documents per query) equals a plain
    loop asking, for each kept document, whether it is judged relevant and in the reference's list."""
    rng = np.random.default_rng(4)
    docs = np.array([f"d{i}" for i in range(60)], dtype=object)
    qids = [f"q{i}" for i in range(25)]
    qrels = {q: {str(d): int(g) for d, g in zip(rng.choice(docs, 6, replace=False), rng.integers(0, 3, 6))}
             for q in qids[:22]}  # grades 0-2: a 0 is judged, not relevant; q22-q24 unjudged
    ref_lists = [rng.choice(docs, rng.integers(0, 30), replace=False) for _ in qids]
    # the filter keeps a prefix of the reference, plus for some queries a relevant document the reference never
    # retrieved (not counted in the recall) or a random one
    outside = [[d for d, g in qrels.get(q, {}).items() if g > 0 and d not in set(r)][:i % 2] + [str(rng.choice(docs))]
               for i, (q, r) in enumerate(zip(qids, ref_lists))]
    kept_lists = [np.concatenate([r[:rng.integers(0, len(r) + 1)], np.array(o[:rng.integers(0, 3)], dtype=object)])
                  for r, o in zip(ref_lists, outside)]
    ref = Run(qids, ref_lists, [np.linspace(1, 0, len(r)) for r in ref_lists])
    kept = Run(qids, kept_lists, [np.linspace(1, 0, len(r)) for r in kept_lists])
    rep = filter_report(kept, qrels, reference=ref)
    judged = [q for q in qids if q in qrels]
    rel = {q: {d for d, g in qrels[q].items() if g > 0} for q in judged}
    kept_at, ref_at = dict(zip(qids, kept_lists)), dict(zip(qids, ref_lists))
    tp = sum(d in rel[q] and d in set(ref_at[q]) for q in judged for d in kept_at[q])
    total = sum(d in rel[q] for q in judged for d in ref_at[q])
    hits = sum(d in rel[q] for q in judged for d in kept_at[q])
    n_kept = sum(len(kept_at[q]) for q in judged)
    assert tp < hits  # some kept relevant documents are outside the reference
    assert rep.recall == tp / total and rep.precision == hits / n_kept and rep.n_queries == len(judged)

def test_filtering_metrics_check_their_inputs():
    with pytest.raises(DataError, match=r"1 of 3 are not \(e\.g\. \[nan\]\); drop padding"):
        expected_calibration_error(np.array([0.2, np.nan, 0.9]), np.array([0, 1, 1]))
    with pytest.raises(DataError, match="3 scores for 4 labels"):
        pr_curve(np.array([0.3, 0.2, 0.1]), np.array([1, 0, 1, 1]))
    with pytest.raises(DataError, match=r"row -1 outside a corpus of 10 documents; expected rows in \[0, 10\)"):
        k_occurrence([Ranking([3, -1], [1.0, 0.5])], 10, k=2)


def test_dbnorm_reads_the_papers_dualis_name():
    assert DBNorm(method="dualis").params.method == "dualis" and DBNorm(method="DualIS").params.method == "dualis"
    assert DBNorm().params.method == "dualis" and DBNorm().to_yaml() == DBNorm(method="dualis").to_yaml()
    with pytest.raises(ParamError, match="method"):  # the paper's "DIS" (dynamic) is qbnorm: not guessed
        DBNorm(method="DIS")


def test_dbnorm_reads_method_dis_as_dualis_with_one_warning(caplog):
    """``dis`` meant DualIS, but the paper (and ALGORITHMS.md) call the *dynamic* inverted softmax "DIS"
    (``qbnorm``): the old name is still read, as ``dualis``, with a warning naming the ambiguity."""
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op = DBNorm(method="dis", beta1=1.0)
    assert op.params.method == "dualis" and op.params.non_default() == {"beta1": 1.0}  # written as the default
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "method 'dis' is read as 'dualis' (dual inverted softmax)" in said[0]
    assert "the paper's DIS, dynamic inverted softmax, is 'qbnorm'" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        DBNorm(method="dualis")
    assert not caplog.records


def test_dbnorm_saved_with_method_dis_loads_as_dualis_with_the_same_output(slice_data, tmp_path, caplog):
    """A pipeline saved when ``dis`` was the name (its params.json says ``"method": "dis"``) loads, as
    ``dualis``, and ranks as it did; so does old YAML."""
    from ragkit.pipelines import Pipeline
    from ragkit.pipelines.yaml import load_yaml
    from ragkit.retrievers import Dense

    corpus, queries, _, _ = slice_data
    pipe = (Dense(k=20) | DBNorm(query_bank_size=40, gallery_bank_size=60)).fit(corpus)
    pipe.save(tmp_path / "p")
    (params,) = (tmp_path / "p").glob("ops/*-dbnorm/params.json")
    text = params.read_text()
    assert '"method": "dualis"' in text
    params.write_text(text.replace('"method": "dualis"', '"method": "dis"'))  # as the old code wrote it
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        old = Pipeline.load(tmp_path / "p", verify=False)  # (its checksums are of the file before the edit)
    assert old.steps[-1].params.method == "dualis" and any("'dis'" in r.getMessage() for r in caplog.records)
    for x, y in zip(pipe.search(queries).rankings, old.search(queries).rankings):
        assert x.equals(y)
    yaml_old = load_yaml({"pipeline": [{"dense": {"k": 20}}, {"dbnorm": {"method": "dis"}}]})
    assert yaml_old.steps[-1].params == DBNorm(method="dualis").params


def test_filter_report_counts_a_query_whose_list_was_emptied_even_after_a_trec_file(tmp_path):
    from ragkit.eval.filtering import filter_report
    from ragkit.run import Run

    def run(lists):
        return Run(list(lists), [np.array(d, dtype=object) for d in lists.values()],
                   [np.linspace(1, 0, len(d)) for d in lists.values()])

    ref = run({"q1": ["a", "b", "c", "d"], "q2": ["e", "f"], "q3": ["g"]})
    flt = run({"q1": ["a", "b"], "q2": [], "q3": ["g"]})
    qrels = {"q1": {"a": 1, "c": 1}, "q2": {"f": 2}, "q3": {"x": 1}}
    flt.write_trec(tmp_path / "f.trec")  # a TREC file cannot hold q2's empty list
    for got in (flt, Run.read_trec(tmp_path / "f.trec")):
        rep = filter_report(got, qrels, reference=ref)
        assert (rep.recall, rep.empty, rep.mean_kept, rep.n_queries) == (1 / 3, 1 / 3, 1.0, 3)
        # without a reference too: every judged query counts (as evaluate's trec_eval -c), recall of all 4
        rep = filter_report(got, qrels)
        assert (rep.recall, rep.empty, rep.mean_kept, rep.n_queries) == (1 / 4, 1 / 3, 1.0, 3)


def test_cosine_filters_refuse_rankings_another_step_rescored(slice_data):
    from ragkit.errors import DataError
    from ragkit.filters import MMR, DBNorm
    from ragkit.retrievers import Dense
    from ragkit.types import State

    corpus, queries, _, train = slice_data
    dense = Dense(k=20).fit(corpus)
    mmr = MMR(k=10, fetch_k=20).fit(corpus)
    rescored = mmr(dense(State.of(queries)))  # rank scores in [0, 1], the cosine kept as a field
    db = DBNorm(method="is").fit(corpus, train)
    with pytest.raises(DataError, match="dbnorm expects the cosines of a dense retriever as scores"):
        db(rescored)
    db(dense(State.of(queries)))  # straight after dense: fine


class _SeededEncoder:
    """A registered encoder: a seeded random vector per text; ``scaled`` breaks the unit-vector promise."""

    dim = 16

    def __init__(self, scaled: bool) -> None:
        self.scaled, self.key = scaled, f"test-seeded-{scaled}"

    def encode(self, texts, **_):
        import zlib

        out = np.stack([np.random.default_rng(zlib.crc32(str(t).encode())).normal(size=16) for t in texts])
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return (out * (0.5 + np.arange(len(texts)) % 5)[:, None] if self.scaled else out).astype(np.float32)

    encode_queries = encode


def test_cosine_methods_normalise_a_registered_encoders_vectors():
    """MMR, kNN-Embed and DBNorm are cosine methods: an encoder whose vectors are not unit length
    (a registered one may break that promise) gives the same rankings as its normalised twin."""
    from ragkit.encoders import register_encoder, unregister_encoder
    from ragkit.filters import MMR
    from ragkit.retrievers import Dense, KnnEmbed

    corpus = Corpus.from_texts([f"document {i}" for i in range(60)])
    queries = [f"query {i}" for i in range(7)]
    register_encoder("bag-unit", _SeededEncoder(False), replace=True)
    register_encoder("bag-scaled", _SeededEncoder(True), replace=True)
    try:
        for make in (lambda m: KnnEmbed(model=m, k=10, n_clusters=4),
                     lambda m: Dense(model=m, k=20) | MMR(model=m, k=10, fetch_k=20),
                     lambda m: Dense(model=m, k=20) | DBNorm(model=m, method="ddis", query_bank_size=30)):
            a, b = (make(m).fit(corpus).search(queries, k=10) for m in ("bag-unit", "bag-scaled"))
            for x, y in zip(a.rankings, b.rankings):
                np.testing.assert_array_equal(x.rows, y.rows)
                np.testing.assert_allclose(x.scores, y.scores, rtol=1e-4, atol=1e-5)
    finally:
        unregister_encoder("bag-unit")
        unregister_encoder("bag-scaled")


def test_dbnorm_refuses_temperatures_its_method_does_not_read():
    """beta is read by is / qbnorm only, beta1 / beta2 / gallery_bank_size by the dual methods,
    activation_k by the dynamic ones: given elsewhere they did nothing, silently."""
    for params, needs in (({"method": "dualis", "beta": 5}, "is or qbnorm"),
                          ({"method": "is", "beta1": 1}, "dualis or ddis"),
                          ({"method": "qbnorm", "gallery_bank_size": 10}, "dualis or ddis"),
                          ({"method": "dualis", "activation_k": 3}, "qbnorm or ddis")):
        with pytest.raises(ParamError, match=f"has no effect without method: {needs}"):
            DBNorm(**params)
    assert DBNorm(method="ddis", beta1=1, activation_k=3).params.activation_k == 3


def test_dbnorm_one_pseudo_query_is_refused_naming_query_bank_size(slice_data):
    """``query_bank_size=1`` with pseudo-queries failed at fit with "1 documents have no bank term once
    self-similarity is dropped; the bank needs at least 2 items", which named no parameter."""
    corpus, _, _, train = slice_data
    with pytest.raises(ParamError, match=r"query_bank_size=1 with query_bank='pseudo'.*query_bank_size of at least 2"):
        DBNorm(query_bank="pseudo", query_bank_size=1)
    op = DBNorm(method="is", query_bank_size=1)  # query_bank: train, which falls back to pseudo-queries without it
    with pytest.raises(ParamError, match=r"dbnorm\.query_bank_size: fit got no training queries.*at least 2") as e:
        op.fit(corpus)
    assert e.value.path == "dbnorm.query_bank_size" and not op.is_fitted
    assert op.fit(corpus, train).info_["query_bank_size"] == 1  # one training query: a bank of one is fine
    assert DBNorm(method="is", query_bank="pseudo", query_bank_size=2).fit(corpus).info_["query_bank_size"] == 2
