"""What a step needs installed, refused before any work on every way in: ``ragkit validate`` notes an ``adapt``
fine-tune without the ``train`` extra (worded to stay true when the fine-tune is cached), a step fitted on its own
(``Dense(adapt=...).fit``) is refused at its own name before its fit does anything, as a pipeline's fit refuses
it at the step's path (checked once there), and ``ragkit train`` refuses before any line of its report.  Missing
packages are simulated as in test_missing_extras (``None`` in ``sys.modules``); tiny corpora only, no model
loaded, nothing encoded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, hide_modules

from ragkit.errors import MissingExtraError
from ragkit.types import Corpus, Queries, TrainSet

NO_DATASETS = "fine-tuning (adapt) needs the package datasets, not installed"
LEARNED = REPO / "examples" / "learned.yaml"




def _no_fit_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any work of a dense fit (the model loaded, the fine-tune, the corpus encoded) fails the test."""
    from ragkit.retrievers import Dense

    def fit(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise AssertionError("dense's fit started before the refusal")

    monkeypatch.setattr(Dense, "_fit", fit)


def _cached(monkeypatch: pytest.MonkeyPatch, folder_of) -> None:  # noqa: ANN001
    """adapt's cache folder of a fine-tune is ``folder_of(train)`` (no base model loaded to find it)."""
    from ragkit.encoders import adapt

    monkeypatch.setattr(adapt, "_adapted_folder", lambda model, corpus, train, config: folder_of(train))


def _tiny() -> tuple[Corpus, TrainSet]:
    corpus = Corpus.from_texts(["statins lower cholesterol", "cats sleep all day", "bone density in the old"],
                               ids=["d0", "d1", "d2"])
    train = TrainSet(Queries(["q0", "q1"], ["do statins lower cholesterol", "what makes bones dense"]),
                     {"q0": {"d0": 1}, "q1": {"d2": 1}})
    return corpus, train


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


# ------------------------------------------------------------------------------------- ragkit validate
def test_validate_notes_an_adapt_step_without_the_train_extra(monkeypatch):
    hide_modules(monkeypatch, "datasets")
    res = _cli("validate", LEARNED)
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if line.startswith("note: to run here: ")]
    assert notes == [f"note: to run here: pipeline[0].parallel.branches[1].dense.adapt: {NO_DATASETS}, unless this "
                     "fine-tune is already cached: pip install 'ragkit[train]'"], res.output


def test_adapt_check_ready_without_data_says_unless_cached_and_nothing_with_the_extra(monkeypatch):
    from ragkit.retrievers import Dense

    Dense(adapt={}).check_ready()  # the train extra installed: nothing to note
    Dense().check_ready()  # no adapt: nothing
    hide_modules(monkeypatch, "accelerate")
    with pytest.raises(MissingExtraError, match=re.escape(
            "dense.adapt: fine-tuning (adapt) needs the package accelerate, not installed, unless this fine-tune "
            "is already cached: pip install 'ragkit[train]'")) as e:
        Dense(adapt={}).check_ready()
    assert e.value.extra == "train" and e.value.packages == ("accelerate",)
    Dense().check_ready()


# ------------------------------------------------------------------------------- a step fitted on its own
def test_bare_adapt_fit_without_the_train_extra_is_refused_at_its_name_before_any_work(monkeypatch, tmp_path):
    from ragkit.retrievers import Dense

    corpus, train = _tiny()
    _cached(monkeypatch, lambda train: tmp_path / "adapt-none")  # (nothing cached there)
    hide_modules(monkeypatch, "datasets")
    _no_fit_work(monkeypatch)
    dense = Dense(adapt={})
    with pytest.raises(MissingExtraError, match="^" + re.escape(f"dense.adapt: {NO_DATASETS}: pip install "
                                                                "'ragkit[train]'") + "$"):
        dense.fit(corpus, train=train)
    assert not dense.is_fitted


def test_bare_adapt_fit_with_a_cached_fine_tune_needs_no_train_extra(monkeypatch, tmp_path):
    from ragkit.retrievers import Dense

    corpus, train = _tiny()
    tuned = tmp_path / "adapt-x"
    tuned.mkdir()
    (tuned / "modules.json").write_text("[]")
    _cached(monkeypatch, lambda train: tuned)
    hide_modules(monkeypatch, "datasets")
    _no_fit_work(monkeypatch)
    with pytest.raises(AssertionError, match="dense's fit started"):  # not refused: the fit's own work begins
        Dense(adapt={}).fit(corpus, train=train)


