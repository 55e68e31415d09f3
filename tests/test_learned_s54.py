"""Learned fusion weights, learned thresholds and learned-query warnings (review s54).

Fusion weights learned keep the fuser's score scale; a judge or router whose feature no training query has
is refused; evaluate warns of a learned question under another id; learned weights depend on the set of
judged queries, not their order; zscore fusion ranks a document retrieved low above one not retrieved."""

import logging
import random

import numpy as np
import pytest

from ragkit import Corpus, Parallel, Pipeline, TrainSet


def _data():
    rng = random.Random(0)
    topics = ["aspirin heart attack", "statins cholesterol", "vitamin bone fracture", "exercise sleep quality",
              "stomach bleeding ulcer", "diet heart disease", "insulin diabetes glucose", "vaccine immune antibody",
              "cancer tumour chemotherapy", "asthma inhaler lung", "malaria mosquito parasite",
              "depression serotonin"]
    filler = "study patients trial results effect group control analysis data risk".split()
    records, qs, qrels = [], {}, {}
    for i, t in enumerate(topics):
        for j in range(3):
            words = t.split() + rng.sample(filler, 4)
            rng.shuffle(words)
            records.append({"id": f"d{i}_{j}", "text": " ".join(words)})
        qs[f"q{i}"] = " ".join(rng.sample(t.split(), 2)) + " " + rng.choice(filler)
        qrels[f"q{i}"] = {f"d{i}_0": 1, f"d{i}_1": 2}
    return Corpus.from_records(records), qs, qrels


@pytest.fixture(scope="module")
def data():
    return _data()


# ---------------------------------------------------------------- 1. learned weights keep the fuser's scale

def test_learned_rrf_keeps_the_unlearned_score_scale(data):
    from ragkit.pipelines import RRF
    from ragkit.retrievers import BM25

    corpus, qs, qrels = data
    train = TrainSet(qs, qrels)
    q = [qs["q0"]]
    plain = Pipeline([Parallel([BM25(k=10), BM25(k=10)], fuse=RRF())]).fit(corpus)
    learned = Pipeline([Parallel([BM25(k=10), BM25(k=10)], fuse=RRF(learn=True))]).fit(corpus, train=train)
    assert learned.search(q).scores[0][0] == pytest.approx(plain.search(q).scores[0][0], rel=1e-6)
    (report,) = learned.learned().values()
    assert sum(report["weights"]) == pytest.approx(2.0)  # two branches: the weights sum to 2, as 1 each do


def test_given_weights_kept_are_kept_exactly_and_learned_ones_keep_their_sum(data, caplog):
    from ragkit.encoders import HashingEncoder, register_encoder
    from ragkit.pipelines import WeightedFusion
    from ragkit.retrievers import BM25, Dense

    register_encoder("s54-hash", HashingEncoder(dim=64), replace=True)
    corpus, qs, qrels = data
    train = TrainSet(qs, qrels)
    seen = {}
    for w in ([1.0, 3.0], [3.0, 1.0], [2.0, 1.0]):
        fuse = WeightedFusion(learn=True, weights=w)
        Pipeline([Parallel([BM25(k=10), Dense(model="s54-hash", k=10)], fuse=fuse)]).fit(corpus, train=train)
        seen[tuple(w)] = fuse.learned_
        if fuse.learned_.get("kept") == "given":
            assert fuse.learned_["weights"] == w and fuse.weights_.tolist() == w
        else:
            assert sum(fuse.learned_["weights"]) == pytest.approx(sum(w))
    assert any(v.get("kept") == "given" for v in seen.values())  # (the case the data exercises)

