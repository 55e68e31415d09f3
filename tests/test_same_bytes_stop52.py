"""Two identical fits of a pipeline holding dbnorm, dbnorm_dense or cosine_adapter save identical bytes: the
fit's wall time (``info_["seconds"]``) was written into ``dbnorm.json`` / ``adapter.json`` (and so into
``manifest.json``'s checksums), so no two saves were ever the same.  Older folders that hold it still load,
the key dropped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

# the hashing encoder registered for each test, the corpus and the judged queries of the hubness-filter review
from test_hubfilt_review import ENC, _corpus, _encoder, _train  # noqa: F401

from ragkit.errors import ArtifactError
from ragkit.filters import CosineAdapter, DBNorm
from ragkit.filters.dbnorm import DBNormDense
from ragkit.pipelines import Pipeline
from ragkit.retrievers import Dense

#: (pipeline factory, the step's folder, its info file, where its fit report sits in that file)
PIPELINES: dict[str, tuple[Callable[[], Pipeline], str, str, tuple[str, ...]]] = {
    "dbnorm": (lambda: Pipeline([Dense(model=ENC, k=10), DBNorm(model=ENC)]), "ops/01-dbnorm", "dbnorm.json", ()),
    "dbnorm_dense": (lambda: Pipeline([DBNormDense(model=ENC, k=10)]), "ops/00-dbnorm_dense", "dbnorm.json", ()),
    "cosine_adapter": (lambda: Pipeline([Dense(model=ENC, k=10), CosineAdapter(model=ENC, max_iter=200)]),
                       "ops/01-cosine_adapter", "adapter.json", ("info",)),
}


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_two_identical_fits_save_identical_bytes(name, tmp_path):
    """Every file of the two saves, manifest.json and the step's info file included, has the same sha256."""
    make, step, info_file, _ = PIPELINES[name]
    corpus, train = _corpus(), _train()
    a, b = make().fit(corpus, train), make().fit(corpus, train)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert f"{step}/{info_file}" in da and "manifest.json" in da
    assert sorted(da) == sorted(db)
    assert [f for f in da if da[f] != db[f]] == []
    assert a.learned() == b.learned()
    assert "seconds" not in a.steps[-1].info_  # (nor kept in memory: a fitted and a loaded one report the same)
    assert Pipeline.load(tmp_path / "a").steps[-1].info_ == a.steps[-1].info_


@pytest.mark.parametrize("name", list(PIPELINES))
def test_old_folder_with_seconds_loads(name, tmp_path):
    """A folder saved before: its info file holds "seconds" (its checksum in manifest.json matching).  It
    loads, searches as the fitted pipeline, and the loaded ``info_`` leaves the fit time out."""
    make, step, info_file, at = PIPELINES[name]
    pipe = make().fit(_corpus(), _train())
    folder = tmp_path / "old"
    pipe.save(folder)
    path = folder / step / info_file
    saved = json.loads(path.read_text(encoding="utf-8"))
    report = saved
    for key in at:
        report = report[key]
    report["seconds"] = 0.0242  # what older saves hold
    path.write_text(json.dumps(saved, indent=2, sort_keys=True), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["sha256"][f"{step}/{info_file}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")

    loaded = Pipeline.load(folder)
    assert "seconds" not in loaded.steps[-1].info_
    assert loaded.steps[-1].info_ == pipe.steps[-1].info_
    queries = ["topic3", "area2 notes", "topic17"]
    got, want = loaded.search(queries), pipe.search(queries)
    assert [list(d) for d in got.doc_ids] == [list(d) for d in want.doc_ids]
    assert loaded.learned() == pipe.learned()


@pytest.mark.parametrize("name", list(PIPELINES))
def test_saved_report_not_an_object_is_refused(name, tmp_path):
    """A fit report that is no JSON object (a hand-edited file) is refused naming the file, not loaded."""
    make, step, info_file, at = PIPELINES[name]
    folder = tmp_path / "bad"
    make().fit(_corpus(), _train()).save(folder)
    path = folder / step / info_file
    saved = json.loads(path.read_text(encoding="utf-8"))
    saved = {**saved, at[0]: [0.0242]} if at else [0.0242]
    path.write_text(json.dumps(saved), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["sha256"][f"{step}/{info_file}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ArtifactError, match=rf"{info_file}.*JSON object.*got list"):
        Pipeline.load(folder)


def test_cosine_adapter_keeps_the_leading_run_of_passing_documents():
    """A rise of float rounding in the cosines passes the sort check; the adapter counted the documents whose
    probability passes and kept that many from the front, so a failing one before a passing one was kept."""
    import numpy as np

    from ragkit.types import Ranking, State

    corpus = _corpus()
    adapter = Pipeline([Dense(model=ENC, k=10), CosineAdapter(model=ENC, max_iter=200)]).fit(corpus, _train()).steps[1]
    cos = np.array([0.9, 0.5, 0.5000003], np.float32)
    def state(threshold: float) -> State:
        return State(["topic3"], rankings=[Ranking(np.array([3, 4, 5]), cos)],
                     options={"cosine_adapter": {"threshold": threshold}})

    from ragkit.encoders import get_encoder

    # the exact probabilities (the shown float32 scores are made non-increasing since 2026-12-07)
    probs = adapter.predict_proba(get_encoder(ENC).encode_queries(["topic3"]), cos[None].astype(np.float64))[0]
    assert probs[1] < probs[2]
    assert adapter(state(float((probs[1] + probs[2]) / 2))).rankings[0].rows.tolist() == [3]