def test_pipeline_fit_checks_each_step_once_and_a_bare_fit_once(monkeypatch):
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    corpus, train = _tiny()
    calls: list[tuple[Corpus | None, TrainSet | None]] = []
    check = Dense.check_ready

    def counted(self, corpus=None, train=None):  # noqa: ANN001, ANN202
        calls.append((corpus, train))
        return check(self, corpus=corpus, train=train)

    monkeypatch.setattr(Dense, "check_ready", counted)
    _no_fit_work(monkeypatch)
    with pytest.raises(AssertionError, match="dense's fit started"):
        Dense(adapt={}).fit(corpus, train=train)
    assert calls == [(corpus, train)]
    calls.clear()
    with pytest.raises(AssertionError, match="dense's fit started"):
        Pipeline([Dense(adapt={})]).fit(corpus, train)
    assert calls == [(corpus, train)]  # the pipeline's check of its tree; the step's own fit does not repeat it


def test_bare_adapt_fit_on_ray_is_refused_at_its_name_before_ray(monkeypatch, tmp_path):
    """``backend="ray"``: fit_pipeline checks the step at its own path (it said ``pipeline.dense.adapt``), before
    Ray is needed (so without Ray too)."""
    from ragkit.retrievers import Dense

    corpus, train = _tiny()
    _cached(monkeypatch, lambda train: tmp_path / "adapt-none")
    hide_modules(monkeypatch, "datasets", "ray")
    _no_fit_work(monkeypatch)
    dense = Dense(adapt={})
    with pytest.raises(MissingExtraError, match="^" + re.escape(f"dense.adapt: {NO_DATASETS}: pip install "
                                                                "'ragkit[train]'") + "$"):
        dense.fit(corpus, train, backend="ray")
    assert not dense.is_fitted


def _composites_on_their_own():  # noqa: ANN202
    from ragkit.pipelines import Loop, MaxOnly, Parallel, Route, RuleRouter
    from ragkit.retrievers import BM25, Dense

    router = RuleRouter(rules=[{"label": "short", "max_words": 2}], default="long")
    return [(lambda: Parallel([BM25(), Dense(adapt={})]), "parallel.branches[1]"),
            (lambda: Route(router, {"long": Dense(adapt={}), "short": BM25()}), "route.branches.long"),
            (lambda: Loop(Dense(adapt={}), until=MaxOnly(), max_iters=2), "loop.body")]


@pytest.mark.parametrize("make, at", _composites_on_their_own(), ids=["parallel", "route", "loop"])
def test_a_composite_fitted_on_its_own_is_refused_at_its_own_paths(monkeypatch, tmp_path, make, at):
    """A composite fitted on its own places a step's refusal as its own fit and search errors do (``_at``:
    ``parallel.branches[1]...``), not under ``pipeline.``; inside a pipeline, at ``pipeline[0]....`` as before."""
    from ragkit.pipelines import Pipeline

    corpus, train = _tiny()
    _cached(monkeypatch, lambda train: tmp_path / "adapt-none")
    hide_modules(monkeypatch, "datasets")
    _no_fit_work(monkeypatch)
    with pytest.raises(MissingExtraError, match="^" + re.escape(f"{at}.dense.adapt: {NO_DATASETS}: pip install "
                                                                "'ragkit[train]'") + "$"):
        make().fit(corpus, train)
    with pytest.raises(MissingExtraError, match="^" + re.escape(f"pipeline[0].{at}.dense.adapt: {NO_DATASETS}")):
        Pipeline([make()]).fit(corpus, train)


def test_a_step_s_corpus_refusal_in_a_composite_on_its_own_is_at_the_composite_s_path():
    from ragkit.errors import ParamError
    from ragkit.pipelines import Parallel, Pipeline
    from ragkit.retrievers import BM25, Dense

    corpus, _ = _tiny()
    with pytest.raises(ParamError, match=r"^parallel\.branches\[1\]\.dense\.reduce: 'pca:300' fits 300") as e:
        Parallel([BM25(), Dense(reduce="pca:300")]).fit(corpus)
    assert e.value.path == "parallel.branches[1].dense.reduce"
    with pytest.raises(ParamError, match=r"^pipeline\[0\]\.parallel\.branches\[1\]\.dense\.reduce: ") as e:
        Pipeline([Parallel([BM25(), Dense(reduce="pca:300")])]).fit(corpus)
    assert e.value.path == "pipeline[0].parallel.branches[1].dense.reduce"


def test_walk_leaves_places_a_leaf_on_its_own_at_its_name():
    from ragkit.operator import Operator
    from ragkit.pipelines import Parallel
    from ragkit.pipelines.yaml import walk_leaves
    from ragkit.retrievers import BM25, Dense

    assert [p for p, _ in walk_leaves(Dense(), "")] == ["dense"]
    assert [p for p, _ in walk_leaves(Parallel([BM25(), Dense()]), "")][:2] == ["parallel.branches[0].bm25",
                                                                              "parallel.branches[1].dense"]
    assert [p for p, _ in walk_leaves(Dense())] == ["pipeline.dense"]  # (the default path, as before)

    class Nameless(Operator):
        name = ""

    assert [p for p, _ in walk_leaves(Nameless(), "")] == ["Nameless"]


