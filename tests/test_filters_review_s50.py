"""A review of the filters: MMR's memory bound counting the gathered documents (and its cosines the values it
ranked by), MMR's near-ties going to the incoming rank, the cosine adapter warning of lists shorter than at
training, the shared repeat / padding helpers, MaxSim's k read by ``resolve_k``, ``check_cosines`` naming where
and what, and the per-call counts ``fetch_k`` / ``k_min`` held to the rule of a per-call ``k``."""

from __future__ import annotations

import logging
import tracemalloc

import numpy as np
import pytest

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.filters.mmr import MMR
from ragkit.retrievers import Dense
from ragkit.types import Corpus, Ranking, State

register_encoder("review-s50-hash768", HashingEncoder(dim=768), replace=True)
register_encoder("review-s50-hash64", HashingEncoder(dim=64), replace=True)


# ---------------------------------------------------------------------- 1. MMR's memory bound
def test_mmr_memory_bound_counts_the_gathered_document_block():
    """The block size bounded the (n_q, F, F) similarities only: 2,000 queries of a 100-document pool at dim 768
    gathered a (2000, 100, 768) float32 block (586 MiB) in one piece.  Now the gathered documents and the
    similarities together stay near 256 MiB (tracemalloc sees the numpy gather, not torch's products)."""
    rng = np.random.default_rng(0)
    n_docs, n_q, f = 3000, 2000, 100
    corpus = Corpus([str(i) for i in range(n_docs)], [f"doc w{i % 97} v{i % 89} u{i}" for i in range(n_docs)])
    op = MMR(k=10, lambda_mult=0.5, model="review-s50-hash768").fit(corpus)
    rankings = [Ranking(rng.choice(n_docs, f, replace=False), np.linspace(1, 0, f, dtype=np.float32))
                for _ in range(n_q)]
    state = State([f"w{i % 97} v{i % 13}" for i in range(n_q)], rankings=rankings)
    tracemalloc.start()
    try:
        out = op(state)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert len(out.rankings) == n_q and all(len(r) == 10 for r in out.rankings)
    v = op.vectors_
    q = HashingEncoder(dim=768).encode(state.texts())
    r = out.rankings[7]
    np.testing.assert_allclose(r.fields["cosine"], v[r.rows] @ q[7], atol=1e-5)  # the cosines q . d (float32 rounding)


# ---------------------------------------------------------------------- 2. MMR's near-ties
def _hashed_corpus(n: int = 2000, seed: int = 1) -> tuple[Corpus, list[str]]:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(200)]
    texts = [" ".join(rng.choice(vocab, rng.integers(3, 30))) for _ in range(n)]
    queries = [" ".join(rng.choice(vocab, rng.integers(1, 4))) for _ in range(200)]
    return Corpus([str(i) for i in range(n)], texts), queries


@pytest.mark.parametrize("model", ["review-s50-hash64", "review-s50-hash768"])
def test_mmr_lambda_one_returns_the_incoming_order(model):
    """``Dense(k=10) | MMR(k=10, lambda_mult=1.0)`` reordered documents whose cosines differ by float32 rounding
    (0.73036224 vs 0.7303623: hashed bags of words share many cosines), most queries at dim 768.  Near-ties
    now go to the incoming rank: pure relevance is the dense retriever's order."""
    corpus, queries = _hashed_corpus()
    dense = Dense(k=30, model=model).fit(corpus)
    pipe = dense | MMR(k=30, lambda_mult=1.0, model=model).fit(corpus)
    want, got = dense.search(queries), pipe.search(queries)
    for i in range(len(queries)):
        assert got.doc_ids[i].tolist() == want.doc_ids[i].tolist(), queries[i]
        np.testing.assert_allclose(got.rankings[i].fields["cosine"], want.rankings[i].scores, atol=1e-5)


