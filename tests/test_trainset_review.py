"""Learning from one's own judged queries (a reviewer's findings on ``TrainSet`` and ``learned_from``).

Qrels of queries whose text was not given were dropped without a word; qrels whose every document id is
the corpus's spelt another way (zero-padded) got no hint of it; ``TrainSet(qrels, queries)`` said
"query[0] ... is a dict"; and test questions put in the training set under new ids were learned from
with no word at evaluation.  Model-free: BM25 on a tiny corpus built here.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit import Corpus, Queries, TrainSet
from ragkit.errors import DataError
from ragkit.pipelines import Pipeline

TOPICS = ["stem cells", "protein folding", "vitamin d", "bone density", "insulin resistance", "gut bacteria",
          "blood pressure", "tumour growth", "sleep apnea", "heart failure"]
RRF_YAML = ("pipeline:\n  - parallel:\n      branches: [{bm25: {k: 10}}, {bm25: {k: 10, k1: 1.5}}]\n"
            "      fuse: {rrf: {learn: true}}\n")


def _corpus() -> Corpus:
    """Numeric ids as BEIR's SciFact has them (1000, 1001, ...), three documents per topic."""
    texts = [f"{t} {w}" for t in TOPICS for w in ("study in patients", "trial results", "review of mechanisms")]
    return Corpus(ids=[str(1000 + i) for i in range(len(texts))], texts=texts)


def _queries(n: int = len(TOPICS)) -> Queries:
    return Queries([f"q{i}" for i in range(n)], [f"What about {t}?" for t in TOPICS[:n]])


def _qrels(ids: list[str]) -> dict[str, dict[str, int]]:
    return {q: {str(1000 + 3 * int(q[1:])): 1} for q in ids}