# ------------------------------------------------------------------------------- a saved, fitted folder
def test_validate_of_a_saved_fitted_adapt_folder_notes_no_fine_tune(monkeypatch, tmp_path):
    """A saved, fitted folder holds its tuned model: searching or evaluating it never fine-tunes, so validate
    does not note the train extra (it checked the pipeline rebuilt, unfitted, from pipeline.yaml)."""
    from ragkit.encoders import adapt
    from ragkit.encoders.sentence import resolve_model
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    corpus, train = _tiny()
    tuned = Path(resolve_model("all-MiniLM-L6-v2"))  # the "fine-tune": the packaged model's folder, no training
    monkeypatch.setattr(adapt, "adapted_model", lambda *a, **kw: tuned)
    _cached(monkeypatch, lambda train: tuned)
    pipe = Pipeline([Dense(k=2, adapt={})]).fit(corpus, train)
    pipe.save(tmp_path / "saved")
    monkeypatch.undo()  # (no cached fine-tune to be found for it any more)
    hide_modules(monkeypatch, "datasets")
    res = _cli("validate", tmp_path / "saved")
    assert res.exit_code == 0, res.output
    assert "ok " in res.output and "note: to run here" not in res.output, res.output
    # the unfitted configuration, from the same pipeline.yaml: still noted
    res = _cli("validate", tmp_path / "saved" / "pipeline.yaml")
    assert res.exit_code == 0, res.output
    assert f"note: to run here: pipeline[0].dense.adapt: {NO_DATASETS}, unless this fine-tune" in res.output


def test_a_fitted_adapt_step_asked_without_data_is_not_refused(monkeypatch):
    from ragkit.retrievers import Dense

    hide_modules(monkeypatch, "datasets")
    dense = Dense(adapt={})
    with pytest.raises(MissingExtraError, match="unless this fine-tune is already cached"):
        dense.check_ready()
    dense.corpus_ = _tiny()[0]  # (fitted, as a load sets it)
    dense.check_ready()
    with pytest.raises(MissingExtraError, match="^" + re.escape(f"dense.adapt: {NO_DATASETS}: pip")):
        monkeypatch.setattr("ragkit.encoders.adapt._adapted_folder", lambda *a: Path("/nonexistent"))
        dense.check_ready(*_tiny())  # a refit on data: refused as before


# ------------------------------------------------------------------------------------------ ragkit train
@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    """A BEIR folder of 12 documents and 10 judged train queries (enough for the held-out report)."""
    from ragkit.eval import write_beir

    topics = ["statins", "bones", "cats", "rivers", "stars", "bread", "trains", "music", "snow", "coffee"]
    corpus = Corpus.from_texts([f"a note on {t} and more {t}" for t in topics] + ["filler one", "filler two"],
                               ids=[f"d{i}" for i in range(12)])
    queries = {f"q{i}": f"what about {t}" for i, t in enumerate(topics)}
    return write_beir(tmp_path / "tiny", corpus, queries, {"train": {f"q{i}": {f"d{i}": 1} for i in range(10)}})


@pytest.mark.parametrize("whole_cached", [False, True], ids=["nothing-cached", "only-the-whole-split-cached"])
def test_train_without_the_train_extra_fails_before_any_report_line(monkeypatch, tmp_path, tiny_beir, whole_cached):
    """No "unlearned: skipped" line before the error.  With the whole split's fine-tune cached, the report's fit
    on 80% of it (a fine-tune of its own) is the one refused, and said so."""
    whole = tmp_path / "adapt-whole"
    if whole_cached:
        whole.mkdir()
        (whole / "modules.json").write_text("[]")
    _cached(monkeypatch, lambda train: whole if len(train.queries) == 10 else tmp_path / "adapt-part")
    hide_modules(monkeypatch, "datasets")
    _no_fit_work(monkeypatch)
    res = _cli("train", "--data", tiny_beir, "--pipeline", LEARNED, "--out", tmp_path / "t2")
    assert res.exit_code == 2, res.output
    report = (" (for the held-out report's fit on 8 of the 10 train queries; --no-report skips the report)"
              if whole_cached else "")
    assert res.output.splitlines() == [
        f"error: {LEARNED}: line 8: pipeline[0].parallel.branches[1].dense.adapt: {NO_DATASETS}: pip install "
        f"'ragkit[train]'{report}"], res.output
    assert not (tmp_path / "t2").exists()