def test_mmr_select_near_ties_go_to_the_lowest_pool_position_and_a_nan_comes_last():
    """Objectives within 1e-5 tie: the earlier pool position first, at lambda 1 and below; a clear lead still
    wins; a NaN cosine (never from unit rows) is picked after every number, and padding never."""
    from ragkit.filters.mmr import mmr_select

    vecs = np.eye(4, 8, dtype=np.float32)  # orthogonal unit documents: each cosine is one query coordinate
    q = np.array([[0.5, 0.5 + 4e-6, 0.5 + 8e-6, 0.5]], np.float32)  # four near-ties, rising in pool order
    q = np.pad(q, ((0, 0), (0, 4)))
    pool = np.array([[0, 1, 2, 3]])
    valid = np.ones((1, 4), bool)
    assert mmr_select(q, pool, valid, vecs, 4, 1.0)[0].tolist() == [0, 1, 2, 3]
    assert mmr_select(q, pool, valid, vecs, 4, 0.5)[0].tolist() == [0, 1, 2, 3]  # orthogonal: no redundancy
    q[0, 3] = 0.6  # a clear lead
    assert mmr_select(q, pool, valid, vecs, 4, 1.0)[0].tolist() == [3, 0, 1, 2]
    vecs = vecs.copy()
    vecs[1] = np.nan
    valid[0, 2] = False
    assert mmr_select(q, pool, valid, vecs, 4, 1.0)[0].tolist() == [3, 0, 1, -1]


# ---------------------------------------------------------------------- 3. the adapter's shallow lists
def _adapter_pipe(**kw):
    from ragkit.filters.cosine_adapter import CosineAdapter
    from ragkit.types import Queries, TrainSet

    corpus = Corpus.from_texts([f"notes on topic{i}" for i in range(40)])
    train = TrainSet(Queries.from_texts([f"topic{i}" for i in range(30)]), {f"q{i}": {str(i): 1} for i in range(30)})
    return (Dense(k=10, model="review-s50-hash64")
            | CosineAdapter(model="review-s50-hash64", target_value=0.9, **kw)).fit(corpus, train)


def test_cosine_adapter_warns_once_of_lists_shorter_than_at_training(caplog):
    """Fitted behind Dense(k=10), ``search(qs, dense={"k": 1})`` dropped every candidate, silently: the list
    features of one candidate are off their training distribution.  A warning (once per adapter) says so."""
    pipe = _adapter_pipe()
    qs = [f"topic{i}" for i in range(30, 40)]
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert [r.tolist() for r in pipe.search(qs).doc_ids] == [[str(i)] for i in range(30, 40)]
        assert "fewer than the 10 per query it was trained on" not in caplog.text
        pipe.search(qs, dense={"k": 1})
        pipe.search(qs, dense={"k": 3})
    msgs = [r.getMessage() for r in caplog.records if "it was trained on" in r.getMessage()]
    assert len(msgs) == 1, msgs
    assert ("cosine_adapter: the rankings it filters hold at most 1 candidate, fewer than the 10 per query it was "
            "trained on (the corpus has 40)") in msgs[0]
    assert "a k of at least 10" in msgs[0]


def test_cosine_adapter_no_shallow_warning_without_list_features_or_deeper_lists(caplog):
    pipe = _adapter_pipe(list_features=False)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe.search(["topic31"], dense={"k": 1})
        _adapter_pipe().search(["topic31"], dense={"k": 20})  # deeper than at training: the features read 10
    assert "it was trained on" not in caplog.text


# ---------------------------------------------------------------------- 4. the shared padding and repeat helpers
def test_pad_rows_and_first_positions():
    """MMR and the diversity measures share one padding and one repeat finder (ragkit/_flat.py)."""
    from ragkit._flat import first_positions, pad_rows

    rankings = [Ranking([5, 3, 5, 3, 5], np.zeros(5, np.float32)), Ranking([], np.zeros(0, np.float32)),
                Ranking([2], np.zeros(1, np.float32))]
    rows, valid = pad_rows(rankings, 4)
    assert rows.tolist() == [[5, 3, 5, 3], [0, 0, 0, 0], [2, 0, 0, 0]]
    assert valid.tolist() == [[True] * 4, [False] * 4, [True, False, False, False]]
    assert pad_rows(rankings, 6, -1)[0].tolist()[2] == [2, -1, -1, -1, -1, -1]
    assert first_positions(rows, valid).tolist() == [[0, 1, 0, 1], [0, 1, 2, 3], [0, 1, 2, 3]]
    rows, valid = pad_rows([], 3)
    assert rows.shape == valid.shape == (0, 3) and first_positions(rows, valid).shape == (0, 3)


