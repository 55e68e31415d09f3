"""``ragkit train``'s closing line suggests an evaluation the folder can run: ``test`` where it is judged,
else another judged split with ``--split``, else none (a folder judging only the training split)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragkit.cli import app
from tests.test_train_folds import LEARNS, WORDS, _beir


@pytest.mark.parametrize(("extra", "flag"), [(None, None), ("dev", " --split dev"), ("test", "")])
def test_train_suggests_only_an_evaluation_that_runs(tmp_path: Path, extra: str | None, flag: str | None):
    data = _beir(tmp_path / "d", [(f"q{i}", f"what about {w}", f"d{i}") for i, w in enumerate(WORDS)])
    head, *rows = (data / "qrels" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "qrels" / "train.tsv").write_text(head + "".join(rows[:20]), encoding="utf-8")
    if extra:  # (other queries than train's: an evaluation that is held out)
        (data / "qrels" / f"{extra}.tsv").write_text(head + "".join(rows[20:]), encoding="utf-8")
    (tmp_path / "p.yaml").write_text(LEARNS, encoding="utf-8")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["train", "--data", str(data), "--pipeline", str(tmp_path / "p.yaml"),
                                   "--out", str(out), "--no-report"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if "saved to" in x)
    if flag is None:
        assert line.endswith(f"saved to {out}")
        return
    assert line.endswith(f"(evaluate with: ragkit eval --data {data} --pipeline {out}{flag})")
    got = CliRunner().invoke(app, ["eval", "--data", str(data), "--pipeline", str(out), *flag.split()])
    assert got.exit_code == 0, got.output
