"""trec_eval's order computed for all queries at once (Run.from_dict, read_trec, evaluate's MRR@k and BEIR's
r_cap/hole/acc) gives exactly what the former per-query Python sorts gave, ties included; learners check
their qrels once."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pytest

from ragkit.errors import DataError
from ragkit.eval.metrics import _NO_DOC, _beir_tops, evaluate
from ragkit.run import Run, _f32, _trec_flat, trec_head, trec_order


# --- the former implementations, kept as the reference -------------------------------------------------------
def old_trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    items = sorted(docs.items(), reverse=True)  # ties: document id descending
    if len(items) < 2:
        return items
    s32 = np.fromiter((v for _, v in items), np.float64, len(items)).astype(np.float32)
    return [items[i] for i in np.argsort(-s32, kind="stable")]


def old_trec_head(docs: Mapping[str, float], k: int) -> list[tuple[str, float]]:
    if len(docs) <= k:
        return old_trec_order(docs)
    keys = list(docs)
    s32 = np.fromiter(docs.values(), np.float64, len(keys)).astype(np.float32)
    kth = np.partition(s32, len(s32) - k)[len(s32) - k]
    return old_trec_order({keys[i]: docs[keys[i]] for i in np.flatnonzero(s32 >= kth)})[:k]


def old_from_dict(run):
    docs, scores = [], []
    for d in run.values():
        items = old_trec_order(d)
        docs.append(np.array([i for i, _ in items], dtype=object))
        scores.append(np.array([s for _, s in items], dtype=np.float32))
    return [str(q) for q in run], docs, scores


def old_beir_tops(run, judged, k, relevance_level):
    annotated = {d for rel in judged.values() for d in rel}
    relevant = np.zeros((len(run), k), bool)
    unjudged = np.zeros((len(run), k), bool)
    for i, (q, docs) in enumerate(run.items()):
        rel = judged.get(q, {})
        head = [d for d, _ in old_trec_head(docs, k) if d != _NO_DOC]
        relevant[i, :len(head)] = [rel.get(d, 0) >= relevance_level for d in head]
        unjudged[i, :len(head)] = [d not in annotated for d in head]
    n_rel = np.array([sum(g >= relevance_level for g in judged.get(q, {}).values()) for q in run], np.int64)
    return relevant, unjudged, n_rel


def old_mrr(run, judged, k, level):
    """The former MRR@k: each judged query's trec_head(k) (an empty run: the placeholder) to pytrec_eval."""
    import pytrec_eval

    full = {q: (run.get(q) or {_NO_DOC: 0.0}) for q in judged}
    rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}, relevance_level=level).evaluate(
        {q: dict(old_trec_head(docs, k)) for q, docs in full.items()})
    return {q: float(v["recip_rank"]) for q, v in rr.items()}


# --- random runs full of ties ---------------------------------------------------------------------------------
def _scores(rng, n, levels):
    s = rng.integers(0, levels, n).astype(np.float64) / 7
    for value, p in ((-0.0, 0.1), (0.0, 0.1), (np.inf, 0.05), (-np.inf, 0.05), (1.0, 0.05),
                     (1 + 1e-12, 0.05)):  # (1 + 1e-12 ties with 1 in float32 only)
        s[rng.random(n) < p] = value
    return s


def _ids(rng, n):
    names = ["d%d", "é%d", "%d", "D%d", "d%d\x01", "a b%d"]
    return [names[i % len(names)] % i for i in rng.choice(300, n, replace=False)]


def random_run(rng, n_q=12, depth=60, levels=None, nan=False):
    run = {}
    for q in range(n_q):
        n = int(rng.integers(0, depth))
        s = _scores(rng, n, levels or int(rng.integers(1, 40)))
        if nan:
            s[rng.random(n) < 0.1] = np.nan
        run[f"q{q}"] = dict(zip(_ids(rng, n), s.tolist()))
    return run


@pytest.mark.parametrize("seed", range(6))
def test_from_dict_and_trec_order_are_the_former_per_query_sorts(seed):
    rng = np.random.default_rng(seed)
    for levels in (1, 2, 5, None):  # 1: every score of a query tied
        run = random_run(rng, levels=levels, nan=seed % 2 == 1)
        if any(v != v for d in run.values() for v in d.values()):  # a NaN score: refused by from_dict since review
            # s51 (trec_order still sorts it, below)
            with pytest.raises(DataError, match=r"^Run\.from_dict: query '.*' gives document '.*' the score nan"):
                Run.from_dict(run)
        else:
            new = Run.from_dict(run)
            qids, docs, scores = old_from_dict(run)
            assert new.query_ids == qids
            for a, b in zip(new.doc_ids, docs):
                assert a.dtype == b.dtype and a.tolist() == b.tolist()
            for a, b in zip(new.scores, scores):
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes()  # bit for bit (-0.0)
        for d in run.values():
            assert str(trec_order(d)) == str(old_trec_order(d))  # (str: NaN != NaN)
            for k in (1, 3, 10, 100):
                assert str(trec_head(d, k)) == str(old_trec_head(d, k))


def test_from_dict_ids_that_only_compare_within_a_query():
    """Integer ids in one query, strings in another (each query's sort compared only its own).  The sort is
    _trec_flat's; Run.from_dict writes the ids as strings first, as qrels' are (review s51), so it orders "3",
    "2", "10" as trec_eval orders those strings."""
    run = {"q": {3: 1.0, 10: 1.0, 2: 1.0, 7: 0.5}, "r": {"b": 2.0, "a": 2.0}, "s": {}}
    lens, flat, s64 = _trec_flat(run)
    ends = np.cumsum(lens)
    new = [flat[a:b] for a, b in zip(ends - lens, ends)]
    (_, docs, scores) = old_from_dict(run)
    assert [d.tolist() for d in new] == [d.tolist() for d in docs] == [[10, 3, 2, 7], ["b", "a"], []]
    assert all(np.array_equal(_f32(s64[a:b]), s) for a, b, s in zip(ends - lens, ends, scores))
    assert [d.tolist() for d in Run.from_dict(run).doc_ids] == [["3", "2", "10", "7"], ["b", "a"], []]


