"""Learned fusion weights on the fuser's scale, stored exactly (re-review s54).

A kept baseline is stored as given; learned weights are exact means on the fuser's scale, and the warning
quotes the weights it sets aside on that scale; the fuser's seed is the project's Seed."""

import random

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


# ---------------------------------------------------------------- 1. a baseline every fold picks is stored exactly

def test_given_weights_every_fold_picks_are_stored_exactly(data):
    """Two identical branches: every weight vector ranks alike, ties go to the given weights, so every fold
    picks them and the averaged weights equal them (kept "learned"); stored as (g / s) * s they came back
    [2.9999999999999996, 1.7]."""
    from ragkit.pipelines import RRF
    from ragkit.retrievers import BM25

    corpus, qs, qrels = data
    fuse = RRF(learn=True, weights=[3.0, 1.7])
    Pipeline([Parallel([BM25(k=10), BM25(k=10)], fuse=fuse)]).fit(corpus, train=TrainSet(qs, qrels))
    assert fuse.weights_.tolist() == [3.0, 1.7]
    assert fuse.learned_["weights"] == [3.0, 1.7]
