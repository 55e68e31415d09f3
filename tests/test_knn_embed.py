"""kNN-Embed retriever, MMR reranker and the diversity measures (synthetic data + a SciFact slice)."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit._topk import topk_rows
from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.eval import diversity as div
from ragkit.filters.mmr import MMR, mmr_select
from ragkit.operator import Operator
from ragkit.retrievers.knn_embed import KnnEmbed, largest_remainder
from ragkit.run import Run
from ragkit.types import Corpus, Ranking, State

D = 32


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def blobs():
    """4 well-separated clusters of 60 docs around orthogonal centres; returns (corpus, vectors, truth)."""
    rng = np.random.default_rng(0)
    centres = np.eye(D, dtype=np.float32)[:4]
    truth = np.repeat(np.arange(4), 60)
    vecs = _unit(centres[truth] + 0.05 * rng.standard_normal((len(truth), D)))
    corpus = Corpus.from_texts([f"doc {i}" for i in range(len(truth))])
    return corpus, vecs, truth


def _fit(blobs, **kw):
    corpus, vecs, _ = blobs
    params = dict(k=20, n_clusters=4, n_init=2, collapse_at=0.95, anchor_share=0.0)
    params.update(kw)
    return KnnEmbed(**params).fit_vectors(corpus, vecs)


def _state(op, q):
    q = np.atleast_2d(q).astype(np.float32)
    return State([f"q{i}" for i in range(len(q))], vectors={op.dense.encoder.key: q})


def test_clusters_recover_the_blobs(blobs):
    op = _fit(blobs)
    _, _, truth = blobs
    # a clustering equal to the truth up to renaming: each true blob maps to exactly one label
    pairs = set(zip(truth.tolist(), op.labels_.tolist()))
    assert len(pairs) == 4 and len({b for _, b in pairs}) == 4


def test_weights_sum_to_one(blobs):
    op = _fit(blobs)
    rng = np.random.default_rng(1)
    q = _unit(rng.standard_normal((25, D)))
    mix = op.mixture(q)
    np.testing.assert_allclose(mix["pi"].sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(mix["weights"].sum(1), 1.0, atol=1e-9)
    assert (mix["weights"] >= 0).all()
    kept = mix["clusters"] >= 0
    assert (mix["weights"][~kept] == 0).all()
    for prior in ("local",):  # the local prior is a distribution too
        mix = op.with_params(prior=prior, local_depth=50).mixture(q)
        np.testing.assert_allclose(mix["pi"].sum(1), 1.0, atol=1e-9)


@pytest.mark.parametrize("mix_a", [0.5, 0.7])
def test_query_between_two_clusters_retrieves_both_in_proportion(blobs, mix_a):
    corpus, vecs, truth = blobs
    op = _fit(blobs, k=20, tau=None, alpha=0.0, n_neighbors=100)
    q = _unit(mix_a * np.eye(D)[0] + (1 - mix_a) * np.eye(D)[1])
    st = op(_state(op, q))
    got = truth[st.rankings[0].rows]
    mix = op.mixture(q[None])
    lab = {int(op.labels_[truth == b][0]): b for b in range(4)}
    weights = {lab[int(c)]: w for c, w in zip(mix["clusters"][0], mix["weights"][0]) if c >= 0}
    assert set(weights) == {0, 1}
    quota = largest_remainder(np.array([[weights[0], weights[1]]]), 20)[0]
    assert np.bincount(got, minlength=4)[:2].tolist() == quota.tolist()
    # expected proportions: the neighbourhood of a 50/50 query splits the top-20 about evenly
    if mix_a == 0.5:
        assert 6 <= quota[0] <= 14
    else:  # all 60 docs of blob 0 outrank blob 1: the top-100 votes 60/40, so 12 + 8 slots
        assert quota.tolist() == [12, 8]
    # plain dense with the same query takes everything from the nearer blob (the test can fail)
    s = q @ vecs.T
    dense_rows, _ = topk_rows(s[None], 20)
    if mix_a != 0.5:  # halfway between the blobs, dense may take from both
        assert len(set(truth[dense_rows[0]].tolist())) == 1


def test_output_exactly_k_distinct_and_sorted(blobs):
    op = _fit(blobs, k=50, anchor_share=0.3, collapse_at=1.0, weight_floor=0.0, max_components=4)
    q = _unit(np.random.default_rng(2).standard_normal((9, D)))
    for i, r in enumerate(op(_state(op, q)).rankings):
        assert len(r) == 50 and len(set(r.rows.tolist())) == 50
        assert (np.diff(r.scores) <= 1e-7).all()
        np.testing.assert_allclose(r.scores, blobs[1][r.rows] @ q[i], rtol=1e-5, atol=1e-6)  # the true cosine


def test_overflow_fills_from_other_clusters(blobs):
    # k larger than a cluster: quotas overflow, output still has k distinct docs
    op = _fit(blobs, k=150, anchor_share=0.0, collapse_at=1.0, weight_floor=0.0, max_components=2, tau=None)
    q = _unit(np.eye(D)[0] + np.eye(D)[1])
    r = op(_state(op, q)).rankings[0]
    assert len(set(r.rows.tolist())) == 150


def test_collapse_and_full_anchor_equal_dense(blobs):
    corpus, vecs, _ = blobs
    q = _unit(np.random.default_rng(3).standard_normal((7, D)))
    dense_rows, dense_sc = topk_rows(q @ vecs.T, 20)
    for op in (_fit(blobs, weight_floor=0.99), _fit(blobs, anchor_share=1.0, collapse_at=1.0)):
        st = op(_state(op, q))
        np.testing.assert_array_equal(np.stack([r.rows for r in st.rankings]), dense_rows)
    diverse = _fit(blobs, collapse_at=1.0, weight_floor=0.0)(_state(op, q))
    assert not np.array_equal(np.stack([r.rows for r in diverse.rankings]), dense_rows)


@pytest.mark.parametrize("search", ["auto", "gather", "partitioned"])  # each against masked
def test_search_paths_agree(blobs, search):
    q = _unit(np.random.default_rng(4).standard_normal((6, D)))
    ref = _fit(blobs, collapse_at=1.0, weight_floor=0.0, anchor_share=0.25, search="masked")
    a = ref(_state(ref, q))
    b = ref.with_params(search=search)(_state(ref, q))
    for x, y in zip(a.rankings, b.rankings):
        np.testing.assert_array_equal(x.rows, y.rows)


@pytest.mark.parametrize("search", ["masked", "partitioned"])
def test_search_paths_agree_uneven_clusters_and_ties(search):
    """Clusters of very different sizes (the gather path pads them) holding exact twins (score ties, broken
    by the lower row on every path), queries wanting one or many results per component."""
    rng = np.random.default_rng(11)
    sizes = np.array([3, 7, 40, 90, 15])
    truth = np.repeat(np.arange(5), sizes)
    base = _unit(4 * np.eye(D, dtype=np.float32)[truth] + rng.standard_normal((len(truth), D)))
    vecs = np.repeat(base, 2, axis=0)  # documents 2i and 2i + 1 are identical
    corpus = Corpus.from_texts([f"doc {i}" for i in range(len(vecs))])
    q = _unit(rng.standard_normal((12, D)) + np.eye(D)[rng.integers(0, 5, 12)])
    for kw in ({"k": 30, "anchor_share": 0.2}, {"k": 8, "anchor_share": 0.0}, {"k": 60, "anchor_share": 0.5}):
        op = KnnEmbed(n_clusters=5, n_init=1, collapse_at=1.0, weight_floor=0.0, max_components=5, tau=None,
                      min_cluster_size=1, **kw).fit_vectors(corpus, vecs)
        a, b = op(_state(op, q)), op.with_params(search=search)(_state(op, q))
        for x, y in zip(a.rankings, b.rankings):
            np.testing.assert_array_equal(x.rows, y.rows)
            np.testing.assert_array_equal(x.fields["component"], y.fields["component"])
            assert len(set(x.rows.tolist())) == len(x.rows) == kw["k"]
        twins = np.concatenate([r.rows[np.isin(r.rows ^ 1, r.rows)] for r in a.rankings])
        assert len(twins)  # ties did occur


def test_ties_go_to_the_lower_row():
    """``desc_order`` is ``lexsort((rows, -scores))``; ``topk_rows`` keeps the lower rows of a tie at its cut
    too (``argpartition`` alone keeps an arbitrary few)."""
    from ragkit._topk import desc_order

    rng = np.random.default_rng(3)
    sc = rng.integers(0, 5, (40, 300)).astype(np.float32)  # many ties
    sc[rng.random(sc.shape) < 0.1] = -np.inf
    rows = np.stack([rng.permutation(1000)[:300] for _ in range(40)])
    np.testing.assert_array_equal(desc_order(sc, rows), np.lexsort((rows, -sc), axis=1))
    pad = np.where(rng.random(rows.shape) < 0.2, -1, rows)  # padding (-1) after real rows of the same score
    np.testing.assert_array_equal(desc_order(sc, pad), np.lexsort((np.where(pad < 0, 10**9, pad), -sc), axis=1))
    for k in (1, 7, 60, 290, 299):
        r, s = topk_rows(sc, k)
        ref = np.argsort(-sc, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(r, ref)
        np.testing.assert_array_equal(s, np.take_along_axis(sc, ref, axis=1))


def test_gather_chunks_agree(blobs, monkeypatch):
    """The vectorised in-cluster search gives the same rankings however its pairs are chunked."""
    import ragkit.retrievers.knn_embed as mod

    q = _unit(np.random.default_rng(5).standard_normal((9, D)))
    op = _fit(blobs, collapse_at=1.0, weight_floor=0.0, anchor_share=0.25)
    ref = [r.rows for r in op(_state(op, q)).rankings]
    monkeypatch.setattr(mod, "GATHER_ELEMS", 1)  # one (query, component) pair per chunk
    for x, y in zip(ref, op(_state(op, q)).rankings):
        np.testing.assert_array_equal(x, y.rows)


def _coloured(blobs):
    """The blobs with a ``colour`` column (red / blue / green at random) and the fitted operator."""
    _, vecs, truth = blobs
    colour = np.array(["red", "blue", "green"], dtype=object)[np.random.default_rng(21).integers(0, 3, len(truth))]
    corpus = Corpus.from_texts([f"doc {i}" for i in range(len(truth))], colour=colour)
    op = KnnEmbed(k=20, n_clusters=4, n_init=2, collapse_at=0.95, anchor_share=0.25, weight_floor=0.0,
                  ).fit_vectors(corpus, vecs)
    return corpus, vecs, op


@pytest.mark.parametrize("search", ["gather", "masked", "partitioned"])
@pytest.mark.parametrize("component_query", ["filter", "rocchio_filter"])
@pytest.mark.parametrize("merge", ["score", "interleave"])
def test_metadata_filter_is_applied(blobs, search, component_query, merge):
    """The run-time ``filter`` option: only passing documents, still ``min(k, passing)`` of them per query
    (every in-cluster search path), and equal to the operator over the passing documents alone."""
    corpus, vecs, base = _coloured(blobs)
    op = base.with_params(search=search, component_query=component_query, merge=merge)
    q = _unit(np.random.default_rng(22).standard_normal((10, D)) + 2 * np.eye(D)[np.arange(10) % 4])
    colour = corpus.metadata["colour"]
    for where, k in (({"colour": "red"}, 20), ({"colour": ["red", "blue"]}, 60), ({"colour": "green"}, 500)):
        passing = np.flatnonzero(np.isin(colour, np.atleast_1d(where["colour"])))
        st = _state(op, q)
        st.options["filter"] = where
        if k != 20:
            st.options["k"] = k
        rankings = op(st).rankings
        for i, r in enumerate(rankings):
            assert np.isin(r.rows, passing).all(), where
            assert len(r) == len(set(r.rows.tolist())) == min(k, len(passing))
            cos = r.fields["cosine"] if merge == "interleave" else r.scores
            np.testing.assert_allclose(cos, vecs[r.rows] @ q[i], rtol=1e-5, atol=1e-6)
        # the same as the operator over the passing documents only (same clusters)
        sub = op.with_params()
        sub.corpus_ = corpus.subset(passing)
        sub.vectors_, sub.labels_ = vecs[passing], op.labels_[passing]
        sub._build()
        st = _state(sub, q)
        st.options["k"] = k
        for r, w in zip(rankings, sub(st).rankings):
            np.testing.assert_array_equal(r.rows, passing[w.rows])
            np.testing.assert_array_equal(r.fields["component"], w.fields["component"])
    # a filter passing everything changes nothing; one passing nothing returns empty rankings
    st = _state(op, q)
    st.options["filter"] = {"colour": ["red", "blue", "green"]}
    for r, w in zip(op(st).rankings, op(_state(op, q)).rankings):
        np.testing.assert_array_equal(r.rows, w.rows)
    st.options["filter"] = {"colour": "purple"}
    assert [len(r) for r in op(st).rankings] == [0] * 10


def test_metadata_filter_local_prior(blobs):
    """prior='local' and no temperature: filtered-out documents neither vote nor count in the prior."""
    corpus, vecs, base = _coloured(blobs)
    op = base.with_params(prior="local", local_depth=50, tau=None)
    q = _unit(np.random.default_rng(23).standard_normal((8, D)) + 2 * np.eye(D)[np.arange(8) % 4])
    passing = np.flatnonzero(corpus.metadata["colour"] == "blue")
    st = _state(op, q)
    st.options["filter"] = {"colour": "blue"}
    sub = op.with_params()
    sub.corpus_, sub.vectors_, sub.labels_ = corpus.subset(passing), vecs[passing], op.labels_[passing]
    sub._build()
    for r, w in zip(op(st).rankings, sub(_state(sub, q)).rankings):
        np.testing.assert_array_equal(r.rows, passing[w.rows])


def test_interleave_and_rocchio(blobs):
    q = _unit(np.eye(D)[0] + 0.8 * np.eye(D)[2])
    op = _fit(blobs, collapse_at=1.0, anchor_share=0.25, merge="interleave", tau=None, alpha=0.0, n_neighbors=100)
    r = op(_state(op, q)).rankings[0]
    cos = op.vectors_[r.rows] @ q
    np.testing.assert_allclose(r.fields["cosine"], cos, rtol=1e-5, atol=1e-6)  # the cosine travels in fields
    assert not (np.diff(cos) <= 0).all()  # interleaved: not the score order
    # Sainte-Laguë: both intents appear in the first 4 slots
    assert len(set(blobs[2][r.rows[:4]].tolist())) >= 2
    ro = op.with_params(component_query="rocchio_filter", merge="score")(_state(op, q)).rankings[0]
    assert len(set(ro.rows.tolist())) == 20


def test_rocchio_component_query_is_the_shifted_query(blobs):
    """normalise(q + lambda * mean of the query's top-m documents in cluster c), and it changes
    rankings (a no-op shift passed every test before)."""
    corpus, vecs, _ = blobs
    op = KnnEmbed(k=20, n_clusters=4, n_init=2, collapse_at=1.0, anchor_share=0.25, tau=None, alpha=0.0,
                  n_neighbors=100, rocchio_lambda=0.5).fit_vectors(corpus, vecs)
    rng = np.random.default_rng(0)
    q = _unit(rng.standard_normal((10, D)) + 2 * np.eye(D)[np.arange(10) % 4]).astype(np.float32)
    top = np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :30]
    c = op.labels_[top[:, 0]]
    got = op._rocchio(q, top, c[:, None], op.labels_, op.vectors_)
    for i in range(len(q)):
        mine = top[i][op.labels_[top[i]] == c[i]]
        want = q[i] + 0.5 * op.vectors_[mine].mean(0)
        np.testing.assert_allclose(got[i], want / np.linalg.norm(want), rtol=1e-5, atol=1e-6)
    plain = op(_state(op, q)).rankings
    shifted = op.with_params(component_query="rocchio_filter")(_state(op, q)).rankings
    assert sum(not np.array_equal(a.rows, b.rows) for a, b in zip(plain, shifted)) >= 3


def test_a_shortfall_filled_from_a_kept_cluster_keeps_that_component():
    """A component whose cluster runs out is filled from the other kept clusters: those documents
    belong to a component, not to the anchor (-1), which anchor_share = 0 does not have."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), [10, 60, 60, 60])
    vecs = _unit(np.eye(D, dtype=np.float32)[:4][truth] + 0.05 * rng.standard_normal((len(truth), D)))
    corpus = Corpus.from_texts([f"doc {i}" for i in range(len(truth))])
    op = KnnEmbed(k=40, n_clusters=4, n_init=2, collapse_at=1.0, anchor_share=0.0, weight_floor=0.0, tau=None,
                  alpha=0.0, n_neighbors=20, min_cluster_size=1).fit_vectors(corpus, vecs)
    q = _unit(np.eye(D)[0] + 0.7 * np.eye(D)[1])[None].astype(np.float32)
    r = op(_state(op, q)).rankings[0]
    mix = op.mixture(q)
    kept = mix["clusters"][0][mix["clusters"][0] >= 0]
    assert len(r) == 40 and (r.fields["component"] >= 0).all()
    assert np.isin(r.fields["cluster"], kept).all()
    np.testing.assert_array_equal(kept[r.fields["component"]], r.fields["cluster"])


def test_a_shortfall_goes_to_the_other_components_in_pi_order():
    """The spec's overflow rule: a component whose cluster holds fewer free documents than its quota
    hands the shortfall to the other components in pi order (quotas 12 / 5 / 3 of 20, the first
    cluster holds 5: the second component takes the 7 it lacks), not to the best-scoring documents
    of any kept cluster."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), [5, 20, 20]).astype(np.int32)
    vecs = _unit(rng.standard_normal((45, 4)))
    op = KnnEmbed(k=20)
    op.vectors_, op.labels_, op.centroids_ = vecs, labels, np.eye(3, 4, dtype=np.float32)
    op._build()
    q = _unit(rng.standard_normal((1, 4)))
    s = q @ vecs.T
    rows, comp = op._mixture_search(q, s, np.argsort(-s, axis=1, kind="stable"), np.array([[0, 1, 2]]),
                                    np.array([[0.6, 0.25, 0.15]]), 20, 0, 20, labels)
    assert np.bincount(comp[0], minlength=3).tolist() == [5, 12, 3]
    assert len(set(rows[0].tolist())) == 20
    for c in range(3):  # each component's documents are its cluster's best free ones
        mine = rows[0][comp[0] == c]
        assert (labels[mine] == c).all()
        np.testing.assert_array_equal(np.sort(s[0, mine])[::-1], np.sort(s[0, labels == c])[::-1][:len(mine)])


def test_determinism_under_seed(blobs):
    corpus, _, _ = blobs
    rng = np.random.default_rng(5)
    vecs = _unit(rng.standard_normal((300, D)))  # no clear structure: k-means init matters
    a = KnnEmbed(k=10, n_clusters=12, seed=7, n_init=1).fit_vectors(
        Corpus.from_texts([str(i) for i in range(300)]), vecs)
    b = KnnEmbed(k=10, n_clusters=12, seed=7, n_init=1).fit_vectors(
        Corpus.from_texts([str(i) for i in range(300)]), vecs)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.centroids_, b.centroids_)
    q = _unit(rng.standard_normal((5, D)))
    for x, y in zip(a(_state(a, q)).rankings, b(_state(b, q)).rankings):
        np.testing.assert_array_equal(x.rows, y.rows)


def test_save_load(blobs, tmp_path):
    op = _fit(blobs, collapse_at=1.0, anchor_share=0.25)
    q = _unit(np.random.default_rng(6).standard_normal((5, D)))
    before = op(_state(op, q))
    op.save(tmp_path / "op")
    assert {p.name for p in (tmp_path / "op").iterdir()} >= {"labels.npy", "centroids.npy", "vectors.npy"}
    loaded = Operator.load(tmp_path / "op")
    after = loaded(_state(loaded, q))
    for x, y in zip(before.rankings, after.rankings):
        np.testing.assert_array_equal(x.rows, y.rows)
        np.testing.assert_array_equal(x.fields["cluster"], y.fields["cluster"])
    np.save(tmp_path / "op" / "labels.npy", np.full(10, 99, np.int32))
    with pytest.raises(ArtifactError, match="labels.npy: checksum mismatch"):
        Operator.load(tmp_path / "op")
    with pytest.raises(ArtifactError):  # the operator's own check of its arrays, without the checksums
        Operator.load(tmp_path / "op", verify=False)


def test_params_and_errors(blobs):
    with pytest.raises(ParamError, match="knn_embed.anchor_share"):
        KnnEmbed(anchor_share=1.5)
    with pytest.raises(ParamError, match="local_depth"):
        KnnEmbed(prior="local", local_depth=5, n_neighbors=40)
    with pytest.raises(ParamError, match=r"knn_embed.with_params: \['n_clusters'\] change the clustering"):
        _fit(blobs).with_params(n_clusters=9)
    with pytest.raises(DataError, match="shape"):
        KnnEmbed().fit_vectors(blobs[0], blobs[1][:10])
    nan_docs = blobs[1].copy()
    nan_docs[7, 3] = np.nan  # scikit-learn's bare "Input X contains NaN" before
    with pytest.raises(DataError, match=r"knn_embed.fit: 1 of the 240 document vectors contain NaN .*position 7"):
        KnnEmbed(n_clusters=4).fit_vectors(blobs[0], nan_docs)


def test_with_params_refuses_as_the_constructor_does(blobs):
    """with_params(anchor_share=3) leaked pydantic's ValidationError ("Input should be less than or equal to 1 ...
    https://errors.pydantic.dev"), a typo "Extra inputs are not permitted": now the constructor's ParamError."""
    op = _fit(blobs)
    with pytest.raises(ParamError, match=r"^knn_embed\.anchor_share: expected a value <= 1(\.0)?, got 3$"):
        op.with_params(anchor_share=3)
    with pytest.raises(ParamError, match=r"^knn_embed\.anchr_share: unknown parameter \(did you mean anchor_share\?\); "
                                         r"valid parameters of knn_embed are: model, k,"):
        op.with_params(anchr_share=0.2)
    with pytest.raises(ParamError, match="local_depth .* must be >= n_neighbors"):
        op.with_params(prior="local", local_depth=5)
    assert op.with_params(anchor_share=0.25).params.anchor_share == 0.25


def test_mixture_takes_one_query_and_any_scale(blobs):
    """mixture(q) of a 1-d q failed ("not enough values to unpack"), and 3 * q got other weights than q (tau is in
    cosine units; searches normalise the query first, mixture did not)."""
    op = _fit(blobs)
    q = _unit(blobs[1][0] + blobs[1][70])  # between two clusters: a real mixture
    one = op.mixture(q)
    batch = op.mixture(q[None, :])
    assert one["pi"].shape == batch["pi"].shape == (1, 4)
    for key in ("pi", "weights", "clusters", "collapsed"):
        np.testing.assert_array_equal(one[key], batch[key])
    scaled = op.mixture(3 * q[None, :])
    np.testing.assert_allclose(scaled["pi"], batch["pi"], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(scaled["weights"], batch["weights"], rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(scaled["clusters"], batch["clusters"])
    assert not batch["collapsed"][0]
    with pytest.raises(DataError, match=r"knn_embed\.mixture: query vectors have shape \(1, 5\), expected \(n_q, 32\)"):
        op.mixture(np.ones(5, np.float32))
    with pytest.raises(DataError, match=r"knn_embed\.mixture: 1 of the 1 query vectors contain NaN"):
        op.mixture(np.full(D, np.nan, np.float32))


def test_more_clusters_than_documents_is_said(caplog):
    """KnnEmbed(n_clusters=50) on 5 documents silently used 5 clusters."""
    import logging

    rng = np.random.default_rng(0)
    corpus = Corpus.from_texts([f"doc {i}" for i in range(5)])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op = KnnEmbed(k=3, n_clusters=50, n_init=1).fit_vectors(corpus, rng.standard_normal((5, D)))
    said = [r.getMessage() for r in caplog.records if r.name == "ragkit" and "n_clusters" in r.getMessage()]
    assert len(op.centroids_) == 5
    assert said == ["knn_embed.fit: n_clusters=50 but the corpus has 5 documents; using 5 clusters (one per "
                    "document)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        KnnEmbed(k=3, n_init=1).fit_vectors(corpus, rng.standard_normal((5, D)))  # the default: at most N, quiet
    assert not [r for r in caplog.records if "n_clusters=" in r.getMessage()]


def test_fit_threads_does_not_promise_bit_identical_centroids():
    text = KnnEmbed.Params.model_fields["fit_threads"].description
    assert "bit-identical" not in text and "same labels" in text and "float rounding" in text


@pytest.mark.parametrize("merge", ["score", "interleave"])
def test_a_nan_query_is_refused_and_a_zero_query_finds_nothing(blobs, merge):
    """A NaN query came back as a ranking of NaN scores; an all-zero one as the first k documents."""
    op = _fit(blobs, merge=merge)
    q = np.stack([blobs[1][0], np.zeros(D, np.float32), blobs[1][100]])
    out = op(_state(op, q)).rankings
    assert [len(r) for r in out] == [20, 0, 20] and set(out[1].fields) == set(out[0].fields)
    q[1, 0] = np.nan
    with pytest.raises(DataError, match=r"knn_embed: 1 of the 3 query vectors contain NaN .*position 1"):
        op(_state(op, q))


def test_largest_remainder():
    w = np.array([[0.5, 0.3, 0.2, 0.0], [0.96, 0.02, 0.02, 0.0], [0.34, 0.33, 0.33, 0.0]])
    q = largest_remainder(w, 10)
    assert q.sum(1).tolist() == [10, 10, 10]
    assert q[0].tolist() == [5, 3, 2, 0]
    assert q[1].tolist() == [8, 1, 1, 0]  # every active component gets at least one
    assert q[2].tolist() == [4, 3, 3, 0]
    assert largest_remainder(w[:1], 2)[0].tolist() == [1, 1, 0, 0]  # fewer slots than components


# ---------------------------------------------------------------------- MMR
def test_mmr_lambda_one_is_relevance_order_and_low_lambda_diversifies(blobs):
    _, vecs, truth = blobs
    q = _unit(np.eye(D)[0] + 0.5 * np.eye(D)[1])[None]
    pool, _ = topk_rows(q @ vecs.T, 120)
    valid = np.ones_like(pool, bool)
    sel1 = mmr_select(q, pool, valid, vecs, 10, 1.0)
    np.testing.assert_array_equal(sel1[0], np.arange(10))
    sel = mmr_select(q, pool, valid, vecs, 10, 0.3)
    r_rel = [Ranking(pool[0, sel1[0]], np.zeros(10, np.float32))]
    r_div = [Ranking(pool[0, sel[0]], np.zeros(10, np.float32))]
    assert div.intra_list_diversity(r_div, vecs, 10)[0] > div.intra_list_diversity(r_rel, vecs, 10)[0] + 0.1
    assert len(set(truth[pool[0, sel[0]]].tolist())) == 2


def test_mmr_operator_batch_and_padding(blobs):
    corpus, vecs, _ = blobs
    op = MMR(k=5, fetch_k=8, lambda_mult=0.5)
    op.vectors_ = vecs
    op.corpus_ = corpus
    q = _unit(np.random.default_rng(7).standard_normal((3, D)))
    st = State(["a", "b", "c"], vectors={op.encoder.key: q},
               rankings=[Ranking(np.arange(10), np.linspace(1, 0, 10)), Ranking(np.array([3, 4]), np.array([1., .5])),
                         Ranking.empty()])
    out = op(st)
    assert [len(r) for r in out.rankings] == [5, 2, 0]
    assert set(out.rankings[1].rows.tolist()) == {3, 4}
    one = op(State(["b"], vectors={op.encoder.key: q[1:2]}, rankings=[st.rankings[1]]))
    np.testing.assert_array_equal(one.rankings[0].rows, out.rankings[1].rows)
    with pytest.raises(DataError):
        op(State(["a"], vectors={op.encoder.key: q[:1]}))
    with pytest.raises(DataError, match=rf"mmr: candidate row {len(vecs)} is outside the fitted corpus"):
        op(State(["a"], vectors={op.encoder.key: q[:1]}, rankings=[Ranking(np.array([0, len(vecs)]), np.ones(2))]))


# ---------------------------------------------------------------------- diversity measures
def test_diversity_measures():
    v = np.eye(4, dtype=np.float32)
    v = np.vstack([v, v[0]])  # doc 4 duplicates doc 0
    rk = [Ranking(np.array([0, 1, 2]), np.zeros(3, np.float32)), Ranking(np.array([0, 4]), np.zeros(2, np.float32)),
          Ranking(np.array([1]), np.zeros(1, np.float32))]
    ild = div.intra_list_diversity(rk, v, k=10)
    np.testing.assert_allclose(ild[:2], [1.0, 0.0], atol=1e-6)
    assert np.isnan(ild[2])
    np.testing.assert_allclose(div.near_duplicate_rate(rk, v, k=10)[:2], [0.0, 1.0])
    labels = np.array([0, 0, 1, 2, 0])
    assert div.distinct_clusters(rk, labels, k=10).tolist() == [2, 1, 1]
    assert div.distinct_clusters(rk, labels, k=1).tolist() == [1, 1, 1]
    np.testing.assert_allclose(div.cluster_entropy(rk, labels, k=10)[1], 0.0)
    assert div.cluster_entropy(rk, labels, k=10)[0] > 0.6



def test_pairwise_diversity_matches_a_loop_over_pairs():
    """ILD@k and the near-duplicate rate (one batched product of the gathered top-k vectors) equal a
    plain loop over each ranking's document pairs, with padding, short and empty rankings."""
    rng = np.random.default_rng(11)
    v = _unit(rng.standard_normal((50, 16)))
    v[7] = v[3]  # an exact duplicate pair
    rk = [Ranking(rng.permutation(50)[:n], np.zeros(n, np.float32)) for n in (12, 10, 5, 1, 0)]
    rk.append(Ranking(np.array([3, 7, 9]), np.zeros(3, np.float32)))
    for k in (1, 4, 10, 12):
        ild, ndr = [], []
        for r in rk:
            top = r.rows[:k]
            cos = [float(v[a] @ v[b]) for i, a in enumerate(top) for b in top[i + 1:]]
            ild.append(1 - np.mean(cos) if cos else np.nan)
            ndr.append(np.mean(np.array(cos) > 0.95) if cos else np.nan)
        np.testing.assert_allclose(div.intra_list_diversity(rk, v, k=k), ild, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(div.near_duplicate_rate(rk, v, k=k), ndr)
    assert div.near_duplicate_rate(rk, v, k=3)[-1] == 1 / 3
    assert div.intra_list_diversity([], v, k=5).shape == (0,)

def test_alpha_ndcg_and_s_recall():
    sub = {"q": {"a": ["t1"], "b": ["t1"], "c": ["t2"]}}
    good = Run.from_dict({"q": {"a": 3, "c": 2, "b": 1}})
    bad = Run.from_dict({"q": {"a": 3, "b": 2, "c": 1}})
    assert div.alpha_ndcg(good, sub, k=3)["q"] == pytest.approx(1.0)
    assert div.alpha_ndcg(bad, sub, k=3)["q"] < 1.0
    assert div.subtopic_recall(good, sub, k=2)["q"] == 1.0
    assert div.subtopic_recall(bad, sub, k=2)["q"] == 0.5


@pytest.mark.slow
def test_scifact_slice_no_recall_loss(slice_data):
    """On a real slice at default settings (anchor 0.5): Recall@20 within 0.05 of dense; only non-collapsed
    queries change."""
    from ragkit.eval import evaluate
    from ragkit.retrievers import Dense

    corpus, queries, qrels, _ = slice_data
    op = KnnEmbed(k=20, n_init=1).fit(corpus)
    dense = Dense(k=20).fit(corpus)
    q = op.dense.encoder.encode_queries(queries.texts)
    st = State(list(queries.texts), list(queries.ids), vectors={op.dense.encoder.key: q})
    a, b = op(st), dense(st)
    ra = evaluate(Run.from_rankings(queries.ids, a.rankings, corpus.ids), qrels, ["recall@20"])["recall@20"]
    rb = evaluate(Run.from_rankings(queries.ids, b.rankings, corpus.ids), qrels, ["recall@20"])["recall@20"]
    assert ra >= rb - 0.05
    live = ~op.mixture(q)["collapsed"]
    assert live.any()
    changed = [set(x.rows.tolist()) != set(y.rows.tolist()) for x, y in zip(a.rankings, b.rankings)]
    assert np.array(changed)[live].any() and not np.array(changed)[~live].any()


def test_alpha_ndcg_counts_a_repeated_subtopic_once_and_takes_alpha_one():
    from ragkit.eval.diversity import alpha_ndcg, cluster_entropy
    from ragkit.run import Run
    from ragkit.types import Ranking

    run = Run(["q"], [np.array(["B"], dtype=object)], [np.array([1.0])])
    subtopics = {"q": {"A": ["t1", "t1"], "B": ["t2"]}}
    assert alpha_ndcg(run, subtopics, k=1)["q"] == 1.0  # A and B each cover one subtopic
    assert alpha_ndcg(run, subtopics, k=1, alpha=1.0)["q"] == 1.0
    assert np.isnan(cluster_entropy([Ranking.empty()], np.zeros(3, np.int64), k=10)[0])
