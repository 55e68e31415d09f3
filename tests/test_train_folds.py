"""``ragkit train``'s held-out fold keeps the queries of one text (whitespace and case aside) on one side: a
question fitted on under one id and scored under another (SciFact's train split has 2 such pairs) is not
held out.  The fold stays seeded, about one fifth, and where no two queries share a text it is the
permutation fold it always was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragkit import Queries
from ragkit.cli import app
from ragkit.cli._train import _held_out_fold
from ragkit.types import normalised_text

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
         "romeo sierra tango uniform victor whiskey xray yankee zulu amber basil cedar dune").split()

#: A pipeline that learns from judged queries (so the report runs) and fits in a moment.
LEARNS = """pipeline:
  - parallel:
      branches:
        - bm25: {}
        - bm25: {k1: 0.5}
      fuse:
        rrf: {learn: true}
"""


def _beir(root: Path, queries: list[tuple[str, str, str]]) -> Path:
    """A BEIR folder of one document per word of :data:`WORDS` and a train split of ``queries``
    (``(id, text, relevant document)``)."""
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": f"{w} {w} notes on {w}"} for i, w in enumerate(WORDS)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t, _ in queries),
                                        encoding="utf-8")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, _, d in queries), encoding="utf-8")
    return root


def _twins() -> list[tuple[str, str, str]]:
    """30 queries, and 15 twins asking 15 of them again under other ids, in another spelling."""
    own = [(f"q{i}", f"what about {w}", f"d{i}") for i, w in enumerate(WORDS)]
    return own + [(f"twin{i}", f"  What ABOUT\t{WORDS[i]} ", f"d{i}") for i in range(0, 30, 2)]


def _sides(queries: Queries, held: list[int]) -> tuple[set[str], set[str]]:
    texts = [normalised_text(t) for t in queries.texts]
    inside = set(held)
    return ({texts[i] for i in inside}, {t for i, t in enumerate(texts) if i not in inside})


@pytest.mark.parametrize("seed", range(20))
def test_the_fold_keeps_each_text_on_one_side(seed):
    rows = _twins()
    queries = Queries([q for q, _, _ in rows], [t for _, t, _ in rows])
    fold = _held_out_fold(queries, seed)
    assert fold is not None and fold == _held_out_fold(queries, seed)  # seeded: the same fold again
    held, fitted = _sides(queries, fold.held)
    assert not held & fitted
    assert sorted(fold.held + fold.fit) == list(range(len(queries))) and fold.twins == 30
    assert len(queries) // 5 - 1 <= len(fold.held) <= len(queries) // 5  # (pairs: one short at most)


def test_without_shared_texts_the_fold_is_the_permutation_fold():
    queries = Queries([str(i) for i in range(50)], [f"question {i}" for i in range(50)])
    for seed in range(10):
        fold = _held_out_fold(queries, seed)
        perm = np.random.default_rng(seed).permutation(50)
        assert fold is not None and fold.held == sorted(perm[:10].tolist()) and fold.twins == 0


def test_texts_asked_too_often_for_a_fifth_hold_out_the_least_asked():
    queries = Queries([str(i) for i in range(10)], ["a"] * 6 + ["b"] * 4)
    fold = _held_out_fold(queries, 0)
    assert fold is not None and fold.held == [6, 7, 8, 9]
    assert _held_out_fold(Queries(["1", "2"], ["same", " SAME"]), 0) is None  # one text: no fold


def test_train_report_holds_out_no_question_it_fitted_on(tmp_path, monkeypatch):
    """With twins (a query's text under another id) in the split, each pair is held out whole or fitted on
    whole (the old fold, a permutation of positions, split 4 of the 15 pairs with seed 0), and a note says
    so."""
    from ragkit.cli import _train

    data = _beir(tmp_path / "data", _twins())
    (tmp_path / "p.yaml").write_text(LEARNS, encoding="utf-8")
    scored: list[list[str]] = []
    search = _train._search_scored

    def record(pipe, queries, *args, **kwargs):
        scored.append(list(queries.ids))
        return search(pipe, queries, *args, **kwargs)

    monkeypatch.setattr(_train, "_search_scored", record)
    res = CliRunner().invoke(app, ["train", "--data", str(data), "-p", str(tmp_path / "p.yaml"), "--out",
                                   str(tmp_path / "out"), "--report", "--seed", "0"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert len(scored) == 2 and scored[0] == scored[1]  # unlearned and learned, on the held-out queries
    held = set(scored[0])
    split = [i for i in range(0, 30, 2) if (f"q{i}" in held) != (f"twin{i}" in held)]
    assert not split, f"twin pairs on both sides of the fold: {split}"
    assert f"held-out {len(held)} of 45 train queries (fit on the other {45 - len(held)})" in res.stdout
    assert "30 of the 45 train queries share their text with another" in res.stderr


def test_train_report_says_when_the_fold_is_far_from_a_fifth(tmp_path):
    rows = [(f"a{i}", "what about alpha", "d0") for i in range(5)] + [(f"b{i}", "what about bravo", "d1")
                                                                      for i in range(5)]
    data = _beir(tmp_path / "data", rows)
    (tmp_path / "p.yaml").write_text(LEARNS, encoding="utf-8")
    res = CliRunner().invoke(app, ["train", "--data", str(data), "-p", str(tmp_path / "p.yaml"), "--out",
                                   str(tmp_path / "out"), "--report"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "held-out 5 of 10 train queries (fit on the other 5; 50%, not one in five" in res.stdout
    assert "(5 held out, not 2)" in res.stderr


def test_a_split_of_one_question_has_no_report(tmp_path):
    rows = [(f"a{i}", "What about alpha" if i % 2 else "what  about alpha", "d0") for i in range(6)]
    data = _beir(tmp_path / "data", rows)
    (tmp_path / "p.yaml").write_text(LEARNS, encoding="utf-8")
    args = ["train", "--data", str(data), "-p", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, [*args, "--report"])
    assert res.exit_code == 2 and "--report: the 6 queries of the train split have one text" in res.stderr
    assert not (tmp_path / "out").exists()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "held-out report skipped: the 6 queries" in res.stderr, res.output
    assert "held-out" not in res.stdout
