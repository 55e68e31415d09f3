"""``evaluate()``'s ``qrels_fingerprint`` is computed at its first read, once (one pass over the judgements was ~30% of
evaluate's time at 1.5M of them, for a result that may never be compared), from evaluate's own copy of the judgements
and a snapshot of the queries it scored: the same string as when it was computed eagerly, whatever the caller does to
the qrels or to ``per_query`` afterwards."""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle
import threading
import time
from dataclasses import replace

import pytest

from ragkit import Run, evaluate
from ragkit.eval.metrics import EvalResult

compare_module = importlib.import_module("ragkit.eval.compare")  # (ragkit.eval.compare is also the function)

QRELS = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}, "q3": {"d4": 1, "d5": 3}, "q4": {}}
RUN = {"q1": {"d1": 2.0, "d9": 1.0}, "q2": {"d3": 0.5}}
#: what evaluate(RUN, QRELS, ["ndcg@10"]).qrels_fingerprint was when evaluate computed it eagerly
EAGER = "sha256-scored:5614d3cbd7fe834721890b129c65d3920ac626cf6235024b27d8cd785f87e249"


@pytest.fixture
def calls(monkeypatch) -> list[tuple]:
    """The calls of scored_qrels_fingerprint (counted, then computed as ever)."""
    seen: list[tuple] = []
    real = compare_module.scored_qrels_fingerprint

    def counted(qrels, queries):
        seen.append((qrels, queries))
        return real(qrels, queries)

    monkeypatch.setattr(compare_module, "scored_qrels_fingerprint", counted)
    return seen


def _qrels() -> dict[str, dict[str, int]]:
    return {q: dict(rel) for q, rel in QRELS.items()}


def test_the_fingerprint_is_the_eager_one():
    result = evaluate(Run.from_dict(RUN), _qrels(), ["ndcg@10"])
    assert result.qrels_fingerprint == EAGER
    assert EAGER == compare_module.scored_qrels_fingerprint(QRELS, ["q1", "q2", "q3"])


def test_evaluate_leaves_it_to_the_first_read_and_computes_it_once(calls):
    result = evaluate(Run.from_dict(RUN), _qrels(), ["ndcg@10", "recall@10"])
    assert calls == []  # (the eager evaluate called it once here)
    assert result.qrels_fingerprint == EAGER
    assert len(calls) == 1
    assert result.qrels_fingerprint == EAGER and len(calls) == 1  # read twice: computed once
    assert "_qrels_fingerprint_of" not in vars(result)  # (the judgements it was computed from are let go)


def test_what_the_caller_changes_afterwards_changes_nothing(calls):
    qrels = _qrels()
    result = evaluate(Run.from_dict(RUN), qrels, ["ndcg@10"])
    qrels["q1"]["d1"] = 0  # the user's dicts: evaluate read its own copy
    qrels["q5"] = {"d7": 1}
    del qrels["q3"]
    result.per_query["ndcg@10"].pop("q3")  # the queries scored: snapshot at the call
    result.per_query["ndcg@10"]["q5"] = 1.0
    assert calls == []
    assert result.qrels_fingerprint == EAGER


def test_a_value_set_replaces_the_pending_one(calls):
    result = evaluate(Run.from_dict(RUN), _qrels(), ["ndcg@10"])
    result.qrels_fingerprint = None
    assert result.qrels_fingerprint is None and calls == []
    by_hand = replace(evaluate(Run.from_dict(RUN), _qrels(), ["ndcg@10"]), qrels_fingerprint="sha256-scored:x")
    assert by_hand.qrels_fingerprint == "sha256-scored:x" and calls == []
    assert EvalResult({"ndcg@10": 1.0}, {"ndcg@10": {"q1": 1.0}}).qrels_fingerprint is None
    assert EvalResult({}, {}, qrels_fingerprint="sha256-scored:y").qrels_fingerprint == "sha256-scored:y"


def test_the_field_reads_as_before():
    """What help() and dataclass tools see: a field typed ``str | None``, default None, in repr and ==."""
    param = inspect.signature(EvalResult).parameters["qrels_fingerprint"]
    assert (param.default, str(param.annotation)) == (None, "str | None")
    assert EvalResult.qrels_fingerprint is None
    a, b = (evaluate(Run.from_dict(RUN), _qrels(), ["ndcg@10"]) for _ in range(2))
    assert f"qrels_fingerprint={EAGER!r}" in repr(a)
    assert a == b and a != replace(b, qrels_fingerprint=None)


def test_replace_pickle_and_copy_carry_the_string_not_the_judgements(calls):
    result = evaluate(Run.from_dict(RUN), _qrels(), ["ndcg@10"])
    again = pickle.loads(pickle.dumps(result))
    assert len(calls) == 1 and vars(again)["qrels_fingerprint"] == EAGER
    assert "_qrels_fingerprint_of" not in vars(again)
    for other in (copy.copy(result), copy.deepcopy(result), replace(result, scores={})):
        assert other.qrels_fingerprint == EAGER
    assert len(calls) == 1


def test_compare_reads_it(calls):
    from ragkit.eval.compare import compare

    a = evaluate(Run.from_dict(RUN), _qrels(), ["ndcg@10"])
    b = evaluate(Run.from_dict({"q1": {"d2": 1.0}, "q3": {"d5": 1.0}}), _qrels(), ["ndcg@10"])
    assert calls == []
    cmp = compare({"a": a, "b": b}, ["ndcg@10"], n_resamples=50)
    assert cmp.fingerprints == (EAGER, EAGER) and len(calls) == 2


def test_two_threads_reading_at_once_compute_it_once(calls, monkeypatch):
    counted = compare_module.scored_qrels_fingerprint

    def slow(qrels, queries):  # (long enough for the second reader to arrive while the first computes)
        time.sleep(0.2)
        return counted(qrels, queries)

    monkeypatch.setattr(compare_module, "scored_qrels_fingerprint", slow)
    result = evaluate(Run.from_dict(RUN), _qrels(), ["ndcg@10"])
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(result.qrels_fingerprint)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [EAGER, EAGER] and len(calls) == 1


def test_load_result_still_fingerprints_the_judgements_it_is_given(tmp_path, calls):
    """load_result scores a run file against a checked copy it makes and reads the fingerprint at once (its
    SystemResult is frozen): computed once, the string as before."""
    from ragkit.eval.compare import load_result

    path = tmp_path / "a.trec"
    path.write_text("q1 Q0 d1 1 2.0 r\nq2 Q0 d3 1 0.5 r\n")
    got = load_result(path, qrels=_qrels(), metrics=["ndcg@10"])
    assert got.qrels_fingerprint == EAGER and len(calls) == 1
