"""A fuser trying several settings (``weighted: {learn: true, norm: learn}``) where no query can be held out.

When the usable training queries all have one text (whitespace and case aside), the weight search's folds keep them
together and no cross-validated nDCG@10 exists (nan).  The fuser compared its settings by that nan
(``found.held_out_ndcg > best.held_out_ndcg``: always false), so the first one (minmax) was kept whatever its quality,
the one-text warning came once per setting, and ``learned.json`` held ``NaN``, which is no JSON (``jq``,
JavaScript's ``JSON.parse``, Python's ``json.loads(..., parse_constant=...)`` strict readers refuse it).  The
settings are now compared by their training nDCG@10, said once; the nan estimates are saved as null and read back as
nan.  With held-out scores, nothing changes.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from ragkit import Corpus, TrainSet
from ragkit.errors import ArtifactError
from ragkit.operator import Operator
from ragkit.pipelines.fusion import WeightedFusion
from ragkit.pipelines.weights import learn_weights
from ragkit.types import Ranking, State


def _one_text(texts: list[str] | None = None) -> tuple[State, Corpus, TrainSet]:
    """Three queries of one text over 6 documents, each judging d3 relevant: branch ``a`` ranks d0, d1, d3, d2 (scores
    8.5, 7, 1.5, 1), ``b`` d3, d1, d2, d0 (.9, .5, .4, .3).  Equal weights put d3 first after zscore (nDCG@10 1),
    second after minmax (below d1; 0.6309, minmax kept by the old code as the first setting) and third with no
    normalisation (below d0 and d1; 0.5), no two fused scores tied.  Judging d0 relevant too: relevant at ranks 1 and
    3 after zscore (d3, d1, d0, d2) and with none (d0, d1, d3, d2), at 2 and 3 after minmax (d1, d3, d0, d2)."""
    texts = texts or ["same q", "Same  q", " SAME Q"]
    a = [Ranking(np.array([0, 1, 3, 2]), np.array([8.5, 7., 1.5, 1.], np.float32)) for _ in texts]
    b = [Ranking(np.array([3, 1, 2, 0]), np.array([.9, .5, .4, .3], np.float32)) for _ in texts]
    qids = [f"q{i}" for i in range(len(texts))]
    st = State(list(texts), query_ids=qids, branches=[("a", a), ("b", b)])
    ids = [f"d{i}" for i in range(6)]
    return st, Corpus(ids=ids, texts=[f"text {d}" for d in ids]), TrainSet(dict(zip(qids, texts)),
                                                                           {q: {"d3": 1} for q in qids})


def _strict_json(text: str) -> object:
    """``text`` read as JSON proper: NaN and Infinity refused, as readers other than Python's refuse them."""
    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_settings_without_held_out_scores_are_compared_by_training_ndcg_and_said_once(caplog):
    """The normalisation kept is the one scoring best on the training queries (zscore here, not the first tried,
    minmax), and the one-text warning comes once, saying how the settings were compared (it came once a setting)."""
    st, corpus, train = _one_text()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op = WeightedFusion(learn=True, norm="learn").fit(corpus, train, upstream=st)
    assert op.norm == "zscore" and op.learned_["norm"] == "zscore"
    assert op.learned_["weights"] == [1.0, 1.0] and op.learned_["kept"] == "uniform"  # (1 each, as unlearned)
    assert op.learned_["train_ndcg@10"] == 1.0 and math.isnan(op.learned_["cv_ndcg@10"])
    said = [r.getMessage() for r in caplog.records if "fusion weights" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("weighted (norm: learn): learning fusion weights: the 3 usable training queries")
    assert "'same q'" in said[0] and "training queries instead" in said[0]
    assert "norm: minmax 0.6309; norm: zscore 1.0000; norm: none 0.5000" in said[0]
    assert said[0].endswith("keeping norm: zscore")
    assert [r.rows.tolist() for r in op(st).rankings] == [[3, 1, 0, 2]] * 3  # fused with the kept normalisation


def test_the_first_best_setting_by_training_ndcg_wins_ties():
    """Of settings equal on the training queries, the first tried is kept (as of equal held-out scores)."""
    st, corpus, train = _one_text()
    qids = train.queries.ids
    tie = TrainSet(dict(zip(qids, train.queries.texts)), {q: {"d3": 1, "d0": 1} for q in qids})
    op = WeightedFusion(learn=True, norm="learn").fit(corpus, tie, upstream=st)  # relevant at 1, 3 for zscore and
    assert op.learned_["norm"] == "zscore"                                       # none, at 2, 3 for minmax


def test_nan_estimates_are_saved_as_null_and_read_back_as_nan(tmp_path):
    """learned.json is valid JSON (null, not NaN), and a loaded fuser reports what the fitted one did."""
    st, corpus, train = _one_text()
    op = WeightedFusion(learn=True, norm="learn").fit(corpus, train, upstream=st)
    op.save(tmp_path / "f")
    saved = _strict_json((tmp_path / "f" / "learned.json").read_text())
    assert isinstance(saved, dict)
    assert saved["cv_ndcg@10"] is None and saved["uniform_cv_ndcg@10"] is None and saved["norm"] == "zscore"
    back = Operator.load(tmp_path / "f")
    assert isinstance(back, WeightedFusion) and back.norm == "zscore"
    assert back.learned_.keys() == op.learned_.keys()
    for k, v in op.learned_.items():
        if isinstance(v, float) and math.isnan(v):
            assert isinstance(back.learned_[k], float) and math.isnan(back.learned_[k]), k
        else:
            assert back.learned_[k] == v, k
    assert [r.rows.tolist() for r in back(st).rankings] == [r.rows.tolist() for r in op(st).rankings]


def test_a_save_holding_nan_from_before_still_loads(tmp_path):
    """A learned.json written before (NaN for the estimates) loads, its estimates nan."""
    st, corpus, train = _one_text()
    op = WeightedFusion(learn=True, norm="learn").fit(corpus, train, upstream=st)
    op.save(tmp_path / "f")
    path = tmp_path / "f" / "learned.json"
    path.write_text(json.dumps({**op.learned_, "norm": "none"}))  # (Python's default: NaN)
    assert "NaN" in path.read_text()
    back = WeightedFusion(learn=True, norm="learn")
    back._load(tmp_path / "f")  # (the file, rewritten, no longer matches the save's checksums: its reading alone)
    assert back.norm == "none" and math.isnan(back.learned_["cv_ndcg@10"])


def test_a_learned_json_that_is_no_object_is_refused_naming_the_file(tmp_path):
    st, corpus, train = _one_text()
    WeightedFusion(learn=True, norm="learn").fit(corpus, train, upstream=st).save(tmp_path / "f")
    (tmp_path / "f" / "learned.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match=r"learned\.json: expected a JSON object .*got list"):
        WeightedFusion(learn=True, norm="learn")._load(tmp_path / "f")


def test_a_single_setting_warns_once_as_before(caplog):
    """One setting (norm: zscore): nothing to compare, the weight search's own warning, once."""
    st, corpus, train = _one_text()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op = WeightedFusion(learn=True, norm="zscore").fit(corpus, train, upstream=st)
    said = [r.getMessage() for r in caplog.records if "fusion weights" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("weighted: learning fusion weights: the 3 usable")
    assert "instead" not in said[0] and "norm" not in op.learned_


def test_learn_weights_without_warn_notes_instead():
    """``warn=False``: the one-text warning is the result's ``note``, not logged; ``cross_validated`` is False."""
    st, corpus, train = _one_text()
    prep = WeightedFusion(norm="zscore")._prepare(st, with_fields=False)
    found = learn_weights(lambda s, w: prep(w, None), st, train.qrels, np.array(corpus.ids), warn=False)
    assert not found.cross_validated and found.note.startswith("learning fusion weights: the 3 usable")


def test_with_held_out_scores_the_choice_is_unchanged(caplog):
    """Queries of different texts: the settings are compared by cross-validated nDCG@10, no new warning."""
    st, corpus, train = _one_text([f"question {i}" for i in range(6)])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op = WeightedFusion(learn=True, norm="learn", folds=3).fit(corpus, train, upstream=st)
    assert not any("instead" in r.getMessage() for r in caplog.records)
    assert math.isfinite(op.learned_["cv_ndcg@10"])
    cvs = {}
    for norm in ("minmax", "zscore", "none"):
        one = WeightedFusion(learn=True, norm=norm, folds=3).fit(corpus, train, upstream=st)
        cvs[norm] = one.learned_["cv_ndcg@10"]
    assert op.learned_["norm"] == max(cvs, key=lambda n: cvs[n])  # (max: the first of equal ones)
    assert op.learned_["cv_ndcg@10"] == cvs[op.learned_["norm"]]