# ---------------------------------------------------------------------- 6. check_cosines names where and what
def test_predict_proba_errors_name_the_row_and_the_value():
    """``predict_proba(qv, [[1.5, .5], [.8, .2]])`` spoke of "a dense retriever step before it", and an inf
    of "one NaN"; the errors now name predict_proba's argument, its row and the value."""
    import re

    from ragkit._flat import check_cosines
    from ragkit.errors import DataError

    ad = _adapter_pipe().steps[-1]
    qv = HashingEncoder(dim=64).encode(["a", "b"])
    with pytest.raises(DataError, match=re.escape("cosine_adapter.predict_proba: cosines row 0 holds 1.5, outside "
                                                  "[-1, 1]; expected raw cosine scores in [-1, 1]")) as e:
        ad.predict_proba(qv, [[1.5, 0.5], [0.8, 0.2]])
    assert "retriever" not in str(e.value)
    with pytest.raises(DataError, match=re.escape("cosine_adapter.predict_proba: cosines row 1 holds a non-finite "
                                                  "value (inf; 1 in all)")) as e:
        ad.predict_proba(qv, [[0.9, 0.5], [0.8, np.inf]])
    assert "retriever" not in str(e.value)
    with pytest.raises(DataError, match="1 non-finite score") as e:  # a pipeline's message: no NaN for an inf
        check_cosines(np.array([0.5, np.inf]), "cosine_adapter", np.array([0, 0]))
    assert "NaN" not in str(e.value)


# ---------------------------------------------------------------------- 7. per-call counts
@pytest.mark.parametrize("value", ["8", 8.0, True, 0])
def test_per_call_fetch_k_is_held_to_the_rule_of_a_per_call_k(value):
    """``mmr={"fetch_k": "8"}`` and ``8.0`` were converted while ``mmr={"k": "3"}`` was refused: both are counts
    now, refused alike by search and by a direct call; the parameters still convert as ``k``'s does."""
    from ragkit.errors import ParamError

    corpus, qs = _hashed_corpus(200)
    pipe = (Dense(k=10, model="review-s50-hash64") | MMR(k=3, model="review-s50-hash64")).fit(corpus)
    with pytest.raises(ParamError, match=f"search option mmr.fetch_k: expected a positive integer, got {value!r}"):
        pipe.search(qs[:2], mmr={"fetch_k": value})
    state = pipe.steps[0](State(qs[:2]))
    state.options = {"mmr": {"fetch_k": value}}
    with pytest.raises(ParamError, match=f"options.mmr.fetch_k: expected a positive integer, got {value!r}") as e:
        pipe.steps[1](state)
    assert e.value.path == "options.mmr.fetch_k"
    assert pipe.search(qs[:2], mmr={"fetch_k": np.int64(8)}).doc_ids[0].tolist()
    assert pipe.search(qs[:2], mmr={"fetch_k": None}).doc_ids[0].tolist()
    assert MMR(fetch_k="8", k="3").params.fetch_k == 8  # the parameters: as k's ("3" -> 3)


@pytest.mark.parametrize("value", ["2", 2.0, True, -1])
def test_per_call_k_min_is_held_to_the_rule_of_a_per_call_k(value):
    from ragkit.errors import ParamError
    from ragkit.filters.cosine_adapter import CosineAdapter

    pipe = _adapter_pipe()
    with pytest.raises(ParamError, match=f"search option cosine_adapter.k_min: expected an integer >= 0, got "
                                         f"{value!r}"):
        pipe.search(["topic31"], cosine_adapter={"k_min": value})
    state = pipe.steps[0](State(["topic31"]))
    state.options = {"cosine_adapter": {"k_min": value}}
    with pytest.raises(ParamError, match="options.cosine_adapter.k_min: expected an integer >= 0"):
        pipe.steps[1](state)
    assert len(pipe.search(["topic35"], cosine_adapter={"k_min": 3, "threshold": 1.0}).doc_ids[0]) == 3
    assert CosineAdapter(k_min="2").params.k_min == 2  # the parameter: as k's ("3" -> 3)
