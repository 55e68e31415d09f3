"""CLI s54: ``validate`` refuses what eval refuses (a folder that is no save, a saved operator that retrieves
nothing), ``/dev/stdout`` onto a redirected file written into, search's JSON built only for ``-o``, a closed
standard input for ``--queries -``, no temporary file left by a killed write, and one copy of shared helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import TINY_DOCS as DOCS, cli as _cli, tiny_beir as _tiny


def _index(root: Path) -> Path:
    """A fitted, saved BM25 pipeline over :data:`DOCS`."""
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    pipe = Pipeline([BM25()])
    pipe.fit(Corpus([d[0] for d in DOCS], [d[2] for d in DOCS], [d[1] for d in DOCS]))
    pipe.save(root)
    return root


def _ragkit(*args: object, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """``python -m ragkit args`` in ``cwd`` (its own process: its own standard streams)."""
    return subprocess.run([sys.executable, "-m", "ragkit", *map(str, args)], cwd=cwd, timeout=300, **kwargs)


# ------------------------------------------------------------------ 1. validate refuses what eval refuses


def test_validate_refuses_a_folder_holding_only_a_pipeline_yaml_as_eval_does(tmp_path):
    """A hand-made folder with a pipeline.yaml but no manifest.json: eval, train and search refuse it (no save),
    validate said "ok" (it read the YAML).  Now both say it is neither a saved pipeline nor a saved operator."""
    data = _tiny(tmp_path / "tiny")
    hand = tmp_path / "hand"
    hand.mkdir()
    (hand / "pipeline.yaml").write_text("pipeline:\n  - bm25: {k: 10}\n", encoding="utf-8")
    said = "a folder, but neither a saved pipeline (no manifest.json) nor a saved operator (no params.json)"
    ev = _cli("eval", "--data", data, "--pipeline", hand, "--limit", 1)
    assert ev.exit_code == 2 and said in ev.output, ev.output
    res = _cli("validate", hand)
    assert res.exit_code == 2, res.output
    assert said in " ".join(res.output.split()) and "ok" not in res.output.split()


def test_validate_refuses_a_saved_operator_that_retrieves_nothing_as_eval_does(tmp_path):
    """A saved top_k (Operator.save: params.json) was "ok" to validate and refused by eval ("the pipeline has no
    retriever"): the saved-operator branch never reached _check_retrieves."""
    from ragkit import registry

    data = _tiny(tmp_path / "tiny")
    registry.get("top_k")(k=3).save(tmp_path / "topk")
    said = "the pipeline has no retriever (its operators: top_k)"
    ev = _cli("eval", "--data", data, "--pipeline", tmp_path / "topk", "--limit", 1)
    assert ev.exit_code == 2 and said in ev.output, ev.output
    res = _cli("validate", tmp_path / "topk")
    assert res.exit_code == 2, res.output
    assert said in " ".join(res.output.split())


def test_validate_still_takes_saved_folders_and_a_saved_retriever(tmp_path):
    """A saved pipeline (its pipeline.yaml read) and a saved bm25 operator stay valid."""
    from ragkit.retrievers import BM25

    idx = _index(tmp_path / "idx")
    BM25(k=5).save(tmp_path / "op")
    for folder in (idx, tmp_path / "op"):
        res = _cli("validate", folder)
        assert res.exit_code == 0 and "ok" in res.output and "BM25" in res.output, res.output