# ------------------------------------------------------------------ 7. judgements of queries without a text
def test_judgements_of_queries_whose_text_is_missing_are_warned_of(caplog):
    """TrainSet(5 query texts, qrels of 10 queries) learned from 5 without a word."""
    queries = _queries()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        train = TrainSet(queries[:5], _qrels(queries.ids))
    assert ("TrainSet: 5 of the 10 queries judged in the qrels ('q5', 'q6', 'q7', ...) are not among the 5 "
            "training queries, whose texts were given ('q0', 'q1', 'q2', ...); their judgements are not learned "
            "from: give their texts in queries to learn from them") in caplog.text
    assert train.usable() == ["q0", "q1", "q2", "q3", "q4"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        TrainSet(queries[:9], {**_qrels(queries.ids), "q0": {}})
        TrainSet(queries, _qrels(queries.ids[:4]))  # queries left unjudged are fine: no judgement is lost
    assert ("1 of the 9 queries judged in the qrels ('q9') is not among the 9 training queries, whose texts were "
            "given ('q0', 'q1', 'q2', ...); its judgements are not learned from: give its text") in caplog.text
    assert caplog.text.count("TrainSet:") == 1


# ------------------------------------------------------------------ 8. every document id spelt another way
def test_qrels_whose_every_document_id_is_respelt_name_the_pairs():
    """Zero-padded ids ('0001000' for '1000') on every judgement said only "none of the documents is in the
    corpus"; with most (not all) respelt the error named the pairs."""
    queries = _queries(4)
    padded = {q: {d.zfill(7): g for d, g in rel.items()} for q, rel in _qrels(queries.ids).items()}
    with pytest.raises(DataError, match=r"none of the 4 documents judged relevant for the training queries "
                                        r"\('0001000', '0001003', '0001006', \.\.\.\) is in the corpus of 30 "
                                        r"documents .*; the qrels spell the corpus's document ids another way "
                                        r"\('0001000' for '1000', '0001003' for '1003', '0001006' for '1006'; 4 of "
                                        r"the 4\): rename them to the corpus's ids"):
        Pipeline.from_yaml(RRF_YAML).fit(_corpus(), TrainSet(queries, padded))
    other = {q: {f"x-{d}": g for d, g in rel.items()} for q, rel in _qrels(queries.ids).items()}
    with pytest.raises(DataError, match=r"is in the corpus of 30 documents .*; the qrels must use the corpus's "
                                        r"document ids$"):
        Pipeline.from_yaml(RRF_YAML).fit(_corpus(), TrainSet(queries, other))


# ------------------------------------------------------------------ 9. the arguments swapped
def test_swapped_arguments_are_named():
    pd = pytest.importorskip("pandas")
    queries = _queries(3)
    qrels = _qrels(queries.ids)
    texts = dict(zip(queries.ids, queries.texts))
    for given in (texts, queries, pd.Series(queries.texts, index=queries.ids)):
        with pytest.raises(DataError, match=r"TrainSet: queries must be the query texts \(Queries or \{query_id: "
                                            r"text\}\), got qrels \(a dict \(\{'q0': \{'1000': 1\}.*\); "
                                            r"the arguments are swapped \(qrels first, "
                                            r"query texts second\): TrainSet\(queries, qrels\)"):
            TrainSet(qrels, given)
    with pytest.raises(DataError, match=r"got qrels .*; the qrels go second: TrainSet\(queries, qrels\)"):
        TrainSet(qrels, qrels)
    frame = pd.DataFrame({"query-id": ["q0"], "corpus-id": ["1000"], "score": [1]})
    with pytest.raises(DataError, match=r"got qrels \(a DataFrame with columns \['query-id', "
                                        r"'corpus-id', 'score'\]\); the arguments are swapped"):
        TrainSet(frame, texts)


# ------------------------------------------------------------------ 6. test questions under new ids
def _leaky() -> tuple[Queries, Queries, TrainSet]:
    """Train q0..q5 plus test q6, q7 again as dup-q6, dup-q7 (case and spacing changed); test q6..q9."""
    queries = _queries()
    train_q, test_q = queries[:6], queries[6:]
    dup = Queries([f"dup-{q}" for q in test_q.ids[:2]], [f"  {t.upper()} " for t in test_q.texts[:2]])
    both = Queries(train_q.ids + dup.ids, train_q.texts + dup.texts)
    qrels = {**_qrels(train_q.ids), **{f"dup-{q}": rel for q, rel in _qrels(test_q.ids[:2]).items()}}
    return test_q, both, TrainSet(both, qrels)


def test_learned_from_warns_of_queries_with_a_learned_text_under_another_id(caplog, tmp_path):
    test_q, both, train = _leaky()
    assert train.same_text(test_q) == ["q6", "q7"]
    assert train.same_text(both) == []  # the training queries themselves: an id check finds those
    pipe = Pipeline.from_yaml(RRF_YAML).fit(_corpus(), train)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert pipe.learned_from(test_q) == []  # not refused: SciFact's own test split holds 2 such queries
    assert ("Pipeline.learned_from: 2 of the 4 queries ('q6', 'q7') have the text of a query it learned from "
            "under another id (whitespace and case aside): scores on them are not held out if they ask the same "
            "question") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert pipe.learned_from(both) == both.ids  # same id and text: learned from, no note
        assert pipe.learned_from(Queries(["q8"], ["what about sleep apnea?"])) == []
    assert caplog.text == ""
    pipe.save(tmp_path / "m")
    loaded = Pipeline.load(tmp_path / "m")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert loaded.learned_from(test_q) == [] and loaded.learned_from(both) == both.ids
    assert "2 of the 4 queries ('q6', 'q7') have the text" in caplog.text


def test_a_pipeline_saved_with_one_digest_per_query_still_loads_and_checks_ids(caplog, tmp_path):
    """Saves from before the text digest hold one digest (id and text) per query: they load, learned_from
    finds the same queries by id and text, and no text check is made."""
    test_q, both, train = _leaky()
    pipe = Pipeline.from_yaml(RRF_YAML).fit(_corpus(), train)
    pipe.save(tmp_path / "m")
    saved = sorted((tmp_path / "m").rglob("trained_queries.npy"))
    assert saved
    for path in saved:
        digests = np.load(path)
        assert digests.shape == (len(both), 2) and digests.dtype == np.uint64
        np.save(path, np.ascontiguousarray(digests[:, 0]))  # what an earlier ragkit wrote
    loaded = Pipeline.load(tmp_path / "m", verify=False)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert loaded.learned_from(both) == both.ids
        assert loaded.learned_from(test_q) == []
    assert caplog.text == ""


def test_eval_of_a_saved_pipeline_notes_test_questions_learned_under_new_ids(tmp_path):
    """``ragkit train`` on a train split holding test questions under new ids, then ``ragkit eval --pipeline
    --split test``: scored (SciFact's standard splits share 2 texts), with a note naming them."""
    from typer.testing import CliRunner

    from ragkit.cli import app
    from ragkit.eval import write_beir

    test_q, both, train = _leaky()
    data = write_beir(tmp_path / "data", _corpus(), Queries(both.ids + test_q.ids, both.texts + test_q.texts),
                      {"train": train.qrels, "test": _qrels(test_q.ids)})
    (tmp_path / "r.yaml").write_text(RRF_YAML)

    def cli(*args: object):
        return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})

    res = cli("train", "--data", data, "-p", tmp_path / "r.yaml", "--out", tmp_path / "m", "--no-report")
    assert res.exit_code == 0, res.output
    res = cli("eval", "--data", data, "-p", tmp_path / "m", "--split", "test")
    assert res.exit_code == 0, res.output
    assert "2 of the 4 queries ('q6', 'q7') have the text of a query it learned from under another id" in res.output