def test_read_trec_orders_ties_as_before(tmp_path):
    rng = np.random.default_rng(11)
    run = {q: {d.replace("\x00", "").replace(" ", ""): s for d, s in docs.items()}
           for q, docs in random_run(rng, levels=3).items() if docs}
    path = tmp_path / "r.trec"
    with open(path, "w") as f:  # in dict order (not trec order): the reader must sort
        for q, docs in run.items():
            for r, (d, s) in enumerate(docs.items(), 1):
                f.write(f"{q} Q0 {d} {r} {s!r} t\n")
    got = Run.read_trec(path)
    _, docs, scores = old_from_dict({q: {d: float(repr(s)) for d, s in v.items()} for q, v in run.items()})
    assert [d.tolist() for d in got.doc_ids] == [d.tolist() for d in docs]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got.scores, scores))


@pytest.mark.parametrize("seed", range(5))
def test_beir_metrics_and_mrr_are_the_former_ones(seed):
    import pytrec_eval

    rng = np.random.default_rng(100 + seed)
    for levels in (1, 3, None):
        run = random_run(rng, n_q=15, depth=40, levels=levels)
        run = {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}
        judged = {q: {d: int(rng.integers(0, 3)) for d in rng.permutation(list(docs) + ["unretrieved"])[:6]}
                  for q, docs in run.items()}
        judged = {q: rel for q, rel in judged.items() if rel}
        judged["not searched"] = {"d1": 1}
        full = {q: (run.get(q) or {_NO_DOC: 0.0}) for q in judged}
        for level in (1, 2):
            for k in (1, 5, 100):
                assert all(np.array_equal(a, b) for a, b in zip(_beir_tops(full, judged, k, level),
                                                                old_beir_tops(full, judged, k, level)))
            names = ["mrr@1", "mrr@5", "mrr@100", "r_cap@5", "r_cap@100", "hole@3", "acc@1", "acc@10", "ndcg@10"]
            res = evaluate(run, judged, names, relevance_level=level)
            for k in (1, 5, 100):  # item by item, in the same order: the same means
                assert list(res.per_query[f"mrr@{k}"].items()) == list(old_mrr(run, judged, k, level).items())
            relevant, unjudged, n_rel = old_beir_tops(full, judged, 100, level)
            assert list(res.per_query["r_cap@5"].values()) == (
                relevant[:, :5].sum(1) / np.maximum(np.minimum(n_rel, 5), 1)).tolist()
            assert list(res.per_query["hole@3"].values()) == (unjudged[:, :3].sum(1) / 3).tolist()
            assert list(res.per_query["acc@10"].values()) == relevant[:, :10].any(1).astype(float).tolist()
            # a run deeper than every cut-off: MRR is trec_eval's reciprocal rank
            rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}, relevance_level=level).evaluate(full)
            assert res.per_query["mrr@100"] == {q: v["recip_rank"] for q, v in rr.items()}


def test_a_run_naming_the_placeholder_id_keeps_its_other_documents_in_place():
    """The placeholder of an unanswered query is dropped from the top k (as before: the others do not move up)."""
    full = {"q": {"a": 3.0, _NO_DOC: 2.0, "b": 1.0, "c": 1.0}, "r": {_NO_DOC: 0.0}}
    judged = {"q": {"c": 1, "b": 1}, "r": {"x": 1}}
    for k in (1, 2, 3, 5):
        new, old = _beir_tops(full, judged, k, 1), old_beir_tops(full, judged, k, 1)
        assert all(np.array_equal(a, b) for a, b in zip(new, old))


def test_learn_weights_checks_its_qrels_once(monkeypatch):
    """Each grid point's evaluation used to check the same judgements again (~20% of its time)."""
    import ragkit.eval.metrics as metrics
    from ragkit.pipelines.fusion import RRF
    from ragkit.pipelines.weights import learn_weights
    from ragkit.types import Ranking, State

    rng = np.random.default_rng(5)
    ids = np.array([f"d{i}" for i in range(40)])
    qids = [f"q{i}" for i in range(30)]
    br = [(f"b{i}", [Ranking(rng.permutation(40)[:15], np.linspace(1, 0, 15).astype(np.float32)) for _ in qids])
          for i in range(2)]
    st = State(list(qids), query_ids=list(qids), branches=br)
    qrels = {q: {ids[br[i % 2][1][i].rows[j]]: 1 for j in (0, 4, 9)} for i, q in enumerate(qids)}
    prep = RRF()._prepare(st, with_fields=False)
    calls = []
    real = metrics.check_qrels
    monkeypatch.setattr(metrics, "check_qrels", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    for heads in (None, lambda w, k: prep.heads(w, None, k)):
        calls.clear()
        res = learn_weights(lambda s, w: prep(w, None), st, qrels, ids, folds=5, heads=heads)
        assert calls == []  # (checked once, in learn_weights)
        # the same numbers from judgements with float grades, which the single check turns to integers
        text = learn_weights(lambda s, w: prep(w, None), st, {q: {d: float(g) for d, g in r.items()}
                                                              for q, r in qrels.items()}, ids, folds=5, heads=heads)
        assert (res.weights.tolist(), res.cv_ndcg, res.train_ndcg) == (text.weights.tolist(), text.cv_ndcg,
                                                                       text.train_ndcg)
